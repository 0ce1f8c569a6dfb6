"""``multiprocessing.managers``, as it is: a manager is a server process
that owns objects and hands out proxies to them over sockets, which is what
the standard library implements, and forkfarm has nothing better to put
there (``forkfarm.Manager()`` is a started ``SyncManager``).

A ``BaseManager`` subclass registers its own types with ``register()``, as
with multiprocessing; its server is started with multiprocessing's default
context unless ``ctx=`` names another (``forkfarm.get_context()`` is
accepted: the server is then a forkfarm ``Process``). Its proxies reach
forkfarm's ``Process`` children by inheritance and forkfarm's pool workers
as task arguments. Every other name of the module (``ListProxy``,
``Namespace``, ``Server``...) is read from it at each access."""

from __future__ import annotations

import multiprocessing.managers as _stdlib
from multiprocessing.managers import BaseManager, BaseProxy, SharedMemoryManager, SyncManager, Token
from typing import Any

from . import _reexport

__all__ = ["BaseManager", "BaseProxy", "SharedMemoryManager", "SyncManager", "Token"]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
