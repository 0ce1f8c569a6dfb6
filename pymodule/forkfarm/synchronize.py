"""Process-shared locks, semaphores, events, conditions and barriers, with
multiprocessing's API, on futexes in shared memory (``lib/sync.c``).

multiprocessing makes each of these a POSIX named semaphore, which a crash
can leave behind and which a dead holder keeps locked forever. Here each
lives in a 64-byte slot of an anonymous shared segment: nothing is named,
a fork inherits it, and the kernel frees it with its last holder.

- A :class:`Lock` or :class:`RLock` whose holding process dies is not held
  forever: the next acquirer takes it over within about 50 ms of waiting,
  and a :class:`AbandonedLockWarning` names the dead pid (what the lock
  protected may be half-updated).
- They reach other processes as multiprocessing's do, by inheritance: a
  global or an argument of a pool's ``initializer``, or a ``Process``'s
  arguments. They also travel in a forkfarm pool's task arguments, as
  handles to the same slot, and a lock's or semaphore's bound ``acquire``
  or ``release`` can be a task's function (``executor.submit(sem.acquire)``);
  a plain ``pickle.dumps`` refuses them, as multiprocessing does.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from . import _core, _protocol, _segments
from ._errors import AbandonedLockWarning

__all__ = [
    "AbandonedLockWarning",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
]

_T = TypeVar("_T")

SLOT = 64  # bytes per primitive
REFS = 60  # where a slot's count of users lives
SLAB = 64 * 1024  # bytes per segment of slots
SEM_VALUE_MAX = 0x7FFFFFFF


# -- slots ---------------------------------------------------------------------


class _Slabs:
    """This process's segments of slots. A slot is reused once no object in
    any process uses it (its count drops to 0); a process killed while it
    used one leaves it counted, which costs 64 bytes, never a wrong lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.slabs: list[_core.Segment] = []
        self.free: list[tuple[_core.Segment, int]] = []

    def take(self) -> tuple[_core.Segment, int]:
        with self.lock:
            if self.pid != os.getpid():  # a forked child starts its own
                self.__init__()  # type: ignore[misc]
            if not self.free:
                self._collect()
            if not self.free:
                segment = _segments.new(SLAB)
                self.slabs.append(segment)
                self.free = [(segment, offset) for offset in range(SLAB - SLOT, -1, -SLOT)]
            segment, offset = self.free.pop()
        buffer = memoryview(segment)
        buffer[offset : offset + SLOT] = bytes(SLOT)
        buffer.release()
        _core.slot_refs(segment, offset + REFS, 1)
        return segment, offset

    def _collect(self) -> None:
        """Finds the slots whose users are all gone."""
        for segment in self.slabs:
            view = memoryview(segment)
            for offset in range(0, SLAB, SLOT):
                if struct.unpack_from("i", view, offset + REFS)[0] == 0:
                    self.free.append((segment, offset))
            view.release()


_slabs = _Slabs()
# Every primitive alive in this process: what a fork copies.
_live: weakref.WeakSet[_Shared] = weakref.WeakSet()


def _count_the_copies() -> None:
    """Before a fork (os.fork, a multiprocessing Process, a pool's zygote):
    the child gets a copy of every primitive alive here, so it counts as a
    user of each, for good, since a forked child ends without running
    finalizers. Counted in the parent before the fork, so that no slot can
    be reused before the child would have counted itself."""
    for segment, offset in {(obj._segment, obj._offset) for obj in list(_live)}:
        _core.slot_refs(segment, offset + REFS, 1)


os.register_at_fork(before=_count_the_copies)


def _drop(segment: _core.Segment, offset: int) -> None:
    if not segment.released:
        _core.slot_refs(segment, offset + REFS, -1)


class _Shared:
    """A primitive in a slot: takes one, or (rebuilt from a handle in
    another process) uses one, and counts itself out when collected."""

    _segment: _core.Segment
    _offset: int

    def _attach(self, segment: _core.Segment, offset: int, new: bool) -> None:
        self._segment = segment
        self._offset = offset
        if not new:
            _core.slot_refs(segment, offset + REFS, 1)
        weakref.finalize(self, _drop, segment, offset)
        _live.add(self)

    def _new_slot(self) -> None:
        segment, offset = _slabs.take()
        self._attach(segment, offset, True)

    def _handle(self) -> tuple[int, int]:
        if _core.pickling_for_pool() and self._segment.lendable:
            _core.pin(self._segment.id)
            return self._segment.id, self._offset
        raise RuntimeError(
            f"{type(self).__name__} objects should only be shared between processes "
            "through inheritance, or as arguments of a forkfarm pool's tasks"
        )


def _attached(cls: type[_T], segment_id: int, offset: int) -> _T:
    obj = cls.__new__(cls)
    obj._attach(_segments.find(segment_id), offset, False)  # type: ignore[attr-defined]
    obj._bind()  # type: ignore[attr-defined]
    return obj


# -- locks ---------------------------------------------------------------------


class Lock(_Shared):
    """A non-recursive lock, as ``multiprocessing.Lock``: any thread of any
    process may release it. A holder that dies does not keep it: the next
    acquirer takes it over, with an :class:`AbandonedLockWarning`.

    ``acquire(block=True, timeout=None)`` and ``release()`` are the runtime's
    own methods, one C call each."""

    _recursive = False

    def __init__(self, *, ctx: Any = None) -> None:
        self._new_slot()
        self._bind()
        self._mutex.init()

    def _bind(self) -> None:
        self._mutex = _core.Mutex(self._segment, self._offset, self._recursive)
        # The runtime's methods, bound here: no Python frame per call.
        self.acquire = self._mutex.acquire  # type: ignore[method-assign]
        self.release = self._mutex.release  # type: ignore[method-assign]
        _protocol.register_method_owner(self._mutex, self)

    def __reduce__(self) -> Any:
        return _attached, (type(self), *self._handle())

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:  # type: ignore[empty-body]
        """Takes the lock; False if ``timeout`` (seconds) passes first, or
        at once with ``block=False``. (Bound to the runtime's method.)"""

    def release(self) -> None:
        """Releases the lock. (Bound to the runtime's method.)"""

    def __enter__(self) -> bool:
        return bool(self._mutex.__enter__())

    def __exit__(self, *exc_info: object) -> None:
        self._mutex.release()

    def _is_owned(self) -> bool:
        return bool(self._mutex.held_by_caller())

    def __repr__(self) -> str:
        holder = self._mutex.holder()
        if holder == 0:
            owner = "None"
        elif self._mutex.held_by_caller():
            owner = f"{holder}|{threading.current_thread().name}"
        else:
            owner = f"{holder}|SomeThread"
        return f"<{type(self).__name__}(owner={owner})>"


class RLock(Lock):
    """A recursive lock, as ``multiprocessing.RLock``: the thread that holds
    it may take it again, and only that thread may release it."""

    _recursive = True

    def __repr__(self) -> str:
        holder = self._mutex.holder()
        if holder == 0:
            return f"<{type(self).__name__}(None, 0)>"
        name = threading.current_thread().name if self._mutex.held_by_caller() else "SomeThread"
        return f"<{type(self).__name__}({holder}|{name}, {self._mutex.depth()})>"


# -- semaphores ----------------------------------------------------------------


class Semaphore(_Shared):
    """A counting semaphore, as ``multiprocessing.Semaphore``."""

    _bound = 0

    def __init__(self, value: int = 1, *, ctx: Any = None) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"value must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        if value > SEM_VALUE_MAX:
            raise OverflowError(f"semaphore initial value must be <= {SEM_VALUE_MAX}")
        self._new_slot()
        self._bind()
        self._sem.init(value, value if self._bound else 0)

    def _bind(self) -> None:
        self._sem = _core.Semaphore(self._segment, self._offset)
        self.acquire = self._sem.acquire  # type: ignore[method-assign]
        self.release = self._sem.release  # type: ignore[method-assign]
        _protocol.register_method_owner(self._sem, self)

    def __reduce__(self) -> Any:
        return _attached, (type(self), *self._handle())

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:  # type: ignore[empty-body]
        """Takes one; False if ``timeout`` passes first, or at once with
        ``block=False``. (Bound to the runtime's method.)"""

    def release(self) -> None:
        """Gives one back; past a BoundedSemaphore's value, ValueError.
        (Bound to the runtime's method.)"""

    def get_value(self) -> int:
        return int(self._sem.value())

    def __enter__(self) -> bool:
        return bool(self._sem.acquire())

    def __exit__(self, *exc_info: object) -> None:
        self._sem.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}(value={self.get_value()})>"


class BoundedSemaphore(Semaphore):
    """A semaphore that may not be released past its initial value, as
    ``multiprocessing.BoundedSemaphore``."""

    _bound = 1


# -- event ---------------------------------------------------------------------


class Event(_Shared):
    """A flag processes wait for, as ``multiprocessing.Event``."""

    def __init__(self, *, ctx: Any = None) -> None:
        self._new_slot()
        self._bind()
        self._event.init()

    def _bind(self) -> None:
        self._event = _core.Event(self._segment, self._offset)

    def __reduce__(self) -> Any:
        return _attached, (type(self), *self._handle())

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the flag is set; False if ``timeout`` passes first."""
        return bool(self._event.wait(timeout))

    def __repr__(self) -> str:
        # multiprocessing's form (Python 3.13 on).
        return f"<{type(self).__qualname__} at {id(self):#x} {'set' if self.is_set() else 'unset'}>"


# -- condition -----------------------------------------------------------------


class Condition(_Shared):
    """A condition variable, as ``multiprocessing.Condition``: with an
    :class:`RLock` of its own unless given a lock.

    ``notify(n)`` wakes up to ``n`` of the waits that began before it, never
    one that begins after it (the notifier's own next wait, say), and a
    waiter killed while it waits does not make a later notify go missing.
    ``wait``, ``notify`` and ``notify_all`` are the runtime's own methods,
    one C call each."""

    def __init__(self, lock: Lock | None = None, *, ctx: Any = None) -> None:
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, Lock):
            raise TypeError(
                f"a forkfarm Condition needs a forkfarm Lock or RLock, not {type(lock).__name__}"
            )
        self._lock = lock
        self._new_slot()
        self._bind()
        self._cond.init()

    def _bind(self) -> None:
        self._cond = _core.Cond(self._segment, self._offset, self._lock._mutex)
        self.acquire = self._lock.acquire
        self.release = self._lock.release
        # The runtime's methods, bound here: no Python frame per call.
        self.wait = self._cond.wait  # type: ignore[method-assign]
        self.notify = self._cond.notify  # type: ignore[method-assign]
        self.notify_all = self._cond.notify_all  # type: ignore[method-assign]

    def __reduce__(self) -> Any:
        return _rebuild_condition, (self._lock, *self._handle())

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.__exit__(*exc_info)

    def wait(self, timeout: float | None = None) -> bool:  # type: ignore[empty-body]
        """Lets the lock go, sleeps until notified or until ``timeout``
        (seconds) passes, and takes the lock back; True if notified. The
        lock must be held. (Bound to the runtime's method.)"""

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Waits until ``predicate()`` is true, or ``timeout`` passes; returns
        the last value of the predicate."""
        result = predicate()
        if result:
            return result
        deadline = None if timeout is None else time.monotonic() + timeout
        while not result:
            left = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
            self.wait(left)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wakes up to ``n`` waiters; the lock must be held. (Bound to the
        runtime's method.)"""

    def notify_all(self) -> None:
        """Wakes every waiter; the lock must be held. (Bound to the
        runtime's method.)"""

    @property
    def _sleeping_count(self) -> _Count:
        """multiprocessing's private count of waits begun, which CPython's
        tests read: here, less the waits ended (``_woken_count`` is 0), so
        that the difference is the waits in progress, as there."""
        return _Count(self._cond.waiters)

    @property
    def _woken_count(self) -> _Count:
        return _Count(lambda: 0)

    @property
    def _wait_semaphore(self) -> _Count:
        """The notifications handed out and not yet taken by a waiter."""
        return _Count(self._cond.pending)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}({self._lock}, {self._cond.waiters()})>"


class _Count:
    """A read-only count with a semaphore's ``get_value()``."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.get_value = read


def _rebuild_condition(lock: Lock, segment_id: int, offset: int) -> Condition:
    condition = Condition.__new__(Condition)
    condition._lock = lock
    condition._attach(_segments.find(segment_id), offset, False)
    condition._bind()
    return condition


# -- barrier -------------------------------------------------------------------


class Barrier(threading.Barrier):
    """A barrier for ``parties`` processes, as ``multiprocessing.Barrier``:
    threading.Barrier's algorithm over a shared :class:`Condition`, with its
    state and count in shared memory."""

    def __init__(
        self,
        parties: int,
        action: Callable[[], object] | None = None,
        timeout: float | None = None,
        *,
        ctx: Any = None,
    ) -> None:
        if not isinstance(parties, int) or parties < 1:
            raise ValueError("parties must be > 0")
        state = Semaphore(0)  # only its slot: the state and count live there
        self._setup(Condition(Lock()), state, parties, action, timeout)
        self._state = 0
        self._count = 0

    def _setup(
        self,
        cond: Condition,
        holder: Semaphore,
        parties: int,
        action: Callable[[], object] | None,
        timeout: float | None,
    ) -> None:
        self._cond = cond
        self._holder = holder
        view = memoryview(holder._segment).cast("B")
        self._shared = view[holder._offset + 16 : holder._offset + 24].cast("i")
        self._action = action
        self._timeout = timeout
        self._parties = parties

    def __reduce__(self) -> Any:
        return _rebuild_barrier, (self._cond, self._holder, self._parties, self._action, self._timeout)

    @property
    def _state(self) -> int:
        return int(self._shared[0])

    @_state.setter
    def _state(self, value: int) -> None:
        self._shared[0] = value

    @property
    def _count(self) -> int:
        return int(self._shared[1])

    @_count.setter
    def _count(self, value: int) -> None:
        self._shared[1] = value


def _rebuild_barrier(
    cond: Condition,
    holder: Semaphore,
    parties: int,
    action: Callable[[], object] | None,
    timeout: float | None,
) -> Barrier:
    barrier = Barrier.__new__(Barrier)
    barrier._setup(cond, holder, parties, action, timeout)
    return barrier
