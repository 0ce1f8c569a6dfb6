"""W17: BLAS work on a pool, side by side. Eight tasks, each a product of
two 1500x1500 matrices, on 2 workers: forkfarm with its defaults (each
worker's BLAS capped at the available CPUs divided by the workers),
multiprocessing.Pool and loky, in interleaved rounds (medians). Also
reports the BLAS threads each pool's workers run (threadpoolctl).

    .venv/bin/python benchmarks/blas.py [--rounds N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import forkfarm  # noqa: E402

SIZE = 1500
TASKS = 8
WORKERS = 2


def product(seed: int) -> float:
    rng = np.random.default_rng(seed)
    a = rng.random((SIZE, SIZE))
    b = rng.random((SIZE, SIZE))
    return float((a @ b)[0, 0])


def blas_threads(_: Any = None) -> int:
    import numpy  # noqa: F401 - a spawned worker loads its BLAS here
    from threadpoolctl import threadpool_info

    return max((int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"), default=0)


def pools() -> dict[str, Callable[[], Any]]:
    import loky

    return {
        "forkfarm.Pool (defaults)": lambda: forkfarm.Pool(WORKERS),
        "multiprocessing.Pool": lambda: multiprocessing.get_context("fork").Pool(WORKERS),
        "loky": lambda: loky.ProcessPoolExecutor(WORKERS),
    }


def run(make: Callable[[], Any]) -> tuple[float, int]:
    pool = make()
    try:
        mapper = pool.map
        list(mapper(blas_threads, range(WORKERS)))  # the workers run
        threads = max(mapper(blas_threads, range(4 * WORKERS)))
        start = time.perf_counter()
        results = list(mapper(product, range(TASKS)))
        elapsed = time.perf_counter() - start
        assert len(results) == TASKS
        return elapsed, threads
    finally:
        if hasattr(pool, "terminate"):
            pool.terminate()
            pool.join()
        else:
            pool.shutdown(wait=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    candidates = pools()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    threads: dict[str, int] = {}
    for _ in range(rounds):
        for name, make in candidates.items():
            elapsed, threads[name] = run(make)
            times[name].append(elapsed)
    print(f"W17: {TASKS} products of {SIZE}x{SIZE} matrices on {WORKERS} workers, "
          f"{forkfarm.available_cpus()} CPUs available, {rounds} interleaved rounds, medians")
    base = statistics.median(times["forkfarm.Pool (defaults)"])
    for name in candidates:
        median = statistics.median(times[name])
        print(f"  {name:26} {median:6.2f} s  ({median / base:.2f}x forkfarm's time)  "
              f"BLAS threads per worker: {threads[name]}")


if __name__ == "__main__":
    main()
