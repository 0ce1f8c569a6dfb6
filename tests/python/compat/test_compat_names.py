"""Every public name and submodule of multiprocessing is in forkfarm, with
multiprocessing's meaning: the names of ``multiprocessing.__all__``, each
submodule with the names of its ``__all__``, and a context's every method.
Submodules where forkfarm has its own implementation expose forkfarm's;
the others are the standard library's and share its state."""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.util
import os
import pkgutil
import sys
from typing import Any

import pytest

import forkfarm

pytestmark = pytest.mark.timeout(60)

SUBMODULES = sorted(m.name for m in pkgutil.iter_modules(multiprocessing.__path__))


@pytest.mark.parametrize("name", sorted(multiprocessing.__all__))
def test_every_name_of_multiprocessing(name: str) -> None:
    assert name in forkfarm.__all__
    assert getattr(forkfarm, name) is not None


def test_all_is_sorted_and_every_name_exists() -> None:
    assert forkfarm.__all__ == sorted(set(forkfarm.__all__))
    missing = [name for name in forkfarm.__all__ if name not in dir(forkfarm) and not hasattr(forkfarm, name)]
    assert not missing


@pytest.mark.parametrize("name", SUBMODULES)
def test_every_submodule_with_the_names_of_its_all(name: str) -> None:
    try:
        stdlib = importlib.import_module(f"multiprocessing.{name}")
    except ImportError as error:
        # popen_spawn_win32 needs msvcrt: it imports on Windows only.
        pytest.skip(f"multiprocessing.{name} does not import here either: {error}")
    ours = importlib.import_module(f"forkfarm.{name}")
    assert getattr(forkfarm, name) is ours
    missing = [n for n in getattr(stdlib, "__all__", ()) if not hasattr(ours, n)]
    assert not missing
    assert sorted(getattr(ours, "__all__", ())) == list(getattr(ours, "__all__", ()))


def test_submodules_expose_forkfarms_own_implementations() -> None:
    assert forkfarm.queues.Queue is forkfarm.Queue
    assert forkfarm.queues.JoinableQueue is forkfarm.JoinableQueue
    assert forkfarm.synchronize.Lock is forkfarm.Lock
    assert forkfarm.synchronize.Condition is forkfarm.Condition
    assert forkfarm.connection.Pipe is forkfarm.Pipe
    assert forkfarm.sharedctypes.Value is forkfarm.Value
    assert forkfarm.pool.Pool is forkfarm.Pool
    assert forkfarm.context.Process is forkfarm.Process
    assert forkfarm.reducer is forkfarm.reduction
    assert forkfarm.reduction.send_handle.__module__ == "forkfarm.reduction"
    # The wrappers Value and Array return are multiprocessing's classes.
    assert isinstance(forkfarm.Value("i", 3), forkfarm.sharedctypes.Synchronized)
    assert isinstance(forkfarm.Array("i", 3), forkfarm.sharedctypes.SynchronizedArray)


def test_the_standard_librarys_submodules_share_its_state() -> None:
    import multiprocessing.dummy
    import multiprocessing.heap
    import multiprocessing.managers
    import multiprocessing.spawn

    assert forkfarm.util.get_logger is multiprocessing.util.get_logger
    assert forkfarm.util._afterfork_registry is multiprocessing.util._afterfork_registry
    assert forkfarm.util.Finalize is multiprocessing.util.Finalize
    assert callable(forkfarm.util._cleanup_tests)
    assert forkfarm.process.current_process() is multiprocessing.current_process()
    assert issubclass(forkfarm.Process, forkfarm.process.BaseProcess)
    assert forkfarm.managers.BaseManager is multiprocessing.managers.BaseManager
    assert forkfarm.managers.ListProxy is multiprocessing.managers.ListProxy  # type: ignore[attr-defined]
    assert forkfarm.dummy.Pool is multiprocessing.dummy.Pool
    assert forkfarm.dummy.connection.Pipe is multiprocessing.dummy.connection.Pipe
    assert forkfarm.heap.BufferWrapper is multiprocessing.heap.BufferWrapper
    assert forkfarm.spawn.get_executable is multiprocessing.spawn.get_executable
    assert forkfarm.context.ForkProcess is multiprocessing.context.ForkProcess
    with pytest.raises(AttributeError, match="forkfarm.util"):
        forkfarm.util.no_such_name  # noqa: B018


@pytest.mark.parametrize("method", [None, "fork", "forkserver", "spawn"])
def test_a_context_has_every_name_of_multiprocessings(method: str | None) -> None:
    theirs = multiprocessing.get_context(method)
    ours = forkfarm.get_context(method)
    missing = [n for n in dir(theirs) if not n.startswith("_") and not hasattr(ours, n)]
    assert not missing


def _store(d: Any, key: str, value: Any) -> None:
    d[key] = value


def test_the_new_names_through_a_context(mp: Any) -> None:
    ctx = mp.get_context("fork")
    assert ctx.get_logger() is logging.getLogger("multiprocessing")
    assert ctx.reducer is mp.reduction
    assert ctx.allow_connection_pickling() is None
    ctx.set_executable(sys.executable)
    assert os.fsdecode(mp.spawn.get_executable()) == sys.executable
    with ctx.Manager() as manager:
        assert isinstance(manager, mp.managers.SyncManager)
        shared = manager.dict()
        process = ctx.Process(target=_store, args=(shared, "key", 42))
        assert isinstance(process, mp.process.BaseProcess)
        process.start()
        process.join(10)
        assert process.exitcode == 0
        assert shared.copy() == {"key": 42}


def test_dummy_is_threads(mp: Any) -> None:
    import threading

    with mp.dummy.Pool(2) as pool:
        idents = set(pool.map(lambda _: threading.get_ident(), range(8)))
        assert pool.map(abs, [-1, -2]) == [1, 2]
    assert idents  # threads of this process: nothing was pickled
    a, b = mp.dummy.Pipe()
    a.send(lambda: 1)  # threads: not even a lambda is pickled
    assert b.recv()() == 1
    assert mp.dummy.current_process() is threading.current_thread()
