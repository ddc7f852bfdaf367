"""A bounded ring buffer of complex64 samples between a producer thread and a consumer, sized in seconds.

The producer (a radio reader, a socket reader, a paced simulator) writes runs of samples tagged with their
absolute stream index; the consumer reads contiguous runs back. Memory is one preallocated complex64 array:
nothing grows however long the stream runs. When the producer writes a run whose first index does not follow
the previous run, the gap is kept: a read never spans it, so the consumer sees the jump in indices.

Two policies for a full buffer: ``"block"`` makes the writer wait (back-pressure: a lossless file or a
device that reports its own overflows), ``"drop"`` discards the new run and counts it (a producer that
cannot wait, like a paced virtual radio or a network feed), so the consumer later sees the gap.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Literal

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError

__all__ = ["RingBuffer", "RingClosed", "OverflowPolicy"]

OverflowPolicy = Literal["block", "drop"]


class RingClosed(Exception):
    """Raised by :meth:`RingBuffer.write` when the consumer has closed the buffer."""


class RingBuffer:
    """A fixed-capacity FIFO of complex64 samples with absolute indices, safe for one writer and one reader.

    Parameters
    ----------
    capacity_samples : int
        Number of complex64 samples the buffer holds (e.g. ``buffer_s * fs_hz``).
    overflow : {"block", "drop"}
        What :meth:`write` does when the run does not fit: wait for space, or drop the run and count it.

    Attributes
    ----------
    n_dropped_runs, n_dropped_samples : int
        Runs and samples discarded by the ``"drop"`` policy.
    """

    def __init__(self, capacity_samples: int, *, overflow: OverflowPolicy = "block") -> None:
        if capacity_samples < 1:
            raise ConfigError(f"capacity_samples={capacity_samples} is not valid: use 1 or more")
        if overflow not in ("block", "drop"):
            raise ConfigError(f"overflow={overflow!r} is not valid: use 'block' or 'drop'")
        self.capacity_samples = int(capacity_samples)
        self.overflow = overflow
        self._buf = np.zeros(self.capacity_samples, dtype=np.complex64)
        # Segments of contiguous samples: [first stream index, count, ring position of the first, arrival]
        self._segments: collections.deque[list] = collections.deque()
        self._fill = 0
        self._write_pos = 0
        self._cond = threading.Condition()
        self._eof = False
        self._closed = False
        self._error: BaseException | None = None
        self.n_dropped_runs = 0
        self.n_dropped_samples = 0

    @classmethod
    def for_duration(cls, buffer_s: float, fs_hz: float, *, overflow: OverflowPolicy = "block") -> RingBuffer:
        """A buffer holding ``buffer_s`` seconds at ``fs_hz``."""
        if not (math.isfinite(buffer_s) and buffer_s > 0):
            raise ConfigError(f"buffer_s={buffer_s!r} is not valid: give a positive duration in seconds")
        return cls(max(1, int(math.ceil(buffer_s * fs_hz))), overflow=overflow)

    # -- producer side -------------------------------------------------------------------------------------
    def write(
        self,
        start: int,
        iq: npt.NDArray[np.complex64],
        *,
        arrival_s: float | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """Append a run of samples whose first has absolute index ``start``.

        Parameters
        ----------
        start : int
            Absolute stream index of ``iq[0]``.
        iq : ndarray of complex64, shape (n,)
        arrival_s : float, optional
            ``time.monotonic()`` at which the run arrived from the device (default: now).
        timeout_s : float, optional
            With the ``"block"`` policy, give up after this long and return 0 (default: wait until space).

        Returns
        -------
        n_written : int
            ``n``, or 0 when the run was dropped or the wait timed out.

        Raises
        ------
        RingClosed
            The consumer closed the buffer; the producer should stop.
        """
        n = int(iq.shape[0])
        if n == 0:
            return 0
        arrival = time.monotonic() if arrival_s is None else arrival_s
        if n > self.capacity_samples:  # larger than the whole buffer: write it in pieces
            done = 0
            step = max(1, self.capacity_samples // 2)
            while done < n:
                got = self.write(start + done, iq[done : done + step], arrival_s=arrival, timeout_s=timeout_s)
                if got == 0 and self.overflow == "block":
                    return done
                done += step
            return n
        with self._cond:
            if self._closed:
                raise RingClosed
            if self.capacity_samples - self._fill < n:
                if self.overflow == "drop":
                    self.n_dropped_runs += 1
                    self.n_dropped_samples += n
                    return 0
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                while self.capacity_samples - self._fill < n and not self._closed:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return 0
                    self._cond.wait(left if left is not None else 0.5)
                if self._closed:
                    raise RingClosed
            pos = self._write_pos
            first = min(n, self.capacity_samples - pos)
            self._buf[pos : pos + first] = iq[:first]
            if first < n:
                self._buf[: n - first] = iq[first:]
            self._write_pos = (pos + n) % self.capacity_samples
            self._fill += n
            last = self._segments[-1] if self._segments else None
            if last is not None and last[0] + last[1] == start and last[3] == arrival:
                last[1] += n
            else:
                self._segments.append([int(start), n, pos, arrival])
            self._cond.notify_all()
        return n

    def finish(self, error: BaseException | None = None) -> None:
        """The producer is done (end of stream); with ``error``, the consumer re-raises it after draining."""
        with self._cond:
            self._eof = True
            if error is not None and self._error is None:
                self._error = error
            self._cond.notify_all()

    # -- consumer side -------------------------------------------------------------------------------------
    def read(
        self, max_samples: int, *, timeout_s: float | None = None
    ) -> tuple[int, npt.NDArray[np.complex64], list[tuple[int, float]]] | None:
        """Take up to ``max_samples`` contiguous samples: whatever is waiting, never across a gap.

        A consumer that keeps up gets small chunks soon after they arrive; one that fell behind gets large
        chunks and catches up with fewer calls.

        Returns
        -------
        (start, iq, runs) or None
            ``start`` is the absolute index of ``iq[0]`` (a fresh complex64 array); ``runs`` lists
            ``(first index, arrival_s)`` of the written runs the chunk is made of, in order (monotonic
            clock). ``None`` when the wait timed out.

        Raises
        ------
        EOFError
            The producer finished and everything was read.
        BaseException
            The error the producer finished with, once everything before it was read.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._segments:
                if self._eof:
                    if self._error is not None:
                        raise self._error
                    raise EOFError
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.5)
            start = self._segments[0][0]
            pos = self._segments[0][2]
            n = 0
            runs: list[tuple[int, float]] = []
            limit = int(max_samples)
            while self._segments and n < limit:
                seg = self._segments[0]
                if seg[0] != start + n:
                    break
                take = min(seg[1], limit - n)
                runs.append((seg[0], seg[3]))
                n += take
                if take == seg[1]:
                    self._segments.popleft()
                else:
                    seg[0] += take
                    seg[1] -= take
                    seg[2] = (seg[2] + take) % self.capacity_samples
            out = np.empty(n, dtype=np.complex64)
            first = min(n, self.capacity_samples - pos)
            out[:first] = self._buf[pos : pos + first]
            if first < n:
                out[first:] = self._buf[: n - first]
            self._fill -= n
            self._cond.notify_all()
        return start, out, runs

    @property
    def fill_samples(self) -> int:
        """Samples waiting to be read."""
        return self._fill

    def close(self) -> None:
        """The consumer is gone: wake a blocked writer (its next write raises :class:`RingClosed`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
