"""The ``lora-rffi`` command line.

Each subcommand lives in its own module of this package (listed in :data:`SUBCOMMANDS`; ``export_onnx`` is
the command ``export-onnx``) and defines ``HELP``, optionally ``DESCRIPTION`` (default: the first line of
its docstring) and ``EPILOG`` for its parser, ``add_arguments(parser)`` and ``run(args) -> int``;
:func:`build_parser` makes the parsers. The other
modules are shared helpers: :mod:`~lorarffi.cli.common` (flag groups, the one args -> LoRaConfig builder) and
:mod:`~lorarffi.cli.data` (dataset selection).
Subcommand modules import heavy dependencies (torch, h5py, zmq) inside their ``run`` function, so
``lora-rffi --help`` stays fast.

Errors: a :class:`~lorarffi.errors.LoraRffiError` becomes one line on stderr and exit code 2; usage errors
are one line too and also exit 2; Ctrl-C exits 130. A deprecated flag spelling works and gives a one-line
warning. ``-q``/``-v`` go before or after the subcommand. Output conventions: docs/cli.md.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from lorarffi import __version__
from lorarffi.cli.common import CliParser, HelpFormatter, add_verbosity_args, deprecated_flags
from lorarffi.cli.config import add_config_arg, apply_settings
from lorarffi.errors import LoraRffiError

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

PROG = "lora-rffi"


# One module per subcommand, in the order ``--help`` lists them.
SUBCOMMANDS = (
    "capture", "dataset", "detect", "evaluate", "export_onnx", "live", "registry", "simulate", "train",
    "enroll", "authenticate", "rogue", "classify", "completion", "demo", "worker",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = CliParser(
        prog=PROG,
        description="LoRa RF fingerprint identification: detect packets, build datasets, train, evaluate, "
        "and authenticate devices live.",
        epilog="example: lora-rffi simulate --n-devices 4 --packets 50 -o fleet.h5\n\n"
        "`lora-rffi COMMAND --help` describes each command; docs/cli.md the conventions.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    add_verbosity_args(parser, top=True)
    add_config_arg(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        command = sub.add_parser(
            name.replace("_", "-"),
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", None) or module.__doc__.splitlines()[0],
            epilog=getattr(module, "EPILOG", None),
            formatter_class=HelpFormatter,
        )
        add_verbosity_args(command, top=False)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.INFO if verbose == 0 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        apply_settings(parser, argv)  # config file and LORA_RFFI_* variables: the parsers' defaults
    except LoraRffiError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.verbose, args.quiet)
    args.command_line = [PROG, *argv]  # as typed, for records of the run (live --jsonl)
    for note in deprecated_flags(args):
        logging.getLogger(__name__).warning(note)
    try:
        return int(args.func(args) or 0)
    except LoraRffiError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"{PROG}: interrupted" + (f": {exc.args[0]}" if exc.args else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. `| head`): not an error of ours
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
