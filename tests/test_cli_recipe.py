"""`lora-rffi train` with no options trains the default model's recipe (lorarffi.rffi.recipe.RECIPE), the one
TrainConfig's defaults and the closed_set benchmark's default-model run read; `train --help` says so."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import pytest

from lorarffi.cli import build_parser, main
from lorarffi.cli.train import train_config
from lorarffi.errors import ConfigError
from lorarffi.rffi.hybrid import GateParams
from lorarffi.rffi.recipe import (
    EXTRACTOR_AUG_SNR_DB,
    EXTRACTOR_EPOCHS,
    EXTRACTOR_MAX_TIME_S,
    EXTRACTOR_MEMBERS,
    EXTRACTOR_REPRESENTATION_PARAMS,
    RECIPE,
    Recipe,
)
from lorarffi.rffi.train import TrainConfig

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_closed_set.py"
OPEN_SET_BENCH = BENCH.with_name("bench_open_set.py")


def _cli_config(*flags: str) -> TrainConfig:
    return train_config(build_parser().parse_args(["train", "data.h5", "--out", "m", *flags]))


def _as_recipe(tc: TrainConfig) -> Recipe:
    """The recipe fields of a TrainConfig (the representation by name and its parameters)."""
    assert tc.model_hparams == {}
    fields = {f.name: getattr(tc, f.name) for f in dataclasses.fields(Recipe)
              if f.name not in ("representation", "representation_params")}
    return Recipe(representation=tc.representation["name"],
                  representation_params=tuple(sorted(tc.representation["params"].items())), **fields)


def test_the_cli_defaults_and_trainconfig_defaults_are_the_recipe() -> None:
    assert _as_recipe(TrainConfig()) == RECIPE
    assert _cli_config() == TrainConfig()
    assert _cli_config().gate == GateParams()  # the gate's defaults are GateParams'
    # the recipe the benchmark reports: the wide INFOCOM CNN on the coherent CI spectrogram, AWGN (0-30 dB),
    # multipath, receiver and residual-CFO augmentation
    assert (RECIPE.model, RECIPE.representation, RECIPE.augment, RECIPE.aug_snr_db) == (
        "infocom_cnn_wide",
        "coherent_channel_independent_spectrogram",
        ("awgn", "multipath", "receiver", "cfo"),
        (0.0, 30.0),
    )


def test_every_objective_floors_the_recipes_spectrogram() -> None:
    """The peak-relative floor was measured for the classifier (closed_set) and the extractors (open_set); the
    flat-level floor for the extractors only. Naming the recipe's representation gives the same; another
    representation keeps its own defaults."""
    floored = {"name": RECIPE.representation, "params": {"top_db": 30.0}}
    flat = {"name": RECIPE.representation, "params": {"top_db": 30.0, "flat_floor_db": 0.0}}
    assert dict(EXTRACTOR_REPRESENTATION_PARAMS) == flat["params"]
    assert TrainConfig().representation == floored == _cli_config("--representation", RECIPE.representation
                                                                  ).representation
    assert TrainConfig(objective="classifier").representation == floored
    assert _cli_config("--objective", "classifier").representation == floored
    for objective in ("supcon", "triplet", "arcface"):
        assert TrainConfig(objective=objective).representation == flat
        assert _cli_config("--objective", objective).representation == flat
        assert _cli_config("--objective", objective, "--representation", RECIPE.representation
                           ).representation == flat
    other = {"name": "spectrogram", "params": {}}
    assert _cli_config("--representation", "spectrogram").representation == other
    assert _cli_config("--objective", "supcon", "--representation", "spectrogram").representation == other
    # a copy keeps the representation already chosen, as it keeps the SNR range
    assert dataclasses.replace(TrainConfig(), objective="supcon").representation == floored


def test_an_embedding_objective_trains_on_the_extractors_snr_range() -> None:
    """The metric objectives augment at EXTRACTOR_AUG_SNR_DB (open_set measured it), softmax at the
    recipe's; a range asked for wins, and a copy keeps the range already chosen."""
    assert EXTRACTOR_AUG_SNR_DB != RECIPE.aug_snr_db
    assert TrainConfig().aug_snr_db == TrainConfig(objective="classifier").aug_snr_db == RECIPE.aug_snr_db
    for objective in ("supcon", "triplet", "arcface"):
        assert TrainConfig(objective=objective).aug_snr_db == EXTRACTOR_AUG_SNR_DB
        assert _cli_config("--objective", objective).aug_snr_db == EXTRACTOR_AUG_SNR_DB
        assert _cli_config("--objective", objective, "--aug-snr-db", "0:30").aug_snr_db == (0.0, 30.0)
    assert TrainConfig(objective="supcon", aug_snr_db=(1.0, 2.0)).aug_snr_db == (1.0, 2.0)
    assert dataclasses.replace(TrainConfig(objective="supcon"), objective="triplet").aug_snr_db == (
        EXTRACTOR_AUG_SNR_DB
    )
    assert TrainConfig(objective="supcon").to_dict()["aug_snr_db"] == list(EXTRACTOR_AUG_SNR_DB)


def test_an_embedding_objective_trains_with_the_extractors_budget(monkeypatch) -> None:
    """The metric objectives train for EXTRACTOR_EPOCHS within EXTRACTOR_MAX_TIME_S (the open-set benchmark's
    budget), softmax for the recipe's; a budget asked for wins (0 s: no cap), and a copy keeps the budget."""
    assert (TrainConfig().epochs, TrainConfig().max_time_s) == (RECIPE.epochs, RECIPE.max_time_s)
    assert (EXTRACTOR_EPOCHS, EXTRACTOR_MAX_TIME_S) != (RECIPE.epochs, RECIPE.max_time_s)
    for objective in ("supcon", "triplet", "arcface"):
        for tc in (TrainConfig(objective=objective), _cli_config("--objective", objective)):
            assert (tc.epochs, tc.max_time_s) == (EXTRACTOR_EPOCHS, EXTRACTOR_MAX_TIME_S)
        tc = _cli_config("--objective", objective, "--epochs", "7", "--max-time-s", "0")
        assert (tc.epochs, tc.max_time_s) == (7, None)
    assert TrainConfig(objective="supcon", max_time_s=None).max_time_s is None
    assert dataclasses.replace(TrainConfig(), objective="supcon").epochs == RECIPE.epochs
    assert TrainConfig(objective="supcon").to_dict()["max_time_s"] == EXTRACTOR_MAX_TIME_S
    # the extractor the open-set benchmark reports as ours is the one `train --objective supcon` makes
    monkeypatch.syspath_prepend(str(OPEN_SET_BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_open_set", OPEN_SET_BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "MIN", 1.0)  # the full run (LORARFFI_BENCH_QUICK scales the time caps)
    assert bench._runs()["supcon"][0] == _cli_config("--objective", "supcon")


def test_every_flag_still_changes_its_setting() -> None:
    tc = _cli_config(
        "--model", "rffi_net", "--representation", "spectrogram", "--optimizer", "rmsprop", "--epochs", "3",
        "--batch-size", "8", "--lr", "0.01", "--lr-patience", "2", "--lr-factor", "0.5", "--patience", "4",
        "--max-time-s", "0", "--val-split", "0.2", "--augment", "", "--aug-snr-db", "0:10", "--seed", "7",
        "--no-cfo-compensation",
    )
    assert tc == TrainConfig(
        model="rffi_net", representation={"name": "spectrogram", "params": {}}, optimizer="rmsprop", epochs=3,
        batch_size=8, lr=0.01, lr_patience=2, lr_factor=0.5, early_stop_patience=4, max_time_s=None,
        val_split=0.2, augment=(), aug_snr_db=(0.0, 10.0), seed=7, compensate_cfo=False,
    )
    assert _cli_config("--max-time-s", "60").max_time_s == 60.0
    assert _cli_config("--augment", "cfo, awgn").augment == ("cfo", "awgn")


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_closed_set", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmarks_default_model_is_trained_with_the_recipe(monkeypatch) -> None:
    bench = _bench_module()
    monkeypatch.setattr(bench, "MIN", 1.0)  # the full run (LORARFFI_BENCH_QUICK scales the time caps)
    assert bench.default_model_config() == TrainConfig()
    # and the run its tables and targets call the default model is trained with exactly that config
    assert bench._runs()["default"][0] == TrainConfig()


def test_train_help_says_the_defaults_are_the_benchmarked_recipe(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Every default is the recipe of the default model the closed_set benchmark reports" in text
    assert f"--epochs EPOCHS most epochs (default {RECIPE.epochs} for softmax, {EXTRACTOR_EPOCHS} for" in text
    assert "(default awgn,multipath,receiver,cfo)" in text
    assert f"(default {RECIPE.max_time_s:g} for softmax, {EXTRACTOR_MAX_TIME_S:g} for the embedding" in text
    assert "floored 30 dB below each packet's peak" in text


def test_the_gate_flags_take_ppm_or_hz_but_not_both() -> None:
    gate = _cli_config("--cfo-margin-ppm", "3", "--cfo-weight-std-ppm", "0.2").gate
    assert (gate.margin_ppm, gate.margin_hz) == (3.0, None)
    assert (gate.cfo_weight_std_ppm, gate.cfo_weighting) == (0.2, True)
    gate = _cli_config("--cfo-margin-hz", "700", "--cfo-weight-std-hz", "300").gate
    assert (gate.margin_hz, gate.margin_ppm, gate.cfo_weight_std_hz) == (700.0, None, 300.0)
    assert _cli_config("--cfo-weight-std-ppm", "0").gate.cfo_weighting is False  # 0: Algorithm 1
    assert _cli_config("--cfo-weight-std-hz", "0").gate.cfo_weighting is False
    with pytest.raises(ConfigError, match="margin"):
        _cli_config("--cfo-margin-hz", "700", "--cfo-margin-ppm", "2")


@pytest.mark.parametrize(
    "name", ["folded_channel_independent_spectrogram", "coherent_channel_independent_spectrogram"]
)
def test_the_per_symbol_representations_take_the_datas_own_symbol(name: str) -> None:
    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.errors import ConfigError
    from lorarffi.rffi.train import representation_for

    folded = {"name": name, "params": {}}
    # 2**SF * fs / bw samples per symbol over a 128-sample hop
    assert representation_for(folded, LoRaConfig())["params"] == {"period_frames": 8}
    assert representation_for(folded, LoRaConfig(sf=9, fs_hz=500e3))["params"] == {"period_frames": 16}
    given = {"name": folded["name"], "params": {"period_frames": 4, "hop": 64}}
    assert representation_for(given, LoRaConfig()) == given
    ci = {"name": "channel_independent_spectrogram", "params": {}}
    assert representation_for(ci, LoRaConfig()) is ci
    with pytest.raises(ConfigError, match="hop=100 does not divide the 1024 samples"):
        representation_for({"name": folded["name"], "params": {"hop": 100}}, LoRaConfig())


def test_pseudo_devices_are_an_option_of_an_embedding(capsys) -> None:
    assert _cli_config().members == 1 and _cli_config("--objective", "supcon").members == EXTRACTOR_MEMBERS
    assert _cli_config("--objective", "triplet", "--members", "3").members == 3
    assert _cli_config().pseudo_devices == 0 == _cli_config("--objective", "supcon").pseudo_devices
    assert _cli_config("--objective", "supcon", "--pseudo-devices", "2").pseudo_devices == 2
    with pytest.raises(ConfigError, match="pseudo_devices=2 is not valid with objective='softmax'"):
        _cli_config("--pseudo-devices", "2")
    with pytest.raises(SystemExit) as exc:
        _cli_config("--objective", "supcon", "--pseudo-devices", "-1")
    assert exc.value.code == 2 and "-1 is not valid: use an integer of 0 or more" in capsys.readouterr().err


def test_a_benchmark_reuses_a_cached_model_only_if_trained_with_the_recipe_asked_for(monkeypatch,
                                                                                    tmp_path) -> None:
    """The open-set and gateway benchmarks cache models between runs: a model of another representation,
    objective or seed is removed and trained again, not reported under the new recipe."""
    import json

    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.rffi.train import representation_for

    monkeypatch.syspath_prepend(str(OPEN_SET_BENCH.parent))
    spec = importlib.util.spec_from_file_location("model_cache", OPEN_SET_BENCH.with_name("model_cache.py"))
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    cfg, tc = LoRaConfig(), TrainConfig(objective="supcon")

    def saved(out: pathlib.Path, trained: TrainConfig) -> pathlib.Path:
        out.mkdir()
        (out / "config.json").write_text(json.dumps({
            "representation": representation_for(trained.representation, cfg),
            "training": {**trained.to_dict(), "embedding_dim": 128, "best_epoch": 3},
        }))
        return out

    assert not cache.reuse_cached_model(tc, cfg, tmp_path / "none")
    assert cache.reuse_cached_model(tc, cfg, saved(tmp_path / "same", tc))
    assert (tmp_path / "same" / "config.json").exists()
    peak_only = dataclasses.replace(tc, representation=TrainConfig().representation)
    for name, other in [("floor", peak_only), ("seed", dataclasses.replace(tc, seed=1)),
                        ("objective", TrainConfig(objective="triplet"))]:
        assert not cache.reuse_cached_model(tc, cfg, saved(tmp_path / name, other)), name
        assert not (tmp_path / name).exists()
