"""What the subcommands share: argument types (SI-suffixed numbers, gains, ranges), the LoRa and radio flag
groups, the one reconciliation of the sample-rate flags and the one args -> LoRaConfig builder."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from lorarffi.errors import ConfigError

if TYPE_CHECKING:
    from lorarffi.dsp.config import LoRaConfig

__all__ = [
    "si_float",
    "gain_arg",
    "int_range",
    "slice_arg",
    "add_lora_args",
    "add_radio_args",
    "add_receiver_offset_arg",
    "sample_rate_hz",
    "lora_config",
]

_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SI_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([kKMGT]?)\s*$")


def si_float(text: str) -> float:
    """Parse a number with an optional k/M/G/T suffix, as SDR tools do (``2.4M`` -> 2.4e6)."""
    m = _SI_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (suffixes k, M, G allowed)")
    return float(m.group(1)) * _SI[m.group(2)]


def gain_arg(text: str) -> float | str:
    """Parse a gain in dB (SI suffixes allowed) or ``agc``."""
    if text.strip().lower() == "agc":
        return "agc"
    return si_float(text)


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


def add_lora_args(
    parser: argparse.ArgumentParser, *, fs_required: bool = False, default_from: str | None = None
) -> None:
    """Add ``--sf``, ``--bw-hz`` and ``--fs-hz`` with the project's defaults (SF7, 125 kHz, 1 MS/s).

    ``default_from`` names where a command takes the parameters the flags do not give (e.g. "the file's,
    else the model's"), for the help.
    """
    parser.add_argument(
        "--sf",
        type=int,
        default=None,
        help=f"spreading factor 7-12 (default {default_from or '7, or from the file'})",
    )
    parser.add_argument(
        "--bw-hz",
        type=si_float,
        default=None,
        help=f"LoRa bandwidth in Hz: 125k, 250k or 500k (default {default_from or '125k, or from the file'})",
    )
    parser.add_argument(
        "--fs-hz",
        type=si_float,
        default=None,
        required=fs_required,
        help="sample rate in Hz for raw input (suffixes k/M allowed)"
        if default_from is None
        else f"sample rate in Hz, suffixes k/M allowed (default {default_from})",
    )


# The radio flags: option strings, dest, type, metavar, then the help of a command that only drives a radio
# (``capture``) and of one that takes any source (``live``, where -s doubles --fs-hz).
_RADIO_FLAGS: tuple[tuple[tuple[str, ...], str, Any, str | None, str, str], ...] = (
    (
        ("-f", "--freq"),
        "center_freq_hz",
        si_float,
        "FREQ_HZ",
        "centre frequency in Hz (suffixes k/M/G)",
        "centre frequency in Hz (radio: tuned; others: reported)",
    ),
    (
        ("-s", "--rate"),
        "rate_hz",
        si_float,
        "RATE_HZ",
        "sample rate in Hz (suffixes k/M)",
        "sample rate in Hz (radio: set; same as --fs-hz)",
    ),
    (
        ("-g", "--gain"),
        "gain_db",
        gain_arg,
        "GAIN_DB",
        "overall gain in dB, or 'agc' (default: the device's)",
        "radio gain in dB, or 'agc'",
    ),
    (("-a", "--antenna"), "antenna", None, None, "antenna name (e.g. RX2)", "radio antenna"),
)


def add_radio_args(parser: argparse.ArgumentParser, *, radio_only: bool) -> None:
    """Add the radio flags ``-f/--freq``, ``-s/--rate``, ``-g/--gain``, ``-a/--antenna``.

    ``radio_only``: the command drives a radio and nothing else (frequency and rate required); otherwise the
    flags apply when the source is a radio (``-s`` is then the same as ``--fs-hz``: see
    :func:`sample_rate_hz`).
    """
    for flags, dest, kind, metavar, radio_help, any_source_help in _RADIO_FLAGS:
        required = radio_only and dest in ("center_freq_hz", "rate_hz")
        options: dict[str, Any] = {"dest": dest, "default": None, "required": required}
        if kind is not None:
            options["type"] = kind
        if metavar is not None:
            options["metavar"] = metavar
        parser.add_argument(*flags, help=radio_help if radio_only else any_source_help, **options)


def sample_rate_hz(args: argparse.Namespace) -> float | None:
    """The sample rate the flags ask for, in Hz: ``--fs-hz`` or ``-s/--rate`` (they must agree), or None."""
    fs_hz = getattr(args, "fs_hz", None)
    rate_hz = getattr(args, "rate_hz", None)
    if fs_hz is not None and rate_hz is not None and fs_hz != rate_hz:
        raise ConfigError(f"-s {rate_hz:g} and --fs-hz {fs_hz:g} disagree: give one sample rate")
    return fs_hz if fs_hz is not None else rate_hz


def lora_config(
    args: argparse.Namespace,
    base: LoRaConfig | None = None,
    *,
    trained: bool = False,
    fs_hz: float | None = None,
    **fields: Any,
) -> LoRaConfig:
    """The LoRa parameters a command works with, from its flags.

    Parameters
    ----------
    args : Namespace
        Parsed flags; ``sf``, ``bw_hz`` and the sample-rate flags (:func:`sample_rate_hz`) are used when set.
    base : LoRaConfig, optional
        Parameters the flags change: a file's or a model's (default SF7, 125 kHz, 1 MS/s, the public
        dataset's).
    trained : bool
        ``base`` is a trained model's: ``--sf`` and ``--bw-hz`` may only repeat it.
    fs_hz : float, optional
        The sample rate actually in use (a source's or a recording's), in Hz; it replaces the flags' rate.
    **fields
        Other fields to set (``preamble_symbols``...).

    Raises
    ------
    ConfigError
        A flag contradicts the model, the rate flags disagree, or the parameters are not valid.
    """
    from lorarffi.dsp.config import LoRaConfig

    base = base or LoRaConfig()
    changes: dict[str, Any] = {
        name: value for name in ("sf", "bw_hz") if (value := getattr(args, name, None)) is not None
    }
    if trained:
        for name, value in changes.items():
            if value != getattr(base, name):
                raise ConfigError(
                    f"--{name.replace('_', '-')}={value:g} contradicts the model, trained for "
                    f"{name}={getattr(base, name):g}"
                )
    rate_hz = fs_hz if fs_hz is not None else sample_rate_hz(args)
    if rate_hz is not None:
        changes["fs_hz"] = rate_hz
    changes.update(fields)
    return base.replace(**changes) if changes else base


def add_receiver_offset_arg(p: argparse.ArgumentParser) -> None:
    """``--receiver-offset-ppm``: how much higher every CFO reads through this receiver than through the
    training one."""
    p.add_argument(
        "--receiver-offset-ppm",
        type=float,
        default=None,
        help="how much higher every CFO reads through this receiver than through the training one, ppm of "
        "the carrier (a receiver whose oscillator runs 10 ppm low reads +10): the CFO gate subtracts it "
        "(default: the model's saved value, 0; the gate also learns it from the packets when two thirds "
        "of the devices agree)",
    )
