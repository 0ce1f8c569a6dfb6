"""forkfarm across MPI ranks (issue 8): ``mpiexec -n 3 python -m
forkfarm.mpi script.py`` runs the script on rank 0 and its pools' tasks on
the other ranks, on loopback. Skipped where Open MPI or mpi4py is missing;
``make test`` installs both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec")
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(MPIEXEC is None, reason="mpiexec (Debian's openmpi-bin) is not installed"),
]

HERE = Path(__file__).resolve().parent
# Root may run it; more ranks than cores; loopback only. TCP rather than
# Open MPI's shared-memory transport, whose /dev/shm files an aborted job
# can leave behind (seen under ASan); forkfarm's own shared memory is in
# memfds either way.
FLAGS = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo"]


def mpiexec(ranks: int, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    assert MPIEXEC is not None
    env = {**os.environ, "OMPI_MCA_oob_tcp_if_include": "lo"}
    # Under `make test-python-asan` the sanitizers are preloaded into the
    # ranks only: Open MPI's own mpiexec has a use-after-free of its own
    # when a rank dies (its pmix log thread), which ASan would report as
    # ours.
    preload = env.pop("LD_PRELOAD", None)
    flags = [*FLAGS, "-x", f"LD_PRELOAD={preload}"] if preload else FLAGS
    return subprocess.run(
        [MPIEXEC, *flags, "-n", str(ranks), sys.executable, "-m", "forkfarm.mpi", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=HERE,
        env=env,
    )


def test_a_script_farms_to_every_other_rank() -> None:
    done = mpiexec(3, "mpi_farm_script.py", "one", "two")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "method mpi 2",
        "ranks [1, 2]",
        "classes True [0, 1, 4, 9, 16, 25]",
        "lambda [1, 2, 3, 4, 5]",
        f"arrays [{float(sum(range(1 << 20)))}, {2.0 * sum(range(1 << 20))}]",
        "imap [1, 2, 3]",
        "starmap [8, 9]",
        "error ValueError True",
        "executor 1024 [5, 6]",
        "local fork 7",
        "argv ['one', 'two']",
    ]


@pytest.fixture(autouse=True)
def no_leftover_shared_memory() -> Any:
    """Open MPI's shared-memory transport keeps files in /dev/shm while a
    job runs: none may stay after it, even after an abort."""
    before = set(os.listdir("/dev/shm"))
    yield
    # After an abort, Open MPI removes them a moment after mpiexec returns.
    deadline = time.monotonic() + 15
    while set(os.listdir("/dev/shm")) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(os.listdir("/dev/shm")) - before == set()


@pytest.mark.parametrize("mode", [[], ["--hybrid", "--workers", "1"]], ids=["ranks", "hybrid"])
def test_a_shared_array_goes_to_each_rank_once(mode: list[str]) -> None:
    done = mpiexec(3, *mode, "mpi_shared_script.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "sum True",
        "shared on arrival True",
        "workers 2",
        "once True",
        "tasks 16 16 0",
    ]


def test_hybrid_ranks_run_a_local_pool() -> None:
    script = textwrap.dedent(
        """
        import os, time, forkfarm
        with forkfarm.Pool() as pool:
            # Each task takes 50 ms, so that a worker still starting on a
            # loaded machine is not left without one.
            found = pool.map(lambda _: (time.sleep(0.05), os.getppid(), os.getpid())[1:], range(40), chunksize=1)
        parents = {parent for parent, _ in found}
        print(len({pid for _, pid in found}), len(parents))
        """
    )
    done = mpiexec(3, "--hybrid", "--workers", "2", "-c", script)
    assert done.returncode == 0, done.stderr
    # Two ranks, each with a zygote of two workers: four workers.
    assert done.stdout.split() == ["4", "2"]


def test_module_and_command_forms() -> None:
    done = mpiexec(2, "-c", "import forkfarm; p = forkfarm.Pool(); print(p.map(abs, [-1, -2])); p.close(); p.join()")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2]"
    done = mpiexec(2, "-m", "mpi_farm_script")
    assert done.returncode == 0, done.stderr
    assert "ranks [1]" in done.stdout


def test_an_exception_on_rank_0_ends_the_job() -> None:
    done = mpiexec(3, "-c", "import forkfarm; p = forkfarm.Pool(); p.map(abs, [1]); raise SystemExit('boom')")
    assert done.returncode != 0
    assert "boom" in done.stderr


@pytest.mark.parametrize(
    ("death", "named"),
    [
        ("pool.map(os._exit, [3], chunksize=1)", "non-zero exit code"),
        ("pool.apply(os.kill, (os.getpid(), 9))", "exited on signal 9"),
    ],
    ids=["exit", "sigkill"],
)
def test_a_dead_rank_ends_the_job_instead_of_hanging(death: str, named: str) -> None:
    """What Open MPI does by default: a rank that dies takes the whole job
    down, and mpiexec names it; rank 0 never waits for it."""
    script = f"import os, forkfarm\nwith forkfarm.Pool() as pool:\n    {death}\n"
    done = mpiexec(3, "-c", script, timeout=60)
    assert done.returncode != 0
    assert named in done.stdout + done.stderr


def test_the_example_runs_with_the_readme_command() -> None:
    example = str(HERE.parents[1] / "examples" / "mpi_farm.py")
    for mode in ([], ["--hybrid"]):
        done = mpiexec(3, *mode, example)
        assert done.returncode == 0, done.stderr
        assert "matches serial: True" in done.stdout
        assert done.stdout.count("32.0 MiB sent to it") == 2  # the image, once per rank


def test_one_rank_is_not_enough() -> None:
    done = mpiexec(1, "-c", "import forkfarm; forkfarm.Pool()")
    assert done.returncode != 0
    assert "at least 2 ranks" in done.stderr


def test_usage() -> None:
    done = subprocess.run([sys.executable, "-m", "forkfarm.mpi"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "usage: mpiexec" in done.stderr


def test_a_crash_in_a_hybrid_rank_fails_its_task_alone() -> None:
    script = textwrap.dedent(
        """
        import os, signal, forkfarm
        with forkfarm.Pool() as pool:
            try:
                pool.map(lambda _: os.kill(os.getpid(), signal.SIGKILL), [1], chunksize=1)
            except forkfarm.WorkerLostError as error:
                print("lost", error.signal)
            print("then", pool.apply(abs, (-3,)))
            try:
                pool.apply(abs, (forkfarm.Lock(),))
            except RuntimeError as error:
                print("lock refused", "inheritance" in str(error))
        """
    )
    done = mpiexec(2, "--hybrid", "--workers", "1", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["lost 9", "then 3", "lock refused True"]


def test_a_task_carries_its_arguments_as_they_were_when_submitted() -> None:
    # Rank 0's encoder writes each call once, at submission, in the wire's
    # form; a large buffer is copied then, since the MPI thread sends it
    # later: a write after submit is not seen by the task.
    script = textwrap.dedent(
        """
        import numpy as np, forkfarm
        a = np.ones(200_000)
        with forkfarm.Pool() as pool:
            results = [pool.apply_async(np.sum, (a,)) for _ in range(4)]
            a[:] = 0
            print([float(r.get()) for r in results], [float(x) for x in pool.map(np.sum, [a, a + 2], chunksize=1)])
        """
    )
    done = mpiexec(2, "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[200000.0, 200000.0, 200000.0, 200000.0] [0.0, 400000.0]"
