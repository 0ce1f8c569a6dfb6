"""multiprocessing's observable behaviour of Process, the start methods and
the module's helpers, checked on both modules (the ``mp`` fixture)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)


def _report(q: Any) -> None:
    import multiprocessing

    me = multiprocessing.current_process()
    parent = multiprocessing.parent_process()
    q.put((me.name, me.pid == os.getpid(), parent.pid if parent else None))


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _exit_with(code: int) -> None:
    raise SystemExit(code)


class TestProcess:
    def test_lifecycle(self, mp: Any) -> None:
        q = mp.Queue()
        process = mp.Process(target=_report, args=(q,), name="reporter")
        assert process.pid is None and process.exitcode is None
        process.start()
        assert process.is_alive() or process.exitcode == 0
        name, pid_matches, parent_pid = q.get(timeout=10)
        process.join(10)
        assert (name, pid_matches, parent_pid) == ("reporter", True, os.getpid())
        assert process.exitcode == 0 and not process.is_alive()
        process.close()
        with pytest.raises(ValueError):
            process.is_alive()

    def test_exit_codes(self, mp: Any) -> None:
        exits = mp.Process(target=_exit_with, args=(7,))
        exits.start()
        exits.join(10)
        assert exits.exitcode == 7
        for stop, signum in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)):
            process = mp.Process(target=_sleep, args=(30,))
            process.start()
            getattr(process, stop)()
            process.join(10)
            assert process.exitcode == -signum

    def test_join_timeout(self, mp: Any) -> None:
        process = mp.Process(target=_sleep, args=(30,), daemon=True)
        process.start()
        started = time.monotonic()
        process.join(0.2)
        assert 0.2 <= time.monotonic() - started < 1.0
        assert process.is_alive() and process.daemon
        assert process in mp.active_children()
        process.kill()
        process.join(10)

    def test_sentinel_with_connection_wait(self, mp: Any) -> None:
        process = mp.Process(target=_sleep, args=(0.1,))
        process.start()
        ready = mp.connection.wait([process.sentinel], timeout=10)
        assert ready == [process.sentinel]
        process.join(10)

    def test_subclass_run(self, mp: Any) -> None:
        class Worker(mp.Process):  # type: ignore[name-defined,misc]
            def __init__(self, q: Any) -> None:
                super().__init__()
                self.q = q

            def run(self) -> None:
                self.q.put("ran")

        q = mp.Queue()
        worker = Worker(q)
        worker.start()
        assert q.get(timeout=10) == "ran"
        worker.join(10)
        assert worker.exitcode == 0


class TestContexts:
    def test_fork_context(self, mp: Any) -> None:
        ctx = mp.get_context("fork")
        assert ctx.get_start_method() == "fork"
        assert "fork" in mp.get_all_start_methods()
        with ctx.Pool(1) as pool:
            assert pool.map(abs, [-1, -2]) == [1, 2]

    def test_unknown_method(self, mp: Any) -> None:
        with pytest.raises(ValueError):
            mp.get_context("no-such-method")

    def test_helpers(self, mp: Any) -> None:
        assert mp.cpu_count() >= 1
        assert mp.current_process().name == "MainProcess"
        mp.freeze_support()
