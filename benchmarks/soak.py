"""The soak of shared/FAULTS.md row 25: many tasks while workers are
SIGKILLed at random.

Runs ``apply_async(busy_square, (i,))`` for ``--tasks`` tasks (default
100,000, about 50 µs each) on 2 workers, four times in the same process:
without kills, with kills, and with kills and ``retries=1`` and ``=3``.
Kills follow progress: 1% of the tasks, chosen at random, SIGKILL a random
live worker when their outcome arrives, so a run of N tasks sees N/100
kills whatever its speed. It reports, for each run:

- tasks that returned the right result, that raised WorkerLostError, that
  returned anything else (wrong), and that were delivered more or less than
  once (lost or duplicated: both must be 0);
- for each kill that failed a task, the time from the kill to that task's
  failure in the parent (median and max);
- the run's wall time, and the overhead against the run without kills.

No assertion: a measurement, not a test (the tests are test_faults.py).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import forkfarm  # noqa: E402
from tasks import busy_square  # noqa: E402


def run(tasks: int, kill_fraction: float, retries: int, seed: int = 25) -> dict[str, Any]:
    rng = random.Random(seed)
    kill_points = set(rng.sample(range(tasks), int(tasks * kill_fraction)))
    deliveries = [0] * tasks
    ok = wrong = lost = 0
    detection: list[float] = []
    kills: dict[int, float] = {}
    lock = threading.Lock()
    kinds: dict[str, int] = {}
    pool: forkfarm.Pool

    def kill_a_worker() -> None:
        pids = [p for p in pool._core.worker_pids() if p > 0 and p not in kills]
        if pids:
            pid = rng.choice(pids)
            kills[pid] = time.perf_counter()
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                del kills[pid]

    def done(i: int, value: Any = None, error: BaseException | None = None) -> None:
        nonlocal ok, wrong, lost
        now = time.perf_counter()
        with lock:
            deliveries[i] += 1
            if error is None:
                if value == i * i:
                    ok += 1
                else:
                    wrong += 1
            elif isinstance(error, forkfarm.WorkerLostError):
                lost += 1
                if error.pid in kills:
                    detection.append(now - kills[error.pid])
            else:
                wrong += 1
                kinds[type(error).__name__] = kinds.get(type(error).__name__, 0) + 1
            if i in kill_points:
                kill_a_worker()

    with forkfarm.Pool(2, retries=retries) as pool:
        pool.map(busy_square, range(100), chunksize=1)  # warm
        started = time.perf_counter()
        results = [
            pool.apply_async(
                busy_square,
                (i,),
                callback=lambda v, i=i: done(i, v),
                error_callback=lambda e, i=i: done(i, error=e),
            )
            for i in range(tasks)
        ]
        for r in results:
            r.wait(60)
        wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 2),
        "kills": len(kills),
        "ok": ok,
        "worker_lost": lost,
        "wrong": wrong,
        "not_delivered": sum(1 for d in deliveries if d == 0),
        "delivered_twice": sum(1 for d in deliveries if d > 1),
        "other_errors": kinds,
        "detection_median_ms": round(statistics.median(detection) * 1e3, 2) if detection else None,
        "detection_max_ms": round(max(detection) * 1e3, 2) if detection else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    base = run(args.tasks, 0.0, 0)
    killed = run(args.tasks, 0.01, 0)
    retried = run(args.tasks, 0.01, 1)
    retried3 = run(args.tasks, 0.01, 3)
    runs = (
        ("no kills", base),
        ("kills", killed),
        ("kills, retries=1", retried),
        ("kills, retries=3", retried3),
    )
    for name, r in runs:
        overhead = r["wall_s"] / base["wall_s"] - 1
        print(f"{name:18s} {r}  overhead {overhead:+.1%}")


if __name__ == "__main__":
    main()
