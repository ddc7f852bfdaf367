"""Sample sources behind one interface: SoapySDR radios, recordings, ZeroMQ feeds, the simulated radio.

:func:`open_source` opens any of them from a spec string (``soapy:ARGS``, ``file:PATH``, ``zmq:ENDPOINT``,
``zmq+pull:ENDPOINT``, ``sim``); each yields ``(start, iq)`` chunks with live counters (:class:`Source`).

May use :mod:`lorarffi.dsp`, :mod:`lorarffi.datasets` and :mod:`lorarffi.sim`; never :mod:`lorarffi.rffi`,
:mod:`lorarffi.live` or :mod:`lorarffi.cli`.
"""

from lorarffi.capture.base import Source, SourceStats, ThreadedSource
from lorarffi.capture.ring import RingBuffer
from lorarffi.capture.sources import SOURCE_KINDS, open_source

__all__ = ["Source", "SourceStats", "ThreadedSource", "RingBuffer", "open_source", "SOURCE_KINDS"]
