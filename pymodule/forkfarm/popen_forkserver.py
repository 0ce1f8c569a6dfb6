"""``multiprocessing.popen_forkserver``, as it is: how multiprocessing's
forkserver ``Process`` starts its child through the standard library's fork
server. forkfarm's ``Process`` and pools use forkfarm's own fork server
(``forkfarm/_process.py``), so only code written for multiprocessing's
uses this.
Every other name is read from the standard library's module at each
access."""

from __future__ import annotations

import multiprocessing.popen_forkserver as _stdlib
from multiprocessing.popen_forkserver import Popen
from typing import Any

from . import _reexport

__all__ = ["Popen"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
