"""W4's phases, side by side: ``Pool(2)`` returns, the first ``apply``
result, ``close()`` + ``join()``, for forkfarm and multiprocessing (fork),
in interleaved rounds (medians, ms). With ``--numpy`` NumPy is imported
first, and forkfarm runs twice: with its default thread cap and with
``inner_threads=None``.

    .venv/bin/python benchmarks/w4_phases.py [--rounds N] [--numpy]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import forkfarm  # noqa: E402
from tasks import noop  # noqa: E402

PHASES = ("Pool()", "first result", "close+join", "total")


def phases(make: Callable[[], Any]) -> list[float]:
    t0 = time.perf_counter()
    pool = make()
    t1 = time.perf_counter()
    pool.apply(noop)
    t2 = time.perf_counter()
    pool.close()
    pool.join()
    t3 = time.perf_counter()
    return [t1 - t0, t2 - t1, t3 - t2, t3 - t0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--numpy", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the samples (seconds) as JSON")
    args = parser.parse_args()
    ff = forkfarm.get_context("fork")
    mp = multiprocessing.get_context("fork")
    pools: dict[str, Callable[[], Any]] = {
        "forkfarm": lambda: forkfarm.Pool(2, context=ff),
        "multiprocessing": lambda: mp.Pool(2),
    }
    if args.numpy:
        import numpy  # noqa: F401

        pools["forkfarm inner_threads=None"] = lambda: forkfarm.Pool(2, context=ff, inner_threads=None)
    for make in pools.values():  # warm-up
        phases(make)
    samples: dict[str, list[list[float]]] = {name: [] for name in pools}
    for _ in range(args.rounds):
        for name, make in pools.items():
            samples[name].append(phases(make))
    if args.json:
        print(json.dumps(samples))
        return
    print(f"W4 phases, {args.rounds} interleaved rounds, medians (ms){', numpy imported' if args.numpy else ''}")
    print(f"{'':30}" + "".join(f"{p:>14}" for p in PHASES))
    base = [statistics.median(s[i] for s in samples["multiprocessing"]) for i in range(4)]
    for name, rows in samples.items():
        med = [statistics.median(s[i] for s in rows) for i in range(4)]
        print(f"{name:30}" + "".join(f"{m * 1e3:14.2f}" for m in med))
    for name, rows in samples.items():
        total = statistics.median(s[3] for s in rows)
        print(f"{name:30} total / multiprocessing = {total / base[3]:.2f}")


if __name__ == "__main__":
    main()
