"""One detected LoRa packet: where it starts, its carrier offset and its aligned fingerprint window.

The window comes in both views a model may have been trained on: CFO-compensated (``preamble``, what most
models and the preamble files take) and as received (``preamble_with_cfo``). The detector makes both, each
normalised once, so that no transformation is undone downstream (putting a removed CFO back) and the
detector needs no knowledge of the model; the second view costs one normalisation of the window (a small
fraction of a packet's resolution) and its memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Packet"]


@dataclass(frozen=True, slots=True, eq=False)
class Packet:
    """A LoRa packet found by :class:`~lorarffi.dsp.detect.StreamDetector`.

    Sample indices are absolute positions in the input stream, at the input sample rate, counted from the
    first sample ever given to the detector.

    Attributes
    ----------
    start : int
        Index of the first sample of the first preamble up-chirp (the exact position is
        ``start + start_frac``).
    fingerprint_start : int
        Index of the first sample of the fingerprint window: the ``cfg.preamble_symbols`` up-chirps just
        before the sync word. Before ``start`` when the packet sent fewer up-chirps than
        ``cfg.preamble_symbols``.
    cfo_hz : float
        Carrier frequency offset, transmitter minus receiver, in Hz: coarse (up/down-chirp peaks) plus fine
        (phase progression across the preamble symbols, Shen et al. 2021, eqs. 13-16).
    snr_db : float
        In-band SNR estimate in dB: signal power over the noise power within the LoRa bandwidth.
    power_db : float
        Mean power of the fingerprint window before normalisation, ``10*log10(mean(|x|**2))``, in the units of
        the input samples.
    preamble : ndarray of complex64, shape (cfg.preamble_symbols * 2**sf * preamble_fs_hz / bw_hz,)
        The fingerprint window at ``preamble_fs_hz``: aligned to the sample, CFO-compensated (phase zero at
        its first sample) and scaled to unit RMS.
    preamble_fs_hz : float
        Sample rate of ``preamble`` (``cfg.integer_oversampling().fs_hz``), in Hz.
    sync_word : int
        The sync word read from the two symbols after the preamble (0x12 private, 0x34 LoRaWAN, ...).
    n_preamble_symbols : int
        Number of preamble up-chirps seen before the sync word.
    stop : int
        Index just past the start-of-frame delimiter (end of preamble + sync word + 2.25 down-chirps).
    start_frac : float
        Sub-sample part of the start estimate, in input samples, in [-0.5, 0.5].
    cfo_coarse_hz : float
        The coarse CFO estimate (from the up- and down-chirp dechirp peaks) the fine estimate refined, in Hz.
    fs_hz : float
        Input sample rate the indices refer to, in Hz.
    preamble_with_cfo : ndarray of complex64, same shape as ``preamble``, or None
        The same window as received, its CFO left in, scaled to unit RMS: the input of models trained
        without CFO compensation. None when the packet was made without it.
    """

    start: int
    fingerprint_start: int
    cfo_hz: float
    snr_db: float
    power_db: float
    preamble: np.ndarray
    preamble_fs_hz: float
    sync_word: int
    n_preamble_symbols: int
    stop: int
    start_frac: float = 0.0
    cfo_coarse_hz: float = math.nan
    fs_hz: float = math.nan
    preamble_with_cfo: np.ndarray | None = None

    @property
    def start_s(self) -> float:
        """Time of ``start + start_frac`` after the first input sample, in seconds (NaN without ``fs_hz``)."""
        return (self.start + self.start_frac) / self.fs_hz

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields as plain Python numbers (for JSON); the preamble samples are left out."""
        return {
            "start": int(self.start),
            "start_s": float(self.start_s),
            "fingerprint_start": int(self.fingerprint_start),
            "stop": int(self.stop),
            "cfo_hz": float(self.cfo_hz),
            "cfo_coarse_hz": float(self.cfo_coarse_hz),
            "snr_db": float(self.snr_db),
            "power_db": float(self.power_db),
            "sync_word": int(self.sync_word),
            "n_preamble_symbols": int(self.n_preamble_symbols),
            "start_frac": float(self.start_frac),
        }
