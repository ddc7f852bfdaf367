"""File-handle lifetime shared by readers and writers: ``with`` blocks that close, pickles without handles.

:class:`Closeable` makes ``with obj:`` call ``obj.close()``. :class:`PickledWithoutHandles` leaves the open
handles out of a pickle, so a reader sent to a worker process opens the file again there.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

__all__ = ["Closeable", "PickledWithoutHandles"]

_C = TypeVar("_C", bound="Closeable")


class Closeable:
    """Mixin: ``with obj:`` gives ``obj`` and calls its :meth:`close` at the end, however the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PickledWithoutHandles:
    """Mixin: a pickled copy has the attributes named in :attr:`handle_attrs` set to None (nothing open)."""

    #: Attributes holding open files or per-process state; the copy re-opens them lazily.
    handle_attrs: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self.handle_attrs:
            state[name] = None
        return state
