"""A NumPy task farm across MPI ranks, with the pool API of one machine.

    mpiexec -n 3 python -m forkfarm.mpi examples/mpi_farm.py
    mpiexec -n 3 python -m forkfarm.mpi --hybrid examples/mpi_farm.py   # one rank per node

(as root, or with more ranks than cores, add ``--allow-run-as-root
--oversubscribe`` after ``mpiexec``). Rank 0 runs this file; the other
ranks run its tasks, or with ``--hybrid`` each runs them on a local pool of
its node's cores. The image is a shared array: it goes to each rank once,
not with every task, and in hybrid mode its node's workers read it in
place. Each task smooths a band of rows; the result is checked against the
same kernel run serially here.
"""

from __future__ import annotations

import time

import numpy as np

import forkfarm


def smooth_band(image: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of a 5-point average of image (edges clamped)."""
    rows = np.arange(start, stop)
    up = image[np.maximum(rows - 1, 0)]
    down = image[np.minimum(rows + 1, image.shape[0] - 1)]
    band = image[start:stop]
    left = np.concatenate([band[:, :1], band[:, :-1]], axis=1)
    right = np.concatenate([band[:, 1:], band[:, -1:]], axis=1)
    smoothed: np.ndarray = (band + up + down + left + right) / 5.0
    return smoothed


def main() -> None:
    rng = np.random.default_rng(7)
    image = forkfarm.as_shared(rng.random((2048, 2048)))
    bands = [(image, start, min(start + 128, image.shape[0])) for start in range(0, image.shape[0], 128)]
    with forkfarm.Pool() as pool:
        start = time.perf_counter()
        parts = pool.starmap(smooth_band, bands, chunksize=1)
        elapsed = time.perf_counter() - start
        stats = pool.stats()
    result = np.concatenate(parts)
    expected = smooth_band(np.asarray(image), 0, image.shape[0])
    print(f"{len(bands)} bands on {pool.start_method} workers: {elapsed:.3f} s")
    for worker in stats.workers:
        print(f"  rank {worker.pid}: {worker.tasks} tasks, {worker.bytes_sent / 2**20:.1f} MiB sent to it")
    print("matches serial:", bool(np.allclose(result, expected)))


if __name__ == "__main__":
    main()
