"""The fault and bad-input matrix of shared/FAULTS.md, row by row, for the
Pool and (where the row applies) the Executor.

Elsewhere: rows 18 and 19 (parent death, Ctrl-C) in test_process_faults.py,
rows 10 and 24 in test_shared.py (TestLifetime), row 23 in test_wire.py and
the libFuzzer harnesses of tests/fuzz, row 17 in test_synchronize.py
(TestDeadHolder). Row 25 is here scaled down; the full soak is
benchmarks/soak.py.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.pool import MaybeEncodingError
from typing import Any

import pytest

import forkfarm
import helpers
from forkfarm import _forkserver

pytestmark = pytest.mark.timeout(60)


def _children() -> set[int]:
    """This process's children, but the fork server, kept for later pools
    by design (an earlier test's forkserver pool may have started it)."""
    me = str(os.getpid())
    server = _forkserver._server._process
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[1] == me:
                found.add(int(entry))
    if server is not None:
        found.discard(server.pid)
    return found


@pytest.fixture
def pool() -> Any:
    with forkfarm.Pool(2) as p:
        yield p


@pytest.fixture
def executor() -> Any:
    with forkfarm.Executor(2) as e:
        yield e


def _pool_still_works(pool: forkfarm.Pool) -> None:
    assert pool.map(helpers.square, range(20)) == [x * x for x in range(20)]


class TestWorkerDeath:
    """Rows 1-3: a worker killed, crashed or exited mid-task."""

    @pytest.mark.parametrize(
        ("func", "args", "named"),
        [
            (helpers.die_by_sigkill, (), "SIGKILL"),
            (helpers.segfault, (), "SIGSEGV"),
            (helpers.exit_with_code, (42,), "42"),
        ],
        ids=["sigkill", "segfault", "exit-42"],
    )
    def test_pool(self, pool: forkfarm.Pool, func: Any, args: Any, named: str) -> None:
        others = [pool.apply_async(helpers.sleep_and_return, (0.2, i)) for i in range(4)]
        started = time.monotonic()
        with pytest.raises(forkfarm.WorkerLostError, match=named) as caught:
            pool.apply(func, args)
        assert time.monotonic() - started < 1.0 + 0.2 * 4
        assert caught.value.pid > 0
        assert caught.value.task is not None  # the call it lost
        assert [r.get(timeout=10) for r in others] == list(range(4))
        _pool_still_works(pool)

    def test_executor(self, executor: forkfarm.Executor) -> None:
        future = executor.submit(helpers.segfault)
        assert isinstance(future.exception(timeout=10), forkfarm.WorkerLostError)
        assert future.exception().task is future
        assert "SIGSEGV" in str(future.exception())
        assert executor.submit(helpers.square, 7).result(timeout=10) == 49

    def test_lost_worker_error_is_broken_process_pool(self, pool: forkfarm.Pool) -> None:
        from concurrent.futures.process import BrokenProcessPool

        with pytest.raises(BrokenProcessPool):
            pool.apply(helpers.exit_with_code, (42,))
        assert pool.apply(helpers.square, (3,)) == 9

    def test_no_zombie_left(self) -> None:
        with forkfarm.Pool(2) as p:
            for _ in range(3):
                with pytest.raises(forkfarm.WorkerLostError):
                    p.apply(helpers.die_by_sigkill)
            _pool_still_works(p)
        deadline = time.monotonic() + 5
        while _children() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _children()


class TestTaskErrors:
    def test_sys_exit_reaches_that_task_only(self, pool: forkfarm.Pool) -> None:
        """Row 4."""
        with pytest.raises(SystemExit):
            pool.apply(helpers.call_sys_exit, (3,))
        _pool_still_works(pool)

    def test_raise_keeps_type_and_remote_traceback(self, pool: forkfarm.Pool) -> None:
        """Row 5."""
        with pytest.raises(ValueError, match="boom") as caught:
            pool.apply(helpers.raise_value_error, ("boom",))
        assert isinstance(caught.value.__cause__, forkfarm.RemoteTraceback)
        assert "raise_value_error" in str(caught.value.__cause__)

    def test_unpicklable_argument(self, pool: forkfarm.Pool, executor: forkfarm.Executor) -> None:
        """Row 6: the error is raised in the caller, on that call alone."""
        lock = threading.Lock()
        with pytest.raises(TypeError, match="pickle"):
            pool.apply(helpers.identity, (lock,))
        with pytest.raises(TypeError, match="pickle"):
            pool.map(helpers.identity, [1, lock, 3])
        with pytest.raises(TypeError, match="pickle"):
            executor.submit(helpers.identity, lock).result(timeout=10)
        _pool_still_works(pool)

    @pytest.mark.parametrize("how", ["raise", "exit", "crash"])
    def test_argument_fails_to_load_in_worker(self, pool: forkfarm.Pool, how: str) -> None:
        """Row 7: that task fails with the cause; the pool survives."""
        expected: Any = RuntimeError if how == "raise" else forkfarm.WorkerLostError
        with pytest.raises(expected):
            pool.apply(helpers.identity, (helpers.LoadsBadly(how),))
        _pool_still_works(pool)

    def test_unpicklable_result(self, pool: forkfarm.Pool) -> None:
        """Row 8: MaybeEncodingError, and 20 of them lose no worker."""
        deadline = time.monotonic() + 10
        while len(pool._core.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # both workers up
        pids = set(pool._core.worker_pids())
        assert len(pids) == 2
        for _ in range(20):
            with pytest.raises(MaybeEncodingError):
                pool.apply(helpers.make_unpicklable_result)
        _pool_still_works(pool)
        assert set(pool._core.worker_pids()) == pids

    def test_result_fails_to_load_in_parent(self, pool: forkfarm.Pool) -> None:
        """Row 9."""
        with pytest.raises(pickle.UnpicklingError) as caught:
            pool.apply(helpers.make_result_that_loads_badly)
        assert "refuses to load" in str(caught.value.__cause__)
        _pool_still_works(pool)

    def test_initializer_raises_once(self) -> None:
        """Row 11: a clear error, and no endless respawning."""
        with forkfarm.Pool(2, initializer=helpers.failing_initializer) as p:
            with pytest.raises(forkfarm.InitializerError):
                p.apply(helpers.square, (2,))
            time.sleep(0.3)
            assert len(_children()) <= 1  # at most the zygote, no respawn loop
            with pytest.raises(forkfarm.InitializerError):
                p.apply(helpers.square, (2,))


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


class TestWorkerStartFailure:
    """Row 21: the Nth worker fails to start (here every worker after the
    first exits before it is ready)."""

    def _first_pid(self, marker: Any) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text():
                return int(marker.read_text())
            time.sleep(0.01)
        raise AssertionError("the first worker never started")

    def test_pool(self, tmp_path: Any) -> None:
        marker = tmp_path / "first"
        with forkfarm.Pool(3, initializer=helpers.only_the_first_worker_starts,
                           initargs=(str(marker),)) as p:
            first = self._first_pid(marker)
            with pytest.raises(forkfarm.InitializerError, match="exited with code 5 before it was ready"):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    assert p.map(helpers.square, range(100)) == [x * x for x in range(100)]
            # The worker that did start is cleaned up with the pool.
            assert _wait_gone(first, 2.0)
            with pytest.raises(forkfarm.InitializerError):
                p.apply(helpers.square, (2,))
        assert not _children()

    def test_executor(self, tmp_path: Any) -> None:
        marker = tmp_path / "first"
        executor = forkfarm.Executor(3, initializer=helpers.only_the_first_worker_starts,
                                     initargs=(str(marker),))
        try:
            first = self._first_pid(marker)
            # The first worker may serve a few calls before the others have
            # failed often enough; then the executor is broken, as
            # ProcessPoolExecutor is when it cannot start workers.
            with pytest.raises(BrokenProcessPool, match="exited with code 5 before it was ready"):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    assert executor.submit(helpers.square, 3).result(timeout=10) == 9
            assert _wait_gone(first, 2.0)
            with pytest.raises(BrokenProcessPool):
                executor.submit(helpers.square, 2)
        finally:
            executor.shutdown(wait=True)
        assert not _children()

class TestCancel:
    def test_cancel_of_a_running_call(self) -> None:
        """Row 14: the worker is killed and replaced; the future is
        cancelled."""
        with forkfarm.Executor(1) as executor:
            first = executor.submit(helpers.getpid).result(timeout=10)
            running = executor.submit(helpers.sleep_and_return, 30.0)
            behind = executor.submit(helpers.square, 6)
            time.sleep(0.3)
            started = time.monotonic()
            assert running.cancel() is True
            assert running.cancelled()
            assert behind.result(timeout=10) == 36  # ran on the replacement
            assert time.monotonic() - started < 2.0
            assert executor.submit(helpers.getpid).result(timeout=10) != first

    def test_cancel_after_the_result(self, executor: forkfarm.Executor) -> None:
        future = executor.submit(helpers.square, 3)
        assert future.result(timeout=10) == 9
        assert future.cancel() is False and not future.cancelled()

    def test_shutdown_cancels_only_queued_calls(self) -> None:
        executor = forkfarm.Executor(1)
        running = executor.submit(helpers.sleep_and_return, 0.5, "kept")
        time.sleep(0.2)
        queued = [executor.submit(helpers.square, i) for i in range(20)]
        executor.shutdown(wait=True, cancel_futures=True)
        assert running.result(timeout=10) == "kept"
        assert any(f.cancelled() for f in queued)


class TestTaskTimeout:
    """Row 13: past its timeout a task's worker gets SIGTERM, then SIGKILL
    after a grace period if it ignores it; the task raises TimeoutError and
    the worker is replaced."""

    def test_pool(self) -> None:
        import multiprocessing

        with forkfarm.Pool(1, timeout=0.3) as p:
            first = p.apply(helpers.getpid)
            behind = p.apply_async(helpers.square, (5,))
            started = time.monotonic()
            with pytest.raises(forkfarm.TaskTimeoutError) as caught:
                p.apply(helpers.sleep_and_return, (30.0,))
            assert 0.3 <= time.monotonic() - started < 1.0
            assert isinstance(caught.value, multiprocessing.TimeoutError)
            assert isinstance(caught.value, TimeoutError)
            assert caught.value.signal == signal.SIGTERM and caught.value.pid == first
            assert behind.get(timeout=10) == 25
            assert p.apply(helpers.getpid) != first

    def test_sigterm_ignored(self) -> None:
        with forkfarm.Pool(1, timeout=0.2) as p:
            started = time.monotonic()
            with pytest.raises(forkfarm.TaskTimeoutError) as caught:
                p.apply(helpers.ignore_sigterm_then_sleep, (30.0,))
            assert caught.value.signal == signal.SIGKILL
            assert 1.2 <= time.monotonic() - started < 3.0  # 0.2 s, then 1 s of grace
            assert p.apply(helpers.square, (3,)) == 9

    def test_map_gives_each_item_the_timeout(self) -> None:
        with forkfarm.Pool(2, timeout=0.5) as p:
            assert p.map(helpers.sleep_and_return, [0.2] * 6, chunksize=3) == [None] * 6
            with pytest.raises(forkfarm.TaskTimeoutError):
                p.map(helpers.sleep_and_return, [0.01, 30.0, 0.01])

    def test_executor(self) -> None:
        with forkfarm.Executor(1, timeout=0.3) as executor:
            future = executor.submit(helpers.sleep_and_return, 30.0)
            assert isinstance(future.exception(timeout=10), TimeoutError)
            assert executor.submit(helpers.square, 2).result(timeout=10) == 4

    @pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
    def test_bad_timeout(self, bad: float) -> None:
        with pytest.raises(ValueError, match="timeout"):
            forkfarm.Pool(1, timeout=bad)
        with pytest.raises(ValueError, match="timeout"):
            forkfarm.Executor(1, timeout=bad)

    def test_timeout_of_the_wrong_type(self) -> None:
        with pytest.raises(TypeError, match="timeout"):
            forkfarm.Pool(1, timeout="1")  # type: ignore[arg-type]


class TestPerCallLimits:
    """timeout= and retries= on a call set its own limits over the pool's."""

    def test_pool_methods(self, tmp_path: Any) -> None:
        with forkfarm.Pool(2) as p:
            started = time.monotonic()
            with pytest.raises(forkfarm.TaskTimeoutError):
                p.apply(helpers.sleep_and_return, (30.0,), timeout=0.2)
            assert time.monotonic() - started < 1.0
            with pytest.raises(forkfarm.TaskTimeoutError):
                p.map(helpers.sleep_and_return, [0.01, 30.0], chunksize=1, timeout=0.2)
            with pytest.raises(forkfarm.TaskTimeoutError):
                list(p.imap_unordered(helpers.sleep_and_return, [30.0], timeout=0.2))
            with pytest.raises(forkfarm.TaskTimeoutError):
                p.starmap(helpers.sleep_and_return, [(30.0,)], timeout=0.2)
            # Other calls keep the pool's limits (none).
            assert p.apply(helpers.sleep_and_return, (0.4, "slow")) == "slow"
            marker = str(tmp_path / "a")
            assert p.apply(helpers.die_unless_marked, (marker, 3), retries=1) == (3, 2)
            marks = [str(tmp_path / f"m{i}") for i in range(4)]
            assert p.starmap(helpers.die_unless_marked, [(m, 1) for m in marks], retries=1) == [(1, 2)] * 4
            with pytest.raises(forkfarm.WorkerLostError):
                p.apply(helpers.die_unless_marked, (str(tmp_path / "b"), 3))

    def test_a_call_overrides_the_pool(self) -> None:
        with forkfarm.Pool(1, timeout=0.2) as p:
            assert p.apply(helpers.sleep_and_return, (0.5, "given"), timeout=5) == "given"
            with pytest.raises(forkfarm.TaskTimeoutError):
                p.apply(helpers.sleep_and_return, (30.0,))

    def test_executor(self, tmp_path: Any) -> None:
        with forkfarm.Executor(2) as executor:
            limited = executor.with_options(timeout=0.2, retries=1)
            future = limited.submit(helpers.sleep_and_return, 30.0)
            assert isinstance(future.exception(timeout=10), forkfarm.TaskTimeoutError)
            marker = str(tmp_path / "a")
            assert limited.submit(helpers.die_unless_marked, marker, 5).result(timeout=10) == (5, 2)
            with pytest.raises(forkfarm.TaskTimeoutError):
                list(limited.map(helpers.sleep_and_return, [0.01, 30.0]))
            assert executor.submit(helpers.sleep_and_return, 0.4, "slow").result(timeout=10) == "slow"

    @pytest.mark.parametrize(("kwargs", "error"), [
        ({"timeout": -1}, ValueError), ({"timeout": "1"}, TypeError),
        ({"retries": -2}, ValueError), ({"retries": 0.5}, TypeError),
    ])
    def test_bad_values(self, pool: forkfarm.Pool, executor: forkfarm.Executor,
                        kwargs: dict[str, Any], error: type) -> None:
        name = next(iter(kwargs))
        with pytest.raises(error, match=name):
            pool.apply(helpers.square, (2,), **kwargs)
        with pytest.raises(error, match=name):
            pool.map(helpers.square, [1], **kwargs)
        with pytest.raises(error, match=name):
            pool.imap(helpers.square, [1], **kwargs)
        with pytest.raises(error, match=name):
            executor.with_options(**kwargs)


class TestRetries:
    """Issue 5's retries=: a task whose worker died under it runs again."""

    def test_pool(self, tmp_path: Any) -> None:
        with forkfarm.Pool(1, retries=1) as p:
            assert p.apply(helpers.die_unless_marked, (str(tmp_path / "a"), 7)) == (7, 2)
        with forkfarm.Pool(1) as p:
            with pytest.raises(forkfarm.WorkerLostError):
                p.apply(helpers.die_unless_marked, (str(tmp_path / "b"), 7))

    def test_exhausted(self, tmp_path: Any) -> None:
        runs = tmp_path / "runs"
        with forkfarm.Pool(2, retries=2) as p:
            with pytest.raises(forkfarm.WorkerLostError):
                p.apply(helpers.always_die, (str(runs),))
            assert len(runs.read_text().splitlines()) == 3
            _pool_still_works(p)

    def test_large_argument_is_sent_again(self, tmp_path: Any) -> None:
        np = pytest.importorskip("numpy")
        big = np.arange(1 << 18, dtype=np.float64)  # out of band, in the arena
        with forkfarm.Pool(1, retries=1) as p:
            value, runs = p.apply(helpers.die_unless_marked, (str(tmp_path / "c"), big))
            assert runs == 2
            np.testing.assert_array_equal(value, big)

    def test_executor(self, tmp_path: Any) -> None:
        with forkfarm.Executor(1, retries=1) as executor:
            future = executor.submit(helpers.die_unless_marked, str(tmp_path / "d"), 1)
            assert future.result(timeout=10) == (1, 2)

    def test_timeouts_are_not_retried(self) -> None:
        with forkfarm.Pool(1, timeout=0.2, retries=3) as p:
            started = time.monotonic()
            with pytest.raises(forkfarm.TaskTimeoutError):
                p.apply(helpers.sleep_and_return, (30.0,))
            assert time.monotonic() - started < 1.0

    @pytest.mark.parametrize(("bad", "error"), [(-1, ValueError), (1.5, TypeError)])
    def test_bad_retries(self, bad: Any, error: type) -> None:
        with pytest.raises(error, match="retries"):
            forkfarm.Pool(1, retries=bad)
        with pytest.raises(error, match="retries"):
            forkfarm.Executor(1, retries=bad)


class TestMaxMemory:
    """Row 20: a worker past max_memory_per_child is recycled after its
    task; results are intact."""

    def test_pool(self) -> None:
        # A worker starts at about 15-30 MiB here; each task keeps 40 more.
        with forkfarm.Pool(1, max_memory_per_child=100 << 20) as p:
            pids = [p.apply(helpers.grow_then_pid, (40,)) for _ in range(8)]
            assert len(set(pids)) >= 2  # recycled at least once
            # 4 tasks hold 160 MiB: no worker gets past its limit by more than one task.
            assert max(pids.count(pid) for pid in set(pids)) <= 4
            values = p.map(helpers.pid_and_value, range(200))
            assert [v for _, v in values] == list(range(200))

    def test_backlog_survives_recycling(self) -> None:
        with forkfarm.Pool(2, max_memory_per_child=60 << 20) as p:
            results = [p.apply_async(helpers.grow_then_pid, (30,)) for _ in range(20)]
            pids = [r.get(timeout=30) for r in results]
            assert len(set(pids)) > 2

    def test_executor(self) -> None:
        with forkfarm.Executor(1, max_memory_per_child=100 << 20) as executor:
            pids = [executor.submit(helpers.grow_then_pid, 40).result(timeout=30) for _ in range(6)]
            assert len(set(pids)) >= 2

    @pytest.mark.parametrize(("bad", "error"), [(0, ValueError), (1.5, TypeError)])
    def test_bad_value(self, bad: Any, error: type) -> None:
        with pytest.raises(error, match="max_memory_per_child"):
            forkfarm.Pool(1, max_memory_per_child=bad)


class TestTimeoutsAndShutdown:
    @pytest.mark.parametrize("kind", ["pool", "executor"])
    def test_get_timeout(self, pool: forkfarm.Pool, executor: forkfarm.Executor, kind: str) -> None:
        """Row 12: TimeoutError at t ± 0.1 s; the task is unaffected."""
        # Each API's own TimeoutError: multiprocessing's for the Pool, the
        # builtin (concurrent.futures') for the Executor.
        expected: Any
        if kind == "pool":
            result = pool.apply_async(helpers.sleep_and_return, (1.0, "done"))
            wait, expected = result.get, forkfarm.TimeoutError
        else:
            future = executor.submit(helpers.sleep_and_return, 1.0, "done")
            wait, expected = future.result, TimeoutError
        started = time.monotonic()
        with pytest.raises(expected):
            wait(timeout=0.3)
        assert abs(time.monotonic() - started - 0.3) < 0.1
        assert wait(timeout=10) == "done"

    def test_terminate_with_a_long_backlog(self) -> None:
        """Row 15: within 2 s, no live child left."""
        p = forkfarm.Pool(2)
        results = [p.apply_async(helpers.sleep_and_return, (10.0,)) for _ in range(10_000)]
        time.sleep(0.2)
        started = time.monotonic()
        p.terminate()
        assert time.monotonic() - started < 2.0
        deadline = time.monotonic() + 2
        while _children() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _children()
        with pytest.raises(forkfarm.PoolTerminatedError):
            results[-1].get(timeout=1)

    @pytest.mark.parametrize("close_early", [False, True])
    def test_maxtasksperchild_one(self, close_early: bool) -> None:
        """Row 16."""
        p = forkfarm.Pool(2, maxtasksperchild=1)
        result = p.map_async(helpers.pid_and_value, range(40), chunksize=1)
        if close_early:
            p.close()
        values = result.get(timeout=30)
        assert [v for _, v in values] == list(range(40))
        assert len({pid for pid, _ in values}) == 40  # one task per worker
        if not close_early:
            p.close()
        p.join()


class TestSoak:
    """Row 25, scaled down (benchmarks/soak.py runs 100,000 tasks with an
    outside killer): 1% of 5,000 tasks, chosen at random, SIGKILL their
    worker on their first run. A shared array counts every run, so a task
    run twice or never is seen, not only a result delivered twice."""

    TASKS = 5_000

    def _soak(self, retries: int) -> tuple[set[int], Any]:
        import random

        doomed = set(random.Random(25).sample(range(self.TASKS), self.TASKS // 100))
        attempts = forkfarm.zeros(self.TASKS, dtype="int64")
        outcomes: dict[int, Any] = {}
        lock = threading.Lock()

        def record(i: int, outcome: Any) -> None:
            with lock:
                assert i not in outcomes, f"task {i} delivered twice"
                outcomes[i] = outcome

        with forkfarm.Pool(2, retries=retries) as p:
            results = [
                p.apply_async(
                    helpers.square_or_die_once,
                    (i, attempts, i in doomed),
                    callback=lambda v, i=i: record(i, v),
                    error_callback=lambda e, i=i: record(i, e),
                )
                for i in range(self.TASKS)
            ]
            for r in results:
                assert r.wait(30) is None and r.ready()
            # Every dead worker is replaced (the last one may still start).
            deadline = time.monotonic() + 5
            while len(p._core.worker_pids()) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(p._core.worker_pids()) == 2
            assert p.apply(helpers.square, (4,)) == 16
        assert sorted(outcomes) == list(range(self.TASKS)), "a task was lost"
        return doomed, (outcomes, attempts)

    def test_kills_fail_only_their_tasks(self) -> None:
        doomed, (outcomes, attempts) = self._soak(retries=0)
        for i, outcome in outcomes.items():
            if i in doomed:
                assert isinstance(outcome, forkfarm.WorkerLostError)
                assert outcome.signal == signal.SIGKILL
            else:
                assert outcome == i * i
        assert (attempts == 1).all(), "a task ran twice or never"

    def test_with_one_retry_every_task_completes(self) -> None:
        doomed, (outcomes, attempts) = self._soak(retries=1)
        assert all(outcomes[i] == i * i for i in range(self.TASKS))
        expected = [2 if i in doomed else 1 for i in range(self.TASKS)]
        assert attempts.tolist() == expected


class TestBadParameters:
    """Row 22: ValueError or TypeError at the call, naming the parameter."""

    @pytest.mark.parametrize("processes", [0, -1])
    def test_processes(self, processes: int) -> None:
        with pytest.raises(ValueError, match="processes"):
            forkfarm.Pool(processes)
        with pytest.raises(ValueError, match="max_workers"):
            forkfarm.Executor(processes)

    @pytest.mark.parametrize("chunksize", [0, -3])
    def test_chunksize(self, pool: forkfarm.Pool, executor: forkfarm.Executor, chunksize: int) -> None:
        # multiprocessing's own message: "Chunksize must be 1+, not 0".
        with pytest.raises(ValueError, match="(?i)chunksize"):
            pool.map(helpers.square, range(5), chunksize=chunksize)
        with pytest.raises(ValueError, match="(?i)chunksize"):
            executor.map(helpers.square, range(5), chunksize=chunksize)

    def test_not_callable(self, pool: forkfarm.Pool, executor: forkfarm.Executor) -> None:
        with pytest.raises(TypeError, match="callable"):
            pool.apply(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            pool.map(42, range(3))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            executor.submit(42)  # type: ignore[arg-type]
