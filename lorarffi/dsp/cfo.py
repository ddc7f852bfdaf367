"""Carrier frequency offset (CFO) of aligned LoRa preambles: coarse and fine estimates, and compensation.

:func:`estimate_coarse_cfo` takes the peak of the symbol-averaged dechirped periodogram,
:func:`estimate_fine_cfo` the phase progression across the preamble symbols (Shen et al. 2021, eqs. 13-15,
over all pairs, then a least-squares line), :func:`estimate_cfo` their sum (eq. 16) and
:func:`compensate_cfo` removes an offset (eqs. 12 and 14).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError

__all__ = ["estimate_cfo", "estimate_coarse_cfo", "estimate_fine_cfo", "compensate_cfo"]

_ZERO_PAD = 4  # periodogram oversampling of the coarse estimate (parabolic-peak bias < 1% of a bin)
_ROWS_PER_BLOCK = 256  # packets processed at once: bounds the temporaries to ~100 MB at 8192 samples


def _as_batch(iq: npt.ArrayLike, name: str = "preamble") -> tuple[npt.NDArray[np.complex64], bool]:
    x = np.asarray(iq)
    if x.ndim not in (1, 2):
        raise ConfigError(f"{name} must have shape (N, L) or (L,), got {x.shape}")
    squeeze = x.ndim == 1
    x2 = x[None, :] if squeeze else x
    return x2.astype(np.complex64, copy=False), squeeze


def _symbol_geometry(n_samples: int, cfg: LoRaConfig) -> tuple[float, int, int]:
    """Samples per symbol (float), lag in whole samples, and number of whole symbols in ``n_samples``."""
    sps = cfg.n_chips * cfg.fs_hz / cfg.bw_hz
    lag = int(round(sps))
    n_sym = int(math.floor(n_samples / sps + 1e-9))
    if n_sym < 2:
        raise ConfigError(
            f"preamble of {n_samples} samples holds {n_sym} symbol(s) of {sps:g} samples at sf={cfg.sf}, "
            f"bw_hz={cfg.bw_hz:g}, fs_hz={cfg.fs_hz:g}: at least 2 are needed"
        )
    return sps, lag, n_sym


def _periodic_downchirp(n_samples: int, cfg: LoRaConfig) -> npt.NDArray[np.complex64]:
    """Conjugate of the base up-chirp repeated every symbol, at ``n / cfg.fs_hz`` for ``n < n_samples``."""
    t_sym = cfg.n_chips / cfg.bw_hz
    t = np.arange(n_samples, dtype=np.float64) / cfg.fs_hz
    tau = np.mod(t, t_sym)
    cycles = -0.5 * cfg.bw_hz * tau + 0.5 * (cfg.bw_hz / t_sym) * tau * tau  # base up-chirp phase / 2pi
    return np.exp(-2j * np.pi * np.mod(cycles, 1.0)).astype(np.complex64)


def _interp_peak(power: npt.NDArray[np.floating], k: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """Fractional peak position of each row of an oversampled periodogram (circular), log-parabola fit."""
    n = power.shape[-1]
    rows = np.arange(power.shape[0])
    tiny = np.finfo(np.float64).tiny
    pm = np.log(power[rows, (k - 1) % n].astype(np.float64) + tiny)
    p0 = np.log(power[rows, k].astype(np.float64) + tiny)
    pp = np.log(power[rows, (k + 1) % n].astype(np.float64) + tiny)
    den = pm - 2.0 * p0 + pp
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(den < 0, 0.5 * (pm - pp) / den, 0.0)
    return k + np.clip(frac, -0.5, 0.5)


def _coarse_rows(x: npt.NDArray[np.complex64], cfg: LoRaConfig) -> npt.NDArray[np.float64]:
    sps, _lag, n_sym = _symbol_geometry(x.shape[1], cfg)
    seg = int(math.floor(sps))
    ref = _periodic_downchirp(int(math.ceil(n_sym * sps)), cfg)
    starts = np.round(np.arange(n_sym) * sps).astype(np.intp)
    idx = starts[:, None] + np.arange(seg)[None, :]  # (n_sym, seg)
    d = x[:, idx] * ref[idx]  # (rows, n_sym, seg)
    n_fft = _ZERO_PAD * seg
    power = np.zeros((x.shape[0], n_fft))
    for j in range(n_sym):  # symbol by symbol: bounded memory
        spec = np.fft.fft(d[:, j], n=n_fft, axis=-1)
        power += spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2
    k = np.argmax(power, axis=1)
    kf = _interp_peak(power, k)
    kf = np.where(kf >= n_fft / 2, kf - n_fft, kf)
    return kf * cfg.fs_hz / n_fft


def _symbol_amplitudes(
    x: npt.NDArray[np.complex64], cfg: LoRaConfig, coarse_hz: npt.NDArray[np.float64]
) -> npt.NDArray[np.complex128]:
    """Complex amplitude of each symbol's dechirped tone after removing ``coarse_hz``: shape (rows, n_sym)."""
    sps, _lag, n_sym = _symbol_geometry(x.shape[1], cfg)
    seg = int(math.floor(sps))
    n_used = int(round((n_sym - 1) * sps)) + seg
    n = np.arange(n_used, dtype=np.float64)
    rot = np.exp(-2j * np.pi * np.mod(np.outer(coarse_hz / cfg.fs_hz, n), 1.0)).astype(np.complex64)
    d = x[:, :n_used] * _periodic_downchirp(n_used, cfg) * rot
    starts = np.round(np.arange(n_sym) * sps).astype(np.intp)
    return d[:, starts[:, None] + np.arange(seg)[None, :]].sum(axis=-1, dtype=np.complex128)


def _phase_slope(amp: npt.NDArray[np.complex128]) -> npt.NDArray[np.float64]:
    """Rotation per symbol, in cycles, of symbol amplitudes ``amp`` of shape (rows, K >= 2).

    First eq. 13 over all consecutive pairs (phase of ``sum_j X_j X*_{j+1}``, robust at any SNR), then a
    least-squares line through the unwrapped residual phases (efficient: reaches the Cramer-Rao bound).
    """
    k = amp.shape[1]
    f1 = -np.angle(np.sum(amp[:, :-1] * np.conj(amp[:, 1:]), axis=1)) / (2 * np.pi)
    if k < 3:
        return f1
    j = np.arange(k, dtype=np.float64)
    phase = np.angle(amp * np.exp(-2j * np.pi * np.outer(f1, j)))
    # np.unwrap(phase, axis=1), without its generality (this runs once per detected packet)
    dd = phase[:, 1:] - phase[:, :-1]
    ddmod = np.mod(dd + np.pi, 2 * np.pi) - np.pi
    ddmod[(ddmod == -np.pi) & (dd > 0)] = np.pi
    correct = ddmod - dd
    correct[np.abs(dd) < np.pi] = 0.0
    phase[:, 1:] += np.cumsum(correct, axis=1)
    jc = j - j.mean()
    slope = (phase - phase.mean(axis=1, keepdims=True)) @ jc / (jc @ jc)
    return f1 + slope / (2 * np.pi)


def _fine_rows(
    x: npt.NDArray[np.complex64], cfg: LoRaConfig, coarse_hz: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    sps, _lag, _n = _symbol_geometry(x.shape[1], cfg)
    resid = _phase_slope(_symbol_amplitudes(x, cfg, coarse_hz))
    resid = (resid + 0.5) % 1.0 - 0.5  # cycles per symbol, the unambiguous range of eq. 15
    return coarse_hz + resid * cfg.fs_hz / sps


def _by_blocks(func, x: npt.NDArray[np.complex64], cfg: LoRaConfig, *extra) -> npt.NDArray[np.float64]:
    out = np.empty(x.shape[0], dtype=np.float64)
    for a in range(0, x.shape[0], _ROWS_PER_BLOCK):
        out[a : a + _ROWS_PER_BLOCK] = func(x[a : a + _ROWS_PER_BLOCK], cfg,
                                            *(e[a : a + _ROWS_PER_BLOCK] for e in extra))
    return out


def _finish(values: npt.NDArray[np.float64], squeeze: bool) -> npt.NDArray[np.float64]:
    return values[0] if squeeze else values


def estimate_coarse_cfo(preamble: npt.ArrayLike, cfg: LoRaConfig) -> npt.NDArray[np.float64]:
    """Coarse CFO of aligned preambles: peak of the symbol-averaged dechirped periodogram.

    The preamble is dechirped (multiplied by the conjugate base up-chirp, period one symbol), the 4x
    zero-padded periodograms of its symbols are averaged and the peak is interpolated (log-parabola). For an
    aligned preamble the peak is the CFO itself, unambiguous over ``±fs/2``. The paper's eq. 10 (mean
    instantaneous frequency) gives the same value on clean signals but is biased towards zero at low SNR;
    the periodogram peak is not.

    Parameters
    ----------
    preamble : array_like of complex, shape (N, L) or (L,)
        Preambles starting at their first up-chirp sample, sampled at ``cfg.fs_hz``; at least two symbols.
    cfg : LoRaConfig
        Spreading factor, bandwidth and sample rate of the capture.

    Returns
    -------
    cfo_hz : ndarray of float64, shape (N,) or ()
        Transmitter minus receiver carrier, in Hz, within ``±cfg.fs_hz / 2``; error within a tenth of
        ``bw / 2**sf`` down to -5 dB at SF7. A preamble misaligned by ``d`` samples biases it by
        ``d * bw**2 / (2**sf * fs)`` Hz.

    Examples
    --------
    >>> from lorarffi.dsp.chirp import packet_waveform
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> iq = packet_waveform(cfg, cfo_hz=12_345.0)[: cfg.preamble_samples]
    >>> abs(float(estimate_coarse_cfo(iq, cfg)) - 12_345.0) < 100
    True
    """
    x, squeeze = _as_batch(preamble)
    return _finish(_by_blocks(_coarse_rows, x, cfg), squeeze)


def estimate_fine_cfo(
    preamble: npt.ArrayLike, cfg: LoRaConfig, *, coarse_cfo_hz: npt.ArrayLike = 0.0
) -> npt.NDArray[np.float64]:
    """Fine CFO of preambles from the phase progression across their symbols (Shen et al. 2021, eqs. 13-15).

    The preamble is compensated by ``coarse_cfo_hz`` and dechirped; each symbol's tone is summed into one
    complex amplitude ``X_j`` (the in-band part of eq. 13's ``r[n]``, which removes the noise-times-noise term
    that makes eq. 13 on raw samples poor at low SNR). The residual CFO is the phase of ``sum_j X_j X*_{j+1}``
    over all consecutive pairs (unambiguous range ``±bw / 2**(sf+1)``, eq. 15), refined by a least-squares
    line through the symbol phases, which reaches the Cramer-Rao bound. Like eq. 13 it does not depend on the
    alignment.

    Parameters
    ----------
    preamble : array_like of complex, shape (N, L) or (L,)
        Preamble up-chirps sampled at ``cfg.fs_hz``, at least two whole symbols. At integer oversampling the
        symbols need not be aligned as long as every sample belongs to the preamble.
    cfg : LoRaConfig
    coarse_cfo_hz : float or array_like of float, shape (N,) or ()
        Offset removed first, in Hz.

    Returns
    -------
    cfo_hz : ndarray of float64, shape (N,) or ()
        ``coarse_cfo_hz`` plus the residual wrapped into ``±cfg.bw_hz / 2**(cfg.sf + 1)`` (eq. 15), in Hz.
        With the default ``coarse_cfo_hz=0`` this is the CFO modulo ``bw / 2**sf``.

    Examples
    --------
    >>> from lorarffi.dsp.chirp import packet_waveform
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> iq = packet_waveform(cfg, cfo_hz=100.0)[: cfg.preamble_samples]
    >>> round(float(estimate_fine_cfo(iq, cfg)), 3)
    100.0
    """
    x, squeeze = _as_batch(preamble)
    coarse = np.broadcast_to(np.asarray(coarse_cfo_hz, dtype=np.float64), (x.shape[0],))
    return _finish(_by_blocks(_fine_rows, x, cfg, coarse), squeeze)


def estimate_cfo(preamble: npt.ArrayLike, cfg: LoRaConfig) -> npt.NDArray[np.float64]:
    """Estimate the carrier frequency offset of aligned LoRa preambles (coarse + fine, eq. 16).

    Parameters
    ----------
    preamble : array_like of complex, shape (N, L) or (L,)
        Preambles starting at their first up-chirp sample, sampled at ``cfg.fs_hz`` (e.g. the (N, 8192)
        preamble rows of the public datasets at SF7, 125 kHz, 1 MS/s). At least two whole symbols.
    cfg : LoRaConfig
        Spreading factor, bandwidth and sample rate of the capture.

    Returns
    -------
    cfo_hz : ndarray of float64, shape (N,) or ()
        Transmitter carrier minus receiver centre frequency, in Hz (Shen et al. 2021, eqs. 9-16), within
        ``±cfg.fs_hz / 2``. At integer oversampling a misalignment of up to about ``fs / (4 * bw)`` samples
        (2 samples at 8x) does not change it.

    Examples
    --------
    >>> from lorarffi.dsp.chirp import packet_waveform
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> iq = packet_waveform(cfg, cfo_hz=3_000.0)[: cfg.preamble_samples]
    >>> round(float(estimate_cfo(iq, cfg)), -1)
    3000.0
    """
    x, squeeze = _as_batch(preamble)
    coarse = _by_blocks(_coarse_rows, x, cfg)
    return _finish(_by_blocks(_fine_rows, x, cfg, coarse), squeeze)


def compensate_cfo(
    iq: npt.ArrayLike, cfo_hz: npt.ArrayLike, fs_hz: float
) -> npt.NDArray[np.complex64]:
    """Remove a carrier frequency offset: ``iq[..., n] * exp(-2j*pi*cfo_hz*n/fs_hz)`` (eqs. 12 and 14).

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        Samples at ``fs_hz``; the phase reference is the first sample of each row (left unchanged).
    cfo_hz : float or array_like of float, shape (N,) or ()
        Offset of each row, transmitter minus receiver, in Hz.
    fs_hz : float
        Sample rate in Hz.

    Returns
    -------
    iq : ndarray of complex64, same shape as ``iq``
        A new array; the input is not modified.

    Examples
    --------
    >>> import numpy as np
    >>> tone = np.exp(2j * np.pi * 1e3 * np.arange(8) / 1e6).astype(np.complex64)
    >>> bool(np.allclose(compensate_cfo(tone, 1e3, 1e6), 1.0, atol=1e-6))
    True
    """
    x, squeeze = _as_batch(iq, "iq")
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise ConfigError(f"fs_hz={fs_hz!r} is not valid: use a positive sample rate in Hz")
    cfo = np.asarray(cfo_hz, dtype=np.float64)
    if cfo.ndim > 1 or (cfo.ndim == 1 and cfo.shape[0] != x.shape[0]):
        raise ConfigError(f"cfo_hz has shape {cfo.shape}; expected () or ({x.shape[0]},) for iq of shape "
                          f"{np.shape(iq)}")
    cfo = np.broadcast_to(cfo, (x.shape[0],))
    n = np.arange(x.shape[1], dtype=np.float64)
    out = np.empty(x.shape, dtype=np.complex64)
    for a in range(0, x.shape[0], _ROWS_PER_BLOCK):
        cycles = np.mod(np.outer(cfo[a : a + _ROWS_PER_BLOCK] / fs_hz, n), 1.0)
        rot = np.exp(-2j * np.pi * cycles).astype(np.complex64)
        out[a : a + _ROWS_PER_BLOCK] = x[a : a + _ROWS_PER_BLOCK] * rot
    return out[0] if squeeze else out
