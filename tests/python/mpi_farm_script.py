"""Run by tests/python/test_mpi.py under mpiexec and python -m forkfarm.mpi:
rank 0 runs this, the other ranks its tasks."""

import sys

import numpy as np

import forkfarm


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


def square(p: Point) -> Point:
    return Point(p.x * p.x)


def total(a: np.ndarray) -> float:
    return float(a.sum())


def rank_of(_: object) -> int:
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.Get_rank())


def main() -> None:
    with forkfarm.Pool() as pool:
        print("method", pool.start_method, pool._processes)
        print("ranks", sorted(set(pool.map(rank_of, range(40), chunksize=1))))
        result = pool.map(square, [Point(i) for i in range(6)])
        print("classes", all(type(p) is Point for p in result), [p.x for p in result])
        print("lambda", pool.map(lambda x: x + 1, range(5)))
        big = np.arange(1 << 20, dtype=np.float64)
        print("arrays", pool.map(total, [big, big * 2], chunksize=1))
        print("imap", sorted(pool.imap_unordered(abs, [-1, -2, -3], chunksize=1)))
        print("starmap", pool.starmap(pow, [(2, 3), (3, 2)]))
        try:
            pool.apply(int, ("x",))
        except ValueError as error:
            print("error", type(error).__name__, "invalid literal" in str(error))
    with forkfarm.Executor() as executor:
        print("executor", executor.submit(pow, 2, 10).result(), list(executor.map(abs, [-5, -6])))
    with forkfarm.Pool(1, backend="local") as local:
        print("local", local.start_method, local.apply(abs, (-7,)))
    print("argv", sys.argv[1:])


main()
