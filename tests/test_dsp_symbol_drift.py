"""Symbol drift helpers against closed-form ground truth: tones, straight lines, band-limited shifts."""

import numpy as np
import pytest

from lorarffi.dsp.symbol_drift import drift_fit, shift_samples, tone_offset_bins, unit_phasor


@pytest.mark.parametrize("width", [1000, 1001])
@pytest.mark.parametrize("tone", [-0.9, -0.3, 0.0, 0.25, 0.8])
def test_tone_offset_is_the_tone_moving_a_symbol_against_its_reference(width, tone):
    rng = np.random.default_rng(1)
    ref = np.exp(2j * np.pi * rng.random(width)).astype(np.complex64)  # constant modulus, as a chirp
    n = np.arange(width)
    sym = (ref * np.exp(2j * np.pi * tone * n / width + 0.4j)).astype(np.complex64)
    # complex64 products summed in complex128: the phase of two sums of unit-scale terms is good to ~1e-6 rad
    assert tone_offset_bins(sym, ref) == pytest.approx(tone, abs=1e-5)


def test_drift_fit_recovers_a_line_and_ignores_unweighted_points():
    t = np.arange(10) - 4.5
    tones = np.stack([0.2 + 0.03 * t, -0.1 - 0.002 * t])
    tones[1, 3] = 5.0  # an outlier, weighted out
    w = np.ones_like(tones, bool)
    w[1, 3] = False
    fit = drift_fit(tones, t, w)
    assert fit.slope_bins_per_symbol == pytest.approx([0.03, -0.002], abs=1e-12)
    assert fit.intercept_bins == pytest.approx([0.2, -0.1], abs=1e-12)
    assert np.all(fit.slope_se_bins_per_symbol < 1e-12)


def test_drift_fit_standard_error_matches_the_scatter():
    rng = np.random.default_rng(2)
    t = np.arange(400, dtype=float)
    sigma = 0.01
    tones = 0.5 + 0.001 * t + rng.normal(0.0, sigma, size=(50, t.size))
    fit = drift_fit(tones, t)
    expected_se = sigma / np.sqrt(np.sum((t - t.mean()) ** 2))
    # each SE is estimated from 398 residuals: its relative spread is about 1/sqrt(2 * 398) = 3.5 %
    assert np.all(np.abs(fit.slope_se_bins_per_symbol / expected_se - 1) < 0.15)
    # and the slopes scatter about the truth by that much
    assert np.std(fit.slope_bins_per_symbol - 0.001) == pytest.approx(expected_se, rel=0.3)
    assert drift_fit(tones[:, :2], t[:2]).slope_se_bins_per_symbol[0] == np.inf  # no scatter to tell from


def test_shift_samples_moves_a_band_limited_periodic_signal_exactly():
    width = 256
    freqs = np.array([-40, -3, 7, 61])
    amps = np.array([1.0, 0.5j, -0.3, 0.2 + 0.1j])

    def signal(n):
        return (amps[None, :] * np.exp(2j * np.pi * np.outer(n, freqs) / width)).sum(1)

    n = np.arange(width)
    x = signal(n).astype(np.complex64)
    for shift in (0.37, -2.6, 10.0):
        # float32 phase ramp and FFT: errors of a few 1e-7 per unit-scale sample
        assert np.allclose(shift_samples(x, shift), signal(n + shift), atol=2e-5)


def test_unit_phasor_is_the_complex_exponential():
    turns = np.linspace(-3.7, 5.2, 1001).astype(np.float32)
    # float32 turns reduced mod 1 before scaling: the angle is good to ~2 pi * 6e-8 rad per unit of |turns|
    assert np.allclose(unit_phasor(turns), np.exp(2j * np.pi * turns.astype(np.float64)), atol=1e-5)
