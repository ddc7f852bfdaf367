"""Coherent average of the repeated up-chirps of a preamble.

A LoRa preamble repeats one up-chirp ``K`` times (8 by default). Whatever the transmitter's hardware does to
that chirp (IQ imbalance, power-amplifier shape, filter ripple) is repeated in every symbol; the receiver's
noise is not. Averaging the ``K`` symbols sample by sample keeps the repeated waveform and divides the
noise's power by ``K`` (9 dB for 8 symbols), where averaging spectrogram powers only divides its variance.

The symbols must first share one phase: a residual carrier offset ``df`` (after CFO compensation) turns
symbol ``k`` by ``2 pi df k T`` and an oscillator drifting within the preamble by more. Each symbol's phase
is estimated against the others (consecutive symbols' correlations summed into a first guess, then each
symbol's correlation with the running average) and removed before the average. The phase ramp a residual
offset leaves within every symbol is common to all of them and stays in the average.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lorarffi.dsp.spectrogram import as_packets, is_tensor
from lorarffi.errors import ConfigError

__all__ = ["coherent_symbol_average"]


def coherent_symbol_average(iq: Any, period_samples: int, *, refinements: int = 2) -> Any:
    """The phase-aligned mean of each packet's whole symbols.

    Parameters
    ----------
    iq : ndarray or torch.Tensor, complex64, shape (N, L) or (L,)
        Packets starting at a preamble up-chirp (any offset within a symbol works: every symbol-long piece of
        a run of identical chirps is the same cyclic shift of the chirp), CFO-compensated or nearly so.
    period_samples : int
        Samples per symbol (``LoRaConfig.samples_per_symbol``: 1024 at SF7, 125 kHz, 1 MS/s).
    refinements : int
        Passes that re-estimate each symbol's phase against the current average (0: the consecutive-symbol
        estimate alone).

    Returns
    -------
    avg : ndarray or torch.Tensor of complex64, shape (N, period_samples) or (period_samples,)
        Mean of the ``K = L // period_samples`` whole symbols, each rotated onto a common phase (about the
        first symbol's); samples after the last whole symbol are not used. Same kind and device as ``iq``.

    Examples
    --------
    >>> n = np.arange(64)
    >>> chirp = np.exp(1j * np.pi * n * n / 64).astype(np.complex64)
    >>> turned = np.concatenate([chirp * np.exp(1j * p) for p in (0.0, 0.5, 1.0, 1.5)])
    >>> bool(np.allclose(coherent_symbol_average(turned, 64), chirp, atol=1e-5))
    True
    """
    x, one = as_packets(iq)
    period = int(period_samples)
    n, length = x.shape
    if period < 1 or length < 2 * period:
        raise ConfigError(
            f"period_samples={period_samples!r} is not valid for {length}-sample packets: a coherent average "
            "needs at least two whole symbols"
        )
    k = length // period
    symbols = x[:, : k * period].reshape(n, k, period)
    if is_tensor(x):
        import torch

        def angle_of(z: Any) -> Any:
            return torch.polar(torch.ones_like(z.real), torch.angle(z))

        step = angle_of((symbols[:, 1:] * symbols[:, :-1].conj()).sum(-1))
        turn = torch.cat([torch.ones_like(step[:, :1]), torch.cumprod(step, dim=1)], dim=1)
        avg = (symbols * turn.conj()[:, :, None]).mean(1)
        for _ in range(refinements):
            turn = angle_of((symbols * avg.conj()[:, None, :]).sum(-1))
            avg = (symbols * turn.conj()[:, :, None]).mean(1)
    else:

        def angle_of(z: Any) -> Any:
            return np.exp(1j * np.angle(z)).astype(np.complex64)

        step = angle_of(np.einsum("nks,nks->nk", symbols[:, 1:], symbols[:, :-1].conj()))
        turn = np.concatenate([np.ones((n, 1), np.complex64), np.cumprod(step, axis=1)], axis=1)
        avg = np.einsum("nks,nk->ns", symbols, turn.conj()) / np.float32(k)
        for _ in range(refinements):
            turn = angle_of(np.einsum("nks,ns->nk", symbols, avg.conj()))
            avg = np.einsum("nks,nk->ns", symbols, turn.conj()) / np.float32(k)
        avg = avg.astype(np.complex64, copy=False)
    return avg[0] if one else avg
