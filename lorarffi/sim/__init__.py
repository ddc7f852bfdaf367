"""The device + channel simulator: look-alike fleets, sessions, aligned preamble sets and packet streams.

- :mod:`~lorarffi.sim.fleet`: devices (:class:`DeviceProfile`) with persistent fingerprints, and look-alike
  fleets of one chip model (:func:`make_fleet`); :mod:`~lorarffi.sim.oscillator`: their carrier-offset
  models (datasheet, or calibrated on real devices) and named environments.
- :mod:`~lorarffi.sim.session`: a capture's day, time since power-on, place and environment
  (:class:`Session`).
- :mod:`~lorarffi.sim.impairments`, :mod:`~lorarffi.sim.trajectory`, :mod:`~lorarffi.sim.transmitter`: the
  transmitter hardware and its signal chain; :mod:`~lorarffi.sim.channel`: multipath, Doppler, CFO, AWGN
  (both on the batch convention of :mod:`~lorarffi.sim.batch`).
- :mod:`~lorarffi.sim.preambles`: aligned fingerprint windows like the public LoRa_RFFI dataset
  (:func:`simulate_preamble_set`); :mod:`~lorarffi.sim.stream`: a continuous stream of whole packets with
  ground truth (:class:`StreamSimulator`, the ``sim`` virtual radio; :func:`simulate_stream`).
- :mod:`~lorarffi.sim.receiver`: another receiver (:class:`ReceiverProfile`): its IQ imbalance, DC offset,
  phase noise, clock error, ADC and sample rate, an option of preamble sets and streams.
- :mod:`~lorarffi.sim.gallery`: a figure of what each impairment does.

May use :mod:`lorarffi.dsp`; nothing above it.
"""

from lorarffi.sim.fleet import DeviceProfile, make_fleet
from lorarffi.sim.preambles import PreambleSet, simulate_preamble_set
from lorarffi.sim.receiver import RECEIVERS, ReceiverProfile
from lorarffi.sim.session import Session
from lorarffi.sim.stream import StreamSimulator, TransmissionEvent, simulate_stream

__all__ = [
    "DeviceProfile",
    "make_fleet",
    "Session",
    "PreambleSet",
    "simulate_preamble_set",
    "ReceiverProfile",
    "RECEIVERS",
    "TransmissionEvent",
    "StreamSimulator",
    "simulate_stream",
]
