"""What a progress bar costs: W3 (``map(noop, range(1_000_000))``, default
chunksize) with ``progress=False`` and with a tqdm bar, in interleaved
rounds on one warm pool (medians). The bar draws to /dev/null, so the
terminal's speed is not measured; a tqdm bar is what ``progress=True``
makes.

    .venv/bin/python benchmarks/progress.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tqdm  # noqa: E402

import forkfarm  # noqa: E402
from tasks import noop  # noqa: E402

ITEMS = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    samples: dict[str, list[float]] = {"off": [], "on": []}
    with open(os.devnull, "w") as sink, forkfarm.Pool(2) as pool:
        pool.map(noop, range(ITEMS))  # warm: chunk sizes, arena, caches
        for _ in range(rounds):
            for mode in samples:
                bar = tqdm.tqdm(file=sink, mininterval=0.1) if mode == "on" else False
                start = time.perf_counter()
                result = pool.map(noop, range(ITEMS), progress=bar)
                samples[mode].append(time.perf_counter() - start)
                assert len(result) == ITEMS
                if bar is not False:
                    assert bar.n == ITEMS
                    bar.close()
    off, on = (statistics.median(samples[m]) for m in ("off", "on"))
    print(f"W3 with a progress bar, {rounds} interleaved rounds, medians")
    print(f"  progress off: {ITEMS / off:12,.0f} tasks/s ({off * 1e3:.1f} ms)")
    print(f"  progress on:  {ITEMS / on:12,.0f} tasks/s ({on * 1e3:.1f} ms)")
    print(f"  slowdown: {100 * (on / off - 1):+.1f}% (target: at most +5%)")


if __name__ == "__main__":
    main()
