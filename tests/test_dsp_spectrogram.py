"""Spectrograms against the authors' recipe (paper_notes §5, re-implemented here per packet with scipy),
analytic truths (exact-bin tones, amplitude ramps), invariances, the zero guard and the FFT backends.

Float32 results are compared within a bound derived from the arithmetic (:func:`exact_and_bound`), never a
tolerance read off one CPU; exact equality only where the same kernel runs on the same data (the scipy
backend on the same blocks), or where exact arithmetic gives exact zeros (all-zero frames, floored bins).
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
import warnings
import wave

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.dsp import LoRaConfig, channel_independent_spectrogram, packet_waveform, spectrogram
from lorarffi.dsp.spectrogram import (
    available_fft_backends,
    clear_fft_backend_cache,
    crop_rows,
    fastest_fft_backend,
    stft_frame_count,
)
from lorarffi.errors import ConfigError

spec_mod = sys.modules["lorarffi.dsp.spectrogram"]     # the module (lorarffi.dsp.spectrogram is the function)
DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
U32 = 2.0**-24                      # float32 unit roundoff
U64 = 2.0**-53                      # float64 unit roundoff
TINY32 = float(np.finfo(np.float32).tiny)
BACKENDS = ["scipy", "torch"]


def exact_and_bound(fn, x: np.ndarray, *, n_fft: int = 256, hop: int = 128, crop="default",
                    top_db: float = 120.0, u: float = U32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fn(x)`` in float64 (our definition, floor included), a bound on the error of a computation of it in
    floating point of unit roundoff ``u``, per element, and where the floor may be engaged.

    The error model, per frame ``m`` and kept bin ``k``, with ``Y`` the exact DFT of the complex64 frame:

    * FFT: ``|Y^_k - Y_k| <= ||Y^ - Y||_2 <= 8 u ceil(log2 n) ||Y||_2``. Higham (Accuracy and Stability of
      Numerical Algorithms, 2nd ed., Thm 24.2) bounds a radix-2 FFT by ``log2(n) eta ||Y||_2`` with
      ``eta = mu + gamma_4 (sqrt 2 + mu) ~ (1 + 4 sqrt 2) u = 6.7 u`` (twiddles rounded, ``mu <= u``); 8 u a
      stage rounds that up and covers the radix-3, -5 and -17 passes of ``n = 255``. Plus ``u ||Y||_2`` for a
      complex64 input rounded from a scaled or ideal signal (an input error ``|d| <= u |x|`` has DFT 2-norm
      ``sqrt(n) ||d||_2 <= u ||Y||_2``), so the bound also holds against that signal.
    * ``|.|`` adds ``2 u |Y_k|``; the floor ``floor_rel * peak`` moves by ``floor_rel`` times the peak's
      error.
    * ``log10 a`` with ``a = max(|Y^_k|, floor) >= lo``: ``|d log10 a| <= da / (ln 10 * lo)``, plus float32
      ``log10``'s own error (at most 4 ulp, ``8 u |log10 a|``, and ``u`` absolute near ``a = 1``).
    * Channel-independent: ``2 (log10 a_{m+1} - log10 a_m)``: twice both columns' errors, plus ``u |out|``
      for the subtraction. Spectrogram: ``2 log10 a - log10(P n^2)``: twice the column's error, plus
      ``u (|offset| + |out|)`` (``P`` is summed in float64: its own error is below ``1e-12``).

    Two computations (backends, batch sizes, threads) differ by at most twice the bound. The bound is a worst
    case, loose on weak bins (it grows as ``||Y||_2 / |Y_k|``); callers check that it is tight on most
    elements, so that the comparison can fail.
    """
    ratio = fn is channel_independent_spectrogram
    if crop == "default":
        crop = (0.3, 0.7) if ratio else None
    x = np.asarray(x, np.complex64).astype(np.complex128)
    one = x.ndim == 1
    x = x[None] if one else x
    n_frames = (x.shape[1] - n_fft) // hop + 1
    frames = x[:, np.arange(n_frames)[:, None] * hop + np.arange(n_fft)]          # (N, M, n_fft)
    y = np.fft.fft(frames, axis=-1)
    norm = np.linalg.norm(y, axis=-1)[:, None, :]                                  # (N, 1, M)
    first, stop = crop_rows(n_fft, crop)
    mag = np.abs(np.fft.fftshift(y, axes=-1)[..., first:stop]).transpose(0, 2, 1)  # (N, F, M)
    floor_rel = 10.0 ** (-top_db / 20.0)
    peak = mag.max(axis=(1, 2))
    floor = np.maximum(floor_rel * np.where(peak == 0, n_fft, peak), TINY32)[:, None, None]
    a = np.maximum(mag, floor)
    d_amp = (8 * math.ceil(math.log2(n_fft)) + 1) * u * norm + 2 * u * mag
    d_floor = floor_rel * d_amp.max(axis=(1, 2))[:, None, None]
    lo = np.maximum(np.maximum(mag - d_amp, floor - d_floor), TINY32)
    log_a = np.log10(a)
    d_log = np.maximum(d_amp, d_floor) / (math.log(10) * lo) + 8 * u * np.abs(log_a) + u
    floored = mag - d_amp <= floor + d_floor
    if ratio:
        exact = 2 * (log_a[..., 1:] - log_a[..., :-1])
        bound = 2 * (d_log[..., 1:] + d_log[..., :-1]) + u * np.abs(exact)
        floored = floored[..., 1:] | floored[..., :-1]
    else:
        power = np.mean(np.abs(x) ** 2, axis=1)
        offset = np.log10(np.where(power == 0, 1.0, power) * n_fft**2)[:, None, None]
        exact = 2 * log_a - offset
        bound = 2 * d_log + u * (np.abs(offset) + np.abs(exact)) + 1e-12
    return (exact[0], bound[0], floored[0]) if one else (exact, bound, floored)


def assert_within(actual, expected: np.ndarray, bound: np.ndarray, *, times: float = 1.0) -> None:
    """``|actual - expected| <= times * bound`` everywhere (NaN fails), naming the worst element if not."""
    err = np.abs(np.asarray(actual, np.float64) - expected)
    ok = err <= times * bound
    if not ok.all():
        worst = np.unravel_index(np.nanargmax(np.where(ok, 0.0, err / bound)), err.shape)
        raise AssertionError(f"{np.count_nonzero(~ok)} of {ok.size} elements outside the bound; worst at "
                             f"{worst}: |diff| {err[worst]:.3g} > {times} x bound {bound[worst]:.3g}")


def assert_agree(a, b, fn, x: np.ndarray, **kw) -> None:
    """Two float32 computations of ``fn(x, **kw)`` agree within twice the single-computation bound."""
    _, bound, _ = exact_and_bound(fn, x, **kw)
    assert_within(a, np.asarray(b, np.float64), bound, times=2.0)


def as_array(out) -> np.ndarray:
    return out.cpu().numpy() if isinstance(out, torch.Tensor) else out


def authors_channel_ind_spectrogram(x: np.ndarray, n_fft: int = 256, hop: int = 128,
                                    crop: tuple[float, float] | None = (0.3, 0.7)) -> np.ndarray:
    """The TIFS repo's ``ChannelIndSpectrogram`` for one packet, as paper_notes §5 gives it (float64)."""
    x = x / np.sqrt(np.mean(np.abs(x) ** 2))
    _, _, s = scipy.signal.stft(x, window="boxcar", nperseg=n_fft, noverlap=n_fft - hop, nfft=n_fft,
                                return_onesided=False, padded=False, boundary=None)
    s = np.fft.fftshift(s, axes=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = s[:, 1:] / s[:, :-1]                                   # no epsilon, as the authors
        a = np.log10(np.abs(q) ** 2)
    if crop is not None:
        a = a[round(n_fft * crop[0]):round(n_fft * crop[1])]
    return a


def reference_spectrogram(x: np.ndarray, n_fft: int = 256, hop: int = 128,
                          crop: tuple[float, float] | None = None) -> np.ndarray:
    """log10 |STFT|^2 of the RMS-normalised packet with the same scipy call (the INFOCOM spectrogram)."""
    x = x / np.sqrt(np.mean(np.abs(x) ** 2))
    _, _, s = scipy.signal.stft(x, window="boxcar", nperseg=n_fft, noverlap=n_fft - hop, nfft=n_fft,
                                return_onesided=False, padded=False, boundary=None)
    a = np.log10(np.abs(np.fft.fftshift(s, axes=0)) ** 2)
    if crop is not None:
        a = a[round(n_fft * crop[0]):round(n_fft * crop[1])]
    return a


def per_packet(fn, x: np.ndarray, **kw) -> np.ndarray:
    return np.stack([fn(row.astype(np.complex128), **kw) for row in x])


def assert_matches_recipe(out: np.ndarray, fn, x: np.ndarray, *, median_bound: float = 1e-3, **kw) -> None:
    """``out`` is within the float32 bound of our definition everywhere; the authors' float64 recipe (which
    has no floor) equals our definition wherever the floor is not engaged, to the same bound at float64's
    unit roundoff; and the bound is below ``median_bound`` on most elements (the comparison can fail)."""
    exact, bound, floored = exact_and_bound(fn, x, **kw)
    assert_within(out, exact, bound)
    ratio = fn is channel_independent_spectrogram
    recipe = authors_channel_ind_spectrogram if ratio else reference_spectrogram
    ref = per_packet(recipe, np.atleast_2d(x), **kw).reshape(exact.shape)
    used = ~floored & np.isfinite(ref)
    _, bound64, _ = exact_and_bound(fn, x, u=U64, **kw)
    assert_within(ref[used], exact[used], bound64[used] + 1e-12)
    assert used.mean() > 0.5 and np.median(bound) < median_bound


def random_packets(rng: np.random.Generator, n: int, length: int = 8192) -> np.ndarray:
    scale = rng.uniform(0.01, 100.0, (n, 1)) * np.exp(2j * np.pi * rng.uniform(size=(n, 1)))
    x = (rng.standard_normal((n, length)) + 1j * rng.standard_normal((n, length))) * scale
    return x.astype(np.complex64)


def chirp_packets(rng: np.random.Generator, snr_db: float | None) -> np.ndarray:
    """Preambles (8 up-chirps, SF7, 125 kHz, 1 MS/s) of several CFOs, phases and timing offsets."""
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    rows = []
    offsets = [(0.0, 0.0), (1234.5, 0.0), (-7_000.0, 3.3e-6), (19_000.0, -0.5e-6), (-15_000.0, 1e-4)]
    for cfo_hz, t0_s in offsets:
        rows.append(packet_waveform(cfg, cfo_hz=cfo_hz, phase_rad=rng.uniform(0, 2 * np.pi), t0_s=t0_s,
                                    n_samples=cfg.preamble_samples))
    x = np.stack(rows)
    if snr_db is not None:
        noise = rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)
        x = x + noise * np.sqrt(10 ** (-snr_db / 10) / 2)
    return x.astype(np.complex64)


# --- parity with the authors' recipe ---------------------------------------------------------------------

def test_channel_independent_spectrogram_matches_authors_recipe_on_random_packets():
    x = random_packets(np.random.default_rng(1), 40)
    out = channel_independent_spectrogram(x)
    assert out.shape == (40, 102, 62) and out.dtype == np.float32
    assert_matches_recipe(out, channel_independent_spectrogram, x)


@pytest.mark.parametrize("snr_db", [None, 20.0, 0.0])
def test_channel_independent_spectrogram_matches_authors_recipe_on_chirp_preambles(snr_db):
    x = chirp_packets(np.random.default_rng(2), snr_db)
    out = channel_independent_spectrogram(x)
    assert np.isfinite(per_packet(authors_channel_ind_spectrogram, x)).all()
    assert_matches_recipe(out, channel_independent_spectrogram, x)
    # Negative control: different CFOs give different spectrograms (the test sees the signal, not just zeros).
    assert np.abs(out[1] - out[2]).mean() > 0.1


def test_spectrogram_matches_scipy_stft_of_the_normalised_packet():
    rng = np.random.default_rng(3)
    x = np.concatenate([random_packets(rng, 10), chirp_packets(rng, 10.0)])
    out = spectrogram(x)
    assert out.shape == (15, 256, 63) and out.dtype == np.float32
    assert_matches_recipe(out, spectrogram, x)
    # The crop selects rows of the same FFT: the same kernel on the same data (scipy backend), so equal bits.
    cropped = spectrogram(x, crop=(0.3, 0.7), fft_backend="scipy")
    assert cropped.shape == (15, 102, 63)
    np.testing.assert_array_equal(cropped, spectrogram(x, fft_backend="scipy")[:, 77:179])


@pytest.mark.skipif(not (DATA / "oat4cat_lora433_sf11_bw500" / "oat4cat_signal_0000.wav").exists(),
                    reason="shared recordings absent")
def test_channel_independent_spectrogram_matches_authors_recipe_on_a_real_recording():
    """Over-the-air SF11/500 kHz capture (8-bit I/Q WAV, 2.4 MS/s): 8192-sample windows, noise and packet."""
    with wave.open(str(DATA / "oat4cat_lora433_sf11_bw500" / "oat4cat_signal_0000.wav"), "rb") as w:
        u8 = np.frombuffer(w.readframes(w.getnframes()), dtype=np.uint8)
    iq = ((u8[0::2] - 127.5) + 1j * (u8[1::2] - 127.5)).astype(np.complex64)
    n = iq.size // 8192
    x = iq[: n * 8192].reshape(n, 8192)
    out = channel_independent_spectrogram(x)
    assert n >= 30 and np.isfinite(per_packet(authors_channel_ind_spectrogram, x)).all()
    assert_matches_recipe(out, channel_independent_spectrogram, x)
    # The packet (after ~44 ms) and the receiver noise before it are told apart: the chirps' ratios vary more.
    spread = out.std(axis=(1, 2))
    assert spread[-5:].mean() != pytest.approx(spread[:5].mean(), rel=0.05)


@pytest.mark.parametrize(("length", "n_fft", "hop", "crop", "shape"), [
    (8192, 256, 128, (0.3, 0.7), (102, 62)),
    (4096, 256, 128, (0.3, 0.7), (102, 30)),
    (8192, 128, 64, (0.3, 0.7), (52, 126)),          # receiverAgnostic code (paper_notes §15)
    (8192, 64, 32, None, (64, 254)),                  # P3 code (paper_notes §15)
    (1000, 255, 100, (0.25, 0.75), (127, 7)),         # odd FFT size, hop not dividing the frame
    (384, 256, 128, None, (256, 1)),                  # the shortest input: two frames
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_and_values_for_other_lengths_and_parameters(length, n_fft, hop, crop, shape, backend):
    x = random_packets(np.random.default_rng(length + n_fft), 3, length)
    kw = {"n_fft": n_fft, "hop": hop, "crop": crop}
    out = channel_independent_spectrogram(x, **kw, fft_backend=backend)
    assert out.shape == (3, *shape)
    assert_matches_recipe(out, channel_independent_spectrogram, x, **kw)
    spec = spectrogram(x, **kw, fft_backend=backend)
    assert spec.shape == (3, shape[0], shape[1] + 1)
    assert_matches_recipe(spec, spectrogram, x, **kw)


def test_frame_count_and_crop_rows_follow_paper_notes():
    assert stft_frame_count(8192) == 63
    assert stft_frame_count(255) == 0
    assert crop_rows(256, (0.3, 0.7)) == (77, 179)
    assert crop_rows(128, (0.3, 0.7)) == (38, 90)


# --- analytic truths -------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [-51, -16, 0, 7, 50])
def test_exact_bin_tone_gives_zero_in_its_row(k):
    """A tone at k * fs / n_fft has the same |S| in every frame: its row of the ratio is log10(1) = 0."""
    n = np.arange(8192)
    x = (3.0 * np.exp(2j * np.pi * k * n / 256 + 0.7j)).astype(np.complex64)
    out = channel_independent_spectrogram(x)
    row = 128 + k - 77                                  # shifted row 128 + k, minus the crop start
    # Zero up to the bound (whose input term covers the rounding of the ideal tone to complex64), < 2e-5.
    _, bound, _ = exact_and_bound(channel_independent_spectrogram, x)
    assert_within(out[row], 0.0, bound[row])
    assert bound[row].max() < 2e-5
    ref = authors_channel_ind_spectrogram(x.astype(np.complex128))
    assert np.abs(ref[row]).max() < 1e-5              # float64; the complex64 rounding of the tone: ~1e-7
    # The other rows hold only rounding noise, about u sqrt(log2 n) ||x|| a bin, some 170 dB below the tone
    # (the worst-case bound is 108 dB below): the floor (120 dB below the tone) makes them exactly zero.
    assert np.count_nonzero(np.delete(out, row, axis=0)) == 0
    # And the uncropped spectrogram puts the tone in row 128 + k (lowest frequency first) at unit power.
    spec = spectrogram(x)
    assert np.all(spec.argmax(axis=0) == 128 + k)
    _, bound, _ = exact_and_bound(spectrogram, x)
    assert_within(spec[128 + k], 0.0, bound[128 + k])
    assert bound[128 + k].max() < 2e-5


def test_amplitude_ramp_on_an_exact_bin_tone_gives_the_analytic_ratio():
    """x[n] = (1 + n/L) e^{j 2 pi 5 n / 256}: |S_m| at the tone bin is sum_{n<256} (1 + (128 m + n)/L)."""
    length, k = 8192, 5
    n = np.arange(length)
    x = ((1 + n / length) * np.exp(2j * np.pi * k * n / 256)).astype(np.complex64)
    m = np.arange(63)
    mag = 256 + (256 * 128 * m + 255 * 256 / 2) / length
    expected = 2 * np.log10(mag[1:] / mag[:-1])
    out = channel_independent_spectrogram(x)
    _, bound, _ = exact_and_bound(channel_independent_spectrogram, x)
    assert_within(out[128 + k - 77], expected, bound[128 + k - 77])
    assert expected.min() > 0.005 > 100 * bound[128 + k - 77].max()   # the ratio is visibly non-zero


# --- invariances -----------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(magnitude_db=st.floats(-60, 60), phase_rad=st.floats(-np.pi, np.pi), seed=st.integers(0, 2**16))
def test_complex_scale_leaves_both_spectrograms_unchanged(magnitude_db, phase_rad, seed):
    """Scaling by c and rounding to complex64 again: both results are within the bound of x's exact value
    (the bound's input term covers the rounding of c x), so within twice the bound of each other."""
    x = random_packets(np.random.default_rng(seed), 3)
    c = 10 ** (magnitude_db / 20) * np.exp(1j * phase_rad)
    for fn in (channel_independent_spectrogram, spectrogram):
        assert_agree(fn((x * c).astype(np.complex64)), fn(x), fn, x)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 9), length=st.integers(384, 3000), n_fft=st.sampled_from([64, 128, 255, 256]),
       hop_frac=st.sampled_from([0.25, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_batch_equals_row_by_row(n, length, n_fft, hop_frac, seed):
    hop = max(1, int(n_fft * hop_frac))
    x = random_packets(np.random.default_rng(seed), n, length)
    if stft_frame_count(length, n_fft=n_fft, hop=hop) < 2:
        return
    for fn in (channel_independent_spectrogram, spectrogram):
        batch = fn(x, n_fft=n_fft, hop=hop)
        rows = np.stack([fn(row, n_fft=n_fft, hop=hop) for row in x])
        assert_agree(batch, rows, fn, x, n_fft=n_fft, hop=hop)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_floor_is_per_packet_whatever_shares_the_block(as_tensor):
    """Packets 300 dB apart, an exact-bin tone (floored rows) and an all-zero packet in one block: each row
    is what the packet gives alone. The floor follows each packet's own peak, not the block's."""
    rng = np.random.default_rng(11)
    n = np.arange(8192)
    tone = np.exp(2j * np.pi * 5 * n / 256)
    rows = [random_packets(rng, 1)[0] * 1e-15, tone * 1e15, np.zeros(8192), random_packets(rng, 1)[0],
            tone * 1e-12 + random_packets(rng, 1)[0] * 1e-20]
    x = np.stack(rows).astype(np.complex64)
    for fn in (channel_independent_spectrogram, spectrogram):
        batch = as_array(fn(torch.from_numpy(x))) if as_tensor else fn(x)
        alone = np.stack([fn(row) for row in x])
        assert_agree(batch, alone, fn, x)
        exact, bound, _ = exact_and_bound(fn, x)
        assert_within(batch, exact, bound)
    out = channel_independent_spectrogram(x)
    assert np.count_nonzero(np.delete(out[1], 128 + 5 - 77, axis=0)) == 0   # the tone's floored rows
    assert np.all(out[2] == 0) and np.isfinite(out).all()
    assert np.abs(out[0]).max() > 1.0                                         # the tiny packet is not floored


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_packet_leaves_the_rest_of_its_block_alone(bad, as_tensor):
    """A packet holding a NaN or inf gets a non-finite output; an all-zero packet and a normal one in the same
    block still get what they get alone (to the float32 bound: one block and a batch of one need not round
    alike)."""
    x = np.stack([random_packets(np.random.default_rng(12), 1)[0], np.zeros(8192),
                  random_packets(np.random.default_rng(13), 1)[0]]).astype(np.complex64)
    x[0, 4000] = bad
    for fn in (channel_independent_spectrogram, spectrogram):
        out = as_array(fn(torch.from_numpy(x))) if as_tensor else fn(x)
        assert not np.isfinite(out[0]).all()
        assert np.isfinite(out[1:]).all()
        assert_agree(out[1:], np.stack([fn(row) for row in x[1:]]), fn, x[1:])


def test_one_dimensional_input_drops_the_batch_axis():
    x = random_packets(np.random.default_rng(4), 2)
    assert channel_independent_spectrogram(x[0]).shape == (102, 62)
    assert spectrogram(x[0], crop=(0.3, 0.7)).shape == (102, 63)
    # The same packet through the same kernel (scipy backend, a batch of one either way): equal bits.
    one = channel_independent_spectrogram(x[0], fft_backend="scipy")
    np.testing.assert_array_equal(one, channel_independent_spectrogram(x[:1], fft_backend="scipy")[0])


def test_other_dtypes_are_converted_and_the_input_is_not_written():
    x = random_packets(np.random.default_rng(5), 2)
    keep = x.copy()
    out = channel_independent_spectrogram(x, fft_backend="scipy")
    np.testing.assert_array_equal(x, keep)
    # complex128 holding complex64 values, and a non-contiguous view, convert back to the same complex64
    # packets: the same kernel on the same data, so equal bits.
    wider = x.astype(np.complex128)
    np.testing.assert_array_equal(channel_independent_spectrogram(wider, fft_backend="scipy"), out)
    wide = np.repeat(x, 2, axis=1)[:, ::2]
    np.testing.assert_array_equal(channel_independent_spectrogram(wide, fft_backend="scipy"), out)
    # A read-only array is read, not written, by either backend (torch's zero-copy view of it is not made
    # from the read-only memory: torch would warn), and gives the same values.
    read_only = x.copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for backend in BACKENDS:
            assert_agree(channel_independent_spectrogram(read_only, fft_backend=backend), out,
                         channel_independent_spectrogram, x)
    real = channel_independent_spectrogram(x.real.astype(np.float64))
    assert real.dtype == np.float32 and real.shape == (2, 102, 62)
    assert_within(real, *exact_and_bound(channel_independent_spectrogram, x.real)[:2])


# --- zero guard ------------------------------------------------------------------------------------------

def test_all_zero_packet_gives_finite_constant_outputs():
    x = np.zeros((2, 8192), np.complex64)
    x[1] = random_packets(np.random.default_rng(6), 1)[0]
    out = channel_independent_spectrogram(x)
    assert np.isfinite(out).all()
    # An all-zero frame has an exactly zero FFT, every bin takes the same floor: exact zeros.
    np.testing.assert_array_equal(out[0], 0.0)
    assert_matches_recipe(out[1], channel_independent_spectrogram, x[1])
    spec = spectrogram(x)
    assert np.isfinite(spec).all()
    # -top_db / 10 = 2 log10(n_fft 10^-6) - log10(n_fft^2), each float32 step within a few ulps of 12: the
    # same value in every bin (one ufunc on equal inputs), within the bound of -12.
    for top_db, rows in ((120.0, spec[0]), (80.0, spectrogram(x[0], top_db=80.0))):
        assert np.unique(rows).size == 1
        assert_within(rows, -top_db / 10, exact_and_bound(spectrogram, x[0], top_db=top_db)[1])


def test_packet_with_zero_runs_is_finite_and_matches_the_recipe_where_the_recipe_is_finite():
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    x = packet_waveform(cfg, cfo_hz=2_000.0, n_samples=8192).copy()
    x[:1500] = 0                                           # leading silence: frames 0..9 (to 1407) all zero
    x[4000:4700] = 0                                       # a gap inside the preamble
    out = channel_independent_spectrogram(x)
    assert np.isfinite(out).all()
    recipe = authors_channel_ind_spectrogram(x.astype(np.complex128))
    assert not np.isfinite(recipe).all()                   # the recipe itself breaks on these zeros
    assert_matches_recipe(out, channel_independent_spectrogram, x)
    # Frames 0..9 lie wholly in the leading zeros: both columns floored, ratio exactly 0.
    np.testing.assert_array_equal(out[:, :9], 0.0)
    # Out of the silence into frame 10 (36 chirp samples), the ratio jumps by up to the floor's 120 dB: 12,
    # plus the rounding of two float32 logarithms of magnitudes up to 256 (8 u x 2.4 each) and of the floor.
    assert 6.0 < out[:, 9].max() <= 12.0 + 1e-5
    assert np.isfinite(spectrogram(x)).all()


@pytest.mark.skipif(not (DATA / "grlora_sdr" / "sf8_bw125k_fs1M_sync12_pre8.sigmf-data").exists(),
                    reason="shared recordings absent")
def test_gr_lora_packets_with_exact_zero_idle_time_stay_finite():
    """gr-lora_sdr SF8 packets (ideal, exact zeros between packets): windows straddling packet edges."""
    base = DATA / "grlora_sdr" / "sf8_bw125k_fs1M_sync12_pre8"
    meta = json.loads(base.with_suffix(".sigmf-meta").read_text())
    iq = np.fromfile(base.with_suffix(".sigmf-data"), dtype="<c8")
    starts = [a["core:sample_start"] for a in meta["annotations"]]
    windows = np.stack([iq[s - d: s - d + 8192] for s in starts for d in (0, 3000, 8000)])
    assert np.count_nonzero(windows == 0) > 8000           # the idle zeros are really there
    out = channel_independent_spectrogram(windows)
    assert np.isfinite(out).all()
    assert_matches_recipe(out, channel_independent_spectrogram, windows)
    # Windows at the preamble start hold no zeros: the recipe is finite there and the floor not engaged. The
    # noise-free chirps leave most bins weak (the bound grows as ||Y|| / |Y_k|), so the bound is looser here.
    assert_matches_recipe(out[::3], channel_independent_spectrogram, windows[::3], median_bound=1e-2)
    assert not exact_and_bound(channel_independent_spectrogram, windows[::3])[2].any()


# --- FFT backends, torch tensors, threads and blocks -----------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("fn", [channel_independent_spectrogram, spectrogram])
def test_fft_backends_agree_within_the_float32_bound(fn):
    """scipy's pocketfft and torch's FFT round differently; each is within the bound of the exact value."""
    rng = np.random.default_rng(14)
    x = np.concatenate([random_packets(rng, 20), chirp_packets(rng, 10.0), np.zeros((1, 8192), np.complex64)])
    exact, bound, _ = exact_and_bound(fn, x)
    outs = {backend: fn(x, fft_backend=backend) for backend in BACKENDS}
    for out in outs.values():
        assert_within(out, exact, bound)
    assert_within(outs["scipy"], outs["torch"], bound, times=2.0)
    assert np.median(bound) < 1e-3                       # tight enough to see a wrong bin, column or floor


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fn", [channel_independent_spectrogram, spectrogram])
def test_blocks_of_packets_do_not_change_the_result(fn, workers, backend, monkeypatch):
    """Packets are processed in cache-sized blocks: blocks of one packet give the same values, to the bound
    (another batch size may take another kernel path)."""
    x = np.concatenate([random_packets(np.random.default_rng(9), 19), np.zeros((1, 8192), np.complex64)])
    whole = fn(x, fft_backend=backend)
    monkeypatch.setattr(spec_mod, "_BLOCK_BINS", 63 * 256)
    assert_agree(fn(x, workers=workers, fft_backend=backend), whole, fn, x)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [channel_independent_spectrogram, spectrogram])
def test_torch_in_torch_out_with_equal_values(fn, device, backend):
    x = np.concatenate([random_packets(np.random.default_rng(7), 3), np.zeros((1, 8192), np.complex64)])
    t = torch.from_numpy(x).to(device)
    out = fn(t, fft_backend=backend)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == device
    assert_agree(out.cpu().numpy(), fn(x, fft_backend=backend), fn, x)
    one = fn(t[0], fft_backend=backend)
    assert tuple(one.shape) == tuple(out.shape[1:]) and one.device.type == device
    assert torch.isfinite(out).all()
    assert tuple(fn(t[:0], fft_backend=backend).shape) == (0, *out.shape[1:])
    assert fn(x[:0], fft_backend=backend).shape == (0, *out.shape[1:])


def test_a_tensor_that_needs_grad_or_is_conjugated_is_read_as_its_values():
    x = random_packets(np.random.default_rng(15), 2)
    t = torch.from_numpy(x.conj()).conj()                 # lazily conjugated view of x's conjugate: x
    assert t.is_conj()
    out = channel_independent_spectrogram(t, fft_backend="scipy")
    np.testing.assert_array_equal(out.numpy(), channel_independent_spectrogram(x, fft_backend="scipy"))
    real = torch.from_numpy(x.real.copy()).requires_grad_()
    assert not spectrogram(real).requires_grad


@pytest.mark.parametrize("transform", [channel_independent_spectrogram, spectrogram])
@pytest.mark.parametrize("workers", [2, 3, -1])
@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_give_the_same_output_whatever_lands_in_each_block(transform, workers, backend):
    """Blocks of 16 packets go to the threads in turn: 83 packets is 6 blocks, the last one short. Zero,
    NaN and exact-bin tone packets in some blocks take the per-packet floor path there and not in the rest.
    The blocks are the same whatever the thread count: with scipy (pocketfft: no dependence on threads or
    memory alignment) the same kernel runs on the same data, so equal bits; torch's FFT library is not
    promised to round alike across calls (alignment, its own threads), so the bound there."""
    x = random_packets(np.random.default_rng(9), 83)
    x[5] = 0
    x[40, 1000] = np.nan
    x[70] = np.exp(2j * np.pi * 8 * np.arange(8192) / 256)
    one = transform(x, workers=1, fft_backend=backend)
    many = transform(x, workers=workers, fft_backend=backend)
    assert np.isnan(one[40]).any() and np.isfinite(np.delete(one, 40, axis=0)).all()
    assert np.isnan(many[40]).any() and np.isfinite(np.delete(many, 40, axis=0)).all()
    first = transform(x[:1], workers=workers, fft_backend=backend)
    if backend == "scipy":
        np.testing.assert_array_equal(many, one)
        np.testing.assert_array_equal(first, one[:1])
    else:
        finite = np.delete(np.arange(83), 40)
        assert_agree(many[finite], one[finite], transform, x[finite])
        assert_agree(first, one[:1], transform, x[:1])


def test_auto_picks_an_available_backend_and_measures_once_per_setting(monkeypatch):
    calls = []
    measure = spec_mod._time_fft_backends

    def counting(*args):
        calls.append(args[:2])
        return measure(*args)

    monkeypatch.setattr(spec_mod, "_time_fft_backends", counting)
    monkeypatch.setattr(spec_mod, "_FASTEST_FFT_BACKEND", {})
    assert available_fft_backends() == ("scipy", "torch")
    assert fastest_fft_backend(128) in available_fft_backends()
    assert fastest_fft_backend(128) in available_fft_backends()
    channel_independent_spectrogram(random_packets(np.random.default_rng(0), 1), n_fft=128, hop=64)
    assert calls == [(128, 1)]                            # measured once, then cached
    fastest_fft_backend(128, workers=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads != 1 else 2)      # another torch thread count: measured again
    try:
        fastest_fft_backend(128)
    finally:
        torch.set_num_threads(threads)
    clear_fft_backend_cache()
    fastest_fft_backend(128)
    assert calls == [(128, 1), (128, 2), (128, 1), (128, 1)]


def test_auto_takes_the_shortest_median_time_so_a_backend_that_stalls_loses(monkeypatch):
    """Timed runs on a scripted clock: torch's best run beats scipy's, but it stalls in most runs."""
    script = {"scipy": iter([2.0] * 6), "torch": iter([0.5, 0.5, 9.0, 9.0, 0.5, 9.0])}
    now = [0.0]

    def fake_transform(*args, backend, **kwargs):
        now[0] += next(script[backend])

    monkeypatch.setattr(spec_mod, "_transform_packets", fake_transform)
    monkeypatch.setattr(spec_mod.time, "perf_counter", lambda: now[0])
    assert spec_mod._time_fft_backends(256, 1, ("scipy", "torch")) == {"scipy": 2.0, "torch": 9.0}
    monkeypatch.setattr(spec_mod, "_FASTEST_FFT_BACKEND", {})
    monkeypatch.setattr(spec_mod, "_time_fft_backends", lambda *a: {"scipy": 2.0, "torch": 1.0})
    assert fastest_fft_backend(256) == "torch"
    clear_fft_backend_cache()
    monkeypatch.setattr(spec_mod, "_time_fft_backends", lambda *a: {"scipy": 1.0, "torch": 1.0})
    assert fastest_fft_backend(256) == "scipy"            # a tie goes to the backend without torch
    clear_fft_backend_cache()
    monkeypatch.setattr(spec_mod, "_time_fft_backends", lambda *a: {"scipy": 1.0, "torch": 0.85})
    assert fastest_fft_backend(256) == "scipy"            # a near tie too: torch must win clearly
    clear_fft_backend_cache()
    monkeypatch.setattr(spec_mod, "_time_fft_backends", lambda *a: {"scipy": 1.0, "torch": 0.75})
    assert fastest_fft_backend(256) == "torch"


@pytest.mark.parametrize("measured", BACKENDS)
def test_auto_runs_the_backend_measured_fastest(measured, monkeypatch):
    used = []
    frame_spectra = spec_mod._frame_spectra

    def recording(*args):
        used.append(args[-1])
        return frame_spectra(*args)

    monkeypatch.setattr(spec_mod, "_frame_spectra", recording)
    monkeypatch.setattr(spec_mod, "_FASTEST_FFT_BACKEND", {})
    monkeypatch.setattr(spec_mod, "_time_fft_backends",
                        lambda *a: {b: 1.0 if b == measured else 2.0 for b in BACKENDS})
    x = random_packets(np.random.default_rng(16), 40)
    out = channel_independent_spectrogram(x, workers=2)
    assert set(used) == {measured} and len(used) == 3    # 40 packets: 3 blocks of 16
    alone = channel_independent_spectrogram(x, fft_backend=measured)
    assert_agree(out, alone, channel_independent_spectrogram, x)


@pytest.mark.slow
def test_without_torch_auto_uses_scipy_and_asking_for_torch_is_a_config_error():
    code = """if True:
        import sys

        class NoTorch:                                    # import torch now raises ImportError
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("no torch here")

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from lorarffi.dsp.spectrogram import (available_fft_backends, channel_independent_spectrogram,
                                              fastest_fft_backend)
        from lorarffi.errors import ConfigError
        assert available_fft_backends() == ("scipy",) and fastest_fft_backend() == "scipy"
        assert channel_independent_spectrogram(np.ones((2, 512))).shape == (2, 102, 2)
        try:
            channel_independent_spectrogram(np.ones(512), fft_backend="torch")
        except ConfigError as exc:
            assert "torch cannot be imported" in str(exc)
        else:
            raise AssertionError("no ConfigError")
        """
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_dsp_imports_torch_only_when_asked_to():
    """Importing lorarffi.dsp and the scipy backend leave torch unimported; "auto" imports it to time it."""
    code = ("import sys, numpy as np, lorarffi.dsp as d; "
            "d.channel_independent_spectrogram(np.ones(512), fft_backend='scipy'); "
            "assert 'torch' not in sys.modules; "
            "d.channel_independent_spectrogram(np.ones(512)); assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_fft": 0}, "n_fft=0"),
    ({"hop": 1.5}, "hop=1.5"),
    ({"crop": (0.7, 0.3)}, r"crop=\(0.7, 0.3\)"),
    ({"crop": (0.5, 0.501)}, "keeps no row"),
    ({"crop": "wide"}, "crop='wide'"),
    ({"top_db": -3.0}, "top_db=-3.0"),
    ({"workers": 0}, "workers=0"),
    ({"workers": -10**6}, "negative values go down to"),
    ({"fft_backend": "fftw"}, "fft_backend='fftw' is not valid: use one of 'auto', 'scipy', 'torch'"),
])
def test_bad_parameters_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        channel_independent_spectrogram(np.ones((2, 8192), np.complex64), **kwargs)


def test_bad_input_shapes_are_config_errors():
    with pytest.raises(ConfigError, match="need at least 384"):
        channel_independent_spectrogram(np.ones((2, 383), np.complex64))
    with pytest.raises(ConfigError, match="need at least 256"):
        spectrogram(np.ones(255, np.complex64))
    with pytest.raises(ConfigError, match=r"shape \(2, 3, 8192\)"):
        spectrogram(np.ones((2, 3, 8192), np.complex64))
    with pytest.raises(ConfigError, match="dtype"):
        spectrogram(np.array(["a"] * 300))


def test_the_environment_pins_what_auto_means(monkeypatch):
    """LORARFFI_FFT_BACKEND replaces the measurement; a value that names no backend is one clear error."""
    measured = []
    monkeypatch.setattr(spec_mod, "_FASTEST_FFT_BACKEND", {})
    monkeypatch.setattr(spec_mod, "_time_fft_backends",
                        lambda *a: measured.append(a) or {"scipy": 1.0, "torch": 0.1})
    x = random_packets(np.random.default_rng(5), 2)
    monkeypatch.setenv(spec_mod.FFT_BACKEND_ENV, "scipy")
    np.testing.assert_array_equal(channel_independent_spectrogram(x),
                                  channel_independent_spectrogram(x, fft_backend="scipy"))
    assert measured == []
    monkeypatch.setenv(spec_mod.FFT_BACKEND_ENV, "fftw")
    with pytest.raises(ConfigError, match="LORARFFI_FFT_BACKEND"):
        channel_independent_spectrogram(x)
    monkeypatch.setenv(spec_mod.FFT_BACKEND_ENV, "auto")
    channel_independent_spectrogram(x)
    assert len(measured) == 1
