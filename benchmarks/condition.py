"""Condition ping-pong, forkfarm against multiprocessing, in one run,
interleaved: two parties take turns, each holding the condition's lock
around ``notify(); wait(timeout)``, so that every wait is ended by the other
party's notify. A round trip is one notify each way.

- processes: the parent and a forked child;
- threads: two threads of one process.

A wait that times out (returns False) is a lost wake-up: it is counted and
reported, and the run's rate is then meaningless. Prints round trips per
second (medians of the interleaved rounds) and writes
benchmarks/results/condition.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import forkfarm  # noqa: E402

FORK = multiprocessing.get_context("fork")
LIBRARIES = ("multiprocessing", "forkfarm")
MODES = ("processes", "threads")


def make(library: str) -> tuple[Any, Any, Any]:
    """A condition, a counter of lost wake-ups and a start signal, all
    shared between processes."""
    if library == "multiprocessing":
        return FORK.Condition(FORK.Lock()), FORK.RawValue("l", 0), FORK.Semaphore(0)
    return forkfarm.Condition(forkfarm.Lock()), forkfarm.RawValue("l", 0), forkfarm.Semaphore(0)


def party(condition: Any, lost: Any, trips: int, timeout: float) -> None:
    """One side: trips x (notify, wait), then one last notify for the other
    side's last wait (the first notify of the run finds nobody waiting)."""
    with condition:
        for _ in range(trips):
            condition.notify()
            if not condition.wait(timeout):
                lost.value += 1
        condition.notify()


def other_side(condition: Any, lost: Any, ready: Any, trips: int, timeout: float) -> None:
    ready.release()
    party(condition, lost, trips, timeout)


def round_trips(library: str, mode: str, trips: int, timeout: float) -> tuple[float, int]:
    """(round trips per second, waits that timed out)."""
    condition, lost, ready = make(library)
    if mode == "processes":
        pid = os.fork()
        if pid == 0:
            try:
                other_side(condition, lost, ready, trips, timeout)
            finally:
                os._exit(0)
        other: Any = None
    else:
        pid = 0
        other = threading.Thread(target=other_side, args=(condition, lost, ready, trips, timeout))
        other.start()
    ready.acquire()
    started = time.perf_counter()
    party(condition, lost, trips, timeout)
    if pid:
        os.waitpid(pid, 0)
    else:
        other.join()
    took = time.perf_counter() - started
    return trips / took, int(lost.value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trips", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=5.0, help="each wait's timeout (s)")
    args = parser.parse_args()
    samples: dict[tuple[str, str], list[float]] = {(l, m): [] for l in LIBRARIES for m in MODES}
    lost: dict[tuple[str, str], int] = {key: 0 for key in samples}
    for _ in range(args.rounds):
        for mode in MODES:
            for library in LIBRARIES:
                rate, missed = round_trips(library, mode, args.trips, args.timeout)
                samples[library, mode].append(rate)
                lost[library, mode] += missed
    print(f"Condition ping-pong, {args.trips:,} round trips, medians of {args.rounds} interleaved rounds")
    results: dict[str, Any] = {}
    for mode in MODES:
        base = statistics.median(samples["multiprocessing", mode])
        for library in LIBRARIES:
            rate = statistics.median(samples[library, mode])
            results[f"{mode} {library}"] = {
                "round_trips_per_s": rate,
                "samples": samples[library, mode],
                "timed_out_waits": lost[library, mode],
            }
            print(f"{mode:9} {library:15} {rate:>10,.0f} round trips/s ({rate / base:.1f}x)"
                  f"  timed-out waits: {lost[library, mode]}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "condition.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
