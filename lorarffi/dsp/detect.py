"""LoRa packet detection on a sample stream: :class:`StreamDetector` (chunks of any size) and :func:`detect`.

The detector searches the stream for preambles at the chip rate and resolves each candidate into a
:class:`~lorarffi.dsp.packet.Packet` (alignment, preamble length, CFO, sync word, SNR and the fingerprint
window) with the stages of :mod:`lorarffi.dsp.resolve`. Packets do not depend on the chunk sizes, bit for bit:
the search works on blocks fixed in absolute sample positions, and each packet is resolved, as soon as the
samples it reads have arrived (within the chunk that brings them), from a span of samples fixed by its own
position and from choices that later samples cannot change.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.fft

from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.dsp.packet import Packet
from lorarffi.dsp.resample import StreamResampler
from lorarffi.dsp.resolve import (
    K_FINE,
    K_TIME,
    MIN_PREAMBLE,
    ChirpReferences,
    align_upchirps,
    aligned_windows,
    cfo_free_downchirp,
    coarse_cfo_and_timing,
    compensated_window,
    count_from_head,
    count_preamble,
    estimate_snr_db,
    find_sfd,
    fine_cfo,
    fine_timing,
    read_sync_word,
    settle_bin_ambiguity,
    sfd_boundary,
    sfd_is_weak,
    upchirp_peak,
)
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
_SFD_LOOKAHEAD = 8  # windows after the last cluster window searched for the SFD
_HEAD_BEFORE = _J + 6  # windows before a cluster's first window kept in its head snapshot
_HEAD_AFTER = 4  # ... and from its first window on
# chip-rate windows of history besides one block (the search and the SFD search read it)
_HISTORY_WINDOWS = 200


@dataclass
class _Cluster:
    w0: int  # first passing window
    wlast: int  # last passing window
    bin: int  # chip bin of the last passing window
    n_pass: int
    head: npt.NDArray[np.complex64] | None = None  # chips from window w0 - _HEAD_BEFORE on
    tried: bool = False  # resolved while open and found not to be a packet: wait until it closes
    stages12: tuple | None = None  # ((w_lo, ws, w_end, early), UpchirpPeak, SfdPeak) of the last attempt


class _SfdLocation(NamedTuple):
    cfo0_bins: float  # coarse CFO (chip bins)
    local: tuple[npt.NDArray[np.complex64], int]  # full-rate samples around the preamble, index of the first
    truncated: bool  # the preamble may start before the samples held
    x_sync: float  # the sync word's first sample (full rate, absolute), one chip ambiguous
    r_bins: float  # CFO left after cfo0_bins
    complete: bool  # every sample the later stages read has arrived


def _boxcar(x: npt.NDArray[np.complex64], osr: int) -> npt.NDArray[np.complex64]:
    """Sum of each run of ``osr`` samples (``x.size`` a multiple of it), added in one order whatever the
    array's length or alignment: halves pairwise while the run length is even, then the rest in turn (a
    matrix product with a column of ones would leave the order to the BLAS kernel, which may change it at a
    block's edge)."""
    if osr == 1:
        return x.copy()
    y = x.reshape(-1, osr)
    while y.shape[1] % 2 == 0:
        y = y[:, 0::2] + y[:, 1::2]
    if y.shape[1] == 1:
        return np.ascontiguousarray(y[:, 0])
    out = y[:, 0] + y[:, 1]
    for i in range(2, y.shape[1]):
        out += y[:, i]
    return out


def _circ_dist(a: int, b: int, n: int) -> int:
    """Circular distance between bins ``a`` and ``b`` of ``n`` (plain ints: once per passing window)."""
    d = (a - b) % n
    return min(d, n - d)


class StreamDetector:
    """Find LoRa packets in a stream of IQ samples given in chunks of any size.

    Parameters
    ----------
    cfg : LoRaConfig
        Spreading factor, bandwidth, input sample rate ``fs_hz`` and the fingerprint length
        ``preamble_symbols``. The sync word seen is reported whatever ``cfg.sync_word`` says.
    block_samples : int
        Samples (at the internal integer-oversampled rate, rounded down to whole symbols, at least one) per
        search block. A packet is emitted within the chunk that brings the samples its resolution reads
        (normally its SFD's two full down-chirps, a quarter symbol before the SFD ends) once the search has
        seen its preamble end, which a block can delay (65536 samples: 66 ms at 1 MS/s); larger blocks cost a
        little less CPU per sample.

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

    Notes
    -----
    Input at a rate that is not an integer multiple of the bandwidth is resampled (polyphase, as
    ``scipy.signal.resample_poly``) to ``cfg.integer_oversampling()``: ``osr`` samples per chip.

    The search runs at the chip rate: each run of ``osr`` samples is summed (a boxcar: near-optimal decimation
    for white noise) and the chip-rate stream is cut into windows of ``2**sf`` chips on a fixed grid, each
    dechirped and transformed (one batched FFT per block); a preamble gives a peak at bin ``cfo - timing`` in
    every window. The periodograms of the last 4 windows are summed and a window passes when the best pair of
    adjacent bins exceeds 5.1 times its share of the mean (false-alarm probability 1e-10 per bin in noise)
    and at least 3 of the 4 windows have a strong bin there (a payload symbol straddles at most 2). At least
    4 passing windows with the same bin (within 2) make a candidate, which :mod:`lorarffi.dsp.resolve`
    turns into a packet as soon as its SFD stands out and the samples the alignment reads after it have
    arrived (or, for a candidate whose SFD is not found, once every window where it can lie has arrived).
    Between blocks the samples still filling the next one are looked at for that (not searched): a packet
    whose preamble the search has seen comes out in the chunk that completes its SFD.

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
        self._refs = ChirpReferences.from_config(self.internal_cfg)
        n_keep = max(cfg.preamble_symbols, K_FINE) + _J + _HEAD_BEFORE + _SFD_LOOKAHEAD + 16
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
        if self._n_pending >= self._osr and (
                self._candidates or self._open_ready(self._n_win + self._n_pending // self._L)):
            out += self._peek()
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

    def _chip_rate(self, x: npt.NDArray[np.complex64], owned: bool
                   ) -> tuple[npt.NDArray[np.complex64], bool, npt.NDArray[np.complex64], int]:
        """``x`` (a whole number of ``osr`` groups) with non-finite samples replaced by zeros, whether the
        result is owned, its chip-rate samples (each group's sum) and the number of samples replaced."""
        with np.errstate(invalid="ignore", over="ignore"):
            chips = _boxcar(x, self._osr)
            finite = np.isfinite(chips.sum())  # cheap test first: a NaN/inf sample makes the sum non-finite
        n_bad = 0
        if not finite:
            bad = ~np.isfinite(x)
            n_bad = int(np.count_nonzero(bad))
            if n_bad:
                x = np.where(bad, np.complex64(0), x)
                owned = True
                chips = _boxcar(x, self._osr)
            chips[~np.isfinite(chips)] = 0  # finite samples so large that their sum overflows
        return x, owned, chips, n_bad

    def _process_block(self, x: npt.NDArray[np.complex64], owned: bool) -> list[Packet]:
        N, B = self._N, self._block_w
        x, owned, chips, n_bad = self._chip_rate(x, owned)
        self.n_nonfinite += n_bad
        self._full.append(x, owned=owned)
        self._chips.append(chips, owned=True)

        a = np.abs(scipy.fft.fft(chips.reshape(B, N) * self._refs.down_chip, axis=1))
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
        return self._emit_ready(peek=False)

    def _peek(self) -> list[Packet]:
        """Resolve what the samples of the block still filling complete: they are added to the stores for
        this call only (the search sees them with their block). A packet comes out as soon as the samples its
        resolution reads have arrived, not at the end of the block that holds them."""
        n = self._n_pending - self._n_pending % self._osr
        parts = [self._pending[0][0][self._pending_off :]] + [a for a, _owned in self._pending[1:]]
        x = np.concatenate(parts)[:n] if len(parts) > 1 else parts[0][:n]
        x, owned, chips, _n_bad = self._chip_rate(x, False)  # counted when its block is processed
        self._full.append(x, owned=owned)
        self._chips.append(chips, owned=True)
        try:
            return self._emit_ready(peek=True)
        finally:
            self._full.pop()
            self._chips.pop()

    def _open_ready(self, w_avail: int) -> bool:
        """The open cluster has the passing windows of a candidate and, of the ``w_avail`` windows that have
        arrived, the two after its last passing one, where its SFD's down-chirps can start."""
        cl = self._cluster
        return cl is not None and not cl.tried and cl.n_pass >= _MIN_PASSES and w_avail > cl.wlast + 2

    def _emit_ready(self, *, peek: bool) -> list[Packet]:
        """Resolve the candidates in order of start while each is complete (or its look-ahead has been
        searched), then the open cluster when its SFD is complete. ``peek``: the stores also hold samples of
        the block still filling, beyond the windows searched; only complete candidates are resolved, and only
        those whose resolution does not depend on how much history the next block leaves."""
        last = self._n_win - 1
        w_avail = self._chips.end // self._N
        out = []
        while self._candidates:
            cand = self._candidates[0]
            w_look = cand.wlast + _SFD_LOOKAHEAD + 1  # one past the last window searched for its SFD
            final = not peek and w_look <= last
            w_end = w_look if final else min(w_look, w_avail)
            if peek and not self._peek_safe(cand):
                break
            sfd = self._locate_sfd(cand, w_end, early=not final)
            if not final and (sfd is None or not sfd.complete):
                break
            self._candidates.pop(0)
            self.n_candidates += 1
            packet = self._resolve(cand, sfd)
            if packet is not None:
                out.append(packet)
        cl = self._cluster
        if not self._candidates and self._open_ready(w_avail) and (not peek or self._peek_safe(cl)):
            sfd = self._locate_sfd(cl, min(cl.wlast + _SFD_LOOKAHEAD + 1, w_avail), early=True)
            # its last passing window is final once every window that can still pass has been searched: a
            # window passes only with three of the four before it on the preamble's bin, so not when the one
            # before it starts after the SFD's first chip (a sync word may sit on that bin), x_sync + 2N
            if (sfd is not None and sfd.complete
                    and self._n_win * self._N >= sfd.x_sync / self._osr + 3 * self._N + 3):
                packet = self._resolve(cl, sfd)
                if packet is None:
                    cl.tried = True  # resolved again, and counted, when it closes
                else:
                    self.n_candidates += 1
                    self._cluster = None
                    out.append(packet)
        return out

    def _peek_safe(self, cand: _Cluster) -> bool:
        """The history the stores hold after the next block still covers what resolving ``cand`` reads, so
        resolving it now or with that block gives the same packet."""
        n_win_next = self._n_win + self._block_w
        chips_from = n_win_next * self._N - self._keep_chip
        return (self._need_from(cand) >= n_win_next * self._L - self._keep_full
                and max(cand.w0 - 1, cand.wlast - _J - 12) * self._N >= chips_from)

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

    # -- resolution of one candidate ------------------------------------------------------------------------
    def _chip_windows(self, w_a: int, w_b: int) -> npt.NDArray[np.complex64]:
        return self._chips.view(w_a * self._N, w_b * self._N).reshape(-1, self._N)

    def _locate_sfd(self, cand: _Cluster, w_end: int, *, early: bool) -> _SfdLocation | None:
        """Stages 1-5 on the chip-rate windows before ``w_end`` and the samples held: None when no SFD stands
        out among those windows.

        ``complete`` in the result says whether every sample stages 4-8 read has arrived: then the candidate
        can be resolved before its full look-ahead, with the same packet bit for bit: the SFD's pair of
        windows (the first strong one) and its boundary (the first with two full down-chirps) are choices
        later windows cannot change.
        ``early``: skip the alignment (the costly stage, at the full rate) while the SFD's two down-chirps
        have not arrived or the boundary is not settled (:func:`sfd_boundary` with ``arrived``); the result
        then says incomplete.
        """
        refs, N, L, osr = self._refs, self._N, self._L, self._osr
        # 1-2. up-chirp peak (cfo - timing) from the cluster's windows, SFD peak (cfo + timing) after them;
        # kept with the candidate while no window arrives
        chips_from = self._n_win * N - self._keep_chip  # fixed by the block, not by the chunking
        w_lo = max(cand.w0 - 1, cand.wlast - _J - 12, -(-chips_from // N))
        ws = cand.wlast - _J
        # (find_sfd takes the first strong pair: once found, more windows do not change it)
        key = (w_lo, ws, w_end, early)
        cached = cand.stages12
        if not (cached is not None and cached[0][:2] == key[:2]
                and (cached[0] == key or (cached[2].found and cached[0][2] <= w_end))):
            win = self._chip_windows(w_lo, w_end)
            cand.stages12 = (key, upchirp_peak(win[: cand.wlast + 1 - w_lo], cand.bin, refs),
                             find_sfd(win[ws - w_lo :], refs, final=not early))
        _key, up, sfd = cand.stages12
        if not sfd.found:
            log.debug("candidate at window %d: no SFD (metric %.1f)", cand.w0, sfd.metric)
            return None
        # 3-4. coarse CFO and timing (chip units), the SFD's symbol boundary (read from windows up to
        # w_sfd + 2: the boundaries next to w_sfd and two symbols after each)
        w_sfd = ws + sfd.index
        cfo0, delta = coarse_cfo_and_timing(up.bins, sfd.bins, N)
        not_yet = _SfdLocation(cfo0, (np.zeros(0, np.complex64), 0), False, math.nan, math.nan, False)
        # a down-chirp window of the SFD holds a whole symbol's power, as an up-chirp one: a quarter of it
        # tells a down-chirp from the sync word or payload around it
        p_sfd = sfd_boundary(self._chips, delta, w_sfd, cfo0, refs, min_power=0.25 * up.power,
                             arrived=self._chips.end if early else None)
        if p_sfd is None or (early and int(math.ceil(p_sfd * osr)) + 2 * L > self._full.end):
            return not_yet

        # 5. from here on, aligned windows at the full rate on a local copy (the CFO rides on the references)
        first_needed = self._need_from(cand)
        held_from = self._n_win * L - self._keep_full  # fixed by the block, not by the chunking
        held_from = held_from if held_from > 0 else -math.inf  # before sample 0: known zeros
        truncated = first_needed < held_from
        a = first_needed if not truncated else int(held_from)
        local = (self._full.view(a, int(math.ceil(p_sfd * osr)) + 3 * L), a)
        x_sync, r_b = align_upchirps(local, (p_sfd - 2 * N) * osr, cfo0, refs)  # reads before x_sync only
        # the latest samples read from here on: the two SFD down-chirps after the sync word, for the timing
        # hypotheses up to one chip later (settle_bin_ambiguity)
        last_read = int(math.ceil(x_sync)) + osr + 4 * L
        complete = last_read <= min(self._full.end, local[1] + local[0].size)
        return _SfdLocation(cfo0, local, truncated, x_sync, r_b, complete)

    def _resolve(self, cand: _Cluster, sfd: _SfdLocation | None) -> Packet | None:
        """The stages of :mod:`lorarffi.dsp.resolve` after the alignment on one candidate; None when it is
        not a packet."""
        if sfd is None:
            return None
        refs, L, osr = self._refs, self._L, self._osr
        cfo0, local, truncated = sfd.cfo0_bins, sfd.local, sfd.truncated
        x_sync, r_b, sfd_power = settle_bin_ambiguity(local, sfd.x_sync, sfd.r_bins, cfo0, refs)
        s_up = int(round(x_sync))
        e = (s_up - x_sync) / osr  # the aligned windows start e chips after the symbol boundaries

        # 6. count the preamble back from the sync word
        count = count_preamble(local, s_up, r_b + e, cfo0, refs)
        if count is None:
            return None
        bin_hz = self._fs_int / L
        # a preamble that runs past the history: counted from the snapshot of the candidate's head
        long_preamble = truncated and count.score_last >= count.score_max - 1 and all(count.flags[-3:])
        n_pre = count.n_symbols
        if long_preamble:
            if cand.head is None:
                return None
            n_pre = count_from_head(cand.head, (cand.w0 - _HEAD_BEFORE) * L, x_sync, (cfo0 + r_b) * bin_hz,
                                    self._fs_int, refs)
            if n_pre is None:
                return None
        if n_pre < (MIN_PREAMBLE if long_preamble else 3):
            log.debug("candidate at window %d: %d preamble symbols", cand.w0, n_pre)
            return None
        if sfd_is_weak(sfd_power, count.e_ref):
            log.debug("candidate at window %d: weak SFD", cand.w0)
            return None

        # 7. fine CFO (and the count again, coherently), then the fine timing
        r_bins, n_pre = fine_cfo(count._replace(n_symbols=n_pre), r_b, long_preamble=long_preamble)
        if n_pre < MIN_PREAMBLE:
            log.debug("candidate at window %d: %d coherent preamble symbols", cand.w0, n_pre)
            return None
        cfo_hz = (cfo0 + r_bins) * bin_hz
        down_comp = cfo_free_downchirp(cfo0 + r_bins, refs)  # dechirps and removes the CFO
        k_t = min(n_pre - 1, K_TIME)
        x_sync = fine_timing(local, x_sync, cfo0 + r_bins, k_t, down_comp, refs)

        # 8. outputs
        x_sfd = x_sync + 2 * L
        if abs(x_sfd - self._last_sfd) < L / 2:
            return None  # the same packet seen through a second cluster
        self._last_sfd = x_sfd
        # the last k_t preamble symbols and the two sync-word symbols, dechirped and CFO-compensated, shape
        # (k_t + 2, L); periodogram powers only: the phase of each window does not matter
        dechirped = aligned_windows(local, int(round(x_sync)) + L * np.arange(-k_t, 2), L) * down_comp
        return self._packet(local, x_sync, n_pre, cfo_hz, (cfo0 + r_b) * bin_hz,
                            snr_db=estimate_snr_db(dechirped[:k_t], refs),
                            sync_word=read_sync_word(dechirped[k_t:], refs))

    def _packet(self, local: tuple[npt.NDArray[np.complex64], int], x_sync: float, n_pre: int, cfo_hz: float,
                cfo_coarse_hz: float, *, snr_db: float, sync_word: int) -> Packet:
        """The packet whose sync word starts at ``x_sync`` (internal rate): positions at the input rate and
        the fingerprint window (the ``cfg.preamble_symbols`` symbols before ``x_sync``) in both views, CFO
        compensated and as received, each scaled to unit RMS."""
        L = self._L
        x_first = x_sync - n_pre * L
        x_sfd = x_sync + 2 * L
        i_fp = int(round(x_sync - self.cfg.preamble_symbols * L))
        n_fp = self.cfg.preamble_symbols * L
        # from the history when the window starts before the local copy (fewer up-chirps sent than it holds)
        if i_fp >= local[1]:
            window = aligned_windows(local, np.array([i_fp]), n_fp)[0]
        else:
            window = self._full.view(i_fp, i_fp + n_fp)
        compensated = compensated_window(window, cfo_hz, self._fs_int, self._refs)
        power = float(np.vdot(compensated, compensated).real) / n_fp  # reported as power_db
        scale = self._fs_in / self._fs_int
        start_in = x_first * scale
        self.n_packets += 1
        return Packet(
            start=int(round(start_in)),
            fingerprint_start=int(round(i_fp * scale)),
            cfo_hz=float(cfo_hz),
            snr_db=snr_db,
            power_db=10 * math.log10(max(power, 1e-30)),
            preamble=rms_normalize(compensated),
            preamble_fs_hz=float(self._fs_int),
            sync_word=sync_word,
            n_preamble_symbols=int(n_pre),
            stop=int(round((x_sfd + 2.25 * L) * scale)),
            start_frac=float(start_in - round(start_in)),
            cfo_coarse_hz=float(cfo_coarse_hz),
            fs_hz=float(self._fs_in),
            preamble_with_cfo=rms_normalize(window),
        )


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
