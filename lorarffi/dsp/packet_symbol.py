"""One transmitter symbol estimated from a whole packet: preamble up-chirps, sync word, header and payload.

The preamble's coherent average (:mod:`lorarffi.dsp.coherent`) divides the noise's power by its 8 up-chirps.
Every later up-chirp of the packet (the two sync-word symbols, the header and the payload; not the 2.25
down-chirps) is the same chirp started at another frequency: symbol ``s`` is the base up-chirp cyclically
shifted by ``s * os`` samples (``os = fs / bw``) and turned by the start phase
``c_s = -pi (s^2 / 2^SF - s)`` (:func:`symbol_start_phase_rad`), so shifting it back gives the base chirp.

What the transmitter adds to the chirp does not all turn with it. Its IQ gain/phase imbalance adds the image
``b conj(x)`` and its carrier leakage a constant ``d``; once a shifted-back symbol is turned back by its own
phase, the chirp's part is the same in every symbol but the image is turned by ``exp(-2j c_s)`` and the
leakage by ``exp(-j c_s)``. A plain average of such symbols smears both (in the simulated fleets it lost
more accuracy than the extra symbols gave). Each packet's symbols are instead fitted, sample by sample and
by least squares, as ``M + exp(-2j c_s) I + exp(-j c_s) D`` with three unknown waveforms (chirp part, image
part, leakage part), and the estimate is ``M + I + D``: the symbol as a preamble up-chirp carries it (``c =
0``). Symbols whose ``c_s`` is a multiple of ``2 pi`` (``s`` a multiple of ``2^SF / 8``) count as a preamble
up-chirp; the others as about a third of one. A packet whose extra symbols are too few or too alike for the
fit keeps its preamble average.

A symbol joins when its dechirped spectrum has one dominant peak (a symbol of the packet, not noise after its
end) and its power is within a factor of two of the preamble's (not a collision with a stronger packet);
payload symbols are taken in order up to the first that fails. A row whose sync word does not read as
``cfg.sync_word`` keeps its preamble average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft

from lorarffi.dsp.chirp import downchirp, packet_layout, sync_word_symbols
from lorarffi.dsp.coherent import coherent_symbol_average
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.symbol_drift import drift_fit, shift_spectrum, tone_offset_bins, unit_phasor
from lorarffi.errors import ConfigError

__all__ = ["PacketSymbol", "packet_symbol_estimate", "symbol_start_phase_rad", "packet_tail_samples"]

PEAK_DOMINANCE_MIN = 16.0  # dechirped peak (two folded bins) over the mean folded bin: noise alone reaches ~5
POWER_RATIO_MAX = 2.0  # a symbol's power against the preamble's mean symbol power, either way
REFINEMENTS = 2  # passes that re-estimate each symbol's phase against the fitted model of it
DRIFT_MIN_BINS = 0.01  # a drift moving the farthest symbol's tone by less is left alone: -40 dB at most
DRIFT_SIGNIFICANCE = 5.0  # and so is a slope within this many standard errors of 0
TIMING_SHARE_STEPS = (11, 11)  # grids of the timing share: 0.1 apart, then 0.02 about the best
_SAMPLES_PER_BLOCK = 1 << 21  # packets processed at once hold about this many samples: bounds temporaries


@dataclass(frozen=True)
class PacketSymbol:
    """The estimated transmitter symbol of each packet.

    Attributes
    ----------
    symbol : ndarray of complex64, shape (N, cfg.samples_per_symbol)
        The up-chirp as the preamble carries it, on about the first preamble symbol's phase.
    n_symbols : ndarray of int64, shape (N,)
        Symbols of the packet used (the preamble's included).
    effective_symbols : ndarray of float64, shape (N,)
        The noise's power in the estimate is a single symbol's divided by this (``cfg.preamble_symbols`` for
        the preamble's average alone).
    drift_bins_per_symbol : ndarray of float64, shape (N,)
        The tone drift undone before the fit, in bins per symbol (0: none significant; as a clock error,
        ``drift * 1e6 / 2^SF`` ppm).
    timing_share : ndarray of float64, shape (N,)
        Share of that drift undone as timing (the rest as carrier), 0 to 1; NaN where none was undone.
    """

    symbol: npt.NDArray[np.complex64]
    n_symbols: npt.NDArray[np.int64]
    effective_symbols: npt.NDArray[np.float64]
    drift_bins_per_symbol: npt.NDArray[np.float64]
    timing_share: npt.NDArray[np.float64]


def symbol_start_phase_rad(values: npt.ArrayLike, n_chips: int) -> npt.NDArray[np.float64]:
    """Phase of up-chirp symbol ``s`` against the base up-chirp shifted by ``s`` chips: ``-pi (s^2/n - s)``.

    Parameters
    ----------
    values : array_like of int
        Symbol values, 0 .. n_chips - 1.
    n_chips : int
        ``2^SF``.

    Returns
    -------
    ndarray of float64, same shape, in [0, 2 pi)

    Examples
    --------
    >>> symbol_start_phase_rad([0, 16, 8], 128).round(4).tolist()
    [0.0, 0.0, 4.7124]
    """
    s = np.asarray(values, dtype=np.float64)
    return np.mod(-np.pi * (s * s / float(n_chips) - s), 2 * np.pi)


def packet_tail_samples(cfg: LoRaConfig, n_payload_symbols: int) -> int:
    """Samples from the end of the preamble's up-chirps to the end of ``n_payload_symbols`` header/payload
    symbols: the sync word, the SFD and those symbols (:func:`~lorarffi.dsp.chirp.packet_layout`)."""
    layout = packet_layout(cfg, int(n_payload_symbols))
    return int(round(layout.stop - layout.sync_start))


def _check_cfg(cfg: LoRaConfig) -> int:
    if not cfg.is_integer_oversampling:
        raise ConfigError(
            f"a packet-wide symbol estimate needs an integer oversampling (fs/bw); fs {cfg.fs_hz:g} Hz "
            f"and bw {cfg.bw_hz:g} Hz give {cfg.oversampling:g}"
        )
    return int(round(cfg.oversampling))


def _dechirp_values(
    sym: npt.NDArray[np.complex64], down: npt.NDArray[np.complex64], n_chips: int,
    moved_bins: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Symbol value and peak check of each (rows, K, sps) symbol: dechirped FFT, bins s and s - n folded; the
    peak's fractional bin (parabola through the log powers of it and its neighbours) less the tone the
    drift moved it by (``moved_bins``), rounded."""
    spec = np.fft.fft(sym * down, axis=-1)
    power = spec.real**2 + spec.imag**2
    folded = power[..., :n_chips] + power[..., power.shape[-1] - n_chips :]
    peak_bin = folded.argmax(-1)
    peak = np.take_along_axis(folded, peak_bin[..., None], -1)[..., 0]
    dominant = peak >= PEAK_DOMINANCE_MIN * folded.mean(-1)
    tiny = np.finfo(folded.dtype).tiny
    left, right = (
        np.log(np.maximum(np.take_along_axis(folded, ((peak_bin + k) % n_chips)[..., None], -1)[..., 0],
                          tiny))
        for k in (-1, 1)
    )
    centre = np.log(np.maximum(peak, tiny))
    curvature = left - 2 * centre + right
    fraction = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    value = np.round(peak_bin + np.clip(fraction, -0.5, 0.5) - moved_bins).astype(np.int64) % n_chips
    return value, dominant


def packet_symbol_estimate(iq: npt.ArrayLike, cfg: LoRaConfig) -> PacketSymbol:
    """The transmitter's up-chirp estimated from each packet's preamble, sync word, header and payload.

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        CFO-compensated packets starting at the first of the ``cfg.preamble_symbols`` up-chirps; ``L >=
        cfg.preamble_samples``. Samples past the preamble hold the sync word, the SFD and as much of the
        header and payload as was kept (:func:`packet_tail_samples`); a preamble alone gives its average.
    cfg : LoRaConfig
        Integer oversampling (``fs / bw``).

    Returns
    -------
    PacketSymbol
        1-D input gives 1-D ``symbol`` and 0-d counts.
    """
    os_ = _check_cfg(cfg)
    x = np.atleast_2d(np.asarray(iq, dtype=np.complex64))
    one = np.ndim(iq) == 1
    sps = cfg.samples_per_symbol
    if x.ndim != 2 or x.shape[1] < cfg.preamble_samples:
        raise ConfigError(
            f"packets have shape {np.shape(iq)}, expected (N, L) with L >= {cfg.preamble_samples}"
        )
    out = np.empty((x.shape[0], sps), np.complex64)
    n_used = np.empty(x.shape[0], np.int64)
    k_eff, slope, timing = (np.empty(x.shape[0], np.float64) for _ in range(3))
    n_rows = max(1, _SAMPLES_PER_BLOCK // x.shape[1])
    for b0 in range(0, x.shape[0], n_rows):
        block = slice(b0, b0 + n_rows)
        out[block], n_used[block], k_eff[block], slope[block], timing[block] = _estimate_block(
            x[block], cfg, os_)
    if one:
        return PacketSymbol(out[0], n_used[0], k_eff[0], slope[0], timing[0])
    return PacketSymbol(out, n_used, k_eff, slope, timing)


def _estimate_block(
    x: npt.NDArray[np.complex64], cfg: LoRaConfig, os_: int
) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.int64], npt.NDArray[np.float64],
           npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    sps, n_pre, n_chips = cfg.samples_per_symbol, cfg.preamble_symbols, cfg.n_chips
    rows, length = x.shape
    pre = x[:, : n_pre * sps].reshape(rows, n_pre, sps)
    avg = coherent_symbol_average(x[:, : n_pre * sps], sps)
    no_drift = np.zeros(rows), np.full(rows, np.nan)
    if length < (n_pre + 2) * sps:
        return avg, np.full(rows, n_pre), np.full(rows, float(n_pre)), *no_drift
    t_pre = np.arange(n_pre) - (n_pre - 1) / 2  # symbol centres from the preamble's centre, in symbols
    pre_fit = drift_fit(tone_offset_bins(pre, avg[:, None, :]), t_pre)
    layout = packet_layout(cfg)
    sync0, pay0 = int(round(layout.sync_start)), int(round(layout.payload_start))
    # margin around each later symbol for moving it: the drift the preamble predicts at the row's end
    t_end = length / sps - n_pre / 2
    margin = int(np.ceil(np.max(np.abs(pre_fit.slope_bins_per_symbol)) * t_end * os_)) + 8
    margin = min(margin, sps)
    n_pay = max(0, (length - pay0) // sps)
    starts = np.concatenate([sync0 + sps * np.arange(2), pay0 + sps * np.arange(n_pay)])
    padded = np.pad(x, ((0, 0), (margin, margin)))  # zeros past the row's ends: what a moved end symbol reads
    windows = padded[:, starts[:, None] + np.arange(sps + 2 * margin)]  # (rows, K, sps + 2 margin)
    extra = windows[:, :, margin : margin + sps]
    t_extra = (starts + sps / 2) / sps - n_pre / 2
    predicted = pre_fit.slope_bins_per_symbol[:, None] * t_extra  # tone each symbol is moved by (bins)
    value, dominant = _dechirp_values(extra, downchirp(cfg), n_chips, predicted)
    pre_power = np.mean(pre.real**2 + pre.imag**2, axis=(1, 2))
    power = np.mean(extra.real**2 + extra.imag**2, axis=-1) / pre_power[:, None]
    ok = dominant & (power <= POWER_RATIO_MAX) & (power >= 1.0 / POWER_RATIO_MAX)
    sync = np.asarray(sync_word_symbols(cfg.sync_word))
    sync_ok = ok[:, 0] & ok[:, 1] & np.all(value[:, :2] == sync, axis=1)
    ok[:, 2:] = np.cumprod(ok[:, 2:], axis=1).astype(bool)  # payload in order up to the first that fails
    ok &= sync_ok[:, None]
    used = np.concatenate([np.ones((rows, n_pre), bool), ok], axis=1)
    c = np.concatenate([np.zeros((rows, n_pre)), symbol_start_phase_rad(value, n_chips)], axis=1)
    design = np.stack([np.ones_like(c), np.exp(-2j * c), np.exp(-1j * c)], axis=-1) * used[:, :, None]
    gram = np.einsum("nkp,nkq->npq", design.conj(), design)
    solve = np.einsum("npq,nkq->npk", np.linalg.pinv(gram, rcond=1e-6, hermitian=True), design.conj())

    # the preamble's drift, undone where it moves the farthest used symbol enough and is clearly not noise
    t_all = np.concatenate([t_pre, t_extra])
    slope = pre_fit.slope_bins_per_symbol
    reach = np.abs(slope) * np.max(np.where(used, np.abs(t_all), 0.0), axis=1)
    clear = np.abs(slope) >= DRIFT_SIGNIFICANCE * pre_fit.slope_se_bins_per_symbol
    aligned = (reach >= DRIFT_MIN_BINS) & clear
    slope = np.where(aligned, slope, 0.0)

    timing = np.ones(rows)
    symbols = np.concatenate([pre, _rolled(extra, value, os_)], axis=1)
    if aligned.any():
        a = np.flatnonzero(aligned)
        pre_spec = scipy.fft.fft(pre[a], axis=-1)
        win_spec = scipy.fft.fft(windows[a], axis=-1)

        def symbols_at(share: npt.NDArray[np.float64]) -> npt.NDArray[np.complex64]:
            return _aligned_symbols(pre_spec, win_spec, value[a], slope[a], share, t_all, margin, os_)

        timing[a] = _best_timing_share(symbols_at, design[a], solve[a], used[a], avg[a])
        # The preamble's slope is a little off (its image moves the other way); every used symbol's tone
        # against its fitted model tells by how much. Then the share once more, about the last one.
        moved = symbols_at(timing[a])
        model = _fit(moved, design[a], solve[a], used[a], avg[a])[3]
        off = drift_fit(tone_offset_bins(moved, model), t_all, used[a])
        slope[a] += off.slope_bins_per_symbol
        timing[a] = _best_timing_share(symbols_at, design[a], solve[a], used[a], avg[a],
                                       centre=timing[a], steps=TIMING_SHARE_STEPS[1:])
        # confirmed by every used symbol (the preamble's 8 tones leave 6 degrees of freedom: heavy tails)
        confirmed = np.abs(slope[a]) >= DRIFT_SIGNIFICANCE * off.slope_se_bins_per_symbol
        symbols[a[confirmed]] = symbols_at(timing[a])[confirmed]
        aligned[a[~confirmed]] = False
        slope[a[~confirmed]], timing[a[~confirmed]] = 0.0, 1.0
    estimate, weights, _, _ = _fit(symbols, design, solve, used, avg)
    noise_gain = np.sum(np.abs(weights) ** 2, axis=1)
    fitted = noise_gain < (1.0 - 1e-9) / n_pre  # the fit beats the preamble's average
    pre_avg = np.where(aligned[:, None], coherent_symbol_average(
        symbols[:, :n_pre].reshape(rows, n_pre * sps), sps), avg)
    estimate = np.where(fitted[:, None], estimate, pre_avg)
    n_used = np.where(fitted, used.sum(1), n_pre)
    k_eff = np.where(fitted, 1.0 / noise_gain, float(n_pre))
    return (estimate, n_used.astype(np.int64), k_eff, np.where(aligned, slope, 0.0),
            np.where(aligned, timing, np.nan))


def _fit(symbols: npt.NDArray[np.complex64], design: npt.NDArray[np.complex128],
         solve: npt.NDArray[np.complex128], used: npt.NDArray[np.bool_], avg: npt.NDArray[np.complex64]
         ) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.complex128], npt.NDArray[np.float64],
                    npt.NDArray[np.complex64]]:
    """The least-squares fit of the module docstring: estimate (N, sps), weights (N, K), residual (N,) (the
    used symbols' mean squared misfit against the first symbol's power) and model (N, K, sps) (what each
    symbol is fitted as, on its own phase)."""
    model = avg[:, None, :]  # what each symbol should look like once turned: first the preamble's average
    solve64, design64 = solve.astype(np.complex64), design.astype(np.complex64)
    for _ in range(1 + REFINEMENTS):
        turn = np.sum(symbols * np.conj(model), axis=-1)
        turn = turn / np.maximum(np.abs(turn), np.finfo(np.float32).tiny)
        turned = symbols * np.conj(turn)[:, :, None]
        parts = np.matmul(solve64, turned)  # (N, 3, sps): M, I, D
        model = np.matmul(design64, parts)
    misfit = np.where(used[:, :, None], turned - model, 0)
    power = np.mean(np.abs(symbols[:, : 1]) ** 2, axis=(1, 2))
    residual = np.sum(np.abs(misfit) ** 2, axis=(1, 2)) / (np.maximum(used.sum(1), 1) * symbols.shape[-1])
    model = model * turn[:, :, None]
    return parts.sum(1).astype(np.complex64), solve.sum(1), residual / np.maximum(power, 1e-30), model


def _aligned_symbols(pre_spec: npt.NDArray[np.complex64], win_spec: npt.NDArray[np.complex64],
                     value: npt.NDArray[np.int64], slope: npt.NDArray[np.float64],
                     timing: npt.NDArray[np.float64], t_all: npt.NDArray[np.float64], margin: int, os_: int
                     ) -> npt.NDArray[np.complex64]:
    """Preamble and later symbols (N, n_pre + K, sps), given as FFTs of the preamble's symbols and of the
    later symbols' windows, with the drift ``slope * t`` undone (``timing`` of it as a time shift, the rest
    as a frequency shift) and each later symbol shifted back onto the base chirp."""
    rows, n_pre, sps = pre_spec.shape
    tone = slope[:, None] * t_all  # (N, n_pre + K) bins
    shift = -(timing[:, None] * tone) * os_  # samples: a delay of tau moves the tone by -tau / os
    pre_moved = shift_spectrum(pre_spec, shift[:, :n_pre])  # one up-chirp of a run: a cyclic shift is exact
    later = shift_spectrum(win_spec, shift[:, n_pre:])[:, :, margin : margin + sps]
    moved = np.concatenate([pre_moved, later], axis=1)
    carrier = ((1.0 - timing)[:, None] * tone).astype(np.float32)
    if np.any(carrier):
        moved *= unit_phasor(-carrier[:, :, None] * (np.arange(sps, dtype=np.float32) / sps))
    moved[:, n_pre:] = _rolled(moved[:, n_pre:], value, os_)
    return moved


def _rolled(symbols: npt.NDArray[np.complex64], value: npt.NDArray[np.int64], os_: int
            ) -> npt.NDArray[np.complex64]:
    """Each (N, K, sps) symbol shifted back onto the base chirp: ``rolled[i] = symbol[(i - s os) % sps]``."""
    sps = symbols.shape[-1]
    index = (np.arange(sps)[None, None, :] - (value * os_)[:, :, None]) % sps
    return np.take_along_axis(symbols, index, axis=-1)


def _best_timing_share(
    symbols_at: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.complex64]],
    design: npt.NDArray[np.complex128], solve: npt.NDArray[np.complex128], used: npt.NDArray[np.bool_],
    avg: npt.NDArray[np.complex64], *, centre: npt.NDArray[np.float64] | None = None,
    steps: tuple[int, ...] = TIMING_SHARE_STEPS,
) -> npt.NDArray[np.float64]:
    """The share of each packet's drift taken as timing (0 to 1) that fits its symbols best (``symbols_at``
    gives the packets' aligned symbols for a share per packet): a grid, then finer grids about each packet's
    best (:data:`TIMING_SHARE_STEPS`)."""
    rows = used.shape[0]
    best, best_residual = np.ones(rows), np.full(rows, np.inf)
    # the first grid spans 0 to 1, or one step of the coarsest grid either side of a given centre
    half_width = 1.0 / (TIMING_SHARE_STEPS[0] - 1) if centre is not None else 0.5
    centre = np.full(rows, 0.5) if centre is None else centre
    for n_steps in steps:
        step = 2 * half_width / (n_steps - 1)
        residuals = []
        for offset in np.linspace(-half_width, half_width, n_steps):
            share = np.clip(centre + offset, 0.0, 1.0)
            residual = _fit(symbols_at(share), design, solve, used, avg)[2]
            residuals.append(residual)
            better = residual < best_residual
            best, best_residual = np.where(better, share, best), np.where(better, residual, best_residual)
        centre, half_width = best, step
    # the vertex of the parabola through the last grid's best point and its neighbours
    r = np.stack(residuals, axis=1)  # (rows, n_steps) on the last grid
    k = np.clip(np.argmin(r, axis=1), 1, r.shape[1] - 2)
    r0, r1, r2 = (np.take_along_axis(r, (k + d)[:, None], 1)[:, 0] for d in (-1, 0, 1))
    curvature = r0 - 2 * r1 + r2
    grid_k = np.clip(best - (np.argmin(r, axis=1) - k) * step, 0.0, 1.0)  # the share at index k
    offset = np.where(curvature > 0, 0.5 * (r0 - r2) / np.where(curvature > 0, curvature, 1.0), 0.0)
    vertex = grid_k + offset * step
    vertex = np.clip(np.where(np.abs(vertex - best) <= step, vertex, best), 0.0, 1.0)
    return np.where(_fit(symbols_at(vertex), design, solve, used, avg)[2] < best_residual, vertex, best)
