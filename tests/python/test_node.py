"""A good citizen of an HPC node (issue 9): the default worker count is
the CPUs this process may use, each worker caps its BLAS and OpenMP
threads, and ``pin=`` gives the workers disjoint CPUs that replacements
inherit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import forkfarm
import helpers
from forkfarm import _node

pytestmark = pytest.mark.timeout(120)

CPUS = sorted(os.sched_getaffinity(0))


def worker_threads(_: Any = None) -> tuple[dict[str, str], list[int], list[int]]:
    """What a worker sees: the thread variables, the BLAS pools' thread
    counts (threadpoolctl), and its CPUs."""
    import numpy  # noqa: F401 - loads the BLAS, if the parent did not
    from threadpoolctl import threadpool_info

    variables = {name: os.environ.get(name, "") for name in _node.THREAD_VARIABLES}
    blas = [int(info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"]
    return variables, blas, sorted(os.sched_getaffinity(0))


def sleepy_cpus(_: Any = None) -> list[int]:
    time.sleep(0.5)
    return sorted(os.sched_getaffinity(0))


def _run(script: str, cpus: set[int] | None = None) -> str:
    def restrict() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=Path(__file__).parent,
        preexec_fn=restrict,  # noqa: PLW1509 - the child sets only its affinity
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class TestAvailableCpus:
    def test_the_affinity_counts(self) -> None:
        assert forkfarm.available_cpus() <= len(CPUS)
        assert forkfarm.cpu_count() == os.cpu_count()

    def test_a_narrower_affinity_narrows_the_default_pool(self) -> None:
        """As taskset or Slurm's --cpus-per-task leave it."""
        out = _run(
            """
            import os, forkfarm
            with forkfarm.Pool() as pool, forkfarm.Executor() as executor:
                print(forkfarm.available_cpus(), forkfarm.cpu_count() == os.cpu_count(),
                      pool._processes, executor._max_workers)
            """,
            cpus={CPUS[0]},
        )
        assert out.split() == ["1", "True", "1", "1"]

    @pytest.mark.parametrize("version", ["v2", "v1"])
    def test_a_cgroup_quota_bounds_it(self, tmp_path: Path, version: str) -> None:
        """cgroup v2's cpu.max and v1's cfs quota, along the cgroup's path
        (a fake tree: the real one is tried below, where permitted)."""
        root = tmp_path / "cgroup"
        proc = tmp_path / "cgroup-of-self"
        if version == "v2":
            (root / "job" / "step").mkdir(parents=True)
            (root / "job" / "cpu.max").write_text("250000 100000\n")
            (root / "job" / "step" / "cpu.max").write_text("max 100000\n")
            proc.write_text("0::/job/step\n")
        else:
            (root / "cpu" / "job").mkdir(parents=True)
            (root / "cpu" / "job" / "cpu.cfs_quota_us").write_text("150000\n")
            (root / "cpu" / "job" / "cpu.cfs_period_us").write_text("100000\n")
            proc.write_text("3:cpu,cpuacct:/job\n")
        quota = _node._cgroup_quota(root, proc)
        assert quota == (2.5 if version == "v2" else 1.5)
        (proc.write_text("0::/\n"))
        assert _node._cgroup_quota(root, proc) is None

    def test_a_real_cgroup_quota(self) -> None:
        """A temporary cgroup with a quota of one CPU, where this machine
        lets us make one."""
        made = None
        for base, files in (
            (Path("/sys/fs/cgroup"), {"cpu.max": "100000 100000"}),
            (Path("/sys/fs/cgroup/cpu"), {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}),
        ):
            if not (base / next(iter(files))).exists() and not (base / "cgroup.procs").exists():
                continue
            group = base / f"forkfarm-test-{os.getpid()}"
            try:
                group.mkdir()
                for name, value in files.items():
                    (group / name).write_text(value)
            except OSError:
                if group.exists():
                    group.rmdir()
                continue
            made = group
            break
        if made is None:
            pytest.skip("no cgroup with a CPU quota can be made here (needs root and a writable cpu controller)")
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", "import sys, forkfarm; sys.stdin.read(); print(forkfarm.available_cpus())"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs = made / ("cgroup.procs" if (made / "cgroup.procs").exists() else "tasks")
            try:
                procs.write_text(str(child.pid))
            except OSError as error:
                child.communicate("go", timeout=60)
                pytest.skip(f"a process cannot be moved into the cgroup here: {error}")
            out, _ = child.communicate("go", timeout=60)
            assert out.strip() == "1"
        finally:
            for _ in range(50):
                try:
                    made.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


class TestInnerThreads:
    def test_workers_share_the_cpus_by_default(self) -> None:
        pytest.importorskip("numpy")
        pytest.importorskip("threadpoolctl")
        expected = str(max(1, forkfarm.available_cpus() // 2))
        before = {name: os.environ.get(name) for name in _node.THREAD_VARIABLES}
        with forkfarm.Pool(2) as pool:
            for variables, blas, _ in pool.map(worker_threads, range(4), chunksize=1):
                assert set(variables.values()) == {expected}
                assert blas and set(blas) == {int(expected)}
        # The parent's own settings are untouched.
        assert {name: os.environ.get(name) for name in _node.THREAD_VARIABLES} == before

    def test_a_number_overrides_and_none_leaves_them_alone(self) -> None:
        pytest.importorskip("threadpoolctl")
        with forkfarm.Pool(1, inner_threads=3) as pool:
            variables, blas, _ = pool.apply(worker_threads)
        assert set(variables.values()) == {"3"} and blas and max(blas) <= 3  # a cap
        with forkfarm.Executor(1, inner_threads=None) as executor:
            variables, _, _ = executor.submit(worker_threads).result(timeout=60)
        assert variables == {name: os.environ.get(name, "") for name in _node.THREAD_VARIABLES}

    def test_under_the_fork_server_too(self) -> None:
        pytest.importorskip("threadpoolctl")
        with forkfarm.Pool(2, context="forkserver", inner_threads=1) as pool:
            variables, blas, _ = pool.apply(worker_threads)
        assert set(variables.values()) == {"1"} and set(blas) == {1}

    def test_bad_values(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            forkfarm.Pool(1, inner_threads=0)
        with pytest.raises(TypeError, match="inner_threads"):
            forkfarm.Pool(1, inner_threads="many")


class TestPinning:
    def test_spread_across_numa_nodes(self) -> None:
        """8 CPUs on 2 nodes, 4 workers: two CPUs each, nodes in turn."""

        def place(cpu: int) -> tuple[int, int, int]:
            return (cpu // 4, cpu // 4, cpu)

        assert _node._spread(list(range(8)), 4, place) == [[0, 1], [4, 5], [2, 3], [6, 7]]
        assert _node._spread(list(range(8)), 2, place) == [[0, 1, 2, 3], [4, 5, 6, 7]]
        # An odd split: 3 workers, the larger node gets two.
        assert _node._spread([0, 1, 2, 3, 4, 5], 3, lambda c: (0 if c < 4 else 1, 0, c)) == [[0, 1], [4, 5], [2, 3]]

    def test_plans(self) -> None:
        assert _node.pin_plan(None, 2) is None and _node.pin_plan(False, 2) is None
        assert _node.pin_plan([[CPUS[0]]], 1) == [[CPUS[0]]]
        with pytest.raises(ValueError, match="1 CPU lists for a pool of 2 workers"):
            _node.pin_plan([[CPUS[0]]], 2)
        with pytest.raises(ValueError, match="may not use"):
            _node.pin_plan([[100_000]], 1)
        with pytest.raises(ValueError, match="disjoint"):
            _node.pin_plan(True, len(CPUS) + 1)
        with pytest.raises(ValueError, match="pin must be"):
            _node.pin_plan("threads", 1)
        sockets = _node.pin_plan("sockets", 3)
        assert sockets is not None and len(sockets) == 3 and all(sockets)

    @pytest.mark.skipif(len(CPUS) < 2, reason="pinning two workers apart needs two CPUs")
    def test_workers_get_disjoint_cpus_and_replacements_keep_them(self) -> None:
        with forkfarm.Pool(2, pin=True) as pool:
            # Two tasks that overlap in time run on both workers.
            first, second = (set(c) for c in pool.map(sleepy_cpus, range(2), chunksize=1))
            assert first and second and not first & second
            layout = pool.layout()
            assert {tuple(p.cpus) for p in layout} == {tuple(sorted(c)) for c in (first, second)}
            assert all(p.nodes for p in layout)
            # Kill the worker pinned to the first set: its replacement fills
            # the same slot, with the same CPUs.
            victim = next(p.pid for p in layout if set(p.cpus) == first)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pids = {p.pid for p in pool.layout()}
                if victim not in pids and len(pids) == 2:
                    break
                time.sleep(0.05)
            assert {tuple(p.cpus) for p in pool.layout()} == {tuple(sorted(c)) for c in (first, second)}
            assert pool.map(helpers.square, range(8)) == [x * x for x in range(8)]

    def test_explicit_lists(self) -> None:
        with forkfarm.Pool(1, pin=[[CPUS[-1]]]) as pool:
            _, _, cpus = pool.apply(worker_threads)
            assert cpus == [CPUS[-1]]
            assert [p.cpus for p in pool.layout()] == [(CPUS[-1],)]
