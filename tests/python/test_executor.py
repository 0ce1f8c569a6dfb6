"""Tests for forkfarm.Executor, a concurrent.futures.Executor."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import forkfarm
import helpers

pytestmark = pytest.mark.timeout(60)

# Upper bound for every blocking result() call.
T = 30


# ==========================================================================
# Construction
# ==========================================================================


class TestConstruction:
    def test_is_concurrent_futures_executor(self, executor: forkfarm.Executor) -> None:
        assert isinstance(executor, cf.Executor)

    def test_default_max_workers(self) -> None:
        with forkfarm.Executor() as ex:
            assert list(ex.map(helpers.square, range(10))) == [x * x for x in range(10)]

    def test_keyword_arguments(self) -> None:
        with forkfarm.Executor(
            max_workers=2, initializer=None, initargs=(), max_tasks_per_child=None
        ) as ex:
            assert ex.submit(helpers.add, 1, 2).result(T) == 3

    @pytest.mark.parametrize("max_workers", [0, -1])
    def test_max_workers_not_positive(self, max_workers: int) -> None:
        with pytest.raises(ValueError):
            forkfarm.Executor(max_workers=max_workers)

    def test_max_tasks_per_child_is_keyword_only(self) -> None:
        with pytest.raises(TypeError):
            forkfarm.Executor(2, None, (), 1)  # type: ignore[misc]

    @pytest.mark.parametrize("value", [0, -1])
    def test_max_tasks_per_child_not_positive(self, value: int) -> None:
        with pytest.raises(ValueError):
            forkfarm.Executor(max_workers=2, max_tasks_per_child=value)


# ==========================================================================
# submit / Future
# ==========================================================================


class TestSubmit:
    def test_submit_returns_future(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.square, 9)
        assert isinstance(f, cf.Future)
        assert f.result(T) == 81
        assert f.done() and not f.cancelled()
        assert f.exception(0) is None

    def test_runs_in_worker(self, executor: forkfarm.Executor) -> None:
        assert executor.submit(helpers.getpid).result(T) != os.getpid()

    def test_args_and_kwargs(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.args_and_kwargs, 1, "two", three=3)
        assert f.result(T) == ((1, "two"), {"three": 3})

    def test_fn_is_positional_only(self, executor: forkfarm.Executor) -> None:
        # submit(fn, /, *args, **kwargs): "fn" may be a keyword for the task.
        f = executor.submit(helpers.echo_kwargs, fn=1, self=2)
        assert f.result(T) == {"fn": 1, "self": 2}

    def test_many_submits(self, executor: forkfarm.Executor) -> None:
        fs = [executor.submit(helpers.add, i, i) for i in range(200)]
        assert [f.result(T) for f in fs] == [2 * i for i in range(200)]

    def test_result_timeout(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.sleep_and_return, 2, "late")
        t0 = time.monotonic()
        with pytest.raises(cf.TimeoutError):
            f.result(timeout=0.1)
        assert time.monotonic() - t0 < 1.5
        assert f.result(T) == "late"

    def test_timeout_is_builtin_timeout_error(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.sleep_and_return, 2, None)
        with pytest.raises(TimeoutError):
            f.result(timeout=0.05)
        f.result(T)

    def test_non_callable(self, executor: forkfarm.Executor) -> None:
        # Either submit() or result() raises TypeError.
        with pytest.raises(TypeError):
            executor.submit(42).result(T)  # type: ignore[arg-type]

    def test_add_done_callback(self, executor: forkfarm.Executor) -> None:
        fired = threading.Event()
        seen: list[cf.Future[Any]] = []

        def cb(fut: cf.Future[Any]) -> None:
            seen.append(fut)
            fired.set()

        f = executor.submit(helpers.sleep_and_return, 0.2, "v")
        f.add_done_callback(cb)
        assert fired.wait(T)
        assert seen == [f]
        assert f.result(0) == "v"

    def test_add_done_callback_on_failure(self, executor: forkfarm.Executor) -> None:
        fired = threading.Event()
        excs: list[BaseException | None] = []

        def cb(fut: cf.Future[Any]) -> None:
            excs.append(fut.exception())
            fired.set()

        executor.submit(helpers.raise_value_error, "cb").add_done_callback(cb)
        assert fired.wait(T)
        assert len(excs) == 1 and isinstance(excs[0], ValueError)
        assert excs[0].args == ("cb",)

    def test_cancel_queued_future(self, executor: forkfarm.Executor) -> None:
        blockers = [executor.submit(helpers.sleep_and_return, 1.0, i) for i in range(2)]
        queued = [executor.submit(helpers.square, i) for i in range(40)]
        last = queued[-1]
        assert last.cancel() is True
        assert last.cancelled() and last.done()
        with pytest.raises(cf.CancelledError):
            last.result(0)
        assert [f.result(T) for f in blockers] == [0, 1]
        assert [f.result(T) for f in queued[:-1]] == [i * i for i in range(39)]


# ==========================================================================
# Exceptions raised by tasks
# ==========================================================================


class TestTaskExceptions:
    def test_same_type_and_args(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.raise_value_error, "nope")
        with pytest.raises(ValueError) as excinfo:
            f.result(T)
        assert type(excinfo.value) is ValueError
        assert excinfo.value.args == ("nope",)
        exc = f.exception(0)
        assert isinstance(exc, ValueError) and exc.args == ("nope",)

    def test_custom_exception(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.raise_custom_error, 5, "why")
        with pytest.raises(helpers.CustomError) as excinfo:
            f.result(T)
        assert excinfo.value.args == (5, "why")

    def test_remote_traceback_in_cause(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.raise_custom_error, 1, "x")
        with pytest.raises(helpers.CustomError) as excinfo:
            f.result(T)
        cause = excinfo.value.__cause__
        assert cause is not None
        assert "raise_custom_error" in str(cause)

    def test_executor_usable_after_exception(self, executor: forkfarm.Executor) -> None:
        with pytest.raises(ValueError):
            executor.submit(helpers.raise_value_error, "x").result(T)
        assert executor.submit(helpers.square, 3).result(T) == 9


# ==========================================================================
# map
# ==========================================================================


class TestMap:
    def test_map(self, executor: forkfarm.Executor) -> None:
        assert list(executor.map(helpers.square, range(100))) == [x * x for x in range(100)]

    @pytest.mark.parametrize("chunksize", [1, 7, 500])
    def test_map_chunksize(self, executor: forkfarm.Executor, chunksize: int) -> None:
        out = list(executor.map(helpers.square, range(1000), chunksize=chunksize))
        assert out == [x * x for x in range(1000)]

    def test_map_10k(self, executor: forkfarm.Executor) -> None:
        out = list(executor.map(helpers.square, range(10_000), chunksize=100))
        assert out == [x * x for x in range(10_000)]

    def test_map_multiple_iterables(self, executor: forkfarm.Executor) -> None:
        out = list(executor.map(helpers.add, [1, 2, 3], [10, 20, 30, 40]))
        assert out == [11, 22, 33]

    def test_map_generator(self, executor: forkfarm.Executor) -> None:
        out = list(executor.map(helpers.square, (x for x in range(50))))
        assert out == [x * x for x in range(50)]

    def test_map_empty(self, executor: forkfarm.Executor) -> None:
        assert list(executor.map(helpers.square, [])) == []

    def test_map_exception_at_position(self, executor: forkfarm.Executor) -> None:
        it = executor.map(helpers.fail_on_odd, [0, 2, 3, 4])
        assert next(it) == 0
        assert next(it) == 2
        with pytest.raises(ValueError) as excinfo:
            next(it)
        assert excinfo.value.args == ("odd: 3",)

    def test_map_timeout(self, executor: forkfarm.Executor) -> None:
        it = executor.map(helpers.sleep_and_return, [2, 2], timeout=0.2)
        t0 = time.monotonic()
        with pytest.raises(cf.TimeoutError):
            list(it)
        assert time.monotonic() - t0 < 1.5

    def test_map_bad_chunksize(self, executor: forkfarm.Executor) -> None:
        with pytest.raises(ValueError):
            list(executor.map(helpers.square, range(10), chunksize=0))


# ==========================================================================
# wait / as_completed
# ==========================================================================


class TestWaitAndAsCompleted:
    def test_as_completed(self, executor: forkfarm.Executor) -> None:
        fs = {executor.submit(helpers.sleep_and_return, 0.05 * (i % 3), i): i for i in range(12)}
        seen = [f.result(0) for f in cf.as_completed(fs, timeout=T)]
        assert sorted(seen) == list(range(12))

    def test_as_completed_order(self, executor: forkfarm.Executor) -> None:
        slow = executor.submit(helpers.sleep_and_return, 1.5, "slow")
        fast = executor.submit(helpers.sleep_and_return, 0.0, "fast")
        order = [f.result(0) for f in cf.as_completed([slow, fast], timeout=T)]
        assert order == ["fast", "slow"]

    def test_wait_all_completed(self, executor: forkfarm.Executor) -> None:
        fs = [executor.submit(helpers.square, i) for i in range(10)]
        done, not_done = cf.wait(fs, timeout=T)
        assert done == set(fs) and not not_done
        assert sorted(f.result(0) for f in done) == sorted(i * i for i in range(10))

    def test_wait_first_completed(self, executor: forkfarm.Executor) -> None:
        slow = executor.submit(helpers.sleep_and_return, 3, "slow")
        fast = executor.submit(helpers.sleep_and_return, 0.0, "fast")
        done, not_done = cf.wait([slow, fast], timeout=T, return_when=cf.FIRST_COMPLETED)
        assert fast in done
        assert slow in not_done

    def test_wait_first_exception(self, executor: forkfarm.Executor) -> None:
        slow = executor.submit(helpers.sleep_and_return, 3, "slow")
        bad = executor.submit(helpers.raise_value_error, "first")
        done, not_done = cf.wait([slow, bad], timeout=T, return_when=cf.FIRST_EXCEPTION)
        assert bad in done and slow in not_done
        assert isinstance(bad.exception(0), ValueError)

    def test_wait_timeout(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.sleep_and_return, 2, None)
        done, not_done = cf.wait([f], timeout=0.1)
        assert not done and not_done == {f}


# ==========================================================================
# Initializer, module state, max_tasks_per_child
# ==========================================================================


class TestInitializer:
    def test_initializer(self) -> None:
        with forkfarm.Executor(
            max_workers=2, initializer=helpers.set_worker_value, initargs=("init",)
        ) as ex:
            fs = [ex.submit(helpers.get_worker_value) for _ in range(10)]
            assert [f.result(T) for f in fs] == ["init"] * 10

    def test_initializer_runs_once_per_worker(self) -> None:
        with forkfarm.Executor(
            max_workers=2, initializer=helpers.set_worker_value, initargs=(0,)
        ) as ex:
            out = list(ex.map(helpers.get_init_calls_and_pid, range(30)))
        assert {calls for calls, _ in out} == {1}

    def test_non_callable_initializer(self) -> None:
        with pytest.raises(TypeError):
            forkfarm.Executor(max_workers=2, initializer=42)  # type: ignore[arg-type]

    def test_failing_initializer_does_not_hang(self) -> None:
        with forkfarm.Executor(max_workers=2, initializer=helpers.failing_initializer) as ex:
            # The pool may already be broken when submit() runs (then submit
            # raises, as ProcessPoolExecutor's does), or break while the task
            # waits: either way an error, never a hang.
            with pytest.raises(forkfarm.InitializerError) as excinfo:
                ex.submit(helpers.square, 2).result(timeout=10)
            assert not isinstance(excinfo.value, (TimeoutError, forkfarm.TimeoutError)), "hung"

    def test_module_state_at_creation(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(helpers, "MODULE_STATE", ["executor", 1])
        with forkfarm.Executor(max_workers=2) as ex:
            assert ex.submit(helpers.get_module_state).result(T) == ["executor", 1]

    @pytest.mark.parametrize("max_tasks", [1, 2])
    def test_max_tasks_per_child(self, max_tasks: int) -> None:
        with forkfarm.Executor(max_workers=2, max_tasks_per_child=max_tasks) as ex:
            out = [f.result(T) for f in [ex.submit(helpers.square_and_pid, i) for i in range(12)]]
        assert [sq for sq, _ in out] == [i * i for i in range(12)]
        assert len({pid for _, pid in out}) > 2


# ==========================================================================
# Shutdown and context manager
# ==========================================================================


class TestShutdown:
    def test_submit_after_shutdown(self) -> None:
        ex = forkfarm.Executor(max_workers=2)
        assert ex.submit(helpers.square, 2).result(T) == 4
        ex.shutdown()
        with pytest.raises(RuntimeError):
            ex.submit(helpers.square, 2)
        ex.shutdown()  # a second shutdown is harmless

    def test_map_after_shutdown(self) -> None:
        ex = forkfarm.Executor(max_workers=2)
        ex.shutdown(wait=True)
        with pytest.raises(RuntimeError):
            list(ex.map(helpers.square, [1, 2]))

    def test_shutdown_wait_finishes_work(self) -> None:
        ex = forkfarm.Executor(max_workers=2)
        fs = [ex.submit(helpers.sleep_and_return, 0.1, i) for i in range(8)]
        ex.shutdown(wait=True)
        assert all(f.done() for f in fs)
        assert [f.result(0) for f in fs] == list(range(8))

    def test_shutdown_no_wait(self) -> None:
        ex = forkfarm.Executor(max_workers=2)
        f = ex.submit(helpers.sleep_and_return, 2, "x")
        t0 = time.monotonic()
        ex.shutdown(wait=False)
        assert time.monotonic() - t0 < 1
        with pytest.raises(RuntimeError):
            ex.submit(helpers.square, 1)
        # Already-submitted work still completes.
        assert f.result(T) == "x"

    def test_shutdown_cancel_futures(self) -> None:
        ex = forkfarm.Executor(max_workers=2)
        fs = [ex.submit(helpers.sleep_and_return, 0.5, i) for i in range(60)]
        time.sleep(0.2)
        t0 = time.monotonic()
        ex.shutdown(wait=True, cancel_futures=True)
        assert time.monotonic() - t0 < 5
        cancelled = [f for f in fs if f.cancelled()]
        assert cancelled, "no pending future was cancelled"
        assert all(f.done() for f in fs)
        for i, f in enumerate(fs):
            if not f.cancelled():
                assert f.result(0) == i

    def test_context_manager(self) -> None:
        executor = forkfarm.Executor(max_workers=2)
        with executor as ex:
            assert ex is executor
            f = ex.submit(helpers.sleep_and_return, 0.3, "ok")
        # __exit__ waited for the work.
        assert f.done()
        assert f.result(0) == "ok"
        with pytest.raises(RuntimeError):
            ex.submit(helpers.square, 1)


# ==========================================================================
# Data round trips
# ==========================================================================


class TestRoundTrip:
    @pytest.mark.parametrize(
        "value",
        [None, True, 2**100, -3.75, "ünïcode ✓", b"\x00\xff", (1, [2, {"3": (4,)}]), {}],
        ids=repr,
    )
    def test_value(self, executor: forkfarm.Executor, value: Any) -> None:
        out = executor.submit(helpers.identity, value).result(T)
        assert out == value and type(out) is type(value)

    def test_large_bytes(self, executor: forkfarm.Executor) -> None:
        n = 10 * 1024 * 1024
        assert executor.submit(helpers.make_bytes, n).result(T) == helpers.make_bytes(n)
        data = helpers.make_bytes(n + 1)
        assert executor.submit(helpers.length, data).result(T) == n + 1


# ==========================================================================
# Worker death
# ==========================================================================


class TestWorkerDeath:
    @pytest.mark.timeout(30)
    def test_sigkill_fails_only_that_future(
        self, executor: forkfarm.Executor, tmp_path: Path
    ) -> None:
        pidfile = tmp_path / "pid"
        others_before = [executor.submit(helpers.sleep_and_return, 0.1, i) for i in range(4)]
        doomed = executor.submit(helpers.die_by_sigkill, str(pidfile))
        others_after = [executor.submit(helpers.sleep_and_return, 0.1, i) for i in range(4, 8)]
        with pytest.raises(forkfarm.WorkerLostError) as excinfo:
            doomed.result(20)
        err = excinfo.value
        assert isinstance(err, BrokenProcessPool)
        assert err.pid == int(pidfile.read_text())
        assert err.signal == signal.SIGKILL
        assert "SIGKILL" in str(err)
        assert [f.result(20) for f in others_before + others_after] == list(range(8))

    @pytest.mark.timeout(30)
    def test_executor_keeps_working_after_death(
        self, executor: forkfarm.Executor, tmp_path: Path
    ) -> None:
        with pytest.raises(forkfarm.WorkerLostError):
            executor.submit(helpers.die_by_sigkill).result(20)
        assert executor.submit(helpers.square, 5).result(20) == 25
        assert list(executor.map(helpers.square, range(20))) == [x * x for x in range(20)]
        # Both worker slots are alive again.
        fs = [executor.submit(helpers.rendezvous, str(tmp_path), 2, n) for n in ("a", "b")]
        assert len({f.result(20) for f in fs}) == 2

    @pytest.mark.timeout(30)
    def test_os_exit(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.exit_with_code, 42)
        with pytest.raises(forkfarm.WorkerLostError) as excinfo:
            f.result(20)
        assert excinfo.value.exitcode == 42
        assert excinfo.value.signal is None
        assert "42" in str(excinfo.value)
        assert executor.submit(helpers.add, 1, 1).result(20) == 2
