"""What ``Pool.stats()`` and ``Executor.stats()`` return: the runtime's
counters of a pool and of each worker slot, read in one go under the
pool's lock."""

from __future__ import annotations

from dataclasses import dataclass

from . import _core


@dataclass(frozen=True)
class WorkerStats:
    """One worker slot, across the processes that filled it."""

    pid: int  #: the slot's process now; 0 while it is replaced
    tasks: int  #: tasks (map chunks count once) it returned a result for
    busy_seconds: float  #: time spent running tasks, as the workers measured it
    idle_seconds: float  #: the rest of the time since the slot's first process started
    bytes_sent: int  #: bytes of task messages sent to it
    bytes_received: int  #: bytes of results received from it
    restarts: int  #: processes that replaced the first (crashes, recycling, timeouts)
    current_task: int | None  #: the id of the task it runs now
    current_seconds: float  #: how long that task has run: a straggler shows here


@dataclass(frozen=True)
class PoolStats:
    """A pool's counters, and its workers'."""

    queued: int  #: submitted, not yet sent to a worker
    in_flight: int  #: sent to a worker, not finished
    done: int  #: finished with a result
    failed: int  #: finished with an error, a lost worker, a timeout, a cancellation
    workers: list[WorkerStats]


def read(core: _core.Pool) -> PoolStats:
    queued, in_flight, done, failed, workers = core.stats()
    return PoolStats(
        queued,
        in_flight,
        done,
        failed,
        [
            WorkerStats(
                pid=pid,
                tasks=tasks,
                busy_seconds=busy / 1e9,
                idle_seconds=idle / 1e9,
                bytes_sent=sent,
                bytes_received=received,
                restarts=restarts,
                current_task=current or None,
                current_seconds=current_ns / 1e9,
            )
            for pid, restarts, tasks, busy, idle, sent, received, current, current_ns in workers
        ],
    )
