"""Pseudo-devices: each is one fixed transmitter transform on the transmitter's own baseband, whatever the
channel's phase; they add classes after the real ones, to the training split only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lorarffi.dsp.chirp import upchirp
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.rffi.pseudo_devices import (
    PseudoDeviceDraw,
    add_pseudo_devices,
    apply_pseudo_device,
    draw_pseudo_devices,
)
from lorarffi.rffi.train import TrainConfig, prepare_data
from lorarffi.sim import Session, make_fleet, simulate_preamble_set
from lorarffi.sim.impairments import dc_offset, iq_imbalance

CFG = LoRaConfig()
U = 2.0**-24  # float32 unit roundoff
IDEAL = np.tile(upchirp(CFG), CFG.preamble_symbols)  # unit amplitude


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(np.abs(x.astype(np.complex128)) ** 2, axis=-1, keepdims=True))


def test_a_pseudo_device_transforms_the_baseband_whatever_the_channel_phase() -> None:
    draw = PseudoDeviceDraw(0.4, -2.0, 0.03 * np.exp(1j), 0.0, 20e3, 0.0)  # no ripple: closed form below
    phases = np.array([0.0, 1.1, -2.5, 3.0])
    received = (IDEAL[None, :] * np.exp(1j * phases)[:, None]).astype(np.complex64)
    got = apply_pseudo_device(received, draw, CFG)
    # what the transmitter sends: imbalance and leakage on the ideal baseband, then the channel's phase
    sent = dc_offset(iq_imbalance(IDEAL, iq_gain_db=0.4, iq_phase_deg=-2.0), dc_offset=0.03 * np.exp(1j))
    want = _unit_rms(sent)[None, :] * np.exp(1j * phases)[:, None]
    # float32 arithmetic on unit-size samples (the phase is estimated in float64): a few roundings per step
    # (turn, imbalance, offset, the ripple's FFT of log2(16384) = 14 stages, rescale), each within U
    # relative: 64 U bounds their sum
    assert got.dtype == np.complex64 and got.shape == received.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=64 * U * np.sqrt(2))
    # the same device under every phase: its image and leakage keep their phase relative to the chirps
    base = got * np.exp(-1j * phases)[:, None]
    np.testing.assert_allclose(base, np.broadcast_to(base[:1], base.shape), rtol=0, atol=128 * U * np.sqrt(2))
    # and it is another device: the image of the imbalance is there (|nu/mu| about -32 dB)
    assert np.max(np.abs(base[0] - IDEAL)) > 0.02


def test_copies_take_classes_after_the_real_ones_with_one_transform_each() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 0, 1, 2, 2])
    iq = (IDEAL[None, :] * np.exp(1j * rng.uniform(-np.pi, np.pi, labels.size))[:, None]).astype(np.complex64)
    got_iq, got_labels = add_pseudo_devices(iq, labels, 2, CFG, np.random.default_rng(5))
    assert got_iq.shape == (14, IDEAL.size) and got_labels.tolist() == [
        3, 4, 5, 3, 4, 5, 5, 6, 7, 8, 6, 7, 8, 8,
    ]
    again = np.random.default_rng(5)
    draws = draw_pseudo_devices(3, again) + draw_pseudo_devices(3, again)  # copy 1 of classes 0-2, copy 2
    for row, cls in enumerate(got_labels):
        want = apply_pseudo_device(iq[row % labels.size][None], draws[cls - 3], CFG)[0]
        np.testing.assert_array_equal(got_iq[row], want)
    # the same transform for every packet of one copy, different ones between copies and devices
    assert len({dataclasses.astuple(d) for d in draws}) == 6
    assert all(0.1 <= abs(d.iq_gain_db) <= 0.5 and 0.005 <= abs(d.dc_offset) <= 0.04 for d in draws)
    assert add_pseudo_devices(iq, labels, 0, CFG, rng)[0].shape == (0, IDEAL.size)
    with pytest.raises(ConfigError, match="labels must lie in 0..1"):
        add_pseudo_devices(iq, labels, 1, CFG, rng, n_classes=2)


def test_pseudo_devices_are_asked_for_and_only_by_an_embedding() -> None:
    assert TrainConfig(objective="supcon").pseudo_devices == 0 == TrainConfig().pseudo_devices
    assert TrainConfig(objective="triplet", pseudo_devices=2).pseudo_devices == 2
    with pytest.raises(ConfigError, match="pseudo_devices=1 is not valid with objective='softmax'"):
        TrainConfig(objective="softmax", pseudo_devices=1)
    with pytest.raises(ConfigError, match="pseudo_devices=-1 is not valid"):
        TrainConfig(objective="supcon", pseudo_devices=-1)


def test_pseudo_devices_join_the_training_split_only() -> None:
    fleet = make_fleet(3, seed=4)
    tr = simulate_preamble_set(
        fleet, CFG, 20, session=Session(day=1, minutes_since_power_on=20, place=1),
        rng=np.random.default_rng(1), snr_db=(20, 30),
    )
    tc = TrainConfig(model="rffi_net", objective="supcon", epochs=1, augment=(), pseudo_devices=2)
    plain = prepare_data(tr.preambles, tr.device_ids, CFG, dataclasses.replace(tc, pseudo_devices=0))
    data = prepare_data(tr.preambles, tr.device_ids, CFG, tc)
    n, k = tr.device_ids.size, plain.classes.size
    assert np.array_equal(data.classes, plain.classes) and np.array_equal(data.val_idx, plain.val_idx)
    assert np.array_equal(data.device_train_idx, plain.train_idx)
    added = data.train_idx[plain.train_idx.size :]
    assert np.array_equal(added, n + np.arange(2 * plain.train_idx.size))
    # copy j of the training packet of class c has class j K + c; the validation packets have no copy
    copies = [plain.labels[plain.train_idx] + j * k for j in (1, 2)]
    assert np.array_equal(data.labels[added], np.concatenate(copies))
    assert data.n_labels == 3 * k and data.features.shape == (n + added.size, *plain.features.shape[1:])
    np.testing.assert_array_equal(data.features[:n], plain.features)
