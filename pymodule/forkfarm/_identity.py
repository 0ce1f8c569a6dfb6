"""Who a pool's worker is, in multiprocessing's terms.

multiprocessing's pool workers are Process objects: in a worker,
``current_process()`` is ``ForkPoolWorker-N`` (daemonic, with the parent's
authkey) and ``parent_process()`` is the process that made the pool, alive
while it runs. forkfarm's workers are forked from a zygote, not started as
Process objects, so each takes that identity as its first act, from what
the parent wrote down when it made the pool (the same for a zygote forked
from here and one made by the fork server).
"""

from __future__ import annotations

import itertools
import multiprocessing.process
import os
import sys
import threading
from typing import Any, NamedTuple

from . import _core, _logging

# multiprocessing's process module, whose private state (the current and
# parent process) this module sets as a child's bootstrap does; typeshed
# does not describe it.
_mp_process: Any = multiprocessing.process

# The prefix of a worker's name, by start method: multiprocessing's.
_KIND = {"fork": "Fork", "forkserver": "ForkServer", "spawn": "Spawn"}

# loky's reusable executor's module: joblib's vendored copy, loky's own.
_LOKY_MODULES = ("joblib.externals.loky.reusable_executor", "loky.reusable_executor")

# The executors a worker inherited from loky's module and forgot: kept for
# the worker's life, never collected (see forget_loky).
_inherited: list[Any] = []


class WorkerIdentity(NamedTuple):
    """What a worker needs to answer as multiprocessing's workers do."""

    name_prefix: str  # "ForkPoolWorker", "ForkServerProcess", ...
    parent_pid: int
    parent_name: str
    # The parent's authkey, so that a worker may reach the parent's
    # managers and listeners, as multiprocessing's workers may.
    authkey: bytes
    # The level from which it forwards its log records to the parent
    # (_logging.py), or None.
    log_level: int | None = None


def identity_for(method: str, role: str, log_level: int | None = None) -> WorkerIdentity:
    """The identity that the workers of a pool made here will take:
    ``role`` is ``"PoolWorker"`` (Pool) or ``"Process"`` (Executor)."""
    parent = _mp_process.current_process()
    return WorkerIdentity(
        _KIND.get(method, "Fork") + role, os.getpid(), parent.name, bytes(parent.authkey), log_level
    )


class _PoolWorkerProcess(multiprocessing.process.BaseProcess):
    """The Process object a worker is, to itself; it is never started."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - multiprocessing's name
        raise RuntimeError("a pool worker's own process object cannot be started")


def become_worker(identity: WorkerIdentity) -> None:
    """Makes ``current_process()`` and ``parent_process()`` answer, in this
    worker, as they do in multiprocessing's, and starts it as
    multiprocessing starts a child (``BaseProcess._bootstrap``)."""
    slot = _core.worker_slot()
    me: Any = _PoolWorkerProcess(name=f"{identity.name_prefix}-{slot + 1}")
    me._identity = (slot + 1,)
    me._config["authkey"] = _mp_process.AuthenticationString(identity.authkey)
    me._config["daemon"] = True  # as multiprocessing's workers are
    me._parent_pid = identity.parent_pid
    me._parent_name = identity.parent_name
    _mp_process._current_process = me
    _mp_process._children = set()
    _mp_process._process_counter = itertools.count(1)
    _mp_process._parent_process = _parent_of(identity)
    # What multiprocessing's children run first: the parent's finalizers
    # dropped, and the util.register_after_fork callbacks run. Without them
    # an inherited Queue the parent had put to kept the parent's feeder
    # thread, which does not exist here: what a task put was never sent.
    _mp_process.BaseProcess._after_fork()
    forget_loky()


def _parent_of(identity: WorkerIdentity) -> Any:
    try:
        # Readable once the parent has exited, as a child's sentinel is.
        sentinel = os.pidfd_open(identity.parent_pid)
    except OSError:
        # The parent has gone already (or the kernel predates pidfds):
        # multiprocessing would have no parent to offer either.
        return None
    return _mp_process._ParentProcess(identity.parent_name, identity.parent_pid, sentinel)


def forget_loky() -> None:
    """Forgets, in a new worker, loky's reusable executor of the parent, so
    that ``get_reusable_executor()`` here makes its own and fails or works
    at once, as in a fresh multiprocessing worker (a daemonic process: it
    raises AssertionError), instead of handing out the parent's executor,
    whose manager thread does not exist here: its futures never finish."""
    for name in _LOKY_MODULES:
        module: Any = sys.modules.get(name)
        if module is None:
            continue
        # loky resets its resource tracker after a fork but not these
        # globals, so a fork's copy is reset here: the executor kept
        # (collecting it would run a callback that takes the parent's lock
        # and writes to the parent's manager thread's pipe), the lock new
        # (a thread of the parent may have held it at the fork).
        if getattr(module, "_executor", None) is not None:
            _inherited.append(module._executor)
        module._executor = None
        module._executor_kwargs = None
        module._executor_lock = threading.RLock()


def start_worker(
    identity: WorkerIdentity, initializer: Any, *initargs: Any
) -> None:
    """A worker's first act, before the rest of its start-up and the pool's
    initializer (``initializer(*initargs)``)."""
    become_worker(identity)
    _logging.start_worker(identity.log_level)
    if initializer is not None:
        initializer(*initargs)
