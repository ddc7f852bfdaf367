"""Timing and frequency drift of a packet's symbols, and the shifts that undo it.

A transmitter's symbol clock and a receiver's sample clock are never exactly equal: a packet's symbols arrive
progressively early or late (a sample clock error of ``e`` ppm moves symbol ``t`` by ``e * 1e-6 * t * sps``
samples), and an oscillator warming while it transmits moves the carrier during the packet. On a dechirped
up-chirp both show as the same thing, a tone that moves linearly from symbol to symbol: a delay of ``tau``
samples moves it by ``-tau / os`` bins (``os = fs / bw``), a carrier change of ``f`` Hz by ``f / (bw / 2^SF)``
bins. At SF11 and 500 kHz a real 8-bit receiver's recording of a telemetry transmitter moves 0.018 bins per
symbol (8.7 ppm as timing): across an 8-symbol preamble the end symbols differ from the average by -19 dB,
across a 150-symbol payload the tone moves by 2.7 bins (docs/models.md, "Whole packets").

:func:`tone_offset_bins` measures that tone of each symbol against a reference symbol, :func:`drift_fit` fits
a straight line through the symbols' tones, and :func:`shift_samples` moves symbol windows by fractions of a
sample. Which share of a drift is timing and which is carrier cannot be told from up-chirps alone (both move
the tone); it changes how a shifted-back symbol's two parts (before and after the chirp's wrap) line up, so
:mod:`lorarffi.dsp.packet_symbol` chooses the share that makes the packet's symbols agree best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft

__all__ = ["DriftFit", "drift_fit", "shift_samples", "shift_spectrum", "tone_offset_bins", "unit_phasor"]


def tone_offset_bins(symbols: npt.NDArray[np.complex64], reference: npt.NDArray[np.complex64]
                     ) -> npt.NDArray[np.float64]:
    """Frequency of each symbol against a reference symbol, in bins (cycles per symbol).

    The product ``symbols * conj(reference)`` of a symbol that is the reference moved by ``d`` bins is a tone
    of ``d`` cycles per symbol; its second half turns by ``pi d`` against its first half. Unambiguous for
    ``|d| < 1``; exact when the reference has a constant modulus (a chirp), with no window leakage to
    interpolate.

    Parameters
    ----------
    symbols : ndarray of complex, shape (..., sps)
    reference : ndarray of complex, shape broadcastable to ``symbols``

    Returns
    -------
    ndarray of float64, shape ``symbols.shape[:-1]``, in (-1, 1]
    """
    z = symbols * np.conj(reference)
    half = z.shape[-1] // 2
    first = z[..., :half].sum(-1, dtype=np.complex128)
    second = z[..., z.shape[-1] - half :].sum(-1, dtype=np.complex128)
    lag = z.shape[-1] - half  # samples from the first half's start to the second's
    return np.angle(second * np.conj(first)) * z.shape[-1] / (2 * np.pi * lag)


@dataclass(frozen=True)
class DriftFit:
    """A straight line through each packet's symbol tones: ``tone(t) = intercept + slope * t``.

    Attributes
    ----------
    intercept_bins : ndarray of float64, shape (N,)
    slope_bins_per_symbol : ndarray of float64, shape (N,)
    slope_se_bins_per_symbol : ndarray of float64, shape (N,)
        Standard error of the slope from the scatter of the tones about the line (infinite with fewer than 3
        symbols).
    """

    intercept_bins: npt.NDArray[np.float64]
    slope_bins_per_symbol: npt.NDArray[np.float64]
    slope_se_bins_per_symbol: npt.NDArray[np.float64]


def drift_fit(tones: npt.NDArray[np.float64], t_symbols: npt.NDArray[np.float64],
              weights: npt.NDArray[np.bool_] | None = None) -> DriftFit:
    """Least-squares line through tones ``(N, K)`` at times ``t_symbols`` ``(K,)`` or ``(N, K)``, in symbols.

    ``weights`` (N, K) marks the tones to use (all by default).
    """
    tones = np.asarray(tones, np.float64)
    t = np.broadcast_to(np.asarray(t_symbols, np.float64), tones.shape)
    w = np.ones(tones.shape, bool) if weights is None else np.asarray(weights, bool)
    n = w.sum(-1)
    safe_n = np.maximum(n, 1)
    t_mean = np.where(w, t, 0.0).sum(-1) / safe_n
    y_mean = np.where(w, tones, 0.0).sum(-1) / safe_n
    dt = np.where(w, t - t_mean[:, None], 0.0)
    sxx = (dt * dt).sum(-1)
    slope = np.where(sxx > 0, (dt * np.where(w, tones, 0.0)).sum(-1) / np.maximum(sxx, 1e-300), 0.0)
    intercept = y_mean - slope * t_mean
    resid = np.where(w, tones - intercept[:, None] - slope[:, None] * t, 0.0)
    dof = n - 2
    s2 = (resid * resid).sum(-1) / np.maximum(dof, 1)
    se = np.where((dof > 0) & (sxx > 0), np.sqrt(s2 / np.maximum(sxx, 1e-300)), np.inf)
    return DriftFit(intercept, slope, se)


def shift_samples(windows: npt.NDArray[np.complex64], shift: npt.ArrayLike) -> npt.NDArray[np.complex64]:
    """Windows moved by a fraction of a sample: ``y[n] = x(n + shift)``, band-limited (FFT phase ramp).

    The shift is cyclic within each window: a window of a periodic signal (one preamble up-chirp) moves
    exactly; a window cut from a longer signal needs margins wider than ``|shift|`` on both sides, which
    the caller then drops.

    Parameters
    ----------
    windows : ndarray of complex, shape (..., W)
    shift : array_like of float, shape ``windows.shape[:-1]`` (or broadcastable), in samples

    Returns
    -------
    ndarray of complex64, shape (..., W)
    """
    return shift_spectrum(scipy.fft.fft(np.asarray(windows, np.complex64), axis=-1), shift)


def shift_spectrum(spectrum: npt.NDArray[np.complex64], shift: npt.ArrayLike) -> npt.NDArray[np.complex64]:
    """:func:`shift_samples` of windows given as their FFT ``(..., W)`` (to move the same windows often)."""
    width = spectrum.shape[-1]
    turns = np.fft.fftfreq(width).astype(np.float32) * np.asarray(shift, np.float32)[..., None]
    return scipy.fft.ifft(spectrum * unit_phasor(turns), axis=-1).astype(np.complex64, copy=False)


def unit_phasor(turns: npt.NDArray[np.float32]) -> npt.NDArray[np.complex64]:
    """``exp(2j pi turns)`` as complex64 (from float32 cosines and sines: several times faster than a
    complex exponential)."""
    phase = np.mod(turns, np.float32(1.0)) * np.float32(2 * np.pi)
    out = np.empty(phase.shape, np.complex64)
    out.real = np.cos(phase)
    out.imag = np.sin(phase)
    return out
