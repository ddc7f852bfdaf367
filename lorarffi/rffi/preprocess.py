"""The one preprocessing step shared by training, stored-data evaluation and (through the detector) live
input.

The packet detector hands out preambles that are aligned, CFO-compensated and RMS-normalised, with their CFO
estimate. Stored preamble sets (the public LoRa_RFFI files, our simulator) are aligned but not compensated.
:func:`preprocess_preambles` turns the latter into exactly the former: estimate the CFO (Shen et al. 2021,
eqs. 9-16), compensate it, normalise each packet to unit RMS (eq. 17).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.cfo import compensate_cfo, estimate_cfo
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import InputDataError

__all__ = ["Preprocessed", "preprocess_preambles", "rms_normalize"]


@dataclass(frozen=True)
class Preprocessed:
    """Preambles ready for a model.

    Attributes
    ----------
    iq : ndarray of complex64, shape (N, L)
        ``L = cfg.preamble_samples``; CFO-compensated (unless asked not to) and unit RMS per packet.
    cfo_hz : ndarray of float64, shape (N,)
        CFO estimate of each packet, in Hz (the value the hybrid classifier gates on).
    """

    iq: npt.NDArray[np.complex64]
    cfo_hz: npt.NDArray[np.float64]


def rms_normalize(iq: npt.ArrayLike) -> npt.NDArray[np.complex64]:
    """Divide each row of ``iq`` (complex, shape (N, L) or (L,)) by its RMS; all-zero rows stay zero."""
    x = np.ascontiguousarray(iq, dtype=np.complex64)
    flat = x.view(np.float32)  # I, Q interleaved: the power is the mean of twice as many squares
    p = np.einsum("...i,...i->...", flat, flat, dtype=np.float64)[..., None] / max(x.shape[-1], 1)
    rms = np.sqrt(p)
    return x * (1.0 / np.where(rms > 0, rms, 1.0)).astype(np.float32)


def preprocess_preambles(
    iq: npt.ArrayLike, cfg: LoRaConfig, *, compensate: bool = True, source: object = "preambles"
) -> Preprocessed:
    """Estimate and compensate the CFO of aligned preambles and normalise them to unit RMS.

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        Aligned preambles, first sample = first preamble up-chirp, ``L >= cfg.preamble_samples`` (longer rows
        are cut to ``cfg.preamble_samples``), not CFO-compensated.
    cfg : LoRaConfig
        LoRa parameters of the capture.
    compensate : bool
        Remove the estimated CFO (True: what the detector does). False keeps the CFO in the signal; used
        only to measure what compensation buys (Shen et al. Table II).
    source : object
        Named in error messages.

    Returns
    -------
    Preprocessed
        Rows ``(N, cfg.preamble_samples)`` complex64 and the CFO estimates (N,) in Hz; 1-D input gives 1-D
        ``iq`` and a 0-d ``cfo_hz``.
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
    x = x[:, :n_samples]
    cfo_hz = np.asarray(estimate_cfo(x, cfg), dtype=np.float64).reshape(x.shape[0])
    if compensate:
        x = np.asarray(compensate_cfo(x, cfo_hz, cfg.fs_hz), dtype=np.complex64)
    out = rms_normalize(x)
    if one:
        return Preprocessed(out[0], cfo_hz[0])
    return Preprocessed(out, cfo_hz)
