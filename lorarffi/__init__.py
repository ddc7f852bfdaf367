"""lora-rffi: LoRa radio-frequency fingerprint identification.

Subpackages, in the one direction data flows:

- :mod:`lorarffi.dsp`: chirps, packet detection, preamble alignment, CFO, spectrograms (pure array functions).
- :mod:`lorarffi.capture`: sources (SoapySDR, file replay, ZeroMQ, simulator) and sinks.
- :mod:`lorarffi.datasets`: HDF5 (public LoRa_RFFI layout and ours), SigMF, the device + channel simulator.
- :mod:`lorarffi.rffi`: models, training, hybrid classifier, registry, authentication, CLI.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
