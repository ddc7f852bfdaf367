"""The preprocessing of stored preambles, shared by training and evaluation: what the detector does live.

The packet detector hands out each packet's aligned fingerprint window, scaled to unit RMS, with its CFO
removed (``Packet.preamble``) and as received (``Packet.preamble_with_cfo``), and its CFO estimate. Stored
preamble sets (the public LoRa_RFFI files, our simulator) are aligned but not compensated.
:func:`preprocess_preambles` turns them into the same: estimate the CFO (Shen et al. 2021, eqs. 9-16), remove
it when the model takes compensated packets, normalise each packet to unit RMS (eq. 17,
:func:`lorarffi.dsp.normalize.rms_normalize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.cfo import compensate_cfo, estimate_cfo
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.errors import InputDataError

__all__ = ["Preprocessed", "preprocess_preambles"]


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


def preprocess_preambles(
    iq: npt.ArrayLike, cfg: LoRaConfig, *, compensate: bool = True, source: object = "preambles"
) -> Preprocessed:
    """Estimate (and by default remove) the CFO of aligned preambles and normalise them to unit RMS.

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        Aligned preambles, first sample = first preamble up-chirp, ``L >= cfg.preamble_samples`` (longer rows
        are cut to ``cfg.preamble_samples``), not CFO-compensated.
    cfg : LoRaConfig
        LoRa parameters of the capture.
    compensate : bool
        Remove the estimated CFO (the view of ``Packet.preamble``); False keeps it in (the view of
        ``Packet.preamble_with_cfo``), for models trained without compensation. A model's own choice:
        :meth:`lorarffi.rffi.inference.Classifier.preprocess`.
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
