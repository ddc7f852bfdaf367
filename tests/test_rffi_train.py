"""Training: learns simulated devices, trains on augmented batches, deterministic with a seed, resumable,
early stopping, bad input; and the recipe's functions one by one."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.special import logsumexp

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, ModelError
from lorarffi.rffi.checkpoint import read_config
from lorarffi.rffi.evaluate import evaluate
from lorarffi.rffi.features import compute_features
from lorarffi.rffi.inference import load_classifier
from lorarffi.rffi.models.infocom_cnn import InfocomIQCNN
from lorarffi.rffi.preprocess import preprocess_preambles
from lorarffi.rffi.train import (
    TrainConfig,
    TrainState,
    build_optimizer,
    epoch_batches,
    record_epoch,
    shard,
    stop_reason,
    train,
    validate,
)
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
    assert cfg.model_name == "rffi_net" and cfg.representation == {  # the recipe's floor, the data's period
        "name": "coherent_channel_independent_spectrogram", "params": {"top_db": 30.0, "period_frames": 8}
    }
    assert cfg.training["best_epoch"] == res.best_epoch and cfg.training["seed"] == 1
    # The CFO statistics are those of the training packets (true CFO known from the simulator). The gate's
    # mean is over the training split's estimates: it differs from the true mean of all packets by the mean
    # estimation error (at 20-30 dB SNR a few Hz at most; 5 Hz allowed) plus the training split's mean minus
    # that of all packets, which is n_val/n times (training mean - held-out mean), at most n_val/n times the
    # range of the device's true CFO over the session.
    hyb = cfg.hybrid
    for k, dev in enumerate(cfg.device_ids):
        true = tr.cfo_hz[tr.device_ids == dev]
        n_val = round(tc.val_split * true.size)
        assert abs(hyb["mean_hz"][k] - true.mean()) <= n_val / true.size * np.ptp(true) + 5.0
        assert hyb["min_hz"][k] <= true.mean() <= hyb["max_hz"][k]
    clf = load_classifier(tmp_path / "m", torch_device="cpu")
    result, _ = evaluate(clf, te.preambles, te.device_ids)
    assert result.accuracy_cnn > 0.8 and result.n_packets == te.device_ids.size


IQ_TC = {  # a tiny IQ network: what it is fed is under test, not what it learns
    "model": "infocom_iq_cnn",
    "model_hparams": {"widths": [2, 2, 2], "kernel_len": 8},
    "representation": {"name": "iq", "params": {}},
    "epochs": 1,
    "batch_size": 16,
    "seed": 2,
}


def _training_inputs(tr, out: pathlib.Path, tc: TrainConfig) -> np.ndarray:
    """Every batch the network is called on in training mode during ``train``, float64 (B, 2, L)."""
    seen = []

    def record(module, args):
        if isinstance(module, InfocomIQCNN) and module.training:
            seen.append(args[0].detach().to(torch.float64).numpy().copy())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        train(tr.preambles, tr.device_ids, CFG, out, tc, torch_device="cpu")
    finally:
        handle.remove()
    return np.concatenate(seen)


def _best_cosine(seen: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """For every seen input, its largest cosine similarity with any stored packet's features (float64)."""
    a = seen.reshape(len(seen), -1)
    b = stored.reshape(len(stored), -1).astype(np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a @ b.T).max(axis=1)


def test_the_batches_the_network_trains_on_carry_the_augmentation(sets, tmp_path: pathlib.Path) -> None:
    tr, _ = sets
    stored = compute_features(preprocess_preambles(tr.preambles, CFG).iq, IQ_TC["representation"])
    plain = _training_inputs(tr, tmp_path / "plain", TrainConfig(**IQ_TC, augment=()))
    snr_db = 10.0
    noisy = _training_inputs(
        tr, tmp_path / "noisy", TrainConfig(**IQ_TC, augment=("awgn",), aug_snr_db=(snr_db, snr_db))
    )
    n_train = tr.device_ids.size - 4 * round(0.1 * 30)  # 30 packets of 4 devices, 10 % held out
    assert len(plain) == len(noisy) == n_train // 16 * 16
    # Without augmentation the network sees stored packets' features: cosine 1 up to float64 rounding
    # (dot products of 2 L = 16,384 terms: 2 L u = 2e-12).
    assert np.all(_best_cosine(plain, stored) > 1 - 1e-9)
    # With noise at in-band SNR s the total noise power is r = (fs/bw) 10^(-s/10) = 0.8 of the packet's, so a
    # packet c becomes c + n with cos(c + n, c) = 1/sqrt(1 + r) = 0.745 on average. Statistical bound: over L
    # samples the noise's power and its projection on c fluctuate by about 0.003 in that cosine (1 sigma);
    # another stored packet of the same device can score a little higher than c itself (their cosine with c
    # is close to 1, plus the noise's projection on them): 0.03 allows 10 sigma.
    r = CFG.fs_hz / CFG.bw_hz * 10 ** (-snr_db / 10)
    np.testing.assert_allclose(_best_cosine(noisy, stored), 1 / np.sqrt(1 + r), rtol=0, atol=0.03)


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


def test_train_takes_the_torch_device_under_its_old_name_with_a_warning(sets, tmp_path: pathlib.Path) -> None:
    iq, one_device = sets[0].preambles[:10], np.ones(10, int)
    deprecated = pytest.warns(DeprecationWarning, match="torch_device")
    with deprecated, pytest.raises(ConfigError, match="at least 2"):
        train(iq, one_device, CFG, tmp_path / "m", FAST, device="cpu")
    with pytest.raises(ConfigError, match="torch_device only"):
        train(iq, one_device, CFG, tmp_path / "m", FAST, device="cpu", torch_device="cpu")


def test_epoch_batches_deal_the_training_packets_in_a_seeded_order() -> None:
    idx = np.arange(3, 53)  # 50 training packets, batches of 16: 3 full batches, 2 packets wait
    first = epoch_batches(idx, 16, seed=1, epoch=1)
    assert [step for step, _ in first] == [0, 1, 2] and all(b.size == 16 for _, b in first)
    dealt = np.concatenate([b for _, b in first])
    assert np.unique(dealt).size == 48 and np.isin(dealt, idx).all()
    assert not np.array_equal(dealt, np.sort(dealt))  # shuffled
    again = np.concatenate([b for _, b in epoch_batches(idx, 16, seed=1, epoch=1)])
    np.testing.assert_array_equal(again, dealt)
    for other in (epoch_batches(idx, 16, seed=1, epoch=2), epoch_batches(idx, 16, seed=2, epoch=1)):
        assert not np.array_equal(np.concatenate([b for _, b in other]), dealt)
    ((step, only),) = epoch_batches(idx[:5], 16, seed=1, epoch=1)  # fewer than a batch: one batch of all
    assert step == 0 and sorted(only.tolist()) == idx[:5].tolist()
    assert epoch_batches(idx[:1], 16, seed=1, epoch=1, world_size=2) == []  # nothing for process 1


@pytest.mark.parametrize(("n_global", "world_size"), [(16, 2), (17, 2), (7, 3), (5, 1)])
def test_shards_cut_a_global_batch_into_contiguous_near_equal_parts(n_global: int, world_size: int) -> None:
    parts = [list(range(n_global))[shard(n_global, r, world_size)] for r in range(world_size)]
    assert [i for p in parts for i in p] == list(range(n_global))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_the_best_epoch_and_the_stop_follow_the_validation_loss() -> None:
    tc = TrainConfig(early_stop_patience=2, max_time_s=100.0)
    state = TrainState()
    records = [(1, 1.0, 0.5), (2, 0.8, 0.6), (3, 0.8, 0.7), (4, 0.9, 0.8)]
    improved, reasons = [], []
    for epoch, loss, acc in records:
        improved.append(record_epoch(state, {"epoch": epoch, "val_loss": loss, "val_acc": acc}))
        reasons.append(stop_reason(state, tc))
    assert improved == [True, True, False, False]  # an equal loss is no improvement
    assert reasons == [None, None, None, "early_stop"]
    assert (state.epoch, state.best_epoch, state.best_val_loss, state.best_val_acc) == (4, 2, 0.8, 0.6)
    assert state.bad_epochs == 2 and [r["epoch"] for r in state.history] == [1, 2, 3, 4]
    assert stop_reason(TrainState(elapsed_s=99.9), tc) is None
    assert stop_reason(TrainState(elapsed_s=100.0), tc) == "time_limit"
    assert stop_reason(TrainState(elapsed_s=1e9), TrainConfig(max_time_s=None)) is None  # no time cap


def test_validate_gives_the_mean_cross_entropy_and_the_accuracy() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 4))  # float64, more rows than one validation batch (256)
    labels = rng.integers(0, 3, 300)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    loss, acc = validate(model, feats, labels, torch.device("cpu"))
    with torch.no_grad():
        z = model(torch.from_numpy(feats)).numpy()
    reference = np.mean(logsumexp(z, axis=1) - z[np.arange(300), labels])
    # float64 sums of 300 positive terms: relative rounding <= 300 u = 3.3e-14.
    assert loss == pytest.approx(reference, rel=1e-12)
    assert acc == np.mean(z.argmax(axis=1) == labels) and 0.1 < acc < 0.9


def test_the_optimiser_is_the_configured_one() -> None:
    model = torch.nn.Linear(2, 2)
    assert type(build_optimizer(model, TrainConfig())) is torch.optim.Adam
    adamw = build_optimizer(model, TrainConfig(weight_decay=1e-3))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 1e-3
    rms = build_optimizer(model, TrainConfig(optimizer="rmsprop", lr=0.01))
    assert type(rms) is torch.optim.RMSprop  # with the Keras defaults the authors trained with
    assert (rms.defaults["lr"], rms.defaults["alpha"], rms.defaults["eps"]) == (0.01, 0.9, 1e-7)


@pytest.mark.parametrize("objective", ["softmax", "triplet"])
def test_a_trained_model_keeps_its_architecture_when_the_registered_defaults_change(
    tmp_path, monkeypatch, objective
) -> None:
    """Training stores the hyper-parameters a model name stands for (``infocom_cnn_wide``'s widths and
    dropout), so the model directory loads to the same network after those defaults change."""
    from lorarffi.rffi import models
    from lorarffi.rffi.embedding import load_embedder

    tr, te = small_sets(n_devices=3, n_train=12, n_test=4)
    out = tmp_path / "m"
    tc = TrainConfig(
        model="infocom_cnn_wide", objective=objective, epochs=1, batch_size=12, seed=0, members=1
    )
    train(tr.preambles, tr.device_ids, CFG, out, tc)
    hp = read_config(out).model_hparams
    assert (list(hp["widths"]), hp["dropout"]) == ([32, 64, 128], 0.3)
    emb = load_embedder(out)
    x = emb.preprocess(te.preambles).iq
    before = emb.embed(x)
    monkeypatch.setitem(models._DEFAULTS, "infocom_cnn_wide", {"widths": [8, 16, 32], "dropout": 0.0})
    after = load_embedder(out).embed(x)
    # the same weights in the same network on the same input, one process: the same kernels
    assert np.array_equal(before, after)
