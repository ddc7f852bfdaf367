"""Streaming polyphase resampling whose output does not depend on how the input was chunked.

:class:`StreamResampler` computes output sample ``m`` (at time ``m / fs_out``, input sample ``n`` at
``n / fs_in``) as ``scipy.signal.resample_poly`` does (Kaiser-windowed FIR, cutoff at the lower Nyquist rate,
zero-phase delay), with 4 instead of 10 taps per side per unit of ``max(up, down)``: the LoRa band lies far
inside the passband. Outputs are made in blocks at fixed absolute positions, each from the same input span
whatever the chunking, so the result is bitwise identical for any chunk sizes. :func:`upfirdn_range` is the
polyphase filter: ``scipy.signal.upfirdn`` over a range of outputs, accumulated in complex64 by BLAS
``caxpy``, one pass per tap over contiguous decimated copies of the input.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.linalg.blas import caxpy
from scipy.signal import firwin

__all__ = ["StreamResampler", "upfirdn_range"]

_TAPS_PER_SIDE = 4  # resample_poly uses 10


class StreamResampler:
    """Resample a complex64 stream by ``up / down`` in fixed output blocks.

    Parameters
    ----------
    up, down : int
        Rate change ``fs_out / fs_in = up / down`` (coprime after reduction).
    block_out : int
        Output block length; rounded up to a multiple of ``up``.
    """

    def __init__(self, up: int, down: int, block_out: int) -> None:
        g = math.gcd(int(up), int(down))
        self.up, self.down = int(up) // g, int(down) // g
        self.block_out = -(-int(block_out) // self.up) * self.up
        max_rate = max(self.up, self.down)
        self._half_len = _TAPS_PER_SIDE * max_rate
        h = firwin(2 * self._half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        self._h = h.astype(np.float32)
        self._buf = np.zeros(0, dtype=np.complex64)  # input samples [self._buf_start, ...)
        self._pieces: list[npt.NDArray[np.complex64]] = []  # ... followed by these, up to self.n_in
        self._buf_start = 0
        self.n_in = 0
        self.n_out = 0

    def _span(self, m0: int, count: int) -> tuple[int, int]:
        t0 = m0 * self.down + self._half_len
        first = (t0 - (self._h.size - 1)) // self.up
        last = ((m0 + count - 1) * self.down + self._half_len) // self.up
        return first, last

    def _input(self, a: int, b: int) -> npt.NDArray[np.complex64]:
        if self._pieces:  # join the pieces received since the last block (once per block, not per chunk)
            self._buf = np.concatenate([self._buf, *self._pieces])
            self._pieces = []
        out = np.zeros(b - a, dtype=np.complex64)
        lo, hi = max(a, self._buf_start), min(b, self.n_in)
        if hi > lo:
            out[lo - a : hi - a] = self._buf[lo - self._buf_start : hi - self._buf_start]
        return out

    def _block(self, m0: int, count: int) -> npt.NDArray[np.complex64]:
        first, last = self._span(m0, count)
        seg = self._input(first, last + 1)
        n0 = m0 * self.down + self._half_len - first * self.up
        z = (-n0) % self.down
        h = np.concatenate([np.zeros(z, dtype=np.float32), self._h]) if z else self._h
        return upfirdn_range(h, seg, self.up, self.down, (n0 + z) // self.down, count)

    def process(self, x: npt.NDArray[np.complex64]) -> list[npt.NDArray[np.complex64]]:
        """Feed input samples; returns the output blocks that became complete (each ``block_out`` long)."""
        if x.size:
            self._pieces.append(np.array(x, dtype=np.complex64, copy=True))
            self.n_in += x.size
        out = []
        while self._span(self.n_out, self.block_out)[1] < self.n_in:
            out.append(self._block(self.n_out, self.block_out))
            self.n_out += self.block_out
        keep_from = max(self._span(self.n_out, self.block_out)[0], 0)
        if out and keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :].copy()
            self._buf_start = keep_from
        return out

    def flush(self) -> list[npt.NDArray[np.complex64]]:
        """The remaining outputs, ``ceil(n_in * up / down)`` in all (the input is zero past its end)."""
        total = -(-self.n_in * self.up // self.down)
        out = []
        while self.n_out < total:
            count = min(self.block_out, total - self.n_out)
            out.append(self._block(self.n_out, count))
            self.n_out += count
        return out


def upfirdn_range(h: npt.NDArray[np.float32], x: npt.NDArray[np.complex64], up: int, down: int, i0: int,
                  count: int) -> npt.NDArray[np.complex64]:
    """``scipy.signal.upfirdn(h, x, up, down)[i0 : i0 + count]`` (zeros past its end), in complex64.

    Output ``i`` is ``sum_t h[p + up*t] * x[j - t]`` with ``p = i*down % up`` and ``j = i*down // up``; the
    outputs ``i0 + r + up*q`` share ``p`` and step ``j`` by ``down``, so each tap reads a contiguous slice of
    one of the ``down`` decimated copies of ``x``.
    """
    n_taps = -(-h.size // up)
    table = np.zeros(n_taps * up, dtype=np.float32)
    table[: h.size] = h
    table = table.reshape(n_taps, up)  # table[t, p] = h[p + up*t]
    pad = n_taps + down
    n_sub = -(-(x.size + 2 * pad + 2 * down) // down)
    xp = np.zeros(n_sub * down, dtype=np.complex64)
    xp[pad : pad + x.size] = x
    subs = xp.reshape(n_sub, down).T.copy()  # subs[c, u] = xp[u*down + c]
    y = np.empty(count, dtype=np.complex64)
    for r in range(min(up, count)):
        n_q = -(-(count - r) // up)
        p, j0 = divmod((i0 + r) * down, up)[::-1]
        acc = None
        for t in range(n_taps):
            if p + up * t >= h.size:
                break
            u, c = divmod(pad + j0 - t, down)
            if acc is None:
                acc = subs[c, u : u + n_q] * table[t, p]
            else:  # acc += h * x in one pass (BLAS axpy)
                acc = caxpy(subs[c, u : u + n_q], acc, a=float(table[t, p]))
        y[r::up] = acc if acc is not None else 0
    return y
