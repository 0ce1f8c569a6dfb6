"""A compute-bound NumPy task farm that estimates pi by Monte Carlo, on
forkfarm and on multiprocessing.

Each task computes for tens of milliseconds, so the pool's own overhead per
task (microseconds, see ``examples/demo.py``) hardly counts here. What can
still differ is the memory the tasks' NumPy temporaries (8 MiB each) come
from: a forkfarm worker makes arrays of 1 MiB or more in an arena it reuses
(docs/arrays.md), where a multiprocessing worker's malloc maps fresh pages,
and faults them in, for each one. With glibc told to keep its memory
(``MALLOC_MMAP_THRESHOLD_=1073741824``) the two pools run about as fast.

Each task seeds its own generator with ``numpy.random.default_rng((seed, i))``
(a distinct, reproducible stream per task ``i``), draws N points in the unit
square and counts how many fall inside the quarter circle. The hit counts are
summed and pi ~= 4 * hits / points.

The same tasks, with the same seeds, run three ways:

* serially in this process (for reference),
* on ``forkfarm.Pool(2)``,
* on ``multiprocessing.Pool(2)``,

both pools with the fork start method (where the platform has it).

Because the seeds are fixed per task, all three runs count exactly the same
hits, so they print the identical estimate; what differs is the wall time.
Pool wall times include starting the pool and ``close()``/``join()``, i.e.
what a script that farms out one batch of work actually pays. Each pool runs
``--repeat`` times (interleaved) and the best wall time is shown, which keeps
a busy machine from skewing a single measurement; the serial reference runs
once.

Run it with
``python examples/monte_carlo.py [--tasks N] [--points N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import forkfarm

WORKERS = 2
BLOCK = 1 << 20  # points drawn per block, bounds the memory a task uses


def count_hits(seed: int, task: int, points: int) -> int:
    """Draw ``points`` uniform points in [0, 1)^2; count those with x^2 + y^2 <= 1."""
    rng = np.random.default_rng((seed, task))
    hits = 0
    left = points
    while left > 0:
        n = min(BLOCK, left)
        x = rng.random(n)
        y = rng.random(n)
        x *= x
        y *= y
        x += y
        hits += int(np.count_nonzero(x <= 1.0))
        left -= n
    return hits


@dataclass(frozen=True)
class Run:
    label: str
    hits: int
    total_points: int
    seconds: float

    @property
    def estimate(self) -> float:
        return 4.0 * self.hits / self.total_points


TaskArgs = list[tuple[int, int, int]]


def run_serial(args: TaskArgs) -> int:
    return sum(count_hits(*a) for a in args)


def run_pool(make_pool: Callable[[int], Any], args: TaskArgs) -> int:
    """Start a pool, farm the tasks out with starmap, then close and join it."""
    pool = make_pool(WORKERS)
    try:
        hits = sum(pool.starmap(count_hits, args))
        pool.close()
        pool.join()
    except BaseException:
        pool.terminate()
        raise
    return int(hits)


class HitMismatch(Exception):
    """Two runs of the same way counted different hits."""


def best_of(
    ways: Sequence[tuple[str, Callable[[], int]]], repeat: int, total_points: int
) -> list[Run]:
    """Run every way ``repeat`` times, interleaved; keep each way's fastest run.

    Raises HitMismatch if two runs of one way disagree on the hit count.
    """
    best: dict[str, Run] = {}
    for _ in range(repeat):
        for label, fn in ways:
            start = time.perf_counter()
            hits = fn()
            run = Run(label, hits, total_points, time.perf_counter() - start)
            first = best.setdefault(label, run)
            if run.hits != first.hits:
                raise HitMismatch(f"{label}: hit count changed from {first.hits} to {run.hits}")
            if run.seconds < first.seconds:
                best[label] = run
    return [best[label] for label, _ in ways]


def print_table(runs: Sequence[Run]) -> None:
    header = f"{'run':<26}{'estimate of pi':>16}{'error vs math.pi':>19}{'wall time':>12}"
    print(header)
    print("-" * len(header))
    for r in runs:
        err = r.estimate - math.pi
        print(f"{r.label:<26}{r.estimate:>16.10f}{err:>+19.3e}{r.seconds:>10.3f} s")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Monte Carlo pi on forkfarm.Pool vs multiprocessing.Pool."
    )
    p.add_argument("--tasks", type=int, default=64, help="number of tasks (default 64)")
    p.add_argument(
        "--points", type=int, default=2_000_000, help="points per task (default 2,000,000)"
    )
    p.add_argument("--seed", type=int, default=20240601, help="base seed (default 20240601)")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each pool; the best time is shown (default 3)",
    )
    ns = p.parse_args(argv)
    if ns.tasks < 1 or ns.points < 1 or ns.repeat < 1:
        p.error("--tasks, --points and --repeat must be positive")
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    args: TaskArgs = [(ns.seed, i, ns.points) for i in range(ns.tasks)]
    total = ns.tasks * ns.points

    print("Monte Carlo estimate of pi: a compute-bound farm on forkfarm and multiprocessing")
    print(
        f"{ns.tasks} tasks x {ns.points:,} points = {total:,} points, "
        f"{WORKERS} workers, seeds default_rng(({ns.seed}, i)) for i in 0..{ns.tasks - 1}"
    )
    print(
        f"forkfarm {getattr(forkfarm, '__version__', '?')}, numpy {np.__version__}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    ff_context = forkfarm.get_context(method)
    mp_context = multiprocessing.get_context(method)
    print(f"start method: {mp_context.get_start_method()} for both pools")
    print()
    pools: list[tuple[str, Callable[[], int]]] = [
        (f"forkfarm.Pool({WORKERS})", lambda: run_pool(ff_context.Pool, args)),
        (f"multiprocessing.Pool({WORKERS})", lambda: run_pool(mp_context.Pool, args)),
    ]
    try:
        runs = best_of([("serial (this process)", lambda: run_serial(args))], 1, total)
        runs += best_of(pools, ns.repeat, total)
    except HitMismatch as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print_table(runs)
    print()

    serial, ff, mp = runs
    print(
        f"forkfarm vs multiprocessing: {mp.seconds / ff.seconds:.2f}x "
        "(multiprocessing time / forkfarm time; above 1 means forkfarm was faster)"
    )
    print(f"forkfarm vs serial:          {serial.seconds / ff.seconds:.2f}x")
    print(
        f"Wall time: serial run once, each pool best of {ns.repeat};"
        " pool times include pool start-up and close()/join()."
    )

    if len({r.hits for r in runs}) != 1:
        print(
            "ERROR: the runs disagree on the hit count: "
            + ", ".join(f"{r.label}={r.hits}" for r in runs),
            file=sys.stderr,
        )
        return 1
    print(f"All runs counted the same {ff.hits:,} hits, so the estimates are identical.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
