"""pool.stats() (issue 7): pool-wide counts and per-worker figures, read
from the runtime."""

from __future__ import annotations

import time
from typing import Any

import pytest

import forkfarm
import helpers

pytestmark = pytest.mark.timeout(60)


def test_counts_and_workers() -> None:
    with forkfarm.Pool(2) as p:
        fresh = p.stats()
        assert (fresh.queued, fresh.in_flight, fresh.done, fresh.failed) == (0, 0, 0, 0)
        assert len(fresh.workers) == 2
        assert p.map(helpers.square, range(100), chunksize=10) == [x * x for x in range(100)]
        with pytest.raises(ValueError):
            p.apply(helpers.raise_value_error, ("boom",))
        with pytest.raises(forkfarm.WorkerLostError):
            p.apply(helpers.die_by_sigkill)
        p.apply(helpers.square, (1,))  # the replacement is up
        stats = p.stats()
        assert stats.done == 11 and stats.failed == 2
        assert sum(w.tasks for w in stats.workers) >= 11
        assert sum(w.restarts for w in stats.workers) == 1
        assert all(w.bytes_sent > 0 and w.bytes_received > 0 for w in stats.workers if w.tasks)
        assert all(w.idle_seconds > 0 for w in stats.workers)


def test_a_straggler_shows() -> None:
    with forkfarm.Pool(2) as p:
        assert p.map(helpers.square, range(20), chunksize=1) == [x * x for x in range(20)]
        slow = p.apply_async(helpers.sleep_and_return, (1.0, "slow"))
        time.sleep(0.3)
        stats = p.stats()
        busy = [w for w in stats.workers if w.current_task is not None]
        assert len(busy) == 1 and busy[0].current_seconds >= 0.3
        assert stats.in_flight == 1
        assert slow.get(timeout=10) == "slow"
        assert all(w.current_task is None for w in p.stats().workers)


def test_executor_stats() -> None:
    with forkfarm.Executor(1) as executor:
        assert executor.submit(helpers.square, 3).result(timeout=10) == 9
        stats: Any = executor.stats()
        assert stats.done == 1 and stats.workers[0].tasks == 1 and stats.workers[0].busy_seconds > 0
