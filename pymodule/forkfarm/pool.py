"""``forkfarm.Pool``: multiprocessing.Pool's API on the forkfarm runtime.

There is no helper thread: tasks go straight to the C runtime, whose loop
thread dispatches them to the workers and collects results. A caller waiting
for a result sleeps in C with the GIL released. Callbacks run in the loop
thread, under the GIL, as multiprocessing runs them in its result thread.
"""

from __future__ import annotations

import os
import signal
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from multiprocessing import TimeoutError as TimeoutError  # multiprocessing.pool has it too
from multiprocessing.pool import MaybeEncodingError, ThreadPool  # type: ignore[attr-defined]
from multiprocessing.util import debug
from typing import Any, TypeVar

from . import _errors, _identity, _node, _progress, _protocol, _reuse, _stats
from ._engine import AUTO, NO_LIMITS, Engine, TaskLimits, check_buffersize, is_int, register
from ._output import OutputMode
from ._results import (
    ApplyResult,
    AsyncMapIterator,
    AsyncResult,
    IMapIterator,
    IMapUnorderedIterator as IMapUnorderedIterator,
    MapResult,
)

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

    ``reuse=True`` (or a grace period in seconds; True is 10) keeps the
    workers for the next pool: when this pool is closed with no task left
    (``close()``, or the end of a ``with`` block), its workers and their
    zygote are parked for the grace period, and a new ``Pool(reuse=...)``
    with compatible arguments (:func:`forkfarm._reuse.compatible`: the same
    size, initializer and arguments, limits, ``sys.path`` and working
    directory) adopts them, so its first result needs no fork. Workers
    nobody adopts exit when the grace period ends, or at exit. Such a pool
    takes its workers from the fork server unless a start method is set;
    fork pools are never reused (their workers must see this process as it
    is when each pool is made), and asking for both raises ValueError.
    ``terminate()`` kills the workers, as always.

    ``output`` says where what the workers print goes (docs/output.md):
    ``"forward"`` sends what a task printed, to descriptors 1 and 2 from
    Python or native code, back with its result and writes it to the
    ``sys.stdout`` and ``sys.stderr`` of the code that submitted it (in
    Jupyter, that cell), nothing lost when its worker is killed;
    ``"inherit"`` lets the workers write to this process's descriptors, as
    multiprocessing's do; ``"auto"`` forwards when ``sys.stdout`` or
    ``sys.stderr`` is not this process's own descriptor (Jupyter, an IDE,
    captured output) or logging is forwarded. ``output_prefix=True``
    starts each forwarded line with ``[worker N]``. ``log_level`` forwards
    the records the workers log at that level and above to this process's
    loggers (docs/logging.md); by default they are forwarded, at the root
    logger's level, when logging is configured here.
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
        reuse: bool | float = False,
        output: OutputMode = "auto",
        output_prefix: bool = False,
        log_level: int | str | None = None,
    ) -> None:
        self._state = TERMINATE  # until the runtime pool exists
        grace = _reuse.grace_of(reuse)
        self._engine = Engine(
            workers=processes,
            workers_error="Number of processes must be at least 1",
            initializer=initializer,
            initargs=initargs,
            max_tasks=maxtasksperchild,
            max_tasks_error="maxtasksperchild must be a positive int or None",
            context=context,
            timeout=timeout,
            retries=retries,
            max_memory_per_child=max_memory_per_child,
            backend=backend,
            inner_threads=inner_threads,
            pin=pin,
            max_message_size=max_message_size,
            role="PoolWorker",
            reuse=grace,
            output=output,
            output_prefix=output_prefix,
            log_level=log_level,
        )
        self._processes = self._engine.workers
        self._core = self._engine.core
        # A call encoded: (payload, context or None), on apply's hot path.
        self._encode_call = self._engine.encoder.call
        # Maps and imaps that still cut chunks as results come back.
        self._feeding: weakref.WeakSet[Any] = weakref.WeakSet()
        self._state = RUN
        register(self)

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
        prefix = _identity.identity_for(self._engine.start_method, "PoolWorker").name_prefix
        return [PoolWorker(pid, f"{prefix}-{slot + 1}") for slot, pid in enumerate(pids)]

    # -- submission --------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    @staticmethod
    def _check_func(func: object) -> None:
        if not callable(func):
            raise TypeError(f"{type(func).__name__!r} object is not callable")

    @staticmethod
    def _check_chunksize(chunksize: int | None) -> int | None:
        """None (adaptive chunks) or a positive int, as multiprocessing checks."""
        if chunksize is None:
            return None
        if not is_int(chunksize):
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
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
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
        payload, context = self._encode_call(func, args, kwds)
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
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
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
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
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

    @property
    def start_method(self) -> str:
        """Where the workers come from: ``"fork"`` (a zygote forked from
        the caller), ``"forkserver"`` (from the fork server) or ``"mpi"``
        (the other MPI ranks, under ``python -m forkfarm.mpi``)."""
        return self._engine.start_method

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
        """Accepts no more tasks; the workers exit once the queued ones ran.
        A pool made with ``reuse`` and no task left parks its workers for
        the next pool instead."""
        debug("closing pool")  # multiprocessing's records, to get_logger()'s logger
        if self._state == RUN:
            for job in list(self._feeding):
                job._flush()
            self._feeding.clear()
            self._state = CLOSE
            if not self._park():
                self._core.close()

    def _park(self) -> bool:
        """Parks the workers for the next pool, if this one is to be reused
        and has no task left: the pool then holds none (``_pool`` is
        empty, join() returns at once)."""
        if self._engine.grace is None or not self._engine.park():
            return False
        self._core = self._engine.core
        self._encode_call = self._engine.encoder.call
        debug("pool parked for reuse")
        return True

    def terminate(self) -> None:
        """Stops the workers at once. Unfinished tasks fail with
        :class:`forkfarm.PoolTerminatedError`."""
        if not hasattr(self, "_core"):
            return
        debug("terminating pool")
        self._state = TERMINATE
        self._core.terminate()
        self._core.join()
        self._engine.deliver_stray()
        _protocol.trim_arena()

    def join(self) -> None:
        """Waits for the workers to exit, after close() or terminate()."""
        debug("joining pool")
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._core.join()
        self._engine.deliver_stray()
        _protocol.trim_arena()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """terminate(), as multiprocessing's; a pool made with ``reuse``
        that has no task left is closed instead, which parks its workers."""
        if self._state == RUN and self._engine.grace is not None and self._engine.idle():
            self.close()
            if isinstance(self._core, _reuse.Released):
                self._state = TERMINATE
                return
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
