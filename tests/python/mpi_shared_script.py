"""Run by tests/python/test_mpi.py: a shared array read by every task goes
to each rank once, and in hybrid mode reaches the ranks' local workers
without a copy."""

import os

import numpy as np

import forkfarm


def part(data: np.ndarray, index: int, parts: int) -> tuple[float, int, bool]:
    step = len(data) // parts
    view = data[index * step : (index + 1) * step]
    return float(view.sum()), os.getpid(), isinstance(data, forkfarm.SharedArray)


def main() -> None:
    data = forkfarm.as_shared(np.arange(1 << 22, dtype=np.float64))  # 32 MiB
    with forkfarm.Pool() as pool:
        out = pool.starmap(part, [(data, i, 16) for i in range(16)], chunksize=1)
        stats = pool.stats()
    print("sum", sum(v for v, _, _ in out) == float(data.sum()))
    print("shared on arrival", all(s for _, _, s in out))
    print("workers", len({pid for _, pid, _ in out}))
    # Each rank got the 32 MiB once, not once per task (plus small headers).
    print("once", all(data.nbytes <= w.bytes_sent < 2 * data.nbytes for w in stats.workers))
    print("tasks", sum(w.tasks for w in stats.workers), stats.done, stats.failed)


main()
