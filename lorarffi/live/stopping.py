"""How a run over a source ends: after a duration of signal, or cleanly on Ctrl-C / SIGTERM.

:func:`chunks_within` cuts a source's stream at ``duration_s`` of signal (stream positions, not wall clock);
:func:`stop_on_signals` turns SIGINT and SIGTERM into :meth:`~lorarffi.capture.base.Source.stop`, so the
stream ends after its current chunk and the run drains, closes its device and writes its summary.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.capture.base import Source

__all__ = ["chunks_within", "stop_on_signals", "stop_after"]

log = logging.getLogger(__name__)


def chunks_within(
    source: Source, duration_s: float | None
) -> Iterator[tuple[int, npt.NDArray[np.complex64]]]:
    """The source's ``(start, iq)`` chunks up to ``duration_s`` seconds of stream after its first sample.

    The chunk that crosses the limit is cut there and the iteration ends with it; a chunk that starts at or
    past the limit (samples were lost across it) ends the iteration without being yielded. Stream positions
    count, so lost samples count towards the duration. ``None``: every chunk; 0 or less: none. At the limit
    the source is asked to stop (:meth:`~lorarffi.capture.base.Source.stop`), so a producer that runs ahead
    of the consumer does not go on filling its buffer, and overflowing it, with samples past the run's end.
    """
    if duration_s is None:
        yield from source
        return
    limit = int(round(duration_s * source.fs_hz))
    first = None
    for start, iq in source:
        if first is None:
            first = start
        left = limit - (start - first)
        if left <= 0:
            source.stop()
            return
        if iq.shape[0] >= left:
            source.stop()
            yield start, iq[:left]
            return
        yield start, iq


@contextlib.contextmanager
def stop_on_signals(source: Source) -> Iterator[None]:
    """Within the block, SIGINT (Ctrl-C) and SIGTERM stop ``source`` cleanly instead of killing the process.

    The stream then ends after its current chunk, so the pipeline drains, closes the device and writes its
    summary. A second Ctrl-C raises :class:`KeyboardInterrupt` as usual. Outside the main thread (where signal
    handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits = {"n": 0}

    def handler(signum: int, _frame: Any) -> None:
        hits["n"] += 1
        if hits["n"] > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s: stopping (%s)", source.name, signal.Signals(signum).name)
        source.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def stop_after(source: Source, timeout_s: float | None) -> Iterator[threading.Event]:
    """Within the block, stop ``source`` after ``timeout_s`` seconds of wall time (as Ctrl-C would); the
    event yielded is set when that happened. ``None``: no limit."""
    fired = threading.Event()
    if timeout_s is None:
        yield fired
        return

    def fire() -> None:
        fired.set()
        log.warning("%s: stopping: %g s of wall time passed", source.name, timeout_s)
        source.stop()

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()
