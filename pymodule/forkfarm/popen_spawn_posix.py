"""``multiprocessing.popen_spawn_posix``, as it is: how multiprocessing's
spawn ``Process`` starts a fresh interpreter. forkfarm starts none (its
``Process`` forks; its ``"spawn"`` pools come from its fork server), so
only code written for multiprocessing's uses this. Every other name is
read from the standard library's module at each access."""

from __future__ import annotations

import multiprocessing.popen_spawn_posix as _stdlib
from multiprocessing.popen_spawn_posix import Popen
from typing import Any

from . import _reexport

__all__ = ["Popen"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
