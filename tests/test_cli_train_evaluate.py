"""``lora-rffi train`` / ``evaluate`` / ``export-onnx`` in-process: outputs, JSON, plots, errors (exit 2)."""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pytest

from lorarffi.cli import main
from lorarffi.datasets.native import PreambleWriter
from lorarffi.dsp.chirp import modulate
from lorarffi.dsp.config import LoRaConfig
from lorarffi.sim import Session, make_fleet, simulate_preamble_set

CFG = LoRaConfig()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    fleet = make_fleet(4, seed=9, spread=5.0)  # devices 1-4
    extra = make_fleet(1, seed=9, spread=5.0, first_device=5)  # a device the model never sees
    tr = simulate_preamble_set(
        fleet,
        CFG,
        30,
        session=Session(day=1, minutes_since_power_on=20),
        rng=np.random.default_rng(1),
        snr_db=(20, 30),
    )
    te = simulate_preamble_set(
        fleet + extra,
        CFG,
        15,
        session=Session(day=1, minutes_since_power_on=40),
        rng=np.random.default_rng(2),
        snr_db=(20, 30),
    )
    for name, ps in (("train.h5", tr), ("test.h5", te)):
        with PreambleWriter(d / name, CFG, source="test") as w:
            w.append(ps.preambles, ps.device_ids, cfo_hz=ps.cfo_hz)
    return d


def test_train_then_evaluate_then_export(files: pathlib.Path, capsys) -> None:
    model = files / "model"
    rc = main(
        [
            "-q",
            "train",
            str(files / "train.h5"),
            "--out",
            str(model),
            "--model",
            "rffi_net",
            "--epochs",
            "6",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--devices",
            "1-4",
            "--packets",
            "0:30",
            "--seed",
            "2",
            "--no-progress",
            "--augment",
            "awgn",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 6 and summary["model_dir"] == str(model)
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["training"]["data"]["devices"] == [1, 2, 3, 4] and cfg["training"]["augment"] == ["awgn"]

    rc = main(
        ["-q", "evaluate", str(model), str(files / "test.h5"), "--json", "--plots", str(files / "plots")]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"accuracy_cnn", "accuracy_hybrid", "n_packets", "rejected"} <= set(out)
    assert out["n_packets"] == 60 and out["unknown_devices"] == [5] and out["n_unknown_device_packets"] == 15
    assert out["accuracy_hybrid"] >= 0.7 and 0 <= out["rejected"] <= 60
    assert len(out["per_device"]) == 4 and all(0 <= d["recall_cnn"] <= 1 for d in out["per_device"])
    for png in ("confusion_cnn.png", "confusion_hybrid.png", "cfo_per_device.png"):
        assert (files / "plots" / png).stat().st_size > 1000

    rc = main(["-q", "evaluate", str(model), str(files / "test.h5"), "--devices", "1-2", "--packets", "0:5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "packets 10" in text and "accuracy CNN" in text

    rc = main(["-q", "export-onnx", str(model)])
    assert rc == 0 and (model / "model.onnx").stat().st_size > 1000


def test_another_receiver_is_learned_or_told(files: pathlib.Path, tmp_path: pathlib.Path, capsys) -> None:
    model = tmp_path / "model"
    args = ["-q", "train", str(files / "train.h5"), "--out", str(model), "--model", "rffi_net",
            "--epochs", "6",
            "--batch-size", "16", "--lr", "3e-3", "--devices", "1-4", "--seed", "2", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    # The test packets as a receiver whose oscillator runs 10 ppm low sees them: every CFO 8681 Hz higher.
    from lorarffi.datasets.native import load_dataset
    from lorarffi.rffi.hybrid import ppm_to_hz

    rx_hz = float(ppm_to_hz(10.0, 868.1e6))
    iq, ids = load_dataset(files / "test.h5", devices=range(1, 5))
    t_s = np.arange(iq.shape[1]) / CFG.fs_hz
    with PreambleWriter(tmp_path / "rx.h5", CFG, source="test") as w:
        w.append((iq * np.exp(2j * np.pi * rx_hz * t_s)).astype(np.complex64), ids)

    def evaluate(*extra: str) -> dict:
        assert main(["-q", "evaluate", str(model), str(tmp_path / "rx.h5"), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    base = evaluate()
    # Learned from the recording: the median of the devices' median residuals, within the CFO estimator's
    # jitter of the truth (packets at SNR 20-30 dB: tens of Hz).
    assert base["receiver_offset_hz"] == pytest.approx(rx_hz, abs=100.0)
    assert base["rejected"] == 0 and base["accuracy_hybrid"] >= base["accuracy_cnn"] - 0.05
    blind = evaluate("--no-tracking")  # nothing learned: every packet is beyond every device's window
    assert blind["receiver_offset_hz"] == 0.0 and blind["rejected"] == blind["n_packets"]
    told = evaluate("--no-tracking", "--receiver-offset-ppm", "10")
    assert told["receiver_offset_hz"] == pytest.approx(rx_hz, rel=1e-12)
    assert told["rejected"] == 0 and told["accuracy_hybrid"] >= told["accuracy_cnn"] - 0.05


def test_resume_continues_an_interrupted_run(files: pathlib.Path, capsys) -> None:
    model = files / "resumed"
    base = [
        "-q",
        "train",
        str(files / "train.h5"),
        "--out",
        str(model),
        "--model",
        "rffi_net",
        "--batch-size",
        "32",
        "--no-progress",
    ]
    gate = ["--cfo-margin-hz", "700", "--cfo-weight-std-hz", "0"]
    assert main(base + ["--epochs", "1"] + gate) == 0
    # Resuming with other settings would silently mix two runs: refused, naming what changed.
    assert main(base + ["--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume: settings differ" in err[0] and "gate:" in err[0]
    assert main(base + ["--epochs", "2", "--resume"] + gate) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 2
    params = json.loads((model / "config.json").read_text())["hybrid"]["params"]
    assert params["margin_hz"] == 700 and params["cfo_weighting"] is False  # 0 = Algorithm 1, saved


def test_errors_are_one_line_and_exit_2(files: pathlib.Path, tmp_path: pathlib.Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nomodel"), str(files / "test.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a model directory" in err[0]
    assert (
        main(
            [
                "train",
                str(files / "train.h5"),
                "--out",
                str(tmp_path / "m"),
                "--model",
                "nope",
                "--epochs",
                "1",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "model='nope' is not registered" in capsys.readouterr().err
    assert main(["train", str(files / "train.h5"), "--out", str(tmp_path / "m"), "--augment", "rain"]) == 2
    assert "augment=" in capsys.readouterr().err
    assert main(["train", str(files / "train.h5"), "--out", str(tmp_path / "m"), "--devices", "7-9"]) == 2
    assert "lora-rffi: error:" in capsys.readouterr().err


# -- data at other LoRa parameters, rows that are not preambles ----------------------------------------------

OTHER = LoRaConfig(sf=8, bw_hz=250e3, fs_hz=1e6)  # not the project default: SF7, 125 kHz, 1 MS/s


def _write_public(path: pathlib.Path, iq: np.ndarray, ids: np.ndarray) -> None:
    """The public LoRa_RFFI layout as the authors ship it: 'data' rows [I | Q] and 'label' (1, N), no
    LoRa parameters."""
    import h5py

    with h5py.File(path, "w") as f:
        f["data"] = np.concatenate([iq.real, iq.imag], axis=1).astype(np.float64)
        f["label"] = ids[None, :].astype(np.float64)


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """A model trained at OTHER, test files at OTHER in the public layout (preambles, and rows cut after the
    frame sync: LoRa payload symbols), and a native file at the project default."""
    d = tmp_path_factory.mktemp("other")
    fleet = make_fleet(4, seed=9, spread=5.0)
    kw = {"session": Session(day=1, minutes_since_power_on=20), "snr_db": (20, 30)}
    tr = simulate_preamble_set(fleet, OTHER, 30, rng=np.random.default_rng(1), **kw)
    te = simulate_preamble_set(fleet, OTHER, 15, rng=np.random.default_rng(2), **kw)
    with PreambleWriter(d / "train.h5", OTHER, source="test") as w:
        w.append(tr.preambles, tr.device_ids, cfo_hz=tr.cfo_hz)
    _write_public(d / "public.h5", te.preambles, te.device_ids)
    rng = np.random.default_rng(3)
    payload = np.stack(
        [modulate(rng.integers(0, OTHER.n_chips, OTHER.preamble_symbols), OTHER) for _ in te.device_ids]
    )
    _write_public(d / "payload.h5", payload, te.device_ids)
    with PreambleWriter(d / "default.h5", CFG, source="test") as w:
        w.append(te.preambles, te.device_ids)
    argv = ["-q", "train", str(d / "train.h5"), "--out", str(d / "model"), "--model", "rffi_net"]
    argv += ["--epochs", "6", "--batch-size", "16", "--lr", "3e-3", "--augment", "", "--no-progress"]
    assert main(argv) == 0
    return d


def test_a_public_layout_file_is_read_at_the_models_lora_parameters(other: pathlib.Path, capsys) -> None:
    model, data = str(other / "model"), str(other / "public.h5")
    assert json.loads((other / "model" / "config.json").read_text())["lora"]["sf"] == 8
    capsys.readouterr()
    for flags in ([], ["--sf", "8", "--bw-hz", "250k", "--fs-hz", "1M"]):  # flags may repeat the model's
        assert main(["-q", "evaluate", model, data, "--json", *flags]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["n_packets"] == 60 and out["n_not_preamble"] == 0 and out["accuracy_hybrid"] >= 0.9
    # flags describing other parameters than the model's, or a file stating others: one line, exit 2
    assert main(["evaluate", model, data, "--sf", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"lora-rffi: error: {data}: the data are SF9, 250 kHz, 1 MS/s (the file states none, with --sf) but "
        f"the model {model} was trained at SF8, 250 kHz, 1 MS/s: give data captured at the model's parameters"
    ]
    assert main(["evaluate", model, str(other / "default.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the data are SF7, 125 kHz, 1 MS/s (as the file states)" in err[0]


def test_rows_that_are_not_preambles_are_counted_warned_about_and_left_to_the_cnn(
    other: pathlib.Path, capsys, caplog
) -> None:
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "evaluate", str(other / "model"), str(other / "payload.h5"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_packets"] == 60 and out["n_not_preamble"] == 60
    # no CFO to gate on: the hybrid is the CNN (a nonsense CFO would rule the devices out: rejections)
    assert out["rejected"] == 0 and out["accuracy_hybrid"] == out["accuracy_cnn"]
    assert out["confusion_hybrid"] == [row + [0] for row in out["confusion_cnn"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "payload.h5: 60 of 60 rows are not LoRa preamble up-chirps at SF8, 250 kHz, 1 MS/s" in warnings[0]


def test_training_on_rows_that_are_not_preambles_gives_a_model_without_cfo_gate(
    other: pathlib.Path, tmp_path: pathlib.Path, caplog
) -> None:
    argv = ["-q", "train", str(other / "payload.h5"), "--out", str(tmp_path / "m"), "--sf", "8"]
    argv += ["--bw-hz", "250k", "--model", "rffi_net", "--epochs", "1", "--augment", "", "--no-progress"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["hybrid"] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert "60 of 60 rows are not LoRa preamble up-chirps" in warnings[0] and "no CFO gate" in warnings[1]
