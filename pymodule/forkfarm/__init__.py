"""forkfarm: a process pool for Python with a C runtime.

``import forkfarm as multiprocessing`` gives multiprocessing's Pool on a
runtime that needs no helper threads and does not hang when a worker dies,
with its queues and locks in shared memory (no feeder thread, no named
semaphore, no lock held forever by a dead process); :class:`Executor` is the
same runtime behind the concurrent.futures API.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any
from multiprocessing import (
    AuthenticationError,
    BufferTooShort,
    ProcessError,
    TimeoutError,
)

from .connection import Pipe
from .context import (
    Manager,
    Process,
    active_children,
    allow_connection_pickling,
    current_process,
    freeze_support,
    get_all_start_methods,
    get_context,
    get_logger,
    get_start_method,
    log_to_stderr,
    parent_process,
    set_executable,
    set_forkserver_preload,
    set_start_method,
)
from ._errors import (
    InitializerError,
    MessageTooLargeError,
    PoolTerminatedError,
    RemoteError,
    RemoteTraceback,
    TaskTimeoutError,
    WorkerLostError,
    WorkerStartError,
)
from ._node import available_cpus
from .executor import Executor
from ._reusable import get_reusable_executor
from .pool import Pool
from .queues import JoinableQueue, Queue, SimpleQueue
from .sharedctypes import Array, RawArray, RawValue, Value
from .synchronize import (
    AbandonedLockWarning,
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
)

# The submodules multiprocessing's namespace holds once it is imported, and
# those forkfarm loads anyway; the others load on first use, below.
from . import (  # noqa: E402
    connection,
    context,
    pool,
    process,
    queues,
    reduction,
    shared_memory,
    sharedctypes,
    synchronize,
)

# As multiprocessing.reducer: the module that pickles for processes.
reducer = reduction

# A context offers the package's names, as multiprocessing's contexts do.
context.bind_package(sys.modules[__name__])

# The version is written once, in meson.build: the runtime returns it
# (ff_version) and meson-python puts it in the package's metadata.
from ._core import __version__ as __version__  # noqa: E402

__all__ = [
    "AbandonedLockWarning",
    "Array",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "Event",
    "Executor",
    "InitializerError",
    "JoinableQueue",
    "Lock",
    "Manager",
    "MessageTooLargeError",
    "Pipe",
    "Pool",
    "PoolTerminatedError",
    "Process",
    "ProcessError",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "RemoteError",
    "RemoteTraceback",
    "Semaphore",
    "SharedArray",
    "SimpleQueue",
    "TaskTimeoutError",
    "TimeoutError",
    "Value",
    "WorkerLostError",
    "WorkerStartError",
    "active_children",
    "allow_connection_pickling",
    "as_shared",
    "available_cpus",
    "cpu_count",
    "current_process",
    "empty",
    "freeze_support",
    "full",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_reusable_executor",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
    "shared_allocations",
    "shared_array",
    "zeros",
]

# The shared arrays need NumPy, which forkfarm itself does not, and the
# other submodules are rarely used: they load on first use.
if TYPE_CHECKING:
    from . import (
        dummy,
        forkserver,
        heap,
        managers,
        popen_fork,
        popen_forkserver,
        popen_spawn_posix,
        resource_sharer,
        resource_tracker,
        spawn,
        util,
    )
    from .shared import SharedArray, as_shared, empty, full, shared_allocations, shared_array, zeros

_SHARED_NAMES = {"SharedArray", "as_shared", "empty", "full", "shared_allocations", "shared_array", "zeros"}

# multiprocessing's other submodules, loaded on first use as attributes
# (``forkfarm.managers``), as ``import forkfarm.managers`` loads them.
_LAZY_SUBMODULES = {
    "dummy",
    "forkserver",
    "heap",
    "managers",
    "popen_fork",
    "popen_forkserver",
    "popen_spawn_posix",
    "resource_sharer",
    "resource_tracker",
    "spawn",
    "util",
}


def __getattr__(name: str) -> Any:
    if name in _SHARED_NAMES:
        from . import shared

        return getattr(shared, name)
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'forkfarm' has no attribute {name!r}")


def cpu_count() -> int:
    """The number of CPUs in the system, as multiprocessing.cpu_count().
    :func:`available_cpus` counts those this process may use, which is what
    a pool starts by default."""
    count = os.cpu_count()
    if count is None:
        raise NotImplementedError("cannot determine number of cpus")
    return count
