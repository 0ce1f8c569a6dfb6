"""``multiprocessing.dummy.connection``, as it is: ``Pipe``, ``Listener``
and ``Client`` between threads, on queues. Every other name is read from
the standard library's module at each access."""

from __future__ import annotations

import multiprocessing.dummy.connection as _stdlib
from multiprocessing.dummy.connection import Client, Listener, Pipe
from typing import Any

from .. import _reexport

__all__ = ["Client", "Listener", "Pipe"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
