"""The batch convention of the simulator's array functions: IQ rows and per-packet parameters.

Channel and impairment functions take IQ of shape (N, L) or a single row (L,), and per-packet parameters as a
scalar or an array of shape (N,); they compute on (N, L) complex64 and return the caller's shape.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError

__all__ = ["as_batch", "per_packet", "per_packet_column", "unbatch"]


def as_batch(iq: npt.ArrayLike) -> tuple[npt.NDArray[np.complex64], bool]:
    """IQ of shape (N, L) or (L,) as complex64 (N, L) (no copy if it is already), and whether it was (L,)."""
    x = np.asarray(iq)
    if x.ndim not in (1, 2):
        raise ConfigError(f"iq has shape {x.shape}: expected (N, L) or (L,)")
    return np.atleast_2d(x).astype(np.complex64, copy=False), x.ndim == 1


def per_packet(value: float | npt.ArrayLike, n: int, name: str) -> npt.NDArray[np.float64]:
    """A per-packet parameter ``name`` given as a scalar or shape (n,), as float64 of shape (n,)."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        return np.full(n, float(v))
    if v.shape != (n,):
        raise ConfigError(f"{name} has shape {v.shape}: expected a scalar or shape ({n},)")
    return v


def per_packet_column(value: float | npt.ArrayLike, n: int, name: str) -> npt.NDArray[np.float64]:
    """:func:`per_packet` as a column of shape (n, 1), to broadcast along each row."""
    return per_packet(value, n, name)[:, None]


def unbatch(y: npt.NDArray, single: bool) -> npt.NDArray[np.complex64]:
    """``y`` (N, L) as complex64, as the single row (L,) when the input was one (``single``)."""
    y = y.astype(np.complex64, copy=False)
    return y[0] if single else y
