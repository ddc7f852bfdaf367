"""Absolute-indexed sample history of a stream, kept as a list of blocks (no copy when appending)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["SampleStore"]


class SampleStore:
    """The recent samples of a 1-D complex64 stream, addressed by absolute index.

    Blocks are appended without copying; ``owned=False`` marks a block that is a view of the caller's memory,
    which :meth:`own` copies before the caller may reuse it.
    """

    def __init__(self) -> None:
        self._blocks: list[list] = []  # [start, array, owned]
        self.end = 0

    @property
    def start(self) -> int:
        """Absolute index of the oldest sample held."""
        return self._blocks[0][0] if self._blocks else self.end

    def append(self, x: npt.NDArray[np.complex64], *, owned: bool) -> None:
        self._blocks.append([self.end, x, owned])
        self.end += x.size

    def pop(self) -> None:
        """Forget the block appended last (the stream's end moves back to its start)."""
        start, _x, _owned = self._blocks.pop()
        self.end = start

    def get(self, a: int, b: int) -> npt.NDArray[np.complex64]:
        """Samples ``[a, b)`` as a new array; zeros where nothing is held (before start, after end)."""
        out = np.zeros(max(b - a, 0), dtype=np.complex64)
        for start, x, _owned in self._blocks:
            lo, hi = max(a, start), min(b, start + x.size)
            if hi > lo:
                out[lo - a : hi - a] = x[lo - start : hi - start]
        return out

    def view(self, a: int, b: int) -> npt.NDArray[np.complex64]:
        """Samples ``[a, b)`` for reading within the current call: a read-only view of the block that holds
        them all when there is one (no copy), else as :meth:`get`. A view of a block that is not ``owned`` is
        valid only until the caller reuses its memory."""
        for start, x, _owned in self._blocks:
            if start <= a and b <= start + x.size:
                v = x[a - start : b - start]
                v.flags.writeable = False
                return v
        return self.get(a, b)

    def covers(self, a: int) -> bool:
        """True when sample ``a`` (and everything after it up to the end) is held."""
        return a >= self.start

    def trim(self, keep_from: int) -> None:
        """Forget blocks that end at or before ``keep_from``."""
        while self._blocks and self._blocks[0][0] + self._blocks[0][1].size <= keep_from:
            self._blocks.pop(0)

    def own(self, keep_from: int) -> None:
        """Copy the part at or after ``keep_from`` of every block that is still a view of caller memory."""
        for blk in self._blocks:
            start, x, owned = blk
            if owned or start + x.size <= keep_from:
                continue
            cut = max(keep_from - start, 0)
            blk[0], blk[1], blk[2] = start + cut, x[cut:].copy(), True
