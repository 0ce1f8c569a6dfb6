"""Shared fixtures for the forkfarm tests.

Task functions live in ``helpers.py`` next to this file. Workers get tasks as
by-reference pickles (``helpers.square``), which resolve only if the test
process imported that module under the top-level name ``helpers``, so this
directory goes on ``sys.path`` before any test module is imported.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import forkfarm  # noqa: E402  (needs sys.path set up first)
from forkfarm import _forkserver  # noqa: E402

# How long a test waits for child processes to go away after it ends.
CHILD_EXIT_GRACE = 10.0


def _children() -> dict[int, str]:
    """Pids (and a short description) of this process's direct children."""
    me = os.getpid()
    found: dict[int, str] = {}
    proc = Path("/proc")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Format: "pid (comm) state ppid ..."; comm may contain spaces/parens.
        head, _, rest = stat.rpartition(")")
        fields = rest.split()
        if len(fields) < 2 or int(fields[1]) != me:
            continue
        comm = head.partition("(")[2]
        found[int(entry.name)] = f"{comm} state={fields[0]}"
    return found


def _resource_trackers() -> set[int]:
    """The pids of the resource trackers this process started: joblib's
    (its memmapping starts it) and multiprocessing's (loky's semaphores
    start it). Each lives as long as this process, by design."""
    pids = set()
    for name in ("joblib.externals.loky.backend.resource_tracker", "multiprocessing.resource_tracker"):
        tracker = getattr(sys.modules.get(name), "_resource_tracker", None)
        pid = getattr(tracker, "_pid", None)
        if isinstance(pid, int):
            pids.add(pid)
    return pids


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """Fail a test that leaves child processes (or unreaped zombies) behind."""
    if not Path("/proc/self/stat").exists():
        yield
        return
    before = set(_children())
    yield
    # The fork server is kept for later pools, by design.
    server = _forkserver._server._process
    if server is not None:
        before.add(server.pid)
    # So are the resource trackers (joblib's removes the temporary folders
    # of its memmapping if this process dies).
    before.update(_resource_trackers())
    deadline = time.monotonic() + CHILD_EXIT_GRACE
    leaked: dict[int, str] = {}
    while True:
        leaked = {pid: d for pid, d in _children().items() if pid not in before}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"child processes outlived the test: {leaked}"


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a Python thread running: a parent with
    threads gives its later pools the fork server, so a leaked thread would
    change what every later test runs on."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + CHILD_EXIT_GRACE
    while True:
        leaked = [
            t for t in threading.enumerate() if t not in before and not isinstance(t, threading._DummyThread)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads outlived the test: {[t.name for t in leaked]}"


@pytest.fixture
def pool() -> Iterator[forkfarm.Pool]:
    """A two-worker pool that is terminated and joined after the test."""
    p = forkfarm.Pool(processes=2)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


@pytest.fixture
def executor() -> Iterator[forkfarm.Executor]:
    """A two-worker executor that is shut down after the test."""
    ex = forkfarm.Executor(max_workers=2)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
