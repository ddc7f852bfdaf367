"""The one interface every sample source implements: :class:`Source`.

Iterating a source yields ``(start, iq)``: the absolute stream index of the chunk's first sample and a
complex64 chunk. Indices only grow; a jump means samples were lost (a radio overflow, a dropped network
message, a full ring buffer) and is counted in :class:`SourceStats`. Sources carry their metadata
(``fs_hz``, ``center_freq_hz``, ``start_time``) and live counters, are closed with :meth:`Source.close`
(or a ``with`` block), and can be asked to stop from another thread or a signal handler with
:meth:`Source.stop`.

Threaded sources (radio, network, paced simulator) share :class:`ThreadedSource`: a producer thread writes
into a :class:`~lorarffi.capture.ring.RingBuffer` sized in seconds and the consumer iterates it.
"""

from __future__ import annotations

import abc
import bisect
import collections
import datetime as _dt
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.capture.ring import OverflowPolicy, RingBuffer, RingClosed
from lorarffi.errors import CaptureError, ConfigError

__all__ = ["Source", "SourceStats", "ThreadedSource", "Pacer", "Chunk"]

log = logging.getLogger(__name__)

Chunk = tuple[int, npt.NDArray[np.complex64]]
_ARRIVAL_HISTORY = 1 << 14  # runs remembered for arrival_time_s


@dataclass(frozen=True, slots=True)
class SourceStats:
    """A snapshot of a source's counters.

    Attributes
    ----------
    n_samples : int
        Samples delivered to the consumer.
    n_overflows : int
        Overflow events: reads that reported lost samples (``SOAPY_SDR_OVERFLOW``), runs dropped by a full
        ring buffer, and gaps in the offsets of tagged network messages.
    n_lost_samples : int
        Sample positions lost: the sum of the jumps in the delivered indices.
    n_gaps : int
        Jumps in the delivered indices.
    n_untimed_overflows : int
        Overflows whose size is unknown (the device gives no timestamps); the indices after such an
        overflow run on as if nothing was lost.
    n_timeouts : int
        Reads that timed out and were retried.
    n_bad_frames : int
        Malformed messages counted and dropped (network sources).
    next_index : int
        Index the next sample will have if nothing is lost.
    """

    n_samples: int = 0
    n_overflows: int = 0
    n_lost_samples: int = 0
    n_gaps: int = 0
    n_untimed_overflows: int = 0
    n_timeouts: int = 0
    n_bad_frames: int = 0
    next_index: int = 0

    def to_dict(self) -> dict[str, int]:
        """Plain-typed fields for JSON."""
        return {name: int(getattr(self, name)) for name in self.__slots__}


class Source(abc.ABC):
    """A stream of complex64 samples with absolute indices, metadata and counters.

    Subclasses implement :meth:`_chunks`, yielding ``(start, iq)`` or ``(start, iq, arrival_s)``; the base
    class counts samples and index gaps, records the arrival time of the last chunk, honours
    :meth:`stop` and closes on exit.

    Attributes
    ----------
    name : str
        The spec the source was opened with (``"file:x.sigmf-meta"``, ``"sim"``...).
    fs_hz : float
        Sample rate in Hz.
    center_freq_hz : float or None
        Receiver centre frequency in Hz when known.
    start_time : datetime or None
        UTC time of sample 0 when known.
    finite : bool
        True when the stream ends by itself (a file without looping).

    Notes
    -----
    :meth:`arrival_time_s` tells when a recent sample arrived from the device or network (for paced sources,
    when it was produced): the ``time.monotonic()`` of the run that carried it. Latency is measured from it.
    """

    name: str = "source"
    finite: bool = False

    def __init__(
        self, *, fs_hz: float, center_freq_hz: float | None = None, start_time: _dt.datetime | None = None
    ) -> None:
        if not (math.isfinite(fs_hz) and fs_hz > 0):
            raise ConfigError(f"fs_hz={fs_hz!r} is not valid: give a positive sample rate in Hz")
        self.fs_hz = float(fs_hz)
        self.center_freq_hz = None if center_freq_hz is None else float(center_freq_hz)
        self.start_time = start_time
        self._arrival_starts: collections.deque[int] = collections.deque()
        self._arrival_times: collections.deque[float] = collections.deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._n_samples = 0
        self._n_lost = 0
        self._n_gaps = 0
        self._next_index: int | None = None
        self.n_overflows = 0
        self.n_untimed_overflows = 0
        self.n_timeouts = 0
        self.n_bad_frames = 0
        self._closed = False

    # -- to implement ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _chunks(self) -> Iterator[tuple]:
        """Yield ``(start, iq)`` or ``(start, iq, runs)`` until the stream ends or :meth:`stop` is called.

        ``runs`` lists ``(first index, arrival_s)`` of the pieces the chunk arrived in (monotonic clock);
        without it the chunk arrived when it is yielded.
        """

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, devices, sockets)."""

    # -- the interface ---------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Chunk]:
        for item in self._chunks():
            start, iq = int(item[0]), item[1]
            n = int(iq.shape[0])
            if n == 0:
                continue
            runs = item[2] if len(item) > 2 else ((start, time.monotonic()),)
            for run_start, arrival in runs:
                self._arrival_starts.append(run_start)
                self._arrival_times.append(arrival)
            while len(self._arrival_starts) > _ARRIVAL_HISTORY:
                self._arrival_starts.popleft()
                self._arrival_times.popleft()
            with self._lock:
                if self._next_index is not None and start != self._next_index:
                    if start < self._next_index:
                        raise CaptureError(
                            f"{self.name}: sample index went backwards from {self._next_index} to {start}"
                        )
                    self._n_gaps += 1
                    self._n_lost += start - self._next_index
                self._next_index = start + n
                self._n_samples += n
            yield start, iq
            if self._stop.is_set():
                return

    def arrival_time_s(self, index: int) -> float:
        """``time.monotonic()`` at which sample ``index`` arrived (of the recent samples; older ones give the
        oldest arrival remembered). Call from the consuming thread."""
        if not self._arrival_starts:
            return time.monotonic()
        k = bisect.bisect_right(self._arrival_starts, int(index)) - 1
        return self._arrival_times[max(k, 0)]

    def loss_unobservable_reason(self) -> str | None:
        """Why the loss counters may be short of what was really lost, or None when every loss is counted.

        Here: overflows whose size is unknown (:attr:`SourceStats.n_untimed_overflows`). Sources whose
        transport can lose data without a trace (raw ZeroMQ PUB/SUB) add their own reasons.
        """
        n = self.n_untimed_overflows
        if n:
            return f"{n} overflow(s) of unknown size: the samples lost in them are not counted"
        return None

    def stats(self) -> SourceStats:
        """The counters now (safe to call from any thread)."""
        with self._lock:
            return SourceStats(
                n_samples=self._n_samples,
                n_overflows=self.n_overflows,
                n_lost_samples=self._n_lost,
                n_gaps=self._n_gaps,
                n_untimed_overflows=self.n_untimed_overflows,
                n_timeouts=self.n_timeouts,
                n_bad_frames=self.n_bad_frames,
                next_index=self._next_index or 0,
            )

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the stream to end after the current chunk (safe from other threads and signal handlers)."""
        self._stop.set()

    def close(self) -> None:
        """Stop and release the source; idempotent."""
        self._stop.set()
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, object]:
        """Metadata for logs, summaries and recordings."""
        return {
            "source": self.name,
            "fs_hz": self.fs_hz,
            "center_freq_hz": self.center_freq_hz,
            "start_time": None if self.start_time is None else self.start_time.isoformat(),
        }


class ThreadedSource(Source):
    """A source whose samples come from a producer thread through a bounded ring buffer.

    Subclasses implement :meth:`_produce`, which runs in the thread and calls :meth:`_emit` with each run of
    samples until the stream ends, :meth:`stopping` turns true, or an error (re-raised in the consumer,
    after the samples before it). Errors that are not :class:`~lorarffi.errors.LoraRffiError` are wrapped
    in :class:`~lorarffi.errors.CaptureError`.

    Parameters
    ----------
    buffer_s : float
        Ring buffer length in seconds of signal.
    overflow : {"block", "drop"}
        Full-buffer policy: the producer waits, or the run is dropped and counted as an overflow.
    chunk_samples : int
        Largest chunk handed to the consumer.
    """

    def __init__(
        self,
        *,
        fs_hz: float,
        buffer_s: float = 2.0,
        overflow: OverflowPolicy = "block",
        chunk_samples: int = 1 << 16,
        **meta: object,
    ) -> None:
        super().__init__(fs_hz=fs_hz, **meta)  # type: ignore[arg-type]
        if chunk_samples < 1:
            raise ConfigError(f"chunk_samples={chunk_samples} is not valid: use 1 or more")
        self.chunk_samples = int(chunk_samples)
        self._ring = RingBuffer.for_duration(buffer_s, fs_hz, overflow=overflow)
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def _produce(self) -> None:
        """Run in the producer thread: read the device and call :meth:`_emit`; return at end of stream."""

    def _emit(self, start: int, iq: npt.NDArray[np.complex64], arrival_s: float | None = None) -> bool:
        """Hand a run to the consumer; False when the consumer is gone (the producer should return)."""
        try:
            written = self._ring.write(start, iq, arrival_s=arrival_s)
        except RingClosed:
            return False
        if written == 0 and iq.shape[0] and self._ring.overflow == "drop":
            with self._lock:
                self.n_overflows += 1
        return True

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._produce()
        except RingClosed:
            pass
        except CaptureError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - any producer failure ends the stream with a clear error
            from lorarffi.errors import LoraRffiError

            error = exc if isinstance(exc, LoraRffiError) else CaptureError(f"{self.name}: {exc}")
            if not isinstance(exc, LoraRffiError):
                log.debug("producer of %s failed", self.name, exc_info=True)
        finally:
            self._ring.finish(error)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"lorarffi-{self.name}", daemon=True)
            self._thread.start()

    def _chunks(self) -> Iterator[tuple]:
        self._start()
        while True:
            try:
                got = self._ring.read(self.chunk_samples, timeout_s=0.1)
            except EOFError:
                return
            if got is None:
                if self._stop.is_set():
                    return
                continue
            yield got

    def _close(self) -> None:
        self._ring.close()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                log.warning("%s: producer thread did not stop within 10 s", self.name)

    @property
    def buffer_fill_samples(self) -> int:
        """Samples waiting in the ring buffer."""
        return self._ring.fill_samples


class Pacer:
    """Releases samples at ``speed`` times real time, like a radio's clock.

    Parameters
    ----------
    fs_hz : float
        Sample rate of the stream in Hz.
    speed : float or None
        Multiple of real time (1.0: as a radio; 10.0: ten times faster); None or 0: no pacing.
    """

    def __init__(self, fs_hz: float, speed: float | None) -> None:
        if speed is not None and not (math.isfinite(speed) and speed >= 0):
            raise ConfigError(
                f"speed={speed!r} is not valid: give a multiple of real time > 0 (or 0 for none)"
            )
        self.rate_per_s = None if not speed else fs_hz * speed
        self.t0 = time.monotonic()

    def wait_until(self, n_samples: int, stop: threading.Event) -> float:
        """Sleep until sample ``n_samples`` (counted from the start) is due; returns the time it was due."""
        if self.rate_per_s is None:
            return time.monotonic()
        due = self.t0 + n_samples / self.rate_per_s
        left = due - time.monotonic()
        if left > 0:
            stop.wait(left)
        return due
