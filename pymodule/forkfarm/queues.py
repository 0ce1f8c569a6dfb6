"""Queue, SimpleQueue and JoinableQueue with multiprocessing's API, on a
channel in shared memory (``lib/channel.c``).

multiprocessing's Queue pickles in a feeder thread and sends through a pipe
guarded by a named semaphore. Here ``put`` pickles and copies the message
into the shared channel itself, and ``get`` copies it out: one C call each,
no thread, no name. What follows from that:

- ``put`` returns once the message is in the queue, so ``qsize()`` and
  ``empty()`` are exact, and a message put before a process exits is never
  lost with its feeder thread. ``join_thread`` and ``cancel_join_thread``
  have nothing to do.
- An unbounded queue grows its shared ring as messages pile up (up to
  :data:`QUEUE_BYTES` of pickled messages, then ``put`` waits) and gives the
  memory back when it empties.
- A process killed while it held the queue's lock does not deadlock the
  others: the next caller takes the lock over (an
  :class:`~forkfarm.AbandonedLockWarning` names the dead pid) and goes on.
"""

from __future__ import annotations

import pickle
from functools import partial
from queue import Empty as Empty, Full as Full  # raised here, and named so in multiprocessing.queues
from typing import Any, Generic, TypeVar

from . import _core, _segments

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]

_T = TypeVar("_T")

# The most a queue holds, in bytes of pickled messages: its segment's size.
# Memory is used only as messages need it, and each process maps only the
# part its ring uses, so this costs neither memory nor address space.
QUEUE_BYTES = 1 << 30
# The ring a queue starts with, and shrinks back to when it empties: what
# it maps of address space until messages pile up.
FIRST_RING = 64 << 10

_dumps = partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)


def _channel(segment: _core.Segment) -> _core.Channel:
    return _core.Channel(segment, _dumps, pickle.loads)


class Queue(Generic[_T]):
    """A process-shared FIFO queue, as ``multiprocessing.Queue``.

    ``maxsize`` bounds the number of messages (0 or less: no bound);
    ``put`` and ``get`` take ``block`` and ``timeout`` and raise
    :class:`queue.Full` and :class:`queue.Empty`."""

    def __init__(self, maxsize: int = 0, *, ctx: Any = None) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        self._maxsize = max(0, maxsize)
        self._segment = _segments.new(QUEUE_BYTES, map_bytes=0)
        self._bind(_channel(self._segment))
        self._channel.init(FIRST_RING, min(self._maxsize, 0xFFFFFFFF))

    def _bind(self, channel: _core.Channel) -> None:
        self._channel = channel
        # The runtime's methods, bound here: no Python frame per call.
        self.put = channel.put  # type: ignore[method-assign]
        self.get = channel.get  # type: ignore[method-assign]
        self.qsize = channel.qsize  # type: ignore[method-assign]
        self.empty = channel.empty  # type: ignore[method-assign]
        self.full = channel.full  # type: ignore[method-assign]

    def __reduce__(self) -> Any:
        if _core.pickling_for_pool() and self._segment.lendable:
            _core.pin(self._segment.id)
            return _attach, (type(self), self._segment.id, self._maxsize)
        raise RuntimeError(
            f"{type(self).__name__} objects should only be shared between processes "
            "through inheritance, or as arguments of a forkfarm pool's tasks"
        )

    def put(self, obj: _T, block: bool = True, timeout: float | None = None) -> None:
        """Puts obj in; waits for room while the queue is full, up to
        ``timeout`` seconds, then raises :class:`queue.Full`. (Bound to the
        runtime's method.)"""

    def get(self, block: bool = True, timeout: float | None = None) -> _T:  # type: ignore[empty-body]
        """Takes the oldest message; waits for one up to ``timeout``
        seconds, then raises :class:`queue.Empty`. (Bound to the runtime's
        method.)"""

    def qsize(self) -> int:  # type: ignore[empty-body]
        """The number of messages in the queue, exactly."""

    def empty(self) -> bool:  # type: ignore[empty-body]
        """Whether the queue holds no message."""

    def full(self) -> bool:  # type: ignore[empty-body]
        """Whether the queue holds ``maxsize`` messages."""

    def put_nowait(self, obj: _T) -> None:
        """``put(obj, False)``."""
        self._channel.put(obj, False)

    def get_nowait(self) -> _T:
        """``get(False)``."""
        return self._channel.get(False)  # type: ignore[no-any-return]

    def close(self) -> None:
        """This process will put and get no more through this object."""
        self._channel.close()

    def join_thread(self) -> None:
        """Waits for the feeder thread, after close(): there is none, since
        put has finished by the time it returns."""
        if not self._channel.closed:
            raise ValueError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: there is no feeder thread."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} maxsize={self._maxsize}>"


class JoinableQueue(Queue[_T]):
    """A :class:`Queue` whose consumers mark each message done, as
    ``multiprocessing.JoinableQueue``."""

    def _bind(self, channel: _core.Channel) -> None:
        super()._bind(channel)
        self.task_done = channel.task_done  # type: ignore[method-assign]

    def task_done(self) -> None:
        """Marks one message taken with get() as processed; ValueError when
        called more often than put(). (Bound to the runtime's method.)"""

    def join(self) -> None:
        """Waits until every message put has been marked done."""
        self._channel.join()


class SimpleQueue(Generic[_T]):
    """An unbounded queue with only ``get``, ``put``, ``empty`` and
    ``close``, as ``multiprocessing.SimpleQueue``."""

    def __init__(self, *, ctx: Any = None) -> None:
        self._segment = _segments.new(QUEUE_BYTES, map_bytes=0)
        self._bind(_channel(self._segment))
        self._channel.init(FIRST_RING, 0)

    def _bind(self, channel: _core.Channel) -> None:
        self._channel = channel
        self.empty = channel.empty  # type: ignore[method-assign]

    def __reduce__(self) -> Any:
        if _core.pickling_for_pool() and self._segment.lendable:
            _core.pin(self._segment.id)
            return _attach, (type(self), self._segment.id, 0)
        raise RuntimeError(
            "SimpleQueue objects should only be shared between processes through "
            "inheritance, or as arguments of a forkfarm pool's tasks"
        )

    def put(self, obj: _T) -> None:
        """Puts obj in."""
        self._channel.put(obj)

    def get(self) -> _T:
        """Takes the oldest message, waiting for one."""
        return self._channel.get()  # type: ignore[no-any-return]

    def empty(self) -> bool:  # type: ignore[empty-body]
        """Whether the queue holds no message."""

    def close(self) -> None:
        """This process will put and get no more through this object."""
        self._channel.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _attach(cls: type[Any], segment_id: int, maxsize: int) -> Any:
    obj = object.__new__(cls)
    obj._segment = _segments.find(segment_id, 0)
    obj._maxsize = maxsize
    channel = _channel(obj._segment)
    channel.attach()
    obj._bind(channel)
    return obj
