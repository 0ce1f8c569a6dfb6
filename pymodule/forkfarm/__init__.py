"""forkfarm: a process pool for Python with a C runtime.

``import forkfarm as multiprocessing`` gives multiprocessing's Pool on a
runtime that needs no helper threads and does not hang when a worker dies;
:class:`Executor` is the same runtime behind the concurrent.futures API.
"""

from __future__ import annotations

import os
from multiprocessing import (
    AuthenticationError,
    BufferTooShort,
    ProcessError,
    TimeoutError,
)

from ._errors import (
    InitializerError,
    PoolTerminatedError,
    RemoteTraceback,
    WorkerLostError,
)
from .executor import Executor
from .pool import Pool

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BufferTooShort",
    "Executor",
    "InitializerError",
    "Pool",
    "PoolTerminatedError",
    "ProcessError",
    "RemoteTraceback",
    "TimeoutError",
    "WorkerLostError",
    "cpu_count",
]


def cpu_count() -> int:
    """The number of CPUs in the system, as multiprocessing.cpu_count()."""
    count = os.cpu_count()
    if count is None:
        raise NotImplementedError("cannot determine number of cpus")
    return count
