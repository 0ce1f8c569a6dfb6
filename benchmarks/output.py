"""What forwarding the workers' output costs: W1-W3 with ``output="forward"``
against ``output="inherit"`` (what every pool did before output could be
forwarded), and against multiprocessing's Pool, in interleaved rounds
(medians), on Pool(2):

- **W1**: 2,000 sequential ``apply(noop)`` round trips (per call);
- **W2**: ``imap_unordered(noop, range(50_000), chunksize=1)``;
- **W3**: ``map(noop, range(1_000_000))``, the default chunksize;
- **W1p**, **W2p**: W1 and W2 with a task that prints one line: what a
  printing task pays to have its line delivered to the caller's stream
  (``inherit`` writes it to this process's descriptor 1, which is
  ``/dev/null`` while the clock runs, as is ``sys.stdout`` for
  ``forward``).

    .venv/bin/python benchmarks/output.py [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import forkfarm  # noqa: E402
from tasks import noop  # noqa: E402


def shout(x: Any = None) -> Any:
    print("a line of output from the task", x)
    return x


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Descriptor 1 and sys.stdout both on /dev/null, whoever writes."""
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    sys.stdout.flush()
    os.dup2(null, 1)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def w1(pool: Any, task: Callable[..., Any]) -> float:
    for _ in range(50):
        pool.apply(task)
    start = time.perf_counter()
    for _ in range(2000):
        pool.apply(task)
    return (time.perf_counter() - start) / 2000


def w2(pool: Any, task: Callable[..., Any]) -> float:
    start = time.perf_counter()
    count = sum(1 for _ in pool.imap_unordered(task, range(50_000), chunksize=1))
    assert count == 50_000
    return time.perf_counter() - start


def w3(pool: Any, task: Callable[..., Any]) -> float:
    start = time.perf_counter()
    assert len(pool.map(task, range(1_000_000))) == 1_000_000
    return time.perf_counter() - start


WORKLOADS: dict[str, tuple[Callable[[Any, Callable[..., Any]], float], Callable[..., Any]]] = {
    "W1": (w1, noop),
    "W2": (w2, noop),
    "W3": (w3, noop),
    "W1p": (w1, shout),
    "W2p": (w2, shout),
}


def make(name: str) -> Any:
    if name == "multiprocessing":
        return multiprocessing.get_context("fork").Pool(2)
    return forkfarm.Pool(2, context="fork", output=name.split()[1])  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    names = ["forkfarm inherit", "forkfarm forward", "multiprocessing"]
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for workload, (run, task) in WORKLOADS.items():
            for name in names:
                pool = make(name)
                with quiet():
                    samples.setdefault((workload, name), []).append(run(pool, task))
                pool.terminate()
                pool.join()
    print(f"Pool(2), {rounds} interleaved rounds, medians; ratio = forward / inherit")
    print(f"{'':5} {'inherit':>12} {'forward':>12} {'ratio':>7} {'multiprocessing':>16}")
    for workload in WORKLOADS:
        got = {name: statistics.median(samples[(workload, name)]) for name in names}
        unit, scale = ("us", 1e6) if workload.startswith("W1") else ("ms", 1e3)
        inherit, forward, mp = (got[n] * scale for n in names)
        print(
            f"{workload:5} {inherit:9.2f} {unit} {forward:9.2f} {unit} {forward / inherit:7.2f} "
            f"{mp:13.2f} {unit}"
        )


if __name__ == "__main__":
    main()
