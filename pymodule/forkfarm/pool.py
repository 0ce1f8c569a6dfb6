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
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from multiprocessing import TimeoutError
from multiprocessing.pool import MaybeEncodingError, ThreadPool  # type: ignore[attr-defined]
from multiprocessing.util import debug
from typing import Any, Generic, NamedTuple, TypeVar, cast

from . import _core, _errors, _forkserver, _identity, _node, _progress, _protocol, _stats

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "MapResult",
    "MaybeEncodingError",
    "Pool",
    "RemoteTraceback",
    "ThreadPool",
]

RemoteTraceback = _errors.RemoteTraceback

# ThreadPool is multiprocessing's: threads in this process, which forkfarm
# has nothing to add to.

_T = TypeVar("_T")
_S = TypeVar("_S")

# multiprocessing.pool's state names, which user code compares with.
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

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


# Pool(inner_threads=...) unless given: the available CPUs shared among the
# workers.
AUTO = "auto"


def create_core(
    processes: int,
    initializer: Callable[..., object] | None,
    initargs: Iterable[Any],
    max_tasks: int | None,
    timeout: float | None = None,
    retries: int = 0,
    max_memory: int | None = None,
    method: str = "fork",
    inner_threads: int | str | None = None,
    pin: _node.Pin = None,
    max_message: int | None = None,
    role: str = "PoolWorker",
    on_demand: bool = False,
) -> tuple[_core.Pool, _protocol.MainSnapshot]:
    """Creates the runtime pool behind a Pool or an Executor, with its
    zygote forked from here (``"fork"``) or made by the fork server
    (``"forkserver"``), and what its workers' ``__main__`` holds. Each
    worker first takes its identity (``current_process()`` is
    ``ForkPoolWorker-N`` for ``role="PoolWorker"``), its CPUs (``pin``)
    and caps its BLAS and OpenMP threads (``inner_threads``), then runs the
    initializer. With ``on_demand`` a worker starts only when a task finds
    none idle."""
    _flush_std_streams()
    initargs = tuple(initargs)
    if method == "mpi":
        if initializer is not None or max_tasks or timeout or retries or max_memory or pin:
            raise NotImplementedError(
                "an MPI pool takes no initializer, maxtasksperchild, timeout, retries, "
                "max_memory_per_child or pin yet"
            )
        from . import mpi

        # Its core has the runtime pool's interface, in Python.
        return cast("tuple[_core.Pool, _protocol.MainSnapshot]", mpi.core(processes))
    inner = _node.default_inner_threads(processes) if inner_threads == AUTO else inner_threads
    plan = _node.pin_plan(pin, processes)
    if inner is not None or plan is not None:
        initargs = (inner, plan, initializer, *initargs)
        initializer = _node.start_worker
        if inner is not None and method == "fork":
            _node.prepare_parent()
    initargs = (_identity.identity_for(method, role), initializer, *initargs)
    initializer = _identity.start_worker
    zygote = None
    lendable: list[int] = []
    if method == "forkserver":
        # A fork server's workers did not inherit what the initializer's
        # arguments name: they may open those segments from here.
        if initializer is not None:
            lendable = _core.pins_of((initializer, initargs))
        zygote, main_at_fork = _forkserver.zygote(
            initializer, initargs, max_tasks or 0, max_memory or 0, max_message or 0
        )
    else:
        main_at_fork = _protocol.main_snapshot()
    # With the fork server the zygote has its own copy of the initializer;
    # the pool's keeps what it may refer to (a lock's segment) alive.
    core = _core.Pool(
        processes,
        _protocol,
        initializer,
        initargs,
        max_tasks or 0,
        timeout or 0.0,
        retries,
        max_memory or 0,
        zygote,
        max_message or 0,
        lendable,
        on_demand=on_demand,
    )
    return core, main_at_fork


def check_inner_threads(inner_threads: object) -> None:
    """"auto", None, or a positive number of threads."""
    if inner_threads is None or inner_threads == AUTO:
        return
    if isinstance(inner_threads, bool) or not isinstance(inner_threads, int):
        raise TypeError(
            f"inner_threads must be a number of threads, 'auto' or None, not {type(inner_threads).__name__}"
        )
    if inner_threads < 1:
        raise ValueError(f"inner_threads must be at least 1, not {inner_threads}")


def check_max_memory(max_memory: object) -> int | None:
    """None, or a positive number of bytes."""
    if max_memory is None:
        return None
    if isinstance(max_memory, bool) or not isinstance(max_memory, int):
        raise TypeError(
            f"max_memory_per_child must be a number of bytes or None, not {type(max_memory).__name__}"
        )
    if max_memory < 1:
        raise ValueError(f"max_memory_per_child must be a positive number of bytes, not {max_memory}")
    return max_memory


def check_max_message(max_message: object) -> int | None:
    """None (the default: a quarter of the memory), or a positive number of
    bytes: the largest result a worker may send."""
    if max_message is None:
        return None
    if isinstance(max_message, bool) or not isinstance(max_message, int):
        raise TypeError(
            f"max_message_size must be a number of bytes or None, not {type(max_message).__name__}"
        )
    if max_message < 1:
        raise ValueError(f"max_message_size must be a positive number of bytes, not {max_message}")
    return max_message


def check_buffersize(buffersize: object) -> None:
    """Python 3.14's check of ``buffersize`` (Executor.map, Pool.imap)."""
    if buffersize is not None and not _is_int(buffersize):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and cast(int, buffersize) < 1:
        raise ValueError("buffersize must be None or > 0")


def check_retries(retries: object) -> int:
    """A count of retries: an int, 0 or more."""
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"retries must be an int, not {type(retries).__name__}")
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, not {retries}")
    return retries


def check_task_timeout(timeout: object) -> float | None:
    """None, or a positive number of seconds: a task's time limit."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not timeout > 0 or timeout != timeout or timeout == float("inf"):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    return float(timeout)


def chunk_timeout(timeout: float | None, items: int) -> float:
    """The time limit of a task of `items` items: the per-item timeout for
    each (-1 for None: no limit)."""
    return -1.0 if timeout is None else timeout * max(items, 1)


class TaskLimits(NamedTuple):
    """The limits one call sets on its tasks, over the pool's: ``timeout``
    in seconds per item (None: the pool's) and ``retries`` (-1: the
    pool's)."""

    timeout: float | None = None
    retries: int = -1

    @classmethod
    def checked(cls, timeout: object, retries: object) -> TaskLimits:
        """The limits of a call's ``timeout=`` and ``retries=`` arguments,
        checked as the pool's are."""
        if timeout is None and retries is None:
            return NO_LIMITS
        return cls(
            check_task_timeout(timeout),
            -1 if retries is None else check_retries(retries),
        )

    def submit_args(self, pool_timeout: float | None, items: int) -> tuple[float, int]:
        """The runtime's (timeout, retries) for a task of `items` items."""
        timeout = self.timeout if self.timeout is not None else pool_timeout
        return chunk_timeout(timeout, items), self.retries


NO_LIMITS = TaskLimits()


class CallEncoder:
    """Encodes calls for one runtime pool. A module-level function called
    again and again travels to each worker once, as a context, and each call
    then carries only its arguments; other callables travel with every
    call. The most recent functions keep their contexts."""

    LIMIT = 64

    def __init__(self, core: _core.Pool, main_at_fork: _protocol.MainSnapshot) -> None:
        self._core = core
        self._contexts: dict[Any, _core.Context] = {}
        # What the workers' copy of __main__ holds: what __main__ defines
        # later travels by value.
        self.main_at_fork = main_at_fork

    def sendable(self, func: Any) -> Any:
        """func, or func to be sent by value when its reference would not
        resolve in the workers."""
        return _protocol.sendable(func, self.main_at_fork)

    def encode(
        self, func: Callable[..., Any], args: Iterable[Any], kwds: Mapping[str, Any]
    ) -> tuple[bytes, _core.Context | None]:
        if not _protocol.cacheable(func):
            return _protocol.encode_call(self.sendable(func), args, kwds), None
        context = self._contexts.get(func)
        if context is None:
            try:
                context = self._core.context(_protocol.encode_callee(self.sendable(func)))
            except _core.Error as error:
                raise _errors.from_error(error, self._core) from None
            if len(self._contexts) >= self.LIMIT:
                # Another thread may evict at the same time: either is fine.
                try:
                    del self._contexts[next(iter(self._contexts))]
                except (KeyError, RuntimeError, StopIteration):
                    pass
            self._contexts[func] = context
        return _protocol.encode_arguments(args, kwds), context


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
        count = _node.available_cpus()
    if not _is_int(count):
        raise TypeError(f"the number of workers must be an int, not {type(count).__name__}")
    if count < 1:
        raise ValueError(count_error)
    if max_tasks is not None and (not _is_int(max_tasks) or max_tasks < 1):  # type: ignore[operator]
        raise ValueError(max_tasks_error)
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    return count


def start_method(context: Any, backend: str | None = None) -> str:
    """The start method a new pool uses: the one its context names, or the
    one set with ``set_start_method``, or else ``"fork"``, unless the
    caller has other threads: then ``"forkserver"``, since a process with
    threads must not fork. ``"spawn"`` is the fork server too."""
    from . import context as contexts

    if backend not in (None, "local", "mpi"):
        raise ValueError(f"backend must be 'local' or 'mpi', not {backend!r}")
    if backend == "mpi" or (backend is None and context is None and _mpi_launched()):
        return "mpi"
    if context is None:
        method = contexts.get_start_method(allow_none=True)
    elif isinstance(context, str):
        method = context
    else:  # ours or multiprocessing's; a default one may have none set
        method = context.get_start_method(allow_none=True)
    if method is None:
        return "forkserver" if contexts.threaded() else "fork"
    if method not in contexts.START_METHODS:
        raise ValueError(f"cannot find context for {method!r}")
    return "forkserver" if method == "spawn" else method


def _mpi_launched() -> bool:
    """On rank 0 under ``python -m forkfarm.mpi``: pools farm to the ranks."""
    mpi = sys.modules.get("forkfarm.mpi")
    return mpi is not None and bool(mpi.launched())


def _outcome_error(task: _core.Task) -> BaseException:
    outcome = task.outcome()
    assert outcome is not None
    status, detail, exit = outcome
    return _errors.from_outcome(status, detail, exit)


def task_value(task: _core.Task) -> Any:
    """The value of a finished task, or raises its exception."""
    if not task.ok():
        raise _outcome_error(task)
    return _protocol.decode_result(task)


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
        # The callback thread and a waiting caller may both decode.
        self._decoding = threading.Lock()
        self._success = False
        self._value: Any = None

    def _start(self, payload: bytes, context: _core.Context | None, limits: TaskLimits) -> None:
        notify = self._on_done if (self._callback or self._error_callback) else None
        self._task = self._pool._submit(payload, notify=notify, context=context, limits=limits)

    def _decode(self) -> None:
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

    def _on_done(self, task: _core.Task) -> None:
        # In the callback thread, before waiters are woken, and perhaps
        # before _start has stored the task it is about to return.
        self._task = task
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


#: Worker time an adaptive chunk aims at: long enough that the cost of a
#: round trip (tens of microseconds) is lost in it, short enough that the
#: workers finish together and results flow back steadily.
_TARGET_CHUNK_SECONDS = 0.005
#: How much an adaptive chunk may grow over the largest one so far, so that
#: an estimate made on tiny chunks (dominated by fixed costs) is corrected
#: in a few steps rather than trusted at once.
_CHUNK_GROWTH = 8
#: Chunks in flight per worker when they are fed lazily.
_CHUNKS_PER_WORKER = 4


class _ChunkFeed:
    """Cuts the items of a map into chunks and submits them.

    With a chunksize, every chunk has that size. Without one (``None``), the
    size adapts as joblib's ``batch_size="auto"`` does: from the time the
    workers report for each chunk, it aims at :data:`_TARGET_CHUNK_SECONDS`
    per chunk, starting from one item and growing at most
    :data:`_CHUNK_GROWTH`-fold per step; for inputs of known length it never
    takes more than a fair share of what is left (a quarter of it per worker),
    so that tiny tasks travel in large chunks while long or uneven tasks are
    spread one by one.

    Lists, tuples and ranges are sliced (a range slice travels as three
    numbers); other iterables are consumed as chunks are cut.
    """

    def __init__(
        self,
        pool: Pool,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
        limits: TaskLimits,
    ) -> None:
        self.pool = pool
        self.limits = limits
        self.context = pool._context(func, star)
        self.items: list[Any] | tuple[Any, ...] | range | None = None
        self.iterator: Iterator[Any] | None = None
        self.length: int | None = None
        if isinstance(iterable, (list, tuple, range)):
            self.items = iterable
            self.length = len(iterable)
        else:
            self.iterator = iter(iterable)
        self.fixed = chunksize
        self.position = 0
        self.largest = 1
        self.seconds_per_item: float | None = None
        self.recent: list[tuple[int, float]] = []  # (items, seconds per item)
        self.exhausted = self.length == 0
        # What the input iterable raised, once it has: the items before it
        # are still delivered, as multiprocessing does.
        self.failure: Exception | None = None
        # Within one map a buffer that many items carry is copied once.
        self.memo = _core.BufferMemo()

    def _size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.seconds_per_item is None:
            return 1
        target = max(1, int(_TARGET_CHUNK_SECONDS / max(self.seconds_per_item, 1e-9)))
        size = min(target, self.largest * _CHUNK_GROWTH)
        if self.length is not None:
            # The tail shrinks so the workers finish together, but not below
            # an eighth of the target: tinier chunks would cost more in
            # round trips than they save in balance.
            left = self.length - self.position
            share = -(-left // (_CHUNKS_PER_WORKER * self.pool._processes))
            size = min(size, max(1, share, target // _CHUNK_GROWTH))
        self.largest = max(self.largest, size)
        return size

    def next_chunk(self) -> tuple[bytes, int, int] | None:
        """The next chunk as (payload, offset of its first item, count), or
        None once the items are exhausted."""
        if self.exhausted:
            return None
        size = self._size()
        start = self.position
        if self.items is not None:
            assert self.length is not None
            chunk: Any = self.items[start : start + size]
            count = len(chunk)
            if count < 64 and isinstance(chunk, range):
                chunk = list(chunk)  # a short list pickles faster than a range
            self.exhausted = start + count >= self.length
        else:
            assert self.iterator is not None
            try:
                chunk = list(itertools.islice(self.iterator, size))
            except Exception as exc:  # noqa: BLE001 - raised to the consumer in its place
                # The chunk being cut is lost with the error, as in
                # multiprocessing, whose chunks are cut the same way.
                self.failure = exc
                self.exhausted = True
                return None
            count = len(chunk)
            if count < size:
                self.exhausted = True
            if count == 0:
                return None
        self.position = start + count
        return _protocol.encode_items(chunk, self.memo), start, count

    def cut_all(self) -> tuple[list[bytes], list[int]]:
        """Every chunk left of a fixed chunksize over a sequence, at once:
        (payloads, item counts)."""
        assert self.fixed is not None and self.items is not None and self.length is not None
        items, size, start, length = self.items, self.fixed, self.position, self.length
        dumps, protocol = _protocol.dumps, _protocol.PROTOCOL
        if size == 1:
            try:
                payloads = _core.encode_singletons(items[start:], dumps, protocol)
            except Exception:  # noqa: BLE001 - what plain pickle refused
                payloads = _core.encode_singletons(items[start:], _protocol.dumps_or_by_value, protocol)
            counts = [1] * len(payloads)
        else:
            starts = range(start, length, size)
            memo = self.memo
            payloads = [_protocol.encode_items(items[i : i + size], memo) for i in starts]
            counts = [min(size, length - i) for i in starts]
        self.position = length
        self.exhausted = True
        return payloads, counts

    def record(self, task: _core.Task, count: int) -> None:
        """Learns from a finished chunk how long an item takes."""
        if self.fixed is not None or count == 0:
            return
        ns = task.run_ns()
        if ns <= 0:
            return
        # The median over the recent chunks of the larger sizes: small
        # chunks are blurred by the fixed cost of a chunk, and a worker that
        # lost its core for a while (time is measured by the clock) reports
        # an outlier the median ignores.
        recent = self.recent
        recent.append((count, ns * 1e-9 / count))
        if len(recent) > 16:
            del recent[0]
        largest = max(c for c, _ in recent)
        rates = sorted(r for c, r in recent if c * 8 >= largest)
        self.seconds_per_item = rates[len(rates) // 2]


class MapResult(ApplyResult[list[_T]]):
    """The result of :meth:`Pool.map_async` and :meth:`Pool.starmap_async`.

    Each chunk's completion is handled as it finishes, by whichever thread
    collects results (a waiting caller, or the runtime's loop thread): it
    stores the values and submits the next chunks, so the map progresses
    whether or not anyone waits.
    """

    def __init__(
        self,
        pool: Pool,
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
        self._in_flight: dict[_core.Task, tuple[int, int]] = {}
        if not items:
            self._feed = None
            self._finish()
            return
        self._feed = _ChunkFeed(pool, func, items, chunksize, star, limits)
        # A fixed chunksize is all submitted at once, as multiprocessing
        # does; adaptive chunks are cut a window ahead.
        self._window = None if chunksize is not None else _CHUNKS_PER_WORKER * pool._processes
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
            task = self._pool._submit(
                payload, notify=self._collect, context=feed.context, items=count, limits=feed.limits
            )
            self._in_flight[task] = (start, count)

    def _collect(self, task: _core.Task) -> None:
        # Runs in the thread that collected the result, under the GIL,
        # before waiters of the task are woken.
        with self._lock:
            where = self._in_flight.pop(task, None)
            if where is None or self._event.is_set():
                return
            start, count = where
            try:
                if not task.ok():
                    raise _outcome_error(task)
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
        pool: Pool,
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
        self._feed = feed = _ChunkFeed(pool, func, iterable, chunksize, star, limits)
        self._queue = pool._completion_queue()
        # task id -> (chunk index, item count), where ordering or adaptive
        # sizes need it.
        self._chunks: dict[int, tuple[int, int]] = {}
        self._track = ordered or chunksize is None
        self._submitted = 0
        self._finished: dict[int, _core.Task] = {}
        self._next_chunk = 0
        # The values of the current chunk, last first, so pop() is the next.
        self._current: list[Any] = []
        # The input iterable's error, and the chunk index it stands at.
        self._failure: tuple[int, Exception] | None = None
        if chunksize is not None and feed.length is not None and buffersize is None:
            self._window: int | None = None
            payloads, counts = feed.cut_all()
            tasks = pool._submit_many(
                payloads, self._queue, feed.context, max(counts, default=1), limits
            )
            if self._track:
                self._chunks = {t.id: (i, c) for i, (t, c) in enumerate(zip(tasks, counts))}
            self._submitted = len(tasks)
        else:
            # At most this many chunks are submitted but not yet consumed.
            self._window = buffersize or max(4, _CHUNKS_PER_WORKER * pool._processes)
            self._fill()
        if not feed.exhausted:
            pool._feeding.add(self)

    def _flush(self) -> None:
        """Submits every chunk left: the pool is closing."""
        self._window = None
        self._fill()

    def _fill(self) -> None:
        feed = self._feed
        submit = self._pool._submit
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
        current = self._current
        if current:
            return current.pop()  # type: ignore[no-any-return]
        return self._advance(None)

    def next(self, timeout: float | None = None) -> _T:
        """The next result; TimeoutError if none arrives within timeout."""
        current = self._current
        if current:
            return current.pop()  # type: ignore[no-any-return]
        return self._advance(timeout)

    def _get(self, deadline: float | None) -> _core.Task:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        task = self._queue.get(left)
        if task is None:
            raise TimeoutError
        return task

    def _advance(self, timeout: float | None) -> _T:
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


# How long ``Pool._pool`` waits for workers still starting.
_WORKERS_UP_SECONDS = 5.0


class PoolWorker:
    """A worker of a running pool, as ``Pool._pool`` lists it: its pid and
    name, whether it is alive, and signals. Workers are the zygote's
    children, not this process's: their exit codes are not ours to wait
    for."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.name = name
        self.daemon = True

    def is_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def terminate(self) -> None:
        """SIGTERM: the pool replaces the worker, and its task fails."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the pool replaces the worker, and its task fails."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def __repr__(self) -> str:
        return f"<PoolWorker name={self.name!r} pid={self.pid}>"


class Pool:
    """A pool of worker processes, with multiprocessing.Pool's API.

    Workers are forked from a zygote made when the pool is created, so they
    see this process as it was then, as with multiprocessing's fork method.
    A worker that dies fails only the task it was running, with
    :class:`forkfarm.WorkerLostError`, and is replaced. ``timeout`` (not a
    multiprocessing parameter) limits each task to that many seconds (each
    item, in a map): past it, the worker is stopped (SIGTERM, then SIGKILL
    a second later) and replaced, and the task raises
    :class:`forkfarm.TaskTimeoutError`. ``retries`` runs a task whose worker
    died under it again, up to that many times, before it fails.
    ``max_memory_per_child`` (bytes) replaces a worker whose resident memory
    exceeds it after a task, once the tasks it holds are done.
    ``max_message_size`` (bytes; by default a quarter of the memory) is the
    largest result a worker may send: a larger one fails its task with
    :class:`forkfarm.MessageTooLargeError`.

    ``processes`` defaults to :func:`forkfarm.available_cpus`. Each worker
    caps its BLAS and OpenMP threads at ``inner_threads`` (by default the
    available CPUs shared among the workers; None leaves them alone), and
    ``pin`` (True, "cores", "sockets" or a CPU list per worker) gives each
    worker slot its own CPUs. ``backend="mpi"`` farms the tasks to MPI
    ranks (see :mod:`forkfarm.mpi`).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        timeout: float | None = None,
        retries: int = 0,
        max_memory_per_child: int | None = None,
        backend: str | None = None,
        inner_threads: int | str | None = AUTO,
        pin: _node.Pin = None,
        max_message_size: int | None = None,
    ) -> None:
        self._state = TERMINATE  # until the runtime pool exists
        check_inner_threads(inner_threads)
        self._timeout = check_task_timeout(timeout)
        retries = check_retries(retries)
        max_memory = check_max_memory(max_memory_per_child)
        max_message = check_max_message(max_message_size)
        self._start_method = start_method(context, backend)
        if processes is None and self._start_method == "mpi":
            from . import mpi

            processes = mpi.ranks()
        processes = check_pool_arguments(
            processes,
            "Number of processes must be at least 1",
            initializer,
            maxtasksperchild,
            "maxtasksperchild must be a positive int or None",
            context,
        )
        self._processes = processes
        # Maps and imaps that still cut chunks as results come back.
        self._feeding: weakref.WeakSet[Any] = weakref.WeakSet()
        self._core, main_at_fork = create_core(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            self._timeout,
            retries,
            max_memory,
            self._start_method,
            inner_threads,
            pin,
            max_message,
        )
        self._calls = CallEncoder(self._core, main_at_fork)
        self._state = RUN
        _live_pools.add(self)

    def __reduce__(self) -> tuple[Any, ...]:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled"
        )

    def __repr__(self) -> str:
        cls = type(self)
        return (
            f"<{cls.__module__}.{cls.__qualname__} state={self._state} "
            f"pool_size={self._processes}>"
        )

    def _repopulate_pool(self) -> None:
        """multiprocessing's private refill, which programs call after
        workers exit: the runtime replaces workers itself, so this only
        waits (a few seconds at most) until every slot has one."""
        self._pool  # noqa: B018 - reading it waits for the workers

    @property
    def _pool(self) -> list[PoolWorker]:
        """The workers running now, as multiprocessing's ``Pool._pool``
        (which programs read for the workers' pids)."""
        if self._state == TERMINATE and not hasattr(self, "_core"):
            return []
        # Workers start in the background: a pool that is just made, or
        # replacing one, has them within milliseconds.
        deadline = time.monotonic() + _WORKERS_UP_SECONDS
        pids = self._core.worker_pids()
        while self._state == RUN and len(pids) < self._processes and time.monotonic() < deadline:
            time.sleep(0.002)
            pids = self._core.worker_pids()
        prefix = _identity.identity_for(self._start_method, "PoolWorker").name_prefix
        return [PoolWorker(pid, f"{prefix}-{slot + 1}") for slot, pid in enumerate(pids)]

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
        items: int = 1,
        limits: TaskLimits = NO_LIMITS,
    ) -> _core.Task:
        try:
            if limits is NO_LIMITS and self._timeout is None:
                # The common call: the runtime's defaults, no tuple to build.
                return self._core.submit(payload, notify, queue, context)
            return self._core.submit(
                payload, notify, queue, context, *limits.submit_args(self._timeout, items)
            )
        except _core.Error as error:
            raise _errors.from_error(error, self._core) from None

    def _submit_many(
        self,
        payloads: list[bytes],
        queue: _core.CompletionQueue,
        context: _core.Context,
        items: int = 1,
        limits: TaskLimits = NO_LIMITS,
    ) -> list[_core.Task]:
        try:
            return self._core.submit_many(
                payloads, queue, context, *limits.submit_args(self._timeout, items)
            )
        except _core.Error as error:
            raise _errors.from_error(error, self._core) from None

    def _context(self, func: Callable[..., Any], star: bool) -> _core.Context:
        """The context of a map's tasks: its function, sent to each worker
        once rather than with every chunk."""
        try:
            return self._core.context(_protocol.encode_function(self._calls.sendable(func), star))
        except _core.Error as error:
            raise _errors.from_error(error, self._core) from None

    @staticmethod
    def _check_func(func: object) -> None:
        if not callable(func):
            raise TypeError(f"{type(func).__name__!r} object is not callable")

    @staticmethod
    def _check_chunksize(chunksize: int | None) -> int | None:
        """None (adaptive chunks) or a positive int, as multiprocessing checks."""
        if chunksize is None:
            return None
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
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> _T:
        """Calls ``func(*args, **kwds)`` in a worker and returns its result.

        ``timeout`` and ``retries`` (not multiprocessing parameters) set this
        call's own limits, as the pool's parameters of the same names do for
        every call; None keeps the pool's."""
        return self.apply_async(func, args, kwds, timeout=timeout, retries=retries).get()

    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},  # noqa: B006
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> ApplyResult[_T]:
        """Starts ``func(*args, **kwds)`` in a worker; returns an AsyncResult.
        ``timeout`` and ``retries``: as for :meth:`apply`."""
        self._check_running()
        self._check_func(func)
        limits = NO_LIMITS if timeout is None and retries is None else TaskLimits.checked(timeout, retries)
        payload, context = self._calls.encode(func, args, kwds)
        result: ApplyResult[_T] = ApplyResult(self, callback, error_callback)
        result._start(payload, context, limits)
        return result

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
        callback: Callable[[list[Any]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        limits: TaskLimits,
        progress: _progress.Progress = False,
    ) -> MapResult[Any]:
        self._check_running()
        self._check_func(func)
        size = self._check_chunksize(chunksize)
        items = iterable if isinstance(iterable, (list, tuple, range)) else list(iterable)
        return MapResult(self, func, items, size, star, callback, error_callback, limits, progress)

    def map(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        progress: _progress.Progress = False,
    ) -> list[_T]:
        """``[func(x) for x in iterable]``, computed by the workers.
        ``timeout`` (seconds per item) and ``retries``: as for :meth:`apply`.
        ``progress=True`` shows a tqdm bar of the items done (or pass a
        tqdm-compatible object)."""
        limits = TaskLimits.checked(timeout, retries)
        return self._map_async(func, iterable, chunksize, False, None, None, limits, progress).get()

    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        progress: _progress.Progress = False,
    ) -> MapResult[_T]:
        """Starts a map; returns an AsyncResult whose value is the list."""
        limits = TaskLimits.checked(timeout, retries)
        return self._map_async(func, iterable, chunksize, False, callback, error_callback, limits, progress)

    def starmap(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        progress: _progress.Progress = False,
    ) -> list[_T]:
        """``[func(*args) for args in iterable]``, computed by the workers."""
        limits = TaskLimits.checked(timeout, retries)
        return self._map_async(func, iterable, chunksize, True, None, None, limits, progress).get()

    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        progress: _progress.Progress = False,
    ) -> MapResult[_T]:
        """Starts a starmap; returns an AsyncResult whose value is the list."""
        limits = TaskLimits.checked(timeout, retries)
        return self._map_async(func, iterable, chunksize, True, callback, error_callback, limits, progress)

    def imap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        buffersize: int | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        progress: _progress.Progress = False,
    ) -> IMapIterator[_T]:
        """An iterator over ``func(x)`` for x in iterable, in order. Without
        a chunksize, chunks are sized adaptively from measured task time.
        ``buffersize`` (Python 3.15's) caps the chunks submitted ahead of
        the consumer; without it a list of a fixed chunksize is submitted
        whole, and other inputs a few chunks per worker ahead. An error of
        the input iterable is raised at its position, after the results
        before it. ``timeout`` (seconds per item) and ``retries``: as for
        :meth:`apply` (the iterator's ``next(timeout)`` is a wait, as in
        multiprocessing)."""
        return self._imap(func, iterable, chunksize, True, timeout, retries, progress, buffersize)

    def imap_unordered(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        buffersize: int | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        progress: _progress.Progress = False,
    ) -> IMapIterator[_T]:
        """An iterator over ``func(x)`` for x in iterable, as they finish.
        Without a chunksize, chunks are sized adaptively; ``buffersize``
        and the rest as for :meth:`imap`."""
        return self._imap(func, iterable, chunksize, False, timeout, retries, progress, buffersize)

    def _imap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        ordered: bool,
        timeout: float | None,
        retries: int | None,
        progress: _progress.Progress,
        buffersize: int | None = None,
    ) -> IMapIterator[Any]:
        self._check_running()
        self._check_func(func)
        size = self._check_chunksize(chunksize)
        check_buffersize(buffersize)
        limits = TaskLimits.checked(timeout, retries)
        return IMapIterator(
            self, func, iterable, size, star=False, ordered=ordered, limits=limits,
            progress=progress, buffersize=buffersize,
        )

    def imap_async_iter(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        ordered: bool = True,
        timeout: float | None = None,
        retries: int | None = None,
        progress: _progress.Progress = False,
    ) -> AsyncMapIterator[_T]:
        """:meth:`imap` (or, with ``ordered=False``, :meth:`imap_unordered`)
        for asyncio: ``async for result in pool.imap_async_iter(f, xs)``."""
        method = self.imap if ordered else self.imap_unordered
        return AsyncMapIterator(
            method(func, iterable, chunksize, timeout=timeout, retries=retries, progress=progress)
        )

    def _completion_queue(self) -> _core.CompletionQueue:
        """A queue of finished tasks, of the kind the pool's core fills."""
        if self._start_method == "mpi":
            return cast(_core.CompletionQueue, cast(Any, self._core).completion_queue())
        return _core.CompletionQueue()

    @property
    def start_method(self) -> str:
        """Where the workers come from: ``"fork"`` (a zygote forked from
        the caller), ``"forkserver"`` (from the fork server) or ``"mpi"``
        (the other MPI ranks, under ``python -m forkfarm.mpi``)."""
        return self._start_method

    def layout(self) -> list[_node.WorkerPlace]:
        """Where each live worker runs: its pid, the CPUs it may use and
        their NUMA nodes."""
        return _node.layout(self._core.worker_pids())

    def stats(self) -> _stats.PoolStats:
        """What the pool has done and is doing: tasks queued, in flight,
        done and failed, and per worker its pid, tasks, busy and idle time,
        bytes moved, restarts and the task it runs now (and for how long:
        a straggler stands out there)."""
        return _stats.read(self._core)

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Accepts no more tasks; the workers exit once the queued ones ran."""
        debug("closing pool")  # multiprocessing's records, to get_logger()'s logger
        if self._state == RUN:
            for job in list(self._feeding):
                job._flush()
            self._feeding.clear()
            self._state = CLOSE
            self._core.close()

    def terminate(self) -> None:
        """Stops the workers at once. Unfinished tasks fail with
        :class:`forkfarm.PoolTerminatedError`."""
        if not hasattr(self, "_core"):
            return
        debug("terminating pool")
        self._state = TERMINATE
        self._core.terminate()
        self._core.join()
        _protocol.trim_arena()

    def join(self) -> None:
        """Waits for the workers to exit, after close() or terminate()."""
        debug("joining pool")
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._core.join()
        _protocol.trim_arena()

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

            # multiprocessing's words, which programs and tests filter on.
            warnings.warn(
                f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self
            )
