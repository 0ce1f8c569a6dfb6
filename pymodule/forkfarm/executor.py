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

Failures otherwise reach the caller as ProcessPoolExecutor's do: a call
that cannot be pickled fails its future (not ``submit``), one whose
arguments cannot be unpickled in the worker, or whose result cannot be
unpickled here, fails with ``BrokenProcessPool``, and the remote traceback
is a ``concurrent.futures.process._RemoteTraceback``. What code written for
ProcessPoolExecutor reads of its internals is there too: ``_processes``,
``_broken``, ``_mp_context``, ``_max_workers`` and
``_executor_manager_thread``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import logging
import os
import pickle
import select
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from typing import Any, TypeVar, cast

from . import _core, _errors, _identity, _node, _output, _progress, _protocol, _stats
from ._backend import Task
from ._engine import AUTO, NO_LIMITS, Engine, TaskLimits, check_buffersize, register
from ._output import OutputMode

__all__ = ["Executor", "LimitedCalls"]

_T = TypeVar("_T")

# How long ``_processes`` waits for the pids of workers being started: the
# zygote reports one within milliseconds of the request.
_PIDS_WAIT = 5.0
# How long a dead worker's exit code may take to arrive from its zygote.
_EXIT_REPORT_WAIT = 1.0
# How long shutdown(cancel_futures=True) gives starting workers to take
# their first calls (an initializer that takes longer loses them).
_FIRST_DISPATCH_WAIT = 5.0

# Where ProcessPoolExecutor's workers log a failing initializer.
_LOGGER = logging.getLogger("concurrent.futures")


def _advance(bar: Any, count: int, _future: object) -> None:
    bar.update(count)


def _initialize_worker(initializer: Callable[..., object], *initargs: Any) -> None:
    """Runs the Executor's initializer in a worker, logging its failure as
    ProcessPoolExecutor's workers do (code that hands its workers a logging
    queue looks for that record)."""
    try:
        initializer(*initargs)
    except BaseException:
        _LOGGER.critical("Exception in initializer:", exc_info=True)
        raise


def _remote_traceback(text: str) -> _RemoteTraceback:
    """The standard library's remote traceback of text (typeshed types its
    argument as a traceback object; it is the formatted text)."""
    return _RemoteTraceback(cast(Any, text))


def _with_exit_cause(exc: _errors.WorkerLostError) -> _errors.WorkerLostError:
    """A lost worker's error, with the cause Python 3.15's BrokenProcessPool
    has: which process ended and its exit code."""
    if exc.__cause__ is None and exc.pid is not None and exc.exitcode is not None:
        exc.__cause__ = _remote_traceback(
            f"\n'''\nProcess {exc.pid} terminated abruptly with exit code {exc.exitcode}'''"
        )
    return exc


def _task_value(task: Task) -> Any:
    """The value of a finished task, or raises what ProcessPoolExecutor
    would for the same failure."""
    if task.ok():
        try:
            return _protocol.decode_result(task)
        except pickle.UnpicklingError as exc:
            raise BrokenProcessPool(f"the task's result could not be unpickled here: {exc}") from exc
    outcome = task.outcome()
    assert outcome is not None
    status, detail, exit = outcome
    if status != _core.ETASKFAILED:
        error = _errors.from_outcome(status, detail, exit)
        if isinstance(error, _errors.WorkerLostError):
            _with_exit_cause(error)
        raise error
    # The remote traceback is the standard library's class, which code
    # written for ProcessPoolExecutor checks for.
    error, stage = _errors.decode_failure(detail, _remote_traceback)
    if stage == _protocol.LOAD_FAILED:
        broken = BrokenProcessPool(
            f"the task could not be unpickled in its worker: {type(error).__name__}: {error}"
        )
        broken.__cause__ = error
        raise broken
    if isinstance(stage, tuple) and len(stage) == 2 and stage[0] == _protocol.RESULT_FAILED:
        # The result did not pickle in the worker: the error that said so.
        error = _errors.decode_error(stage[1], _remote_traceback)
    raise error


class _Future(concurrent.futures.Future):  # type: ignore[type-arg]
    """A future whose cancel() also withdraws its task from the runtime."""

    _task: Task | None = None
    _executor: Executor | None = None
    # Where what its call prints goes, when the workers' output is captured.
    _sink: _output.Sink | None = None

    def cancel(self) -> bool:
        """Cancels the call. Unlike ProcessPoolExecutor's, a running call is
        cancelled too: its worker is killed and replaced. False only once
        the call has finished."""
        task = self._task
        if task is not None and not task.kill():
            return False
        return super().cancel()

    def _cancel_if_queued(self) -> bool:
        """Cancels the call only if no worker has it yet (what
        ``shutdown(cancel_futures=True)`` does)."""
        task = self._task
        if task is not None and not task.cancel():
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
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        return super().result(self._collect(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
        return super().exception(self._collect(timeout))

    def _on_done(self, task: Task) -> None:
        # In the thread that collected the result, under the GIL, before the
        # task's waiters are woken. What the call printed comes first.
        if self._sink is not None:
            self._sink.deliver(task)
        executor = self._executor
        self._executor = None
        if executor is not None:
            executor._pending.discard(self)
        outcome = task.outcome()
        if outcome is not None and outcome[0] == _core.ECANCELED and not self.cancelled():
            super().cancel()
        if self.set_running_or_notify_cancel():
            try:
                self.set_result(_task_value(task))
            except BaseException as exc:  # noqa: BLE001 - delivered through the future
                if isinstance(exc, _errors.WorkerLostError):
                    exc.task = self  # the call it lost
                self.set_exception(exc)
        # The result's bytes (arena memory, maybe) need not outlive the value.
        self._task = None


def _failed_future(error: BaseException) -> _Future:
    future = _Future()
    future.set_exception(error)
    return future


def _result_or_cancel(future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
    """future's result; a future given up on (a timeout) is cancelled, as
    concurrent.futures' map does."""
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        # The caller must hold no reference to the future once it has the
        # result, nor this frame through an exception's traceback.
        del future


class _WorkerProcess:
    """One of an :class:`Executor`'s workers, as ProcessPoolExecutor's
    ``_processes`` holds them: ``pid``, ``exitcode``, ``sentinel``,
    ``is_alive()``, ``join()``, ``terminate()`` and ``kill()``, as on a
    :class:`multiprocessing.Process`. It holds a pidfd of the worker, which
    names that process and never a later one that takes its pid."""

    def __init__(self, executor: Executor, pid: int, pidfd: int, name: str) -> None:
        self.pid = pid
        self.name = name
        self.daemon = True
        self._pidfd = pidfd
        self._exitcode: int | None = None
        # Weak: a process object kept by its user must not keep the pool,
        # whose end is what ends the worker, alive.
        self._executor = weakref.ref(executor)
        self._closer = weakref.finalize(self, os.close, pidfd)

    @property
    def sentinel(self) -> int:
        """A descriptor that becomes readable when the worker exits (for
        ``multiprocessing.connection.wait``)."""
        return self._pidfd

    def _ended(self, timeout: float | None) -> bool:
        if not self._closer.alive:
            return True
        ready, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(ready)

    def is_alive(self) -> bool:
        return not self._ended(0)

    def join(self, timeout: float | None = None) -> None:
        """Waits for the worker to exit, or for timeout seconds."""
        if timeout is None:
            while not self._ended(None):
                pass
        else:
            self._ended(max(0.0, timeout))

    @property
    def exitcode(self) -> int | None:
        """None while it runs; its exit status, or minus the signal that
        ended it, after."""
        if self._exitcode is not None or not self._ended(0):
            return self._exitcode
        deadline = time.monotonic() + _EXIT_REPORT_WAIT
        while True:
            executor = self._executor()
            core = getattr(executor, "_core", None)
            found = core.worker_exit(self.pid) if core is not None else None
            del executor
            if found is not None:
                code, signum = found
                self._exitcode = -signum if signum else code
                return self._exitcode
            if core is None or time.monotonic() > deadline:
                # Exits go unreported only when the pool (or its zygote)
                # killed what was left at its end, with SIGKILL.
                self._exitcode = -signal.SIGKILL
                return self._exitcode
            time.sleep(0.005)

    def _signal(self, signum: int) -> None:
        if not self._closer.alive:
            return
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except ProcessLookupError:
            pass  # it has exited already

    def terminate(self) -> None:
        """Sends the worker SIGTERM."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Sends the worker SIGKILL."""
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        """Lets go of the worker's pidfd."""
        self._closer()

    def __repr__(self) -> str:
        if self.is_alive():
            state = "started daemon"
        else:
            state = f"stopped exitcode={self.exitcode}"
        return f"<{type(self).__name__} name={self.name!r} pid={self.pid} {state}>"


class _ManagerStandIn:
    """What ProcessPoolExecutor's code reads as ``_executor_manager_thread``.
    forkfarm has no such thread (the runtime's loop thread manages the
    workers): this stands for the executor's workers as a whole, and
    ``join()`` returns once the executor was shut down and they exited."""

    name = "forkfarm-runtime"
    daemon = True

    def __init__(self, executor: Executor) -> None:
        self._executor = weakref.ref(executor)

    def is_alive(self) -> bool:
        executor = self._executor()
        return executor is not None and not executor._stopped.is_set()

    def join(self, timeout: float | None = None) -> None:
        executor = self._executor()
        if executor is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        if not executor._shutdown_event.wait(timeout):
            return
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if executor._core.join(left):
            executor._stopped.set()


class Executor(concurrent.futures.Executor):
    """An executor of worker processes, for concurrent.futures code.

    ``max_workers`` defaults to :func:`forkfarm.available_cpus`, the CPUs
    this process may use. ``initializer(*initargs)``
    runs once in each worker; if it raises, the executor is broken and
    submit() raises :class:`concurrent.futures.process.BrokenProcessPool`.
    ``max_tasks_per_child`` replaces a worker after that many tasks (with
    every start method, fork included).
    ``timeout`` limits each call to that many seconds (each item, in a
    map): past it, the worker is stopped and replaced, and the call raises
    :class:`forkfarm.TaskTimeoutError`, a ``TimeoutError``. ``retries``
    runs a call whose worker died under it again, up to that many times.
    ``max_memory_per_child`` (bytes) replaces a worker whose resident memory
    exceeds it after a call. ``max_message_size``, ``inner_threads``,
    ``pin``, ``backend``, ``output``, ``output_prefix`` and ``log_level``
    are :class:`forkfarm.Pool`'s.

    With the fork start method every worker starts with the executor; with
    ``"forkserver"`` and ``"spawn"`` a worker starts when a call finds none
    idle, up to ``max_workers``, as ProcessPoolExecutor's do.
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
        output: OutputMode = "auto",
        output_prefix: bool = False,
        log_level: int | str | None = None,
    ) -> None:
        self._shutdown_requested = True  # until the runtime pool exists
        self._broken_by: str | None = None
        self._lock = threading.Lock()
        self._pending: set[_Future] = set()
        self._workers: dict[int, _WorkerProcess] = {}
        self._shutdown_event = threading.Event()
        self._stopped = threading.Event()
        self._engine = Engine(
            workers=max_workers,
            workers_error="max_workers must be greater than 0",
            initializer=initializer,
            initargs=initargs,
            # Logs a failing initializer as ProcessPoolExecutor's workers do.
            initializer_wrapper=_initialize_worker,
            max_tasks=max_tasks_per_child,
            max_tasks_error="max_tasks_per_child must be >= 1",
            context=mp_context,
            timeout=timeout,
            retries=retries,
            max_memory_per_child=max_memory_per_child,
            backend=backend,
            inner_threads=inner_threads,
            pin=pin,
            max_message_size=max_message_size,
            # Workers are ForkProcess-N, SpawnProcess-N..., as ProcessPoolExecutor's.
            role="Process",
            # ProcessPoolExecutor starts its workers on demand but with fork.
            on_demand_with=("forkserver",),
            output=output,
            output_prefix=output_prefix,
            log_level=log_level,
        )
        self._max_workers = self._engine.workers
        self._core = self._engine.core
        # A call encoded: (payload, context or None), on submit's hot path.
        self._encode_call = self._engine.encoder.call
        # The forkfarm context of the start method in use (None for MPI).
        self._mp_context = mp_context if mp_context is not None else self._engine.backend.mp_context()
        self._shutdown_requested = False
        register(self)

    # -- what code written for ProcessPoolExecutor reads -----------------------

    @property
    def _broken(self) -> str | bool:
        """Why the executor cannot run calls any more (its initializer
        failed, its zygote died, its workers were stopped), else False, as
        ProcessPoolExecutor's attribute of that name says."""
        if self._broken_by is not None:
            return self._broken_by
        core = getattr(self, "_core", None)
        failure = core.error() if core is not None else None
        if failure is None:
            return False
        code, detail, exit = failure
        return str(_errors.from_outcome(code, detail, exit))

    @property
    def _processes(self) -> dict[int, _WorkerProcess]:
        """The live workers by pid, as ProcessPoolExecutor's attribute of
        that name has them. Waits for the pids of workers being started."""
        core = getattr(self, "_core", None)
        if core is None:
            return {}
        deadline = time.monotonic() + _PIDS_WAIT
        pids = core.worker_pids()
        while len(pids) < core.worker_count() and time.monotonic() < deadline:
            time.sleep(0.001)
            pids = core.worker_pids()
        # Named as each calls itself (current_process().name): by its slot.
        prefix = _identity.identity_for(self._engine.start_method, "Process").name_prefix
        slots = {row[0]: slot for slot, row in enumerate(core.stats()[4])}
        with self._lock:
            known = {pid: self._workers[pid] for pid in pids if pid in self._workers}
            for pid in pids:
                if pid not in known:
                    pidfd = core.worker_pidfd(pid)
                    if pidfd is not None:  # else it has just exited
                        name = f"{prefix}-{slots.get(pid, 0) + 1}"
                        known[pid] = _WorkerProcess(self, pid, pidfd, name)
            self._workers = known
            return dict(known)

    @property
    def _executor_manager_thread(self) -> _ManagerStandIn:
        """See :class:`_ManagerStandIn`."""
        return _ManagerStandIn(self)

    # -- submission ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken_by is not None:
            raise BrokenProcessPool(self._broken_by)
        if self._shutdown_requested:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _submit_payload(
        self,
        payload: bytes,
        context: Any = None,
        items: int = 1,
        limits: TaskLimits = NO_LIMITS,
    ) -> _Future:
        future = _Future()
        future._executor = self
        future._sink = self._engine.sink()
        with self._lock:
            self._check_open()
            # Tracked before it can finish, so its completion always finds it.
            self._pending.add(future)
            try:
                # The thread that waits for this future completes it itself
                # if it gets there before the callback thread.
                future._task = self._engine.submit(
                    payload, future._on_done, None, context, items, limits, claimable=True
                )
            except BaseException:
                self._pending.discard(future)
                raise
        return future

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[_T]:
        """Schedules ``fn(*args, **kwargs)``; returns its Future. A call that
        cannot be pickled fails its future, as with ProcessPoolExecutor."""
        return self._submit_call(fn, args, kwargs, NO_LIMITS)

    def _submit_call(
        self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any], limits: TaskLimits
    ) -> concurrent.futures.Future[_T]:
        if not callable(fn):
            raise TypeError(f"{type(fn).__name__!r} object is not callable")
        self._check_open()
        try:
            payload, context = self._encode_call(fn, args, kwargs)
        except Exception as error:  # noqa: BLE001 - delivered through the future
            return _failed_future(error)
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
        buffersize: int | None = None,
        progress: _progress.Progress = False,
    ) -> Iterator[_T]:
        """Like :meth:`concurrent.futures.Executor.map`; chunksize items
        travel together in one task. With ``buffersize`` (Python 3.14's),
        at most that many tasks are submitted ahead of the results taken,
        so the iterables may be endless. ``progress=True`` shows a tqdm bar
        of the items done (or pass a tqdm-compatible object)."""
        return self._map(fn, iterables, timeout, chunksize, NO_LIMITS, progress, buffersize)

    def _map(
        self,
        fn: Callable[..., _T],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int,
        limits: TaskLimits,
        progress: _progress.Progress = False,
        buffersize: int | None = None,
    ) -> Iterator[_T]:
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        check_buffersize(buffersize)
        if not callable(fn):
            raise TypeError(f"{type(fn).__name__!r} object is not callable")
        deadline = None if timeout is None else time.monotonic() + timeout
        total = None
        if iterables and all(isinstance(it, (list, tuple, range)) for it in iterables):
            total = min(len(it) for it in iterables)  # type: ignore[arg-type]
        bar = _progress.make_bar(progress, total)
        chunks = _chunks(zip(*iterables), chunksize)
        submitter = _ChunkSubmitter(fn, limits, bar)
        first = chunks if buffersize is None else itertools.islice(chunks, buffersize)
        futures = collections.deque(submitter.submit(self, chunk) for chunk in first)
        # Weak, so that the results iterator does not keep the executor.
        owner = weakref.ref(self)

        def results() -> Iterator[_T]:
            try:
                futures.reverse()
                while futures:
                    executor = owner() if buffersize is not None else None
                    if executor is not None:
                        more = next(chunks, None)
                        if more is not None:
                            futures.appendleft(submitter.submit(executor, more))
                    del executor
                    left = None if deadline is None else deadline - time.monotonic()
                    chunk = _result_or_cancel(futures.pop(), left)
                    # Popped one by one: the iterator keeps no item it gave.
                    chunk.reverse()
                    while chunk:
                        yield chunk.pop()
            finally:
                for future in futures:
                    future.cancel()
                _progress.finish(bar, progress is True)

        return results()

    @property
    def start_method(self) -> str:
        """Where the workers come from: ``"fork"`` or ``"forkserver"``."""
        return self._engine.start_method

    def layout(self) -> list[_node.WorkerPlace]:
        """Where each live worker runs: its pid, the CPUs it may use and
        their NUMA nodes."""
        return _node.layout(self._core.worker_pids())

    def stats(self) -> _stats.PoolStats:
        """As :meth:`forkfarm.Pool.stats`."""
        return _stats.read(self._core)

    # -- shutting down -----------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops accepting work. With cancel_futures, futures no worker has
        started are cancelled (once a worker has its first call, if they
        are all still starting). With wait, returns once the workers
        exited."""
        with self._lock:
            if not hasattr(self, "_core"):
                return
            self._shutdown_requested = True
            pending = list(self._pending) if cancel_futures else []
        if pending:
            self._wait_first_dispatch()
        for future in pending:
            future._cancel_if_queued()
        self._core.close()
        self._shutdown_event.set()
        if wait:
            self._core.join()
            # The last futures' completions may still wait for the callback
            # thread; as with ProcessPoolExecutor, all are done on return.
            with self._lock:
                unfinished = list(self._pending)
            for future in unfinished:
                future._collect(None)
            self._engine.deliver_stray()
            self._stopped.set()
            _protocol.trim_arena()

    def _wait_first_dispatch(self) -> None:
        """Waits until a worker has a call, while calls are queued and the
        workers are all still starting: ProcessPoolExecutor hands its first
        calls to its workers as it starts them, and code that cancels the
        rest right after submitting expects those to run."""
        deadline = time.monotonic() + _FIRST_DISPATCH_WAIT
        while time.monotonic() < deadline and self._core.error() is None:
            queued, in_flight, done, failed, _workers = self._core.stats()
            if queued == 0 or in_flight + done + failed > 0:
                return
            time.sleep(0.001)

    def terminate_workers(self) -> None:
        """Sends every worker SIGTERM, as Python 3.14's
        ProcessPoolExecutor.terminate_workers() does: calls no worker has
        started are cancelled, the running ones fail with
        :class:`forkfarm.WorkerLostError` (a ``BrokenProcessPool``), and the
        executor is broken: submit() raises ``BrokenProcessPool``."""
        self._stop_workers(signal.SIGTERM, "terminate_workers")

    def kill_workers(self) -> None:
        """:meth:`terminate_workers` with SIGKILL, as Python 3.14's
        ProcessPoolExecutor.kill_workers() does."""
        self._stop_workers(signal.SIGKILL, "kill_workers")

    def _stop_workers(self, signum: int, how: str) -> None:
        with self._lock:
            if not hasattr(self, "_core"):
                return
            if not self._engine.backend.local:
                raise NotImplementedError(f"{how}() needs workers on this machine, which signals reach")
            self._shutdown_requested = True
            pending = list(self._pending)
        if self._core.worker_count() and self._broken_by is None:
            self._broken_by = f"the executor's workers were stopped by {how}(): it runs no more calls"
        # Those no worker has are cancelled on return, as with shutdown().
        for future in pending:
            future._cancel_if_queued()
        # The runtime signals the workers, fails their running calls as
        # their exits come, cancels those behind them and starts no
        # replacement.
        self._core.stop_workers(signum)
        self._shutdown_event.set()

    def _shutdown_at_exit(self) -> None:
        self.shutdown(wait=True)


def _chunks(args: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """The argument tuples in lists of ``size``, cut as they are needed."""
    while chunk := list(itertools.islice(args, size)):
        yield chunk


class _ChunkSubmitter:
    """Submits the chunks of one map. A chunk that cannot be pickled fails
    its own future, as a call that cannot be pickled does."""

    def __init__(self, fn: Callable[..., Any], limits: TaskLimits, bar: Any) -> None:
        self._fn = fn
        self._limits = limits
        self._bar = bar
        self._memo: Any = None  # a buffer many items carry is copied once
        self._context: Any = None

    def submit(self, executor: Executor, chunk: list[tuple[Any, ...]]) -> concurrent.futures.Future[list[Any]]:
        executor._check_open()
        try:
            engine = executor._engine
            if self._context is None:
                self._context = engine.function(self._fn, True)
                self._memo = engine.encoder.memo()
            payload = engine.encoder.items(chunk, self._memo)
        except Exception as error:  # noqa: BLE001 - delivered through the future
            return _failed_future(error)
        future = executor._submit_payload(payload, self._context, len(chunk), self._limits)
        if self._bar is not None:
            future.add_done_callback(functools.partial(_advance, self._bar, len(chunk)))
        return future


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
        buffersize: int | None = None,
        progress: _progress.Progress = False,
    ) -> Iterator[_T]:
        """:meth:`Executor.map`, with these limits (``timeout`` here is
        map's own: the time to wait for all the results)."""
        return self._executor._map(fn, iterables, timeout, chunksize, self._limits, progress, buffersize)
