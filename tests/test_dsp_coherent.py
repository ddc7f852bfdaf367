"""The coherent average of a preamble's symbols, and the representation built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorarffi.dsp import LoRaConfig, channel_independent_spectrogram, packet_waveform, spectrogram
from lorarffi.dsp.coherent import coherent_symbol_average
from lorarffi.dsp.representation import RepresentationConfig, output_shape, represent
from lorarffi.dsp.spectrogram import crop_rows
from lorarffi.errors import ConfigError

U32 = 2.0**-24  # unit roundoff of float32
CFG = LoRaConfig()  # SF7, 125 kHz, 1 MS/s: 1024 samples per symbol, 8 up-chirps
COHERENT = RepresentationConfig("coherent_channel_independent_spectrogram", {})


def preamble() -> np.ndarray:
    return packet_waveform(CFG)[: CFG.preamble_samples].astype(np.complex64)


def turned(x: np.ndarray, rng: np.random.Generator, residual_cfo_hz: float) -> np.ndarray:
    """``x`` with a residual carrier offset and a random phase jump at every symbol boundary."""
    t = np.arange(x.size) / CFG.fs_hz
    jumps = np.repeat(rng.uniform(-np.pi, np.pi, x.size // CFG.samples_per_symbol), CFG.samples_per_symbol)
    return (x * np.exp(1j * (2 * np.pi * residual_cfo_hz * t + jumps))).astype(np.complex64)


def aligned_error(avg: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``avg - ref`` after turning ``ref`` onto ``avg``'s global phase."""
    phase = np.vdot(ref, avg)
    return avg - ref * (phase / abs(phase))


def chirp_bins(x: np.ndarray) -> np.ndarray:
    """(102, 7) mask of the ratios whose two frames of the clean preamble ``x`` are within 20 dB of their
    frame's strongest bin: where the chirp is (elsewhere a ratio compares floors or noise with noise)."""
    log_power = spectrogram(x[None], crop=(0.3, 0.7))[0, :, :8]
    near = log_power >= log_power.max(axis=0, keepdims=True) - 2.0
    return near[:, :7] & near[:, 1:8]


def test_a_noiseless_preamble_averages_to_its_symbol_whatever_the_phase_jumps_and_residual_cfo():
    rng = np.random.default_rng(0)
    x = preamble()
    rows = np.stack([turned(x, rng, cfo) for cfo in (0.0, 37.0, -180.0)])
    avg = coherent_symbol_average(rows, CFG.samples_per_symbol)
    assert avg.shape == (3, CFG.samples_per_symbol) and avg.dtype == np.complex64
    # Each row's symbols all hold its first symbol times a phase (the residual CFO's in-symbol ramp is the
    # same in every symbol), so the average is that symbol. Unit-amplitude samples: the float32 products and
    # the mean of 8 err by about 10 u per sample; each symbol's phase comes from a sum of 1024 products,
    # whose relative error stays below 1024 u even summed in order. Bound: 2 * 1024 u.
    for r in range(3):
        first = rows[r, : CFG.samples_per_symbol].astype(np.complex128)
        err = aligned_error(avg[r].astype(np.complex128), first)
        assert np.max(np.abs(err)) <= 2 * 1024 * U32


def test_averaging_divides_the_noise_power_by_the_number_of_symbols():
    rng = np.random.default_rng(1)
    x = preamble()
    n_rows, k = 50, CFG.preamble_symbols
    noise = (rng.standard_normal((n_rows, x.size)) + 1j * rng.standard_normal((n_rows, x.size))) / np.sqrt(2)
    rows = (np.stack([turned(x, rng, 60.0) for _ in range(n_rows)]) + noise).astype(np.complex64)
    avg = coherent_symbol_average(rows, CFG.samples_per_symbol).astype(np.complex128)
    signal = rows[:, : CFG.samples_per_symbol] - noise[:, : CFG.samples_per_symbol]
    err = np.stack([aligned_error(avg[r], signal[r]) for r in range(n_rows)])
    # Unit noise power per sample: the mean of 8 phase-aligned symbols keeps 1/8 of it. 51,200 samples give
    # the power to 0.44 % (1 sigma); the phases, estimated over 1024 samples at 0 dB, add ~1e-4. 5 % is > 10
    # sigma; and a single symbol's noise (power 1) or an incoherent sum would be far outside.
    power = np.mean(np.abs(err) ** 2)
    assert abs(power / (1 / k) - 1) < 0.05


def test_a_packet_of_fewer_than_two_symbols_is_refused():
    with pytest.raises(ConfigError, match="at least two whole symbols"):
        coherent_symbol_average(np.zeros(1500, np.complex64), 1024)


def test_the_representation_is_the_cyclic_ci_spectrogram_of_one_clean_symbol():
    rng = np.random.default_rng(2)
    x = preamble()
    rows = np.stack([turned(x, rng, cfo) for cfo in (0.0, 90.0)])
    got = represent(rows, COHERENT)
    assert got.shape == (2, 1, 102, 8) == (2, *output_shape(COHERENT, CFG.preamble_samples))
    # One symbol of identical chirps is one period: the first 7 ratios are those of the unfolded spectrogram
    # of the clean preamble, to the FFT's rounding carried through log10 (far below 1e-3 where the chirp
    # is). A residual CFO of 90 Hz delays the chirp by 90 Hz / (125 kHz / 1.024 ms) = 0.74 us, under one
    # sample of a 256-sample frame: those ratios move by less than 0.05.
    ci = channel_independent_spectrogram(x[None])[0, :, :7]
    strong = chirp_bins(x)
    assert strong.sum() > 50
    np.testing.assert_allclose(got[0, 0, :, :7][strong], ci[strong], rtol=0, atol=1e-3)
    np.testing.assert_allclose(got[1, 0, :, :7][strong], ci[strong], rtol=0, atol=0.05)


def test_the_representation_is_far_less_noisy_than_one_period_of_the_unfolded_one():
    rng = np.random.default_rng(3)
    x = preamble()
    clean = represent(x[None], COHERENT)[0, 0, :, :7]
    ci = channel_independent_spectrogram(x[None])[0, :, :7]
    noise = (rng.standard_normal((20, x.size)) + 1j * rng.standard_normal((20, x.size))) * 0.3
    noisy = (x + noise).astype(np.complex64)
    one = channel_independent_spectrogram(noisy)[..., :7] - ci
    many = represent(noisy, COHERENT)[:, 0, :, :7] - clean
    # Where the chirp is, a ratio's noise is the noise-to-signal power ratio of its two bins, and the average
    # divides the noise's power by 8: the ratios' variance over realisations drops by about 8 (by more than
    # 4 here, 20 realisations of each bin). Noise-only bins stay noise over noise whatever the average does.
    strong = chirp_bins(x)
    assert np.mean(np.var(one, axis=0)[strong]) / np.mean(np.var(many, axis=0)[strong]) > 4.0


def test_torch_and_numpy_give_the_same_representation():
    rng = np.random.default_rng(4)
    x = preamble()
    noise = (rng.standard_normal((4, x.size)) + 1j * rng.standard_normal((4, x.size))) * 0.3
    rows = (np.stack([turned(x, rng, 40.0) for _ in range(4)]) + noise).astype(np.complex64)
    ref = represent(rows, COHERENT)
    got = represent(torch.from_numpy(rows), COHERENT)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    # The averages: float32 sums of 8 products on both paths, a dozen u apart per unit-amplitude sample; 64 u
    # x 8 leaves room for the phases' rounding.
    avg = coherent_symbol_average(rows, CFG.samples_per_symbol)
    assert np.max(np.abs(coherent_symbol_average(torch.from_numpy(rows), 1024).numpy() - avg)) <= 64 * U32 * 8
    # The ratios: an FFT's error is relative to the frame's norm ((7 log2 256 + 1) u = 57 u), so a bin 40 dB
    # below its frame's peak (whose power is at most the frame's) has a relative amplitude error below
    # 57 u x sqrt(256 x 1e4) = 5.4e-3, a relative power error below 1.1e-2, 4.7e-3 in log10; two paths and two
    # bins per ratio: below 0.02 where both bins are within 40 dB of their frame's peak.
    log_power = spectrogram(np.concatenate([avg, avg[:, :128]], axis=1), crop=(0.3, 0.7))
    near = log_power >= log_power.max(axis=1, keepdims=True) - 4.0
    both = near & np.roll(near, -1, axis=-1)
    assert both.mean() > 0.5
    np.testing.assert_allclose(got.numpy()[:, 0][both], ref[:, 0][both], rtol=0, atol=0.02)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize(("flat_floor_db", "floor_log10"), [
    (None, -3.0),  # top_db = 30 below the peak (unit power) alone
    (0.0, -np.log10(256)),  # the flat level 1 / n_fft, above the peak-relative floor
    (3.0, 0.3 - np.log10(256)),
    (-6.0, -3.0),  # a flat level below the peak-relative floor leaves that floor
])
def test_the_flat_floor_raises_every_bin_to_a_flat_spectrums_level(kind, flat_floor_db, floor_log10):
    """Ground truth from a symbol of two tones: 512 samples at -10 cycles per 256-sample frame, then 512 at
    +10. The second tone's bin holds power 0 in the three frames of the first tone alone (their difference is
    an even number of cycles per half frame: no leakage either), 1/4 in the frames half of each, 1 in those
    of the second alone; so its largest ratio is log10(1/4) minus the floor's level."""
    n = np.arange(512)
    symbol = np.concatenate([np.exp(-2j * np.pi * 10 * n / 256), np.exp(2j * np.pi * 10 * n / 256)])
    rows = np.tile(symbol, 8)[None].astype(np.complex64)
    cfg = RepresentationConfig("coherent_channel_independent_spectrogram",
                               {"top_db": 30.0, "flat_floor_db": flat_floor_db})
    got = represent(torch.from_numpy(rows) if kind == "torch" else rows, cfg)
    got = got.numpy() if kind == "torch" else got
    row = 128 + 10 - crop_rows(256, (0.3, 0.7))[0]  # the +10 bin after fftshift, less the crop's first row
    expected = np.array([0.0, 0.0, np.log10(0.25) - floor_log10, -np.log10(0.25), 0.0, 0.0, np.log10(0.25),
                         floor_log10 - np.log10(0.25)])
    # An FFT's error is at most 57 u of its frame's norm (unit here): bins of amplitude 1/2 or 1 carry a
    # relative power error below 4 x 57 u, under 1e-5 in log10 with the normalisation's and log10's own u.
    np.testing.assert_allclose(got[0, 0, row], expected, rtol=0, atol=1e-5)


def test_the_flat_floor_must_be_a_finite_number_of_db():
    with pytest.raises(ConfigError, match="flat_floor_db"):
        RepresentationConfig("coherent_channel_independent_spectrogram", {"flat_floor_db": float("nan")})
