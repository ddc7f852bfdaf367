"""The device + channel simulator: look-alike fleets, hardware impairments, multipath channels, streams.

May use :mod:`lorarffi.dsp` and :mod:`lorarffi.datasets` (to write what it simulates); nothing above them.
"""

from lorarffi.sim.simulate import (
    DeviceProfile,
    PreambleSet,
    Session,
    StreamSimulator,
    TransmissionEvent,
    make_fleet,
    simulate_preamble_set,
    simulate_stream,
)

__all__ = [
    "DeviceProfile",
    "make_fleet",
    "Session",
    "PreambleSet",
    "simulate_preamble_set",
    "TransmissionEvent",
    "StreamSimulator",
    "simulate_stream",
]
