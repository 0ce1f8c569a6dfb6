"""Tasks across MPI ranks: rank 0's side of a pool, and the other ranks'
loop.

Rank 0 gives :class:`forkfarm.Pool` and :class:`forkfarm.Executor` a
:class:`Core` with the runtime pool's interface (``submit``, ``context``,
``close``, tasks with ``wait``, ``value``, ``outcome``...), so that the
whole Pool and Executor API runs unchanged over MPI. One thread of rank 0
makes every MPI call: it keeps each rank a few tasks ahead of its workers,
and polls for results with a backoff (MPI has no wait on "a message or a
local event"), as mpi4py.futures does.

On the wire a message is a small header (a lowercase, pickled ``send``),
then its pickle-5 body and each out-of-band buffer by the uppercase,
buffer-based ``Send``: the bytes of a NumPy array are never copied into a
pickle. Rank 0 decodes what the Pool encoded for its own workers (large
buffers in its arena, shared arrays as handles to its segments) and
encodes it again for other machines, by value, with cloudpickle, so that
what ``__main__`` defines and lambdas travel too. A shared array travels
as a reference to its segment, and the segment itself goes to each rank
once per pool, straight from rank 0's memory into the rank's own shared
memory: tasks that all read one large input move it once per rank.

A rank either runs its tasks itself or, in hybrid mode, is its node's
agent: it runs them on a local forkfarm pool of the node's cores, and the
shared arrays it received reach those workers as handles, without a copy.
"""

from __future__ import annotations

import collections
import io
import itertools
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import _core, _protocol, _segments

PROTOCOL = 5
# Buffers from this size travel as MPI buffers of their own.
OOB_THRESHOLD = 64 * 1024
# Tasks sent to a rank per worker it runs, before their results come back:
# they hide the round trip.
PIPELINE = 2

TAG_TO_WORKER = 11
TAG_TO_ROOT = 12

CALL, MAP, STARMAP = _protocol.CALL, _protocol.MAP, _protocol.STARMAP


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


class _WirePickler(cloudpickle.CloudPickler):  # type: ignore[misc]
    """cloudpickle, with shared arrays as references to their segments,
    which are collected to be sent on their own."""

    def __init__(self, file: io.BytesIO, buffer_callback: Callable[[pickle.PickleBuffer], bool]) -> None:
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
        self.segments: dict[int, _core.Segment] = {}

    def persistent_id(self, obj: Any) -> Any:
        shared = sys.modules.get("forkfarm.shared")
        if shared is None or not isinstance(obj, shared.SharedArray):
            return None
        segment = shared._segment_of(obj)
        if segment is None or obj.size == 0:
            return None
        self.segments[segment.id] = segment
        offset = obj.__array_interface__["data"][0] - segment.address
        return ("segment", segment.id, offset, obj.shape, obj.strides, obj.dtype.str, bool(obj.flags.writeable))


def encode(value: Any) -> tuple[bytes, list[Any], dict[int, _core.Segment]]:
    """A value for the wire: the pickle, its large buffers, and the segments
    of the shared arrays it refers to."""
    buffers: list[Any] = []

    def collect(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OOB_THRESHOLD:
            return True  # in band
        buffers.append(view)
        return False

    file = io.BytesIO()
    pickler = _WirePickler(file, collect)
    pickler.dump(value)
    return file.getvalue(), buffers, pickler.segments


class _WireUnpickler(pickle.Unpickler):
    """Rebuilds the shared arrays a _WirePickler sent as references, on the
    segments this rank received. (A subclass: assigning persistent_load to
    an instance is refused from Python 3.13 on.)"""

    def __init__(self, file: io.BytesIO, buffers: list[Any], segments: dict[int, _core.Segment]) -> None:
        super().__init__(file, buffers=buffers)
        self.segments = segments

    def persistent_load(self, pid: Any) -> Any:
        kind, segment_id, offset, shape, strides, dtype, writeable = pid
        if kind != "segment" or segment_id not in self.segments:
            raise pickle.UnpicklingError(f"a shared array refers to segment {segment_id}, which never came")
        from ..shared import _rebuild

        return _rebuild(self.segments[segment_id].id, offset, shape, strides, _numpy_dtype(dtype), writeable)


def decode(body: Any, buffers: list[Any], segments: dict[int, _core.Segment]) -> Any:
    """What encode() made, with shared arrays rebuilt on the segments this
    rank received."""
    return _WireUnpickler(io.BytesIO(body), buffers, segments).load()


def _numpy_dtype(text: str) -> Any:
    import numpy

    return numpy.dtype(text)


def send(comm: Any, dest: int, tag: int, header: tuple[Any, ...], body: bytes, buffers: list[Any]) -> int:
    """Sends a message; returns its size in bytes."""
    lengths = [memoryview(b).nbytes for b in buffers]
    comm.send((*header, len(body), lengths), dest=dest, tag=tag)
    byte = _mpi().BYTE
    comm.Send([body, byte], dest=dest, tag=tag)
    for buffer in buffers:
        comm.Send([buffer, byte], dest=dest, tag=tag)
    return len(body) + sum(lengths)


def receive_rest(comm: Any, source: int, tag: int, body_length: int, lengths: list[int]) -> tuple[bytearray, list[bytearray]]:
    body = bytearray(body_length)
    byte = _mpi().BYTE
    comm.Recv([body, byte], source=source, tag=tag)
    buffers = []
    for length in lengths:
        buffer = bytearray(length)
        comm.Recv([buffer, byte], source=source, tag=tag)
        buffers.append(buffer)
    return body, buffers


# -- rank 0 --------------------------------------------------------------------


class Context:
    """A map's function or a called function: its id, and its wire form."""

    _ids = itertools.count(1)

    def __init__(self, data: bytes) -> None:
        self.id = next(self._ids)
        self.wire = encode(_core.loads(data))


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
        wire: tuple[bytes, list[Any], dict[int, _core.Segment]],
        context: Context | None,
        notify: Callable[[Task], object] | None,
        queue: CompletionQueue | None,
    ) -> None:
        self.id = next(self._ids)
        self.wire: tuple[bytes, list[Any], dict[int, _core.Segment]] | None = wire
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

    def context(self, data: bytes) -> Context:
        return Context(data)

    def completion_queue(self) -> CompletionQueue:
        return CompletionQueue()

    def submit(
        self,
        payload: bytes,
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
        task = Task(self, encode(_core.loads(payload)), context, notify, queue)
        with self._lock:
            if not self._accepting:
                raise _core.Error(_core.ECLOSED, "the pool is closed")
            self._pending.append(task)
            self._lock.notify()
        return task

    def submit_many(
        self,
        payloads: list[bytes],
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

    def error(self) -> None:
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
        status = _mpi().Status()
        any_source = _mpi().ANY_SOURCE
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


# -- the other ranks -------------------------------------------------------------


def release_all(comm: Any) -> None:
    """Rank 0, at the end of the program: the other ranks may exit."""
    for rank in range(1, comm.Get_size()):
        send(comm, rank, TAG_TO_WORKER, ("exit",), b"", [])


def serve_until_exit(comm: Any) -> None:
    """Runs the tasks of rank 0's pools, one pool after another, until rank
    0's program ends."""
    while _Server(comm).serve():
        pass


def _call(contexts: dict[int, Any], context_id: int, message: Any) -> tuple[int, Callable[..., Any], Any]:
    """(kind, function, what it is applied to) of a task."""
    if context_id:
        kind, func = contexts[context_id]
        return kind, func, message
    func, args, kwds = message
    return CALL, func, (args, kwds)


def _apply(kind: int, func: Callable[..., Any], message: Any) -> Any:
    if kind == MAP:
        return [func(item) for item in message]
    if kind == STARMAP:
        return [func(*item) for item in message]
    args, kwds = message
    return func(*args, **kwds)


def _encode_result(ok: bool, value: Any) -> tuple[bytes, list[Any]]:
    if ok:
        try:
            body, buffers, _ = encode(value)
            return body, buffers
        except Exception as exc:  # noqa: BLE001 - the value cannot travel: say so
            return _protocol.encode_result_error(exc, value), []
    return _protocol.encode_error(value), []


class _Server:
    """One rank's side of one pool."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.contexts: dict[int, Any] = {}
        self.segments: dict[int, _core.Segment] = {}
        self.local: Any = None  # the node's pool, in hybrid mode
        self.finished: collections.deque[tuple[int, bool, Any, int]] = collections.deque()
        # Tasks on the local pool: its callbacks run in another thread.
        self._running = 0
        self._running_lock = threading.Lock()

    @property
    def running(self) -> int:
        return self._running

    def _count(self, delta: int) -> None:
        with self._running_lock:
            self._running += delta

    def serve(self) -> bool:
        """Runs one pool's tasks: False when rank 0 said exit instead."""
        try:
            return self._serve()
        finally:
            if self.local is not None:
                self.local.terminate()
                self.local.join()

    def _serve(self) -> bool:
        comm = self.comm
        while True:
            if self.local is not None:
                # Hybrid: results of the local pool go back as they come.
                while self.finished:
                    self._reply(*self.finished.popleft())
                if not comm.Iprobe(source=0, tag=TAG_TO_WORKER):
                    time.sleep(1e-4 if self.running else 1e-3)
                    continue
            kind, *fields, body_length, lengths = comm.recv(source=0, tag=TAG_TO_WORKER)
            if kind == "segment":
                # Straight into this rank's shared memory, where the node's
                # workers can map it.
                (segment_id,) = fields
                receive_rest(comm, 0, TAG_TO_WORKER, body_length, [])
                segment = _segments.new(lengths[0])
                comm.Recv([memoryview(segment), _mpi().BYTE], source=0, tag=TAG_TO_WORKER)
                self.segments[segment_id] = segment
                continue
            body, buffers = receive_rest(comm, 0, TAG_TO_WORKER, body_length, lengths)
            if kind == "exit":
                return False
            if kind == "stop":
                while self.running:
                    while self.finished:
                        self._reply(*self.finished.popleft())
                    time.sleep(1e-4)
                return True
            if kind == "main":
                self._start(decode(body, buffers, {}), fields[0])
            elif kind == "context":
                self.contexts[fields[0]] = decode(body, buffers, self.segments)
            elif kind == "task":
                task_id, context_id = fields
                self._run(task_id, context_id, body, buffers)

    def _start(self, main: list[bytes], hybrid_workers: int | None) -> None:
        module = sys.modules["__main__"]
        for chunk in main:
            try:
                vars(module).update(pickle.loads(chunk))
            except Exception:  # noqa: BLE001, S112 - what failed travels by value
                continue
        workers = 1
        if hybrid_workers is not None:
            import forkfarm

            workers = hybrid_workers or _node_share()
            # Workers from the fork server: a fresh interpreter, with none
            # of this process's MPI state.
            self.local = forkfarm.Pool(workers, context="forkserver", backend="local")
        self.comm.send(workers, dest=0, tag=TAG_TO_ROOT)

    def _run(self, task_id: int, context_id: int, body: Any, buffers: list[Any]) -> None:
        start = time.perf_counter_ns()
        try:
            kind, func, message = _call(self.contexts, context_id, decode(body, buffers, self.segments))
        except BaseException as exc:  # noqa: BLE001 - it travels back to rank 0
            self._reply(task_id, False, exc, start)
            return
        if self.local is None:
            try:
                value = _apply(kind, func, message)
            except BaseException as exc:  # noqa: BLE001 - it travels back to rank 0
                self._reply(task_id, False, exc, start)
                return
            self._reply(task_id, True, value, start)
            return
        self._count(1)

        def done(value: Any) -> None:
            self.finished.append((task_id, True, value, start))
            self._count(-1)

        def failed(error: BaseException) -> None:
            self.finished.append((task_id, False, error, start))
            self._count(-1)

        if kind == MAP:
            self.local.map_async(func, message, callback=done, error_callback=failed)
        elif kind == STARMAP:
            self.local.starmap_async(func, message, callback=done, error_callback=failed)
        else:
            args, kwds = message
            self.local.apply_async(func, args, kwds, callback=done, error_callback=failed)

    def _reply(self, task_id: int, ok: bool, value: Any, start: int) -> None:
        body, buffers = _encode_result(ok, value)
        run_ns = time.perf_counter_ns() - start
        send(self.comm, 0, TAG_TO_ROOT, (task_id, ok, run_ns), body, buffers)


def _node_share() -> int:
    """This rank's share of its node's CPUs: those it may run on, divided
    among the ranks of the node (counted at launch)."""
    from . import node_ranks

    return max(1, len(os.sched_getaffinity(0)) // node_ranks())
