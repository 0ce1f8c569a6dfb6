"""The other ranks' side of MPI pools: each runs the tasks rank 0 sends,
one pool after another, itself or, in hybrid mode, as its node's agent on
a local forkfarm pool of the node's cores (the shared arrays it received
reach those workers as handles, without a copy)."""

from __future__ import annotations

import collections
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _core, _protocol, _segments
from .wire import TAG_TO_ROOT, TAG_TO_WORKER, decode, encode, mpi, receive_rest, send

CALL, MAP, STARMAP = _protocol.CALL, _protocol.MAP, _protocol.STARMAP


def release_all(comm: Any) -> None:
    """Rank 0, at the end of the program: the other ranks may exit."""
    for rank in range(1, comm.Get_size()):
        send(comm, rank, TAG_TO_WORKER, ("exit",), b"", [])


def serve_until_exit(comm: Any, node_ranks: int) -> None:
    """Runs the tasks of rank 0's pools, one pool after another, until rank
    0's program ends. ``node_ranks``: how many ranks share this node's CPUs
    (counted at launch)."""
    while _Server(comm, node_ranks).serve():
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

    def __init__(self, comm: Any, node_ranks: int) -> None:
        self.comm = comm
        self.node_ranks = node_ranks
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
                comm.Recv([memoryview(segment), mpi().BYTE], source=0, tag=TAG_TO_WORKER)
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
            from ..pool import Pool

            workers = hybrid_workers or _node_share(self.node_ranks)
            # Workers from the fork server: a fresh interpreter, with none
            # of this process's MPI state.
            self.local = Pool(workers, context="forkserver", backend="local")
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


def _node_share(node_ranks: int) -> int:
    """This rank's share of its node's CPUs: those it may run on, divided
    among the ranks of the node."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, node_ranks))
