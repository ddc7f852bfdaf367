"""Training augmentation against ground truth: noise at the drawn in-band SNR, a shift by the drawn frequency,
the drawn multipath channel's response, and every draw from the caller's generator."""

from __future__ import annotations

import numpy as np
import pytest

from lorarffi.dsp import LoRaConfig, packet_waveform
from lorarffi.errors import ConfigError
from lorarffi.rffi.augment import AUGMENTATIONS, Augmenter, _small_clock_offset

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
L = CFG.preamble_samples


def preambles(n: int) -> np.ndarray:
    """``n`` copies of a clean, CFO-free preamble (complex64, unit modulus)."""
    return np.tile(packet_waveform(CFG)[:L], (n, 1))


def test_noise_has_the_drawn_in_band_snr() -> None:
    n = 32
    x = preambles(n)
    aug = Augmenter(("awgn",), CFG.fs_hz, bw_hz=CFG.bw_hz, snr_db=(0.0, 30.0))
    rng = np.random.default_rng(7)
    draws = aug.draw(n, rng)
    assert draws.channel is None and draws.cfo_shift_hz is None
    assert np.all((draws.snr_db >= 0.0) & (draws.snr_db <= 30.0)) and np.ptp(draws.snr_db) > 10.0
    y = aug.apply(x, draws, rng)
    assert y.dtype == np.complex64 and y.shape == x.shape
    # In-band noise power from the DFT bins strictly inside +-bw/2 (Parseval), scaled from those bins' share
    # of the sample rate to bw/fs.
    spec = np.fft.fft(y.astype(np.complex128) - x, axis=1)
    in_band = np.abs(np.fft.fftfreq(L, 1 / CFG.fs_hz)) < CFG.bw_hz / 2
    n_bins = int(in_band.sum())
    noise = np.sum(np.abs(spec[:, in_band]) ** 2, axis=1) / L**2 * (CFG.bw_hz / CFG.fs_hz) / (n_bins / L)
    signal = np.mean(np.abs(x.astype(np.complex128)) ** 2, axis=1)
    snr_db = 10 * np.log10(signal / noise)
    # Statistical bound: white noise gives n_bins (1,023) independent exponential bin powers, so the
    # estimate's relative std is 1/sqrt(n_bins) = 3.1 %; 5 standard deviations are +0.63 / -0.74 dB per packet
    # and 0.74/sqrt(32) = 0.13 dB on the mean over the packets (float32 rounding of y: 1e-13 of the noise).
    assert np.max(np.abs(snr_db - draws.snr_db)) < 0.74
    assert abs(np.mean(snr_db - draws.snr_db)) < 0.74 / np.sqrt(n)


def test_frequency_shift_is_the_drawn_one() -> None:
    n = 16
    x = preambles(n)
    aug = Augmenter(("cfo",), CFG.fs_hz, cfo_shift_hz=200.0)
    rng = np.random.default_rng(3)
    draws = aug.draw(n, rng)
    assert draws.channel is None and draws.snr_db is None
    assert np.all(np.abs(draws.cfo_shift_hz) <= 200.0) and np.ptp(draws.cfo_shift_hz) > 100.0
    y = aug.apply(x, draws, rng)
    # Estimate: the phase advance per sample of y * conj(x), averaged as the angle of the summed increments.
    z = y.astype(np.complex128) * np.conj(x)
    cfo_hz = np.angle(np.sum(z[:, 1:] * np.conj(z[:, :-1]), axis=1)) * CFG.fs_hz / (2 * np.pi)
    # Bound from the arithmetic: the shift's phase is rounded to float32 (turns: 2^-25 turn = 1.9e-7 rad;
    # times float32 2 pi: two roundings of <= 2 pi * 2^-24 = 3.7e-7 rad each), its cos/sin and the complex64
    # product add about 1 ulp each (3 x 1.2e-7 rad): <= 1.3e-6 rad per sample, 2.6e-6 rad per increment.
    # Every summed increment lies within that of the true one, so their sum does too: 2.6e-6 rad * fs / (2 pi)
    # = 0.42 Hz.
    np.testing.assert_allclose(cfo_hz, draws.cfo_shift_hz, rtol=0, atol=0.42)


def test_multipath_filters_each_packet_with_its_drawn_channel() -> None:
    n = 12
    aug = Augmenter(("multipath",), CFG.fs_hz)
    draws = aug.draw(n, np.random.default_rng(11))
    ch = draws.channel
    assert draws.cfo_shift_hz is None and draws.snr_db is None
    spread_s = ch.rms_delay_spread_s  # recomputed from the profile: float64 rounding, 1e-12 allowed
    assert np.all((spread_s > 10e-9 * (1 - 1e-12)) & (spread_s < 300e-9 * (1 + 1e-12)))
    assert np.ptp(spread_s) > 100e-9
    assert np.all((ch.k_factor >= 0) & (ch.k_factor <= 10)) and not np.any(ch.doppler_hz)
    gains = ch.path_gains(np.zeros((n, 1)))[..., 0]  # (N, P): static channel
    t = np.arange(L) / CFG.fs_hz
    margin = 64  # edge samples where the delayed paths reach before the first / after the last sample
    responses = []
    for f0_hz in (-60e3, -25e3, 0.0, 25e3, 60e3):  # tones inside the LoRa band
        tone = np.tile(np.exp(2j * np.pi * f0_hz * t).astype(np.complex64), (n, 1))
        y = aug.apply(tone, draws, np.random.default_rng(0))
        h = np.sum(gains * np.exp(-2j * np.pi * f0_hz * ch.path_delays_s), axis=1)  # H(f0) of every packet
        expected = h[:, None] * tone[:, margin:-margin]
        # The fractional delays are a Kaiser (beta 8) windowed sinc: its passband error is below the window's
        # side-lobe level, 10^(-(8.7 + 8 / 0.1102) / 20) = 9e-5 (Kaiser's formula), relative to sum |g_p|;
        # the complex64 FFT convolution adds about 1e-6. The bound allows 1e-3 of sum |g_p|.
        err = np.abs(y[:, margin:-margin] - expected).max(axis=1)
        assert np.all(err <= 1e-3 * np.abs(gains).sum(axis=1))
        responses.append(h)
    h = np.array(responses)  # (tones, N)
    assert np.std(np.abs(h[2])) > 0.05  # every packet its own fading
    assert np.max(np.abs(h - 1)) > 0.5  # the channel really changes the signal


def test_every_draw_comes_from_the_callers_generator() -> None:
    x = preambles(8)
    aug = Augmenter(AUGMENTATIONS, CFG.fs_hz, bw_hz=CFG.bw_hz)
    a = aug(x, np.random.default_rng(5))
    b = aug(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)  # same draws, same functions, same data: bit-identical
    assert not np.array_equal(aug(x, np.random.default_rng(6)), a)  # another seed, other draws
    rng = np.random.default_rng(5)  # calling it = drawing the parameters, then applying them
    np.testing.assert_array_equal(aug.apply(x, aug.draw(8, rng), rng), a)
    np.testing.assert_array_equal(x, preambles(8))  # the input is left alone
    assert a.dtype == np.complex64


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ConfigError, match="augment=.*'rain'"):
        Augmenter(("awgn", "rain"), CFG.fs_hz)
    assert Augmenter.from_kinds(["awgn", "", "cfo"], CFG.fs_hz).kinds == ("awgn", "cfo")


# -- the receiver kind ------------------------------------------------------------------------------------
def _receiver_only(**kw) -> Augmenter:
    """An Augmenter of the receiver kind alone with every magnitude 0 unless given."""
    zero = {
        "rx_iq_gain_db": 0.0,
        "rx_iq_phase_deg": 0.0,
        "rx_dc_offset": 0.0,
        "rx_phase_noise_rms_deg": 0.0,
        "rx_clock_ppm": 0.0,
        "rx_quantized_fraction": 0.0,
    }
    return Augmenter(("receiver",), CFG.fs_hz, bw_hz=CFG.bw_hz, **(zero | kw))


def test_a_receiver_with_nothing_wrong_changes_nothing_but_rounding() -> None:
    x = preambles(6)
    y = _receiver_only()(x, np.random.default_rng(0))
    # Two frequency shifts (each a float32 product of unit phasors: a few ulps) and the clock stage with 0
    # ppm (x - 0 * x'): every sample within 8 float32 ulps of its unit amplitude.
    np.testing.assert_allclose(y, x, rtol=0, atol=8 * np.finfo(np.float32).eps)


def test_a_receiver_dc_offset_lands_where_the_packet_sat_in_its_band() -> None:
    x = preambles(4)
    aug = _receiver_only(rx_dc_offset=0.05)
    rng = np.random.default_rng(3)
    draws = aug.draw(4, rng)
    y = aug.apply(x, draws, rng)
    rx = draws.receiver
    # The DC offset was added before the packet was shifted back by -offset: after it, a tone at -offset_hz
    # of complex amplitude dc * rms(x) = dc (unit-modulus packets). Its projection on that tone is exact up to
    # the packet's own leakage onto it, which the difference y - x does not have.
    t_s = np.arange(L) / CFG.fs_hz
    tone = np.exp(-2j * np.pi * rx.offset_hz[:, None] * t_s)
    amp = np.mean((y - x) * np.conj(tone), axis=1)
    assert np.all(np.abs(rx.dc_offset) <= 0.05)
    np.testing.assert_allclose(amp, rx.dc_offset, rtol=0, atol=1e-5)


def test_the_first_order_clock_error_follows_a_tone_it_displaces() -> None:
    # A tone of f cycles/sample sampled by a clock e fast is exp(j 2 pi f n / (1 + e)). The first-order model
    # leaves an error of about (2 pi f d)^2 / 2 at displacement d = n e; f = 1/16 (62.5 kHz at 1 MS/s: the
    # edge of a 125 kHz LoRa band) and 20 ppm over L samples: d <= 0.164 samples.
    n = np.arange(L)
    f = 512 / L  # a whole number of cycles in the row: periodic, as the FFT derivative assumes
    x = np.exp(2j * np.pi * f * n).astype(np.complex64)[None]
    for ppm in (20.0, -20.0):
        truth = np.exp(2j * np.pi * f * n / (1 + ppm * 1e-6))
        y = _small_clock_offset(x, np.array([ppm]))[0]
        d = np.abs(ppm) * 1e-6 * L
        bound = (2 * np.pi * f * d) ** 2 / 2 + 1e-5  # + float32 FFT round-off of a unit tone
        assert np.max(np.abs(y - truth)) <= bound
        assert np.max(np.abs(x[0] - truth)) > 10 * bound  # the clock error itself is far larger
    with pytest.raises(ConfigError, match="clock error too large"):
        _small_clock_offset(x, np.array([100.0]))


def test_receiver_draws_stay_within_their_ranges() -> None:
    aug = Augmenter(("receiver",), CFG.fs_hz)
    rx = aug.draw(4000, np.random.default_rng(1)).receiver
    assert np.all(np.abs(rx.iq_gain_db) <= aug.rx_iq_gain_db)
    assert np.all(np.abs(rx.iq_phase_deg) <= aug.rx_iq_phase_deg)
    assert np.all(np.abs(rx.clock_ppm) <= aug.rx_clock_ppm)
    assert np.all((rx.phase_noise_rms_deg >= 0) & (rx.phase_noise_rms_deg <= aug.rx_phase_noise_rms_deg))
    # Half the packets TCXO-like (300 Hz RMS), half spread over +-20 kHz: the share beyond 2 kHz (6.7 sigma
    # of the TCXO part) estimates 0.5 * 18/20 = 0.45; 4000 draws give a standard error of 0.008.
    assert abs(np.mean(np.abs(rx.offset_hz) > 2e3) - 0.45) < 5 * 0.008
    assert abs(np.mean(rx.quantized) - aug.rx_quantized_fraction) < 5 * np.sqrt(0.3 * 0.7 / 4000)
