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

from .. import _backend
from .root import MpiBackend, ranks, shutdown
from .wire import world

__all__ = ["backend", "hybrid", "launch", "launched", "node_ranks", "ranks", "shutdown", "world"]

_launched = False
# Set by the launcher: None, or hybrid mode with this many workers per rank
# (0: the rank's share of its node's CPUs).
_hybrid: int | None = None
_node_ranks = 1


def launch(node_ranks: int, hybrid: int | None, root: bool) -> None:
    """What ``python -m forkfarm.mpi`` learnt at launch, on every rank: how
    many ranks share this node and the hybrid mode. On rank 0 the pools made
    with neither a context nor a backend then farm to the other ranks."""
    global _launched, _hybrid, _node_ranks
    _node_ranks = node_ranks
    _hybrid = hybrid
    if root:
        _launched = True
        _backend.set_default(backend())


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


def backend() -> MpiBackend:
    """The backend of pools over the other ranks (``backend="mpi"``)."""
    return MpiBackend(_hybrid)
