"""``multiprocessing.popen_fork``, as it is: how multiprocessing's fork
``Process`` starts, waits for and signals its child. forkfarm's ``Process``
forks with a subclass of this ``Popen`` that forks through the runtime
(``forkfarm/_process.py``). Every other name is read from the standard
library's module at each access."""

from __future__ import annotations

import multiprocessing.popen_fork as _stdlib
from multiprocessing.popen_fork import Popen
from typing import Any

from . import _reexport

__all__ = ["Popen"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
