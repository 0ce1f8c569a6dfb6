"""``multiprocessing.resource_sharer``, as it is: the thread that lends
descriptors to processes that unpickle a ``reduction.DupFd`` (sockets and
multiprocessing's connections pickled by ``ForkingPickler``). Every other
name is read from the standard library's module at each access."""

from __future__ import annotations

import multiprocessing.resource_sharer as _stdlib
from multiprocessing.resource_sharer import DupFd, stop
from typing import Any

from . import _reexport

__all__ = ["DupFd", "stop"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
