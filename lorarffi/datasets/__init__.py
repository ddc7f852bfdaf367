"""Datasets: the public LoRa_RFFI HDF5 layout, our own HDF5 schema, SigMF recordings, the device simulator.

May use :mod:`lorarffi.dsp`; never :mod:`lorarffi.capture` or :mod:`lorarffi.rffi`.
"""

from lorarffi.datasets.native import (
    PreambleFile,
    PreambleWriter,
    convert,
    detect_layout,
    load_dataset,
    open_preamble_file,
)
from lorarffi.datasets.public import load_public
from lorarffi.datasets.recording import RAW_FORMATS, SIGMF_DATATYPES, Recording, open_recording
from lorarffi.datasets.sigmf_io import SigMFRecorder, make_annotation, write_sigmf
from lorarffi.datasets.simulate import (
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
    "Recording",
    "open_recording",
    "RAW_FORMATS",
    "SIGMF_DATATYPES",
    "load_public",
    "load_dataset",
    "open_preamble_file",
    "PreambleFile",
    "PreambleWriter",
    "convert",
    "detect_layout",
    "write_sigmf",
    "SigMFRecorder",
    "make_annotation",
    "DeviceProfile",
    "make_fleet",
    "Session",
    "PreambleSet",
    "simulate_preamble_set",
    "TransmissionEvent",
    "StreamSimulator",
    "simulate_stream",
]
