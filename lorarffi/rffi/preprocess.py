"""The preprocessing of stored preambles, shared by training and evaluation: what the detector does live.

The packet detector hands out each packet's aligned fingerprint window, scaled to unit RMS, with its CFO
removed (``Packet.preamble``) and as received (``Packet.preamble_with_cfo``), and its CFO estimate. Stored
preamble sets (the public LoRa_RFFI files, our simulator) are aligned but not compensated.
:func:`preprocess_preambles` turns them into the same: check that each row holds preamble up-chirps
(:func:`upchirp_score`), estimate the CFO of those that do (Shen et al. 2021, eqs. 9-16), remove it when the
model takes compensated packets, normalise each packet to unit RMS (eq. 17,
:func:`lorarffi.dsp.normalize.rms_normalize`).

**The dechirp check.** A stored row need not be a preamble: a file cut at another place of the packet (header
or payload symbols after a receiver's frame sync), or read at other LoRa parameters than it was captured at.
The CFO estimator then returns numbers of tens of kHz that mean nothing, and removing them damages the rows.
:func:`upchirp_score` dechirps every symbol of a row with the base up-chirp of ``cfg``: a preamble symbol
becomes one tone, so its FFT has one dominant peak, at the same bin in every symbol (the CFO); a payload or
header symbol carries its own value, so its peak moves from symbol to symbol; noise has no dominant peak,
and a tone or a chirp of another spreading factor or bandwidth spreads over many bins. A symbol's peak is
*dominant* when the energy of the peak bin and its two neighbours is at least :data:`PEAK_DOMINANCE_MIN`
times the mean bin energy over one bandwidth around the peak. For a preamble symbol at in-band SNR ``s`` that
ratio is about ``0.9 * 2**sf * s / (1 + s)`` (57 at SF7 and 0 dB); a dechirped tone or chirp of another rate
reaches about 8 (its energy spread over the band) and noise rarely exceeds 20. The score of a row is the
largest fraction of its symbols whose peaks are dominant and lie within one bin of each other; a row is a
preamble when it scores at least :data:`UPCHIRP_SCORE_MIN` (6 of 8 symbols). Random payload symbols agree by
chance only (``k`` of 8 on one of ``2**sf`` bins), and so do noise's rare dominant peaks. How simulated
preambles at low SNR and payload symbols score, the measurement the thresholds were set from, is in
docs/models.md (Training). The check does not test alignment: a preamble cut a fraction of a symbol late
still passes.

Rows that fail get no CFO estimate (NaN), are not compensated (only normalised), and are counted
(:attr:`Preprocessed.n_not_preamble`) and reported in one warning; the CFO gate neither learns from nor gates
them (:meth:`lorarffi.rffi.inference.Classifier.decide` lets the CNN decide a row without a CFO; a model
trained on data where a device has no preamble row gets no gate).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.cfo import compensate_cfo, estimate_cfo
from lorarffi.dsp.chirp import downchirp
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.dsp.packet_symbol import packet_symbol_estimate
from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "PEAK_DOMINANCE_MIN",
    "UPCHIRP_SCORE_MIN",
    "Preprocessed",
    "preprocess_preambles",
    "upchirp_score",
    "whole_packet_preambles",
]

log = logging.getLogger(__name__)

PEAK_DOMINANCE_MIN = 16.0  # twice what a dechirped tone or off-rate chirp reaches (module docstring)
UPCHIRP_SCORE_MIN = 0.75  # 6 of 8 symbols agree (module docstring)
_SAMPLES_PER_BLOCK = 1 << 21  # samples dechirped at once: bounds the temporaries to about 100 MB


@dataclass(frozen=True)
class Preprocessed:
    """Preambles ready for a model.

    Attributes
    ----------
    iq : ndarray of complex64, shape (N, L)
        ``L = cfg.preamble_samples``; CFO-compensated (unless asked not to, or the row is not a preamble) and
        unit RMS per packet.
    cfo_hz : ndarray of float64, shape (N,)
        CFO estimate of each packet, in Hz (the value the hybrid classifier gates on); NaN for a row that is
        not a preamble.
    is_preamble : ndarray of bool, shape (N,)
        The row passed the dechirp check (:func:`upchirp_score`).
    n_symbols : ndarray of int64, shape (N,), or None
        Up-chirps each row's fingerprint was estimated from, when rows were read as whole packets
        (``packet_symbols``; ``cfg.preamble_symbols`` for a preamble alone); None otherwise.
    """

    iq: npt.NDArray[np.complex64]
    cfo_hz: npt.NDArray[np.float64]
    is_preamble: npt.NDArray[np.bool_]
    n_symbols: npt.NDArray[np.int64] | None = None

    @property
    def n_not_preamble(self) -> int:
        """Rows that failed the dechirp check."""
        return int(np.size(self.is_preamble) - np.count_nonzero(self.is_preamble))


def _score_rows(x: npt.NDArray[np.complex64], cfg: LoRaConfig, n_sym: int) -> npt.NDArray[np.float64]:
    """:func:`upchirp_score` of a block of rows (N, L) holding ``n_sym`` whole symbols."""
    sps = cfg.n_chips * cfg.fs_hz / cfg.bw_hz  # samples per symbol, not always an integer
    seg = int(math.floor(sps))
    starts = np.round(np.arange(n_sym) * sps).astype(np.intp)
    dechirped = x[:, starts[:, None] + np.arange(seg)] * downchirp(cfg)[:seg]  # (N, n_sym, seg)
    spec = np.fft.fft(dechirped, axis=-1)
    power = spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2
    peak = power.argmax(axis=-1)  # (N, n_sym)

    def bins(index: npt.NDArray[np.intp], table: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.take_along_axis(table, index[..., None], axis=-1)[..., 0]

    peak_energy = sum(bins((peak + k) % seg, power) for k in (-1, 0, 1))
    # energy of one bandwidth (n_band bins) centred on the peak, circularly, from a cumulative sum
    n_band = min(cfg.n_chips, seg)
    cum = np.cumsum(np.concatenate([np.zeros(power.shape[:-1] + (1,)), power, power], axis=-1), axis=-1)
    first = (peak - n_band // 2) % seg
    band = bins(first + n_band, cum) - bins(first, cum)
    dominant = peak_energy >= PEAK_DOMINANCE_MIN * np.maximum(band, np.finfo(np.float64).tiny) / n_band
    gap = np.abs(peak[:, :, None] - peak[:, None, :])
    # (N, n_sym, n_sym): both peaks dominant and within one bin of each other (circularly)
    agree = (np.minimum(gap, seg - gap) <= 1) & dominant[:, :, None] & dominant[:, None, :]
    return agree.sum(axis=-1).max(axis=-1) / n_sym


def upchirp_score(iq: npt.ArrayLike, cfg: LoRaConfig) -> npt.NDArray[np.float64]:
    """How much rows look like preamble up-chirps: the dechirp check of the module docstring.

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        Rows sampled at ``cfg.fs_hz`` whose symbols start at sample 0; the whole symbols in ``L`` are used.
    cfg : LoRaConfig
        Spreading factor, bandwidth and sample rate the rows are read at.

    Returns
    -------
    score : ndarray of float64, shape (N,) or ()
        Largest fraction of a row's symbols whose dechirped FFT peaks are dominant and lie within one bin of
        each other, 0 to 1; a row is a preamble when ``score >= UPCHIRP_SCORE_MIN``.

    Examples
    --------
    >>> from lorarffi.dsp.chirp import modulate, packet_waveform
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> float(upchirp_score(packet_waveform(cfg, cfo_hz=20e3)[: cfg.preamble_samples], cfg))
    1.0
    >>> float(upchirp_score(modulate([3, 90, 17, 64, 120, 5, 33, 101], cfg), cfg))
    0.125
    """
    x = np.asarray(iq)
    one = x.ndim == 1
    x = np.atleast_2d(x).astype(np.complex64, copy=False)
    n_sym = int(math.floor(x.shape[-1] * cfg.bw_hz / (cfg.n_chips * cfg.fs_hz) + 1e-9))
    if x.ndim != 2 or n_sym < 1:
        raise InputDataError(
            "rows", f"have shape {np.shape(iq)}: expected (N, L) holding at least one symbol at SF{cfg.sf}"
        )
    out = np.empty(x.shape[0], np.float64)
    n_rows = max(1, _SAMPLES_PER_BLOCK // x.shape[1])
    for a in range(0, x.shape[0], n_rows):
        out[a : a + n_rows] = _score_rows(x[a : a + n_rows], cfg, n_sym)
    return out[0] if one else out


def whole_packet_preambles(
    packets: npt.NDArray[np.complex64], preambles: npt.NDArray[np.complex64], cfg: LoRaConfig, *,
    source: object = "packets",
) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.int64]]:
    """Each packet's preamble as estimated from all of its up-chirps, where that adds symbols.

    Parameters
    ----------
    packets : ndarray of complex64, shape (N, L2)
        CFO-compensated packets from the first preamble up-chirp on, ``L2 >= cfg.preamble_samples`` (samples
        past the packet's end, or zeros, are fine: the estimate stops at the first symbol that is not one).
    preambles : ndarray of complex64, shape (N, cfg.preamble_samples)
        The same packets' preambles as a model takes them (kept for packets whose later symbols add nothing).
    cfg : LoRaConfig
    source : object
        Named in the log line.

    Returns
    -------
    rows : ndarray of complex64, shape (N, cfg.preamble_samples)
        :func:`~lorarffi.dsp.packet_symbol.packet_symbol_estimate`'s symbol repeated ``cfg.preamble_symbols``
        times and scaled to unit RMS where it used more symbols than the preamble's, else ``preambles``' row.
    n_symbols : ndarray of int64, shape (N,)
        Symbols of each packet in its row (``cfg.preamble_symbols``: the preamble as it was).
    """
    out = np.array(preambles, dtype=np.complex64, copy=True)
    if not len(out):
        return out, np.zeros(0, np.int64)
    est = packet_symbol_estimate(packets, cfg)
    gained = est.n_symbols > cfg.preamble_symbols
    out[gained] = rms_normalize(np.tile(est.symbol[gained], (1, cfg.preamble_symbols)))
    log.info("%s: %d of %d packets read whole, %.1f symbols on average (%.1f effective)", source,
             int(gained.sum()), gained.size, float(est.n_symbols.mean()), float(est.effective_symbols.mean()))
    drifting = est.drift_bins_per_symbol != 0
    if drifting.any():
        ppm = est.drift_bins_per_symbol[drifting] * 1e6 / cfg.n_chips
        log.info("%s: a symbol drift undone in %d packets (median %.2f ppm as timing, %.0f %% of it timing)",
                 source, int(drifting.sum()), float(np.median(ppm)),
                 100 * float(np.median(est.timing_share[drifting])))
    return out, np.where(gained, est.n_symbols, cfg.preamble_symbols).astype(np.int64)


def preprocess_preambles(
    iq: npt.ArrayLike, cfg: LoRaConfig, *, compensate: bool = True, source: object = "preambles",
    packet_symbols: bool = False,
) -> Preprocessed:
    """Check that rows are preambles, estimate (and by default remove) their CFO, normalise them to unit RMS.

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        Aligned preambles, first sample = first preamble up-chirp, ``L >= cfg.preamble_samples``, not
        CFO-compensated. Longer rows are cut to ``cfg.preamble_samples`` unless ``packet_symbols``.
    cfg : LoRaConfig
        LoRa parameters of the capture.
    compensate : bool
        Remove the estimated CFO (the view of ``Packet.preamble``); False keeps it in (the view of
        ``Packet.preamble_with_cfo``), for models trained without compensation. A model's own choice:
        :meth:`lorarffi.rffi.inference.Classifier.preprocess`.
    source : object
        Named in error and warning messages.
    packet_symbols : bool
        Rows longer than the preamble hold whole packets (or their first part: sync word, SFD, header,
        payload): estimate each preamble's up-chirp from all of the packet's up-chirps
        (:func:`~lorarffi.dsp.packet_symbol.packet_symbol_estimate`, after the CFO is removed) and give it
        repeated ``cfg.preamble_symbols`` times, a preamble with less noise than the packet's own. Needs
        ``compensate``. Off by default: measured on simulated packets only (docs/models.md). Rows that are
        not preambles, rows too short to hold the sync word and packets with no further symbol that
        qualifies keep their first ``cfg.preamble_samples``.

    Returns
    -------
    Preprocessed
        Rows ``(N, cfg.preamble_samples)`` complex64, the CFO estimates (N,) in Hz (NaN for rows that fail
        the dechirp check: those are not compensated) and the check's outcome (N,); 1-D input gives 1-D
        ``iq`` and 0-d ``cfo_hz`` and ``is_preamble``. Rows that fail are reported in one warning.
    """
    x = np.asarray(iq)
    one = x.ndim == 1
    x = np.atleast_2d(x).astype(np.complex64, copy=False)
    if x.ndim != 2:
        raise InputDataError(source, f"preambles have shape {np.shape(iq)}, expected (N, L)")
    n_samples = cfg.preamble_samples
    if x.shape[1] < n_samples:
        raise InputDataError(
            source,
            f"preambles hold {x.shape[1]} samples, fewer than the {n_samples} of "
            f"{cfg.preamble_symbols} symbols at SF{cfg.sf}, {cfg.bw_hz:g} Hz, fs {cfg.fs_hz:g} Hz",
        )
    if packet_symbols and not compensate:
        raise ConfigError("packet_symbols needs the CFO removed (compensate=True)")
    whole = packet_symbols and x.shape[1] >= n_samples + 2 * cfg.samples_per_symbol  # sync word held
    rows = x
    x = x[:, :n_samples]
    ok = upchirp_score(x, cfg) >= UPCHIRP_SCORE_MIN
    cfo_hz = np.full(x.shape[0], np.nan)
    if ok.all():
        cfo_hz = np.asarray(estimate_cfo(x, cfg), dtype=np.float64).reshape(x.shape[0])
    elif ok.any():
        cfo_hz[ok] = estimate_cfo(x[ok], cfg)
    if compensate:  # rows that are not preambles: 0 Hz removed (multiplied by exactly 1)
        rows = compensate_cfo(rows if whole else x, np.where(ok, cfo_hz, 0.0), cfg.fs_hz)
        x = rows[:, :n_samples]
    n_symbols = np.full(x.shape[0], cfg.preamble_symbols, np.int64) if packet_symbols else None
    if whole and ok.any():
        x[ok], n_symbols[ok] = whole_packet_preambles(rows[ok], x[ok], cfg, source=source)
    n_bad = int(ok.size - np.count_nonzero(ok))
    if n_bad:
        log.warning(
            "%s: %d of %d rows are not LoRa preamble up-chirps at SF%d, %g kHz, %g MS/s (dechirp check): "
            "their CFO is not estimated, not removed and not used by the CFO gate. Check the LoRa parameters "
            "(--sf/--bw-hz/--fs-hz) and that each row starts at the first preamble up-chirp",
            source, n_bad, ok.size, cfg.sf, cfg.bw_hz / 1e3, cfg.fs_hz / 1e6,
        )
    out = rms_normalize(x)
    if one:
        return Preprocessed(out[0], cfo_hz[0], ok[0], None if n_symbols is None else n_symbols[:1])
    return Preprocessed(out, cfo_hz, ok, n_symbols)
