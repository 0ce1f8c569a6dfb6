"""Task functions shared by the benchmarks.

They live in their own importable module (not in ``bench.py``'s ``__main__``)
so that every pool implementation, whatever its start method, can unpickle
them by reference in its workers.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def noop(x: T | None = None) -> T | None:
    """Do nothing and hand the argument back: measures pure runtime overhead."""
    return x


def pid_then_sleep(fd: int, seconds: float) -> None:
    """Writes the worker's pid to fd (inherited from the pool's creator), then
    sleeps: the parent learns which worker to kill."""
    import os
    import time

    os.write(fd, str(os.getpid()).encode())
    time.sleep(seconds)


def numpy_task(seed: int) -> float:
    """W5: about 20 ms of NumPy work on this kind of machine (elementwise
    math and sorting: no BLAS, so no hidden threads)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.random(125_000)
    for _ in range(3):
        a = np.sort(np.sin(a) * 1.5 + np.sqrt(a))
    return float(a[seed % a.size])


def numpy_warmup(seconds: float) -> float:
    """W5's untimed warm-up: one task of W5's kind, then a wait long enough
    that the other workers take the other warm-up tasks."""
    import time

    numpy_task(0)
    time.sleep(seconds)
    return seconds


def busy_wait(seconds: float) -> float:
    """W6: keeps a core busy for the given time, as a CPU-bound task of
    known length would."""
    import time

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def arr_sum(a: Any) -> float:
    """W7/W8: reads every element of an array once."""
    return float(a.sum())


def arr_sum_timed(a: Any) -> tuple[float, float]:
    """W8: the sum, and the seconds the worker spent on it, so that the
    overhead around the task can be told from the task."""
    import time

    start = time.perf_counter()
    total = float(a.sum())
    return total, time.perf_counter() - start


def arr_first(a: Any) -> float:
    """W8: touches one element: only the cost of getting the array."""
    return float(a.flat[0])


_results: dict[int, Any] = {}


def big_result(nbytes: int) -> Any:
    """W9k: returns an array of nbytes, made once per worker and kept, so
    that only returning it is measured (a kept array goes by copy)."""
    import numpy as np

    array = _results.get(nbytes)
    if array is None:
        array = _results[nbytes] = np.ones(nbytes // 8)
    return array


def made_result(nbytes: int) -> Any:
    """W9: a new array of nbytes, made by the task and returned."""
    import numpy as np

    return np.full(nbytes // 8, 1.0)


def made_and_dropped(nbytes: int) -> None:
    """W9's ideal: the same making, and nothing returned."""
    import numpy as np

    np.full(nbytes // 8, 1.0)


def sleep_timed(seconds: float) -> float:
    """W8: sleeps, and returns the seconds it took: the overhead around a
    task of that length with no array at all."""
    import time

    start = time.perf_counter()
    time.sleep(seconds)
    return time.perf_counter() - start


def big_shared_result(nbytes: int) -> Any:
    """W9: the same, as a forkfarm shared array the worker made: it travels
    back as a handle."""
    import forkfarm

    array = _results.get(-nbytes)
    if array is None:
        array = _results[-nbytes] = forkfarm.full(nbytes // 8, 1.0)
    return array


def busy_square(x: int, micros: float = 50.0) -> int:
    """The soak's task: keeps a core busy for micros, then squares x."""
    import time

    end = time.perf_counter() + micros * 1e-6
    while time.perf_counter() < end:
        pass
    return x * x
