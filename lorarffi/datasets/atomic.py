"""Outputs that appear whole or not at all: write under a temporary name beside the target, then rename.

:func:`atomic_path` yields the temporary path to write (a file or a directory); when the block ends without
an exception the result gets the mode a plain ``open`` would have given it (``0o666`` less the umask for a
file, ``0o777`` less the umask for a directory) and is renamed onto the target in one step; on an exception
(Ctrl-C included) it is removed, so an interrupted run leaves no valid-looking partial output.
:func:`write_atomic` writes bytes or text that way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_atomic", "partial_path", "default_mode"]


def default_mode(*, directory: bool = False) -> int:
    """The permission bits a new file (directory) gets from ``open`` (``mkdir``) under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def partial_path(path: str | os.PathLike[str]) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under: hidden, in the same directory (so the
    rename stays on one file system), keeping the extension (libraries that pick a format by it still do)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.partial-{os.getpid()}{p.suffix}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; rename it onto ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        The output. An existing file is replaced (the caller checks it may be); an existing directory is
        replaced when ``directory`` (removed just before the rename).
    directory : bool
        The output is a directory (the block creates it at the yielded path).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)  # as for every output: its folder is made when missing
    tmp = partial_path(target)
    _remove(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, default_mode(directory=directory))
            if directory and target.is_dir():
                _remove(target)
            os.replace(tmp, target)
    finally:
        _remove(tmp)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file, flushed to disk, and a rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
