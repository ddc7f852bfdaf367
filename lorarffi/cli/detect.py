"""``lora-rffi detect``: find the LoRa packets in a recording, streamed in chunks (raw, SigMF or I/Q WAV)."""

from __future__ import annotations

import argparse
import sys

from lorarffi.cli.common import add_lora_args, json_text, lora_config
from lorarffi.cli.progress import add_progress_arg

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

_FORMATS = ("cf32", "ci16", "cu8", "ci8")

HELP = "find LoRa packets in a recording and print their start, CFO and SNR"
DESCRIPTION = (
    "Detect LoRa packets in a recording: a raw headerless file (give --format and --fs-hz), a SigMF "
    "recording (rate and type from its metadata) or a two-channel I/Q WAV file as SDR programs write them "
    "(rate from the header). The file is read in chunks, so recordings of any size work. The spreading "
    "factor is --sf, else the one the file states; when neither says, SF7 to SF12 are all searched and the "
    "one that finds packets is reported. Prints one line (or with --json one JSON object) per packet on "
    "stdout and a summary on stderr (with --json: a last summary object on stdout). NaN or infinite samples "
    "are counted, replaced by zeros and reported."
)
EPILOG = (
    "example: lora-rffi detect capture.wav --sf 11 --bw-hz 500k --json\n"
    "         lora-rffi detect rec.sigmf-meta"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="recording: raw file, NAME.sigmf-meta, NAME.sigmf or .wav")
    p.add_argument("--format", choices=_FORMATS, default=None,
                   help="sample format of a raw file (SigMF and WAV files say it themselves)")
    add_lora_args(p)
    p.add_argument("--preamble-symbols", type=int, default=8,
                   help="up-chirps in the fingerprint window (default 8)")
    p.add_argument(
        "--json", action="store_true", help="one JSON object per packet, then a summary object (not text)"
    )
    p.add_argument("--chunk-samples", type=int, default=1 << 20,
                   help="samples read per chunk (default 1048576)")
    add_progress_arg(p)


def _row(p) -> str:
    return (f"{p.start:>12d} {p.start_s:>11.6f} {p.cfo_hz:>11.1f} {p.snr_db:>7.1f} {p.power_db:>8.1f} "
            f"{f'0x{p.sync_word:02X}':>5} {p.n_preamble_symbols:>5d}")


_HEADER = (f"{'start':>12} {'start_s':>11} {'cfo_hz':>11} {'snr_db':>7} {'power_db':>8} {'sync':>5} "
           f"{'n_pre':>5}")


_SEARCHED_SFS = tuple(range(7, 13))
# LoRa parameters a recording's metadata may state (SigMF global ``lorarffi:*``), by LoRaConfig field.
_STATED = ("sf", "bw_hz", "preamble_symbols", "sync_word")


def _stated_lora(metadata: dict) -> dict:
    """The LoRa parameters a recording's metadata states, by LoRaConfig field."""
    return {k: metadata[f"lorarffi:{k}"] for k in _STATED if metadata.get(f"lorarffi:{k}") is not None}


def run(args: argparse.Namespace) -> int:
    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.datasets.recording import open_recording
    from lorarffi.dsp import StreamDetector
    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.errors import ConfigError

    if args.chunk_samples < 1:
        raise ConfigError(f"--chunk-samples={args.chunk_samples} is not valid: use 1 or more")
    out = sys.stdout
    n_packets = 0

    def emit(packets) -> None:
        nonlocal n_packets
        for p in packets:
            n_packets += 1
            out.write((json_text({"type": "packet", **p.to_dict()}) if args.json else _row(p)) + "\n")
        out.flush()

    with open_recording(args.input, format=args.format, fs_hz=args.fs_hz) as rec:
        stated = _stated_lora(rec.metadata)
        base = LoRaConfig(**stated, fs_hz=rec.fs_hz) if stated else None
        cfg = lora_config(args, base, fs_hz=rec.fs_hz, preamble_symbols=args.preamble_symbols)
        if args.sf is None and "sf" not in stated:
            return _search_sf(args, rec, cfg, emit)
        det = StreamDetector(cfg)
        if not args.json:
            out.write(_HEADER + "\n")
        with progress_bar("detect", rec.n_samples or None, enabled=progress_enabled(args)) as advance:
            for _start, chunk in rec.iter_chunks(args.chunk_samples):
                emit(det.process(chunk))
                advance(chunk.size)
        emit(det.flush())
    _report(args, n_packets, det, cfg, None)
    return 0


def _report(args: argparse.Namespace, n_packets: int, det, cfg, searched: dict[int, int] | None) -> None:
    """The summary: a line on stderr, and with --json the last object on stdout."""
    if args.json:
        sys.stdout.write(
            json_text(
                {
                    "type": "summary",
                    "file": str(args.input),
                    "n_packets": n_packets,
                    "n_samples": det.n_samples,
                    "duration_s": det.n_samples / cfg.fs_hz,
                    "fs_hz": cfg.fs_hz,
                    "sf": cfg.sf if searched is None or n_packets else None,
                    "bw_hz": cfg.bw_hz,
                    "n_nonfinite": det.n_nonfinite,
                    "packets_per_searched_sf": None
                    if searched is None
                    else {str(sf): n for sf, n in searched.items()},
                }
            )
            + "\n"
        )
    if not args.quiet:
        how = ""
        if searched is not None:
            found = ", ".join(f"SF{sf}: {n}" for sf, n in searched.items() if n) or "none at any"
            how = (
                f" (the file states no spreading factor: searched SF{min(searched)}-SF{max(searched)}; "
                f"packets found {found}; give --sf to choose)"
            )
        print(
            f"{n_packets} packet(s) in {det.n_samples} samples ({det.n_samples / cfg.fs_hz:.3f} s at "
            f"{cfg.fs_hz:g} S/s, SF{cfg.sf}, {cfg.bw_hz / 1e3:g} kHz){how}; {det.n_nonfinite} non-finite "
            "sample(s) replaced by zeros",
            file=sys.stderr,
        )


def _search_sf(args: argparse.Namespace, rec, cfg, emit) -> int:
    """Detect at every spreading factor in one pass over the recording; report the packets of the one that
    finds most (the others' counts go to the summary)."""
    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.dsp import StreamDetector

    dets = {sf: StreamDetector(cfg.replace(sf=sf)) for sf in _SEARCHED_SFS}
    found: dict[int, list] = {sf: [] for sf in dets}
    with progress_bar("detect SF7-12", rec.n_samples or None, enabled=progress_enabled(args)) as advance:
        for _start, chunk in rec.iter_chunks(args.chunk_samples):
            for sf, det in dets.items():
                found[sf] += det.process(chunk)
            advance(chunk.size)
    for sf, det in dets.items():
        found[sf] += det.flush()
    best = max(dets, key=lambda sf: (len(found[sf]), -sf))
    if not args.json:
        sys.stdout.write(_HEADER + "\n")
    emit(sorted(found[best], key=lambda p: p.start))
    _report(args, len(found[best]), dets[best], cfg.replace(sf=best), {sf: len(v) for sf, v in found.items()})
    return 0

