"""``multiprocessing.process``, as it is: forkfarm's ``Process`` is a
``BaseProcess`` (with forkfarm's own ways to start its child,
``forkfarm/_process.py``), so the current process, the parent and the
children are multiprocessing's, and this module is the standard library's. Its other names (``AuthenticationString``,
``ORIGINAL_DIR``, the private ones) are read from it at each access."""

from __future__ import annotations

import multiprocessing.process as _stdlib
from multiprocessing.process import BaseProcess, active_children, current_process, parent_process
from typing import Any

from . import _reexport

__all__ = ["BaseProcess", "active_children", "current_process", "parent_process"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
