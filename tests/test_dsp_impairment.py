"""The IQ image and carrier leakage measured on preambles whose transmitter is known: the simulator's IQ
imbalance and DC offset, a random carrier phase and gain, and noise of a known power."""

from __future__ import annotations

import numpy as np
import pytest

from lorarffi.dsp.chirp import upchirp
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.impairment import TxImpairments, tx_impairments
from lorarffi.sim.impairments import dc_offset, iq_imbalance

CFG = LoRaConfig()
GAIN_DB, PHASE_DEG, LEAK = -1.2, 1.7, 0.08 - 0.05j


def _truth(gain_db: float, phase_deg: float, leak: complex) -> tuple[complex, complex]:
    """image and leakage over the chirp of ``iq_imbalance`` then ``dc_offset`` (their docstrings' model)."""
    g, phi = 10 ** (gain_db / 20), np.deg2rad(phase_deg)
    mu, nu = (1 + g * np.exp(1j * phi)) / 2, (1 - g * np.exp(-1j * phi)) / 2
    return nu / mu, leak / mu


def _preambles(n: int, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.tile(upchirp(CFG), CFG.preamble_symbols)[None].repeat(n, 0)
    x = dc_offset(iq_imbalance(x, iq_gain_db=GAIN_DB, iq_phase_deg=PHASE_DEG), dc_offset=LEAK)
    gain, phase = rng.uniform(0.1, 3, (n, 1)), 2 * np.pi * rng.uniform(size=(n, 1))  # any gain, carrier phase
    x = x * (gain * np.exp(1j * phase))
    amp = np.sqrt(np.mean(np.abs(x) ** 2, axis=1, keepdims=True))
    noise = (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)) * amp * 10 ** (-snr_db / 20)
    return (x + noise / np.sqrt(2)).astype(np.complex64)


def test_the_measurement_is_the_transmitters_whatever_the_carrier_phase_and_gain() -> None:
    image, leakage = _truth(GAIN_DB, PHASE_DEG, LEAK)
    got = tx_impairments(_preambles(4, 200.0, 0), CFG)  # no noise worth the name
    # float32 samples: errors of a few unit roundoffs of the chirp's amplitude, 1e-5 is ample
    np.testing.assert_allclose(got.image, image, atol=1e-5)
    np.testing.assert_allclose(got.leakage, leakage, atol=1e-5)


def test_standard_errors_match_the_errors_made_in_noise() -> None:
    """|error|^2 / se^2 has mean 1 and standard deviation 1 (an exponential) for an unbiased measurement
    whose se is right: the mean of 400 lies within 1 +- 5 / sqrt(400)."""
    image, leakage = _truth(GAIN_DB, PHASE_DEG, LEAK)
    got = tx_impairments(_preambles(400, 5.0, 1), CFG)
    for value, truth, se in ((got.image, image, got.image_se), (got.leakage, leakage, got.leakage_se)):
        ratio = np.abs(value - truth) ** 2 / se**2
        assert abs(ratio.mean() - 1) <= 5 / np.sqrt(ratio.size)
        # se at 5 dB SNR per sample, 8 symbols of 1024 samples averaged, about 3 basis functions: ~0.006
        assert 0.003 < float(np.median(se)) < 0.012


def test_rows_that_cannot_be_measured_are_nan_and_others_unaffected() -> None:
    x = _preambles(3, 30.0, 2)
    x[1] = np.nan
    got = tx_impairments(x, CFG)
    assert np.isnan(got.image[1]) and np.isnan(got.leakage_se[1])
    alone = tx_impairments(x[[0, 2]], CFG)
    np.testing.assert_array_equal(got.image[[0, 2]], alone.image)
    assert len(tx_impairments(np.zeros((0, CFG.preamble_samples), np.complex64), CFG)) == 0


def test_a_preamble_too_short_for_two_symbols_is_refused() -> None:
    from lorarffi.errors import ConfigError

    with pytest.raises(ConfigError):
        tx_impairments(np.ones((2, CFG.samples_per_symbol), np.complex64), CFG)


def test_take_and_unknown() -> None:
    u = TxImpairments.unknown(3)
    assert len(u) == 3 and np.isnan(u.image).all()
    got = tx_impairments(_preambles(3, 30.0, 3), CFG)
    assert got.take([2]).image[0] == got.image[2]
