"""What a Pool and an Executor share: their arguments checked, the backend
chosen, the core made and registered for the exit, calls encoded and
submitted, and task outcomes turned into values or exceptions.

The fronts (pool.py, executor.py) keep only what differs between
multiprocessing.Pool and ProcessPoolExecutor.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast

from . import _backend, _core, _errors, _logging, _node, _output, _protocol, _reuse, _start
from ._backend import AUTO

__all__ = [
    "AUTO",
    "NO_LIMITS",
    "Engine",
    "TaskLimits",
    "check_buffersize",
    "is_int",
    "outcome_error",
    "register",
    "task_value",
]

# -- every running pool, stopped at exit ---------------------------------------

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


def register(front: Any) -> None:
    """Stops front (``front._shutdown_at_exit()``) at exit if it still runs."""
    _live_pools.add(front)


def _flush_std_streams() -> None:
    """Flushes Python's standard streams before a fork, so that buffered
    output is not written twice."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


# -- checks of the arguments ------------------------------------------------------


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_inner_threads(inner_threads: object) -> None:
    """"auto", None, or a positive number of threads."""
    if inner_threads is None or inner_threads == AUTO:
        return
    if not is_int(inner_threads):
        raise TypeError(
            f"inner_threads must be a number of threads, 'auto' or None, not {type(inner_threads).__name__}"
        )
    if cast(int, inner_threads) < 1:
        raise ValueError(f"inner_threads must be at least 1, not {inner_threads}")


def _check_bytes(value: object, name: str) -> int | None:
    """None, or a positive number of bytes."""
    if value is None:
        return None
    if not is_int(value):
        raise TypeError(f"{name} must be a number of bytes or None, not {type(value).__name__}")
    if cast(int, value) < 1:
        raise ValueError(f"{name} must be a positive number of bytes, not {value}")
    return cast(int, value)


def check_buffersize(buffersize: object) -> None:
    """Python 3.14's check of ``buffersize`` (Executor.map, Pool.imap)."""
    if buffersize is not None and not is_int(buffersize):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and cast(int, buffersize) < 1:
        raise ValueError("buffersize must be None or > 0")


def _check_retries(retries: object) -> int:
    """A count of retries: an int, 0 or more."""
    if not is_int(retries):
        raise TypeError(f"retries must be an int, not {type(retries).__name__}")
    if cast(int, retries) < 0:
        raise ValueError(f"retries must be 0 or more, not {retries}")
    return cast(int, retries)


def _check_task_timeout(timeout: object) -> float | None:
    """None, or a positive number of seconds: a task's time limit."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not timeout > 0 or timeout != timeout or timeout == float("inf"):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    return float(timeout)


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
        return cls(_check_task_timeout(timeout), -1 if retries is None else _check_retries(retries))

    def submit_args(self, pool_timeout: float | None, items: int) -> tuple[float, int]:
        """The runtime's (timeout, retries) for a task of `items` items: the
        per-item timeout for each (-1: no limit)."""
        timeout = self.timeout if self.timeout is not None else pool_timeout
        return (-1.0 if timeout is None else timeout * max(items, 1)), self.retries


NO_LIMITS = TaskLimits()


def _backend_of(context: object, backend: str | None, reuse: bool = False) -> _backend.Backend:
    """The backend a new pool runs on: the one named, or else the one set
    for this program (``python -m forkfarm.mpi`` sets the MPI backend on
    rank 0), or else local workers of the context's start method. A pool to
    be reused takes the fork server unless a start method is set: a fork
    pool cannot be reused, and one that asks for fork is refused."""
    if backend not in (None, "local", "mpi"):
        raise ValueError(f"backend must be 'local' or 'mpi', not {backend!r}")
    if backend == "mpi" and not reuse:
        from . import mpi

        return mpi.backend()
    if backend is None and context is None and _backend.default is not None and not reuse:
        return _backend.default
    if not reuse:
        return _backend.local(context)
    if backend == "mpi" or (backend is None and context is None and _backend.default is not None):
        raise ValueError("reuse needs workers of this machine, not MPI ranks")
    if context is None and _start.setting.method is None:
        context = "forkserver"
    chosen = _backend.local(context)
    if chosen.start_method == "fork":
        raise ValueError(
            "a fork pool cannot be reused: its workers must see this process as it is when "
            "each pool is made; use the 'forkserver' or 'spawn' start method"
        )
    return chosen


# -- the engine -----------------------------------------------------------------


class Engine:
    """The core behind one Pool or Executor, with its encoder and limits. A
    core raises forkfarm's exceptions itself (the C core through
    pymodule/errors.c's table)."""

    def __init__(
        self,
        *,
        workers: int | None,
        workers_error: str,
        initializer: Callable[..., object] | None,
        initargs: Iterable[Any],
        max_tasks: int | None,
        max_tasks_error: str,
        initializer_wrapper: Callable[..., object] | None = None,
        context: Any,
        timeout: float | None,
        retries: int,
        max_memory_per_child: int | None,
        backend: str | None,
        inner_threads: int | str | None,
        pin: _node.Pin,
        max_message_size: int | None,
        role: str,
        on_demand_with: tuple[str, ...] = (),
        reuse: float | None = None,
        output: str = "auto",
        output_prefix: bool = False,
        log_level: int | str | None = None,
    ) -> None:
        """Checks a front's arguments, with the messages of the class it
        stands in for, and starts its core. ``role`` names the workers
        (``"PoolWorker"``: ForkPoolWorker-N; ``"Process"``: ForkProcess-N);
        with a start method in ``on_demand_with`` a worker starts only when
        a task finds none idle. An initializer runs as
        ``initializer_wrapper(initializer, *initargs)`` when one is given.
        With ``reuse`` (a grace period in seconds) the core may be a parked
        pool's (``adopted``), and :meth:`park` keeps it for the next pool.
        ``output``, ``output_prefix`` and ``log_level``: where the workers'
        output and log records go (``_output.py``, ``_logging.py``)."""
        _check_inner_threads(inner_threads)
        _output.check(output, output_prefix)
        level = _logging.check_level(log_level)
        if level is not None and output == "inherit":
            raise ValueError(
                "log_level forwards the workers' log records with their captured output, "
                "so it cannot be used with output='inherit'"
            )
        self.timeout = _check_task_timeout(timeout)
        retries = _check_retries(retries)
        max_memory = _check_bytes(max_memory_per_child, "max_memory_per_child")
        max_message = _check_bytes(max_message_size, "max_message_size")
        self.backend = _backend_of(context, backend, reuse is not None)
        if workers is None:
            workers = self.backend.default_workers()
        if workers is None:
            workers = _node.available_cpus()
        if not is_int(workers):
            raise TypeError(f"the number of workers must be an int, not {type(workers).__name__}")
        if workers < 1:
            raise ValueError(workers_error)
        if max_tasks is not None and (not is_int(max_tasks) or max_tasks < 1):
            raise ValueError(max_tasks_error)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self.workers = workers
        if initializer is not None and initializer_wrapper is not None:
            initargs = (initializer, *initargs)
            initializer = initializer_wrapper
        _flush_std_streams()
        forward_level = _logging.forwarding_level(level) if output != "inherit" else None
        # Forwarded log records travel with the captured output.
        capture = _output.captures(output) or forward_level is not None
        self.capture = capture and self.backend.local
        self.output_prefix = output_prefix
        # Where what no task owns goes: the streams of the pool's creator.
        self.stray_sink = _output.Sink(output_prefix) if self.capture else None
        settings = _backend.Settings(
            workers,
            initializer,
            tuple(initargs),
            max_tasks,
            self.timeout,
            retries,
            max_memory,
            inner_threads,
            pin,
            max_message,
            role,
            self.backend.start_method in on_demand_with,
            self.capture,
            forward_level if self.capture else None,
        )
        self.grace = reuse
        self.reuse_key: _reuse.ReuseKey | None = None
        adopted = None
        if reuse is not None:
            self.reuse_key = _reuse.reuse_key(self.backend.start_method, settings)
            if self.reuse_key is not None:
                adopted = _reuse.adopt(self.reuse_key)
        self.adopted = adopted is not None
        self.core: _backend.Core
        self.encoder: _backend.Encoder
        if adopted is not None:
            self.core, self.encoder = adopted
        else:
            self.core, self.encoder = self.backend.create(settings)

    def sink(self) -> _output.Sink | None:
        """Where the output of tasks submitted now goes, when the workers'
        output is captured; None when it is not (nothing to deliver)."""
        return _output.Sink(self.output_prefix) if self.capture else None

    def deliver_stray(self) -> None:
        """Writes what the workers printed that no task owns (a task's
        worker terminated after its outcome was settled) to the streams of
        the pool's creator."""
        if self.stray_sink is None:
            return
        got = self.core.take_output()
        if got is not None:
            self.stray_sink.write(-1, *got)

    def idle(self) -> bool:
        """Whether no task is queued or running."""
        queued, in_flight, _done, _failed, _workers = self.core.stats()
        return queued == 0 and in_flight == 0

    def park(self) -> bool:
        """Keeps the core, whose tasks are all done, for the next compatible
        pool (``_reuse.park``) and puts a stand-in in its place. False when
        this pool is not to be reused or cannot be (it broke, or is busy):
        then the caller closes it as usual."""
        core, encoder, key, grace = self.core, self.encoder, self.reuse_key, self.grace
        if key is None or grace is None or not isinstance(core, _core.Pool):
            return False
        if not isinstance(encoder, _backend.LocalEncoder) or not self.idle():
            return False
        if not _reuse.park(key, core, encoder, grace):
            return False
        self.core = self.encoder = _reuse.Released()
        return True

    @property
    def start_method(self) -> str:
        return self.backend.start_method

    def submit(
        self,
        payload: Any,
        notify: Callable[[Any], object] | None = None,
        queue: Any = None,
        context: Any = None,
        items: int = 1,
        limits: TaskLimits = NO_LIMITS,
        claimable: bool = False,
    ) -> _backend.Task:
        if limits is NO_LIMITS and self.timeout is None and not claimable:
            # The common call: the runtime's defaults, no tuple to build.
            return self.core.submit(payload, notify, queue, context)
        return self.core.submit(
            payload, notify, queue, context, *limits.submit_args(self.timeout, items), claimable=claimable
        )

    def submit_many(
        self, payloads: list[Any], queue: Any, context: Any, items: int = 1, limits: TaskLimits = NO_LIMITS
    ) -> Sequence[_backend.Task]:
        return self.core.submit_many(payloads, queue, context, *limits.submit_args(self.timeout, items))

    def function(self, func: Callable[..., Any], star: bool) -> Any:
        """The context of a map's tasks: its function, sent to each worker
        once rather than with every chunk."""
        return self.encoder.function(func, star)

    def completion_queue(self) -> _backend.CompletionQueue:
        return self.backend.completion_queue()


def outcome_error(task: _backend.Task) -> BaseException:
    """The exception of a finished task that failed."""
    outcome = task.outcome()
    assert outcome is not None
    status, detail, exit = outcome
    return _errors.from_outcome(status, detail, exit)


def task_value(task: _backend.Task) -> Any:
    """The value of a finished task, or raises its exception."""
    __tracebackhide__ = True  # the user's traceback leaves this frame out (IPython, pytest)
    if not task.ok():
        raise outcome_error(task)
    return _protocol.decode_result(task)

