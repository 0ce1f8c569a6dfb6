"""``forkfarm.Executor``: a :class:`concurrent.futures.Executor` on the
forkfarm runtime.

Futures are completed as the results arrive, by the runtime's callback thread
(a C thread that takes the GIL), in completion order, or by the thread that
waits for a future's result, if it gets there first: there is no management
thread, and a slow done-callback delays only other callbacks, never the
workers. A worker that dies fails only
the future it was running, with :class:`forkfarm.WorkerLostError`; the
executor replaces the worker and keeps going, where ProcessPoolExecutor
breaks entirely.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from . import _core, _errors, _node, _progress, _protocol, _stats
from .pool import (
    NO_LIMITS,
    CallEncoder,
    TaskLimits,
    _live_pools,
    AUTO,
    check_inner_threads,
    check_max_memory,
    check_max_message,
    check_pool_arguments,
    check_retries,
    check_task_timeout,
    create_core,
    start_method,
    task_value,
)

__all__ = ["Executor", "LimitedCalls"]

_T = TypeVar("_T")


def _advance(bar: Any, count: int, _future: object) -> None:
    bar.update(count)


class _Future(concurrent.futures.Future):  # type: ignore[type-arg]
    """A future whose cancel() also withdraws its task from the runtime."""

    _task: _core.Task | None = None
    _executor: Executor | None = None

    def cancel(self) -> bool:
        """Cancels the call. Unlike ProcessPoolExecutor's, a running call is
        cancelled too: its worker is killed and replaced. False only once
        the call has finished."""
        if self._task is not None and not self._task.kill():
            return False
        return super().cancel()

    def _cancel_if_queued(self) -> bool:
        """Cancels the call only if no worker has it yet (what
        ``shutdown(cancel_futures=True)`` does)."""
        if self._task is not None and not self._task.cancel():
            return False
        return super().cancel()

    def _collect(self, timeout: float | None) -> float | None:
        """Waits on the runtime's task, which lets this thread collect the
        result itself (and run _on_done) rather than sleep on the future's
        condition until the loop thread does. Returns what is left of the
        timeout, for the future's own wait."""
        task = self._task
        if task is None or self.done() or timeout is None:
            if task is not None and not self.done():
                task.wait(None)
            return timeout
        deadline = time.monotonic() + timeout
        task.wait(timeout)
        return max(0.0, deadline - time.monotonic())

    def result(self, timeout: float | None = None) -> Any:
        return super().result(self._collect(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return super().exception(self._collect(timeout))

    def _on_done(self, task: _core.Task) -> None:
        # In the thread that collected the result, under the GIL, before the
        # task's waiters are woken.
        executor = self._executor
        self._executor = None
        if executor is not None:
            executor._pending.discard(self)
        outcome = task.outcome()
        if outcome is not None and outcome[0] == _core.ECANCELED and not self.cancelled():
            super().cancel()
        if not self.set_running_or_notify_cancel():
            return
        try:
            self.set_result(task_value(task))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            if isinstance(exc, _errors.WorkerLostError):
                exc.task = self  # the call it lost
            self.set_exception(exc)


class Executor(concurrent.futures.Executor):
    """An executor of worker processes, for concurrent.futures code.

    ``max_workers`` defaults to :func:`forkfarm.available_cpus`, the CPUs
    this process may use. ``initializer(*initargs)``
    runs once in each worker; if it raises, the executor is broken and
    submit() raises :class:`concurrent.futures.process.BrokenProcessPool`.
    ``max_tasks_per_child`` replaces a worker after that many tasks.
    ``timeout`` limits each call to that many seconds (each item, in a
    map): past it, the worker is stopped and replaced, and the call raises
    :class:`forkfarm.TaskTimeoutError`, a ``TimeoutError``. ``retries``
    runs a call whose worker died under it again, up to that many times.
    ``max_memory_per_child`` (bytes) replaces a worker whose resident memory
    exceeds it after a call. ``max_message_size``, ``inner_threads``,
    ``pin`` and ``backend`` are :class:`forkfarm.Pool`'s.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        mp_context: Any = None,
        timeout: float | None = None,
        retries: int = 0,
        max_memory_per_child: int | None = None,
        backend: str | None = None,
        inner_threads: int | str | None = AUTO,
        pin: _node.Pin = None,
        max_message_size: int | None = None,
    ) -> None:
        self._shutdown_requested = True  # until the runtime pool exists
        check_inner_threads(inner_threads)
        self._timeout = check_task_timeout(timeout)
        retries = check_retries(retries)
        max_memory = check_max_memory(max_memory_per_child)
        max_message = check_max_message(max_message_size)
        self._start_method = start_method(mp_context, backend)
        if max_workers is None and self._start_method == "mpi":
            from . import mpi

            max_workers = mpi.ranks()
        max_workers = check_pool_arguments(
            max_workers,
            "max_workers must be greater than 0",
            initializer,
            max_tasks_per_child,
            "max_tasks_per_child must be >= 1",
            mp_context,
        )
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._pending: set[_Future] = set()
        self._core, main_at_fork = create_core(
            max_workers,
            initializer,
            initargs,
            max_tasks_per_child,
            self._timeout,
            retries,
            max_memory,
            self._start_method,
            inner_threads,
            pin,
            max_message,
        )
        self._calls = CallEncoder(self._core, main_at_fork)
        self._shutdown_requested = False
        _live_pools.add(self)

    def _submit_payload(
        self,
        payload: bytes,
        context: _core.Context | None = None,
        items: int = 1,
        limits: TaskLimits = NO_LIMITS,
    ) -> _Future:
        future = _Future()
        future._executor = self
        with self._lock:
            if self._shutdown_requested:
                raise RuntimeError("cannot schedule new futures after shutdown")
            # Tracked before it can finish, so its completion always finds it.
            self._pending.add(future)
            try:
                # The thread that waits for this future completes it itself
                # if it gets there before the callback thread.
                future._task = self._core.submit(
                    payload,
                    future._on_done,
                    None,
                    context,
                    *limits.submit_args(self._timeout, items),
                    claimable=True,
                )
            except _core.Error as error:
                self._pending.discard(future)
                raise _errors.from_error(error, self._core) from None
        return future

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[_T]:
        """Schedules ``fn(*args, **kwargs)``; returns its Future. Arguments
        that cannot be pickled raise here, in the caller."""
        return self._submit_call(fn, args, kwargs, NO_LIMITS)

    def _submit_call(
        self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any], limits: TaskLimits
    ) -> concurrent.futures.Future[_T]:
        if not callable(fn):
            raise TypeError(f"{type(fn).__name__!r} object is not callable")
        payload, context = self._calls.encode(fn, args, kwargs)
        return self._submit_payload(payload, context, 1, limits)

    def with_options(self, *, timeout: float | None = None, retries: int | None = None) -> LimitedCalls:
        """This executor's submit() and map() with limits of their own:
        ``timeout`` in seconds per call (per item, in a map) and
        ``retries``, as the executor's parameters of the same names set for
        every call; None keeps the executor's. ``submit`` cannot take them
        itself: its keyword arguments are the function's.

        ``executor.with_options(timeout=5).submit(f, x)``."""
        return LimitedCalls(self, TaskLimits.checked(timeout, retries))

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        progress: _progress.Progress = False,
    ) -> Iterator[_T]:
        """Like :meth:`concurrent.futures.Executor.map`; chunksize items
        travel together in one task. ``progress=True`` shows a tqdm bar of
        the items done (or pass a tqdm-compatible object)."""
        return self._map(fn, iterables, timeout, chunksize, NO_LIMITS, progress)

    def _map(
        self,
        fn: Callable[..., _T],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int,
        limits: TaskLimits,
        progress: _progress.Progress = False,
    ) -> Iterator[_T]:
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if not callable(fn):
            raise TypeError(f"{type(fn).__name__!r} object is not callable")
        deadline = None if timeout is None else time.monotonic() + timeout
        total = None
        if iterables and all(isinstance(it, (list, tuple, range)) for it in iterables):
            total = min(len(it) for it in iterables)  # type: ignore[arg-type]
        bar = _progress.make_bar(progress, total)
        args = zip(*iterables)
        futures = []
        context = None
        memo = _core.BufferMemo()  # a buffer many items carry is copied once
        while chunk := list(itertools.islice(args, chunksize)):
            if context is None:
                try:
                    context = self._core.context(
                        _protocol.encode_function(self._calls.sendable(fn), True)
                    )
                except _core.Error as error:
                    raise _errors.from_error(error, self._core) from None
            future = self._submit_payload(_protocol.encode_items(chunk, memo), context, len(chunk), limits)
            if bar is not None:
                future.add_done_callback(functools.partial(_advance, bar, len(chunk)))
            futures.append(future)

        def results() -> Iterator[_T]:
            try:
                futures.reverse()
                while futures:
                    future = futures.pop()
                    if deadline is None:
                        yield from future.result()
                    else:
                        yield from future.result(deadline - time.monotonic())
            finally:
                for future in futures:
                    future.cancel()
                _progress.finish(bar, progress is True)

        return results()

    @property
    def start_method(self) -> str:
        """Where the workers come from: ``"fork"`` or ``"forkserver"``."""
        return self._start_method

    def layout(self) -> list[_node.WorkerPlace]:
        """Where each live worker runs: its pid, the CPUs it may use and
        their NUMA nodes."""
        return _node.layout(self._core.worker_pids())

    def stats(self) -> _stats.PoolStats:
        """As :meth:`forkfarm.Pool.stats`."""
        return _stats.read(self._core)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops accepting work. With cancel_futures, futures no worker has
        started are cancelled. With wait, returns once the workers exited."""
        with self._lock:
            if not hasattr(self, "_core"):
                return
            self._shutdown_requested = True
            pending = list(self._pending) if cancel_futures else []
        for future in pending:
            future._cancel_if_queued()
        self._core.close()
        if wait:
            self._core.join()
            _protocol.trim_arena()

    def _shutdown_at_exit(self) -> None:
        self.shutdown(wait=True)


class LimitedCalls:
    """An :class:`Executor`'s calls with limits of their own, made by
    :meth:`Executor.with_options`. The calls run on that executor."""

    def __init__(self, executor: Executor, limits: TaskLimits) -> None:
        self._executor = executor
        self._limits = limits

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[_T]:
        """:meth:`Executor.submit`, with these limits."""
        return self._executor._submit_call(fn, args, kwargs, self._limits)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        progress: _progress.Progress = False,
    ) -> Iterator[_T]:
        """:meth:`Executor.map`, with these limits (``timeout`` here is
        map's own: the time to wait for all the results)."""
        return self._executor._map(fn, iterables, timeout, chunksize, self._limits, progress)
