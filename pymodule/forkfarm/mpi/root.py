"""Rank 0's side of a pool over MPI ranks: the MPI backend.

:class:`MpiBackend` gives :class:`forkfarm.Pool` and
:class:`forkfarm.Executor` a :class:`Core` with the interface _backend.py
declares (``submit``, ``context``, ``close``, tasks with ``wait``,
``value``, ``outcome``...) and an encoder that writes calls straight in the
wire's form (wire.py), so the whole Pool and Executor API runs unchanged
over MPI. One thread of rank 0 makes every MPI call: it keeps each rank a
few tasks ahead of its workers, and polls for results with a backoff (MPI
has no wait on "a message or a local event"), as mpi4py.futures does.
"""

from __future__ import annotations

import collections
import itertools
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import _backend, _core, _forkserver, _protocol
from .wire import TAG_TO_ROOT, TAG_TO_WORKER, Wire, encode, mpi, receive_rest, send, world

# Tasks sent to a rank per worker it runs, before their results come back:
# they hide the round trip.
PIPELINE = 2

class Context:
    """A map's function or a called function: its id, and its wire form."""

    _ids = itertools.count(1)

    def __init__(self, wire: Wire) -> None:
        self.id = next(self._ids)
        self.wire = wire


class CompletionQueue:
    """Finished tasks, in the order they finished."""

    def __init__(self) -> None:
        self._done: collections.deque[Task] = collections.deque()
        self._ready = threading.Condition()

    def put(self, task: Task) -> None:
        with self._ready:
            self._done.append(task)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Task | None:
        with self._ready:
            if not self._ready.wait_for(lambda: self._done, timeout):
                return None
            return self._done.popleft()


class Task:
    """A task on another rank, with the runtime task's interface."""

    _ids = itertools.count(1)

    def __init__(
        self,
        core: Core,
        wire: Wire,
        context: Context | None,
        notify: Callable[[Task], object] | None,
        queue: CompletionQueue | None,
    ) -> None:
        self.id = next(self._ids)
        self.wire: Wire | None = wire
        self.context = context
        self._core = core
        self._notify = notify
        self._queue = queue
        self._finished = threading.Event()
        self._status = 0
        self._body: bytes | bytearray = b""
        self._buffers: list[bytearray] = []
        self._exit = (0, -1, 0)
        self._run_ns = 0
        self.rank = 0
        self.started = 0

    def settle(self, status: int, body: bytes | bytearray, buffers: list[bytearray], rank: int, run_ns: int) -> None:
        self._status, self._body, self._buffers, self._run_ns = status, body, buffers, run_ns
        self._exit = (rank, -1, 0)
        self.wire = None
        self._finished.set()
        notify, self._notify = self._notify, None
        if notify is not None:
            try:
                notify(self)
            except BaseException:  # noqa: BLE001 - reported as the runtime's loop does
                traceback.print_exc()
        if self._queue is not None:
            self._queue.put(self)

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def done(self) -> bool:
        return self._finished.is_set()

    def ok(self) -> bool:
        return self._finished.is_set() and self._status == 0

    def outcome(self) -> tuple[int, bytes, tuple[int, int, int]] | None:
        if not self._finished.is_set():
            return None
        return self._status, bytes(self._body), self._exit

    def run_ns(self) -> int:
        return self._run_ns

    def value(self, loads: Callable[..., Any]) -> Any:
        return pickle.loads(self._body, buffers=self._buffers)

    def value_into(self, loads: Callable[..., Any], target: list[Any], start: int, count: int) -> None:
        values = self.value(loads)
        if len(values) != count:
            raise ValueError(f"a map chunk of {count} items came back with {len(values)} results")
        target[start : start + count] = values

    def output(self) -> None:
        """Ranks print where MPI sends their output: nothing is captured."""
        return None

    def cancel(self) -> bool:
        """Withdraws the task if no rank has it yet."""
        return self._core.cancel(self)

    def kill(self) -> bool:
        # A task that runs on another machine cannot be stopped from here.
        return self.cancel()


class _Rank:
    """What rank 0 knows of one rank of the pool."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.capacity = PIPELINE
        self.in_flight: dict[int, Task] = {}
        self.contexts: set[int] = set()
        self.segments: set[int] = set()
        self.tasks = 0
        self.busy_ns = 0
        self.bytes_sent = 0
        self.bytes_received = 0


class Core:
    """Rank 0's pool over the other ranks of a communicator."""

    def __init__(self, comm: Any, main: list[bytes], release: Callable[[], None], hybrid_workers: int | None) -> None:
        self._comm = comm
        self._release = release
        self._ranks = [_Rank(rank) for rank in range(1, comm.Get_size())]
        self._lock = threading.Condition()
        self._pending: collections.deque[Task] = collections.deque()
        self._accepting = True
        self._stopping = False
        self._stopped = threading.Event()
        self._done = self._failed = 0
        self._started = time.monotonic_ns()
        self._hello = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(main, hybrid_workers), name="forkfarm-mpi", daemon=True)
        self._thread.start()

    # -- the runtime pool's interface --------------------------------------

    def context(self, data: Wire) -> Context:
        return Context(data)

    def submit(
        self,
        payload: Wire,
        notify: Callable[[Task], object] | None = None,
        queue: CompletionQueue | None = None,
        context: Context | None = None,
        timeout: float = -1,
        retries: int = -1,
        claimable: bool = False,
    ) -> Task:
        # claimable changes nothing here: notify runs in the thread that
        # receives the result.
        if timeout > 0 or retries > 0:
            raise NotImplementedError("timeout= and retries= are not supported across MPI ranks")
        task = Task(self, payload, context, notify, queue)
        with self._lock:
            if not self._accepting:
                raise ValueError("Pool not running")
            self._pending.append(task)
            self._lock.notify()
        return task

    def submit_many(
        self,
        payloads: list[Wire],
        queue: CompletionQueue | None,
        context: Context | None,
        timeout: float = -1,
        retries: int = -1,
    ) -> list[Task]:
        return [self.submit(p, None, queue, context, timeout, retries) for p in payloads]

    def close(self) -> None:
        with self._lock:
            self._accepting = False
            self._lock.notify()

    def terminate(self) -> None:
        with self._lock:
            self._accepting = False
            cancelled = list(self._pending)
            self._pending.clear()
            self._lock.notify()
        for task in cancelled:
            task.settle(_core.ECANCELED, b"", [], 0, 0)

    def join(self, timeout: float | None = None) -> bool:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        return self._stopped.wait(timeout)

    def worker_pids(self) -> list[int]:
        """The ranks, standing for pids."""
        return [r.rank for r in self._ranks]

    def worker_count(self) -> int:
        return len(self._ranks)

    def worker_pidfd(self, pid: int) -> int | None:
        # A rank is not a process of this machine that a pidfd could name.
        return None

    def stop_workers(self, signum: int) -> None:
        raise NotImplementedError("stopping the workers needs workers on this machine, not MPI ranks")

    def error(self) -> None:
        return None

    def take_output(self) -> None:
        return None

    def stats(self) -> tuple[int, int, int, int, list[tuple[int, ...]]]:
        now = time.monotonic_ns()
        with self._lock:
            rows: list[tuple[int, ...]] = []
            for r in self._ranks:
                current = min(r.in_flight.values(), key=lambda t: t.started, default=None)
                rows.append(
                    (
                        r.rank,
                        0,
                        r.tasks,
                        r.busy_ns,
                        max(0, now - self._started - r.busy_ns),
                        r.bytes_sent,
                        r.bytes_received,
                        current.id if current else 0,
                        now - current.started if current else 0,
                    )
                )
            in_flight = sum(len(r.in_flight) for r in self._ranks)
            return len(self._pending), in_flight, self._done, self._failed, rows

    def cancel(self, task: Task) -> bool:
        with self._lock:
            try:
                self._pending.remove(task)
            except ValueError:
                return False
        task.settle(_core.ECANCELED, b"", [], 0, 0)
        return True

    # -- the MPI thread ------------------------------------------------------

    def _run(self, main: list[bytes], hybrid_workers: int | None) -> None:
        comm = self._comm
        try:
            for r in self._ranks:
                body, buffers, _ = encode(main)
                send(comm, r.rank, TAG_TO_WORKER, ("main", hybrid_workers), body, buffers)
            for r in self._ranks:
                workers = comm.recv(source=r.rank, tag=TAG_TO_ROOT)
                r.capacity = PIPELINE * max(1, int(workers))
            self._loop()
            for r in self._ranks:
                send(comm, r.rank, TAG_TO_WORKER, ("stop",), b"", [])
        finally:
            self._stopped.set()
            self._release()

    def _loop(self) -> None:
        comm = self._comm
        status = mpi().Status()
        any_source = mpi().ANY_SOURCE
        idle = 0.0
        while True:
            sends: list[Task] = []
            with self._lock:
                for r in self._ranks:
                    while self._pending and len(r.in_flight) < r.capacity:
                        task = self._pending.popleft()
                        task.rank = r.rank
                        task.started = time.monotonic_ns()
                        r.in_flight[task.id] = task
                        sends.append(task)
                busy = any(r.in_flight for r in self._ranks)
                if not sends and not busy:
                    if self._stopping and not self._pending:
                        return
                    self._lock.wait(0.05)
                    continue
            for task in sends:
                self._send_task(task)
            received = 0
            while comm.Iprobe(source=any_source, tag=TAG_TO_ROOT, status=status):
                self._receive_result(status.Get_source())
                received += 1
            if sends or received:
                idle = 0.0
            else:
                # Back off from 10 µs to 1 ms while results are awaited.
                idle = min(max(idle * 2, 1e-5), 1e-3)
                time.sleep(idle)

    def _send_task(self, task: Task) -> None:
        r = self._ranks[task.rank - 1]
        comm, rank, context = self._comm, task.rank, task.context
        assert task.wire is not None
        body, buffers, segments = task.wire
        sent = 0
        for context_segment in (context.wire[2] if context else {}).items(), segments.items():
            for segment_id, segment in context_segment:
                if segment_id not in r.segments:
                    sent += send(comm, rank, TAG_TO_WORKER, ("segment", segment_id), b"", [memoryview(segment)])
                    r.segments.add(segment_id)
        if context is not None and context.id not in r.contexts:
            context_body, context_buffers, _ = context.wire
            sent += send(comm, rank, TAG_TO_WORKER, ("context", context.id), context_body, context_buffers)
            r.contexts.add(context.id)
        sent += send(comm, rank, TAG_TO_WORKER, ("task", task.id, context.id if context else 0), body, buffers)
        r.bytes_sent += sent
        task.wire = None

    def _receive_result(self, rank: int) -> None:
        task_id, ok, run_ns, body_length, lengths = self._comm.recv(source=rank, tag=TAG_TO_ROOT)
        body, buffers = receive_rest(self._comm, rank, TAG_TO_ROOT, body_length, lengths)
        r = self._ranks[rank - 1]
        with self._lock:
            task = r.in_flight.pop(task_id)
            r.tasks += 1
            r.busy_ns += run_ns
            r.bytes_received += body_length + sum(lengths)
            if ok:
                self._done += 1
            else:
                self._failed += 1
            self._lock.notify()
        task.settle(0 if ok else _core.ETASKFAILED, body, buffers, rank, run_ns)



def ranks() -> int:
    """The ranks that run tasks: all but rank 0 (at least one)."""
    count = int(world().Get_size()) - 1
    if count < 1:
        raise ValueError(
            "an MPI pool needs at least 2 ranks: rank 0 runs the program, the others its tasks"
        )
    return count


class MpiEncoder:
    """Writes calls in the wire's form (cloudpickle, large buffers apart,
    shared arrays as references), once: rank 0 sends what this wrote. A
    module-level function called again and again travels to each rank once,
    as a context."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._contexts = _backend.ContextCache()

    def call(self, func: Callable[..., Any], args: Iterable[Any], kwds: Mapping[str, Any]) -> tuple[Wire, Context | None]:
        if not _protocol.cacheable(func):
            return encode((func, tuple(args), dict(kwds)), copy=True), None
        context = self._contexts.get(func)
        if context is None:
            context = self._contexts.add(func, self._core.context(encode((_protocol.CALL, func), copy=True)))
        return encode((tuple(args), dict(kwds)), copy=True), context

    def function(self, func: Callable[..., Any], star: bool) -> Context:
        kind = _protocol.STARMAP if star else _protocol.MAP
        return self._core.context(encode((kind, func), copy=True))

    def memo(self) -> None:
        return None

    def items(self, chunk: Sequence[Any], memo: None) -> Wire:
        return encode(list(chunk), copy=True)

    def singletons(self, items: Sequence[Any]) -> list[Wire]:
        return [encode([item], copy=True) for item in items]


# One MPI pool runs at a time: the ranks serve one pool after another.
_active = threading.Lock()
_current: Core | None = None


def _released() -> None:
    global _current
    _current = None
    _active.release()


def shutdown() -> None:
    """At the end of rank 0's program: a pool it left running is
    terminated, so that its ranks are free before they are told to exit."""
    core = _current
    if core is not None:
        core.terminate()
        core.join()


class MpiBackend:
    """Workers on the other ranks of MPI.COMM_WORLD; in hybrid mode each rank
    runs its tasks on a local pool of ``hybrid`` workers (0: its share of
    its node's CPUs)."""

    def __init__(self, hybrid: int | None) -> None:
        self._hybrid = hybrid

    @property
    def start_method(self) -> str:
        return "mpi"

    @property
    def local(self) -> bool:
        return False

    def default_workers(self) -> int:
        return ranks()

    def completion_queue(self) -> CompletionQueue:
        return CompletionQueue()

    def mp_context(self) -> None:
        return None

    def create(self, settings: _backend.Settings) -> tuple[Core, MpiEncoder]:
        unsupported = (settings.max_tasks, settings.timeout, settings.retries, settings.max_memory, settings.pin)
        if settings.initializer is not None or any(unsupported):
            raise NotImplementedError(
                "an MPI pool takes no initializer, maxtasksperchild, timeout, retries, "
                "max_memory_per_child or pin yet"
            )
        global _current
        if not _active.acquire(blocking=False):
            raise RuntimeError("one MPI pool runs at a time: close and join the other first")
        try:
            comm = world()
            if comm.Get_rank() != 0:
                raise RuntimeError("MPI pools are made on rank 0; the other ranks run their tasks")
            if settings.processes != ranks():
                raise ValueError(
                    f"an MPI pool runs on every rank but rank 0: {ranks()} here, not {settings.processes} "
                    "(start mpiexec with one more rank than workers)"
                )
            main, _sent = _forkserver.main_by_value()
            _current = Core(comm, main, _released, self._hybrid)
            return _current, MpiEncoder(_current)
        except BaseException:
            _active.release()
            raise
