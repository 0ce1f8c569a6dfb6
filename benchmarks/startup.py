"""Start methods side by side: the life of a pool, and its round trip.

For each start method of forkfarm and of multiprocessing, in interleaved
rounds (medians):

- **life**: ``Pool(2)``, the first result of ``apply``, ``close`` and
  ``join``, with the method's server (if any) already running, as it is for
  every pool after a process's first;
- **first**: the same in a fresh interpreter, timed from before the import
  of the library: what a script or a notebook pays once (the fork server's
  start included);
- **call**: one ``apply(noop)`` round trip on a warm pool (W1's figure),
  to show that the start method costs nothing once the workers run.

Then W4r, a reused pool's start and first result: ``Pool(2, reuse=True)``
and ``apply(noop)`` when the previous such pool parked its workers (it is
closed and joined outside the clock), against a fresh forkfarm pool of
each method, multiprocessing's, and loky's ``get_reusable_executor(2)``
returned again (its ``submit(noop).result()``).

    .venv/bin/python benchmarks/startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import forkfarm  # noqa: E402
from tasks import noop  # noqa: E402

CALLS = 2000

# name -> (module name, method), for the fresh-interpreter measurement too.
METHODS: dict[str, tuple[str, str]] = {
    "forkfarm fork": ("forkfarm", "fork"),
    "forkfarm forkserver": ("forkfarm", "forkserver"),
    "multiprocessing fork": ("multiprocessing", "fork"),
    "multiprocessing forkserver": ("multiprocessing", "forkserver"),
    "multiprocessing spawn": ("multiprocessing", "spawn"),
}

FIRST = """
import time
start = time.perf_counter()
import {module} as mp
with mp.get_context({method!r}).Pool(2) as pool:
    pool.apply(abs, (-1,))
    pool.close()
    pool.join()
print(time.perf_counter() - start)
"""


def _context(name: str) -> Any:
    module, method = METHODS[name]
    return (forkfarm if module == "forkfarm" else multiprocessing).get_context(method)


def life(name: str) -> float:
    start = time.perf_counter()
    with _context(name).Pool(2) as pool:
        pool.apply(noop)
        pool.close()
        pool.join()
    return time.perf_counter() - start


def first(name: str) -> float:
    module, method = METHODS[name]
    done = subprocess.run(
        [sys.executable, "-c", FIRST.format(module=module, method=method)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent,
    )
    return float(done.stdout.strip())


def calls(name: str) -> float:
    """Alone in the process: multiprocessing's helper threads would slow
    every pool's calls."""
    with _context(name).Pool(2) as pool:
        for _ in range(50):
            pool.apply(noop)
        start = time.perf_counter()
        for _ in range(CALLS):
            pool.apply(noop)
        elapsed = time.perf_counter() - start
        pool.terminate()
        pool.join()
    return elapsed / CALLS


def reused_first(name: str) -> float:
    """W4r: the start and first result of a pool, closed after the clock."""
    if name == "forkfarm reused":
        start = time.perf_counter()
        pool = forkfarm.Pool(2, reuse=True)
        pool.apply(noop)
        elapsed = time.perf_counter() - start
        pool.close()
        pool.join()
        return elapsed
    if name == "loky reused":
        import loky

        start = time.perf_counter()
        loky.get_reusable_executor(2).submit(noop).result()
        return time.perf_counter() - start
    start = time.perf_counter()
    pool = _context(name).Pool(2)
    pool.apply(noop)
    elapsed = time.perf_counter() - start
    pool.terminate()
    pool.join()
    return elapsed


REUSED = ["forkfarm reused", "forkfarm fork", "forkfarm forkserver", "multiprocessing fork",
          "multiprocessing forkserver", "loky reused"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    rounds = parser.parse_args().rounds
    samples: dict[tuple[str, str], list[float]] = {}
    life("forkfarm forkserver")  # the servers run from here on
    life("multiprocessing forkserver")
    measures: list[tuple[str, Callable[[str], float]]] = [("life", life), ("first", first), ("call", calls)]
    for _ in range(rounds):
        for name in METHODS:
            for measure, run in measures:
                samples.setdefault((measure, name), []).append(run(name))
    print(f"start methods, Pool(2), {rounds} interleaved rounds, medians")
    print(f"{'':28} {'life (ms)':>10} {'first (ms)':>11} {'call (us)':>10}")
    for name in METHODS:
        row = [statistics.median(samples[(m, name)]) for m in ("life", "first", "call")]
        print(f"{name:28} {row[0] * 1e3:10.1f} {row[1] * 1e3:11.1f} {row[2] * 1e6:10.1f}")
    reused: dict[str, list[float]] = {name: [] for name in REUSED}
    for name in ("forkfarm reused", "loky reused"):
        reused_first(name)  # the workers to reuse exist from here on
    for _ in range(rounds):
        for name in REUSED:
            reused[name].append(reused_first(name))
    base = statistics.median(reused["forkfarm reused"])
    print(f"\nW4r: a pool's start + first result, {rounds} interleaved rounds, medians")
    print(f"{'':28} {'ms':>10} {'x reused':>9}")
    for name in REUSED:
        value = statistics.median(reused[name])
        print(f"{name:28} {value * 1e3:10.3f} {value / base:9.1f}")


if __name__ == "__main__":
    main()
