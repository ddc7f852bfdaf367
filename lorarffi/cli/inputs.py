"""The INPUT of ``enroll`` and ``authenticate``: a preamble dataset (HDF5, device ids from the file) or a
recording (raw, SigMF or WAV: detection runs first), read as packets in a model's view.

A recording's packets carry their start sample and SNR; a SigMF recording whose annotations label its packets
(``core:label``, as ``lora-rffi simulate --stream`` writes: a device id or ``rogue``) gives each detected
packet the label of the annotation starting within one symbol of it (:data:`UNLABELLED` when none does,
:data:`ROGUE_LABEL` for ``rogue``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lorarffi.cli.common import (
    add_lora_args,
    add_torch_device_arg,
    add_whole_packets_arg,
    int_range,
    lora_config,
    packet_symbols_of,
    slice_arg,
)
from lorarffi.cli.progress import add_progress_arg
from lorarffi.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from lorarffi.rffi.embedding import Embedder

__all__ = ["PacketInput", "add_input_args", "add_recording_args", "is_dataset", "read_input", "ROGUE_LABEL",
           "UNLABELLED"]

ROGUE_LABEL = -1
"""Label of a packet a recording's annotations call ``rogue`` (never an enrolled id: ids are >= 0)."""
UNLABELLED = -2
"""Label of a detected packet no annotation matches."""
# Flags that apply to a recording: flag, type, default, help.
_RECORDING_FLAGS = (
    ("--format", str, None, "sample format of a raw recording: cf32, ci16, cu8 or ci8"),
    ("--chunk-samples", int, 1 << 20, "samples read per chunk (default 1048576)"),
)


@dataclass(frozen=True)
class PacketInput:
    """Packets of an INPUT in a model's view.

    Attributes
    ----------
    preambles : ndarray of complex64, shape (N, L)
        Aligned, unit-RMS, CFO compensated when the model takes it so.
    cfo_hz : ndarray of float64, shape (N,)
        CFO estimates, Hz (NaN: a stored row that is not a preamble).
    labels : ndarray of int64, shape (N,), or None
        Who sent each packet, when the input says (a dataset's device ids, a labelled recording's).
    start_sample : ndarray of int64, shape (N,), or None
        First preamble sample of each packet in a recording (of a dataset: as stored, -1 unknown; None when
        the file stores none).
    snr_db : ndarray of float64, shape (N,), or None
        SNR estimate of each packet of a recording, dB (of a dataset: as stored, NaN unknown).
    kind : {"dataset", "recording"}
    source : str
        The INPUT as given.
    packet_input : {"preamble", "whole_packets"}
        ``"whole_packets"`` when some packet's fingerprint came from more up-chirps than its preamble's
        (``--whole-packets`` on rows or a recording that hold them).
    """

    preambles: npt.NDArray[np.complex64]
    cfo_hz: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64] | None
    start_sample: npt.NDArray[np.int64] | None
    snr_db: npt.NDArray[np.float64] | None
    kind: str
    source: str
    packet_input: str = "preamble"

    def __len__(self) -> int:
        return int(self.cfo_hz.size)


def add_input_args(
    p: argparse.ArgumentParser, *, model_help: str, registry_help: str | None = None
) -> None:
    """``MODEL_DIR``, ``INPUT``, ``--registry`` (required unless ``registry_help`` says what it is for),
    ``--devices``, ``--packets``, ``--format``, ``--chunk-samples``, ``--device``, the LoRa flags and
    ``--no-progress``."""
    p.add_argument("model_dir", metavar="MODEL_DIR", help=model_help)
    p.add_argument(
        "input",
        metavar="INPUT",
        help="a preamble dataset (HDF5, ours or the public layout) or a recording (raw, .sigmf-meta, .wav)",
    )
    p.add_argument(
        "--registry",
        required=registry_help is None,
        metavar="REG",
        help=registry_help or "registry: SQLite file or database URL",
    )
    p.add_argument("--devices", type=int_range, help="dataset: device ids, e.g. 21-30 (default all)")
    p.add_argument(
        "--packets",
        type=slice_arg,
        help="packet range: per device of a dataset, e.g. 0:100; of the detected packets of a recording",
    )
    add_recording_args(p)
    add_whole_packets_arg(p)
    add_torch_device_arg(p)
    add_lora_args(p, default_from="the file's, else the model's")
    add_progress_arg(p)


def add_recording_args(p: argparse.ArgumentParser) -> None:
    """``--format`` and ``--chunk-samples``: how a recording INPUT is read."""
    for flag, kind, default, text in _RECORDING_FLAGS:
        p.add_argument(flag, type=kind, default=default, help=text)


def is_dataset(path: str) -> bool:
    """Whether ``path`` is an HDF5 file (a preamble dataset); anything else is read as a recording."""
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def read_input(args: argparse.Namespace, embedder: Embedder) -> PacketInput:
    """Read ``args.input`` as packets in ``embedder``'s view (module docstring).

    Raises
    ------
    ConfigError
        Empty selection, a flag that does not apply, or data at other LoRa parameters than the model's.
    InputDataError
        The file cannot be read.
    """
    if is_dataset(args.input):
        return _read_dataset(args, embedder)
    if args.devices is not None:
        raise ConfigError(f"--devices selects devices of a dataset; {args.input} is a recording")
    return _read_recording(args, embedder)


def _read_dataset(args: argparse.Namespace, embedder: Embedder) -> PacketInput:
    from lorarffi.cli.data import check_model_parameters, load_selection

    sel_args = argparse.Namespace(**{**vars(args), "data": args.input})
    sel = load_selection(sel_args, fallback=embedder.lora)
    check_model_parameters(sel, embedder.lora, sel_args, embedder.model_dir)
    whole = packet_symbols_of(args) and _can_read_whole(embedder, embedder.lora.fs_hz, args.input)
    pre = embedder.preprocess(sel.iq, source=args.input, packet_symbols=whole)
    start, snr = _known(sel.meta.get("start")), _known(sel.meta.get("snr_db"))
    return PacketInput(pre.iq, pre.cfo_hz, sel.device_ids, start, snr, "dataset", args.input,
                       _packet_input(pre.n_symbols, embedder.lora.preamble_symbols))


def _packet_input(n_symbols: npt.NDArray[np.int64] | None, preamble_symbols: int) -> str:
    """``"whole_packets"`` when some row used more up-chirps than its preamble's, else ``"preamble"``."""
    import numpy as np

    read_whole = n_symbols is not None and bool(np.any(np.asarray(n_symbols) > preamble_symbols))
    return "whole_packets" if read_whole else "preamble"


def _known(values: npt.NDArray | None) -> npt.NDArray | None:
    """Stored per-packet values, or None when the file knows none (all -1 or NaN: public files)."""
    import numpy as np

    if values is None or values.size == 0:
        return None
    unknown = np.isnan(values) if values.dtype.kind == "f" else values < 0
    return None if unknown.all() else values


def _read_recording(args: argparse.Namespace, embedder: Embedder) -> PacketInput:
    import numpy as np

    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.datasets.recording import open_recording
    from lorarffi.dsp import StreamDetector

    if args.chunk_samples < 1:
        raise ConfigError(f"--chunk-samples={args.chunk_samples} is not valid: use 1 or more")
    with open_recording(args.input, format=args.format, fs_hz=args.fs_hz) as rec:
        cfg = lora_config(args, embedder.lora, trained=True, fs_hz=rec.fs_hz)
        det = StreamDetector(cfg)
        packets = []
        with progress_bar("detect", rec.n_samples or None, enabled=progress_enabled(args)) as advance:
            for _start, chunk in rec.iter_chunks(args.chunk_samples):
                packets += det.process(chunk)
                advance(chunk.size)
        packets += det.flush()
        annotations = rec.annotations
        detected_starts = [p.fingerprint_start for p in packets]  # all of them bound each packet's end
        if args.packets is not None:
            packets = packets[args.packets]
        if not packets:
            raise ConfigError(
                f"{args.input}: no LoRa packet detected" + (" in --packets" if args.packets else "")
            )
        preambles = embedder.packet_preambles(packets)
        n_symbols = None
        if packet_symbols_of(args):
            preambles, n_symbols = _whole_packets(
                rec, packets, preambles, embedder, source=args.input, detected_starts=detected_starts
            )
    start = np.array([p.start for p in packets], np.int64)
    symbol_samples = cfg.n_chips * cfg.fs_hz / cfg.bw_hz
    return PacketInput(
        preambles,
        np.array([p.cfo_hz for p in packets], np.float64),
        _annotation_labels(annotations, start, symbol_samples),
        start,
        np.array([p.snr_db for p in packets], np.float64),
        "recording",
        args.input,
        _packet_input(n_symbols, cfg.preamble_symbols),
    )


WHOLE_PACKET_SYMBOLS = 64
"""Header/payload symbols read after a detected packet's SFD for its whole-packet fingerprint (fewer when
the next packet starts earlier or the recording ends)."""
_WHOLE_PACKET_BATCH = 256  # packets read and estimated at once: bounds the windows held in memory


def _can_read_whole(embedder: Embedder, fs_hz: float, source: str) -> bool:
    """Whether ``--whole-packets`` can read packets sampled at ``fs_hz`` for ``embedder``: a model that
    removes the CFO, packets at its sample rate, an integer number of samples per chip. Else one warning line
    says the preambles are used alone."""
    import logging
    import math

    cfg = embedder.lora
    why = None
    if not embedder.config.cfo_compensation:
        why = "a model that removes the CFO"
    elif not math.isclose(fs_hz, cfg.fs_hz, rel_tol=1e-9):
        why = f"packets at the model's {cfg.fs_hz:g} Hz (these are at {fs_hz:g} Hz)"
    elif not cfg.is_integer_oversampling:
        why = f"an integer number of samples per chip (the model's {cfg.fs_hz:g} / {cfg.bw_hz:g} Hz is not)"
    if why is not None:
        logging.getLogger(__name__).warning(
            "%s: --whole-packets: packets read by their preamble alone (whole packets need %s)", source, why)
    return why is None


def _whole_packets(rec, packets, preambles, embedder: Embedder, *, source: str, detected_starts=None):
    """``preambles`` with each packet's estimated from all of its up-chirps (module docstring of
    :mod:`lorarffi.dsp.packet_symbol`): the recording is read again from each packet's first preamble
    up-chirp up to :data:`WHOLE_PACKET_SYMBOLS` symbols after its SFD, the next detected packet's start or the
    recording's end (``detected_starts``: the first up-chirps of every detected packet, when ``packets`` is
    a selection of them). Needs what :func:`_can_read_whole` checks (else the preambles as they are). Also
    returns the symbols each packet's row holds."""
    import numpy as np

    from lorarffi.dsp.cfo import compensate_cfo
    from lorarffi.dsp.packet_symbol import packet_tail_samples
    from lorarffi.rffi.preprocess import whole_packet_preambles

    cfg = embedder.lora
    if not _can_read_whole(embedder, rec.fs_hz, source):
        return preambles, np.full(len(packets), cfg.preamble_symbols, np.int64)
    length = cfg.preamble_samples + packet_tail_samples(cfg, WHOLE_PACKET_SYMBOLS)
    first = np.array([p.fingerprint_start for p in packets], np.int64)
    starts = first if detected_starts is None else np.asarray(detected_starts, np.int64)
    later = np.sort(starts[starts >= 0])
    nxt = first  # the next detected packet's first up-chirp (itself when there is none)
    if later.size:
        nxt = later[np.minimum(np.searchsorted(later, first, side="right"), later.size - 1)]
    stop = np.where(nxt > first, np.minimum(first + length, nxt), first + length)
    if rec.n_samples:
        stop = np.minimum(stop, rec.n_samples)
    # whole symbols only: a symbol cut by the next packet or the recording's end stays out
    sps, pre, head = cfg.samples_per_symbol, cfg.preamble_samples, packet_tail_samples(cfg, 0)
    held = stop - first
    stop = first + np.where(held >= pre + head, pre + head + (held - pre - head) // sps * sps,
                            np.where(held >= pre + 2 * sps, pre + 2 * sps, pre))
    out = preambles.copy()
    n_symbols = np.full(len(packets), cfg.preamble_symbols, np.int64)
    whole = np.flatnonzero(first >= 0)  # a packet cut by the recording's start keeps its (padded) preamble
    for b0 in range(0, whole.size, _WHOLE_PACKET_BATCH):
        batch = whole[b0 : b0 + _WHOLE_PACKET_BATCH]
        rows = np.zeros((batch.size, length), np.complex64)
        for j, i in enumerate(batch):
            x = rec.read(int(first[i]), int(max(0, stop[i] - first[i])))
            rows[j, : x.size] = compensate_cfo(x, packets[i].cfo_hz, cfg.fs_hz)
        out[batch], n_symbols[batch] = whole_packet_preambles(rows, out[batch], cfg, source=source)
    return out, n_symbols


def _annotation_labels(
    annotations: list[dict], start: npt.NDArray[np.int64], tolerance_samples: float
) -> npt.NDArray[np.int64] | None:
    """Labels of detected packets from a recording's annotations (None when none is labelled)."""
    import numpy as np

    labelled = [a for a in annotations if "core:label" in a and "core:sample_start" in a]
    if not labelled:
        return None
    ann_start = np.array([int(a["core:sample_start"]) for a in labelled], np.int64)
    ann_label = np.array([_label(a["core:label"]) for a in labelled], np.int64)
    order = np.argsort(ann_start)
    ann_start, ann_label = ann_start[order], ann_label[order]
    pos = np.clip(np.searchsorted(ann_start, start), 1, ann_start.size) - 1
    best = np.where(
        (pos + 1 < ann_start.size)
        & (
            np.abs(ann_start[np.minimum(pos + 1, ann_start.size - 1)] - start)
            < np.abs(ann_start[pos] - start)
        ),
        pos + 1,
        pos,
    )
    near = np.abs(ann_start[best] - start) <= tolerance_samples
    return np.where(near, ann_label[best], UNLABELLED).astype(np.int64)


def _label(value: object) -> int:
    if str(value).strip().lower() == "rogue":
        return ROGUE_LABEL
    try:
        return int(str(value).strip())
    except ValueError:
        return UNLABELLED
