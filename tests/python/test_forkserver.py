"""The forkserver start method (issue 7): chosen when the parent has other
threads, or asked for (``"spawn"`` is its alias). Zygotes come from a fresh
interpreter that is kept for later pools, and __main__'s functions and
classes travel by value."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import forkfarm
import helpers
from forkfarm import _forkserver

pytestmark = pytest.mark.timeout(90)

# Set after import, in this process only: a forked worker sees it, a worker
# of the fork server (a fresh interpreter) does not.
MARK = "parent"


def read_mark() -> str:
    return MARK


def parent_pid() -> int:
    return os.getppid()


@pytest.fixture(scope="module")
def pool() -> Iterator[forkfarm.Pool]:
    with forkfarm.get_context("forkserver").Pool(2) as p:
        yield p


def test_workers_come_from_a_fresh_interpreter(pool: forkfarm.Pool) -> None:
    global MARK
    MARK = "changed after import"
    try:
        assert pool.start_method == "forkserver"
        assert pool.apply(read_mark) == "parent"  # the module as imported afresh
        server = _forkserver._server._process
        assert server is not None
        zygotes = {pool.apply(parent_pid) for _ in range(4)}
        assert os.getpid() not in zygotes
        for zygote in zygotes:
            assert helpers.parent_of(zygote) == server.pid
        with forkfarm.get_context("fork").Pool(1) as forked:
            assert forked.apply(read_mark) == "changed after import"
    finally:
        MARK = "parent"


def test_the_server_is_kept_for_later_pools(pool: forkfarm.Pool) -> None:
    server = _forkserver._server._process
    assert server is not None
    for _ in range(3):
        with forkfarm.Pool(1, context="spawn") as other:
            assert other.apply(helpers.square, (7,)) == 49
    assert _forkserver._server._process is server and server.poll() is None


def test_chosen_when_the_parent_has_threads() -> None:
    assert not forkfarm.context.threaded()
    with forkfarm.Pool(1) as forked:
        assert forked.start_method == "fork"
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert forkfarm.context.threaded()
        with forkfarm.Pool(2) as p:
            assert p.start_method == "forkserver"
            assert p.map(helpers.square, range(10)) == [x * x for x in range(10)]
        with forkfarm.Executor(1) as executor:
            assert executor.start_method == "forkserver"
            assert executor.submit(helpers.square, 5).result(timeout=30) == 25
        # What the caller asked for is what it gets.
        with forkfarm.get_context("fork").Pool(1) as forked:
            assert forked.start_method == "fork"
    finally:
        stop.set()
        thread.join()


def test_a_pool_made_in_another_thread() -> None:
    results: list[Any] = []

    def make() -> None:
        with forkfarm.Pool(1) as p:
            results.append((p.start_method, p.apply(helpers.square, (3,))))

    thread = threading.Thread(target=make)
    thread.start()
    thread.join(60)
    assert results == [("forkserver", 9)]


def test_contexts_and_start_methods() -> None:
    assert forkfarm.get_all_start_methods() == ["fork", "forkserver", "spawn"]
    assert forkfarm.get_context("spawn").get_start_method() == "spawn"
    with pytest.raises(ValueError, match="cannot find context for 'thread'"):
        forkfarm.get_context("thread")
    with pytest.raises(ValueError, match="cannot find context for 'thread'"):
        forkfarm.Pool(1, context="thread")
    with forkfarm.Executor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        assert executor.start_method == "forkserver"
        assert executor.submit(helpers.add, 2, 3).result(timeout=30) == 5
    forkfarm.set_start_method("forkserver", force=True)
    try:
        assert forkfarm.get_start_method() == "forkserver"
        with forkfarm.Pool(1) as p:
            assert p.start_method == "forkserver"
    finally:
        forkfarm.set_start_method(None, force=True)
    assert forkfarm.get_start_method(allow_none=True) is None


def square_into(index: int) -> int:
    lock, array = STATE
    with lock:
        array[index] = index * index
    return int(array.sum())


STATE: tuple[Any, Any] = (None, None)


def keep_state(lock: Any, array: Any) -> None:
    global STATE
    STATE = (lock, array)


def test_initargs_carry_locks_and_shared_arrays() -> None:
    np = pytest.importorskip("numpy")
    lock = forkfarm.Lock()
    array = forkfarm.zeros(8, dtype=np.int64)
    with forkfarm.get_context("forkserver").Pool(2, keep_state, (lock, array)) as p:
        p.map(square_into, range(8), chunksize=1)
    assert array.tolist() == [i * i for i in range(8)]
    assert lock.acquire(timeout=1)
    lock.release()


def test_a_worker_crash_fails_its_task_alone(pool: forkfarm.Pool) -> None:
    with pytest.raises(forkfarm.WorkerLostError) as caught:
        pool.apply(helpers.die_by_sigkill)
    assert caught.value.signal == signal.SIGKILL
    assert pool.map(helpers.square, range(4)) == [0, 1, 4, 9]


def test_an_initializer_that_fails_names_why() -> None:
    with pytest.raises(forkfarm.InitializerError, match="ZeroDivisionError"):
        with forkfarm.get_context("forkserver").Pool(1, helpers.divide, (1, 0)) as p:
            p.apply(helpers.square, (2,))


def _run(script: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=os.path.dirname(__file__),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_main_travels_by_value_from_a_threaded_script() -> None:
    """A script with a running thread and no __main__ guard: its functions
    and classes reach the workers by name, its lambdas and what it defines
    later by value, and results of its classes come back as its classes."""
    out = _run(
        """
        import threading
        import forkfarm

        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()

        SCALE = 3

        class Point:
            def __init__(self, x):
                self.x = x

        def scaled(point):
            return Point(point.x * SCALE)

        with forkfarm.Pool(2) as pool:
            print(pool.start_method)
            result = pool.map(scaled, [Point(i) for i in range(4)])
            print(all(type(p) is Point for p in result), [p.x for p in result])
            print(pool.map(lambda x: x + SCALE, range(3)))

            def later(x):
                return [x] * SCALE

            print(pool.apply(later, (1,)))
        stop.set()
        """
    )
    assert out.splitlines() == ["forkserver", "True [0, 3, 6, 9]", "[3, 4, 5]", "[1, 1, 1]"]


def test_what_cannot_travel_is_named() -> None:
    out = _run(
        """
        import threading
        import forkfarm

        GUARD = threading.Lock()

        def locked(x):
            with GUARD:
                return x

        with forkfarm.get_context("forkserver").Pool(1) as pool:
            print(pool.apply(len, ("ok",)))
            try:
                pool.apply(locked, (1,))
            except Exception as error:
                print(type(error).__name__, "lock" in str(error))
        """
    )
    assert out.splitlines() == ["2", "TypeError True"]


def test_nothing_outlives_a_killed_parent() -> None:
    """SIGKILL of the parent: the fork server, the zygote and the workers
    all go, through the ends of their sockets."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, sys, time, forkfarm
                from forkfarm import _forkserver
                pool = forkfarm.get_context("forkserver").Pool(2)
                zygote = pool.apply(os.getppid)
                while len(pool._core.worker_pids()) < 2:
                    time.sleep(0.01)
                workers = pool._core.worker_pids()
                print(_forkserver._server._process.pid, zygote, *workers, flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(__file__),
    )
    try:
        assert child.stdout is not None
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 4
        child.kill()
        child.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(helpers.alive(p) for p in pids):
            time.sleep(0.02)
        assert not [p for p in pids if helpers.alive(p)]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
