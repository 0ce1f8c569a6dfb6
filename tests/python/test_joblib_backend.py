"""The forkfarm joblib backend as joblib documents Parallel: every return_as,
the memmapping contract, nesting, timeouts, aborts, batching, thread caps,
verbose progress; checked against loky, joblib's default, where that is
cheap (issue 22)."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import forkfarm

np = pytest.importorskip("numpy")
joblib = pytest.importorskip("joblib")
import forkfarm.joblib  # noqa: E402  - registers the backend
from joblib import Parallel, delayed, parallel_config  # noqa: E402

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["forkfarm", "loky"]
MIB = 1 << 20


@pytest.fixture(autouse=True)
def stop_loky() -> Any:
    """loky's executor outlives a call, with threads here that would give
    later tests' pools the fork server: stopped after each test. loky's
    workers also copy multiprocessing's logger set-up, and fail to start
    when an earlier test left that logger half set up: it is put aside."""
    from multiprocessing import util

    saved = util._logger, util._log_to_stderr
    util._logger, util._log_to_stderr = None, False
    try:
        yield
    finally:
        util._logger, util._log_to_stderr = saved
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
        reusable_executor._executor = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            t.name == "QueueFeederThread" for t in threading.enumerate()
        ):
            time.sleep(0.02)


def square(x: int) -> int:
    return x * x


def square_after(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


def array_facts(x: Any) -> tuple[str, Any, bool, str | None]:
    """What a task sees of the array it was given."""
    return type(x).__name__, getattr(x, "mode", None), bool(x.flags.writeable), getattr(x, "filename", None)


def try_to_write(x: Any) -> str:
    try:
        x[0] = -1.0
    except ValueError as error:
        return f"refused: {error}"
    return "written"


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def sleep_writing_pid(seconds: float, directory: str) -> int:
    Path(directory, f"{os.getpid()}-{seconds}").write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def fail_at(i: int, directory: str) -> int:
    if i == 2:
        raise ValueError("task 2 failed on purpose")
    time.sleep(0.2)
    Path(directory, str(i)).write_text("ran")
    return i


def sigkill_self(x: Any, i: int) -> float:
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return float(x[0])


def nested_call(backend: str | None) -> tuple[int, list[int], list[str], str]:
    """A Parallel call made inside a worker, as nested code makes it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inner = Parallel(n_jobs=2, backend=backend)(delayed(pid_after)(0.0) for _ in range(4))
        active = type(joblib.parallel.get_active_backend()[0]).__name__
    return os.getpid(), inner, [str(w.message) for w in caught], active


def blas_threads(_: Any) -> int:
    from threadpoolctl import threadpool_info

    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts) if counts else -1


def memmap_folders(root: Path) -> list[Path]:
    return sorted(root.glob("joblib_memmapping_folder_*"))


# -- return_as --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_return_as(backend: str) -> None:
    with parallel_config(backend=backend, n_jobs=2):
        as_list = Parallel(return_as="list")(delayed(square)(i) for i in range(20))
        ordered = Parallel(return_as="generator")(delayed(square)(i) for i in range(20))
        assert not isinstance(ordered, list)
        assert as_list == list(ordered) == [i * i for i in range(20)]
        unordered = list(
            Parallel(return_as="generator_unordered")(
                delayed(square_after)(i, 0.5 if i == 0 else 0.0) for i in range(6)
            )
        )
    # The slow first task does not hold the others back.
    assert sorted(unordered) == [i * i for i in range(6)] and unordered[0] != 0


def test_a_generator_yields_before_the_call_ends() -> None:
    with parallel_config(backend="forkfarm", n_jobs=2):
        start = time.monotonic()
        results = Parallel(return_as="generator")(delayed(pid_after)(s) for s in [0.0, 4.0])
        next(results)
        first = time.monotonic() - start
        list(results)
    assert first < 3.0


# -- joblib's memmapping contract ---------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_arrays_arrive_as_read_only_memmaps(backend: str, tmp_path: Path) -> None:
    big = np.arange(2 * MIB // 8, dtype=np.float64)
    small = np.arange(1000, dtype=np.float64)
    with parallel_config(backend=backend, n_jobs=2, temp_folder=str(tmp_path)):
        facts = Parallel()(delayed(array_facts)(x) for x in [big, small])
        writes = Parallel()(delayed(try_to_write)(big) for _ in range(2))
        copy_mode = Parallel(mmap_mode="c")(delayed(array_facts)(big) for _ in range(2))
        off = Parallel(max_nbytes=None)(delayed(array_facts)(big) for _ in range(2))
    assert facts[0][:3] == ("memmap", "r", False)
    assert facts[1][:3] == ("ndarray", None, True)
    assert all(w.startswith("refused") for w in writes)
    assert copy_mode[0][:3] == ("memmap", "c", True)
    assert [f[:3] for f in off] == [("ndarray", None, True)] * 2
    assert big[0] == 0.0  # the caller's array is untouched
    # The call's folder is gone with it.
    assert memmap_folders(tmp_path) == []


def test_an_array_is_dumped_once_per_call(tmp_path: Path) -> None:
    big = np.ones(3 * MIB // 8)
    with parallel_config(backend="forkfarm", n_jobs=2, temp_folder=str(tmp_path)):
        facts = Parallel(batch_size=1)(delayed(array_facts)(big) for _ in range(12))
        other = Parallel(batch_size=1)(delayed(array_facts)(big) for _ in range(2))
    names = {f[3] for f in facts}
    assert len(names) == 1 and None not in names
    assert {f[3] for f in other}.isdisjoint(names)  # a new call dumps again
    assert memmap_folders(tmp_path) == []


def test_a_memmap_of_the_callers_travels_as_its_file(tmp_path: Path) -> None:
    path = tmp_path / "data.mmap"
    mine = np.memmap(path, dtype=np.float64, mode="w+", shape=(1000,))
    mine[:] = 7.0
    mine.flush()
    with parallel_config(backend="forkfarm", n_jobs=2):
        facts = Parallel()(delayed(array_facts)(mine[100:]) for _ in range(2))
    assert facts[0][0] == "memmap" and str(facts[0][3]) == str(path)


def test_a_sigkilled_worker_leaves_no_folder(tmp_path: Path) -> None:
    big = np.ones(2 * MIB // 8)
    with parallel_config(backend="forkfarm", n_jobs=2, temp_folder=str(tmp_path)):
        with pytest.raises(forkfarm.WorkerLostError):
            Parallel(batch_size=1)(delayed(sigkill_self)(big, i) for i in range(4))
        assert memmap_folders(tmp_path) == []
        # The backend goes on, with fresh workers.
        assert Parallel()(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]
    assert memmap_folders(tmp_path) == []


def test_a_killed_caller_leaves_no_folder(tmp_path: Path) -> None:
    # joblib's resource tracker, which outlives the caller, removes it.
    script = f"""
import os, signal, threading, time
import numpy as np
import forkfarm.joblib
from joblib import Parallel, delayed, parallel_config

def slow(x):
    time.sleep(30)
    return float(x[0])

def die():
    print(len(os.listdir({str(tmp_path)!r})), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

threading.Timer(1.5, die).start()
with parallel_config(backend="forkfarm", n_jobs=2, temp_folder={str(tmp_path)!r}):
    Parallel()(delayed(slow)(np.ones(1 << 18)) for _ in range(2))
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == b"1"  # the call's folder was there
    deadline = time.monotonic() + 20
    while memmap_folders(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert memmap_folders(tmp_path) == []


# -- nesting ----------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["forkfarm", "loky"])
def test_nested_loops_run_sequentially_with_joblibs_warning(inner: str) -> None:
    # The workers say they are daemonic, so joblib's own checks (the
    # backend's, and loky's) keep an inner call in the worker.
    expected = {"forkfarm": "forkfarm-backed", "loky": "Loky-backed"}[inner]
    with parallel_config(backend="forkfarm", n_jobs=2):
        named = Parallel()(delayed(nested_call)(inner) for _ in range(2))
    for outer, inner_pids, messages, _ in named:
        # No second pool: the inner tasks ran in the outer task's process.
        assert set(inner_pids) == {outer}
        assert any(expected in m and "setting n_jobs=1" in m for m in messages), messages


def test_nested_default_is_what_lokys_is() -> None:
    actives = set()
    for backend in BACKENDS:
        with parallel_config(backend=backend, n_jobs=2):
            actives |= {r[3] for r in Parallel()(delayed(nested_call)(None) for _ in range(2))}
    assert actives == {"ThreadingBackend"}


def test_a_worker_is_a_daemon_named_as_multiprocessings() -> None:
    def identity(_: Any) -> tuple[str, bool]:
        import multiprocessing

        me = multiprocessing.current_process()
        return me.name, me.daemon

    with parallel_config(backend="forkfarm", n_jobs=2):
        out = Parallel()(delayed(identity)(i) for i in range(2))
    assert all(daemon for _, daemon in out)
    assert all(name.startswith("ForkServerProcess-") for name, _ in out)


# -- timeout, aborts, the next call -----------------------------------------------


def test_a_timeout_replaces_the_worker_that_ran_over(tmp_path: Path) -> None:
    with parallel_config(backend="forkfarm", n_jobs=2):
        start = time.monotonic()
        with pytest.raises(Exception) as info:
            Parallel(timeout=2.0)(delayed(sleep_writing_pid)(s, str(tmp_path)) for s in [0.05, 30.0])
        assert "TimeoutError" in type(info.value).__name__
        assert time.monotonic() - start < 15
        slow = int(next(tmp_path.glob("*-30.0")).read_text())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(slow):
            time.sleep(0.05)
        assert not _alive(slow)
        assert Parallel()(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_an_error_aborts_the_call_and_the_next_works(tmp_path: Path) -> None:
    # (loky is left out: its killed executor's queue thread outlives the
    # test, which this suite counts as a leak.)
    with parallel_config(backend="forkfarm", n_jobs=2):
        with pytest.raises(ValueError, match="task 2 failed on purpose") as info:
            Parallel(batch_size=1, pre_dispatch="all")(delayed(fail_at)(i, str(tmp_path)) for i in range(40))
        ran = len(list(tmp_path.iterdir()))
        assert Parallel()(delayed(square)(i) for i in range(3)) == [0, 1, 4]
    # The remaining tasks were cancelled, not run.
    assert ran < 20
    # The worker's traceback comes with the error.
    assert "fail_at" in str(info.value.__cause__)


# -- batching, thread caps, progress ----------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_batching_grows_for_tiny_tasks(backend: str) -> None:
    with parallel_config(backend=backend, n_jobs=2):
        # Started workers: a first batch that waits for them looks long.
        Parallel()(delayed(square)(i) for i in range(4))
        parallel = Parallel(batch_size="auto", return_as="generator")
        results = parallel(delayed(square)(i) for i in range(20_000))
        seen = []
        grown = 1
        for value in results:
            seen.append(value)
            # Read while the call runs: its end resets the statistics.
            if len(seen) % 500 == 0:
                grown = max(grown, parallel._backend._effective_batch_size)
    assert seen == [i * i for i in range(20_000)]
    assert grown > 1


@pytest.mark.parametrize("threads", [1, 2])
def test_inner_max_num_threads_caps_blas(threads: int) -> None:
    pytest.importorskip("threadpoolctl")
    if blas_threads(None) == -1:
        pytest.skip("no BLAS library loaded")
    with parallel_config(backend="forkfarm", n_jobs=2, inner_max_num_threads=threads):
        counts = Parallel()(delayed(blas_threads)(i) for i in range(2))
    assert set(counts) == {threads}


def test_verbose_prints_progress(capfd: pytest.CaptureFixture[str]) -> None:
    with parallel_config(backend="forkfarm", n_jobs=2):
        Parallel(verbose=10)(delayed(square)(i) for i in range(4))
    err = capfd.readouterr().err
    assert "Using backend ForkfarmBackend with 2 concurrent workers" in err
    assert "Done   4 out of   4" in err or "Done 4 out of 4" in err.replace("  ", " ")


# -- reuse ----------------------------------------------------------------------------


def test_workers_survive_between_calls_and_a_new_configuration_gets_fresh_ones() -> None:
    with parallel_config(backend="forkfarm"):
        first = set(Parallel(n_jobs=2)(delayed(pid_after)(0.05) for _ in range(6)))
        second = set(Parallel(n_jobs=2)(delayed(pid_after)(0.05) for _ in range(6)))
    with parallel_config(backend="forkfarm", inner_max_num_threads=1):
        capped = set(Parallel(n_jobs=2)(delayed(pid_after)(0.05) for _ in range(6)))
    assert first & second
    assert capped.isdisjoint(first | second)


def test_unknown_options_are_named() -> None:
    with pytest.raises(TypeError, match="unexpected options: colour"):
        with parallel_config(backend="forkfarm", n_jobs=2, colour="blue"):
            Parallel()(delayed(square)(i) for i in range(2))


# -- scikit-learn ------------------------------------------------------------------


def test_grid_search_scores_match_a_serial_run() -> None:
    sklearn = pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    assert sklearn
    X, y = make_classification(n_samples=300, n_features=10, random_state=0)
    grid = {"C": [0.1, 1.0, 10.0]}
    serial = GridSearchCV(LogisticRegression(max_iter=500), grid, cv=3, n_jobs=1).fit(X, y)
    with parallel_config(backend="forkfarm"):
        parallel = GridSearchCV(LogisticRegression(max_iter=500), grid, cv=3, n_jobs=2).fit(X, y)
    for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
        np.testing.assert_allclose(parallel.cv_results_[key], serial.cv_results_[key])
    assert parallel.best_params_ == serial.best_params_
