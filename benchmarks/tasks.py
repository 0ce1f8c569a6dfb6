"""Task functions shared by the benchmarks.

They live in their own importable module (not in ``bench.py``'s ``__main__``)
so that every pool implementation, whatever its start method, can unpickle
them by reference in its workers.
"""

from __future__ import annotations

from typing import TypeVar

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
