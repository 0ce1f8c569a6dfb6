"""Time from a worker's SIGKILL to the caller's WorkerLostError.

Runs a task that records its pid and sleeps, kills that worker from the
parent, and measures until get() raises. Prints the median and max over
--trials; no assertion: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import forkfarm  # noqa: E402
from tasks import pid_then_sleep  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    latencies = []
    # The pipe exists before the pool, so every worker (replacements too,
    # forked from the zygote) inherits it.
    read_fd, write_fd = os.pipe()
    with forkfarm.Pool(2) as pool:
        for _ in range(args.trials):
            result = pool.apply_async(pid_then_sleep, (write_fd, 30.0))
            pid = int(os.read(read_fd, 32))
            start = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            try:
                result.get(10)
            except forkfarm.WorkerLostError:
                latencies.append(time.perf_counter() - start)
    os.close(read_fd)
    os.close(write_fd)
    ms = [x * 1e3 for x in latencies]
    print(
        f"SIGKILL -> WorkerLostError over {len(ms)} trials: "
        f"median {statistics.median(ms):.2f} ms, max {max(ms):.2f} ms"
    )


if __name__ == "__main__":
    main()
