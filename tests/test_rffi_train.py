"""Training: learns simulated devices, deterministic with a seed, resumable, early stopping, bad input."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, ModelError
from lorarffi.rffi.checkpoint import read_config
from lorarffi.rffi.evaluate import evaluate
from lorarffi.rffi.inference import load_classifier
from lorarffi.rffi.train import TrainConfig, train
from lorarffi.sim import Session, make_fleet, simulate_preamble_set

CFG = LoRaConfig()


def small_sets(n_devices: int = 4, n_train: int = 30, n_test: int = 15, seed: int = 5, spread: float = 5.0):
    """Train and later test preamble sets (day 1, one place) of a small simulated fleet (true CFO known)."""
    fleet = make_fleet(n_devices, seed=seed, spread=spread)
    tr = simulate_preamble_set(
        fleet,
        CFG,
        n_train,
        session=Session(day=1, minutes_since_power_on=20, place=1),
        rng=np.random.default_rng(seed),
        snr_db=(20, 30),
    )
    te = simulate_preamble_set(
        fleet,
        CFG,
        n_test,
        session=Session(day=1, minutes_since_power_on=40, place=1),
        rng=np.random.default_rng(seed + 1),
        snr_db=(20, 30),
    )
    return tr, te


@pytest.fixture(scope="module")
def sets():
    return small_sets()


def _weights(path: pathlib.Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "weights.safetensors"))


FAST = TrainConfig(epochs=3, batch_size=16, seed=3, lr=3e-3)


def test_training_learns_the_devices_and_writes_a_complete_model_dir(sets, tmp_path: pathlib.Path) -> None:
    tr, te = sets
    tc = TrainConfig(model="rffi_net", epochs=6, batch_size=16, seed=1, lr=3e-3)
    res = train(tr.preambles, tr.device_ids, CFG, tmp_path / "m", tc)
    assert len(res.history) == 6 and res.stopped == "epochs"
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    cfg = read_config(tmp_path / "m")
    assert cfg.device_ids == (1, 2, 3, 4) and cfg.lora == CFG and cfg.data_fingerprint.startswith("sha256:")
    assert cfg.model_name == "rffi_net" and cfg.representation["name"] == "channel_independent_spectrogram"
    assert cfg.training["best_epoch"] == res.best_epoch and cfg.training["seed"] == 1
    # The CFO statistics are those of the training packets (true CFO known from the simulator).
    hyb = cfg.hybrid
    for k, dev in enumerate(cfg.device_ids):
        true = tr.cfo_hz[tr.device_ids == dev]
        assert abs(hyb["mean_hz"][k] - true.mean()) < 40  # training split (90 %) vs all packets
        assert hyb["min_hz"][k] <= true.mean() <= hyb["max_hz"][k]
    clf = load_classifier(tmp_path / "m", torch_device="cpu")
    result, _ = evaluate(clf, te.preambles, te.device_ids)
    assert result.accuracy_cnn > 0.8 and result.n_packets == te.device_ids.size


def test_training_is_deterministic_with_a_seed(sets, tmp_path: pathlib.Path) -> None:
    tr, _ = sets
    a = train(tr.preambles, tr.device_ids, CFG, tmp_path / "a", FAST)
    b = train(tr.preambles, tr.device_ids, CFG, tmp_path / "b", FAST)
    c = train(tr.preambles, tr.device_ids, CFG, tmp_path / "c", TrainConfig(**{**FAST.__dict__, "seed": 4}))
    wa, wb, wc = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())  # negative control
    assert c.history != a.history


def test_an_interrupted_run_resumes_to_the_same_model(sets, tmp_path: pathlib.Path) -> None:
    tr, _ = sets
    tc = TrainConfig(**{**FAST.__dict__, "augment": ("awgn", "cfo"), "epochs": 3})
    full = train(tr.preambles, tr.device_ids, CFG, tmp_path / "full", tc)
    part = train(
        tr.preambles, tr.device_ids, CFG, tmp_path / "part", TrainConfig(**{**tc.__dict__, "epochs": 1})
    )
    assert len(part.history) == 1
    resumed = train(tr.preambles, tr.device_ids, CFG, tmp_path / "part", tc, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    wf, wr = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    # Resuming with other data is refused.
    with pytest.raises(ModelError, match="training data differ"):
        train(tr.preambles[:-4], tr.device_ids[:-4], CFG, tmp_path / "part", tc, resume=True)


def test_early_stopping_and_lr_reduction_follow_the_validation_loss(sets, tmp_path: pathlib.Path) -> None:
    tr, _ = sets
    # A learning rate this large makes the validation loss stall: the LR must drop, then training stops.
    tc = TrainConfig(
        epochs=40,
        batch_size=16,
        seed=0,
        lr=0.5,
        lr_patience=1,
        lr_factor=0.5,
        early_stop_patience=2,
        optimizer="rmsprop",
    )
    res = train(tr.preambles, tr.device_ids, CFG, tmp_path / "m", tc)
    assert res.stopped == "early_stop" and len(res.history) < 40
    best = min(h["val_loss"] for h in res.history)
    assert res.best_val_loss == best
    assert all(h["val_loss"] >= best for h in res.history[res.best_epoch :])
    assert len(res.history) - res.best_epoch == 2
    lrs = [h["lr"] for h in res.history]
    assert lrs[0] == 0.5 and min(lrs) < 0.5
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["training"]["best_epoch"] == res.best_epoch


def test_bad_training_input_is_refused(sets, tmp_path: pathlib.Path) -> None:
    tr, _ = sets
    with pytest.raises(ConfigError, match="at least 2"):
        train(tr.preambles[:10], np.ones(10, int), CFG, tmp_path / "m", FAST)
    with pytest.raises(ConfigError, match="device_ids has 3 entries"):
        train(tr.preambles[:10], [1, 2, 3], CFG, tmp_path / "m", FAST)
    with pytest.raises(ConfigError, match="augment="):
        TrainConfig(augment=("rain",))
    with pytest.raises(ConfigError, match="val_split=1.5"):
        TrainConfig(val_split=1.5)
