"""``multiprocessing.dummy``, as it is: multiprocessing's API on threads
(``Process`` is a thread, ``Pool`` a ``ThreadPool``, ``Queue`` a
``queue.Queue``), where processes, and so forkfarm, have no part. Every
other name (``Value``, ``Array``, ``Namespace``, ``DummyProcess``...) is
read from the standard library's module at each access."""

from __future__ import annotations

import multiprocessing.dummy as _stdlib
from multiprocessing.dummy import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    JoinableQueue,
    Lock,
    Manager,
    Pipe,
    Pool,
    Process,
    Queue,
    RLock,
    Semaphore,
    active_children,
    current_process,
    freeze_support,
)
from typing import Any

from .. import _reexport
from . import connection

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Pipe",
    "Pool",
    "Process",
    "Queue",
    "RLock",
    "Semaphore",
    "active_children",
    "current_process",
    "freeze_support",
]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
