"""FAULTS.md rows 18 and 19, in a child Python process the test controls:
the parent SIGKILLed (its pool made by the main thread or another one), and
Ctrl-C during a map."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import helpers

pytestmark = pytest.mark.timeout(60)

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = textwrap.dedent(
    """
    import os, sys, threading, time
    sys.path.insert(0, {here!r})
    import forkfarm, helpers

    def start():
        pool = forkfarm.Pool(2)
        pool.map(helpers.square, range(10))
        deadline = time.monotonic() + 20
        while len(pool._core.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # both workers up (slow under a sanitizer)
        pids = list(pool._core.worker_pids())
        print("pids", *pids, flush=True)
        return pool

    mode = sys.argv[1]
    if mode == "thread":
        holder = []
        thread = threading.Thread(target=lambda: holder.append(start()))
        thread.start()
        thread.join()
        time.sleep(60)
    elif mode == "main":
        pool = start()
        time.sleep(60)
    else:  # ctrl-c
        with forkfarm.Pool(2) as pool:
            pool.map(helpers.square, range(10))
            print("pids", *pool._core.worker_pids(), flush=True)
            started = time.monotonic()
            try:
                pool.map(helpers.sleep_and_return, [30.0] * 4, chunksize=1)
            except KeyboardInterrupt:
                print("interrupted", time.monotonic() - started, flush=True)
                raise
    """
)


def _spawn(mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(here=HERE), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("pids"), (line, child.stderr.read() if child.stderr else "")
    return child, [int(p) for p in line.split()[1:]]


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [pid for pid in pids if helpers.alive(pid)]
        if not left:
            return []
        time.sleep(0.02)
    return [pid for pid in pids if helpers.alive(pid)]


@pytest.mark.parametrize("mode", ["main", "thread"])
def test_parent_sigkilled(mode: str) -> None:
    """Row 18: workers (and the zygote) exit within 2 s."""
    child, pids = _spawn(mode)
    try:
        assert len(pids) == 2 and all(helpers.alive(pid) for pid in pids)
        child.kill()
        child.wait(10)
        assert _wait_gone(pids, 2.0) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_ctrl_c_during_map() -> None:
    """Row 19: KeyboardInterrupt within 1 s, and no worker left."""
    child, pids = _spawn("ctrl-c")
    try:
        time.sleep(0.3)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
        assert "KeyboardInterrupt" in err
        line = next(line for line in out.splitlines() if line.startswith("interrupted"))
        assert time.monotonic() - sent < 5.0
        assert float(line.split()[1]) < 0.3 + 1.0
        assert _wait_gone(pids, 2.0) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
