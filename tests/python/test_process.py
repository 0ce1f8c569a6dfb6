"""forkfarm.Process: forked through the runtime (its loop thread parked)
when the caller runs no other Python thread, made by the fork server when
it does, with multiprocessing's meaning either way: exit codes, signals,
sentinels, join timeouts, close, daemons, the parent process, and
forkfarm's shared objects as arguments."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import forkfarm
import forkfarm.connection
import helpers

pytestmark = pytest.mark.timeout(120)

# The Popen class behind each way a Process starts.
POPEN = {"fork": "ForkPopen", "forkserver": "ServerPopen"}
JOIN = 30.0


@contextlib.contextmanager
def another_thread(target: Callable[[threading.Event], None] | None = None) -> Iterator[None]:
    """A Python thread running beside the caller (waiting, or running
    target until told to stop): a Process then comes from the fork
    server."""
    stop = threading.Event()
    thread = threading.Thread(target=target or (lambda done: done.wait()), args=(stop,), name="bystander")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


@pytest.fixture(params=list(POPEN))
def way(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each way a Process starts: fork (no other thread) and the fork
    server (another thread runs)."""
    if request.param == "fork":
        yield "fork"
    else:
        with another_thread():
            yield "forkserver"


class Started:
    """The processes a test started: each is ended and gone after it."""

    def __init__(self) -> None:
        self.processes: list[tuple[Any, int]] = []

    def __call__(self, way: str | None = None, **kwargs: Any) -> Any:
        process = forkfarm.Process(**kwargs)
        process.start()
        assert process.pid is not None
        self.processes.append((process, process.pid))
        if way is not None:
            assert type(process._popen).__name__ == POPEN[way]
        return process

    def begin(self, process: Any) -> Any:
        """Starts a process made elsewhere (a subclass, a context's)."""
        process.start()
        self.processes.append((process, process.pid))
        return process

    def clean_up(self) -> None:
        for process, _pid in self.processes:
            with contextlib.suppress(ValueError):  # closed by the test
                if process.is_alive():
                    process.kill()
                process.join(JOIN)
        deadline = time.monotonic() + 10
        left = [pid for _, pid in self.processes if os.path.exists(f"/proc/{pid}")]
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [pid for pid in left if os.path.exists(f"/proc/{pid}")]
        assert not left, f"processes left behind (or not reaped): {left}"


@pytest.fixture
def started() -> Iterator[Started]:
    tracker = Started()
    try:
        yield tracker
    finally:
        tracker.clean_up()


def finished(process: Any) -> int:
    process.join(JOIN)
    assert not process.is_alive(), "the child did not finish in time"
    assert process.exitcode is not None
    return int(process.exitcode)


# -- which way -------------------------------------------------------------------


class TestWhichWay:
    def test_forks_without_threads_and_takes_the_fork_server_with_them(self, started: Started) -> None:
        q = forkfarm.Queue()
        forked = started("fork", target=helpers.describe_process, args=(q,))
        assert q.get(timeout=JOIN)["parent_pid"] == os.getpid()
        assert finished(forked) == 0
        with another_thread():
            served = started("forkserver", target=helpers.describe_process, args=(q,))
            seen = q.get(timeout=JOIN)
            # The fork server's child, whose parent process is still this one.
            assert seen["getpid"] == served.pid
            assert seen["parent_pid"] == os.getpid()
            assert finished(served) == 0
        # A process started from another thread is threaded too.
        box: list[Any] = []
        starter = threading.Thread(target=lambda: box.append(started(target=time.sleep, args=(0,))))
        starter.start()
        starter.join(JOIN)
        assert type(box[0]._popen).__name__ == "ServerPopen"
        assert finished(box[0]) == 0

    def test_a_start_method_decides(self, started: Started) -> None:
        assert forkfarm.get_context("forkserver").Process is not forkfarm.Process
        assert forkfarm.get_context().Process is forkfarm.Process
        served = started.begin(forkfarm.get_context("forkserver").Process(target=time.sleep, args=(0,)))
        assert type(served._popen).__name__ == "ServerPopen"
        assert finished(served) == 0
        forkfarm.set_start_method("spawn", force=True)
        try:
            assert type(started(target=time.sleep, args=(0,))._popen).__name__ == "ServerPopen"
        finally:
            forkfarm.set_start_method(None, force=True)
        with another_thread(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            forked = started.begin(forkfarm.get_context("fork").Process(target=time.sleep, args=(0,)))
            assert type(forked._popen).__name__ == "ForkPopen"
            assert finished(forked) == 0
        # The caller asked for fork with a thread running: CPython's warning,
        # on the Pythons that give it.
        multi_threaded = [w for w in caught if "multi-threaded" in str(w.message)]
        assert len(multi_threaded) == (1 if sys.version_info >= (3, 12) else 0)
        if multi_threaded:
            assert multi_threaded[0].category is DeprecationWarning
            assert multi_threaded[0].filename == __file__

    @pytest.mark.skipif(sys.version_info < (3, 12), reason="CPython warns of forks with threads from 3.12")
    def test_no_deprecation_warning_once_a_pool_runs(self, started: Started) -> None:
        """The pool's loop thread is forkfarm's and parked for the fork:
        starting a Process raises no DeprecationWarning, where
        multiprocessing's fork Process, in the same place, does."""
        with forkfarm.Pool(2) as pool:
            assert pool.apply(helpers.square, (4,)) == 16
            with warnings.catch_warnings(record=True) as ours:
                warnings.simplefilter("always")
                process = started("fork", target=time.sleep, args=(0,))
                assert finished(process) == 0
            assert [str(w.message) for w in ours] == []
            with warnings.catch_warnings(record=True) as theirs:
                warnings.simplefilter("always")
                control = multiprocessing.get_context("fork").Process(target=time.sleep, args=(0,))
                control.start()
                control.join(JOIN)
            assert control.exitcode == 0
            assert any("multi-threaded" in str(w.message) for w in theirs)
            assert pool.apply(helpers.square, (5,)) == 25


class TestCompletionCallbacks:
    """The runtime's callback thread runs Python code (a Pool's callbacks,
    a future's): a fork waits for the batch it runs to end, or, when it
    runs on, the fork server starts the child instead."""

    def test_a_fork_waits_for_the_running_callback(self, started: Started) -> None:
        running = threading.Event()
        with forkfarm.Pool(1) as pool:
            done = pool.apply_async(helpers.square, (3,), callback=helpers.hold_callback_lock(0.1, running))
            assert running.wait(JOIN)
            child = started("fork", target=helpers.take_callback_lock, args=(2.0,))
            assert finished(child) == 0
            assert done.get(JOIN) == 9

    def test_a_long_callback_sends_the_child_to_the_fork_server(
        self, started: Started, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from forkfarm import _process

        monkeypatch.setattr(_process, "FORK_CALLBACK_WAIT", 0.05)
        running = threading.Event()
        with forkfarm.Pool(1) as pool:
            done = pool.apply_async(helpers.square, (3,), callback=helpers.hold_callback_lock(1.0, running))
            assert running.wait(JOIN)
            child = started("forkserver", target=helpers.take_callback_lock, args=(2.0,))
            assert finished(child) == 0
            assert done.get(JOIN) == 9


# -- multiprocessing's meaning, either way --------------------------------------


class TestSemantics:
    def test_exit_codes(self, way: str, started: Started) -> None:
        assert finished(started(way, target=time.sleep, args=(0,))) == 0
        assert finished(started(way, target=helpers.call_sys_exit, args=(7,))) == 7
        assert finished(started(way, target=helpers.call_sys_exit, args=(None,))) == 0
        # An exception in the target: multiprocessing prints it and exits 1.
        assert finished(started(way, target=helpers.divide, args=(1, 0))) == 1

    def test_signals(self, way: str, started: Started) -> None:
        for stop, signum in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)):
            process = started(way, target=time.sleep, args=(60,))
            getattr(process, stop)()
            assert finished(process) == -signum
        outside = started(way, target=time.sleep, args=(60,))
        os.kill(outside.pid, signal.SIGKILL)
        assert finished(outside) == -signal.SIGKILL
        # Signals after the end are no error, as with multiprocessing.
        outside.terminate()
        outside.kill()
        ready = forkfarm.Event()
        interrupted = started(way, target=helpers.wait_for_interrupt, args=(ready,))
        assert ready.wait(JOIN)
        interrupted.interrupt()
        assert finished(interrupted) == 5

    def test_join_timeout_is_alive_and_active_children(self, way: str, started: Started) -> None:
        process = started(way, target=time.sleep, args=(60,))
        begun = time.monotonic()
        process.join(0.3)
        assert 0.3 <= time.monotonic() - begun < 2.0
        assert process.is_alive() and process.exitcode is None
        assert process in forkfarm.active_children()
        assert process in multiprocessing.active_children()
        process.kill()
        assert finished(process) == -signal.SIGKILL
        assert process not in forkfarm.active_children()

    def test_sentinel(self, way: str, started: Started) -> None:
        process = started(way, target=time.sleep, args=(0.3,))
        assert isinstance(process.sentinel, int)
        assert forkfarm.connection.wait([process.sentinel], timeout=0) == []
        assert multiprocessing.connection.wait([process.sentinel], timeout=0) == []
        assert forkfarm.connection.wait([process.sentinel], timeout=JOIN) == [process.sentinel]
        assert multiprocessing.connection.wait([process.sentinel], timeout=JOIN) == [process.sentinel]
        assert finished(process) == 0
        # With a pipe end among the objects, as forkfarm's wait mixes them.
        a, b = forkfarm.Pipe()
        other = started(way, target=time.sleep, args=(0.2,))
        assert forkfarm.connection.wait([a, other.sentinel], timeout=JOIN) == [other.sentinel]
        assert finished(other) == 0
        a.close()
        b.close()

    def test_close(self, way: str, started: Started) -> None:
        process = started(way, target=time.sleep, args=(60,))
        with pytest.raises(ValueError):
            process.close()
        process.terminate()
        assert finished(process) == -signal.SIGTERM
        sentinel = process.sentinel
        process.close()
        process.close()  # twice is fine
        for use in (process.is_alive, process.join, process.terminate, process.kill, process.interrupt):
            with pytest.raises(ValueError):
                use()
        with pytest.raises(ValueError):
            process.sentinel  # noqa: B018 - the property raises
        with pytest.raises(ValueError):
            process.exitcode  # noqa: B018
        # Its descriptors went with it.
        with pytest.raises(OSError):
            os.fstat(sentinel)

    def test_daemons_may_not_have_children(self, way: str, started: Started) -> None:
        q = forkfarm.Queue()
        daemon = started(way, target=helpers.start_a_child, args=(q,), daemon=True)
        assert daemon.daemon
        kind, detail = q.get(timeout=JOIN)
        assert (kind, detail) == ("refused", "daemonic processes are not allowed to have children")
        assert finished(daemon) == 0
        plain = started(way, target=helpers.start_a_child, args=(q,))
        assert q.get(timeout=JOIN) == ("started", 0)
        assert finished(plain) == 0

    def test_names_identity_and_parent(self, way: str, started: Started) -> None:
        q = forkfarm.Queue()
        process = started(way, target=helpers.describe_process, args=(q,))
        seen = q.get(timeout=JOIN)
        assert finished(process) == 0
        assert process.name.startswith("Process-")
        assert process.name == f"Process-{process._identity[0]}"
        assert seen["name"] == process.name
        assert seen["pid"] == seen["getpid"] == process.pid
        assert seen["authkey"] == bytes(process.authkey) == bytes(forkfarm.current_process().authkey)
        assert seen["daemon"] is False
        assert seen["parent_pid"] == os.getpid()
        assert seen["parent_name"] == forkfarm.current_process().name == "MainProcess"
        assert seen["parent_alive"] is True
        assert seen["parent_sentinel_ready"] is False
        assert seen["children"] == 0
        # multiprocessing's counter: the next one is numbered after it.
        named = started(way, target=time.sleep, args=(0,), name="named")
        assert named.name == "named"
        following = started(way, target=time.sleep, args=(0,))
        assert following._identity[0] == process._identity[0] + 2
        assert finished(named) == finished(following) == 0

    def test_shared_objects_as_arguments(self, way: str, started: Started) -> None:
        q = forkfarm.Queue()
        lock = forkfarm.Lock()
        event = forkfarm.Event()
        value = forkfarm.Value("i", 1)
        array = forkfarm.Array("d", [0.5, 0.0])
        ours, theirs = forkfarm.Pipe()
        process = started(way, target=helpers.use_shared, args=(q, lock, event, value, array, theirs))
        ours.send(21)
        assert ours.recv() == 42
        assert event.wait(JOIN)
        assert q.get(timeout=JOIN) == ("from", process.pid)
        assert finished(process) == 0
        assert value.value == 2
        assert array[:] == [10.5, 0.0]
        # The same lock: held here, the child cannot take it.
        with lock:
            blocked = started(way, target=helpers.take_shared_lock_in, args=(lock, 0.2, q))
            assert q.get(timeout=JOIN) is False
        assert finished(blocked) == 0
        # Arguments the caller dropped at once still reach the child.
        fresh = started(way, target=helpers.set_event, args=(forkfarm.Event(),))
        assert finished(fresh) == 0

    def test_shared_arrays_as_arguments(self, way: str, started: Started) -> None:
        np = pytest.importorskip("numpy")
        shared = forkfarm.zeros((4, 3))
        process = started(way, target=helpers.fill_rows, args=(shared, 1, 3, 7.0))
        assert finished(process) == 0
        expected = np.zeros((4, 3))
        expected[1:3] = 7.0
        assert np.array_equal(shared, expected)


class TestForkServerOnly:
    def test_what_cannot_pickle_fails_at_start(self, started: Started) -> None:
        with another_thread():
            process = forkfarm.Process(target=helpers.identity, args=(threading.Lock(),))
            with pytest.raises(TypeError, match="lock"):
                process.start()
            assert process._popen is None
            assert process not in forkfarm.active_children()
            # A lambda and a local function travel by value.
            q = forkfarm.Queue()
            by_value = started("forkserver", target=lambda queue: queue.put("lambda"), args=(q,))
            assert q.get(timeout=JOIN) == "lambda"
            assert finished(by_value) == 0

            def local(queue: Any, x: int) -> None:
                queue.put(x + 1)

            nested = started("forkserver", target=local, args=(q, 41))
            assert q.get(timeout=JOIN) == 42
            assert finished(nested) == 0

    def test_multiprocessing_connections_travel_as_descriptors(self, started: Started) -> None:
        """multiprocessing's own pipe ends travel as with its forkserver,
        also when the whole process object must go by value (a lambda among
        the arguments)."""
        theirs, mine = multiprocessing.Pipe()
        lock = forkfarm.Lock()
        with another_thread():
            process = started("forkserver", target=helpers.call_and_send, args=(mine, lambda: "by value", lock))
            assert theirs.poll(JOIN)
            assert theirs.recv() == "by value"
            assert finished(process) == 0
        theirs.close()
        mine.close()

    def test_many_segments_travel(self, started: Started) -> None:
        """More segments than one socket message carries descriptors for:
        each its own RawArray, each written by the child."""
        arrays = [forkfarm.RawArray("i", 1) for _ in range(600)]
        with another_thread():
            process = started("forkserver", target=helpers.number_each, args=(arrays,))
            assert finished(process) == 0
        assert [a[0] for a in arrays] == list(range(600))

    def test_a_killed_fork_server_loses_only_exit_codes(self, started: Started) -> None:
        """Children outlive a fork server that was killed; what they exit
        with is lost (255, as with multiprocessing's forkserver), and the
        next start starts another server."""
        from forkfarm import _forkserver

        with another_thread():
            orphan = started("forkserver", target=time.sleep, args=(60,))
            server = _forkserver._server._process
            assert server is not None
            server.kill()
            server.wait()
            assert orphan.is_alive()
            orphan.kill()  # through its pidfd, not its parent
            assert finished(orphan) == 255
            after = started("forkserver", target=helpers.call_sys_exit, args=(4,))
            assert finished(after) == 4
            assert _forkserver._server._process is not server

    def test_a_local_subclass_travels_by_value(self, started: Started) -> None:
        class Reporter(forkfarm.Process):
            def __init__(self, q: Any) -> None:
                super().__init__()
                self.q = q

            def run(self) -> None:
                self.q.put(("ran", type(self).__name__))

        q = forkfarm.Queue()
        with another_thread():
            reporter = started.begin(Reporter(q))
            assert type(reporter._popen).__name__ == "ServerPopen"
            assert q.get(timeout=JOIN) == ("ran", "Reporter")
            assert finished(reporter) == 0


# -- a threaded parent: nothing may deadlock ------------------------------------

CHILDREN = 200
AT_ONCE = 4


def _start_many(tmp_path: Path, started: Started) -> None:
    """CHILDREN processes, AT_ONCE at a time, each logging a line and
    allocating; each must end within JOIN seconds, with code 0."""
    log = tmp_path / "children.log"
    for first in range(0, CHILDREN, AT_ONCE):
        batch = [
            started("forkserver", target=helpers.log_and_allocate, args=(str(log), i))
            for i in range(first, min(first + AT_ONCE, CHILDREN))
        ]
        for process in batch:
            assert finished(process) == 0
            process.close()
    lines = log.read_text().splitlines()
    assert sorted(int(line.split()[1]) for line in lines) == list(range(CHILDREN))


def test_children_while_another_thread_holds_the_logging_lock(tmp_path: Path, started: Started) -> None:
    """A thread holds logging's module lock most of the time (and logs):
    a child forked from here could be born with the lock held; every one
    of 200 children logs and finishes."""
    held = [0]

    def hold(stop: threading.Event) -> None:
        quiet = logging.getLogger("forkfarm.tests.holder")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        while not stop.is_set():
            with logging._lock:  # type: ignore[attr-defined]
                quiet.warning("holding")
                held[0] += 1
                time.sleep(0.005)
            time.sleep(0.0002)

    with another_thread(hold):
        _start_many(tmp_path, started)
    assert held[0] > 10


def test_children_while_another_thread_allocates(tmp_path: Path, started: Started) -> None:
    """A thread allocates and frees without pause: every one of 200
    children allocates, logs and finishes."""
    rounds = [0]

    def churn(stop: threading.Event) -> None:
        while not stop.is_set():
            blocks = [bytearray(size) for size in (16, 256, 4096, 65536, 1 << 20)]
            del blocks
            rounds[0] += 1

    with another_thread(churn):
        _start_many(tmp_path, started)
    assert rounds[0] > 100


# -- scripts: __main__, and the parent's exit -----------------------------------

SCRIPT_HEAD = """
import json, os, sys, threading, time
import forkfarm

stop = threading.Event()
if sys.argv[1] == "forkserver":
    threading.Thread(target=stop.wait, daemon=True).start()
"""


def run_script(tmp_path: Path, body: str, way: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Runs body as a script (its __main__), which sees this directory's
    helpers, and returns what it printed last, as JSON."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_HEAD + textwrap.dedent(body))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(helpers.__file__).parent), *sys.path])
    env.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run(
        [sys.executable, str(script), way, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


MAIN_TARGETS = """
COUNT = 3


def work(q, lock, counter, x):
    with lock:
        counter.value += x * COUNT
    q.put(("work", x))


class Shouter(forkfarm.Process):
    def __init__(self, q):
        super().__init__()
        self.q = q

    def run(self):
        self.q.put(("shouter", type(self).__module__))


q = forkfarm.Queue()
lock = forkfarm.Lock()
counter = forkfarm.Value("i", 0)
procs = [
    forkfarm.Process(target=work, args=(q, lock, counter, 5)),
    Shouter(q),
    forkfarm.Process(target=lambda queue: queue.put(("lambda", COUNT)), args=(q,)),
]
for p in procs:
    p.start()
kinds = sorted(type(p._popen).__name__ for p in procs)
got = sorted(q.get(timeout=30) for _ in procs)
for p in procs:
    p.join(30)
stop.set()
print(json.dumps({
    "popen": kinds,
    "got": got,
    "counter": counter.value,
    "exitcodes": [p.exitcode for p in procs],
}))
"""


def test_main_functions_and_classes_under_the_fork_server(tmp_path: Path) -> None:
    """A script's own functions and classes (and a lambda) as targets: by
    value to the fork server's child, with forkfarm's queue, lock and
    value as handles."""
    out = run_script(tmp_path, MAIN_TARGETS, "forkserver")
    assert out["popen"] == ["ServerPopen"] * 3
    assert out["got"] == [["lambda", 3], ["shouter", "__main__"], ["work", 5]]
    assert out["counter"] == 15
    assert out["exitcodes"] == [0, 0, 0]


AT_EXIT = """
path = sys.argv[2]
daemon = forkfarm.Process(target=time.sleep, args=(60,), daemon=True)
daemon.start()
lingering = forkfarm.Process(target=__import__("helpers").sleep_then_mark, args=(0.5, path))
lingering.start()
print(json.dumps({"daemon": daemon.pid, "popen": type(daemon._popen).__name__}))
"""


@pytest.mark.parametrize("how", list(POPEN))
def test_at_exit_daemons_are_terminated_and_others_joined(tmp_path: Path, how: str) -> None:
    mark = tmp_path / "mark"
    out = run_script(tmp_path, AT_EXIT, how, str(mark))
    assert out["popen"] == POPEN[how]
    # The parent joined the other child before it exited.
    assert mark.read_text() == "done"
    deadline = time.monotonic() + 10
    while helpers.alive(out["daemon"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not helpers.alive(out["daemon"])


PARENT_DIES = """
path = sys.argv[2]
child = forkfarm.Process(target=__import__("helpers").wait_for_parent_then_mark, args=(path,))
child.start()
print(json.dumps({"child": child.pid, "popen": type(child._popen).__name__}), flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("how", list(POPEN))
def test_the_parent_sentinel_is_ready_when_the_parent_ends(tmp_path: Path, how: str) -> None:
    mark = tmp_path / "mark"
    out = run_script(tmp_path, PARENT_DIES, how, str(mark))
    assert out["popen"] == POPEN[how]
    deadline = time.monotonic() + 20
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.read_text() == "parent gone"
    while helpers.alive(out["child"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not helpers.alive(out["child"])
