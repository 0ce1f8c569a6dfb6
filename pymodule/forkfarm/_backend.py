"""The core a Pool or an Executor runs on, declared.

A backend makes a core (the pool of workers: submit, wait, close, stats)
and the encoder that writes calls in the form that core carries. Two
implement this interface: :class:`LocalBackend` here, whose core is the C
runtime's ``_core.Pool`` forking workers on this machine, and the MPI
backend (``mpi/root.py``), whose core hands tasks to other ranks. The
fronts (pool.py, executor.py, through _engine.py) see only these
protocols, so a third backend needs no change to them.

Handles a core gives out (contexts, completion queues) are opaque: a core
accepts only its own, which the types say with ``Any``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from . import _core, _forkserver, _identity, _node, _protocol, _start

# (status, payload, (pid, exit code, signal)): how a task ended.
Outcome = tuple[int, bytes, tuple[int, int, int]]


class Task(Protocol):
    """A submitted task: wait for it, read how it ended, or withdraw it."""

    @property
    def id(self) -> int: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def done(self) -> bool: ...
    def ok(self) -> bool: ...
    def outcome(self) -> Outcome | None: ...
    def run_ns(self) -> int: ...
    def value(self, loads: Callable[..., Any]) -> Any: ...
    def value_into(self, loads: Callable[..., Any], target: list[Any], start: int, count: int) -> None: ...
    def output(self) -> tuple[int, bytes, bytes, bytes] | None: ...
    def cancel(self) -> bool: ...
    def kill(self) -> bool: ...


class CompletionQueue(Protocol):
    """Finished tasks of one map, in the order they finished."""

    def get(self, timeout: float | None = None) -> Task | None: ...


class Core(Protocol):
    """A pool of workers. ``context`` and ``queue`` arguments are handles
    this core made; ``payload`` is what this core's encoder wrote."""

    def context(self, data: Any) -> Any: ...
    def submit(
        self,
        payload: Any,
        notify: Callable[[Any], object] | None = None,
        queue: Any = None,
        context: Any = None,
        timeout: float = -1,
        retries: int = -1,
        claimable: bool = False,
    ) -> Task: ...
    def submit_many(
        self, payloads: list[Any], queue: Any, context: Any, timeout: float = -1, retries: int = -1
    ) -> Sequence[Task]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def stop_workers(self, signum: int) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...
    def worker_pids(self) -> list[int]: ...
    def worker_count(self) -> int: ...
    def worker_pidfd(self, pid: int) -> int | None: ...
    def error(self) -> Outcome | None: ...
    def take_output(self) -> tuple[bytes, bytes, bytes] | None: ...
    def stats(self) -> tuple[int, int, int, int, Sequence[tuple[int, ...]]]: ...


class Encoder(Protocol):
    """Writes calls for one core, in the form it carries."""

    def call(self, func: Callable[..., Any], args: Iterable[Any], kwds: Mapping[str, Any]) -> tuple[Any, Any]:
        """``func(*args, **kwds)`` as (payload, context or None). A call may
        carry its function, or name a context that carries it."""
        ...

    def function(self, func: Callable[..., Any], star: bool) -> Any:
        """A map's function, as a context of its chunks: each item runs as
        ``func(x)``, or ``func(*x)`` when star is true."""
        ...

    def memo(self) -> Any:
        """What the chunks of one map share, so that a large buffer they all
        carry travels once (None where nothing is shared)."""
        ...

    def items(self, chunk: Sequence[Any], memo: Any) -> Any:
        """A chunk of a map's items as a payload."""
        ...

    def singletons(self, items: Sequence[Any]) -> list[Any]:
        """Each item as a chunk of its own (a map of chunksize 1)."""
        ...


class Settings(NamedTuple):
    """A pool's arguments, checked, as a backend gets them."""

    processes: int
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    max_tasks: int | None
    timeout: float | None
    retries: int
    max_memory: int | None
    inner_threads: int | str | None
    pin: _node.Pin
    max_message: int | None
    role: str
    on_demand: bool
    # The workers' standard output and error are captured and sent back
    # with each task's outcome (_output.py), rather than inherited.
    capture_output: bool = False
    # The level its workers forward log records from (_logging.py), or None.
    log_level: int | None = None


class Backend(Protocol):
    """Where a pool's workers are: it makes the pool's core and encoder."""

    @property
    def start_method(self) -> str:
        """``"fork"``, ``"forkserver"`` or ``"mpi"``: what Pool.start_method says."""
        ...

    @property
    def local(self) -> bool:
        """Whether the workers are processes of this machine, which this
        process can signal (terminate_workers, kill_workers)."""
        ...

    def default_workers(self) -> int | None:
        """The pool size when none is asked for (None: the available CPUs)."""
        ...

    def create(self, settings: Settings) -> tuple[Core, Encoder]: ...

    def completion_queue(self) -> CompletionQueue: ...

    def mp_context(self) -> Any:
        """The multiprocessing-style context of this start method, for an
        Executor's ``_mp_context`` (None where there is none)."""
        ...


# Pool(inner_threads=...) unless given: the available CPUs shared among the
# workers.
AUTO = "auto"

# The backend of pools made with neither a context nor a backend: set once,
# by ``python -m forkfarm.mpi`` on rank 0 (its pools farm to the ranks).
default: Backend | None = None


def set_default(backend: Backend | None) -> None:
    """Makes backend the one pools use unless told otherwise."""
    global default
    default = backend


class ContextCache(dict[Any, Any]):
    """The contexts of the functions called again and again, by function,
    so that such a function travels to each worker once and each call
    carries only its arguments. The most recent functions keep theirs. (A
    dict, so that the hot path is one ``get``.)"""

    LIMIT = 64

    def add(self, func: Any, context: Any) -> Any:
        """Keeps context for func, letting the oldest go past LIMIT."""
        if len(self) >= self.LIMIT:
            # Another thread may evict at the same time: either is fine.
            try:
                del self[next(iter(self))]
            except (KeyError, RuntimeError, StopIteration):
                pass
        self[func] = context
        return context


class LocalEncoder:
    """Encodes calls for the C runtime's pool: pickle protocol 5 with large
    buffers in the arena and shared arrays as handles (_protocol.py). A
    module-level function called again and again travels as a context;
    other callables travel with every call. What ``__main__`` defines
    after the workers' copy was taken travels by value."""

    def __init__(self, core: _core.Pool, main_at_fork: _protocol.MainSnapshot) -> None:
        self._core = core
        self._contexts = ContextCache()
        self.main_at_fork = main_at_fork

    def sendable(self, func: Any) -> Any:
        """func, or func to be sent by value when its reference would not
        resolve in the workers."""
        return _protocol.sendable(func, self.main_at_fork)

    def call(
        self, func: Callable[..., Any], args: Iterable[Any], kwds: Mapping[str, Any]
    ) -> tuple[bytes, _core.Context | None]:
        if not _protocol.cacheable(func):
            return _protocol.encode_call(self.sendable(func), args, kwds), None
        context = self._contexts.get(func)
        if context is None:
            context = self._contexts.add(func, self._core.context(_protocol.encode_callee(self.sendable(func))))
        return _protocol.encode_arguments(args, kwds), context

    def function(self, func: Callable[..., Any], star: bool) -> _core.Context:
        return self._core.context(_protocol.encode_function(self.sendable(func), star))

    def memo(self) -> _core.BufferMemo:
        return _core.BufferMemo()

    def items(self, chunk: Sequence[Any], memo: _core.BufferMemo | None) -> bytes:
        return _protocol.encode_items(chunk, memo)

    def singletons(self, items: Sequence[Any]) -> list[bytes]:
        try:
            return _core.encode_singletons(items, _protocol.dumps, _protocol.PROTOCOL)
        except Exception:  # noqa: BLE001 - what plain pickle refused
            return _core.encode_singletons(items, _protocol.dumps_or_by_value, _protocol.PROTOCOL)


class LocalBackend:
    """Workers forked on this machine by the C runtime: from a zygote forked
    from here (``"fork"``) or made by the fork server (``"forkserver"``)."""

    def __init__(self, method: str) -> None:
        self._method = method

    @property
    def start_method(self) -> str:
        return self._method

    @property
    def local(self) -> bool:
        return True

    def default_workers(self) -> int | None:
        return None

    def completion_queue(self) -> _core.CompletionQueue:
        return _core.CompletionQueue()

    def mp_context(self) -> Any:
        # Imported here: context.py is the public face, above this layer.
        from . import context

        return context.get_context(self._method)

    def create(self, settings: Settings) -> tuple[_core.Pool, LocalEncoder]:
        """The runtime pool, with its zygote forked from here or made by
        the fork server, and what its workers' ``__main__`` holds. Each
        worker first takes its identity (``current_process()`` is
        ``ForkPoolWorker-N`` for ``role="PoolWorker"``), its CPUs (``pin``)
        and caps its BLAS and OpenMP threads (``inner_threads``), then runs
        the initializer. With ``on_demand`` a worker starts only when a task
        finds none idle."""
        method, processes = self._method, settings.processes
        initializer, initargs = settings.initializer, settings.initargs
        inner = (
            _node.default_inner_threads(processes) if settings.inner_threads == AUTO else settings.inner_threads
        )
        plan = _node.pin_plan(settings.pin, processes)
        if inner is not None or plan is not None:
            initargs = (inner, plan, initializer, *initargs)
            initializer = _node.start_worker
            if inner is not None and method == "fork":
                _node.prepare_parent()
        log_level = settings.log_level if settings.capture_output else None
        initargs = (_identity.identity_for(method, settings.role, log_level), initializer, *initargs)
        initializer = _identity.start_worker
        max_tasks, max_memory, max_message = settings.max_tasks or 0, settings.max_memory or 0, settings.max_message or 0
        zygote = None
        lendable: list[int] = []
        if method == "forkserver":
            # A fork server's workers did not inherit what the initializer's
            # arguments name: they may open those segments from here.
            lendable = _core.pins_of((initializer, initargs))
            zygote, main_at_fork = _forkserver.zygote(initializer, initargs, max_tasks, max_memory, max_message)
        else:
            main_at_fork = _protocol.main_snapshot()
        # With the fork server the zygote has its own copy of the initializer;
        # the pool's keeps what it may refer to (a lock's segment) alive.
        core = _core.Pool(
            processes,
            _protocol.WORKER_HOOKS,
            initializer,
            initargs,
            max_tasks,
            settings.timeout or 0.0,
            settings.retries,
            max_memory,
            zygote,
            max_message,
            lendable,
            on_demand=settings.on_demand,
            capture_output=settings.capture_output,
        )
        return core, LocalEncoder(core, main_at_fork)


def local(context: object) -> LocalBackend:
    """The local backend of a context (or a start method's name, or None:
    the method set, or the one that suits this process)."""
    return LocalBackend(_start.for_pool(context))
