"""The jobs benchmarks/mpi.py times, one per mpiexec run: rank 0 prints
the seconds its timed region took (and the bytes it sent), as JSON.

    mpiexec -n 3 python -m forkfarm.mpi [--hybrid --workers 1] mpi_jobs.py (w15|w16) forkfarm
    mpiexec -n 3 python -m mpi4py.futures mpi_jobs.py (w15|w16) mpi4py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import noop  # noqa: E402

W15_ITEMS = 20_000
W16_BYTES = 256 << 20
W16_TASKS = 16


def part_sum(data: Any, index: int, parts: int) -> float:
    step = len(data) // parts
    return float(data[index * step : (index + 1) * step].sum())


def w15(executor_map: Any) -> dict[str, float]:
    list(executor_map(noop, range(200)))  # warm
    start = time.perf_counter()
    results = list(executor_map(noop, range(W15_ITEMS)))
    elapsed = time.perf_counter() - start
    assert len(results) == W15_ITEMS
    return {"seconds": elapsed, "tasks_per_second": W15_ITEMS / elapsed}


def main() -> None:
    import numpy as np

    workload, library = sys.argv[1:3]
    if library == "forkfarm":
        import forkfarm

        with forkfarm.Pool() as pool:
            if workload == "w15":
                out = w15(lambda f, xs: pool.map(f, xs, chunksize=1))
            else:
                data = forkfarm.as_shared(np.ones(W16_BYTES // 8))
                pool.map(noop, range(4))  # warm: the workers run
                start = time.perf_counter()
                total = sum(pool.starmap(part_sum, [(data, i, W16_TASKS) for i in range(W16_TASKS)], chunksize=1))
                out = {"seconds": time.perf_counter() - start}
                assert total == data.size
                out["bytes_sent"] = sum(w.bytes_sent for w in pool.stats().workers)
    else:
        from mpi4py.futures import MPIPoolExecutor

        with MPIPoolExecutor() as executor:
            if workload == "w15":
                out = w15(executor.map)
            else:
                data = np.ones(W16_BYTES // 8)
                list(executor.map(noop, range(4)))
                start = time.perf_counter()
                total = sum(executor.map(part_sum, [data] * W16_TASKS, range(W16_TASKS), [W16_TASKS] * W16_TASKS))
                out = {"seconds": time.perf_counter() - start}
                assert total == data.size
                out["bytes_sent"] = W16_TASKS * data.nbytes  # the array, pickled into each task
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
