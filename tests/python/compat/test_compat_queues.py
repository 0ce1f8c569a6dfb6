"""multiprocessing's observable behaviour of Queue, SimpleQueue and
JoinableQueue, checked on both modules (the ``mp`` fixture)."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

TOLERANCE = 0.1


def _join(processes: list[Any]) -> None:
    for process in processes:
        process.join(30)
        assert process.exitcode == 0


def _produce(q: Any, start: int, count: int) -> None:
    for i in range(start, start + count):
        q.put(i)


class TestQueue:
    def test_order_with_one_producer(self, mp: Any, fork: Any) -> None:
        q = mp.Queue()
        child = fork(target=_produce, args=(q, 0, 5000))
        child.start()
        got = [q.get(timeout=10) for _ in range(5000)]
        _join([child])
        assert got == list(range(5000))

    def test_objects_round_trip(self, mp: Any) -> None:
        q = mp.Queue()
        values = [None, 1, "two", b"three", [4, (5, 6)], {"seven": 8.0}, 10**30]
        for value in values:
            q.put(value)
        assert [q.get(timeout=5) for _ in values] == values

    def test_timeouts(self, mp: Any) -> None:
        q = mp.Queue(maxsize=1)
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 0.2 + 2 * TOLERANCE
        with pytest.raises(queue.Empty):
            q.get(False)
        with pytest.raises(queue.Empty):
            q.get_nowait()
        q.put("x")
        started = time.monotonic()
        with pytest.raises(queue.Full):
            q.put("y", timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 0.2 + 2 * TOLERANCE
        with pytest.raises(queue.Full):
            q.put_nowait("y")
        assert q.get(timeout=5) == "x"

    def test_bounded_sizes(self, mp: Any) -> None:
        q = mp.Queue(3)
        assert q.empty() and not q.full()
        for i in range(3):
            q.put(i)
        deadline = time.monotonic() + 5  # multiprocessing's feeder may lag
        while (q.qsize() < 3 or q.empty()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert q.qsize() == 3 and q.full() and not q.empty()

    def test_closed(self, mp: Any) -> None:
        q = mp.Queue()
        q.close()
        with pytest.raises(ValueError, match="is closed"):
            q.put(1)
        with pytest.raises(ValueError, match="is closed"):
            q.get(timeout=0.01)
        q.join_thread()
        q.cancel_join_thread()

    def test_many_producers_and_consumers(self, mp: Any, fork: Any) -> None:
        q = mp.Queue()
        results = mp.Queue()

        def consume() -> None:
            total = 0
            while (item := q.get(timeout=20)) is not None:
                total += item
            results.put(total)

        producers = [fork(target=_produce, args=(q, i * 1000, 1000)) for i in range(2)]
        consumers = [fork(target=consume) for _ in range(2)]
        for process in producers + consumers:
            process.start()
        _join(producers)
        for _ in consumers:
            q.put(None)
        totals = [results.get(timeout=20) for _ in consumers]
        _join(consumers)
        assert sum(totals) == sum(range(2000))


class TestJoinableQueue:
    def test_join_waits_for_task_done(self, mp: Any, fork: Any) -> None:
        q = mp.JoinableQueue()
        for i in range(10):
            q.put(i)

        def work() -> None:
            for _ in range(10):
                q.get(timeout=10)
                time.sleep(0.01)
                q.task_done()

        child = fork(target=work)
        child.start()
        started = time.monotonic()
        q.join()
        assert time.monotonic() - started >= 0.05
        _join([child])

    def test_task_done_too_often(self, mp: Any) -> None:
        q = mp.JoinableQueue()
        q.put(1)
        q.get(timeout=5)
        q.task_done()
        with pytest.raises(ValueError, match="task_done"):
            q.task_done()


class TestSimpleQueue:
    def test_put_get_empty(self, mp: Any, fork: Any) -> None:
        q = mp.SimpleQueue()
        assert q.empty()
        child = fork(target=_produce, args=(q, 0, 100))
        child.start()
        assert [q.get() for _ in range(100)] == list(range(100))
        _join([child])
        assert q.empty()
        q.close()
