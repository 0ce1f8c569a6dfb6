"""``multiprocessing.heap``, as it is: the heap of mmap arenas behind the
standard library's shared ctypes. forkfarm's ``Value`` and ``Array`` do not
use it (each lives in a segment of its own), but code written for
multiprocessing that allocates a ``BufferWrapper`` gets the standard
library's. Its other names (``Arena``, ``Heap``) are read from it."""

from __future__ import annotations

import multiprocessing.heap as _stdlib
from multiprocessing.heap import BufferWrapper
from typing import Any

from . import _reexport

__all__ = ["BufferWrapper"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
