"""Tests for forkfarm.Executor, a concurrent.futures.Executor."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import itertools
import multiprocessing
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
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


def _busy_then_pid(_: Any) -> int:
    end = time.perf_counter() + 0.005
    while time.perf_counter() < end:
        pass
    return os.getpid()


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

    def test_longer_tasks_after_short_ones_are_shared(self) -> None:
        # The runtime queues several short tasks per worker; when the next
        # tasks turn out longer, one worker must not have taken them all.
        for _ in range(3):
            with forkfarm.Executor(2) as executor:
                list(executor.map(helpers.square, range(50)))
                pids = list(executor.map(_busy_then_pid, range(32)))
            counts = sorted(pids.count(pid) for pid in set(pids))
            assert len(counts) == 2 and counts[0] >= 8, counts

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


# ==========================================================================
# What ProcessPoolExecutor raises, and the internals its users read
# ==========================================================================


class TestLikeProcessPoolExecutor:
    @pytest.mark.timeout(60)
    def test_call_that_cannot_be_pickled_fails_its_future(self, executor: forkfarm.Executor) -> None:
        f = executor.submit(helpers.identity, helpers.PicklesBadly())
        with pytest.raises(pickle.PicklingError, match="refuses to be pickled"):
            f.result(T)
        assert executor.submit(helpers.square, 4).result(T) == 16

    @pytest.mark.parametrize("how, cause", [("raise", RuntimeError), ("sys.exit", SystemExit)])
    @pytest.mark.timeout(60)
    def test_arguments_that_fail_to_load_break_the_call(
        self, executor: forkfarm.Executor, how: str, cause: type[BaseException]
    ) -> None:
        f = executor.submit(helpers.identity, helpers.LoadsBadly(how))
        with pytest.raises(BrokenProcessPool) as excinfo:
            f.result(T)
        assert not isinstance(excinfo.value, forkfarm.WorkerLostError)
        assert isinstance(excinfo.value.__cause__, cause)
        assert executor.submit(helpers.square, 4).result(T) == 16

    @pytest.mark.timeout(60)
    def test_result_that_fails_to_pickle_raises_its_own_error(self, executor: forkfarm.Executor) -> None:
        with pytest.raises(pickle.PicklingError, match="refuses to be pickled"):
            executor.submit(helpers.make_instance, helpers.PicklesBadly).result(T)
        with pytest.raises(SystemExit):
            executor.submit(helpers.make_instance, helpers.ExitsWhenPickled).result(T)
        assert executor.submit(helpers.square, 4).result(T) == 16

    @pytest.mark.timeout(60)
    def test_result_that_fails_to_unpickle_here_breaks_the_call(self, executor: forkfarm.Executor) -> None:
        with pytest.raises(BrokenProcessPool, match="refuses to load in the parent") as excinfo:
            executor.submit(helpers.make_result_that_loads_badly).result(T)
        assert isinstance(excinfo.value.__cause__, pickle.UnpicklingError)
        assert executor.submit(helpers.square, 4).result(T) == 16

    @pytest.mark.timeout(60)
    def test_remote_traceback_is_the_standard_class(self, executor: forkfarm.Executor) -> None:
        exc = executor.submit(helpers.raise_value_error, "tb").exception(T)
        assert isinstance(exc, ValueError)
        assert type(exc.__cause__) is _RemoteTraceback
        assert "raise_value_error" in exc.__cause__.tb

    @pytest.mark.timeout(60)
    def test_map_keeps_no_result_it_gave(self, executor: forkfarm.Executor) -> None:
        for chunksize in (1, 3):
            for obj in executor.map(helpers.make_plain, range(9), chunksize=chunksize):
                ref = weakref.ref(obj)
                del obj
                gc.collect()
                assert ref() is None

    @pytest.mark.timeout(60)
    def test_a_semaphore_method_can_be_the_call(self, executor: forkfarm.Executor) -> None:
        sem = forkfarm.Semaphore(0)
        fs = [executor.submit(sem.acquire) for _ in range(4)]
        for f in fs:
            assert not f.done()
        for _ in range(4):
            sem.release()
        assert [f.result(T) for f in fs] == [True] * 4
        assert sem.get_value() == 0

    @pytest.mark.parametrize("method", ["fork", "forkserver"])
    @pytest.mark.timeout(60)
    def test_workers_have_the_parent_authkey(self, method: str) -> None:
        with forkfarm.Executor(max_workers=1, mp_context=forkfarm.get_context(method)) as ex:
            assert ex.submit(helpers.authkey).result(T) == bytes(multiprocessing.current_process().authkey)

    @pytest.mark.timeout(60)
    def test_processes_are_the_workers(self) -> None:
        with forkfarm.Executor(max_workers=2, mp_context=forkfarm.get_context("fork")) as ex:
            procs = ex._processes
            assert len(procs) == 2
            assert all(p.pid == pid for pid, p in procs.items())
            assert ex._mp_context.get_start_method() == "fork"
            names = ex.map(helpers.process_name_and_pid, range(2), chunksize=1)
            assert sorted(p.name for p in procs.values()) == ["ForkProcess-1", "ForkProcess-2"]
            assert all(procs[pid].name == name for name, pid in names)
            victim = next(iter(procs.values()))
            assert victim.is_alive() and victim.exitcode is None
            victim.terminate()
            victim.join(T)
            assert not victim.is_alive()
            assert victim.exitcode == -signal.SIGTERM
            # Unlike ProcessPoolExecutor's, the executor replaces it and goes on.
            assert ex.submit(helpers.square, 3).result(T) == 9
            assert ex._broken is False
            assert victim.pid not in ex._processes
        for p in procs.values():
            p.join(T)
            if p is not victim:
                assert p.exitcode == 0

    @pytest.mark.timeout(60)
    def test_forkserver_workers_start_on_demand(self) -> None:
        with forkfarm.Executor(max_workers=4, mp_context=forkfarm.get_context("forkserver")) as ex:
            assert ex._processes == {}
            for _ in range(3):
                assert ex.submit(helpers.square, 2).result(T) == 4
            assert len(ex._processes) == 1  # an idle worker is used again
            fs = [ex.submit(helpers.sleep_and_return, 0.5, i) for i in range(3)]
            assert len(ex._processes) == 3
            fs += [ex.submit(helpers.sleep_and_return, 0.5, i) for i in range(3, 8)]
            assert len(ex._processes) == 4
            assert [f.result(T) for f in fs] == list(range(8))

    @pytest.mark.timeout(60)
    def test_broken_by_a_failing_initializer(self) -> None:
        with forkfarm.Executor(max_workers=1, initializer=helpers.failing_initializer) as ex:
            with pytest.raises(BrokenProcessPool):
                ex.submit(helpers.square, 1).result(T)
            assert ex._broken
            with pytest.raises(BrokenProcessPool):
                ex.submit(helpers.square, 1)

    @pytest.mark.timeout(60)
    def test_failing_initializer_is_logged_in_the_worker(self) -> None:
        log: forkfarm.Queue[Any] = forkfarm.Queue()
        with forkfarm.Executor(max_workers=1, initializer=helpers.log_to_queue_then_fail, initargs=(log,)) as ex:
            with pytest.raises(BrokenProcessPool):
                ex.submit(helpers.square, 1).result(T)
        record = log.get(timeout=T)
        assert record.getMessage().startswith("Exception in initializer:")
        assert "ValueError: this initializer fails" in record.getMessage()

    @pytest.mark.timeout(60)
    def test_shutdown_leaves_every_future_done(self) -> None:
        ex = forkfarm.Executor(max_workers=2)
        fs = [ex.submit(helpers.sleep_and_return, 0.05, i) for i in range(10)]
        ex.shutdown(wait=True)
        assert all(f.done() for f in fs)
        assert [f.result(0) for f in fs] == list(range(10))

    @pytest.mark.timeout(60)
    def test_cancel_futures_right_after_submit_runs_the_first_calls(self) -> None:
        ex = forkfarm.Executor(max_workers=2, mp_context=forkfarm.get_context("forkserver"))
        fs = [ex.submit(helpers.sleep_and_return, 0.05, i) for i in range(40)]
        ex.shutdown(wait=True, cancel_futures=True)
        ran = [f for f in fs if not f.cancelled()]
        assert ran and len(ran) < len(fs)
        assert all(f.result(0) == fs.index(f) for f in ran)

    @pytest.mark.timeout(60)
    def test_manager_stand_in_joins_after_shutdown(self) -> None:
        ex = forkfarm.Executor(max_workers=1)
        manager = ex._executor_manager_thread
        assert ex.submit(helpers.square, 2).result(T) == 4
        assert manager.is_alive()
        ex.shutdown(wait=False)
        manager.join(T)
        assert not manager.is_alive()


# ==========================================================================
# map(buffersize=): Python 3.14's, on every Python
# ==========================================================================


class TestMapBuffersize:
    @pytest.mark.timeout(60)
    def test_endless_input_gives_its_first_result_at_once(self, executor: forkfarm.Executor) -> None:
        pulled = itertools.count()

        def items() -> Iterator[int]:
            for i in range(3_000_000):
                next(pulled)
                yield i

        t0 = time.monotonic()
        results = executor.map(helpers.square, items(), buffersize=4)
        assert next(results) == 0
        assert time.monotonic() - t0 < 5
        assert next(pulled) == 5  # four ahead, and one more as the first was taken
        stats = executor.stats()
        assert stats.queued + stats.in_flight + stats.done + stats.failed <= 5
        results.close()  # what was submitted ahead is cancelled

    @pytest.mark.timeout(60)
    def test_never_more_than_buffersize_ahead(self, executor: forkfarm.Executor) -> None:
        results = executor.map(helpers.square, iter(range(40)), buffersize=3)
        for taken, value in enumerate(results, start=1):
            assert value == (taken - 1) ** 2
            stats = executor.stats()
            assert stats.queued + stats.in_flight + stats.done + stats.failed <= taken + 3

    @pytest.mark.parametrize("chunksize", [1, 7])
    @pytest.mark.timeout(60)
    def test_results_in_order(self, executor: forkfarm.Executor, chunksize: int) -> None:
        out = executor.map(helpers.add, iter(range(200)), range(200), buffersize=3, chunksize=chunksize)
        assert list(out) == [2 * x for x in range(200)]
        limited = executor.with_options(retries=1).map(helpers.square, range(20), buffersize=2)
        assert list(limited) == [x * x for x in range(20)]

    @pytest.mark.timeout(60)
    def test_bad_buffersize(self, executor: forkfarm.Executor) -> None:
        for bad in (0, -1):
            with pytest.raises(ValueError, match="buffersize"):
                executor.map(helpers.square, range(3), buffersize=bad)
        with pytest.raises(TypeError, match="buffersize"):
            executor.map(helpers.square, range(3), buffersize=1.5)  # type: ignore[arg-type]


# ==========================================================================
# terminate_workers() and kill_workers(): Python 3.14's, on every Python
# ==========================================================================


class TestStopWorkers:
    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("method, signum", [("terminate_workers", signal.SIGTERM), ("kill_workers", signal.SIGKILL)])
    def test_every_worker_is_signalled(self, method: str, signum: int) -> None:
        ex = forkfarm.Executor(max_workers=2)
        running = [ex.submit(helpers.sleep_and_return, 30, i) for i in range(2)]
        deadline = time.monotonic() + T
        while ex.stats().in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        queued = [ex.submit(helpers.square, i) for i in range(5)]
        workers = list(ex._processes.values())
        assert len(workers) == 2
        t0 = time.monotonic()
        getattr(ex, method)()
        for f in running:
            with pytest.raises(BrokenProcessPool) as excinfo:
                f.result(T)
            assert isinstance(excinfo.value, forkfarm.WorkerLostError)
            assert excinfo.value.signal == signum
        assert time.monotonic() - t0 < 10
        # Those behind a running call are cancelled as its worker's exit comes.
        cf.wait(queued, timeout=T)
        assert all(f.cancelled() for f in queued)
        for worker in workers:
            worker.join(T)
            assert worker.exitcode == -signum
        assert ex._broken
        with pytest.raises(BrokenProcessPool, match=method):
            ex.submit(helpers.square, 1)
        ex.shutdown(wait=True)
        assert ex._processes == {}

    @pytest.mark.timeout(60)
    def test_without_workers_it_only_shuts_down(self) -> None:
        ex = forkfarm.Executor(max_workers=2, mp_context=forkfarm.get_context("forkserver"))
        ex.terminate_workers()  # none started yet
        assert ex._broken is False
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(helpers.square, 1)
        ex.shutdown(wait=True)
        ex.kill_workers()  # after shutdown: nothing left to stop
        assert ex._broken is False


# ==========================================================================
# The lost worker's pid and exit code in the error: Python 3.15's
# ==========================================================================


class TestLostWorkerReport:
    @pytest.mark.timeout(30)
    def test_exit_code(self, executor: forkfarm.Executor, tmp_path: Path) -> None:
        pidfile = tmp_path / "pid"
        err = executor.submit(helpers.exit_with_code, 7, str(pidfile)).exception(T)
        assert isinstance(err, BrokenProcessPool)
        pid = int(pidfile.read_text())
        assert (err.pid, err.exitcode) == (pid, 7)
        assert type(err.__cause__) is _RemoteTraceback
        assert err.__cause__.tb == f"\n'''\nProcess {pid} terminated abruptly with exit code 7'''"

    @pytest.mark.timeout(30)
    def test_signal(self, executor: forkfarm.Executor, tmp_path: Path) -> None:
        pidfile = tmp_path / "pid"
        err = executor.submit(helpers.die_by_sigkill, str(pidfile)).exception(T)
        assert isinstance(err, forkfarm.WorkerLostError)
        pid = int(pidfile.read_text())
        assert (err.pid, err.exitcode) == (pid, -signal.SIGKILL)
        assert f"Process {pid} terminated abruptly with exit code -9" in str(err.__cause__)
