"""``multiprocessing.forkserver``: the standard library's fork server, as
it is, but for ``set_forkserver_preload``, which is forkfarm's and sets the
modules both fork servers import. forkfarm's pools do not use this server:
theirs (``forkfarm/_forkserver.py``) forks a zygote per pool. So
``ensure_running`` and ``connect_to_new_process`` start and reach the
standard library's, for the code written for it. Every other name is read
from the standard library's module at each access."""

from __future__ import annotations

import multiprocessing.forkserver as _stdlib
from multiprocessing.forkserver import connect_to_new_process, ensure_running, get_inherited_fds
from typing import Any

from . import _reexport
from .context import set_forkserver_preload

__all__ = ["connect_to_new_process", "ensure_running", "get_inherited_fds", "set_forkserver_preload"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
