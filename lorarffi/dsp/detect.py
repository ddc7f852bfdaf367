"""LoRa packet detection on a sample stream: preamble search, SFD alignment, CFO and the fingerprint window.

:class:`StreamDetector` takes chunks of any size and returns :class:`~lorarffi.dsp.packet.Packet` objects with
absolute sample positions; :func:`detect` is the one-shot form. The result does not depend on the chunk
sizes: all work is done on blocks whose boundaries are fixed in absolute sample positions, and each packet is
resolved from a span of samples fixed by its own position.

How it works (paper_notes §3 leaves the synchroniser to us; this is our design)

1. **Internal rate.** Input at a rate that is not an integer multiple of the bandwidth is resampled
   (polyphase, as ``scipy.signal.resample_poly``) to ``cfg.integer_oversampling()``: ``osr`` samples per chip.
2. **Search, at the chip rate.** Each run of ``osr`` samples is summed (a boxcar: near-optimal decimation
   for white noise) and the chip-rate stream is cut into windows of ``2**sf`` chips on a fixed grid. Each
   window is dechirped and transformed; a preamble gives a peak at bin ``cfo - timing`` in every window. The
   periodograms of the last 4 windows are summed and a window passes when the best pair of adjacent bins
   exceeds 5.1 times its share of the mean (false-alarm probability 1e-10 per bin in noise) and at least 3
   of the 4 windows have a strong bin there (a payload symbol straddles at most 2). At least 4 passing
   windows with the same bin (within 2) make a candidate.
3. **SFD and the timing/CFO ambiguity.** Around the end of the candidate the windows are dechirped with the
   up-chirp: the start-of-frame delimiter (2.25 down-chirps) peaks at ``cfo + timing``. Half the sum of the
   two peaks is the coarse CFO (taken within ``+-bw/4``: +-31 kHz at 125 kHz), half the difference the
   timing; of the candidate SFD boundaries the one with the most aligned down-chirp energy wins.
4. **Alignment at the full rate**, on a local copy with the coarse CFO removed: the residual CFO from the
   phase progression of the last 4 aligned up-chirps, the timing from the tone left in their average
   (recut until within half a sample); the SFD then settles the one-bin/one-chip ambiguity of up-chirps.
5. **Preamble.** Aligned up-chirp windows back from the sync word are tested at the exact tone (energy,
   then coherently once the CFO is known); the start is the change point of that sequence. Any length works;
   a preamble longer than the history is counted through a snapshot of the candidate's head.
6. **Fine CFO** (Shen et al. 2021, eq. 13 over all pairs of consecutive symbols, then a least-squares line
   through the symbol phases) over up to 64 preamble symbols.
7. **Fine timing**: the CFO-free aligned symbols are averaged and the residual tone frequency (1/8-bin grid,
   parabolic peak) is the timing error in chips; ``start`` is then within a fraction of a sample.
8. **Outputs**: sync word from the two symbols after the preamble, in-band SNR from the dechirped
   periodogram, and the fingerprint window cut at the sample, CFO-compensated and RMS-normalised.

Cost (issue 2: >= 100x real time on one core). The search is one batched FFT per block. Each candidate costs
about a millisecond at SF7 / 1 MS/s: everything stays complex64; the full-rate copy of a candidate is never
rotated, its CFO rides on the one-symbol references (``_amps``) and a phase per window; phasors come from
float32 cos/sin of phases reduced in float64 (``_cis``); only the fine bins near the cluster's peak of the
zero-padded up-chirp spectrum are computed (a DTFT), and the SNR's noise floor comes from Parseval.
"""

from __future__ import annotations

import cmath
import logging
import math
import statistics
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import scipy.fft

from lorarffi.dsp.chirp import sync_word_from_symbols, upchirp
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.packet import Packet
from lorarffi.dsp.resample import StreamResampler
from lorarffi.dsp.sample_store import SampleStore
from lorarffi.errors import ConfigError, InputDataError

__all__ = ["StreamDetector", "detect"]

log = logging.getLogger(__name__)

# -- search -------------------------------------------------------------------------------------------------
_J = 4  # windows summed non-coherently
# scipy.stats.gamma.isf(1e-10, 2 * _J) / (2 * _J) = 5.08: per-bin false-alarm probability 1e-10
_SEARCH_RATIO = 5.1
_BIN_HIT = 6.0  # a window supports a bin when its pair power there exceeds 6x its mean bin power
_MIN_SUPPORT = 3  # windows (of _J) that must support the peak bin (a payload symbol spans at most 2)
_GAP = 2  # windows a cluster may skip
_MIN_PASSES = 4  # passing windows that make a cluster a candidate (a 6-symbol preamble gives 5)
_BIN_TOL = 2  # chip bins (circular) between consecutive windows of a cluster
_BLOCK_SAMPLES = 1 << 16  # default internal-rate samples per processing block (rounded to whole windows)
# -- resolution ---------------------------------------------------------------------------------------------
_Z = 4  # zero-padding of the resolution spectra
_SFD_LOOKAHEAD = 8  # windows after the last cluster window searched for the SFD
_SFD_RATIO = 7.4  # gamma.isf(1e-5, 2) / 2: peak over mean of two summed zero-padded window periodograms
_RHO = 0.3  # an aligned up-chirp (or SFD down-chirp) holds at least this share of the preamble's energy
_PROJ_SPLIT = 0.47  # coherent count: share of the preamble amplitude that splits up-chirp from noise
_KAPPA_SURE = 25.0  # noise alone exceeds this many times its expectation with probability 1e-11
_KAPPA = 8.0  # ... and at least this many times its window's noise-only expectation (Exp(1): P = 3e-4)
_MIN_PREAMBLE = 5  # up-chirps counted before the sync word
_K_FINE = 64  # preamble symbols (at most) for the fine CFO
_K_ALIGNED = 4  # preamble symbols for the aligned coarse re-estimate
_K_TIME = 16  # preamble symbols (at most) for the fine timing and the SNR
_HEAD_BEFORE = _J + 6  # windows before a cluster's first window kept in its head snapshot
_HEAD_AFTER = 4  # ... and from its first window on
# chip-rate windows of history besides one block (the search and the SFD search read it)
_HISTORY_WINDOWS = 200
_TIME_GRID = np.arange(-12, 13) / 8.0  # bins searched by the fine timing (then a parabola through 3 points)


@dataclass
class _Cluster:
    w0: int  # first passing window
    wlast: int  # last passing window
    bin: int  # chip bin of the last passing window
    n_pass: int
    head: npt.NDArray[np.complex64] | None = None  # chips from window w0 - _HEAD_BEFORE on


def _circ_dist(a: npt.ArrayLike, b: npt.ArrayLike, n: float) -> npt.NDArray[np.float64]:
    d = np.mod(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), n)
    return np.minimum(d, n - d)


def _pair_freq(amp: npt.NDArray[np.complexfloating]) -> float:
    """Eq. 13 over consecutive pairs: rotation per step of amplitudes ``amp`` (chronological), in cycles."""
    return float(-np.angle(np.vdot(amp[1:], amp[:-1])) / (2 * np.pi))


def _cis(cycles: npt.NDArray[np.float64]) -> npt.NDArray[np.complex64]:
    """``exp(2j*pi*cycles)`` as complex64: the phase reduced to one cycle in float64, then cos/sin in float32
    (as accurate as complex64 holds, and several times faster than a complex128 ``np.exp``)."""
    frac = cycles - np.floor(cycles)
    frac *= 2 * np.pi
    rad = frac.astype(np.float32)
    out = np.empty(rad.shape, dtype=np.complex64)
    np.cos(rad, out=out.real)
    np.sin(rad, out=out.imag)
    return out


def _phase_slope_row(amp: npt.NDArray[np.complex128]) -> float:
    """:func:`lorarffi.dsp.cfo._phase_slope` of one row of ``K >= 2`` amplitudes, in plain Python floats.

    The same arithmetic (eq. 13 over all pairs, unwrapped residual phases, least-squares slope); ``K`` is
    small (at most ``_K_FINE``), where numpy's cost per call would dominate.
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


def _change_point(flags: list[bool]) -> tuple[int, int, int]:
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


def _median(x: npt.NDArray[np.float64]) -> float:
    """``np.median`` of a few values (without its overhead)."""
    return float(statistics.median(x.tolist()))


def _log_parabola(power: npt.NDArray[np.float64], k: int) -> float:
    """Fractional peak position around index ``k`` of a (circular) oversampled spectrum."""
    n = power.size
    tiny = 1e-300
    pm, p0, pp = (math.log(float(power[(k + i) % n]) + tiny) for i in (-1, 0, 1))
    den = pm - 2 * p0 + pp
    if den >= 0:
        return float(k)
    return k + max(-0.5, min(0.5, 0.5 * (pm - pp) / den))


class StreamDetector:
    """Find LoRa packets in a stream of IQ samples given in chunks of any size.

    Parameters
    ----------
    cfg : LoRaConfig
        Spreading factor, bandwidth, input sample rate ``fs_hz`` and the fingerprint length
        ``preamble_symbols``. The sync word seen is reported whatever ``cfg.sync_word`` says.
    block_samples : int
        Samples (at the internal integer-oversampled rate, rounded down to whole symbols, at least one) per
        processing block. Packets are emitted when the block holding their SFD completes, so a block bounds
        the added latency (65536 samples: 66 ms at 1 MS/s); larger blocks cost a little less CPU per sample.

    Attributes
    ----------
    n_samples : int
        Input samples received.
    n_nonfinite : int
        Input samples that were NaN or infinite: counted and replaced by zeros (positions stay honest).
    n_packets : int
        Packets returned so far.
    n_candidates : int
        Preamble candidates examined (passed the search); ``n_candidates - n_packets`` were rejected.

    Examples
    --------
    >>> from lorarffi.dsp.chirp import packet_waveform
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> iq = np.concatenate([np.zeros(5000, np.complex64), packet_waveform(cfg, [3, 1, 4], cfo_hz=2e3),
    ...                      np.zeros(5000, np.complex64)])
    >>> det = StreamDetector(cfg)
    >>> found = [p for chunk in np.array_split(iq, 7) for p in det.process(chunk)] + det.flush()
    >>> [(p.start, round(p.cfo_hz), hex(p.sync_word), p.n_preamble_symbols) for p in found]
    [(5000, 2000, '0x12', 8)]
    """

    def __init__(self, cfg: LoRaConfig, *, block_samples: int = _BLOCK_SAMPLES) -> None:
        if not isinstance(block_samples, int) or block_samples < 1:
            raise ConfigError(f"block_samples={block_samples!r} is not valid: use a positive integer")
        self.cfg = cfg
        self._block_samples = block_samples
        self.internal_cfg = cfg.integer_oversampling()
        self._osr = int(round(self.internal_cfg.oversampling))
        self._N = cfg.n_chips
        self._L = self._N * self._osr
        self._fs_in = cfg.fs_hz
        if cfg.is_integer_oversampling:
            self._resampler = None
            self._fs_int = cfg.fs_hz
        else:
            ratio = (Fraction(self.internal_cfg.fs_hz) / Fraction(cfg.fs_hz)).limit_denominator(1000)
            self._fs_int = cfg.fs_hz * ratio.numerator / ratio.denominator
            self._resampler = StreamResampler(ratio.numerator, ratio.denominator, block_samples)
        self._block_w = max(1, block_samples // self._L)
        self._block_len = self._block_w * self._L
        up = upchirp(self.internal_cfg)
        self._up_full = up
        self._down_full = np.conj(up)
        dec = up.reshape(self._N, self._osr).sum(axis=1)
        self._up_chip = np.exp(1j * np.angle(dec)).astype(np.complex64)
        self._down_chip = np.conj(self._up_chip)
        self._ones = np.ones(self._osr, dtype=np.complex64)
        self._time_dtft: npt.NDArray[np.complex64] | None = None
        self._edge_dtft: npt.NDArray[np.complex64] | None = None
        self._fine_dtft: npt.NDArray[np.complex64] | None = None
        self._n_float = np.arange(self._L, dtype=np.float64)
        n_keep = max(cfg.preamble_symbols, _K_FINE) + _J + _HEAD_BEFORE + _SFD_LOOKAHEAD + 16
        self._keep_full = self._block_len + n_keep * self._L
        self._keep_chip = (self._block_w + _HISTORY_WINDOWS) * self._N
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next sample given is sample 0 of a new stream."""
        self.n_samples = 0
        self.n_nonfinite = 0
        self.n_packets = 0
        self.n_candidates = 0
        if self._resampler is not None:
            self._resampler = StreamResampler(self._resampler.up, self._resampler.down, self._block_samples)
        self._full = SampleStore()
        self._chips = SampleStore()
        self._pending: list[list] = []  # [array, owned] waiting to fill a block
        self._pending_off = 0
        self._n_pending = 0
        self._tail_p2 = np.zeros((_J - 1, self._N), dtype=np.float32)
        self._tail_m = np.zeros(_J - 1, dtype=np.float32)
        self._n_win = 0
        self._cluster: _Cluster | None = None
        self._candidates: list[_Cluster] = []
        self._last_sfd = -math.inf
        self._flushed = False

    # -- public ---------------------------------------------------------------------------------------------
    def process(self, chunk: npt.ArrayLike) -> list[Packet]:
        """Feed the next samples; returns the packets whose SFD became visible, in order of start.

        Parameters
        ----------
        chunk : array_like of complex, shape (n,)
            The next ``n`` samples at ``cfg.fs_hz`` (any ``n``, zero included). Not modified.
        """
        if self._flushed:
            raise RuntimeError("StreamDetector.process() after flush(): call reset() to start a new stream")
        x = np.asarray(chunk)
        if x.ndim != 1:
            raise InputDataError("iq chunk", f"expected a 1-D array of complex samples, got shape {x.shape}")
        owned = x.dtype != np.complex64
        x = x.astype(np.complex64, copy=False)
        self.n_samples += x.size
        if self._resampler is not None:
            bad = ~np.isfinite(x)
            if bad.any():
                self.n_nonfinite += int(np.count_nonzero(bad))
                x = np.where(bad, np.complex64(0), x)
            for block in self._resampler.process(x):
                self._push(block, owned=True)
        elif x.size:
            self._push(x, owned=owned)
        return self._drain()

    def flush(self) -> list[Packet]:
        """End of stream: finish the packets still in progress (the stream is taken as zero past its end)."""
        if self._flushed:
            return []
        if self._resampler is not None:
            for block in self._resampler.flush():
                self._push(block, owned=True)
        out = self._drain()
        if self._n_pending:
            self._push(np.zeros(self._block_len - self._n_pending, dtype=np.complex64), owned=True)
            out += self._drain()
        while self._cluster is not None or self._candidates:
            self._push(np.zeros(self._block_len, dtype=np.complex64), owned=True)
            out += self._drain()
        self._flushed = True
        return out

    # -- blocks ---------------------------------------------------------------------------------------------
    def _push(self, x: npt.NDArray[np.complex64], *, owned: bool) -> None:
        self._pending.append([x, owned])
        self._n_pending += x.size

    def _take(self, n: int) -> tuple[npt.NDArray[np.complex64], bool]:
        first, owned = self._pending[0]
        if first.size - self._pending_off >= n:
            out = first[self._pending_off : self._pending_off + n]
            self._pending_off += n
            if self._pending_off == first.size:
                self._pending.pop(0)
                self._pending_off = 0
            self._n_pending -= n
            return out, owned
        parts, need = [], n
        while need:
            arr, _ = self._pending[0]
            piece = arr[self._pending_off : self._pending_off + need]
            parts.append(piece)
            need -= piece.size
            self._pending_off += piece.size
            if self._pending_off == arr.size:
                self._pending.pop(0)
                self._pending_off = 0
        self._n_pending -= n
        return np.concatenate(parts), True

    def _drain(self) -> list[Packet]:
        out: list[Packet] = []
        while self._n_pending >= self._block_len:
            block, owned = self._take(self._block_len)
            out += self._process_block(block, owned)
        # never keep views of caller memory past this call
        for i, item in enumerate(self._pending):
            if not item[1]:
                if i == 0 and self._pending_off:
                    item[0] = item[0][self._pending_off :]
                    self._pending_off = 0
                item[0], item[1] = item[0].copy(), True
        # keep (and copy out of caller memory) only what a packet in progress, or one starting now, can need
        L = self._L
        reach = max(_HEAD_BEFORE, self.cfg.preamble_symbols + _J + 4) + 1
        need = [(self._n_win - reach) * L]
        need += [self._need_from(c) for c in self._candidates]
        if self._cluster is not None:
            need.append(self._need_from(self._cluster))
        keep_from = max(min(need), self._full.end - self._keep_full)
        self._full.trim(keep_from)
        self._full.own(keep_from)
        self._chips.trim(self._chips.end - self._keep_chip)
        return out

    def _process_block(self, x: npt.NDArray[np.complex64], owned: bool) -> list[Packet]:
        N, B = self._N, self._block_w
        with np.errstate(invalid="ignore", over="ignore"):
            chips = x.reshape(-1, self._osr) @ self._ones if self._osr > 1 else x.copy()
            finite = np.isfinite(chips.sum())  # cheap test first: a NaN/inf sample makes the sum non-finite
        if not finite:
            bad = ~np.isfinite(x)
            self.n_nonfinite += int(np.count_nonzero(bad))
            if bad.any():
                x = np.where(bad, np.complex64(0), x)
                owned = True
                chips = x.reshape(-1, self._osr) @ self._ones if self._osr > 1 else x.copy()
            chips[~np.isfinite(chips)] = 0  # finite samples so large that their sum overflows
        self._full.append(x, owned=owned)
        self._chips.append(chips, owned=True)

        a = np.abs(scipy.fft.fft(chips.reshape(B, N) * self._down_chip, axis=1))
        p = a * a  # (B, N) float32 periodograms
        p2 = np.empty_like(p)  # power of bin pairs (k, k+1)
        np.add(p[:, :-1], p[:, 1:], out=p2[:, :-1])
        np.add(p[:, -1], p[:, 0], out=p2[:, -1])
        m = p.mean(axis=1)
        ext2 = np.concatenate([self._tail_p2, p2])
        extm = np.concatenate([self._tail_m, m])
        s2 = ext2[_J - 1 :].copy()
        ms = extm[_J - 1 :].copy()
        for i in range(1, _J):
            s2 += ext2[_J - 1 - i : _J - 1 - i + B]
            ms += extm[_J - 1 - i : _J - 1 - i + B]
        self._tail_p2 = ext2[-(_J - 1) :].copy()
        self._tail_m = extm[-(_J - 1) :].copy()
        peak = s2.max(axis=1)
        idx = np.flatnonzero((peak >= _SEARCH_RATIO * 2 * ms) & (ms > 0))
        k = np.argmax(s2[idx], axis=1)
        if idx.size:
            support = np.zeros(idx.size, dtype=np.int64)
            for i in range(_J):
                rows = idx + _J - 1 - i
                support += ext2[rows, k] >= _BIN_HIT * extm[rows]
            keep = support >= _MIN_SUPPORT
            idx, k = idx[keep], k[keep]
        w0 = self._n_win
        self._n_win += B
        for w, b in zip(idx.tolist(), k.tolist(), strict=True):
            self._cluster_step(w0 + w, b)
        last = self._n_win - 1
        cl = self._cluster
        if cl is not None and last - cl.wlast > _GAP:
            self._close(cl)
            cl = self._cluster = None
        if cl is not None and cl.head is None and last >= cl.w0 + _HEAD_AFTER - 1:
            L = self._L
            cl.head = self._full.get((cl.w0 - _HEAD_BEFORE) * L, (cl.w0 + _HEAD_AFTER) * L)
        out = []
        while self._candidates and self._candidates[0].wlast + _SFD_LOOKAHEAD + 1 <= last:
            packet = self._resolve(self._candidates.pop(0))
            if packet is not None:
                out.append(packet)
        return out

    def _cluster_step(self, w: int, b: int) -> None:
        cl = self._cluster
        if cl is not None and w - cl.wlast <= _GAP + 1 and _circ_dist(b, cl.bin, self._N) <= _BIN_TOL:
            cl.wlast, cl.bin = w, b
            cl.n_pass += 1
            return
        if cl is not None:
            self._close(cl)
        self._cluster = _Cluster(w0=w, wlast=w, bin=b, n_pass=1)

    def _need_from(self, cl: _Cluster) -> int:
        """First full-rate sample the resolution of this cluster can read."""
        return min(cl.w0 - _HEAD_BEFORE, cl.wlast - self.cfg.preamble_symbols - _J - 4) * self._L

    def _close(self, cl: _Cluster) -> None:
        if cl.n_pass >= _MIN_PASSES:
            self._candidates.append(cl)

    # -- resolution of one candidate
    # --------------------------------------------------------------------------
    def _chip_windows(self, w_a: int, w_b: int) -> npt.NDArray[np.complex64]:
        return self._chips.get(w_a * self._N, w_b * self._N).reshape(-1, self._N)

    def _aligned(self, source, starts: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.complex64]:
        """Windows ``[s, s+n)`` for each start, from ``source`` (a SampleStore or (array, offset)).

        Zeros where the source holds nothing; a view when the windows are contiguous and held.
        """
        k = starts.size
        a, b = int(starts[0]), int(starts[-1]) + n
        contiguous = b - a == k * n and (k <= 2 or bool((starts[1:] - starts[:-1] == n).all()))
        if isinstance(source, SampleStore):
            seg = source.get(min(a, int(starts.min())), max(b, int(starts.max()) + n))
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

    def _resolve(self, cand: _Cluster) -> Packet | None:
        self.n_candidates += 1
        N, L, osr, Z = self._N, self._L, self._osr, _Z

        # 1. up-chirp peak (cfo - timing) from the cluster's strongest windows
        chips_from = self._chips.end - self._keep_chip  # fixed by the block, not by the chunking
        w_lo = max(cand.w0 - 1, cand.wlast - _J - 12, -(-chips_from // N))
        ws = cand.wlast - _J
        n_up = cand.wlast + 1 - w_lo
        win = self._chip_windows(w_lo, cand.wlast + _SFD_LOOKAHEAD + 1)
        # the Z-times zero-padded spectrum is needed only near the cluster's bin: a DTFT on those fine bins
        if self._fine_dtft is None:
            self._fine_dtft = _cis(np.outer(self._n_float[:N], -np.arange(Z * N) / (Z * N)))
        near = (cand.bin * Z + np.arange(-2 * Z - 1, 2 * Z + 2)) % (Z * N)  # and one more on either side
        sp = (win[:n_up] * self._down_chip) @ self._fine_dtft[:, near]
        spec = sp.real**2 + sp.imag**2
        e = spec[:, 1:-1].max(axis=1)
        avg = spec[e >= 0.5 * e.max()].mean(axis=0, dtype=np.float64)
        i = int(np.argmax(avg[1:-1])) + 1
        k_up = (int(near[i]) + _log_parabola(avg, i) - i) / Z

        # 2. SFD: down-chirp peak (cfo + timing), best pair of consecutive windows
        sp = scipy.fft.fft(win[ws - w_lo :] * self._up_chip, n=Z * N, axis=1)
        spec = sp.real**2 + sp.imag**2
        pair = spec[:-1] + spec[1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            pair_mean = pair.mean(axis=1)
            metric = np.where(pair_mean > 0, pair.max(axis=1) / pair_mean, 0.0)
        i_best = int(np.argmax(metric))
        if metric[i_best] < _SFD_RATIO:
            log.debug("candidate at window %d: no SFD (metric %.1f)", cand.w0, metric[i_best])
            return None
        best = pair[i_best].astype(np.float64)
        k_down = _log_parabola(best, int(np.argmax(best))) / Z

        # 3. coarse CFO and timing (chip units), the ambiguous half-period resolved towards |cfo| < N/4
        mid = 0.5 * (k_up + k_down)
        cfo_b = (mid + N / 4) % (N / 2) - N / 4
        delta = (cfo_b - k_up) % N  # preamble symbols start at chips delta + j*N

        # 4. SFD boundary: the aligned candidate with the most down-chirp energy
        w_sfd = ws + i_best
        p0 = delta + math.floor((w_sfd * N - delta) / N) * N
        bounds = p0 + N * np.arange(-1, 2)
        ref_up = self._up_chip * _cis((-cfo_b / N) * self._n_float[:N])
        starts = np.round(bounds[:, None] + np.array([0, N])).astype(np.int64).ravel()
        sp = scipy.fft.fft(self._aligned(self._chips, starts, N) * ref_up, axis=1)
        pw = sp.real**2 + sp.imag**2
        e_down = (pw[:, 0] + np.maximum(pw[:, 1], pw[:, -1])).reshape(3, 2)
        p_sfd = float(bounds[int(np.argmax(e_down.sum(axis=1)))])

        # 5. from here on, aligned windows at the full rate (at the chip rate a fractional-chip offset breaks
        #    the dechirped tone: up to half its energy is lost), on a local copy. The CFO is never removed
        #    from the copy: it is folded into each reference (one symbol long) and a phase per window.
        #    First the coarse CFO and timing again, from the last up-chirps and the SFD down-chirps.
        cfo0 = cfo_b
        bin_hz = self._fs_int / L
        first_needed = self._need_from(cand)
        held_from = self._full.end - self._keep_full  # fixed by the block, not by the chunking
        held_from = held_from if held_from > 0 else -math.inf  # before sample 0: known zeros
        truncated = first_needed < held_from
        a = first_needed if not truncated else int(held_from)
        b = int(math.ceil(p_sfd * osr)) + 3 * L
        local = (self._full.get(a, b), a)
        x_sync = (p_sfd - 2 * N) * osr
        n = self._n_float
        k_al = np.arange(_K_ALIGNED, dtype=np.float64)
        for _ in range(3):  # re-cut the windows while they were off by more than half a chip
            s_up = int(round(x_sync))
            s_down = s_up + 2 * L
            e = (s_up - x_sync) / osr  # the aligned windows start e chips after the symbol boundaries
            starts = s_up - L * np.arange(_K_ALIGNED, 0, -1)  # chronological
            win = self._aligned(local, starts, L)
            amp = self._amps(win, starts - a, self._down_full, e, cfo0)
            r_b = _pair_freq(amp)  # CFO left after removing cfo0, in bins (|.| < 1/2)
            # mean of the windows with cfo0 (phase zero at ``a``) and r_b (phase zero at starts[0]) removed
            c = np.exp(-2j * np.pi * ((cfo0 * (starts - a) / L + r_b * k_al) % 1.0)).astype(np.complex64)
            avg = (c @ win) * self._chirp_tone(self._down_full, (cfo0 + r_b) / L) / np.float32(_K_ALIGNED)
            f = self._tone_bins(avg)
            x_sync = s_up - f * osr
            if abs(f) <= 0.5:  # a glitch of under half a chip in 2**sf does not bias the estimate
                break
        # the up-chirps alone cannot tell a CFO one bin off from a timing one chip off: the SFD decides
        ms = np.arange(-1, 2)
        s_m = np.round(x_sync + ms * osr).astype(np.int64) + 2 * L
        tones = r_b + ms - (s_m - 2 * L - x_sync - ms * osr) / osr
        win = self._aligned(local, (s_m[:, None] + np.array([0, L])).ravel(), L)  # (6, L)
        refs = self._up_full[:, None] * _cis(np.outer(n, -(tones + cfo0) / L))  # powers only: no window phase
        amp_d = (win @ refs).reshape(3, 2, 3)[ms + 1, :, ms + 1]  # hypothesis m at its own tone
        m = int(np.argmax(np.sum(np.abs(amp_d) ** 2, axis=1))) - 1
        r_b += m
        x_sync += m * osr
        s_up = int(round(x_sync))
        s_down = s_up + 2 * L
        e = (s_up - x_sync) / osr

        # 6. count the preamble: aligned windows back from the sync word, each tested at the exact tone
        #    frequency; the start is the change point that best separates up-chirps from the rest
        n_hist = int((s_up - a) // L)
        if n_hist < _MIN_PREAMBLE:
            return None
        amp, energy = self._symbol_amplitudes(local, s_up - L * np.arange(1, n_hist + 1), r_b + e, cfo0)
        p0_ = (np.abs(amp) ** 2).tolist()  # a few dozen values: plain Python from here on
        energy = energy.tolist()
        e_ref = float(statistics.median(p0_[:4]))
        ok = [p >= _RHO * e_ref and p >= _KAPPA * en for p, en in zip(p0_, energy, strict=True)]
        n_pre, score_max, score_last = _change_point(ok)
        long_preamble = truncated and score_last >= score_max - 1 and all(ok[-3:])
        if long_preamble:
            n_pre = self._count_from_head(cand, x_sync, (cfo0 + r_b) * bin_hz)
            if n_pre is None:
                return None
        if n_pre < (_MIN_PREAMBLE if long_preamble else 3):
            log.debug("candidate at window %d: %d preamble symbols", cand.w0, n_pre)
            return None
        sfd_amp, _ = self._symbol_amplitudes(local, s_down + L * np.arange(2), r_b - e, cfo0,
                                             ref=self._up_full)
        if (np.abs(sfd_amp) ** 2).mean() < _RHO * e_ref:
            log.debug("candidate at window %d: weak SFD", cand.w0)
            return None

        # 7a. fine CFO: phase progression across the preamble symbols (eq. 13 over all pairs, then LS), and
        # 7b. the count again, coherently: with the CFO known, every preamble symbol has the same amplitude.
        #     More symbols found coherently refine the CFO in turn.
        k_f = min(max(n_pre - 1, _K_ALIGNED), _K_FINE, n_hist)
        chrono = amp[::-1] * np.exp(-2j * np.pi * r_b * np.arange(n_hist))  # r_b's progression removed
        sure = [p >= _RHO * e_ref and p >= _KAPPA_SURE * en for p, en in zip(p0_, energy, strict=True)]
        for _ in range(3):
            r_bins = r_b + _pair_freq(chrono[n_hist - k_f :])
            if long_preamble:
                break
            y = amp * np.exp(2j * np.pi * r_bins * np.arange(1, n_hist + 1))
            ref = y[:k_f].mean()
            proj = ((y * np.conj(ref)).real / max(abs(ref), 1e-300)).tolist()
            split = _PROJ_SPLIT * abs(ref)
            n_pre = _change_point([pj > split or su for pj, su in zip(proj, sure, strict=True)])[0]
            k_new = min(max(n_pre - 1, _K_ALIGNED), _K_FINE, n_hist)
            if k_new <= k_f:
                break
            k_f = k_new
        if n_pre < _MIN_PREAMBLE:
            log.debug("candidate at window %d: %d coherent preamble symbols", cand.w0, n_pre)
            return None
        resid = _phase_slope_row(chrono[n_hist - k_f :])  # pairs, then the LS line
        r_bins = r_b + ((resid + 0.5) % 1.0 - 0.5)
        cfo_hz = (cfo0 + r_bins) * bin_hz
        p_sync = x_sync / osr

        # 7c. fine timing at the full rate: residual tone of the averaged aligned symbols with the whole CFO
        #     removed (phase continuous from sample ``a``)
        total_b = cfo0 + r_bins
        down_comp = self._chirp_tone(self._down_full, total_b / L)  # dechirp and remove the CFO
        k_t = min(n_pre - 1, _K_TIME)
        x_sync0 = int(round(p_sync * osr))
        starts = x_sync0 - L * np.arange(k_t, 0, -1)
        win = self._aligned(local, starts, L)
        c = np.exp(-2j * np.pi * ((total_b * (starts - a) / L) % 1.0)).astype(np.complex64)
        x_sync = x_sync0 - self._tone_bins((c @ win) * down_comp / np.float32(k_t)) * osr

        # 8. outputs
        x_first = x_sync - n_pre * L
        x_fp = x_sync - self.cfg.preamble_symbols * L
        x_sfd = x_sync + 2 * L
        if abs(x_sfd - self._last_sfd) < L / 2:
            return None  # the same packet seen through a second cluster
        self._last_sfd = x_sfd
        i_sync = int(round(x_sync))
        # the last k_t preamble symbols and the two sync-word symbols, dechirped and CFO-compensated, shape
        # (k_t + 2, L); periodogram powers only: the phase of each window does not matter
        dechirped = self._aligned(local, i_sync + L * np.arange(-k_t, 2), L) * down_comp
        snr_db = self._snr_db(dechirped[:k_t])
        sync_word = self._read_sync_word(dechirped[k_t:])
        i_fp = int(round(x_fp))
        n_fp = self.cfg.preamble_symbols * L
        # CFO-compensated with phase zero at the window's first sample; from the history when the window
        # starts before the local copy (fewer up-chirps sent than the window holds)
        if i_fp >= a:
            pre = self._aligned(local, np.array([i_fp]), n_fp)[0] * self._rotation(cfo_hz, n_fp)
        else:
            pre = self._full.get(i_fp, i_fp + n_fp) * self._rotation(cfo_hz, n_fp)
        power = float(np.vdot(pre, pre).real) / n_fp
        rms = math.sqrt(power)
        if rms > 0:
            np.divide(pre, np.float32(rms), out=pre)
        scale = self._fs_in / self._fs_int
        start_in = x_first * scale
        self.n_packets += 1
        return Packet(
            start=int(round(start_in)),
            fingerprint_start=int(round(i_fp * scale)),
            cfo_hz=float(cfo_hz),
            snr_db=snr_db,
            power_db=10 * math.log10(max(power, 1e-30)),
            preamble=pre.astype(np.complex64, copy=False),
            preamble_fs_hz=float(self._fs_int),
            sync_word=sync_word,
            n_preamble_symbols=int(n_pre),
            stop=int(round((x_sfd + 2.25 * L) * scale)),
            start_frac=float(start_in - round(start_in)),
            cfo_coarse_hz=float((cfo0 + r_b) * bin_hz),
            fs_hz=float(self._fs_in),
        )

    def _count_from_head(self, cand: _Cluster, x_sync: float, cfo_hz: float) -> int | None:
        """Preamble length when its start has left the history: the start from the cluster's head snapshot.

        The head (full rate, from window ``w0 - _HEAD_BEFORE`` on) gets its own symbol timing, as the sample
        clock may drift over a long preamble.
        """
        L, osr = self._L, self._osr
        if cand.head is None:
            return None
        off = (cand.w0 - _HEAD_BEFORE) * L
        h = cand.head * self._rotation(cfo_hz, cand.head.size)
        tail = h[-3 * L :].reshape(3, L).mean(axis=0) * self._down_full  # tone at (start - boundary) / osr
        spec = np.abs(np.fft.fft(tail)) ** 2
        k0 = int(np.argmax(spec))
        k0 = k0 - L if k0 > L // 2 else k0
        f = k0 + self._tone_bins(tail * np.exp(-2j * np.pi * k0 * self._n_float / L).astype(np.complex64))
        x_head = off + cand.head.size - 3 * L - f * osr  # a symbol boundary in the head
        p_last = x_head + math.floor((off + cand.head.size - L - x_head) / L) * L
        s_last = int(round(p_last))
        n_win = (s_last - off) // L + 1
        starts = s_last - L * np.arange(n_win)
        amp, energy = self._symbol_amplitudes((h, off), starts, (s_last - p_last) / osr)
        power = np.abs(amp) ** 2
        e_ref = _median(power[:3])
        ok = (power >= _RHO * e_ref) & (power >= _KAPPA * energy)
        n_first, _, _ = _change_point(ok.tolist())
        if n_first == 0:
            return None
        p_first = p_last - (n_first - 1) * L
        return int(round((x_sync - p_first) / L))

    def _symbol_amplitudes(self, source, starts: npt.NDArray[np.int64], tone_bins: float,
                           cfo_bins: float = 0.0, *, ref: npt.NDArray[np.complex64] | None = None):
        """Windows of one symbol at ``starts``: dechirped amplitude at ``tone_bins`` and the window energy.

        ``cfo_bins`` (bins of ``fs/L``) is removed first, with phase zero at the source's first sample.
        """
        ref = self._down_full if ref is None else ref
        w = ref.size
        if starts.size > 1 and starts[1] - starts[0] == -w:  # backwards: read forwards, then flip
            win = self._aligned(source, starts[::-1], w)[::-1]
        else:
            win = self._aligned(source, starts, w)
        off = source[1] if isinstance(source, tuple) else 0
        amp = self._amps(win, starts - off, ref, tone_bins, cfo_bins)
        flat = win.view(np.float32)  # rows of (re, im) pairs
        return amp, np.einsum("ij,ij->i", flat, flat).astype(np.float64)

    def _chirp_tone(self, ref: npt.NDArray[np.complex64], cycles: float) -> npt.NDArray[np.complex64]:
        """``ref * exp(-2j*pi*cycles*n)`` for ``n < ref.size``: a reference that also removes a tone."""
        return ref * _cis((-cycles) * self._n_float[: ref.size])

    def _amps(self, win: npt.NDArray[np.complex64], rel: npt.NDArray[np.int64],
              ref: npt.NDArray[np.complex64], tone_bins: float,
              cfo_bins: float) -> npt.NDArray[np.complex128]:
        """Amplitude at ``tone_bins`` (bins of ``fs/ref.size``) of windows ``win`` (K, ref.size) dechirped by
        ``ref``, after removing ``cfo_bins`` (bins of ``fs/L``) with phase zero ``rel`` samples before each
        window (the CFO rides on the reference: the windows themselves are never rotated)."""
        w = ref.size
        amp = (win @ self._chirp_tone(ref, tone_bins / w + cfo_bins / self._L)).astype(np.complex128)
        if cfo_bins:
            amp *= np.exp(-2j * np.pi * ((cfo_bins * rel / self._L) % 1.0))
        return amp

    def _rotation(self, cfo_hz: float, n: int) -> npt.NDArray[np.complex64]:
        """``exp(-2j*pi*cfo_hz*k/fs)`` for ``k < n`` (one symbol of phases times a per-symbol step)."""
        L = self._L
        step = cfo_hz / self._fs_int
        k_sym = -(-n // L)
        one = _cis((-step) * self._n_float)
        if k_sym == 1:
            return one[:n]
        per = _cis((-step * L) * np.arange(k_sym, dtype=np.float64))
        return (per[:, None] * one[None, :]).ravel()[:n]

    def _tone_bins(self, d: npt.NDArray[np.complex64]) -> float:
        """Frequency of the tone in ``d`` (one symbol at the full rate) in bins of ``fs/L``, within ±1.5."""
        if self._time_dtft is None:
            n = np.arange(self._L)
            self._time_dtft = np.exp(-2j * np.pi * np.outer(_TIME_GRID, n) / self._L).astype(np.complex64)
        p = np.abs(self._time_dtft @ d).astype(np.float64) ** 2
        i = int(np.argmax(p))
        if i == 0 or i == p.size - 1:
            return float(_TIME_GRID[i])
        den = p[i - 1] - 2 * p[i] + p[i + 1]
        frac = 0.5 * (p[i - 1] - p[i + 1]) / den if den < 0 else 0.0
        step = _TIME_GRID[1] - _TIME_GRID[0]
        return float(_TIME_GRID[i] + max(-0.5, min(0.5, frac)) * step)

    def _read_sync_word(self, d: npt.NDArray[np.complex64]) -> int:
        """Sync word from the two aligned, dechirped, CFO-free symbols after the preamble, shape (2, L)."""
        spec = scipy.fft.fft(d, axis=1)
        folded = (spec.real**2 + spec.imag**2).reshape(2, self._osr, self._N).sum(axis=1)
        s1, s2 = (int(v) for v in np.argmax(folded, axis=1))
        return sync_word_from_symbols(s1, s2)

    def _snr_db(self, d: npt.NDArray[np.complex64]) -> float:
        """In-band SNR from aligned, dechirped, CFO-free preamble symbols (K, L): peak over the noise bins.

        A symbol of amplitude ``A`` gives ``(A L)**2`` in bin 0; white noise of variance ``s2`` per sample
        gives ``L s2`` per bin, so ``peak / noise / N = A**2 / (s2 / osr)``: the SNR in the LoRa band. Only
        bins 0, +-1 and +-2 are computed (a DTFT); the noise bins are the rest of the energy (Parseval).
        """
        L, N = self._L, self._N
        if self._edge_dtft is None:  # DTFT at bins 0, 1, -1, 2, -2: the rest is noise (Parseval)
            k = np.array([0, 1, -1, 2, -2], dtype=np.float64)
            self._edge_dtft = _cis(np.outer(self._n_float, -k / L))
        edge = d @ self._edge_dtft
        p = (edge.real.astype(np.float64) ** 2 + edge.imag.astype(np.float64) ** 2).mean(axis=0)
        total = L * float(np.vdot(d, d).real) / d.shape[0]  # sum of the periodogram over all L bins
        noise = max(total - float(p.sum()), 0.0) / (L - 5)  # mean over bins 3 .. L-3
        signal = float(p[0] + p[1] + p[2]) - 3 * noise
        if noise <= 0:
            return 150.0
        snr = signal / (noise * N)
        return float(np.clip(10 * math.log10(max(snr, 1e-5)), -50.0, 150.0))


def detect(iq: npt.ArrayLike, cfg: LoRaConfig) -> list[Packet]:
    """Find every LoRa packet in a recording held in memory.

    Parameters
    ----------
    iq : array_like of complex, shape (n,)
        Samples at ``cfg.fs_hz``.
    cfg : LoRaConfig

    Returns
    -------
    packets : list of Packet
        In order of start; identical to feeding a :class:`StreamDetector` in chunks of any size.

    Examples
    --------
    >>> from lorarffi.dsp.chirp import packet_waveform
    >>> cfg = LoRaConfig(sf=8, bw_hz=250e3, fs_hz=1e6)
    >>> iq = packet_waveform(cfg, [7] * 10, cfo_hz=-9e3, t0_s=-1e-3, sync_word=0x34, n_preamble=12)
    >>> [(p.start, round(p.cfo_hz), hex(p.sync_word), p.n_preamble_symbols) for p in detect(iq, cfg)]
    [(1000, -9000, '0x34', 12)]
    """
    det = StreamDetector(cfg)
    return det.process(iq) + det.flush()
