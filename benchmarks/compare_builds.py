"""Two builds of forkfarm side by side: W1 to W3 on each, in alternating
fresh processes, best of three within a process, medians across them.
What the issues' "unchanged within noise" targets are measured with.

Build the other revision into a directory first, for example:

    git worktree add /tmp/base <revision>
    (cd /tmp/base && .venv/bin/python -m pip install --no-build-isolation \\
        --no-deps --target /tmp/base-site .)
    .venv/bin/python benchmarks/compare_builds.py /tmp/base-site [--rounds N]

The installed package is the other build.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

MEASURE = """
import sys, time
sys.path.insert(0, {here!r})
import forkfarm
from tasks import noop

def w1(pool, n=2000):
    start = time.perf_counter()
    for _ in range(n):
        pool.apply(noop)
    return (time.perf_counter() - start) / n * 1e6

def w2(pool, n=50_000):
    start = time.perf_counter()
    assert sum(1 for _ in pool.imap_unordered(noop, range(n), chunksize=1)) == n
    return n / (time.perf_counter() - start)

def w3(pool, n=1_000_000):
    start = time.perf_counter()
    assert len(pool.map(noop, range(n))) == n
    return n / (time.perf_counter() - start)

with forkfarm.Pool(2) as pool:
    for _ in range(50):
        pool.apply(noop)
    print(min(w1(pool) for _ in range(3)), max(w2(pool) for _ in range(3)), max(w3(pool) for _ in range(3)))
"""


def run(site: str | None) -> list[float]:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = site
    done = subprocess.run(
        [sys.executable, "-c", MEASURE.format(here=str(HERE))],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd="/",
    )
    return [float(x) for x in done.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="a directory the other build was installed into (--target)")
    parser.add_argument("--rounds", type=int, default=14)
    args = parser.parse_args()
    samples: dict[str, list[list[float]]] = {"other": [], "installed": []}
    for _ in range(args.rounds):
        samples["other"].append(run(args.other))
        samples["installed"].append(run(None))
    print(f"W1-W3, {args.rounds} alternating processes, best of 3 in each, medians")
    for index, (name, unit) in enumerate([("W1", "us/call"), ("W2", "tasks/s"), ("W3", "tasks/s")]):
        other = statistics.median(s[index] for s in samples["other"])
        installed = statistics.median(s[index] for s in samples["installed"])
        print(f"  {name}: other {other:,.2f} {unit}, installed {installed:,.2f} {unit} (installed/other {installed / other:.3f})")


if __name__ == "__main__":
    main()
