"""``Pipe``, ``Connection`` and ``wait`` with multiprocessing.connection's
API, on shared memory; ``Listener`` and ``Client`` are the standard
library's (they are for sockets between unrelated processes).

A forkfarm ``Pipe`` moves messages through a channel in shared memory per
direction (``lib/channel.c``); a socket pair carries only wake-ups and the
end of the stream. A receiver spins briefly before it sleeps, so a
ping-pong between two busy processes makes no system call at all. As with
multiprocessing's pipes, ``recv`` raises ``EOFError`` once every copy of the
other end is closed (its process died, say) and nothing is left to read.

What differs: ``fileno()`` is the socket of the wake-ups, which
:func:`wait` (this module's) knows how to use; a selector of your own on it
does not see messages arrive. The same socket carries file descriptors
(``forkfarm.reduction.send_handle``), beside the messages and never mixed
with them. Connections travel to other processes as a ``Process``'s
arguments (inherited by a forked child, or as a copy of the socket and a
handle to the memory for one the fork server starts), not in pool tasks.

The module's other names (``answer_challenge``, ``deliver_challenge``,
``SocketListener``...) are multiprocessing.connection's, for its
``Listener`` and ``Client`` and the connections they make, read from it at
each access.
"""

from __future__ import annotations

import multiprocessing.connection as _stdlib_connection
import os
import pickle
import selectors
import socket
import time
from collections.abc import Iterable
from functools import partial
from multiprocessing.connection import Client, Listener
from multiprocessing.connection import wait as _stdlib_wait
from typing import Any

from . import _core, _reexport, _segments

__all__ = ["Client", "Connection", "Listener", "Pipe", "wait"]

# The address families Listener and Client take here (multiprocessing's own
# list, which typeshed does not declare).
families: list[str] = getattr(_stdlib_connection, "families")  # noqa: B009

# Each direction's region: the most it holds of pickled messages. Memory
# is used only as messages need it, and each end maps only the part its
# ring uses.
PIPE_REGION = 256 << 20

_dumps = partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)


class Connection:
    """One end of a :func:`Pipe`, as ``multiprocessing.connection.Connection``:
    ``send``/``recv`` (pickled objects), ``send_bytes``/``recv_bytes``/
    ``recv_bytes_into``, ``poll(timeout)``, ``close``, ``fileno``."""

    def __init__(self, end: _core.PipeEnd, segment: _core.Segment, channels: tuple[int, int]) -> None:
        self._end = end
        self._segment = segment  # the memory lives as long as this end
        self._channels = channels  # (in, out): which of the segment's it reads and writes
        # The runtime's methods, bound here: no Python frame per call.
        self.send = end.send  # type: ignore[method-assign]
        self.recv = end.recv  # type: ignore[method-assign]
        self.send_bytes = end.send_bytes  # type: ignore[method-assign]
        self.recv_bytes = end.recv_bytes  # type: ignore[method-assign]
        self.recv_bytes_into = end.recv_bytes_into  # type: ignore[method-assign]
        self.poll = end.poll  # type: ignore[method-assign]

    def send(self, obj: Any) -> None:
        """Sends a picklable object. (Bound to the runtime's method.)"""

    def recv(self) -> Any:
        """The next object sent; EOFError once the other end is closed and
        nothing is left. (Bound to the runtime's method.)"""

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Sends bytes from a bytes-like object. (Bound.)"""

    def recv_bytes(self, maxlength: int | None = None) -> bytes:  # type: ignore[empty-body]
        """The next message's bytes. (Bound.)"""

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:  # type: ignore[empty-body]
        """Reads the next message into buf; returns its length. (Bound.)"""

    def poll(self, timeout: float | None = 0.0) -> bool:  # type: ignore[empty-body]
        """Whether there is something to read (or the end of the stream),
        waiting up to timeout seconds (None: no limit). (Bound.)"""

    def close(self) -> None:
        """Closes this end in this process."""
        self._end.close()

    def fileno(self) -> int:
        """The socket of this end's wake-ups (see the module's notes)."""
        return int(self._end.fileno())

    @property
    def closed(self) -> bool:
        return bool(self._end.closed)

    @property
    def readable(self) -> bool:
        return bool(self._end.readable)

    @property
    def writable(self) -> bool:
        return bool(self._end.writable)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        from ._process import fd_for_child

        # A Process that the fork server starts gets a copy of the socket.
        socket_for_child = fd_for_child(self.fileno()) if not self.closed else None
        if socket_for_child is not None and self._segment.lendable:
            _core.pin(self._segment.id)
            return _rebuild_connection, (self._segment.id, *self._channels, socket_for_child)
        raise RuntimeError(
            "Connection objects should only be shared between processes through inheritance"
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fileno()}"
        return f"<forkfarm.connection.Connection {state}>"


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:  # noqa: N802 - multiprocessing's name
    """A pair of connected :class:`Connection` objects. With ``duplex``,
    both ends send and receive; without, the first only receives and the
    second only sends."""
    # Blocking, as multiprocessing's (its reduction functions may read it):
    # the runtime's own calls on it never wait (MSG_DONTWAIT).
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # Mapped here: the page of flags; the ends map their rings themselves.
    segment = _segments.new(4096 + 2 * PIPE_REGION, map_bytes=4096)
    left_fd, right_fd = left.detach(), right.detach()
    try:
        if duplex:
            first = _core.PipeEnd(segment, PIPE_REGION, 0, 1, left_fd, _dumps, pickle.loads, True)
            second = _core.PipeEnd(segment, PIPE_REGION, 1, 0, right_fd, _dumps, pickle.loads, True)
        else:
            first = _core.PipeEnd(segment, PIPE_REGION, 0, -1, left_fd, _dumps, pickle.loads, True)
            second = _core.PipeEnd(segment, PIPE_REGION, -1, 0, right_fd, _dumps, pickle.loads, False)
    except BaseException:
        os.close(left_fd)
        os.close(right_fd)
        raise
    return (
        Connection(first, segment, (0, 1 if duplex else -1)),
        Connection(second, segment, (1 if duplex else -1, 0)),
    )


def _rebuild_connection(segment_id: int, in_index: int, out_index: int, socket_for_child: Any) -> Connection:
    """An end of a Pipe in a Process that the fork server started."""
    segment = _segments.find(segment_id, 4096)
    fd = socket_for_child.detach()
    try:
        end = _core.PipeEnd(segment, PIPE_REGION, in_index, out_index, fd, _dumps, pickle.loads, False)
    except BaseException:
        os.close(fd)
        raise
    return Connection(end, segment, (in_index, out_index))


def wait(object_list: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """The objects of ``object_list`` that are ready, as
    ``multiprocessing.connection.wait``: forkfarm connections with something
    to read (or at the end of their stream), and anything with a
    ``fileno()`` or an int descriptor (a process's ``sentinel``, a socket)
    that is readable. Waits up to ``timeout`` seconds (None: no limit) for
    one of them."""
    objects = list(object_list)
    ours = [o for o in objects if isinstance(o, Connection)]
    others = [o for o in objects if not isinstance(o, Connection)]
    if not ours:
        return list(_stdlib_wait(others, timeout))
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        ready = [c for c in ours if c._end.arm()]
        if ready:
            for c in ours:
                c._end.disarm()
            return ready
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        with selectors.DefaultSelector() as selector:
            for c in ours:
                selector.register(c.fileno(), selectors.EVENT_READ, c)
            for o in others:
                selector.register(o, selectors.EVENT_READ, o)
            events = selector.select(left)
        ready_others = [key.data for key, _ in events if not isinstance(key.data, Connection)]
        ready = [c for c in ours if c._end.disarm()]
        if ready or ready_others:
            return [o for o in objects if o in ready or o in ready_others]
        if deadline is not None and time.monotonic() >= deadline:
            return []


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib_connection, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib_connection)
