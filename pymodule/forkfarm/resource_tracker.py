"""``multiprocessing.resource_tracker``, as it is: the process that unlinks
named resources (``SharedMemory`` segments, named semaphores) a crashed
program left. forkfarm's own queues, locks and pipes are anonymous and
never registered there; ``forkfarm.shared_memory`` is the standard
library's and is. Every other name is read from the standard library's
module at each access."""

from __future__ import annotations

import multiprocessing.resource_tracker as _stdlib
from multiprocessing.resource_tracker import ensure_running, register, unregister
from typing import Any

from . import _reexport

__all__ = ["ensure_running", "register", "unregister"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
