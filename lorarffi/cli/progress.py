"""Progress bars of the long jobs (simulate, evaluate, classify, detect, enroll, authenticate): rich, on
stderr only, shown when stderr is a terminal and neither ``--no-progress`` nor ``-q`` is given; never on
stdout, so ``--json`` output stays clean.

>>> with progress_bar("classify", n_packets, enabled=progress_enabled(args)) as advance:  # doctest: +SKIP
...     for chunk in chunks:
...         work(chunk)
...         advance(len(chunk))
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator

__all__ = ["add_progress_arg", "progress_enabled", "progress_bar"]


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar (a command that has it already keeps its own)."""
    if "--no-progress" not in p._option_string_actions:
        p.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bar on stderr (default: shown when stderr is a terminal)",
        )


def progress_enabled(args: argparse.Namespace) -> bool:
    """Whether a command's progress bar is shown: stderr is a terminal, no ``--no-progress``, no ``-q``."""
    if getattr(args, "no_progress", False) or getattr(args, "quiet", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return False


def _ignore(_n: int) -> None:
    return None


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A transient rich progress bar on stderr; yields ``advance(n)`` (a no-op when not ``enabled``).

    Parameters
    ----------
    description : str
        What is counted, shown left of the bar.
    total : float or None
        Units of the whole job (None: unknown, the bar pulses).
    enabled : bool
        Show it (:func:`progress_enabled`).
    """
    if not enabled:
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),
    )
    task = bar.add_task(description, total=total)
    with bar:
        yield lambda n: bar.advance(task, n)
