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
    x = np.tile(packet_waveform(CFG)[: CFG.preamble_samples], (4, 1)) * np.array([[1], [2], [0.5], [3]])
    snr = np.array([0.0, 10.0, 20.0, -5.0])
    y = channel.add_awgn(x, snr, reference="full_band", rng=rng)
    noise = y - x
    measured = 10 * np.log10(np.mean(np.abs(x) ** 2, axis=1) / np.mean(np.abs(noise) ** 2, axis=1))
    np.testing.assert_allclose(measured, snr, atol=0.1)
    assert y.dtype == np.complex64 and y.shape == x.shape


def test_awgn_in_band_snr_counts_only_noise_inside_the_lora_band():
    rng = np.random.default_rng(1)
    x = np.tile(packet_waveform(CFG)[: CFG.preamble_samples], (8, 1))
    y = channel.add_awgn(x, 10.0, reference="in_band", rng=rng, bw_hz=CFG.bw_hz, fs_hz=CFG.fs_hz)
    noise = (y - x).astype(np.complex128)
    in_band = _in_band_power(noise, CFG.bw_hz, CFG.fs_hz)
    measured = 10 * np.log10(np.mean(np.abs(x) ** 2, axis=1) / in_band)
    np.testing.assert_allclose(measured.mean(), 10.0, atol=0.15)
    full = 10 * np.log10(1.0 / np.mean(np.abs(noise) ** 2))
    assert full == pytest.approx(10.0 - 10 * np.log10(8.0), abs=0.1)  # 9.03 dB lower over 1 MHz
    assert float(channel.in_band_to_full_band_snr_db(10.0, bw_hz=125e3, fs_hz=1e6)) == pytest.approx(
        0.9691, 1e-3
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
    np.testing.assert_allclose(ch.rms_delay_spread_s, tau_s, rtol=1e-9)
    g = ch.path_gains(np.zeros((len(ch), 1)))[..., 0]  # (N, P)
    pdp = np.mean(np.abs(g) ** 2, axis=0)
    delays = ch.path_delays_s[0]
    mean = np.sum(pdp * delays) / pdp.sum()
    rms = np.sqrt(np.sum(pdp * (delays - mean) ** 2) / pdp.sum())
    assert rms == pytest.approx(tau_s, rel=0.06)
    assert pdp.sum() == pytest.approx(1.0, rel=0.05)  # unit average power
    assert 10 * np.log10(pdp[-1] / pdp[0]) == pytest.approx(-30.0, abs=1.5)


def test_discrete_channel_impulse_response_has_the_requested_delay_spread():
    """The sampled channel (band-limited interpolation of sub-sample paths) keeps the delay spread."""
    rng = np.random.default_rng(3)
    tau_s = 200e-9
    ch = channel.draw_multipath(400, rms_delay_spread_s=tau_s, k_factor=0.0, doppler_hz=0.0, rng=rng)
    n = 4096
    f = np.fft.fftfreq(n, 1 / CFG.fs_hz)
    tone_band = np.abs(f) <= 60e3
    # Frequency response of each realisation from a white band-limited probe: mean group delay spread.
    probe = np.exp(2j * np.pi * rng.random(n)).astype(np.complex64)
    probe = np.fft.ifft(np.fft.fft(probe) * tone_band).astype(np.complex64)
    y = channel.apply_multipath(np.tile(probe, (len(ch), 1)), ch, fs_hz=CFG.fs_hz)
    h = np.fft.fft(y[:, 200:-200], axis=1) / np.fft.fft(probe[200:-200])
    # Frequency correlation of H over the band falls as 1/sqrt(1+(2 pi df tau)^2) for an exponential PDP.
    fb = np.fft.fftfreq(n - 400, 1 / CFG.fs_hz)
    band = np.flatnonzero(np.abs(fb) <= 40e3)
    hb = h[:, band]
    lag = 10  # bins
    corr = np.mean(hb[:, lag:] * np.conj(hb[:, :-lag])) / np.mean(np.abs(hb) ** 2)
    df = lag * CFG.fs_hz / (n - 400)
    expected = 1 / np.sqrt(1 + (2 * np.pi * df * tau_s) ** 2)
    assert abs(corr) == pytest.approx(expected, abs=0.03)


@pytest.mark.parametrize("k", [0.0, 3.0, 10.0])
def test_rician_k_factor_is_measured_back(k):
    rng = np.random.default_rng(4)
    ch = channel.draw_multipath(6000, rms_delay_spread_s=50e-9, k_factor=k, doppler_hz=0.0, rng=rng)
    g0 = ch.path_gains(np.zeros((len(ch), 1)))[:, 0, 0]
    p = np.abs(g0) ** 2
    gamma = np.var(p) / np.mean(p) ** 2  # = (1 + 2K) / (1 + K)^2 for a Rician envelope
    k_hat = np.sqrt(max(1 - gamma, 0.0)) / (1 - np.sqrt(max(1 - gamma, 0.0)))
    assert k_hat == pytest.approx(k, abs=0.15 + 0.12 * k)


@pytest.mark.parametrize("fd_hz", [10.0, 100.0])
def test_doppler_autocorrelation_follows_jakes_bessel(fd_hz):
    rng = np.random.default_rng(5)
    ch = channel.draw_multipath(3000, rms_delay_spread_s=50e-9, k_factor=0.0, doppler_hz=fd_hz, rng=rng)
    lags_s = np.linspace(0, 3 / fd_hz, 13)
    g = ch.path_gains(np.broadcast_to(lags_s, (len(ch), lags_s.size)))[:, 0, :]
    r = np.mean(g * np.conj(g[:, :1]), axis=0) / np.mean(np.abs(g[:, 0]) ** 2)
    np.testing.assert_allclose(r.real, special.j0(2 * np.pi * fd_hz * lags_s), atol=0.06)
    # negative control: a static channel does not decorrelate
    static = dataclasses.replace(ch, doppler_hz=np.zeros(len(ch)))
    gs = static.path_gains(np.broadcast_to(lags_s, (len(ch), lags_s.size)))[:, 0, :]
    assert np.allclose(gs, gs[:, :1])


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
    np.testing.assert_allclose(channel.apply_multipath(x, slow, fs_hz=CFG.fs_hz), y_static, atol=1e-4)
    fast = dataclasses.replace(ch, doppler_hz=np.full(3, 80.0))
    y_fast = channel.apply_multipath(x, fast, fs_hz=CFG.fs_hz, t0_s=[0.0, 1.0, 2.0])
    for i in range(3):
        row = channel.apply_multipath(x[i], fast.take([i]), fs_hz=CFG.fs_hz, t0_s=float(i))
        np.testing.assert_allclose(row, y_fast[i], atol=2e-4)
    # negative control: a fast-fading channel is not the static one
    assert np.abs(y_fast - y_static).max() > 0.05


def test_frequency_shift_moves_the_carrier_by_cfo():
    x = np.ones((2, 5000), np.complex64)
    y = channel.frequency_shift(x, [1234.5, -300.0], fs_hz=CFG.fs_hz)
    f_hat = np.angle(np.sum(y[:, 1:] * np.conj(y[:, :-1]), axis=1)) * CFG.fs_hz / (2 * np.pi)
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
    assert np.median(err) < 2e-3
    assert y.dtype == np.complex64


def test_timing_shift_by_whole_samples_is_a_shift():
    x = packet_waveform(CFG)[: CFG.preamble_samples]
    y = channel.timing_shift(np.stack([x, x]), [2.0, -3.0])
    np.testing.assert_allclose(y[0, 2:], x[:-2], atol=1e-3)
    np.testing.assert_allclose(y[1, :-3], x[3:], atol=1e-3)
