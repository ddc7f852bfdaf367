"""What the subcommands share: argument types (SI-suffixed numbers, gains, ranges, positive counts), the one
name of each common flag (``-s/--fs-hz``, ``-f/--center-freq-hz``, ``--bw-hz``, ``-o/--out``,
``--n-devices``, ``--torch-device``, ``--json``) with its old spellings kept as deprecated aliases, the one
reconciliation of the sample-rate flags, the one args -> LoRaConfig builder, the help layout (every option's
default shown) and the one JSON writer (no NaN: null, and why)."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorarffi.errors import ConfigError

if TYPE_CHECKING:
    from lorarffi.dsp.config import LoRaConfig

__all__ = [
    "CliParser",
    "HelpFormatter",
    "si_float",
    "gain_arg",
    "int_range",
    "slice_arg",
    "snr_range_db",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "add_alias",
    "add_flag",
    "add_lora_args",
    "add_radio_args",
    "add_receiver_offset_arg",
    "add_channel_plan_args",
    "add_n_devices_arg",
    "add_torch_device_arg",
    "add_json_arg",
    "add_plots_arg",
    "add_whole_packets_arg",
    "packet_symbols_of",
    "add_verbosity_args",
    "deprecated_flags",
    "torch_device",
    "sample_rate_hz",
    "lora_config",
    "check_output",
    "json_text",
    "print_json",
    "describe_slice",
    "describe_ids",
]

DEPRECATED_ATTR = "_deprecated_flags"
_GIVEN_ATTR = "_given_spellings"
_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SI_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([kKMGT]?)\s*$")


class CliParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit code 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Help text: paragraphs wrapped, lines starting with ``example:`` or spaces kept as written, and every
    option's default shown (unless its help already says it)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if any(ln.startswith((" ", "example")) for ln in lines):
                out.append("\n".join(indent + ln for ln in lines))
            else:
                out.append(
                    textwrap.fill(
                        " ".join(para.split()), width, initial_indent=indent, subsequent_indent=indent
                    )
                )
        return "\n\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
            or isinstance(action, argparse._CountAction)
        ):
            return text
        return f"{text} (default %(default)s)"


def si_float(text: str) -> float:
    """Parse a number with an optional k/M/G/T suffix, as SDR tools do (``2.4M`` -> 2.4e6)."""
    m = _SI_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (suffixes k, M, G allowed)")
    return float(m.group(1)) * _SI[m.group(2)]


def _bounded(kind: type, low: float, inclusive: bool, what: str):
    def parse(text: str):
        try:
            value = kind(si_float(text)) if kind is float else int(text)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (value >= low if inclusive else value > low) or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text} is not valid: use {what}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = _bounded(int, 1, True, "an integer of 1 or more")
nonnegative_int = _bounded(int, 0, True, "an integer of 0 or more")
positive_float = _bounded(float, 0.0, False, "a number above 0")
nonnegative_float = _bounded(float, 0.0, True, "a number of 0 or more")


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


def snr_range_db(text: str) -> tuple[float, float]:
    """Parse an SNR range in dB, ``LO:HI`` (or one number for both ends), low end first."""
    try:
        values = [float(v) for v in text.split(":")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(map(math.isfinite, values)):
        raise argparse.ArgumentTypeError(f"{text!r} is not an SNR range like 5:30 (low:high, dB)")
    lo, hi = values
    if hi < lo:
        raise argparse.ArgumentTypeError(f"{text!r}: the low end comes first, e.g. {hi:g}:{lo:g}")
    return lo, hi


def slice_arg(text: str) -> slice:
    """Parse ``A:B`` (either side optional) into a slice of packet indices."""
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range like 0:500")
    a, b = text.split(":", 1)
    try:
        return slice(int(a) if a.strip() else None, int(b) if b.strip() else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range like 0:500") from None


def describe_slice(packets: slice | None) -> str:
    """A packet range as the user typed it (``500:1000``, ``:100``; ``all`` for None)."""
    if packets is None:
        return "all"
    return f"{'' if packets.start is None else packets.start}:{'' if packets.stop is None else packets.stop}"


def describe_ids(ids: Any) -> str:
    """Device ids as a user types them: ``1-4,7`` (``none`` when empty)."""
    values = sorted({int(i) for i in ids})
    if not values:
        return "none"
    parts, first, last = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == last + 1:
            last = v
            continue
        parts.append(str(first) if first == last else f"{first}-{last}")
        if v is not None:
            first = last = v
    return ",".join(parts)


# -- one name per flag, old spellings kept --


class _Store(argparse.Action):
    """``store`` that notes which spelling gave the value: a deprecated spelling is listed for a one-line
    warning (:func:`deprecated_flags`), and two spellings of one flag giving different values are caught
    (:func:`sample_rate_hz`)."""

    def __init__(self, option_strings, dest, deprecated: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.deprecated = tuple(deprecated)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = dict(getattr(namespace, _GIVEN_ATTR, None) or {})
        given.setdefault(self.dest, []).append((option_string, values))
        setattr(namespace, _GIVEN_ATTR, given)
        if option_string in self.deprecated:
            now = next(s for s in self.option_strings if s.startswith("--") and s not in self.deprecated)
            notes = list(getattr(namespace, DEPRECATED_ATTR, None) or [])
            notes.append(f"{option_string} is deprecated: use {now}")
            setattr(namespace, DEPRECATED_ATTR, notes)
        setattr(namespace, self.dest, values)


def _deprecation_note(old: tuple[str, ...]) -> str:
    return f"; old spelling {', '.join(old)} still works (deprecated)" if old else ""


def add_alias(parser: argparse.ArgumentParser, flag: str, alias: str) -> None:
    """Let ``alias`` (a deprecated spelling) give the option ``flag`` of ``parser``."""
    action = parser._option_string_actions[flag]
    action.option_strings.append(alias)
    parser._option_string_actions[alias] = action
    if isinstance(action, _Store):
        action.deprecated += (alias,)
    action.help = (action.help or "") + _deprecation_note((alias,))


def add_flag(
    parser: argparse.ArgumentParser, *flags: str, deprecated: tuple[str, ...] = (), help: str, **options: Any
) -> argparse.Action:
    """``parser.add_argument(*flags, ...)`` with old spellings ``deprecated`` that still work, each with a
    one-line warning when used and a note in the help."""
    return parser.add_argument(
        *flags,
        *deprecated,
        action=_Store,
        deprecated=deprecated,
        help=help + _deprecation_note(deprecated),
        **options,
    )


def deprecated_flags(args: argparse.Namespace) -> list[str]:
    """One note per deprecated flag spelling the command line used (``--devices is deprecated: use ...``)."""
    return list(getattr(args, DEPRECATED_ATTR, None) or [])


def add_lora_args(
    parser: argparse.ArgumentParser, *, fs_required: bool = False, default_from: str | None = None
) -> None:
    """Add ``--sf``, ``--bw-hz`` (the LoRa bandwidth) and ``-s/--fs-hz`` with the project's defaults (SF7,
    125 kHz, 1 MS/s).

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
        metavar="BW_HZ",
        help=f"LoRa bandwidth in Hz: 125k, 250k or 500k (default {default_from or '125k, or from the file'})",
    )
    add_flag(
        parser,
        "-s",
        "--fs-hz",
        type=si_float,
        default=None,
        required=fs_required,
        metavar="FS_HZ",
        help="sample rate in Hz, suffixes k/M allowed "
        + (f"(default {default_from})" if default_from else "(default: the recording's or the radio's)"),
    )


def add_radio_args(parser: argparse.ArgumentParser, *, radio_only: bool) -> None:
    """Add the radio flags ``-f/--center-freq-hz``, ``-s/--fs-hz``, ``-g/--gain``, ``-a/--antenna`` (old
    spellings ``--freq`` and ``--rate`` kept as deprecated aliases).

    ``radio_only``: the command drives a radio and nothing else (frequency and rate required); otherwise the
    flags apply when the source is a radio. ``-s/--fs-hz`` is the one sample-rate flag: when
    :func:`add_lora_args` added it already, ``--rate`` becomes one more spelling of it.
    """
    add_flag(
        parser,
        "-f",
        "--center-freq-hz",
        deprecated=("--freq",),
        type=si_float,
        default=None,
        required=radio_only,
        metavar="FREQ_HZ",
        help="centre frequency in Hz, suffixes k/M/G allowed"
        + ("" if radio_only else " (radio: tuned; other sources: reported; default: the source's)"),
    )
    if "--fs-hz" in parser._option_string_actions:
        add_alias(parser, "--fs-hz", "--rate")
        parser._option_string_actions["--fs-hz"].required |= radio_only
    else:
        add_flag(
            parser,
            "-s",
            "--fs-hz",
            deprecated=("--rate",),
            type=si_float,
            default=None,
            required=radio_only,
            metavar="FS_HZ",
            help="sample rate in Hz, suffixes k/M allowed",
        )
    parser.add_argument(
        "-g",
        "--gain",
        dest="gain_db",
        type=gain_arg,
        default=None,
        metavar="GAIN_DB",
        help="radio gain in dB, or 'agc' (default: the device's)",
    )
    parser.add_argument(
        "-a", "--antenna", default=None, help="radio antenna, e.g. RX2 (default: the device's)"
    )


def add_n_devices_arg(parser: argparse.ArgumentParser, *, required: bool = False, help: str) -> None:
    """``--n-devices N``: how many devices (``--devices N`` kept as its deprecated spelling; ``--devices``
    elsewhere is an id range)."""
    add_flag(
        parser,
        "--n-devices",
        deprecated=("--devices",),
        dest="devices",
        type=int,
        required=required,
        default=None,
        metavar="N",
        help=help,
    )


def add_torch_device_arg(parser: argparse.ArgumentParser) -> None:
    """``--torch-device`` (``--device`` kept as its deprecated spelling): where torch runs the model."""
    add_flag(
        parser,
        "--torch-device",
        deprecated=("--device",),
        dest="device",
        type=_torch_device_arg,
        default=None,
        metavar="DEVICE",
        help="torch device: cpu, cuda, cuda:N or mps (default CUDA if available, else CPU)",
    )


def add_json_arg(parser: argparse.ArgumentParser, what: str = "one JSON summary object") -> None:
    """``--json``: machine-readable results on stdout (docs/cli.md: records as JSON lines, then one summary
    object)."""
    parser.add_argument("--json", action="store_true", help=f"print {what} on stdout instead of text")


def add_whole_packets_arg(parser: argparse.ArgumentParser) -> None:
    """``--whole-packets``: every up-chirp of a packet in its fingerprint (docs/models.md)."""
    parser.add_argument(
        "--whole-packets",
        action="store_true",
        help="put every up-chirp of each packet (preamble, sync word, header, payload) into its fingerprint: "
        "dataset rows that go on past the preamble, recordings read again after detection (default: the "
        "preamble alone; measured on simulated packets, not yet on real ones: docs/models.md)",
    )


def packet_symbols_of(args: argparse.Namespace) -> bool:
    """``packet_symbols`` of :func:`lorarffi.rffi.preprocess.preprocess_preambles` for ``--whole-packets``."""
    return bool(getattr(args, "whole_packets", False))


def add_plots_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--plots DIR``: write ``what`` (PNG files) in DIR (the command checks DIR with :func:`check_output`
    before the work starts)."""
    parser.add_argument(
        "--plots",
        default=None,
        metavar="DIR",
        help=f"write {what} in this directory (made if missing; the same plots there are replaced)",
    )


def add_verbosity_args(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v/--verbose`` and ``-q/--quiet``: on the top parser (defaults) and on each subcommand's (so they
    work after the subcommand too; they leave the top parser's values alone unless given)."""
    default = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="more log output on stderr (-vv: debug)",
        **({"default": 0} if top else default),
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="only warnings and errors on stderr",
        **({"default": False} if top else default),
    )


def torch_device(text: str | None, flag: str = "--torch-device") -> str | None:
    """Check a torch device name the user gave; None stays None (the default choice).

    Raises
    ------
    ConfigError
        Not a device torch knows, or one this machine does not have (CUDA on a CPU build).
    """
    if text is None:
        return None
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag} {text!r} is not a torch device: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"{flag} {text}: this machine has no CUDA device torch can use: use cpu")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"{flag} {text}: there are only {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{flag} {text}: no MPS device is available here: use cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{flag} {text}: device type {dev.type!r} is not supported: use cpu, cuda or mps")
    return str(dev)


def _torch_device_arg(text: str) -> str | None:
    """:func:`torch_device` as an argument type (torch is imported only when the flag is given)."""
    try:
        return torch_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--torch-device ")) from None


def sample_rate_hz(args: argparse.Namespace) -> float | None:
    """The sample rate the flags ask for, in Hz (``-s``, ``--fs-hz`` and ``--rate`` are one flag; given
    twice, the values must agree), or None."""
    given = (getattr(args, _GIVEN_ATTR, None) or {}).get("fs_hz", [])
    for (flag_a, a), (flag_b, b) in zip(given, given[1:], strict=False):
        if a != b:
            raise ConfigError(f"{flag_a} {a:g} and {flag_b} {b:g} disagree: give one sample rate")
    return getattr(args, "fs_hz", None)


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
        Parsed flags; ``sf``, ``bw_hz`` and the sample rate (:func:`sample_rate_hz`) are used when set.
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


def add_channel_plan_args(p: argparse.ArgumentParser) -> None:
    """``--channels F1,F2,...`` and a ``--sf`` (added by :func:`add_lora_args` first) that also takes a range
    or a list (``7-12``, ``7,9``; parsed by :func:`lorarffi.live.gateway.parse_sfs`): a gateway's plan."""
    for action in p._actions:
        if action.dest == "sf":
            action.type, action.metavar = str, "SF"
            action.help = (
                "spreading factor (default 7, or the model's); a range or list (7-12, 7,9) for several "
                "(every channel at each)"
            )
    p.add_argument(
        "--channels",
        default=None,
        metavar="F1,F2,...",
        help="channels of the capture (centre frequencies in Hz, suffixes k/M/G, e.g. 868.1M,868.3M,868.5M; "
        "-f is the capture's centre)",
    )


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


# -- outputs --


def check_output(path: str | Path, *, overwrite: bool, flag: str, directory: bool = False) -> Path:
    """Refuse an output that exists (unless ``--overwrite``) or is of the wrong kind, in one line naming the
    flag; make its parent directory.

    Raises
    ------
    ConfigError
        ``path`` is a directory where a file goes (or the reverse), or exists without ``--overwrite``.
    """
    p = Path(path)
    if p.exists():
        if directory and not p.is_dir():
            raise ConfigError(f"{p} is a file, not a directory: give {flag} a directory to write")
        if not directory and p.is_dir():
            raise ConfigError(f"{p} is a directory: give {flag} a file name")
        if not overwrite and not (directory and not any(p.iterdir())):
            raise ConfigError(f"{p} exists: choose another {flag} or pass --overwrite to replace it")
    if p.parent != Path(""):
        p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _finite(obj: Any, path: str, nulls: dict[str, str], reasons: dict[str, str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        nulls[path] = (
            reasons.get(path.rsplit(".", 1)[-1])
            or reasons.get(path)
            or ("not a number: nothing to compute it from" if math.isnan(obj) else "infinite")
        )
        return None
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():
        return _finite(obj.item(), path, nulls, reasons)
    if isinstance(obj, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), nulls, reasons) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", nulls, reasons) for i, v in enumerate(obj)]
    return obj


def json_text(obj: Any, *, reasons: dict[str, str] | None = None) -> str:
    """``obj`` as one line of strict JSON: a NaN or infinite number becomes null and the object gets a
    ``null_reasons`` field saying why, per field (``reasons`` maps a field name to the sentence; the
    default is "not a number: nothing to compute it from")."""
    nulls: dict[str, str] = {}
    clean = _finite(obj, "", nulls, reasons or {})
    if nulls and isinstance(clean, dict):
        clean["null_reasons"] = {**clean.get("null_reasons", {}), **nulls}
    return json.dumps(clean, allow_nan=False, default=_json_default)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    return str(o)


def print_json(obj: Any, *, reasons: dict[str, str] | None = None) -> None:
    """Write ``obj`` as one JSON line on stdout (:func:`json_text`)."""
    sys.stdout.write(json_text(obj, reasons=reasons) + "\n")
    sys.stdout.flush()
