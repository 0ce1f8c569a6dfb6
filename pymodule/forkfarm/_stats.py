"""What ``Pool.stats()`` and ``Executor.stats()`` return: the runtime's
counters of a pool and of each worker slot, read in one go under the
pool's lock."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import ClassVar

from . import _backend, _core


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
    #: bytes of NumPy arrays born in shared memory that this process holds
    #: now (made inside ``shared_allocations()``; in a worker, its arrays)
    shared_bytes: int = 0
    #: bytes of out-of-band buffers this process received and still uses
    #: (the results of its pools' workers, above all), in shared memory
    received_bytes: int = 0

    _COLUMNS: ClassVar[tuple[str, ...]] = ("pid", "tasks", "busy s", "idle s", "bytes out", "bytes back", "restarts", "current task", "for s")

    def rows(self) -> list[tuple[str, ...]]:
        """A row of text per worker, under :attr:`_COLUMNS`."""
        return [
            (
                str(w.pid),
                str(w.tasks),
                f"{w.busy_seconds:.3f}",
                f"{w.idle_seconds:.3f}",
                str(w.bytes_sent),
                str(w.bytes_received),
                str(w.restarts),
                "" if w.current_task is None else str(w.current_task),
                "" if w.current_task is None else f"{w.current_seconds:.3f}",
            )
            for w in self.workers
        ]

    def summary(self) -> str:
        return (
            f"{self.queued} queued, {self.in_flight} in flight, {self.done} done, {self.failed} failed;"
            f" shared memory held here: {self.shared_bytes} bytes born shared, {self.received_bytes} received"
        )

    def __str__(self) -> str:
        """The counts, then a table of the workers."""
        rows = [self._COLUMNS, *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._COLUMNS))]
        lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
        return "\n".join([self.summary(), *lines])

    def _repr_html_(self) -> str:
        """The same as an HTML table, for Jupyter."""
        head = "".join(f"<th>{html.escape(name)}</th>" for name in self._COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in self.rows()
        )
        return (
            f"<p>{html.escape(self.summary())}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


def read(core: _backend.Core) -> PoolStats:
    queued, in_flight, done, failed, workers = core.stats()
    shared = _core.shared_counts()
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
        shared_bytes=shared["held_bytes"],
        received_bytes=shared["received_bytes"],
    )
