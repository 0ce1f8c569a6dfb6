"""``forkfarm.Pool``: multiprocessing.Pool's API on the forkfarm runtime.

There is no helper thread: tasks go straight to the C runtime, whose loop
thread dispatches them to the workers and collects results. A caller waiting
for a result sleeps in C with the GIL released. Callbacks run in the loop
thread, under the GIL, as multiprocessing runs them in its result thread.
"""

from __future__ import annotations

import atexit
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from multiprocessing import TimeoutError
from multiprocessing.pool import MaybeEncodingError
from typing import Any, Generic, TypeVar

from . import _core, _errors, _protocol

__all__ = ["Pool", "AsyncResult", "ApplyResult", "MapResult", "IMapIterator", "MaybeEncodingError"]

_T = TypeVar("_T")
_S = TypeVar("_S")

RUN = 0
CLOSE = 1
TERMINATE = 2

_live_pools: weakref.WeakSet[Any] = weakref.WeakSet()


def _shutdown_live_pools() -> None:
    """At exit, stop what is still running, as multiprocessing does, so that
    no worker outlives the program."""
    for pool in list(_live_pools):
        try:
            pool._shutdown_at_exit()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


atexit.register(_shutdown_live_pools)


def _flush_std_streams() -> None:
    """Flushes Python's standard streams before a fork, so that buffered
    output is not written twice."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def create_core(
    processes: int,
    initializer: Callable[..., object] | None,
    initargs: Iterable[Any],
    max_tasks: int | None,
) -> _core.Pool:
    """Creates the runtime pool behind a Pool or an Executor."""
    _flush_std_streams()
    return _core.Pool(processes, _protocol, initializer, tuple(initargs), max_tasks or 0)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_pool_arguments(
    count: int | None,
    count_error: str,
    initializer: object,
    max_tasks: object,
    max_tasks_error: str,
    context: Any,
) -> int:
    """Validates the arguments Pool and Executor share, with the messages of
    the class they stand in for, and returns the worker count."""
    if count is None:
        count = os.cpu_count() or 1
    if not _is_int(count):
        raise TypeError(f"the number of workers must be an int, not {type(count).__name__}")
    if count < 1:
        raise ValueError(count_error)
    if max_tasks is not None and (not _is_int(max_tasks) or max_tasks < 1):  # type: ignore[operator]
        raise ValueError(max_tasks_error)
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    check_start_method(context)
    return count


def check_start_method(context: Any) -> None:
    """forkfarm forks its workers from a zygote; a context that asks for
    another start method is refused, not silently ignored."""
    if context is None:
        return
    method = context.get_start_method() if hasattr(context, "get_start_method") else context
    if method not in (None, "fork"):
        raise ValueError(
            f"start method {method!r} is not supported yet: forkfarm forks its workers "
            "(the 'fork' method)"
        )


def _outcome_error(task: _core.Task) -> BaseException:
    outcome = task.outcome()
    assert outcome is not None
    status, detail, exit = outcome
    return _errors.from_outcome(status, detail, exit)


def task_value(task: _core.Task) -> Any:
    """The value of a finished task, or raises its exception."""
    payload = task.payload()
    if payload is None:
        raise _outcome_error(task)
    return _protocol.decode_result(payload)


class ApplyResult(Generic[_T]):
    """The result of :meth:`Pool.apply_async`, as in multiprocessing."""

    def __init__(
        self,
        pool: Pool,
        callback: Callable[[_T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._pool = pool
        self._callback = callback
        self._error_callback = error_callback
        self._task: _core.Task | None = None
        self._decoded = False
        self._success = False
        self._value: Any = None

    def _start(self, payload: bytes) -> None:
        notify = self._on_done if (self._callback or self._error_callback) else None
        self._task = self._pool._submit(payload, notify=notify)

    def _decode(self) -> None:
        if self._decoded:
            return
        assert self._task is not None
        try:
            self._value = task_value(self._task)
            self._success = True
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller
            self._value = exc
            self._success = False
        self._decoded = True

    def _on_done(self, task: _core.Task) -> None:
        # In the loop thread, under the GIL, before waiters are woken.
        self._decode()
        if self._success and self._callback is not None:
            self._callback(self._value)
        elif not self._success and self._error_callback is not None:
            self._error_callback(self._value)

    def ready(self) -> bool:
        """True once the task has finished."""
        assert self._task is not None
        return self._task.done()

    def successful(self) -> bool:
        """True if the task returned without raising. ValueError if not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        self._decode()
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Waits up to timeout seconds for the task to finish."""
        assert self._task is not None
        self._task.wait(timeout)

    def get(self, timeout: float | None = None) -> _T:
        """Returns the result, raising the task's exception or TimeoutError."""
        assert self._task is not None
        if not self._task.wait(timeout):
            raise TimeoutError
        self._decode()
        if self._success:
            return self._value  # type: ignore[no-any-return]
        raise self._value


AsyncResult = ApplyResult


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


class MapResult(ApplyResult[list[_T]]):
    """The result of :meth:`Pool.map_async` and :meth:`Pool.starmap_async`.

    Without callbacks, finished chunks are collected through a completion
    queue by whoever waits; with callbacks, the loop thread collects them as
    they finish so the callback runs even if nobody waits.
    """

    def __init__(
        self,
        pool: Pool,
        chunks: list[bytes],
        chunk_lengths: list[int],
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        context: _core.Context | None,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._offsets = list(itertools.accumulate([0] + chunk_lengths[:-1]))
        self._results: list[Any] = [None] * sum(chunk_lengths)
        self._remaining = len(chunks)
        self._error: BaseException | None = None
        self._event = threading.Event()
        self._queue: _core.CompletionQueue | None = None
        self._index: dict[int, int] = {}
        if self._remaining == 0:
            self._finish()
            return
        if callback is not None or error_callback is not None:
            for i, payload in enumerate(chunks):
                pool._submit(payload, notify=self._chunk_notifier(i), context=context)
        else:
            self._queue = _core.CompletionQueue()
            for i, payload in enumerate(chunks):
                task = pool._submit(payload, queue=self._queue, context=context)
                self._index[task.id] = i

    def _chunk_notifier(self, index: int) -> Callable[[_core.Task], None]:
        return lambda task: self._collect(index, task)

    def _collect(self, index: int, task: _core.Task) -> None:
        if self._event.is_set():
            return
        try:
            values = task_value(task)
        except BaseException as exc:  # noqa: BLE001 - the first error ends the map
            self._error = exc
            self._finish()
            return
        start = self._offsets[index]
        self._results[start : start + len(values)] = values
        self._remaining -= 1
        if self._remaining == 0:
            self._finish()

    def _finish(self) -> None:
        self._decoded = True
        self._success = self._error is None
        self._value = self._results if self._success else self._error
        if self._success and self._callback is not None:
            self._callback(self._value)
        elif not self._success and self._error_callback is not None:
            self._error_callback(self._value)
        self._event.set()

    def _drain(self, timeout: float | None) -> bool:
        assert self._queue is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._event.is_set():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            task = self._queue.get(left)
            if task is None:
                return False
            self._collect(self._index.pop(task.id), task)
        return True

    def ready(self) -> bool:
        if self._queue is not None and not self._event.is_set():
            self._drain(0)
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> None:
        if self._queue is not None:
            self._drain(timeout)
        else:
            self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> list[_T]:
        self.wait(timeout)
        if not self._event.is_set():
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._results


class IMapIterator(Iterator[_T]):
    """The iterator of :meth:`Pool.imap` (ordered) and
    :meth:`Pool.imap_unordered`.

    Inputs with a length are submitted at once; other iterables are consumed
    lazily, a window of chunks ahead of the consumer, so that an endless
    generator does not fill memory.
    """

    def __init__(
        self,
        pool: Pool,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int,
        star: bool,
        ordered: bool,
    ) -> None:
        self._pool = pool
        self._func = func
        self._star = star
        self._ordered = ordered
        self._chunk_source = _chunks(iterable, chunksize)
        self._context = pool._context(func, star)
        self._queue = _core.CompletionQueue()
        self._index: dict[int, int] = {}
        self._submitted = 0
        self._exhausted = False
        self._window = None if hasattr(iterable, "__len__") else max(4, 4 * pool._processes)
        self._finished: dict[int, _core.Task] = {}
        self._next_chunk = 0
        self._current: Iterator[Any] = iter(())
        self._fill()

    def _fill(self) -> None:
        while not self._exhausted and (
            self._window is None or self._submitted - self._next_chunk < self._window
        ):
            chunk = next(self._chunk_source, None)
            if chunk is None:
                self._exhausted = True
                return
            payload = _protocol.encode_items(chunk)
            task = self._pool._submit(payload, queue=self._queue, context=self._context)
            self._index[task.id] = self._submitted
            self._submitted += 1

    def __iter__(self) -> IMapIterator[_T]:
        return self

    def __next__(self) -> _T:
        return self.next()

    def next(self, timeout: float | None = None) -> _T:
        """The next result; TimeoutError if none arrives within timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for value in self._current:
                return value  # type: ignore[no-any-return]
            if self._next_chunk >= self._submitted and self._exhausted:
                raise StopIteration
            task = self._finished.pop(self._next_chunk, None) if self._ordered else None
            while task is None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                got = self._queue.get(left)
                if got is None:
                    raise TimeoutError
                index = self._index.pop(got.id)
                if not self._ordered or index == self._next_chunk:
                    task = got
                else:
                    self._finished[index] = got
            self._next_chunk += 1
            self._fill()
            self._current = iter(task_value(task))

    __next__.__doc__ = next.__doc__


class Pool:
    """A pool of worker processes, with multiprocessing.Pool's API.

    Workers are forked from a zygote made when the pool is created, so they
    see this process as it was then, as with multiprocessing's fork method.
    A worker that dies fails only the task it was running, with
    :class:`forkfarm.WorkerLostError`, and is replaced.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
    ) -> None:
        self._state = TERMINATE  # until the runtime pool exists
        processes = check_pool_arguments(
            processes,
            "Number of processes must be at least 1",
            initializer,
            maxtasksperchild,
            "maxtasksperchild must be a positive int or None",
            context,
        )
        self._processes = processes
        self._core = create_core(processes, initializer, initargs, maxtasksperchild)
        self._state = RUN
        _live_pools.add(self)

    def __reduce__(self) -> tuple[Any, ...]:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled"
        )

    def __repr__(self) -> str:
        state = {RUN: "RUN", CLOSE: "CLOSE", TERMINATE: "TERMINATE"}[self._state]
        return f"<{type(self).__name__} state={state} pool_size={self._processes}>"

    # -- submission --------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _submit(
        self,
        payload: bytes,
        notify: Callable[[_core.Task], None] | None = None,
        queue: _core.CompletionQueue | None = None,
        context: _core.Context | None = None,
    ) -> _core.Task:
        try:
            return self._core.submit(payload, notify, queue, context)
        except _core.Error as error:
            raise _errors.from_error(error, self._core) from None

    def _context(self, func: Callable[..., Any], star: bool) -> _core.Context:
        """The context of a map's tasks: its function, sent to each worker
        once rather than with every chunk."""
        try:
            return self._core.context(_protocol.encode_function(func, star))
        except _core.Error as error:
            raise _errors.from_error(error, self._core) from None

    @staticmethod
    def _check_func(func: object) -> None:
        if not callable(func):
            raise TypeError(f"{type(func).__name__!r} object is not callable")

    def _chunksize(self, chunksize: int | None, length: int) -> int:
        if chunksize is None:
            # As multiprocessing: about four chunks per worker.
            chunksize, extra = divmod(length, self._processes * 4)
            return chunksize + 1 if extra else max(chunksize, 1)
        if not _is_int(chunksize):
            raise TypeError(f"chunksize must be an int, not {type(chunksize).__name__}")
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        return chunksize

    def apply(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},  # noqa: B006 - multiprocessing's signature
    ) -> _T:
        """Calls ``func(*args, **kwds)`` in a worker and returns its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},  # noqa: B006
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> ApplyResult[_T]:
        """Starts ``func(*args, **kwds)`` in a worker; returns an AsyncResult."""
        self._check_running()
        self._check_func(func)
        payload = _protocol.encode_call(func, args, kwds)
        result: ApplyResult[_T] = ApplyResult(self, callback, error_callback)
        result._start(payload)
        return result

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
        callback: Callable[[list[Any]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> MapResult[Any]:
        self._check_running()
        self._check_func(func)
        items = iterable if isinstance(iterable, (list, tuple)) else list(iterable)
        size = self._chunksize(chunksize, len(items))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        context = self._context(func, star) if chunks else None
        payloads = [_protocol.encode_items(list(c)) for c in chunks]
        return MapResult(
            self, payloads, [len(c) for c in chunks], callback, error_callback, context
        )

    def map(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
    ) -> list[_T]:
        """``[func(x) for x in iterable]``, computed by the workers."""
        return self._map_async(func, iterable, chunksize, False, None, None).get()

    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[_T]:
        """Starts a map; returns an AsyncResult whose value is the list."""
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
    ) -> list[_T]:
        """``[func(*args) for args in iterable]``, computed by the workers."""
        return self._map_async(func, iterable, chunksize, True, None, None).get()

    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[_T]:
        """Starts a starmap; returns an AsyncResult whose value is the list."""
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def imap(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int = 1
    ) -> IMapIterator[_T]:
        """An iterator over ``func(x)`` for x in iterable, in order."""
        self._check_running()
        self._check_func(func)
        size = self._chunksize(chunksize, 0)
        return IMapIterator(self, func, iterable, size, star=False, ordered=True)

    def imap_unordered(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int = 1
    ) -> IMapIterator[_T]:
        """An iterator over ``func(x)`` for x in iterable, as they finish."""
        self._check_running()
        self._check_func(func)
        size = self._chunksize(chunksize, 0)
        return IMapIterator(self, func, iterable, size, star=False, ordered=False)

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Accepts no more tasks; the workers exit once the queued ones ran."""
        if self._state == RUN:
            self._state = CLOSE
            self._core.close()

    def terminate(self) -> None:
        """Stops the workers at once. Unfinished tasks fail with
        :class:`forkfarm.PoolTerminatedError`."""
        if not hasattr(self, "_core"):
            return
        self._state = TERMINATE
        self._core.terminate()
        self._core.join()

    def join(self) -> None:
        """Waits for the workers to exit, after close() or terminate()."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._core.join()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def _shutdown_at_exit(self) -> None:
        self.terminate()

    def __del__(self) -> None:
        if getattr(self, "_state", TERMINATE) == RUN:
            import warnings

            warnings.warn(
                f"unclosed running forkfarm pool {self!r}", ResourceWarning, source=self
            )
