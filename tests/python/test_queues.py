"""forkfarm's Queue, SimpleQueue and JoinableQueue: what they add to
multiprocessing's (handles in pool tasks, exact sizes, memory given back, a
dead lock holder survived: FAULTS row 17). Behaviour shared with
multiprocessing is checked against it in compat/test_compat_queues.py."""

from __future__ import annotations

import os
import pickle
import signal
import time
from typing import Any

import pytest

import forkfarm
import helpers

pytestmark = pytest.mark.timeout(60)

# Under `make test-python-asan`: memory figures there are ASan's (its
# quarantine keeps freed memory resident).
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class TestInPools:
    def test_queue_as_a_task_argument(self) -> None:
        q: forkfarm.Queue[Any] = forkfarm.Queue()
        with forkfarm.Pool(2) as p:
            pids = p.starmap(helpers.put_all, [(q, list(range(i, i + 100))) for i in (0, 100)])
            got = sorted(q.get(timeout=10) for _ in range(200))
            assert got == list(range(200))
            assert len(pids) == 2
            # And the other way: workers take what the parent put.
            for i in range(50):
                q.put(i)
            assert sorted(p.apply(helpers.get_n, (q, 50))) == list(range(50))

    def test_joinable_queue_in_a_pool(self) -> None:
        q: forkfarm.JoinableQueue[int] = forkfarm.JoinableQueue()
        for i in range(100):
            q.put(i)
        with forkfarm.Pool(2) as p:
            totals = p.starmap(helpers.consume_and_mark_done, [(q, 50), (q, 50)])
            q.join()
        assert sum(totals) == sum(range(100))

    def test_a_bound_method_does_not_travel(self) -> None:
        q: forkfarm.Queue[Any] = forkfarm.Queue()
        with forkfarm.Pool(1) as p:
            with pytest.raises(TypeError, match="pass the queue itself"):
                p.apply(q.put, (1,))

    def test_plain_pickle_is_refused(self) -> None:
        for q in (forkfarm.Queue(), forkfarm.SimpleQueue(), forkfarm.JoinableQueue()):
            with pytest.raises(RuntimeError, match="inheritance"):
                pickle.dumps(q)


class TestDeadHolder:
    """Row 17 for queues: a worker killed while it holds a queue's lock
    does not hang the others."""

    def test_worker_killed_holding_the_lock(self) -> None:
        q: forkfarm.Queue[Any] = forkfarm.Queue()
        q.put("before")
        with forkfarm.Pool(1) as p:
            with pytest.raises(forkfarm.WorkerLostError):
                p.apply(helpers.take_queue_lock_and_die, (q,))
            started = time.monotonic()
            with pytest.warns(forkfarm.AbandonedLockWarning, match="died holding its lock"):
                q.put("after", timeout=5)
            assert time.monotonic() - started < 1.0
            assert q.get(timeout=5) == "before"
            assert q.get(timeout=5) == "after"
            # The worker's replacement uses it as before.
            assert p.apply(helpers.put_all, (q, [1, 2])) > 0
            assert [q.get(timeout=5), q.get(timeout=5)] == [1, 2]


class TestSemantics:
    def test_sizes_are_exact_at_once(self) -> None:
        q: forkfarm.Queue[int] = forkfarm.Queue()
        for i in range(1000):
            q.put(i)
            assert q.qsize() == i + 1
        assert not q.empty()

    def test_large_messages_and_memory_back(self) -> None:
        q: forkfarm.Queue[bytes] = forkfarm.Queue()
        rss = _rss_kib()
        blobs = [os.urandom(1 << 20) for _ in range(64)]  # 64 MiB
        base = _rss_kib()
        for blob in blobs:
            q.put(blob)
        assert _rss_kib() - base > 60 * 1024  # the ring grew into the region
        assert [q.get(timeout=5) for _ in blobs] == blobs
        # Emptied: the ring shrank and gave its pages back.
        if not UNDER_ASAN:
            assert _rss_kib() - base < 8 * 1024, (rss, base, _rss_kib())

    def test_a_producer_that_exits_loses_nothing(self) -> None:
        """multiprocessing may lose what its feeder thread had not flushed
        when a process ends with os._exit; here put has finished."""
        q: forkfarm.Queue[int] = forkfarm.Queue()
        pid = os.fork()
        if pid == 0:
            for i in range(1000):
                q.put(i)
            os._exit(0)
        os.waitpid(pid, 0)
        assert q.qsize() == 1000
        assert [q.get(timeout=5) for _ in range(1000)] == list(range(1000))

    def test_ctrl_c_interrupts_a_get(self) -> None:
        q: forkfarm.Queue[int] = forkfarm.Queue()
        import threading

        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            q.get(timeout=10)
        assert time.monotonic() - started < 1.0

    @pytest.mark.parametrize("bad", [1.5, "3", None])
    def test_bad_maxsize(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="maxsize"):
            forkfarm.Queue(bad)
