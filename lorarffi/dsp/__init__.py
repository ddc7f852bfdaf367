"""LoRa signal processing: pure functions on arrays, no I/O.

Chirp synthesis, packet detection, preamble alignment, CFO estimation and compensation, RMS normalisation,
spectrograms and model input representations.
This subpackage imports nothing of lora-rffi's other subpackages (only the leaf :mod:`lorarffi.errors`).
"""

from lorarffi.dsp.cfo import compensate_cfo, estimate_cfo, estimate_coarse_cfo, estimate_fine_cfo
from lorarffi.dsp.chirp import (
    PacketLayout,
    downchirp,
    modulate,
    packet_layout,
    packet_waveform,
    sync_word_from_symbols,
    sync_word_symbols,
    upchirp,
)
from lorarffi.dsp.config import SYNC_WORD_LORAWAN, SYNC_WORD_PRIVATE, VALID_BW_HZ, LoRaConfig
from lorarffi.dsp.detect import StreamDetector, detect
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.dsp.packet import Packet
from lorarffi.dsp.representation import (
    RepresentationConfig,
    available_representations,
    output_shape,
    register_representation,
    represent,
)
from lorarffi.dsp.spectrogram import channel_independent_spectrogram, spectrogram

__all__ = [
    "LoRaConfig",
    "VALID_BW_HZ",
    "SYNC_WORD_PRIVATE",
    "SYNC_WORD_LORAWAN",
    "PacketLayout",
    "packet_layout",
    "packet_waveform",
    "upchirp",
    "downchirp",
    "modulate",
    "sync_word_symbols",
    "sync_word_from_symbols",
    "Packet",
    "StreamDetector",
    "detect",
    "estimate_cfo",
    "estimate_coarse_cfo",
    "estimate_fine_cfo",
    "compensate_cfo",
    "rms_normalize",
    "spectrogram",
    "channel_independent_spectrogram",
    "RepresentationConfig",
    "represent",
    "output_shape",
    "register_representation",
    "available_representations",
]
