"""File formats: the public LoRa_RFFI HDF5 layout, our own HDF5 schema, raw/WAV/SigMF recordings.

:func:`load_dataset` and :func:`open_preamble_file` read preamble sets of either HDF5 layout,
:class:`PreambleWriter` writes ours, :func:`open_recording` reads any IQ recording in chunks, and
:func:`write_sigmf` / :class:`SigMFRecorder` write SigMF.

May use :mod:`lorarffi.dsp`; nothing above it.
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
]
