"""forkfarm across MPI ranks.

Launch a script with::

    mpiexec -n 4 python -m forkfarm.mpi [--hybrid [--workers N]] script.py [args]

Rank 0 runs the script; the other ranks run its tasks, or with
``--hybrid`` each runs them on a local forkfarm pool of its node's cores
(one rank per node is then enough). Inside it,
``forkfarm.Pool()`` and ``forkfarm.Executor()`` farm tasks to every other
rank with the same API (``backend="mpi"`` asks for it explicitly; a pool
made with ``backend="local"`` forks workers on rank 0's node as usual).
One MPI pool runs at a time. See ``docs/across-nodes.md``.
"""

from __future__ import annotations

import threading
from typing import Any

_launched = False
_active = threading.Lock()
# Set by the launcher: None, or hybrid mode with this many workers per rank
# (0: the rank's share of its node's CPUs).
_hybrid: int | None = None
_node_ranks = 1


def launched() -> bool:
    """True on rank 0 of a program started with ``python -m forkfarm.mpi``."""
    return _launched


def hybrid() -> int | None:
    """None, or in hybrid mode the workers each rank runs (0: its share of
    its node's CPUs)."""
    return _hybrid


def node_ranks() -> int:
    """How many ranks run on this rank's node (counted at launch)."""
    return _node_ranks


def world() -> Any:
    """The communicator the pools farm over: MPI.COMM_WORLD."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def ranks() -> int:
    """The ranks that run tasks: all but rank 0 (at least one)."""
    count = int(world().Get_size()) - 1
    if count < 1:
        raise ValueError(
            "an MPI pool needs at least 2 ranks: rank 0 runs the program, the others its tasks"
        )
    return count


def core(processes: int | None) -> tuple[Any, dict[str, Any]]:
    """Rank 0's pool over the other ranks, and what of __main__ they got."""
    from .. import _forkserver
    from .transport import Core

    if not _active.acquire(blocking=False):
        raise RuntimeError("one MPI pool runs at a time: close and join the other first")
    try:
        comm = world()
        if comm.Get_rank() != 0:
            raise RuntimeError("MPI pools are made on rank 0; the other ranks run their tasks")
        if processes is not None and processes != ranks():
            raise ValueError(
                f"an MPI pool runs on every rank but rank 0: {ranks()} here, not {processes} "
                "(start mpiexec with one more rank than workers)"
            )
        main, sent = _forkserver.main_by_value()
        global _current
        _current = Core(comm, main, _released, _hybrid)
        return _current, sent
    except BaseException:
        _active.release()
        raise


_current: Any = None


def _released() -> None:
    global _current
    _current = None
    _active.release()


def shutdown() -> None:
    """At the end of rank 0's program: a pool it left running is
    terminated, so that its ranks are free before they are told to exit."""
    core = _current
    if core is not None:
        core.terminate()
        core.join()
