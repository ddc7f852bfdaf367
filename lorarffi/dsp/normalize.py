"""Per-packet RMS normalisation of IQ samples (Shen et al. 2021, eq. 17), for numpy arrays and torch tensors.

The one implementation: the detector normalises each fingerprint window with it, and stored preambles get it
in :func:`lorarffi.rffi.preprocess.preprocess_preambles`; model inputs are never normalised again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lorarffi.dsp.spectrogram import is_tensor

__all__ = ["rms_normalize"]


def rms_normalize(iq: Any) -> Any:
    """Each packet divided by its RMS: unit mean power per row; an all-zero row stays zero.

    Parameters
    ----------
    iq : array_like or torch.Tensor of complex, shape (N, L) or (L,)
        Packets; converted to complex64 (a tensor stays on its device).

    Returns
    -------
    ndarray or torch.Tensor of complex64, same shape as ``iq``
        A new array (or tensor): ``iq[i] * s_i`` with ``s_i = 1 / sqrt(mean(|iq[i]|**2))`` computed in float64
        (the power accumulated in float64) and rounded to float32 once.

    Examples
    --------
    >>> x = np.array([[3 + 4j, 3 - 4j], [0j, 0j]], dtype=np.complex64)
    >>> rms_normalize(x)
    array([[0.6+0.8j, 0.6-0.8j],
           [0. +0.j , 0. +0.j ]], dtype=complex64)
    """
    if is_tensor(iq):
        import torch

        x = iq.to(torch.complex64)
        flat = torch.view_as_real(x).flatten(-2)  # I, Q interleaved
        power = flat.square().sum(dim=-1, dtype=torch.float64, keepdim=True) / max(x.shape[-1], 1)
        rms = power.sqrt()
        return x * (1.0 / torch.where(rms > 0, rms, torch.ones_like(rms))).to(torch.float32)
    x = np.ascontiguousarray(iq, dtype=np.complex64)
    flat = x.view(np.float32).astype(np.float64)  # I, Q interleaved: the mean of twice as many squares
    power = np.vecdot(flat, flat)[..., None] / max(x.shape[-1], 1)
    rms = np.sqrt(power)
    return x * (1.0 / np.where(rms > 0, rms, 1.0)).astype(np.float32)
