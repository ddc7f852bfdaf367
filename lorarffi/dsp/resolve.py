"""Resolve one preamble candidate of the stream search into a packet: one function per stage.

:class:`~lorarffi.dsp.detect.StreamDetector` finds candidates (runs of windows whose dechirped peak stays on
one bin) and calls these stages in order on the samples it holds; each is a function of arrays and a
:class:`ChirpReferences`. Stages 1-4 work at the chip rate, the rest at the full (integer-oversampled) rate on
a local copy ``(samples, first index)`` of the stream:

1. :func:`upchirp_peak` and 2. :func:`find_sfd`: the up-chirp peak sits at ``cfo - timing``, the SFD
   down-chirp peak at ``cfo + timing``; 3. :func:`coarse_cfo_and_timing` splits the two;
4. :func:`sfd_boundary` picks the SFD's symbol boundary;
5. :func:`align_upchirps` and :func:`settle_bin_ambiguity`: alignment to the sample and the coarse CFO again;
6. :func:`count_preamble` (and :func:`count_from_head` for a preamble longer than the history),
   :func:`sfd_is_weak` (on the SFD power stage 5b measured);
7. :func:`fine_cfo` (eq. 13 over all pairs, then a least-squares line; Shen et al. 2021) and
   :func:`fine_timing`;
8. :func:`estimate_snr_db`, :func:`read_sync_word` and :func:`compensated_window`: the packet's outputs.

The CFO is never removed from the local copy: it rides on one-symbol references (:func:`symbol_amplitudes`)
and a phase per window; phasors are float32 cos/sin of phases reduced in float64.
"""

from __future__ import annotations

import cmath
import functools
import math
import statistics
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.fft

from lorarffi.dsp.chirp import sync_word_from_symbols, upchirp
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.sample_store import SampleStore

__all__ = [
    "ChirpReferences",
    "SfdPeak",
    "SettledSync",
    "PreambleCount",
    "Source",
    "ZERO_PAD",
    "SFD_RATIO",
    "SFD_PAIR_FA",
    "sfd_first_ratio",
    "MIN_PREAMBLE",
    "K_FINE",
    "K_TIME",
    "aligned_windows",
    "symbol_amplitudes",
    "cis",
    "change_point",
    "tone_bins",
    "UpchirpPeak",
    "upchirp_peak",
    "find_sfd",
    "coarse_cfo_and_timing",
    "sfd_boundary",
    "align_upchirps",
    "settle_bin_ambiguity",
    "count_preamble",
    "count_from_head",
    "sfd_is_weak",
    "fine_cfo",
    "cfo_free_downchirp",
    "fine_timing",
    "estimate_snr_db",
    "read_sync_word",
    "cfo_rotation",
    "compensated_window",
]

ZERO_PAD = 4  # zero-padding of the resolution spectra
SFD_RATIO = 7.4  # gamma.isf(1e-5, 2) / 2: peak over mean of two summed zero-padded window periodograms
SFD_PAIR_FA = 1e-5  # false-alarm probability of a pair of noise windows taken as the SFD's first pair


@functools.cache
def sfd_first_ratio(n_chips: int) -> float:
    """Peak-over-mean ratio a pair of windows must reach to be taken as the SFD's first pair at once: noise
    reaches it with probability :data:`SFD_PAIR_FA` over the whole pair spectrum. Per bin the ratio of noise
    is gamma(2)/2 distributed, ``P(> x) = (1 + 2x) exp(-2x)``; the ``ZERO_PAD``-times padded spectrum holds
    about ``2 * n_chips`` independent bins (measured on noise: 9.7 at SF7, 11.3 at SF12 for a max over
    ``n_chips``; the padded bins' maxima are that much higher)."""
    n_eff = 2 * n_chips
    x = 5.0
    for _ in range(50):  # Newton on g(x) = log(n_eff (1 + 2x)) - 2x - log(p)
        g = math.log(n_eff * (1 + 2 * x)) - 2 * x - math.log(SFD_PAIR_FA)
        x -= g / (2 / (1 + 2 * x) - 2)
    return x
RHO = 0.3  # an aligned up-chirp (or SFD down-chirp) holds at least this share of the preamble's energy
PROJ_SPLIT = 0.47  # coherent count: share of the preamble amplitude that splits up-chirp from noise
KAPPA_SURE = 25.0  # noise alone exceeds this many times its expectation with probability 1e-11
KAPPA = 8.0  # ... and at least this many times its window's noise-only expectation (Exp(1): P = 3e-4)
MIN_PREAMBLE = 5  # up-chirps counted before the sync word
K_FINE = 64  # preamble symbols (at most) for the fine CFO
K_ALIGNED = 4  # preamble symbols for the aligned coarse re-estimate
K_TIME = 16  # preamble symbols (at most) for the fine timing and the SNR
TIME_GRID = np.arange(-12, 13) / 8.0  # bins searched by the fine timing (then a parabola through 3 points)

Source = SampleStore | tuple[npt.NDArray[np.complex64], int]
"""Samples addressed by absolute index: a :class:`SampleStore`, or ``(samples, index of samples[0])``."""


@dataclass(frozen=True, eq=False)
class ChirpReferences:
    """Sizes and reference chirps of one configuration at an integer oversampling.

    Attributes
    ----------
    n_chips : int
        ``N = 2**sf`` chips per symbol.
    osr : int
        Samples per chip.
    up_full, down_full : ndarray of complex64, shape (L,)
        Base up-chirp and its conjugate at the full rate, ``L = N * osr`` samples.
    up_chip, down_chip : ndarray of complex64, shape (N,)
        Unit-modulus up-chirp at the chip rate (phase of the ``osr``-sample boxcar sum) and its conjugate.
    n_float : ndarray of float64, shape (L,)
        ``0, 1, ..., L - 1``.
    """

    n_chips: int
    osr: int
    up_full: npt.NDArray[np.complex64]  # (L,)
    down_full: npt.NDArray[np.complex64]
    up_chip: npt.NDArray[np.complex64]  # (N,)
    down_chip: npt.NDArray[np.complex64]
    n_float: npt.NDArray[np.float64]

    @classmethod
    def from_config(cls, cfg: LoRaConfig) -> ChirpReferences:
        """References of ``cfg``, at an integer oversampling (``cfg.integer_oversampling()``), with their
        tables (:attr:`time_dtft`, :attr:`edge_dtft`) computed. One instance per (SF, bandwidth, rate), shared
        by every caller: read-only, and the tables take up to 8 MiB and 0.2 s at SF12 and 1 MS/s."""
        return _references(cfg.sf, float(cfg.bw_hz), float(cfg.fs_hz))

    @classmethod
    def _build(cls, cfg: LoRaConfig) -> ChirpReferences:
        osr = int(round(cfg.oversampling))
        n_chips = cfg.n_chips
        up = upchirp(cfg)
        dec = up.reshape(n_chips, osr).sum(axis=1)
        up_chip = np.exp(1j * np.angle(dec)).astype(np.complex64)
        return cls(n_chips, osr, up, np.conj(up), up_chip, np.conj(up_chip),
                   np.arange(n_chips * osr, dtype=np.float64))

    @property
    def n_samples(self) -> int:
        """``L``: samples per symbol."""
        return self.n_chips * self.osr

    def fine_dtft(self, bins: npt.NDArray[np.int64]) -> npt.NDArray[np.complex64]:
        """``exp(-2j*pi*n*k/(ZERO_PAD*N))`` for chips ``n < N`` and the fine bins ``k`` given: (N, K).

        Only the columns asked for: the whole (N, ZERO_PAD*N) matrix would take 512 MiB at SF12.
        """
        z, n = ZERO_PAD, self.n_chips
        return cis(np.outer(self.n_float[:n], -bins / (z * n)))

    @functools.cached_property
    def time_dtft(self) -> npt.NDArray[np.complex64]:
        """DTFT of one symbol at the bins of :data:`TIME_GRID`: (25, L)."""
        n = np.arange(self.n_samples)
        return np.exp(-2j * np.pi * np.outer(TIME_GRID, n) / self.n_samples).astype(np.complex64)

    @functools.cached_property
    def edge_dtft(self) -> npt.NDArray[np.complex64]:
        """DTFT of one symbol at bins 0, 1, -1, 2, -2: (L, 5)."""
        k = np.array([0, 1, -1, 2, -2], dtype=np.float64)
        return cis(np.outer(self.n_float, -k / self.n_samples))

    @functools.cached_property
    def near_dtft(self) -> npt.NDArray[np.complex64]:
        """:meth:`fine_dtft` at the fine bins ``-2*ZERO_PAD-1 .. 2*ZERO_PAD+1`` around bin 0, shape
        (N, 4*ZERO_PAD+3) (a chip-rate bin ``b`` moves them by a per-chip rotation ``exp(-2j*pi*n*b/N)``)."""
        return self.fine_dtft(np.arange(-2 * ZERO_PAD - 1, 2 * ZERO_PAD + 2))

    @functools.cached_property
    def chip_edge_dtft(self) -> npt.NDArray[np.complex64]:
        """DTFT of one chip-rate symbol at bins 0, 1, -1: (N, 3)."""
        return self.fine_dtft(ZERO_PAD * np.array([0, 1, -1]))

    @functools.cached_property
    def step_dtft(self) -> npt.NDArray[np.complex64]:
        """DTFT of one symbol at bins -1, 0, 1, one row each: (3, L)."""
        return np.ascontiguousarray(self.edge_dtft[:, [2, 0, 1]].T)


@functools.lru_cache(maxsize=64)
def _references(sf: int, bw_hz: float, fs_hz: float) -> ChirpReferences:
    refs = ChirpReferences._build(LoRaConfig(sf=sf, bw_hz=bw_hz, fs_hz=fs_hz))
    refs.time_dtft, refs.edge_dtft, refs.step_dtft, refs.near_dtft, refs.chip_edge_dtft  # noqa: B018 - now
    for table in (refs.up_full, refs.down_full, refs.up_chip, refs.down_chip, refs.n_float, refs.time_dtft,
                  refs.edge_dtft, refs.step_dtft, refs.near_dtft, refs.chip_edge_dtft):
        table.setflags(write=False)
    return refs


# -- small kernels ------------------------------------------------------------------------------------------
def cis(cycles: npt.NDArray[np.float64]) -> npt.NDArray[np.complex64]:
    """``exp(2j*pi*cycles)`` as complex64: the phase reduced to one cycle in float64, then cos/sin in float32
    (as accurate as complex64 holds, and cheaper than a complex128 ``np.exp`` of the same phases)."""
    frac = cycles - np.floor(cycles)
    frac *= 2 * np.pi
    rad = frac.astype(np.float32)
    out = np.empty(rad.shape, dtype=np.complex64)
    np.cos(rad, out=out.real)
    np.sin(rad, out=out.imag)
    return out


def change_point(flags: list[bool]) -> tuple[int, int, int]:
    """Change point of a run of up-chirp flags (most recent first): the cumulative score (+1 per flag set,
    -1 otherwise) is highest after the first ``n`` flags.

    Returns ``n`` (0 when the highest score is not positive), the highest score and the last one, as
    ``np.argmax(np.cumsum(np.where(flags, 1, -1))) + 1`` would.
    """
    score, best, i_best = 0, -(1 << 62), 0
    for i, flag in enumerate(flags):
        score += 1 if flag else -1
        if score > best:
            best, i_best = score, i
    return (i_best + 1 if best > 0 else 0), best, score


def _pair_freq(amp: npt.NDArray[np.complexfloating]) -> float:
    """Eq. 13 over consecutive pairs: rotation per step of amplitudes ``amp`` (chronological), in cycles."""
    return float(-np.angle(np.vdot(amp[1:], amp[:-1])) / (2 * np.pi))


def _phase_slope_row(amp: npt.NDArray[np.complex128]) -> float:
    """Rotation per step of ``K >= 2`` chronological amplitudes, in cycles, in plain Python floats.

    The arithmetic of the batched fine-CFO estimator in :mod:`lorarffi.dsp.cfo` (eq. 13 over all pairs,
    unwrapped residual phases, least-squares slope); ``K`` is small (at most :data:`K_FINE`), where numpy's
    cost per call would dominate.
    """
    z = amp.tolist()
    k = len(z)
    acc = sum(z[j] * z[j + 1].conjugate() for j in range(k - 1))
    f1 = -cmath.phase(acc) / (2 * math.pi)
    if k < 3:
        return f1
    phase = [cmath.phase(z[j] * cmath.exp(-2j * math.pi * f1 * j)) for j in range(k)]
    unwrapped, correct = [phase[0]], 0.0
    for j in range(1, k):  # np.unwrap
        dd = phase[j] - phase[j - 1]
        ddmod = (dd + math.pi) % (2 * math.pi) - math.pi
        if ddmod == -math.pi and dd > 0:
            ddmod = math.pi
        if abs(dd) >= math.pi:
            correct += ddmod - dd
        unwrapped.append(phase[j] + correct)
    mean = sum(unwrapped) / k
    jm = (k - 1) / 2
    num = sum((u - mean) * (j - jm) for j, u in enumerate(unwrapped))
    den = sum((j - jm) ** 2 for j in range(k))
    return f1 + num / den / (2 * math.pi)


def _log_parabola(power: npt.NDArray[np.float64], k: int) -> float:
    """Fractional peak position around index ``k`` of a (circular) oversampled spectrum."""
    n = power.size
    tiny = 1e-300
    pm, p0, pp = (math.log(float(power[(k + i) % n]) + tiny) for i in (-1, 0, 1))
    den = pm - 2 * p0 + pp
    if den >= 0:
        return float(k)
    return k + max(-0.5, min(0.5, 0.5 * (pm - pp) / den))


def _chirp_tone(ref: npt.NDArray[np.complex64], cycles: float,
                refs: ChirpReferences) -> npt.NDArray[np.complex64]:
    """``ref * exp(-2j*pi*cycles*n)`` for ``n < ref.size``: a reference that also removes a tone."""
    return ref * cis((-cycles) * refs.n_float[: ref.size])


def _amps(win: npt.NDArray[np.complex64], rel: npt.NDArray[np.int64], ref: npt.NDArray[np.complex64],
          tone: float, cfo_bins: float, refs: ChirpReferences) -> npt.NDArray[np.complex128]:
    """Amplitude at ``tone`` (bins of ``fs/ref.size``) of windows ``win`` (K, ref.size) dechirped by ``ref``,
    after removing ``cfo_bins`` (bins of ``fs/L``) with phase zero ``rel`` samples before each window (the CFO
    rides on the reference: the windows themselves are never rotated)."""
    w = ref.size
    amp = (win @ _chirp_tone(ref, tone / w + cfo_bins / refs.n_samples, refs)).astype(np.complex128)
    if cfo_bins:
        amp *= np.exp(-2j * np.pi * ((cfo_bins * rel / refs.n_samples) % 1.0))
    return amp


def aligned_windows(source: Source, starts: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.complex64]:
    """Windows ``[s, s + n)`` for each absolute start ``s``: shape (K, n) complex64.

    Zeros where the source holds nothing; a view of the source's array when the windows are contiguous and
    held (do not write into the result).
    """
    k = starts.size
    a, b = int(starts[0]), int(starts[-1]) + n
    contiguous = b - a == k * n and (k <= 2 or bool((starts[1:] - starts[:-1] == n).all()))
    if isinstance(source, SampleStore):
        a, b = min(a, int(starts.min())), max(b, int(starts.max()) + n)
        seg = source.view(a, b)
    else:
        arr, off = source
        if contiguous and a >= off and b <= off + arr.size:
            return arr[a - off : b - off].reshape(starts.size, n)
        a, b = min(a, int(starts.min())), max(b, int(starts.max()) + n)
        if k <= 8 and a >= off and b <= off + arr.size:  # a few windows, all held: no index array
            return np.stack([arr[s - off : s - off + n] for s in starts.tolist()])
        seg = np.zeros(b - a, dtype=np.complex64)
        lo, hi = max(a, off), min(b, off + arr.size)
        if hi > lo:
            seg[lo - a : hi - a] = arr[lo - off : hi - off]
    if contiguous:
        return seg.reshape(starts.size, n)
    return seg[(starts - a)[:, None] + np.arange(n)[None, :]]


def symbol_amplitudes(source: Source, starts: npt.NDArray[np.int64], tone: float, refs: ChirpReferences,
                      *, cfo_bins: float = 0.0) -> tuple[npt.NDArray[np.complex128], npt.NDArray[np.float64]]:
    """Amplitude at ``tone`` after dechirping (with ``refs.down_full``: up-chirp windows) and energy of the
    one-symbol windows at ``starts``.

    Parameters
    ----------
    source : Source
        Full-rate samples (a tuple's index is the phase origin of ``cfo_bins``, else sample 0).
    starts : ndarray of int64, shape (K,)
        Absolute first sample of each window.
    tone : float
        Bin (of ``fs / L``) the amplitude is taken at, after dechirping.
    refs : ChirpReferences
    cfo_bins : float
        CFO removed first, in bins of ``fs / L``.

    Returns
    -------
    amp : ndarray of complex128, shape (K,)
    energy : ndarray of float64, shape (K,)
        ``sum |x|**2`` of each window.
    """
    ref = refs.down_full
    w = ref.size
    # backwards starts are read forwards and the results flipped (a product with reversed rows would not
    # reach BLAS: ten times slower)
    backwards = starts.size > 1 and starts[1] - starts[0] == -w
    fwd = starts[::-1] if backwards else starts
    win = aligned_windows(source, fwd, w)
    off = source[1] if isinstance(source, tuple) else 0
    amp = _amps(win, fwd - off, ref, tone, cfo_bins, refs)
    energy = np.vecdot(win, win).real.astype(np.float64)
    if backwards:
        return amp[::-1], energy[::-1]
    return amp, energy


def tone_bins(d: npt.NDArray[np.complex64], refs: ChirpReferences) -> float:
    """Frequency of the tone in ``d`` (one symbol at the full rate, (L,)) in bins of ``fs/L``, within ±1.5."""
    p = np.abs(refs.time_dtft @ d).astype(np.float64) ** 2
    i = int(np.argmax(p))
    if i == 0 or i == p.size - 1:
        return float(TIME_GRID[i])
    den = p[i - 1] - 2 * p[i] + p[i + 1]
    frac = 0.5 * (p[i - 1] - p[i + 1]) / den if den < 0 else 0.0
    step = TIME_GRID[1] - TIME_GRID[0]
    return float(TIME_GRID[i] + max(-0.5, min(0.5, frac)) * step)


# -- stages 1-4: chip rate ----------------------------------------------------------------------------------
class UpchirpPeak(NamedTuple):
    """Stage 1's result."""

    bins: float  # dechirped up-chirp peak, ``cfo - timing``, in chip bins
    power: float  # the strongest window's peak power (a full up-chirp's; same scale as sfd_boundary's)


def upchirp_peak(windows: npt.NDArray[np.complex64], bin_index: int, refs: ChirpReferences) -> UpchirpPeak:
    """Stage 1: the dechirped up-chirp peak of a candidate, ``cfo - timing``, in chip bins, and its power.

    Parameters
    ----------
    windows : ndarray of complex64, shape (K, N)
        The candidate's chip-rate windows (a grid of one symbol each, any alignment).
    bin_index : int
        The search's peak bin of the candidate (the fine search looks within ±2 bins of it).
    refs : ChirpReferences

    Returns
    -------
    UpchirpPeak
        ``bins``: peak of the ``ZERO_PAD``-times zero-padded periodograms averaged over the windows holding at
        least half the strongest one's peak, interpolated (log-parabola); in ``[-1/2, N)`` chip bins.
        ``power``: the strongest window's peak (a window inside the preamble dechirps to one tone whatever
        its alignment, so this is a whole symbol's coherent power).
    """
    z, n = ZERO_PAD, refs.n_chips
    # the zero-padded spectrum is needed only near the bin: a DTFT on those fine bins (one more either side)
    near0 = bin_index * z - 2 * z - 1  # the first fine bin
    shift = refs.down_chip * cis((-bin_index / n) * refs.n_float[:n])  # dechirps, moves bin_index to 0
    sp = (windows * shift) @ refs.near_dtft
    spec = sp.real**2 + sp.imag**2
    e = spec[:, 1:-1].max(axis=1)
    strong = spec[e >= 0.5 * e.max()]
    avg = np.add.reduce(strong, axis=0, dtype=np.float64) / strong.shape[0]
    i = int(np.argmax(avg[1:-1])) + 1
    return UpchirpPeak(((near0 + i) % (z * n) + _log_parabola(avg, i) - i) / z, float(e.max()))


class SfdPeak(NamedTuple):
    """Stage 2's result: the pair of consecutive windows taken as the SFD's."""

    index: int  # first window of the pair (index into the windows given)
    bins: float  # dechirped down-chirp peak, ``cfo + timing``, in chip bins (NaN when not found)
    metric: float  # peak over mean of the pair's summed zero-padded periodogram
    found: bool  # the pair holds a start-of-frame delimiter


def find_sfd(windows: npt.NDArray[np.complex64], refs: ChirpReferences, *, final: bool = True) -> SfdPeak:
    """Stage 2: the start-of-frame delimiter among chip-rate windows after a candidate's preamble.

    The windows are dechirped with the up-chirp; the SFD's 2.25 down-chirps give a peak at ``cfo + timing``
    in consecutive windows. The first pair whose peak noise reaches with probability :data:`SFD_PAIR_FA`
    (:func:`sfd_first_ratio`) is taken, not the strongest: it is the same pair whatever windows follow it,
    so a stream can place the SFD as soon as it has arrived and get what a recording gives. Its first window
    starts at most about two symbols before the SFD (it may hold only the first part of the down-chirps:
    stage 4 places the boundary). When no pair is that strong, the strongest pair counts if it exceeds
    :data:`SFD_RATIO` (per-bin false alarm 1e-5), once every window the SFD can be in has been given.

    Parameters
    ----------
    windows : ndarray of complex64, shape (K, N), K >= 2
        Consecutive chip-rate windows from the candidate's last preamble windows on.
    refs : ChirpReferences
    final : bool
        Every window the SFD can be in is among ``windows`` (else a weak SFD is not found yet).

    Returns
    -------
    SfdPeak
        Its ``found`` is false when no pair stands out of the noise (``index`` and ``metric`` are then the
        strongest pair's).
    """
    z, n = ZERO_PAD, refs.n_chips
    sp = scipy.fft.fft(windows * refs.up_chip, n=z * n, axis=1)
    spec = sp.real**2 + sp.imag**2
    pair = spec[:-1] + spec[1:]
    energy = np.vecdot(windows, windows).real  # the mean of a window's zero-padded periodogram (Parseval)
    pair_mean = energy[:-1] + energy[1:]
    metric = np.divide(pair.max(axis=1), pair_mean, out=np.zeros_like(pair_mean), where=pair_mean > 0)
    strong = np.flatnonzero(metric >= sfd_first_ratio(n))
    i = int(strong[0]) if strong.size else int(np.argmax(metric))
    if not strong.size and not (final and metric[i] >= SFD_RATIO):
        return SfdPeak(i, math.nan, float(metric[i]), False)
    chosen = pair[i].astype(np.float64)
    return SfdPeak(i, _log_parabola(chosen, int(np.argmax(chosen))) / z, float(metric[i]), True)


def coarse_cfo_and_timing(k_up: float, k_down: float, n_chips: int) -> tuple[float, float]:
    """Stage 3: coarse CFO and symbol timing from the up-chirp peak ``cfo - timing`` and the SFD's ``cfo +
    timing`` (all in chip bins).

    Half their sum is the CFO, ambiguous by ``N/2``: it is taken within ``±N/4`` (±bw/4 in Hz).

    Returns
    -------
    cfo_bins : float
        In ``[-N/4, N/4)`` chip bins (bins of ``bw / N``).
    delta_chips : float
        The preamble symbols start at chips ``delta_chips + j*N``, in ``[0, N)``.
    """
    n = n_chips
    mid = 0.5 * (k_up + k_down)
    cfo_b = (mid + n / 4) % (n / 2) - n / 4
    return cfo_b, (cfo_b - k_up) % n


def sfd_boundary(chips: Source, delta_chips: float, w_sfd: int, cfo_bins: float, refs: ChirpReferences, *,
                 min_power: float, arrived: int | None = None) -> float | None:
    """Stage 4: chip index of the SFD's first down-chirp, among the symbol boundaries ``delta_chips + j*N``
    around window ``w_sfd``.

    The boundaries ``p0 - N`` .. ``p0 + 2N`` (``p0`` the last at or before window ``w_sfd``'s start: the SFD
    starts at ``p0``, ``p0 + N`` or ``p0 + 2N`` when :func:`find_sfd`'s pair holds part of it) are weighed by
    the down-chirp power of the aligned window after each and the next. The first boundary whose two windows
    both hold a down-chirp (each at least ``min_power`` and half the other's) is the SFD's: it is settled by
    the samples up to its second down-chirp's end, a quarter symbol before the SFD ends, and later windows do
    not change it. When none qualifies, the boundary whose two windows hold the most is taken, once every
    window has arrived.

    Parameters
    ----------
    chips : Source
        Chip-rate samples.
    delta_chips : float
        Symbol boundary phase from :func:`coarse_cfo_and_timing`.
    w_sfd : int
        Chip-rate window (absolute, of N chips) where :func:`find_sfd`'s pair starts.
    cfo_bins : float
        Coarse CFO in chip bins.
    refs : ChirpReferences
    min_power : float
        Least power of a down-chirp window on :func:`upchirp_peak`'s scale, > 0 (a full down-chirp holds about
        an up-chirp's ``power``; the sync word's up-chirps, the SFD's last quarter and noise hold far less: a
        quarter of ``power`` tells them apart).
    arrived : int, optional
        One past the last chip that has arrived (None: every window read has).

    Returns
    -------
    float or None
        None when the windows that have arrived do not settle it.
    """
    n, n_win = refs.n_chips, 5
    p0 = delta_chips + math.floor((w_sfd * n - delta_chips) / n) * n
    s = round(p0) - n
    k = n_win if arrived is None else min(n_win, (arrived - s) // n)
    if k < 2:
        return None
    ref_up = refs.up_chip * cis((-cfo_bins / n) * refs.n_float[:n])
    sp = (aligned_windows(chips, s + n * np.arange(k), n) * ref_up) @ refs.chip_edge_dtft  # bins 0, 1, -1
    pw = sp.real**2 + sp.imag**2
    e = (pw[:, 0] + np.maximum(pw[:, 1], pw[:, 2])).tolist()
    for j in range(k - 1):
        lo, hi = min(e[j], e[j + 1]), max(e[j], e[j + 1])
        if lo >= min_power and lo >= 0.5 * hi:
            return float(p0 + n * (j - 1))
    if k < n_win:
        return None
    pairs = [e[j] + e[j + 1] for j in range(n_win - 1)]
    return float(p0 + n * (pairs.index(max(pairs)) - 1))


# -- stage 5: alignment at the full rate --------------------------------------------------------------------
def align_upchirps(local: tuple[npt.NDArray[np.complex64], int], x_sync: float, cfo_bins: float,
                   refs: ChirpReferences) -> tuple[float, float]:
    """Stage 5a: the sync word's position to the sample and the CFO left after ``cfo_bins``.

    At the chip rate a fractional-chip offset breaks the dechirped tone (up to half its energy is lost), so
    the last :data:`K_ALIGNED` up-chirps before ``x_sync`` are cut at the full rate: the residual CFO is the
    phase progression across them (eq. 13), the timing error the tone left in their CFO-free average. The
    windows are recut (up to 3 times) while that error exceeds half a chip.

    Parameters
    ----------
    local : (ndarray of complex64, int)
        Full-rate samples and the index of the first; its index is the phase origin of ``cfo_bins``.
    x_sync : float
        First estimate of the sync word's first sample (absolute, full rate).
    cfo_bins : float
        Coarse CFO in bins of ``fs / L`` (= chip bins).
    refs : ChirpReferences

    Returns
    -------
    x_sync : float
        Sync word's first sample; still ambiguous by one chip with the CFO by one bin
        (:func:`settle_bin_ambiguity`).
    r_bins : float
        CFO left after ``cfo_bins``, ``|r_bins| < 1/2``.
    """
    big_l, osr = refs.n_samples, refs.osr
    a = local[1]
    k_al = np.arange(K_ALIGNED, dtype=np.float64)
    for _ in range(3):  # re-cut the windows while they were off by more than half a chip
        s_up = int(round(x_sync))
        e = (s_up - x_sync) / osr  # the aligned windows start e chips after the symbol boundaries
        starts = s_up - big_l * np.arange(K_ALIGNED, 0, -1)  # chronological
        win = aligned_windows(local, starts, big_l)
        amp = _amps(win, starts - a, refs.down_full, e, cfo_bins, refs)
        r_b = _pair_freq(amp)  # CFO left after removing cfo_bins, in bins (|.| < 1/2)
        # mean of the windows with cfo_bins (phase zero at ``a``) and r_b (phase zero at starts[0]) removed
        c = np.exp(-2j * np.pi * ((cfo_bins * (starts - a) / big_l + r_b * k_al) % 1.0)).astype(np.complex64)
        avg = (c @ win) * _chirp_tone(refs.down_full, (cfo_bins + r_b) / big_l, refs) / np.float32(K_ALIGNED)
        f = tone_bins(avg, refs)
        x_sync = s_up - f * osr
        if abs(f) <= 0.5:  # a glitch of under half a chip in 2**sf does not bias the estimate
            break
    return x_sync, r_b


class SettledSync(NamedTuple):
    """Stage 5b's result: the hypothesis the SFD chose."""

    x_sync: float  # sync word's first sample (absolute, full rate)
    r_bins: float  # CFO left after the coarse one, bins of ``fs / L``
    sfd_power: float  # mean dechirped power of the two SFD down-chirps there (scale of PreambleCount.power)


def settle_bin_ambiguity(local: tuple[npt.NDArray[np.complex64], int], x_sync: float, r_bins: float,
                         cfo_bins: float, refs: ChirpReferences) -> SettledSync:
    """Stage 5b: the up-chirps cannot tell a CFO one bin off from a timing one chip off: the SFD decides.

    For each hypothesis ``m`` in (-1, 0, 1) (timing ``m`` chips later, CFO ``m`` bins higher) the two SFD
    down-chirp windows are dechirped at the tone that hypothesis predicts; the one with the most energy wins.

    Returns
    -------
    SettledSync
        ``x_sync + m * osr``, ``r_bins + m`` and the SFD's power at them (for :func:`sfd_is_weak`).
    """
    big_l, osr = refs.n_samples, refs.osr
    # hypothesis m reads the windows from s0 + 2L + m*osr at tone0 + m: one contiguous span holds all six
    # windows, and the tones differ by whole bins (the rows of ``step_dtft`` for m = -1, 0, 1)
    s0 = round(x_sync)
    tone0 = r_bins - (s0 - x_sync) / osr
    first = s0 + 2 * big_l - osr
    span = aligned_windows(local, np.array([first]), 2 * big_l + 2 * osr)[0]
    step = span.strides[0]
    win = np.lib.stride_tricks.as_strided(span, shape=(3, 2, big_l), strides=(osr * step, big_l * step, step),
                                          writeable=False)
    ref = (refs.up_full * cis((-(tone0 + cfo_bins) / big_l) * refs.n_float)) * refs.step_dtft
    amp_d = np.matmul(win, ref[:, :, None])[..., 0]  # (3, 2): hypothesis m at its own tone; powers only
    power = np.vecdot(amp_d, amp_d).real.astype(np.float64)  # (3,): the two windows' powers summed
    i = int(np.argmax(power))
    return SettledSync(x_sync + (i - 1) * osr, r_bins + (i - 1), float(power[i]) / 2)


# -- stage 6: the preamble's length -------------------------------------------------------------------------
class PreambleCount(NamedTuple):
    """Stage 6's result: the aligned windows back from the sync word, most recent first."""

    n_symbols: int  # up-chirps counted (the change point of ``flags``)
    amp: npt.NDArray[np.complex128]  # (K,) dechirped amplitude of each window at the exact tone
    power: list[float]  # |amp|**2
    energy: list[float]  # window energy (noise-only expectation of |amp|**2)
    flags: list[bool]  # each window taken for an up-chirp
    e_ref: float  # median power of the 4 windows next to the sync word
    score_max: int  # highest score of the change point
    score_last: int  # score after the last (oldest) window: near score_max when the history ends in preamble


def count_preamble(local: tuple[npt.NDArray[np.complex64], int], s_up: int, tone: float, cfo_bins: float,
                   refs: ChirpReferences) -> PreambleCount | None:
    """Stage 6: count the preamble up-chirps back from the sync word at ``s_up``.

    Every whole symbol window back to the start of ``local`` is dechirped at the exact tone; a window is an
    up-chirp when its power reaches :data:`RHO` times the preamble's and :data:`KAPPA` times its own energy
    (the noise-only expectation); the count is the change point of that sequence (:func:`change_point`).

    Parameters
    ----------
    local : (ndarray of complex64, int)
    s_up : int
        Sync word's first sample (absolute).
    tone : float
        Tone of the aligned windows, in bins (``r_bins + e``: residual CFO plus the sub-sample timing).
    cfo_bins : float
        Coarse CFO (phase origin at ``local``'s first sample), in bins.
    refs : ChirpReferences

    Returns
    -------
    PreambleCount or None
        None when ``local`` holds fewer than :data:`MIN_PREAMBLE` symbols before ``s_up``.
    """
    big_l = refs.n_samples
    n_hist = int((s_up - local[1]) // big_l)
    if n_hist < MIN_PREAMBLE:
        return None
    starts = s_up - big_l * np.arange(1, n_hist + 1)
    amp, energy = symbol_amplitudes(local, starts, tone, refs, cfo_bins=cfo_bins)
    power = (np.abs(amp) ** 2).tolist()  # a few dozen values: plain Python from here on
    energy_l = energy.tolist()
    e_ref = float(statistics.median(power[:4]))
    ok = [p >= RHO * e_ref and p >= KAPPA * en for p, en in zip(power, energy_l, strict=True)]
    n_pre, score_max, score_last = change_point(ok)
    return PreambleCount(n_pre, amp, power, energy_l, ok, e_ref, score_max, score_last)


def count_from_head(head: npt.NDArray[np.complex64], head_start: int, x_sync: float, cfo_hz: float,
                    fs_hz: float, refs: ChirpReferences) -> int | None:
    """Stage 6, long preambles: the up-chirps before the sync word at ``x_sync`` when the preamble's start has
    left the history, from a snapshot of its beginning.

    The head gets its own symbol timing (the sample clock may drift over a long preamble): the tone of its
    last 3 CFO-free symbols dechirped gives a symbol boundary, then the up-chirp flags (as in
    :func:`count_preamble`) back from the head's end give its first up-chirp.

    Parameters
    ----------
    head : ndarray of complex64, shape (n,)
        Full-rate samples from ``head_start`` on, holding the preamble's first up-chirp and at least 3 more.
    head_start : int
        Absolute index of ``head[0]``.
    x_sync : float
        Sync word's first sample (absolute).
    cfo_hz, fs_hz : float
        The CFO to remove and the sample rate, in Hz.
    refs : ChirpReferences

    Returns
    -------
    n_symbols : int or None
        Up-chirps from the first one to the sync word; None when the head holds no up-chirp.
    """
    big_l, osr = refs.n_samples, refs.osr
    off = head_start
    h = head * cfo_rotation(cfo_hz, fs_hz, head.size, refs)
    tail = h[-3 * big_l :].reshape(3, big_l).mean(axis=0) * refs.down_full  # tone at (start - boundary) / osr
    spec = np.abs(np.fft.fft(tail)) ** 2
    k0 = int(np.argmax(spec))
    k0 = k0 - big_l if k0 > big_l // 2 else k0
    f = k0 + tone_bins(tail * np.exp(-2j * np.pi * k0 * refs.n_float / big_l).astype(np.complex64), refs)
    x_head = off + head.size - 3 * big_l - f * osr  # a symbol boundary in the head
    p_last = x_head + math.floor((off + head.size - big_l - x_head) / big_l) * big_l
    s_last = int(round(p_last))
    n_win = (s_last - off) // big_l + 1
    starts = s_last - big_l * np.arange(n_win)
    amp, energy = symbol_amplitudes((h, off), starts, (s_last - p_last) / osr, refs)
    power = np.abs(amp) ** 2
    e_ref = float(statistics.median(power[:3].tolist()))
    ok = (power >= RHO * e_ref) & (power >= KAPPA * energy)
    n_first, _, _ = change_point(ok.tolist())
    if n_first == 0:
        return None
    p_first = p_last - (n_first - 1) * big_l
    return int(round((x_sync - p_first) / big_l))


def sfd_is_weak(sfd_power: float, e_ref: float) -> bool:
    """Stage 6, check: the two aligned SFD down-chirps (``sfd_power``, from :func:`settle_bin_ambiguity`) hold
    less than :data:`RHO` times the preamble's power ``e_ref`` (from :func:`count_preamble`)."""
    return sfd_power < RHO * e_ref


# -- stage 7: fine CFO and timing ---------------------------------------------------------------------------
def fine_cfo(count: PreambleCount, r_bins: float, *, long_preamble: bool) -> tuple[float, int]:
    """Stage 7a/7b: the CFO left after the coarse one, from the phase progression across preamble symbols, and
    the preamble counted again coherently.

    With the CFO known every preamble symbol has the same complex amplitude: a window is an up-chirp when its
    projection on the mean amplitude exceeds :data:`PROJ_SPLIT` of it (or its power is beyond doubt); more
    symbols found refine the CFO in turn (up to 3 rounds, at most :data:`K_FINE` symbols). The estimate is
    eq. 13 over all consecutive pairs, then a least-squares line through the symbol phases (Shen et al. 2021).

    Parameters
    ----------
    count : PreambleCount
        Stage 6's windows (``count.n_symbols`` already replaced by the long-preamble count if any).
    r_bins : float
        Residual CFO from stage 5 (bins), removed before the pairs are formed.
    long_preamble : bool
        The preamble runs past the history: its windows are all up-chirps, no recount.

    Returns
    -------
    r_bins : float
        Residual CFO after the coarse one, bins of ``fs / L``.
    n_symbols : int
        The coherent count (``count.n_symbols`` for a long preamble).
    """
    amp, n_pre = count.amp, count.n_symbols
    n_hist = amp.size
    r_b = r_bins
    e_ref = count.e_ref
    k_f = min(max(n_pre - 1, K_ALIGNED), K_FINE, n_hist)
    chrono = amp[::-1] * np.exp(-2j * np.pi * r_b * np.arange(n_hist))  # r_b's progression removed
    sure = [p >= RHO * e_ref and p >= KAPPA_SURE * en
            for p, en in zip(count.power, count.energy, strict=True)]
    for _ in range(3):
        r_fine = r_b + _pair_freq(chrono[n_hist - k_f :])
        if long_preamble:
            break
        y = amp * np.exp(2j * np.pi * r_fine * np.arange(1, n_hist + 1))
        ref = y[:k_f].mean()
        proj = ((y * np.conj(ref)).real / max(abs(ref), 1e-300)).tolist()
        split = PROJ_SPLIT * abs(ref)
        n_pre = change_point([pj > split or su for pj, su in zip(proj, sure, strict=True)])[0]
        k_new = min(max(n_pre - 1, K_ALIGNED), K_FINE, n_hist)
        if k_new <= k_f:
            break
        k_f = k_new
    resid = _phase_slope_row(chrono[n_hist - k_f :])  # pairs, then the LS line
    return r_b + ((resid + 0.5) % 1.0 - 0.5), n_pre


def cfo_free_downchirp(cfo_bins: float, refs: ChirpReferences) -> npt.NDArray[np.complex64]:
    """The down-chirp reference that also removes a CFO of ``cfo_bins`` (bins of ``fs / L``): shape (L,)."""
    return _chirp_tone(refs.down_full, cfo_bins / refs.n_samples, refs)


def fine_timing(local: tuple[npt.NDArray[np.complex64], int], x_sync: float, cfo_bins: float, k_t: int,
                down_comp: npt.NDArray[np.complex64], refs: ChirpReferences) -> float:
    """Stage 7c: the sync word's position to a fraction of a sample.

    The last ``k_t`` preamble symbols are averaged with the whole CFO removed (phase continuous from
    ``local``'s first sample); the residual tone of their dechirped average (1/8-bin grid, parabolic peak) is
    the timing error in chips.

    Parameters
    ----------
    local : (ndarray of complex64, int)
    x_sync : float
        Sync word's first sample, to about a sample (absolute).
    cfo_bins : float
        The whole CFO, bins of ``fs / L``.
    k_t : int
        Symbols averaged (at least 1).
    down_comp : ndarray of complex64, shape (L,)
        ``cfo_free_downchirp(cfo_bins, refs)``.
    refs : ChirpReferences
    """
    big_l, osr = refs.n_samples, refs.osr
    x_sync0 = int(round(x_sync / osr * osr))
    starts = x_sync0 - big_l * np.arange(k_t, 0, -1)
    win = aligned_windows(local, starts, big_l)
    c = np.exp(-2j * np.pi * ((cfo_bins * (starts - local[1]) / big_l) % 1.0)).astype(np.complex64)
    return x_sync0 - tone_bins((c @ win) * down_comp / np.float32(k_t), refs) * osr


# -- stage 8: outputs ---------------------------------------------------------------------------------------
def estimate_snr_db(d: npt.NDArray[np.complex64], refs: ChirpReferences) -> float:
    """In-band SNR from aligned, dechirped, CFO-free preamble symbols (K, L): peak over the noise bins, in dB.

    A symbol of amplitude ``A`` gives ``(A L)**2`` in bin 0; white noise of variance ``s2`` per sample
    gives ``L s2`` per bin, so ``peak / noise / N = A**2 / (s2 / osr)``: the SNR in the LoRa band. Only
    bins 0, ±1 and ±2 are computed (a DTFT); the noise bins are the rest of the energy (Parseval). Clipped to
    [-50, 150] dB.
    """
    big_l, n = refs.n_samples, refs.n_chips
    edge = d @ refs.edge_dtft
    p = (edge.real.astype(np.float64) ** 2 + edge.imag.astype(np.float64) ** 2).mean(axis=0)
    total = big_l * float(np.vdot(d, d).real) / d.shape[0]  # sum of the periodogram over all L bins
    noise = max(total - float(p.sum()), 0.0) / (big_l - 5)  # mean over bins 3 .. L-3
    signal = float(p[0] + p[1] + p[2]) - 3 * noise
    if noise <= 0:
        return 150.0
    snr = signal / (noise * n)
    return float(np.clip(10 * math.log10(max(snr, 1e-5)), -50.0, 150.0))


def read_sync_word(d: npt.NDArray[np.complex64], refs: ChirpReferences) -> int:
    """Sync word from the two aligned, dechirped, CFO-free symbols after the preamble, shape (2, L)."""
    spec = scipy.fft.fft(d, axis=1)
    folded = (spec.real**2 + spec.imag**2).reshape(2, refs.osr, refs.n_chips).sum(axis=1)
    s1, s2 = (int(v) for v in np.argmax(folded, axis=1))
    return sync_word_from_symbols(s1, s2)


def cfo_rotation(cfo_hz: float, fs_hz: float, n: int, refs: ChirpReferences) -> npt.NDArray[np.complex64]:
    """``exp(-2j*pi*cfo_hz*k/fs_hz)`` for ``k < n``: shape (n,) complex64 (one symbol of phases times a
    per-symbol step)."""
    big_l = refs.n_samples
    step = cfo_hz / fs_hz
    k_sym = -(-n // big_l)
    one = cis((-step) * refs.n_float)
    if k_sym == 1:
        return one[:n]
    per = cis((-step * big_l) * np.arange(k_sym, dtype=np.float64))
    return (per[:, None] * one[None, :]).ravel()[:n]


def compensated_window(window: npt.NDArray[np.complex64], cfo_hz: float, fs_hz: float,
                       refs: ChirpReferences) -> npt.NDArray[np.complex64]:
    """The fingerprint window (n,) with its CFO removed, phase zero at its first sample: a new array."""
    return window * cfo_rotation(cfo_hz, fs_hz, window.size, refs)
