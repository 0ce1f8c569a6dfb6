"""``multiprocessing.spawn``, as it is, but for ``set_executable``, which
is forkfarm's: it sets the interpreter of forkfarm's fork server (where
``"spawn"`` and ``"forkserver"`` pools get their workers) through this
module's own setting, so ``get_executable()`` returns it. The other
functions prepare and run a spawned child as the standard library does;
forkfarm starts none (its ``"spawn"`` is the fork server). Every other name
is read from the standard library's module at each access."""

from __future__ import annotations

import multiprocessing.spawn as _stdlib
from multiprocessing.spawn import (
    _main,
    freeze_support,
    get_command_line,
    get_executable,
    get_preparation_data,
    import_main_path,
)
from typing import Any

from . import _reexport
from .context import set_executable

__all__ = [
    "_main",
    "freeze_support",
    "get_command_line",
    "get_executable",
    "get_preparation_data",
    "import_main_path",
    "set_executable",
]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
