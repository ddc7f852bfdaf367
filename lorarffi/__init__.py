"""lora-rffi: LoRa radio-frequency fingerprint identification.

Subpackages, each importing only those listed before it (and :mod:`lorarffi.errors`, the one error family):

- :mod:`lorarffi.dsp`: chirps, packet detection, preamble alignment, CFO, spectrograms (pure array functions).
- :mod:`lorarffi.datasets`: file formats: HDF5 (public LoRa_RFFI layout and ours), raw/WAV/SigMF recordings.
- :mod:`lorarffi.sim`: the device + channel simulator.
- :mod:`lorarffi.capture`: sample sources (SoapySDR, recordings, ZeroMQ, the simulated radio).
- :mod:`lorarffi.rffi`: models, preprocessing, training, inference, hybrid CFO gate, evaluation, checkpoints.
- :mod:`lorarffi.live`: the live pipeline, decision records and sinks.
- :mod:`lorarffi.cli`: the ``lora-rffi`` command, one module per subcommand.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
