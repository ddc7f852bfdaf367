"""Argument helpers shared by the subcommands: SI-suffixed numbers, LoRa parameters, ranges."""

from __future__ import annotations

import argparse
import re

__all__ = ["si_float", "add_lora_args", "int_range", "slice_arg"]

_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SI_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([kKMGT]?)\s*$")


def si_float(text: str) -> float:
    """Parse a number with an optional k/M/G/T suffix, as SDR tools do (``2.4M`` -> 2.4e6)."""
    m = _SI_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (suffixes k, M, G allowed)")
    return float(m.group(1)) * _SI[m.group(2)]


def int_range(text: str) -> list[int]:
    """Parse ``1-10``, ``3`` or ``1,4,7-9`` into a sorted list of ints."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers like 1-10 or 1,3,5") from None
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} names no integers")
    return sorted(out)


def slice_arg(text: str) -> slice:
    """Parse ``A:B`` (either side optional) into a slice of packet indices."""
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range like 0:500")
    a, b = text.split(":", 1)
    try:
        return slice(int(a) if a.strip() else None, int(b) if b.strip() else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range like 0:500") from None


def add_lora_args(parser: argparse.ArgumentParser, *, fs_required: bool = False) -> None:
    """Add ``--sf``, ``--bw-hz`` and ``--fs-hz`` with the project's defaults (SF7, 125 kHz, 1 MS/s)."""
    parser.add_argument(
        "--sf", type=int, default=None, help="spreading factor 7-12 (default 7, or from the file)"
    )
    parser.add_argument(
        "--bw-hz",
        type=si_float,
        default=None,
        help="LoRa bandwidth in Hz: 125k, 250k or 500k (default 125k, or from the file)",
    )
    parser.add_argument(
        "--fs-hz",
        type=si_float,
        default=None,
        required=fs_required,
        help="sample rate in Hz for raw input (suffixes k/M allowed)",
    )
