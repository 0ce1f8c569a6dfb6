"""Worker reuse across pools (issue 18): ``Pool(reuse=...)`` parks a closed
pool's workers for the next compatible pool, and
``forkfarm.get_reusable_executor`` hands out one executor while its
arguments stay the same."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import forkfarm
import helpers
from forkfarm import _reuse

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def empty_lot() -> Iterator[None]:
    """Each test starts and ends with no parked pool."""
    _reuse.release_all()
    yield
    _reuse.release_all()


def _worker_pids(pool: forkfarm.Pool) -> set[int]:
    return {worker.pid for worker in pool._pool}


def _parked_pool(processes: int = 2, **options: object) -> set[int]:
    """Makes a reusable pool, runs a map on it and closes it: its workers'
    pids, now parked."""
    pool = forkfarm.Pool(processes, reuse=options.pop("reuse", True), **options)  # type: ignore[arg-type]
    pool.map(helpers.square, range(8))
    pids = _worker_pids(pool)
    pool.close()
    pool.join()
    assert pool._pool == []
    return pids


def _running(pid: int) -> bool:
    """True while pid is a live process; it may vanish between any two
    calls, so a lookup that fails counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(pids: set[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_running(pid) for pid in pids):
            return True
        time.sleep(0.02)
    return False


def _zygote_of(pid: int) -> int:
    return psutil.Process(pid).ppid()


# -- adoption -------------------------------------------------------------------


def test_the_next_pool_adopts_the_parked_workers() -> None:
    parked = _parked_pool()
    assert _reuse.parked_count() == 1
    zygote = _zygote_of(next(iter(parked)))
    with forkfarm.Pool(2, reuse=True) as pool:
        assert pool._engine.adopted
        # The first result comes from a parked worker: nothing was forked.
        assert pool.apply(helpers.getpid) in parked
        assert _worker_pids(pool) == parked
        assert {_zygote_of(pid) for pid in _worker_pids(pool)} == {zygote}
        assert sorted(pool.map(helpers.square, range(10))) == [x * x for x in range(10)]
    # Leaving the with block parked them once more.
    assert _reuse.parked_count() == 1
    with forkfarm.Pool(2, reuse=True) as pool:
        assert _worker_pids(pool) == parked


def test_a_pool_without_reuse_neither_parks_nor_adopts() -> None:
    parked = _parked_pool()
    pool = forkfarm.Pool(2, context="forkserver")
    try:
        assert not pool._engine.adopted
        assert _worker_pids(pool).isdisjoint(parked)
    finally:
        pool.close()
        pool.join()
    assert _reuse.parked_count() == 1  # still the first one's


def test_terminate_does_not_park() -> None:
    pool = forkfarm.Pool(2, reuse=True)
    pool.map(helpers.square, range(4))
    pids = _worker_pids(pool)
    pool.terminate()
    pool.join()
    assert _reuse.parked_count() == 0
    assert _gone(pids, 5)


def test_a_pool_closed_with_tasks_left_is_not_parked() -> None:
    pool = forkfarm.Pool(1, reuse=True)
    result = pool.apply_async(helpers.sleep_and_return, (0.3, 7))
    pool.close()
    assert result.get(timeout=10) == 7
    pool.join()
    assert _reuse.parked_count() == 0


# -- what is compatible ---------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"initializer": helpers.set_worker_value, "initargs": (1,)}, {"initializer": helpers.set_worker_value_pair, "initargs": (1, 2)}),
        ({"initializer": helpers.set_worker_value, "initargs": (1,)}, {"initializer": helpers.set_worker_value, "initargs": (2,)}),
        ({}, {"initializer": helpers.set_worker_value, "initargs": (1,)}),
        ({}, {"maxtasksperchild": 5}),
        ({}, {"max_memory_per_child": 1 << 30}),
        ({}, {"timeout": 30}),
        ({}, {"inner_threads": 1}),
        ({}, {"processes": 3}),
    ],
    ids=["initializer", "initargs", "an initializer added", "maxtasksperchild", "memory", "timeout", "inner_threads", "size"],
)
def test_no_reuse_when_what_makes_a_worker_changed(first: dict[str, object], second: dict[str, object]) -> None:
    first = {"processes": 2, **first}
    second = {"processes": 2, **second}
    parked = _parked_pool(**first)
    with forkfarm.Pool(reuse=True, **second) as pool:  # type: ignore[arg-type]
        assert not pool._engine.adopted
        assert _worker_pids(pool).isdisjoint(parked)
        if second.get("initializer") is helpers.set_worker_value:
            assert pool.apply(helpers.get_worker_value) == second["initargs"][0]  # type: ignore[index]


def test_the_same_initializer_and_arguments_are_reused() -> None:
    parked = _parked_pool(initializer=helpers.set_worker_value, initargs=(["a", 1],))
    with forkfarm.Pool(2, reuse=True, initializer=helpers.set_worker_value, initargs=(["a", 1],)) as pool:
        assert pool._engine.adopted
        assert pool.apply(helpers.get_worker_value) == ["a", 1]
        assert _worker_pids(pool) == parked


def test_arrays_among_the_arguments_compare_by_content() -> None:
    np = pytest.importorskip("numpy")
    parked = _parked_pool(initializer=helpers.set_worker_value, initargs=(np.arange(5),))
    # Equal arrays (== would be an array, not an answer): reused.
    with forkfarm.Pool(2, reuse=True, initializer=helpers.set_worker_value, initargs=(np.arange(5),)) as pool:
        assert pool._engine.adopted and _worker_pids(pool) == parked
    # Another array: not.
    with forkfarm.Pool(2, reuse=True, initializer=helpers.set_worker_value, initargs=(np.arange(6),)) as pool:
        assert not pool._engine.adopted
        assert list(pool.apply(helpers.get_worker_value)) == list(range(6))


def test_no_reuse_when_sys_path_changed(tmp_path: Path) -> None:
    parked = _parked_pool()
    sys.path.append(str(tmp_path))
    try:
        with forkfarm.Pool(2, reuse=True) as pool:
            assert not pool._engine.adopted
            assert _worker_pids(pool).isdisjoint(parked)
    finally:
        sys.path.remove(str(tmp_path))


def test_no_reuse_when_the_working_directory_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parked = _parked_pool()
    monkeypatch.chdir(tmp_path)
    with forkfarm.Pool(2, reuse=True) as pool:
        assert not pool._engine.adopted
        assert _worker_pids(pool).isdisjoint(parked)


def test_fork_pools_are_not_reused() -> None:
    with pytest.raises(ValueError, match="fork pool cannot be reused"):
        forkfarm.Pool(2, reuse=True, context="fork")
    with pytest.raises(ValueError, match="fork pool cannot be reused"):
        forkfarm.Pool(2, reuse=True, context=forkfarm.get_context("fork"))
    forkfarm.set_start_method("fork", force=True)
    try:
        with pytest.raises(ValueError, match="fork pool cannot be reused"):
            forkfarm.Pool(2, reuse=True)
    finally:
        forkfarm.set_start_method(None, force=True)
    # A reused pool takes the fork server when no method is set.
    with forkfarm.Pool(1, reuse=True) as pool:
        assert pool.start_method == "forkserver"


def test_compatible_compares_every_field() -> None:
    assert _reuse.compatible.__doc__
    from forkfarm import _backend, _node

    settings = _backend.Settings(2, None, (), None, None, 0, None, "auto", None, None, "PoolWorker", False)
    key = _reuse.reuse_key("forkserver", settings)
    assert key is not None
    assert _reuse.compatible(key, _reuse.reuse_key("forkserver", settings))  # type: ignore[arg-type]
    assert _reuse.reuse_key("fork", settings) is None
    for field in key._fields:
        if field in ("method",):
            continue
        other = key._replace(**{field: ("something else",)})
        assert not _reuse.compatible(key, other), field
    assert not _reuse.compatible(key, key._replace(method="fork"))
    # Unpicklable arguments: no key, no reuse.
    import threading

    assert _reuse.reuse_key("forkserver", settings._replace(initargs=(threading.Lock(),))) is None
    assert _node is not None


def test_a_broken_pool_is_not_parked() -> None:
    pool = forkfarm.Pool(1, reuse=True, initializer=helpers.failing_initializer)
    with pytest.raises(forkfarm.InitializerError):
        pool.apply(helpers.square, (2,))
    pool.close()
    pool.join()
    assert _reuse.parked_count() == 0


# -- the grace period and the end -------------------------------------------------


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _shm() -> set[str]:
    """This process's entries of /dev/shm (other programs on the machine
    make theirs meanwhile)."""
    return {name for name in os.listdir("/dev/shm") if "forkfarm" in name or str(os.getpid()) in name}


def test_the_grace_period_ends_with_nothing_left() -> None:
    with forkfarm.Pool(1, reuse=True):  # the fork server runs from here on
        pass
    _reuse.release_all()
    time.sleep(0.2)
    fds, shm = _fds(), _shm()
    parked = _parked_pool(reuse=0.5)
    zygote = _zygote_of(next(iter(parked)))
    assert _reuse.parked_count() == 1
    time.sleep(0.2)
    assert all(psutil.pid_exists(pid) for pid in parked | {zygote})  # still waiting
    assert _gone(parked | {zygote}, 5)
    # Past its grace period the pool is no one's to adopt.
    with forkfarm.Pool(2, reuse=True) as pool:
        assert not pool._engine.adopted
        assert _worker_pids(pool).isdisjoint(parked)
    _reuse.release_all()
    assert _gone({zygote}, 5)
    deadline = time.monotonic() + 5
    while _fds() - fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _fds() - fds == set()
    assert _shm() - shm == set()


def test_an_adopted_pool_does_not_expire_under_its_user() -> None:
    _parked_pool(reuse=0.3)
    with forkfarm.Pool(2, reuse=0.3) as pool:
        assert pool._engine.adopted
        time.sleep(1.0)  # more than its former grace period
        assert pool.map(helpers.square, range(6)) == [x * x for x in range(6)]


def test_a_worker_killed_while_parked_is_not_handed_out() -> None:
    parked = _parked_pool()
    victim = min(parked)
    os.kill(victim, signal.SIGKILL)
    assert _gone({victim}, 5)
    with forkfarm.Pool(2, reuse=True) as pool:
        assert pool._engine.adopted
        assert sorted(pool.map(helpers.square, range(20))) == [x * x for x in range(20)]
        pids = _worker_pids(pool)
        assert victim not in pids
        assert len(pids) == 2 and pids & parked == parked - {victim}


def test_exit_with_parked_workers_leaves_none(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, psutil
        sys.path.insert(0, {str(HERE)!r})
        import forkfarm, helpers
        pool = forkfarm.Pool(2, reuse=600)
        pool.map(helpers.square, range(4))
        pids = [w.pid for w in pool._pool]
        pool.close(); pool.join()
        zygote = psutil.Process(pids[0]).ppid()
        print(" ".join(map(str, pids + [zygote])), flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    pids = {int(pid) for pid in done.stdout.split()}
    assert len(pids) == 3
    assert _gone(pids, 5)


# -- get_reusable_executor -------------------------------------------------------


@pytest.fixture()
def reusable() -> Iterator[None]:
    yield
    executor = forkfarm.get_reusable_executor(1)
    executor.shutdown(wait=True)


def test_the_reusable_executor_is_returned_again(reusable: None) -> None:
    first = forkfarm.get_reusable_executor(2)
    pids = set(first.map(helpers.getpid, range(8)))
    second = forkfarm.get_reusable_executor(2)
    assert second is first
    assert set(second.map(helpers.getpid, range(8))) <= set(first._processes) | pids
    assert first.start_method == "forkserver"


def test_the_reusable_executor_after_shutdown_is_a_new_one(reusable: None) -> None:
    first = forkfarm.get_reusable_executor(2)
    assert first.submit(helpers.square, 3).result() == 9
    first.shutdown(wait=True)
    second = forkfarm.get_reusable_executor(2)
    assert second is not first
    assert second.submit(helpers.square, 4).result() == 16


def test_the_reusable_executor_resizes(reusable: None) -> None:
    first = forkfarm.get_reusable_executor(2)
    assert first.submit(helpers.square, 3).result() == 9
    second = forkfarm.get_reusable_executor(3)
    assert second is not first and second._max_workers == 3
    assert first._shutdown_requested
    assert list(second.map(helpers.square, range(5))) == [0, 1, 4, 9, 16]


def test_the_reusable_executor_with_other_arguments(reusable: None) -> None:
    first = forkfarm.get_reusable_executor(2, initializer=helpers.set_worker_value, initargs=(1,))
    assert first.submit(helpers.get_worker_value).result() == 1
    assert forkfarm.get_reusable_executor(2, initializer=helpers.set_worker_value, initargs=(1,)) is first
    second = forkfarm.get_reusable_executor(2, initializer=helpers.set_worker_value, initargs=(2,))
    assert second is not first
    assert second.submit(helpers.get_worker_value).result() == 2
    # reuse=True keeps it whatever the arguments; reuse=False never does.
    assert forkfarm.get_reusable_executor(2, reuse=True) is second
    third = forkfarm.get_reusable_executor(2, reuse=False, initializer=helpers.set_worker_value, initargs=(2,))
    assert third is not second
    env = forkfarm.get_reusable_executor(2, env={"FORKFARM_REUSE_TEST": "yes"})
    assert env.submit(os.getenv, "FORKFARM_REUSE_TEST").result() == "yes"


def test_the_reusable_executor_refuses_fork(reusable: None) -> None:
    with pytest.raises(ValueError, match="fork"):
        forkfarm.get_reusable_executor(2, context="fork")
    with pytest.raises(ValueError, match="fork"):
        forkfarm.get_reusable_executor(2, mp_context=forkfarm.get_context("fork"))


def test_idle_workers_of_the_reusable_executor_exit_and_come_back(reusable: None) -> None:
    executor = forkfarm.get_reusable_executor(2, timeout=0.3)
    pids = set(executor.map(helpers.getpid, range(4)))
    assert _gone(pids, 5)
    assert executor._core.worker_pids() == []
    assert forkfarm.get_reusable_executor(2, timeout=0.3) is executor
    again = executor.submit(helpers.getpid).result()
    assert again not in pids


# -- joblib --------------------------------------------------------------------


def test_repeated_joblib_calls_keep_their_workers() -> None:
    joblib = pytest.importorskip("joblib")
    import forkfarm.joblib  # noqa: F401 - registers the backend

    with joblib.parallel_config(backend="forkfarm"):
        first = set(joblib.Parallel(n_jobs=2)(joblib.delayed(helpers.getpid)(i) for i in range(8)))
        second = set(joblib.Parallel(n_jobs=2)(joblib.delayed(helpers.getpid)(i) for i in range(8)))
    assert first & second  # the second call ran on workers of the first
    # They are the reusable executor's, alive between the calls.
    current = forkfarm._reusable._reusable
    assert current is not None and not current[0]._shutdown_requested
    assert second <= {worker.pid for worker in current[0]._processes.values()}
