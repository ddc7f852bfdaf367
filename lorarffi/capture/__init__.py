"""Sources (SoapySDR, file/SigMF replay, ZeroMQ, simulator) and sinks (recorder, ZeroMQ, console).

May use :mod:`lorarffi.dsp` and :mod:`lorarffi.datasets`; never :mod:`lorarffi.rffi`.
"""

from lorarffi.capture.base import Source, SourceStats, ThreadedSource
from lorarffi.capture.ring import RingBuffer
from lorarffi.capture.sources import SOURCE_KINDS, open_source

__all__ = ["Source", "SourceStats", "ThreadedSource", "RingBuffer", "open_source", "SOURCE_KINDS"]
