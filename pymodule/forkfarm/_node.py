"""The node a pool runs on: the CPUs this process may use, the BLAS and
OpenMP threads each worker may start, and where each worker is pinned.

- :func:`available_cpus` counts the CPUs this process may run on (its
  affinity, as Slurm, taskset and containers set it), bounded by its
  cgroup's CPU quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` in v1).
  ``os.cpu_count()`` counts the machine's.
- Each worker limits its BLAS and OpenMP threads (``inner_threads``) before
  its initializer runs: through threadpoolctl for the libraries already
  loaded (a forked worker inherits NumPy's), and through the
  ``OMP_NUM_THREADS`` family for those loaded later. The parent's own
  settings are never touched.
- ``pin=`` gives each worker slot a disjoint set of the allowed CPUs,
  spread across NUMA nodes and sockets; a replacement fills its
  predecessor's slot, and so gets its CPUs.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _core

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

SYSFS_CPU = Path("/sys/devices/system/cpu")
SYSFS_NODE = Path("/sys/devices/system/node")


# -- how many CPUs ---------------------------------------------------------------


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs the cgroup quota allows (quota / period), the smallest along the
    path of this process's cgroups; None without a quota."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if hierarchy == "0" and controllers == "":
            for base in (root, root / "unified"):
                limits += _walk(base, relative, _v2_limit)
        elif "cpu" in controllers.split(","):
            mount = root / controllers if (root / controllers).exists() else root / "cpu"
            limits += _walk(mount, relative, _v1_limit)
    return min(limits) if limits else None


def _walk(base: Path, relative: str, read: Callable[[Path], float | None]) -> list[float]:
    """The limits found from base/relative up to base."""
    found = []
    directory = base / relative
    while True:
        limit = read(directory)
        if limit is not None:
            found.append(limit)
        if directory == base or base not in directory.parents:
            return found
        directory = directory.parent


def _v2_limit(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _v1_limit(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


# The cgroup quota as last read, and when (time.monotonic()): reading it
# takes a walk up the cgroup tree, a few hundred µs of every pool's start
# when the files are cold, for a figure that seldom changes.
_quota_read: tuple[float, float | None] | None = None
QUOTA_FRESH = 1.0  # seconds a reading is used for


def _recent_cgroup_quota() -> float | None:
    global _quota_read
    now = time.monotonic()
    if _quota_read is None or not 0 <= now - _quota_read[0] < QUOTA_FRESH:
        _quota_read = (now, _cgroup_quota())
    return _quota_read[1]


def available_cpus() -> int:
    """The CPUs this process may actually use: its affinity (Slurm's
    ``--cpus-per-task``, taskset, a container's cpuset), bounded by its
    cgroup's CPU quota, rounded up (a reading of it less than a second
    old is used again). At least 1. ``cpu_count()`` is the machine's count,
    as ``multiprocessing.cpu_count()``."""
    count = len(os.sched_getaffinity(0))
    quota = _recent_cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


# -- the topology --------------------------------------------------------------


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return default


def numa_node_of(cpu: int) -> int:
    """The NUMA node of a CPU (0 where the machine reports none)."""
    for entry in (SYSFS_CPU / f"cpu{cpu}").glob("node*"):
        suffix = entry.name[4:]
        if suffix.isdigit():
            return int(suffix)
    return 0


def numa_nodes() -> list[int]:
    """The NUMA nodes of the machine, as /sys/devices/system/node lists them."""
    found = sorted(int(p.name[4:]) for p in SYSFS_NODE.glob("node*") if p.name[4:].isdigit())
    return found or [0]


def _place(cpu: int) -> tuple[int, int, int]:
    """(NUMA node, socket, core) of a CPU."""
    topology = SYSFS_CPU / f"cpu{cpu}" / "topology"
    return numa_node_of(cpu), _read_int(topology / "physical_package_id", 0), _read_int(topology / "core_id", cpu)


# -- pinning ---------------------------------------------------------------------

Pin = bool | str | Sequence[Sequence[int]] | None


def pin_plan(pin: Pin, workers: int, cpus: Sequence[int] | None = None) -> list[list[int]] | None:
    """The CPUs of each worker slot, or None not to pin.

    - ``True`` or ``"cores"``: the allowed CPUs in disjoint groups of equal
      size (sibling hyperthreads together), the groups taken in turn from
      each NUMA node, so that workers spread across nodes;
    - ``"sockets"``: worker i gets every allowed CPU of socket i mod sockets;
    - a list of CPU lists: one per worker, as given (MPIRE's ``cpu_ids``).
    """
    if pin is None or pin is False:
        return None
    allowed = list(cpus) if cpus is not None else allowed_cpus()
    if isinstance(pin, str) and pin not in ("cores", "sockets"):
        raise ValueError(f"pin must be True, 'cores', 'sockets' or a list of CPU lists, not {pin!r}")
    if pin is True or pin == "cores":
        if workers > len(allowed):
            raise ValueError(f"cannot pin {workers} workers to disjoint CPUs: only {len(allowed)} are allowed")
        return _spread(allowed, workers)
    if pin == "sockets":
        sockets: dict[int, list[int]] = {}
        for cpu in allowed:
            sockets.setdefault(_place(cpu)[1], []).append(cpu)
        groups = [sockets[s] for s in sorted(sockets)]
        return [list(groups[i % len(groups)]) for i in range(workers)]
    if isinstance(pin, (str, bytes)) or not isinstance(pin, Sequence):
        raise TypeError(f"pin must be True, 'cores', 'sockets' or a list of CPU lists, not {type(pin).__name__}")
    plan = [sorted({int(cpu) for cpu in group}) for group in pin]
    if len(plan) != workers:
        raise ValueError(f"pin gives {len(plan)} CPU lists for a pool of {workers} workers: one per worker")
    for group in plan:
        outside = [cpu for cpu in group if cpu not in allowed]
        if not group or outside:
            raise ValueError(f"pin asks for CPUs {outside or group} that this process may not use (allowed: {allowed})")
    return plan


def _spread(
    allowed: list[int], workers: int, place: Callable[[int], tuple[int, int, int]] | None = None
) -> list[list[int]]:
    """Disjoint groups of the allowed CPUs, one per worker: each NUMA node's
    CPUs in core order (siblings together), the groups dealt to the workers
    node by node in turn. place gives a CPU's (node, socket, core)."""
    where = place or _place
    by_node: dict[int, list[int]] = {}
    for cpu in sorted(allowed, key=lambda c: (*where(c), c)):
        by_node.setdefault(where(cpu)[0], []).append(cpu)
    size = len(allowed) // workers
    nodes = [by_node[n] for n in sorted(by_node)]
    # How many workers each node gets, in proportion to its CPUs.
    shares = [len(cpus) * workers // len(allowed) for cpus in nodes]
    for i in sorted(range(len(nodes)), key=lambda i: -len(nodes[i]))[: workers - sum(shares)]:
        shares[i] += 1
    per_node = []
    for cpus, share in zip(nodes, shares, strict=True):
        per_node.append([cpus[k * size : (k + 1) * size] for k in range(share)])
    plan: list[list[int]] = []
    while len(plan) < workers:
        for groups in per_node:
            if groups:
                plan.append(groups.pop(0))
    return [group for group in plan if group][:workers]


@dataclass(frozen=True)
class WorkerPlace:
    """Where a worker runs."""

    pid: int
    cpus: tuple[int, ...]  #: the CPUs it may run on
    nodes: tuple[int, ...]  #: their NUMA nodes


def layout(pids: Sequence[int]) -> list[WorkerPlace]:
    """The places of the live workers of these pids (one that exited in
    between is left out)."""
    places = []
    for pid in pids:
        try:
            cpus = tuple(sorted(os.sched_getaffinity(pid)))
        except OSError:
            continue
        places.append(WorkerPlace(pid, cpus, tuple(sorted({numa_node_of(c) for c in cpus}))))
    return places


# -- in the worker ------------------------------------------------------------------


def _stop_openblas_servers(controller: Any) -> None:
    """OpenBLAS (pthreads) restarts its thread server when its thread count
    is set in a forked child, and the server's threads spin for a while:
    a worker capped at one thread would burn a CPU for nothing. OpenBLAS's
    own fork handler stops them the same way; with one thread it runs
    every call inline and never needs them."""
    for lib in controller.lib_controllers:
        if getattr(lib, "internal_api", "") != "openblas" or getattr(lib, "threading_layer", "") != "pthreads":
            continue
        shutdown = getattr(getattr(lib, "dynlib", None), "blas_thread_shutdown_", None)
        if shutdown is not None:
            shutdown()


def _cap_forked_openblas(lib: Any, threads: int) -> bool:
    """Caps an OpenBLAS (pthreads) whose thread server a fork left stopped
    (its fork handler stops it in the parent before every fork) by setting
    the thread count it reads, ``blas_cpu_number``, as
    ``openblas_set_num_threads`` would once it had restarted the server
    (its threads, about 2 ms of a worker's start, then stopped again by
    ``_stop_openblas_servers``). The server starts when a call needs it, as
    it would have anyway. False, and nothing done, where this does not
    apply."""
    if getattr(lib, "internal_api", "") != "openblas" or getattr(lib, "threading_layer", "") != "pthreads":
        return False
    import ctypes

    try:
        dynlib = lib.dynlib
        running = ctypes.c_int.in_dll(dynlib, "blas_server_avail")
        count = ctypes.c_int.in_dll(dynlib, "blas_cpu_number")
    except (AttributeError, ValueError):  # another build's symbols
        return False
    if running.value != 0 or not 1 <= threads <= count.value:
        return False
    count.value = threads
    return True


_limits: Any = None  # threadpoolctl's limiter, kept for the worker's life
# threadpoolctl's view of the thread pools loaded in the parent, made when a
# pool is created: forked workers inherit it and only apply the limit (tens
# of µs, where importing threadpoolctl and scanning the libraries again in
# every worker cost milliseconds).
_controller: Any = None

# Modules whose import loads a BLAS or OpenMP runtime.
_THREADED_MODULES = ("numpy", "scipy", "torch", "sklearn", "numexpr", "numba")


def _thread_pools_loaded() -> bool:
    return any(name in sys.modules for name in _THREADED_MODULES)


_controller_key = 0


def prepare_parent() -> None:
    """Before a pool with a thread cap forks: the controller its workers
    will use, if this process has loaded a threaded library. It is made
    again only when modules were imported since."""
    global _controller, _controller_key
    if not _thread_pools_loaded():
        _controller = None
        return
    if _controller is not None and _controller_key == len(sys.modules):
        return
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return
    _controller = ThreadpoolController()
    _controller_key = len(sys.modules)


def default_inner_threads(processes: int) -> int:
    """The BLAS and OpenMP threads each of processes workers may start: the
    available CPUs shared among them, at least 1."""
    return max(1, available_cpus() // processes)


def start_worker(
    inner_threads: int | None,
    plan: list[list[int]] | None,
    initializer: Callable[..., object] | None,
    *initargs: Any,
) -> None:
    """A worker's first act, before the pool's initializer: take its slot's
    CPUs, and cap its BLAS and OpenMP threads."""
    global _limits
    if plan is not None:
        slot = _core.worker_slot()
        if slot >= 0:
            os.sched_setaffinity(0, plan[slot % len(plan)])
    if inner_threads is not None:
        # For what loads from here on.
        for name in THREAD_VARIABLES:
            os.environ[name] = str(inner_threads)
        # For what is loaded already: inherited from the parent, or loaded
        # by the fork server's child.
        if _controller is not None:
            # Capping an OpenBLAS that a fork inherited through its API
            # restarts its thread server (about 2 ms): only where the cap
            # changes something, and not at all where the count can be set
            # with the server stopped.
            over = [lib for lib in _controller.lib_controllers if lib.num_threads > inner_threads]
            if any(not _cap_forked_openblas(lib, inner_threads) for lib in over):
                _limits = _controller.limit(limits=inner_threads)
                if inner_threads == 1:
                    _stop_openblas_servers(_controller)
        elif _thread_pools_loaded():
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # the variables still cover what loads later
                pass
            else:
                _limits = threadpool_limits(limits=inner_threads)
    if initializer is not None:
        initializer(*initargs)
