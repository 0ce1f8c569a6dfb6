"""Pools and executors started inside a forkfarm worker, after the parent
used pools of its own (issue 22, fork safety of what runs in a worker).

A worker forked from a parent inherits the parent's module globals: loky's
reusable executor (whose manager thread does not exist in the fork), a
multiprocessing Queue's feeder thread state, forkfarm's own reusable
executor. Inside a worker, a pool must work, or fail at once as it does in
a fresh multiprocessing pool worker (a daemonic process may not have
children: AssertionError), never hang.

Each case runs in a fresh interpreter (``subprocess``), so that what the
parent used first is under the test's control and no state leaks between
tests; every inner wait has a timeout, and the script's process group is
checked to be gone (no worker, resource tracker or fork server left).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import psutil
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# How long a case's script may run, and how long its processes may take to
# go away once it has exited.
SCRIPT_TIMEOUT = 50.0
GONE_TIMEOUT = 10.0

# A pool made inside a worker that fails must fail at once, not after the
# inner timeout (fork_safety_tasks.INNER_TIMEOUT, 20 s).
PROMPT = 10.0

PRELUDE = """
import json, os, sys, time
import multiprocessing, concurrent.futures
import forkfarm
import fork_safety_tasks as T

def outer(kind, *args, fn=None):
    fn = fn or T.inside
    start = time.monotonic()
    if kind == "fork_pool":
        with forkfarm.get_context("fork").Pool(2) as pool:
            value = pool.apply_async(fn, args).get(timeout=40)
    elif kind == "fork_executor":
        with forkfarm.Executor(2, mp_context="fork") as executor:
            value = executor.submit(fn, *args).result(timeout=40)
    elif kind == "default_pool":
        with forkfarm.Pool(2) as pool:
            value = pool.apply_async(fn, args).get(timeout=40)
    elif kind == "mp_fork_pool":
        with multiprocessing.get_context("fork").Pool(1) as pool:
            value = pool.apply_async(fn, args).get(timeout=40)
    else:
        raise ValueError(kind)
    return value, time.monotonic() - start

def use_loky():
    from joblib.externals.loky import get_reusable_executor
    return get_reusable_executor(max_workers=2).submit(T.square, 3).result(timeout=30)

def stop_loky():
    from joblib.externals.loky import get_reusable_executor
    get_reusable_executor(max_workers=2).shutdown(wait=True)

def report(**results):
    print("RESULT " + json.dumps(results), flush=True)
"""


def _session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def run_case(body: str) -> dict[str, Any]:
    """Runs PRELUDE and ``body`` in a fresh interpreter, in a session of
    its own; returns what it reported. Fails if it hangs, or leaves a
    process behind."""
    script = PRELUDE + textwrap.dedent(body)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the script hung (killed after {SCRIPT_TIMEOUT} s)\n{out}\n{err[-3000:]}")
    finally:
        deadline = time.monotonic() + GONE_TIMEOUT
        left = _session_processes(proc.pid)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = _session_processes(proc.pid)
        for leftover in left:
            leftover.kill()
    assert not left, f"processes left behind: {[p.pid for p in left]}"
    assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{out}\n{err[-3000:]}"
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result:\n{out}\n{err[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


OUTERS = ["fork_pool", "fork_executor", "default_pool"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("outer_kind", OUTERS)
def test_loky_inside_a_worker_after_the_parent_used_loky(outer_kind: str) -> None:
    # Before: the fork's worker got the parent's reusable executor from
    # loky's module globals; its manager thread does not exist there, so
    # the submitted call never finished (the inner 20 s timeout fired).
    result = run_case(
        f"""
        # A fresh multiprocessing worker (made before loky was used): what
        # loky does there is what it must do in ours.
        fresh, _ = outer("mp_fork_pool", "loky", 4)
        daemonic, _ = outer({outer_kind!r}, None, fn=T.daemon_flag)
        before = use_loky()
        inside, took = outer({outer_kind!r}, "loky", 4)
        after = use_loky()  # the parent's executor was left alone
        stop_loky()
        report(fresh=fresh, daemonic=daemonic, before=before, inside=inside, took=took, after=after)
        """
    )
    assert result["before"] == 9 and result["after"] == 9
    assert result["daemonic"] is True
    assert result["fresh"][:2] == ["error", "AssertionError"]
    assert "daemonic processes are not allowed to have children" in result["fresh"][2]
    assert result["inside"] == result["fresh"]
    assert result["took"] < PROMPT


@pytest.mark.timeout(60)
@pytest.mark.parametrize("outer_kind", OUTERS)
def test_stdlib_pools_inside_a_worker_after_the_parent_used_them(outer_kind: str) -> None:
    result = run_case(
        f"""
        fresh = {{k: outer("mp_fork_pool", k, 4)[0] for k in ("process_pool_executor", "mp_pool")}}
        with concurrent.futures.ProcessPoolExecutor(2) as ppe:
            assert ppe.submit(T.square, 3).result(timeout=30) == 9
            with multiprocessing.get_context("fork").Pool(2) as mpp:
                assert mpp.apply_async(T.square, (3,)).get(timeout=30) == 9
                inside = {{k: outer({outer_kind!r}, k, 4) for k in ("process_pool_executor", "mp_pool")}}
        report(fresh=fresh, inside=inside)
        """
    )
    for kind in ("process_pool_executor", "mp_pool"):
        value, took = result["inside"][kind]
        assert result["fresh"][kind][:2] == ["error", "AssertionError"], kind
        assert value == result["fresh"][kind], kind
        assert took < PROMPT, kind


@pytest.mark.timeout(60)
@pytest.mark.parametrize("outer_kind", OUTERS)
def test_forkfarm_inside_a_worker_after_the_parent_used_everything(outer_kind: str) -> None:
    # Before: forkfarm.get_reusable_executor in a fork's worker handed out
    # the parent's executor, whose every call raised "the pool belongs to
    # the process that created it, not to this fork of it".
    result = run_case(
        f"""
        with forkfarm.get_context("fork").Pool(2) as pool:
            assert pool.apply(T.square, (3,)) == 9
        with forkfarm.get_context("forkserver").Pool(2) as pool:
            assert pool.apply(T.square, (3,)) == 9
        reusable = forkfarm.get_reusable_executor(max_workers=2)
        assert reusable.submit(T.square, 3).result(timeout=30) == 9
        assert use_loky() == 9
        kinds = ("forkfarm_pool", "forkfarm_fork_pool", "forkfarm_executor", "forkfarm_reusable")
        inside = {{k: outer({outer_kind!r}, k, 4)[0] for k in kinds}}
        after = reusable.submit(T.square, 5).result(timeout=30)
        reusable.shutdown(wait=True)
        stop_loky()
        report(inside=inside, after=after)
        """
    )
    assert result["after"] == 25
    assert result["inside"] == {
        "forkfarm_pool": ["ok", 14],
        "forkfarm_fork_pool": ["ok", 14],
        "forkfarm_executor": ["ok", 16],
        "forkfarm_reusable": ["ok", 16],
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("outer_kind", ["fork_pool", "fork_executor"])
def test_an_inherited_queue_the_parent_used_works_in_a_worker(outer_kind: str) -> None:
    # Before: the worker's copy of the Queue kept the parent's feeder
    # thread state (multiprocessing's register_after_fork callbacks were not
    # run), so what the task put was never sent.
    result = run_case(
        f"""
        T.make_queue()
        sent, _ = outer({outer_kind!r}, 7, fn=T.put_to_inherited_queue)
        try:
            got = T.QUEUE.get(timeout=10)
        except Exception as exc:
            got = type(exc).__name__
        report(sent=sent, got=got)
        """
    )
    assert result == {"sent": "sent", "got": 7}


@pytest.mark.timeout(60)
def test_fork_pools_while_parent_threads_hold_locks() -> None:
    # Threads of the parent keep taking logging's locks, a library's lock
    # and malloc's while fork pools start: the workers' start-up and tasks
    # that log and allocate must not deadlock. The default pool takes the
    # fork server then, whose workers did not inherit the held lock.
    result = run_case(
        """
        busy = T.Busy()
        sums = []
        for _ in range(6):
            with forkfarm.get_context("fork").Pool(2) as pool:
                sums.append(sum(pool.map_async(T.log_and_allocate, range(20)).get(timeout=20)))
            with forkfarm.Executor(2, mp_context="fork") as executor:
                sums.append(sum(executor.map(T.log_and_allocate, range(20), timeout=20)))
        with forkfarm.Pool(2) as pool:
            default = pool.apply_async(T.worker_and_library_lock).get(timeout=20)
        busy.close()
        report(sums=sums, default=default)
        """
    )
    assert result["sums"] == [sum(n * n for n in range(20))] * 12
    name, taken = result["default"]
    assert name.startswith("ForkServerPoolWorker-")
    assert taken is True
