"""The channel model measured back: AWGN SNR (in-band and full-band), multipath delay spread, Rician K, Jakes
Doppler, fractional delays, CFO and timing shifts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from lorarffi.dsp import LoRaConfig, packet_waveform
from lorarffi.errors import ConfigError
from lorarffi.sim import channel

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)


def _in_band_power(x: np.ndarray, bw_hz: float, fs_hz: float) -> np.ndarray:
    spec = np.fft.fft(x, axis=-1)
    f = np.fft.fftfreq(x.shape[-1], 1 / fs_hz)
    return np.sum(np.abs(spec[..., np.abs(f) <= bw_hz / 2]) ** 2, axis=-1) / x.shape[-1] ** 2


def test_awgn_full_band_snr_is_measured_back():
    rng = np.random.default_rng(0)
    x = np.tile(packet_waveform(CFG)[: CFG.preamble_samples], (4, 8)) * np.array([[1], [2], [0.5], [3]])
    snr = np.array([0.0, 10.0, 20.0, -5.0])
    y = channel.add_awgn(x, snr, reference="full_band", rng=rng)
    noise = y - x
    measured = 10 * np.log10(np.mean(np.abs(x) ** 2, axis=1) / np.mean(np.abs(noise) ** 2, axis=1))
    # the noise power of 65,536 complex Gaussian samples scatters by 1/sqrt(65536) = 0.4 % (0.017 dB):
    # 0.1 dB is 6 standard deviations
    np.testing.assert_allclose(measured, snr, atol=0.1)
    assert y.dtype == np.complex64 and y.shape == x.shape


def test_awgn_in_band_snr_counts_only_noise_inside_the_lora_band():
    rng = np.random.default_rng(1)
    x = np.tile(packet_waveform(CFG)[: CFG.preamble_samples], (8, 1))
    y = channel.add_awgn(x, 10.0, reference="in_band", rng=rng, bw_hz=CFG.bw_hz, fs_hz=CFG.fs_hz)
    noise = (y - x).astype(np.complex128)
    in_band = _in_band_power(noise, CFG.bw_hz, CFG.fs_hz)
    measured = 10 * np.log10(np.mean(np.abs(x) ** 2, axis=1) / in_band)
    # 8 rows x 1,024 in-band bins of noise: the mean scatters by 1/sqrt(8192) = 1.1 % (0.048 dB), 3 deviations
    np.testing.assert_allclose(measured.mean(), 10.0, atol=0.15)
    full = 10 * np.log10(1.0 / np.mean(np.abs(noise) ** 2))
    # 65,536 samples: 0.017 dB standard deviation; 9.03 dB lower over 1 MHz
    assert full == pytest.approx(10.0 - 10 * np.log10(8.0), abs=0.1)
    assert float(channel.in_band_to_full_band_snr_db(10.0, bw_hz=125e3, fs_hz=1e6)) == pytest.approx(
        10.0 - 9.0309, abs=1e-4  # 10 log10(8) = 9.03090, to the digits written
    )


def test_awgn_rejects_missing_band_and_bad_reference():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="in_band"):
        channel.add_awgn(np.ones(10, np.complex64), 3.0, reference="in_band", rng=rng)
    with pytest.raises(ConfigError, match="reference="):
        channel.add_awgn(np.ones(10, np.complex64), 3.0, reference="inband", rng=rng)  # type: ignore[arg-type]


@pytest.mark.parametrize("tau_s", [10e-9, 100e-9, 300e-9])
def test_multipath_rms_delay_spread_from_taps_and_averaged_pdp(tau_s):
    rng = np.random.default_rng(2)
    ch = channel.draw_multipath(3000, rms_delay_spread_s=tau_s, k_factor=2.0, doppler_hz=0.0, rng=rng)
    np.testing.assert_allclose(ch.rms_delay_spread_s, tau_s, rtol=1e-9)  # float64 sums of 12 paths: ~1e-15
    g = ch.path_gains(np.zeros((len(ch), 1)))[..., 0]  # (N, P)
    pdp = np.mean(np.abs(g) ** 2, axis=0)
    delays = ch.path_delays_s[0]
    mean = np.sum(pdp * delays) / pdp.sum()
    rms = np.sqrt(np.sum(pdp * (delays - mean) ** 2) / pdp.sum())
    # statistical bounds: each path's average power over 3,000 draws scatters by 1/sqrt(3000) = 1.8 %
    # (an exponential |g|^2), so the profile's RMS spread and total by a few %, the -30 dB ratio by ~0.1 dB
    assert rms == pytest.approx(tau_s, rel=0.06)
    assert pdp.sum() == pytest.approx(1.0, rel=0.05)  # unit average power
    assert 10 * np.log10(pdp[-1] / pdp[0]) == pytest.approx(-30.0, abs=1.5)


@pytest.mark.parametrize("tau_s", [50e-9, 300e-9])
def test_sampled_channel_has_the_frequency_response_of_its_sub_sample_paths(tau_s):
    """The sampled channel (band-limited interpolation of sub-sample paths) has, across the LoRa band, the
    response sum_p g_p exp(-2j pi f tau_p) of its paths: their delays, hence the delay spread, are kept."""
    rng = np.random.default_rng(3)
    ch = channel.draw_multipath(200, rms_delay_spread_s=tau_s, k_factor=0.0, doppler_hz=0.0, rng=rng)
    impulse = np.zeros(256, np.complex64)
    impulse[100] = 1.0
    h = channel.apply_multipath(np.tile(impulse, (len(ch), 1)), ch, fs_hz=CFG.fs_hz)  # impulse responses
    f_hz = np.linspace(-CFG.bw_hz / 2, CFG.bw_hz / 2, 41)
    dtft = np.exp(-2j * np.pi * np.outer(np.arange(256) - 100, f_hz) / CFG.fs_hz)
    got = h.astype(np.complex128) @ dtft  # (N, F)
    gains = ch.path_gains(np.zeros((len(ch), 1)))[..., 0]  # (N, P), unit total power on average

    def response(delay_scale: float) -> np.ndarray:
        phase = np.exp(-2j * np.pi * f_hz * delay_scale * ch.path_delays_s[..., None])  # (N, P, F)
        return np.einsum("np,npf->nf", gains, phase)

    # The Kaiser-windowed sinc (beta 8, 12 taps a side) is flat to ~1e-4 at |f| <= 62.5 kHz of 1 MS/s, and
    # float32 taps and FFT convolution add ~1e-6: 1e-3 bounds both
    assert np.abs(got - response(1.0)).max() < 1e-3
    # negative control: paths 20 % later give another response (by 1e-2 at 50 ns, 7e-2 at 300 ns)
    assert np.abs(got - response(1.2)).max() > 5e-3


@pytest.mark.parametrize("k", [0.0, 3.0, 10.0])
def test_rician_k_factor_is_measured_back(k):
    rng = np.random.default_rng(4)
    ch = channel.draw_multipath(6000, rms_delay_spread_s=50e-9, k_factor=k, doppler_hz=0.0, rng=rng)
    g0 = ch.path_gains(np.zeros((len(ch), 1)))[:, 0, 0]
    p = np.abs(g0) ** 2
    gamma = np.var(p) / np.mean(p) ** 2  # = (1 + 2K) / (1 + K)^2 for a Rician envelope
    k_hat = np.sqrt(max(1 - gamma, 0.0)) / (1 - np.sqrt(max(1 - gamma, 0.0)))
    # statistical: the moment estimate from 6,000 draws, whose error grows with K (gamma -> 0 at large K)
    assert k_hat == pytest.approx(k, abs=0.15 + 0.12 * k)


@pytest.mark.parametrize("fd_hz", [10.0, 100.0])
def test_doppler_autocorrelation_follows_jakes_bessel(fd_hz):
    rng = np.random.default_rng(5)
    ch = channel.draw_multipath(3000, rms_delay_spread_s=50e-9, k_factor=0.0, doppler_hz=fd_hz, rng=rng)
    lags_s = np.linspace(0, 3 / fd_hz, 13)
    g = ch.path_gains(np.broadcast_to(lags_s, (len(ch), lags_s.size)))[:, 0, :]
    r = np.mean(g * np.conj(g[:, :1]), axis=0) / np.mean(np.abs(g[:, 0]) ** 2)
    # statistical: 3,000 realisations of 16 sinusoids each; the mean of unit-variance products scatters by
    # 1/sqrt(3000) = 0.018, so 0.06 is 3 deviations
    np.testing.assert_allclose(r.real, special.j0(2 * np.pi * fd_hz * lags_s), atol=0.06)
    # negative control: a static channel does not decorrelate
    static = dataclasses.replace(ch, doppler_hz=np.zeros(len(ch)))
    gs = static.path_gains(np.broadcast_to(lags_s, (len(ch), lags_s.size)))[:, 0, :]
    np.testing.assert_array_equal(gs, np.broadcast_to(gs[:, :1], gs.shape))  # exp(1j * 0 * t) is exactly 1


def test_single_path_fractional_delay_matches_the_analytic_chirp():
    rng = np.random.default_rng(6)
    ch = channel.draw_multipath(1, rms_delay_spread_s=100e-9, k_factor=0.0, doppler_hz=0.0, rng=rng)
    powers = np.zeros_like(ch.path_powers)
    powers[0, 4] = 1.0
    ch = dataclasses.replace(ch, path_powers=powers)
    d_s = ch.path_delays_s[0, 4]
    g = ch.path_gains(np.zeros((1, 1)))[0, 4, 0]
    x = packet_waveform(CFG)[: CFG.preamble_samples]
    y = channel.apply_multipath(x, ch, fs_hz=CFG.fs_hz)
    ref = packet_waveform(CFG, t0_s=-d_s)[: CFG.preamble_samples] * g
    err = np.abs(y - ref)[50:-50]
    assert np.median(err) < 1e-3  # away from the chirps' frequency jumps, which are not band-limited
    assert np.mean(err) < 5e-3


def test_time_varying_channel_equals_static_one_when_doppler_vanishes_and_batch_equals_rows():
    rng = np.random.default_rng(7)
    ch = channel.draw_multipath(
        3, rms_delay_spread_s=[30e-9, 150e-9, 300e-9], k_factor=1.0, doppler_hz=0.0, rng=rng
    )
    x = np.tile(packet_waveform(CFG)[:4000], (3, 1))
    y_static = channel.apply_multipath(x, ch, fs_hz=CFG.fs_hz)
    slow = dataclasses.replace(ch, doppler_hz=np.full(3, 1e-9))
    # Float32 FFT convolutions along two code paths (one filter, or two blended): each output's rounding
    # error is ~eps32 * log2(n) = 1e-6 of the signal's RMS (|y| up to ~3), and the 1e-9 Hz Doppler moves the
    # gains by 2 pi 1e-9 * 4 ms: 1e-4 is 30 times the rounding.
    np.testing.assert_allclose(channel.apply_multipath(x, slow, fs_hz=CFG.fs_hz), y_static, atol=1e-4)
    fast = dataclasses.replace(ch, doppler_hz=np.full(3, 80.0))
    y_fast = channel.apply_multipath(x, fast, fs_hz=CFG.fs_hz, t0_s=[0.0, 1.0, 2.0])
    for i in range(3):
        row = channel.apply_multipath(x[i], fast.take([i]), fs_hz=CFG.fs_hz, t0_s=float(i))
        # batch and row take other matmul kernels: float32 sums of ~40 taps of |h x| <= 3 differ by at most
        # 40 * eps32 * 3 = 1.4e-5 (different summation order); 2e-4 leaves 14 times that
        np.testing.assert_allclose(row, y_fast[i], atol=2e-4)
    # negative control: a fast-fading channel is not the static one
    assert np.abs(y_fast - y_static).max() > 0.05


def test_frequency_shift_moves_the_carrier_by_cfo():
    x = np.ones((2, 5000), np.complex64)
    y = channel.frequency_shift(x, [1234.5, -300.0], fs_hz=CFG.fs_hz)
    f_hat = np.angle(np.sum(y[:, 1:] * np.conj(y[:, :-1]), axis=1)) * CFG.fs_hz / (2 * np.pi)
    # float32 phase of each sample: off by <= 2 pi 2**-24 + a few ulps of cos/sin (~1e-6 rad); the summed
    # phase steps telescope, so the mean step is off by ~2e-6 / 4999 rad: 1e-4 of 300 Hz is 1e3 times that
    np.testing.assert_allclose(f_hat, [1234.5, -300.0], rtol=1e-4)


@settings(max_examples=8, deadline=None)
@given(shift=st.floats(-3.0, 3.0), cfo_hz=st.floats(-400.0, 400.0))
def test_timing_shift_of_a_preamble_equals_the_delayed_preamble(shift, cfo_hz):
    """A shifted aligned preamble is the preamble sent ``shift`` samples later, edges included (periodic)."""
    n = CFG.preamble_samples
    x = packet_waveform(CFG, n_preamble=12, cfo_hz=cfo_hz)[2 * 1024 : 2 * 1024 + n]
    ref = packet_waveform(CFG, n_preamble=12, cfo_hz=cfo_hz, t0_s=-shift / CFG.fs_hz)[2 * 1024 : 2 * 1024 + n]
    y = channel.timing_shift(x, shift, period_samples=CFG.samples_per_symbol)
    err = np.abs(y - ref)
    assert np.median(err) < 2e-3  # the interpolator's error (Kaiser sinc, 12 taps a side), far above float32
    assert y.dtype == np.complex64


def test_timing_shift_by_whole_samples_is_a_shift():
    x = packet_waveform(CFG)[: CFG.preamble_samples]
    y = channel.timing_shift(np.stack([x, x]), [2.0, -3.0])
    # a whole-sample delay is an exact circular shift through float32 FFTs: error ~eps32 * log2(n) = 1e-6
    np.testing.assert_allclose(y[0, 2:], x[:-2], atol=1e-3)
    np.testing.assert_allclose(y[1, :-3], x[3:], atol=1e-3)
