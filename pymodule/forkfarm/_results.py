"""What Pool's calls return: ApplyResult (apply_async), MapResult
(map_async, starmap_async), IMapIterator (imap, imap_unordered) and
AsyncMapIterator (imap_async_iter), as multiprocessing.pool has them. Each
holds the pool that made it, which keeps that pool alive while results are
pending, as multiprocessing's do."""

from __future__ import annotations

import threading
import time
import weakref
from multiprocessing import TimeoutError
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from . import _errors, _progress, _protocol
from ._backend import Task
from ._engine import Engine, TaskLimits, outcome_error, task_value
from ._feed import CHUNKS_PER_WORKER, ChunkFeed

__all__ = [
    "ApplyResult",
    "AsyncMapIterator",
    "AsyncResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
]

_T = TypeVar("_T")


class Front(Protocol):
    """The pool a result belongs to: its engine, and the maps still cutting
    chunks, which the pool's close() flushes."""

    _engine: Engine
    _feeding: weakref.WeakSet[Any]


class ApplyResult(Generic[_T]):
    """The result of :meth:`Pool.apply_async`, as in multiprocessing."""

    def __init__(
        self,
        pool: Front,
        callback: Callable[[_T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._pool = pool
        self._callback = callback
        self._error_callback = error_callback
        self._task: Task | None = None
        self._decoded = False
        # The callback thread and a waiting caller may both decode.
        self._decoding = threading.Lock()
        self._success = False
        self._value: Any = None
        # Where what its tasks print goes, when the workers' output is
        # captured: the caller's streams of now.
        self._sink = pool._engine.sink()

    def _start(self, payload: Any, context: Any, limits: TaskLimits) -> None:
        callbacks = self._callback is not None or self._error_callback is not None
        notify = self._on_done if callbacks or self._sink is not None else None
        # With no callback, whose order is promised, the thread that waits
        # for the result writes the task's output itself, with no hop
        # through the callback thread.
        self._task = self._pool._engine.submit(
            payload, notify=notify, context=context, limits=limits, claimable=notify is not None and not callbacks
        )

    def _decode(self) -> None:
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        if self._decoded:
            return
        with self._decoding:
            if self._decoded:
                return
            assert self._task is not None
            try:
                self._value = task_value(self._task)
                self._success = True
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                if isinstance(exc, _errors.WorkerLostError):
                    exc.task = self  # the call it lost
                self._value = exc
                self._success = False
            self._decoded = True

    def _on_done(self, task: Task) -> None:
        # In the callback thread, before waiters are woken, and perhaps
        # before _start has stored the task it is about to return. What the
        # task printed comes out before its result is delivered.
        self._task = task
        if self._sink is not None:
            self._sink.deliver(task)
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
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        assert self._task is not None
        if not self._task.wait(timeout):
            raise TimeoutError
        self._decode()
        if self._success:
            return self._value  # type: ignore[no-any-return]
        raise self._value


AsyncResult = ApplyResult


class MapResult(ApplyResult[list[_T]]):
    """The result of :meth:`Pool.map_async` and :meth:`Pool.starmap_async`.

    Each chunk's completion is handled as it finishes, by whichever thread
    collects results (a waiting caller, or the runtime's loop thread): it
    stores the values and submits the next chunks, so the map progresses
    whether or not anyone waits.
    """

    def __init__(
        self,
        pool: Front,
        func: Callable[..., Any],
        items: list[Any] | tuple[Any, ...] | range,
        chunksize: int | None,
        star: bool,
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        limits: TaskLimits,
        progress: _progress.Progress = False,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._bar = _progress.make_bar(progress, len(items))
        self._owns_bar = progress is True
        self._results: list[Any] = [None] * len(items)
        self._error: BaseException | None = None
        self._event = threading.Event()
        # Completions may be handled by several threads, one at a time under
        # the GIL but switching between bytecodes.
        self._lock = threading.RLock()
        self._in_flight: dict[Task, tuple[int, int]] = {}
        if not items:
            self._feed = None
            self._finish()
            return
        self._feed = ChunkFeed(pool._engine, func, items, chunksize, star, limits)
        # A fixed chunksize is all submitted at once, as multiprocessing
        # does; adaptive chunks are cut a window ahead.
        self._window = None if chunksize is not None else CHUNKS_PER_WORKER * pool._engine.workers
        with self._lock:
            self._fill()
        if not self._feed.exhausted:
            pool._feeding.add(self)

    def _flush(self) -> None:
        """Submits every chunk left: the pool is closing, and close() lets
        the work already asked for finish."""
        with self._lock:
            self._window = None
            if self._feed is not None and not self._event.is_set():
                self._fill()

    def _fill(self) -> None:
        feed = self._feed
        assert feed is not None
        window = self._window
        while window is None or len(self._in_flight) < window:
            chunk = feed.next_chunk()
            if chunk is None:
                return
            payload, start, count = chunk
            # Its completion, handled in another thread, waits for the lock
            # this thread holds, so the entry is there first.
            task = self._pool._engine.submit(
                payload, notify=self._collect, context=feed.context, items=count, limits=feed.limits
            )
            self._in_flight[task] = (start, count)

    def _collect(self, task: Task) -> None:
        # Runs in the thread that collected the result, under the GIL,
        # before waiters of the task are woken.
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        with self._lock:
            where = self._in_flight.pop(task, None)
            if self._sink is not None and where is not None:
                self._sink.deliver(task)
            if where is None or self._event.is_set():
                return
            start, count = where
            try:
                if not task.ok():
                    raise outcome_error(task)
                task.value_into(_protocol.loads, self._results, start, count)
            except BaseException as exc:  # noqa: BLE001 - the first error ends the map
                if isinstance(exc, _errors.WorkerLostError):
                    exc.task = self  # the map it lost a chunk of
                self._error = exc
                self._finish()
                return
            assert self._feed is not None
            if self._bar is not None:
                self._bar.update(count)
            self._feed.record(task, count)
            if not self._feed.exhausted:
                try:
                    self._fill()
                except BaseException as exc:  # noqa: BLE001 - e.g. the pool was terminated
                    self._error = exc
                    self._finish()
                    return
            if not self._in_flight and self._feed.exhausted:
                self._finish()

    def _finish(self) -> None:
        _progress.finish(self._bar, self._owns_bar)
        self._decoded = True
        self._success = self._error is None
        self._value = self._results if self._success else self._error
        self._event.set()
        if self._success and self._callback is not None:
            self._callback(self._value)
        elif not self._success and self._error_callback is not None:
            self._error_callback(self._value)

    def ready(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> None:
        # Waiting on a chunk still in flight lets this thread collect
        # results itself, rather than sleep until another thread does.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._event.is_set():
            with self._lock:
                task = next(iter(self._in_flight), None)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if task is None:
                self._event.wait(left)
                return
            if not task.wait(left):
                return

    def get(self, timeout: float | None = None) -> list[_T]:
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        self.wait(timeout)
        if not self._event.is_set():
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._results


class IMapIterator(Iterator[_T]):
    """The iterator of :meth:`Pool.imap` (ordered) and
    :meth:`Pool.imap_unordered`.

    With a fixed chunksize, inputs of known length are submitted at once;
    other iterables, and adaptive chunks, are fed a window of chunks ahead of
    the consumer, so that an endless generator does not fill memory.
    """

    def __init__(
        self,
        pool: Front,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
        ordered: bool,
        limits: TaskLimits,
        progress: _progress.Progress = False,
        buffersize: int | None = None,
    ) -> None:
        self._pool = pool
        self._ordered = ordered
        total = len(iterable) if isinstance(iterable, (list, tuple, range)) else None
        self._bar = _progress.make_bar(progress, total)
        self._owns_bar = progress is True
        self._feed = feed = ChunkFeed(pool._engine, func, iterable, chunksize, star, limits)
        self._queue = pool._engine.completion_queue()
        self._sink = pool._engine.sink()
        # task id -> (chunk index, item count), where ordering or adaptive
        # sizes need it.
        self._chunks: dict[int, tuple[int, int]] = {}
        self._track = ordered or chunksize is None
        self._submitted = 0
        self._finished: dict[int, Task] = {}
        self._next_chunk = 0
        # The values of the current chunk, last first, so pop() is the next.
        self._current: list[Any] = []
        # The input iterable's error, and the chunk index it stands at.
        self._failure: tuple[int, Exception] | None = None
        if chunksize is not None and feed.length is not None and buffersize is None:
            self._window: int | None = None
            payloads, counts = feed.cut_all()
            tasks = pool._engine.submit_many(
                payloads, self._queue, feed.context, max(counts, default=1), limits
            )
            if self._track:
                self._chunks = {t.id: (i, c) for i, (t, c) in enumerate(zip(tasks, counts))}
            self._submitted = len(tasks)
        else:
            # At most this many chunks are submitted but not yet consumed.
            self._window = buffersize or max(4, CHUNKS_PER_WORKER * pool._engine.workers)
            self._fill()
        if not feed.exhausted:
            pool._feeding.add(self)

    def _flush(self) -> None:
        """Submits every chunk left: the pool is closing."""
        self._window = None
        self._fill()

    def _fill(self) -> None:
        feed = self._feed
        submit = self._pool._engine.submit
        queue = self._queue
        context = feed.context
        window = self._window
        while window is None or self._submitted - self._next_chunk < window:
            chunk = feed.next_chunk()
            if chunk is None:
                if feed.failure is not None and self._failure is None:
                    self._failure = (self._submitted, feed.failure)
                return
            payload, _start, count = chunk
            task = submit(payload, queue=queue, context=context, items=count, limits=feed.limits)
            if self._track:
                self._chunks[task.id] = (self._submitted, count)
            self._submitted += 1

    def __iter__(self) -> IMapIterator[_T]:
        return self

    def __next__(self) -> _T:
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        current = self._current
        if current:
            return current.pop()  # type: ignore[no-any-return]
        return self._advance(None)

    def next(self, timeout: float | None = None) -> _T:
        """The next result; TimeoutError if none arrives within timeout."""
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        current = self._current
        if current:
            return current.pop()  # type: ignore[no-any-return]
        return self._advance(timeout)

    def _get(self, deadline: float | None) -> Task:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        task = self._queue.get(left)
        if task is None:
            raise TimeoutError
        if self._sink is not None:
            self._sink.deliver(task)
        return task

    def _advance(self, timeout: float | None) -> _T:
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        deadline = None if timeout is None else time.monotonic() + timeout
        feed = self._feed
        while True:
            failure = self._failure
            if failure is not None and (
                failure[0] == self._next_chunk
                or (not self._ordered and self._next_chunk >= self._submitted)
            ):
                # In order, at its own position; unordered, after the
                # results already asked for. Then the iterator ends.
                self._failure = None
                self._next_chunk = self._submitted
                _progress.finish(self._bar, self._owns_bar)
                self._bar = None
                raise failure[1]
            if self._next_chunk >= self._submitted and feed.exhausted:
                _progress.finish(self._bar, self._owns_bar)
                self._bar = None
                raise StopIteration
            if self._ordered:
                task = self._finished.pop(self._next_chunk, None)
                while task is None:
                    got = self._get(deadline)
                    index, count = self._chunks.pop(got.id)
                    feed.record(got, count)
                    if index == self._next_chunk:
                        task = got
                    else:
                        self._finished[index] = got
            else:
                task = self._get(deadline)
                if self._track:
                    feed.record(task, self._chunks.pop(task.id)[1])
            self._next_chunk += 1
            if not feed.exhausted:
                self._fill()
            values = task_value(task)
            if self._bar is not None:
                self._bar.update(len(values))
            if values:
                values.reverse()
                self._current = values
                return values.pop()  # type: ignore[no-any-return]


_DONE = object()


def _next_or_done(iterator: IMapIterator[Any]) -> Any:
    try:
        return iterator.next()
    except StopIteration:
        return _DONE


# One class serves imap and imap_unordered; multiprocessing names the
# second one's so.
IMapUnorderedIterator = IMapIterator


class AsyncMapIterator(Generic[_T]):
    """``async for`` over the results of :meth:`Pool.imap_async_iter`.
    Results already in are taken at once; to wait for the next, a thread of
    asyncio's default executor waits in the runtime (with the GIL released)
    so that the event loop goes on."""

    def __init__(self, iterator: IMapIterator[_T]) -> None:
        self._iterator = iterator

    def __aiter__(self) -> AsyncMapIterator[_T]:
        return self

    async def __anext__(self) -> _T:
        import asyncio

        try:
            return self._iterator.next(0)
        except TimeoutError:
            pass
        except StopIteration:
            raise StopAsyncIteration from None
        value = await asyncio.to_thread(_next_or_done, self._iterator)
        if value is _DONE:
            raise StopAsyncIteration
        return value  # type: ignore[no-any-return]
