"""``multiprocessing.reduction``: pickling for processes, and descriptors
sent between them.

``send_handle`` and ``recv_handle`` are forkfarm's: they pass a file
descriptor (``SCM_RIGHTS``) over a forkfarm ``Connection`` as well as over
anything multiprocessing's take (one of its connections, an object whose
``fileno()`` is an AF_UNIX socket). On a forkfarm ``Pipe`` the descriptor
travels on the socket beside the shared-memory channels, so handles and
messages never mix: a handle waits for ``recv_handle`` whatever is sent or
received meanwhile, in any order.

The rest is the standard library's, as it is: ``ForkingPickler`` and
``register`` are the pickler of multiprocessing's own channels (its pipes
and queues, a manager's proxies); forkfarm's queues and pipes pickle with
plain ``pickle``, so a reducer registered here does not apply to them.
Every other name is read from the standard library's module at each
access.
"""

from __future__ import annotations

import multiprocessing.reduction as _stdlib
import os
from multiprocessing.reduction import (
    DupFd,
    ForkingPickler,
    dump,
    recvfds,
    register,
    sendfds,
)
from typing import Any

from . import _reexport
from .connection import Connection

__all__ = [
    "DupFd",
    "ForkingPickler",
    "dump",
    "recv_handle",
    "recvfds",
    "register",
    "send_handle",
    "sendfds",
]


def send_handle(conn: Any, handle: int, destination_pid: int | None) -> None:
    """Sends the file descriptor ``handle`` over ``conn``, as
    ``multiprocessing.reduction.send_handle``: ``recv_handle`` on the other
    end gets a descriptor of its own for the same open file (this one stays
    open here). ``conn`` is a forkfarm ``Connection`` or what
    multiprocessing's function takes; ``destination_pid`` is not needed on
    Linux."""
    if isinstance(conn, Connection):
        conn._end.send_fds([handle])
    else:
        _stdlib.send_handle(conn, handle, destination_pid)


def recv_handle(conn: Any) -> int:
    """The descriptor the other end sent next with ``send_handle``, waiting
    for it, as ``multiprocessing.reduction.recv_handle``: the caller owns it
    (it is close-on-exec). ``EOFError`` once the other end is closed;
    ``RuntimeError`` when bytes without a descriptor arrive on the
    connection's socket."""
    if not isinstance(conn, Connection):
        return _stdlib.recv_handle(conn)
    fds = conn._end.recv_fds()
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise RuntimeError(f"received {len(fds)} descriptors where one was sent")
    return fds[0]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
