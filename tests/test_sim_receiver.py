"""Another receiver (lorarffi.sim.receiver) against ground truth: each stage measured on its own.

Image rejection equals the configured IQ imbalance; the DC offset is measured; a sample-clock error shows as
a chirp-timing drift of the configured ppm; 8-bit quantisation gives the SQNR of a uniform quantiser; a
different sample rate keeps a tone's frequency; preamble sets and streams carry the receiver's LO error in
their CFO truth and streams stay chunk-independent.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lorarffi.dsp import LoRaConfig, estimate_cfo
from lorarffi.dsp.chirp import downchirp, upchirp
from lorarffi.errors import ConfigError
from lorarffi.sim import Session, make_fleet, simulate_preamble_set
from lorarffi.sim.receiver import (
    RECEIVERS,
    ReceiverProfile,
    quantize,
    receive,
    resample,
    sample_clock_offset,
)
from lorarffi.sim.stream import StreamSimulator

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
FS_HZ = CFG.fs_hz
L = 1 << 16


def _tone(bin_index: int, length: int = L) -> np.ndarray:
    """A unit tone exactly on FFT bin ``bin_index`` of ``length`` samples (complex64)."""
    return np.exp(2j * np.pi * bin_index * np.arange(length) / length).astype(np.complex64)


def _receive(x: np.ndarray, **fields: object) -> np.ndarray:
    return receive(x, ReceiverProfile(**fields), fs_hz=FS_HZ, rng=np.random.default_rng(0))


def test_ideal_receiver_returns_its_input_unchanged():
    x = _tone(123, 4096) * np.complex64(0.3 + 0.1j)
    assert np.array_equal(_receive(x), x)
    both = np.stack([x, x])
    assert np.array_equal(receive(both, RECEIVERS["ideal"], fs_hz=FS_HZ, rng=np.random.default_rng(0)), both)


@pytest.mark.parametrize("gain_db, phase_deg", [(0.5, 3.0), (-0.3, -1.0)])
def test_image_rejection_equals_the_configured_iq_imbalance(gain_db, phase_deg):
    """A tone on bin +k comes out with an image on bin -k at (1 + g^2 - 2 g cos phi) / (1 + g^2 + 2 g cos phi)
    (g the Q branch's linear gain): |nu/mu|^2 of y = mu x + nu conj(x). float32 rounding adds at most a few
    1e-7 of the tone's amplitude per sample, which averages down in the DFT bin: relative to an image of
    amplitude > 0.01 that is < 1e-4 dB, so 1e-3 dB bounds it."""
    k = 1000
    y = _receive(_tone(k), iq_gain_db=gain_db, iq_phase_deg=phase_deg)
    spectrum = np.abs(np.fft.fft(y.astype(np.complex128))) ** 2
    measured_db = 10 * np.log10(spectrum[-k] / spectrum[k])
    g, phi = 10 ** (gain_db / 20), np.deg2rad(phase_deg)
    expected_db = 10 * np.log10((1 + g**2 - 2 * g * np.cos(phi)) / (1 + g**2 + 2 * g * np.cos(phi)))
    assert abs(measured_db - expected_db) < 1e-3
    # negative control: half the gain error is a different image (more than 1 dB away)
    half = _receive(_tone(k), iq_gain_db=gain_db / 2, iq_phase_deg=phase_deg)
    half_spec = np.abs(np.fft.fft(half.astype(np.complex128))) ** 2
    assert abs(10 * np.log10(half_spec[-k] / half_spec[k]) - expected_db) > 1.0


def test_dc_offset_is_measured_in_units_of_the_input_rms():
    """A tone of RMS 0.25 on an exact bin has zero mean (up to float32 rounding, ~1e-8 after averaging
    65536 samples); the output's mean is the configured offset times the input RMS, within 1e-6."""
    x = _tone(777) * np.float32(0.25)
    y = _receive(x, dc_offset_i=0.03, dc_offset_q=-0.02)
    assert abs(np.mean(y.astype(np.complex128)) - 0.25 * (0.03 - 0.02j)) < 1e-6
    assert abs(np.mean(_receive(x).astype(np.complex128))) < 1e-6  # negative control: no offset, no DC


@pytest.mark.parametrize("clock_ppm", [200.0, -150.0])
def test_sample_clock_offset_shows_as_a_chirp_timing_drift(clock_ppm):
    """64 base up-chirps sampled by a clock ``clock_ppm`` fast: what was at sample m appears at m (1 + eps),
    so symbol k's window sees its chirp delayed by eps (k N + (N-1)/2) samples, N = 1024. Dechirped, a delay
    of d samples is a tone at -d * slope / fs (slope = bw^2 / 2^SF); the fitted delay per symbol is eps N.
    The time scaling also scales the chirp slope by 1/(1+eps), a zero-mean frequency ramp across each window
    that leaves the fitted slope alone; the Kaiser-sinc interpolation errors (~1e-3 rad) change it by far
    less than the 1 % bound (2 ppm of 200)."""
    n_sym = 64
    n_per = CFG.samples_per_symbol
    y = sample_clock_offset(np.tile(upchirp(CFG), n_sym), clock_ppm)
    dechirped = y.reshape(n_sym, n_per) * downchirp(CFG)
    core = dechirped[:, 32:-32]  # a drift of up to 13 samples puts a neighbouring chirp at a window's edge
    step = np.sum(core[:, 1:] * np.conj(core[:, :-1]), axis=1, dtype=np.complex128)
    tone_hz = np.angle(step) * FS_HZ / (2 * np.pi)
    slope_hz_per_s = CFG.bw_hz**2 / CFG.n_chips
    delay_samples = -tone_hz / slope_hz_per_s * FS_HZ
    drift_per_symbol = np.polyfit(np.arange(n_sym), delay_samples, 1)[0]
    measured_ppm = drift_per_symbol / n_per * 1e6
    assert abs(measured_ppm - clock_ppm) < 0.01 * abs(clock_ppm)
    # negative control: no clock error, no drift
    still = np.tile(upchirp(CFG), n_sym).reshape(n_sym, n_per) * downchirp(CFG)
    assert np.allclose(np.angle(np.sum(still[:, 1:] * np.conj(still[:, :-1]), axis=1)), 0.0, atol=1e-5)


@pytest.mark.parametrize("bits", [8, 7])
def test_quantisation_gives_the_sqnr_of_a_uniform_quantiser(bits):
    """Complex Gaussian input (noise, as at a receiver's input; its density is smooth over many levels, the
    condition under which the error is uniform in +-q/2), gain set 18 dB below full scale per component so
    clipping (beyond 7.9 sigma) is negligible: SQNR = 10 log10(3 * 4^b) - 18 dB (34.9 dB for 8 bits). The
    error power averages 2 x 65536 values whose squares have a relative spread of sqrt(4/5): a relative
    standard error of 0.25 %, 0.011 dB; 0.05 dB is about 4.5 of them."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((L, 2), dtype=np.float32) * np.float32(0.3)).view(np.complex64)[:, 0]
    y = _receive(x, adc_bits=bits, adc_backoff_db=18.0)
    err = (y - x).astype(np.complex128)
    sqnr_db = 10 * np.log10(np.mean(np.abs(x.astype(np.complex128)) ** 2) / np.mean(np.abs(err) ** 2))
    assert abs(sqnr_db - (10 * np.log10(3 * 4.0**bits) - 18.0)) < 0.05
    assert len(np.unique(y.real)) <= 2**bits  # at most 2^bits levels per component


def test_quantize_clips_to_the_outer_levels():
    levels = quantize(np.array([5.0 + 0.1j, -5.0 - 0.1j], np.complex64), adc_bits=3, full_scale=1.0)
    assert np.array_equal(levels, np.array([0.875 + 0.125j, -0.875 - 0.125j], np.complex64))


@pytest.mark.parametrize("rx_fs_hz", [2.4e6, 1.92e6, 250e3])
def test_another_sample_rate_keeps_a_tones_frequency_and_amplitude(rx_fs_hz):
    """A 12345.6 Hz tone through a receiver sampling at another rate, resampled back: in the interior (away
    from the filters' edge transients) the output equals the input within the polyphase filter's passband
    ripple (resample_poly's Kaiser window, beta 5: attenuation A = beta / 0.1102 + 8.7 = 54 dB, a ripple of
    2e-3 per filter, two filters: 1e-2 bounds it). An LTI filter gives a tone one complex gain, so the
    phase-slope frequency over 61536 samples matches within 0.01 Hz (the rate change is exact)."""
    f_hz = 12345.6
    x = np.exp(2j * np.pi * f_hz * np.arange(L) / FS_HZ).astype(np.complex64)
    y = _receive(x, fs_hz=rx_fs_hz)
    inner = slice(2000, L - 2000)
    assert y.shape == x.shape and y.dtype == np.complex64
    assert np.max(np.abs(y[inner] - x[inner])) < 1e-2
    phase = np.unwrap(np.angle(y[inner].astype(np.complex128)))
    measured_hz = np.polyfit(np.arange(phase.size), phase, 1)[0] * FS_HZ / (2 * np.pi)
    assert abs(measured_hz - f_hz) < 0.01


def test_resample_refuses_rates_it_cannot_reach():
    with pytest.raises(ConfigError, match="ratio"):
        resample(np.ones(100, np.complex64), 1e6, 1_000_003.0)
    with pytest.raises(ConfigError, match="adc_bits"):
        ReceiverProfile(adc_bits=0)
    with pytest.raises(ConfigError, match="fs_hz"):
        ReceiverProfile(fs_hz=2.4e6 + 0.5)


def test_preamble_sets_through_another_receiver_carry_its_lo_error():
    """With an 8-bit SDR whose reference is 10 ppm fast, every packet's CFO truth drops by 10 ppm of its
    carrier (8681 Hz at 868.1 MHz) and the CFO estimated from the received windows follows it: at 30 dB
    without multipath the estimator's error is a few Hz (1 deg of LO phase noise over the 8 symbols' phase
    steps, ~1.4 Hz; quantisation noise 41 dB down), so 20 Hz bounds it; a wrong sign would be 17 kHz off."""
    fleet = make_fleet(2, seed=4)
    kwargs = {"session": Session(), "snr_db": 30.0, "multipath": False}
    clean = simulate_preamble_set(fleet, CFG, 3, rng=np.random.default_rng(5), **kwargs)
    rx = RECEIVERS["sdr_8bit"]
    got = simulate_preamble_set(fleet, CFG, 3, rng=np.random.default_rng(5), receiver=rx, **kwargs)
    assert got.preambles.shape == clean.preambles.shape and got.preambles.dtype == np.complex64
    lo_hz = rx.clock_ppm * 1e-6 * fleet[0].carrier_freq_hz
    assert np.allclose(got.cfo_hz, clean.cfo_hz - lo_hz, rtol=0, atol=1e-6)
    assert np.all(np.abs(estimate_cfo(got.preambles, CFG) - got.cfo_hz) < 20.0)
    assert np.all(np.abs(estimate_cfo(clean.preambles, CFG) - clean.cfo_hz) < 20.0)


@pytest.mark.slow
def test_streams_through_another_receiver_stay_chunk_independent():
    """The receiver acts per packet and sample by sample, so two chunkings give the same samples; event
    CFOs include its LO error, and the ADC leaves at most 2^8 levels per component."""
    fleet = make_fleet(2, seed=1)
    rx = dataclasses.replace(RECEIVERS["sdr_8bit"], clock_ppm=-5.0)

    def run(chunks):
        sim = StreamSimulator(fleet, CFG, seed=3, receiver=rx, mean_interval_s=0.05)
        return np.concatenate([sim.read(c)[1] for c in chunks]), sim.events

    a, events = run([300_000])
    b, _ = run([1, 70_001, 29_998, 200_000])
    assert np.array_equal(a, b) and events
    plain = StreamSimulator(fleet, CFG, seed=3, mean_interval_s=0.05)
    _, ideal = plain.read(300_000)
    lo_hz = rx.clock_ppm * 1e-6 * fleet[0].carrier_freq_hz
    assert np.allclose(
        [e.cfo_hz for e in events], [e.cfo_hz - lo_hz for e in plain.events], rtol=0, atol=1e-6
    )
    assert len(np.unique(a.real)) <= 2**8 < len(np.unique(ideal.real))
