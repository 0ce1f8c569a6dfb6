"""Properties of the runtime under the Python API: no helper threads, Ctrl-C
during a wait, worker signal handling, forks of the parent, and reaping."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
import types
from typing import Any, cast

import helpers
import pytest

import forkfarm

pytestmark = pytest.mark.timeout(60)


def test_no_python_helper_threads() -> None:
    before = threading.active_count()
    with forkfarm.Pool(2) as pool:
        result = pool.map_async(helpers.square, range(1000))
        assert threading.active_count() == before
        assert result.get(30) == [x * x for x in range(1000)]
    with forkfarm.Executor(2) as executor:
        assert executor.submit(helpers.square, 3).result(30) == 9
        assert threading.active_count() == before


def test_ctrl_c_interrupts_a_blocking_get() -> None:
    with forkfarm.Pool(2) as pool:
        result = pool.apply_async(helpers.sleep_and_return, (30, "late"))
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        start = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                result.get(20)
        finally:
            timer.cancel()
        assert time.monotonic() - start < 1.5


def worker_pids(pool: forkfarm.Pool, count: int) -> list[int]:
    """The pids of the pool's workers, once all of them have started."""
    deadline = time.monotonic() + 10
    while len(pids := pool._core.worker_pids()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return pids


def test_workers_ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the pool, not each worker,
    # decides what it means.
    with forkfarm.Pool(2) as pool:
        pids = worker_pids(pool, 2)
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        assert pool.map(helpers.square, range(20)) == [x * x for x in range(20)]
        assert sorted(pool._core.worker_pids()) == sorted(pids)


def test_pool_copied_into_a_worker_refuses_use() -> None:
    with forkfarm.Pool(1) as pool:
        helpers.INHERITED_POOL = pool
        try:
            with forkfarm.Pool(1) as probe:
                message = probe.apply(helpers.use_inherited_pool)
        finally:
            helpers.INHERITED_POOL = None
        assert "belongs to the process that created it" in message


def test_nested_pool_inside_a_worker() -> None:
    with forkfarm.Pool(2) as pool:
        assert pool.apply(helpers.nested_pool_sum, (10,)) == sum(x * x for x in range(10))


def test_terminate_reaps_everything() -> None:
    pool = forkfarm.Pool(2)
    results = [pool.apply_async(helpers.sleep_and_return, (30, i)) for i in range(50)]
    pids = worker_pids(pool, 2)
    assert len(pids) == 2
    start = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - start < 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for result in results:
        with pytest.raises(forkfarm.PoolTerminatedError):
            result.get(1)


def test_abandoned_imap_iterator() -> None:
    # Dropping an iterator whose tasks still run must not disturb them or
    # the pool (their completion queue outlives the iterator).
    import gc

    with forkfarm.Pool(2) as pool:
        for _ in range(5):
            it = pool.imap_unordered(helpers.sleep_and_return, [0.01] * 40)
            next(it)
            del it
            gc.collect()
        assert pool.map(helpers.square, range(100)) == [x * x for x in range(100)]


def test_the_core_raises_the_final_exceptions() -> None:
    """Runtime codes come out of _core as the exceptions users catch
    (pymodule/errors.c's table), with the classes the package registered
    once at import."""
    pool = forkfarm.Pool(1)
    try:
        pool.close()
        with pytest.raises(ValueError, match="Pool not running"):
            pool._core.submit(b"")
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply_async(abs, (1,))
    finally:
        pool.terminate()
    with pytest.raises(TypeError, match="unexpected keyword 'Bogus'"):
        forkfarm._core.register_errors(Bogus=ValueError)
    with pytest.raises(TypeError, match="AbandonedLockWarning must be a subclass of RuntimeWarning"):
        forkfarm._core.register_errors(AbandonedLockWarning=ValueError)
    q = forkfarm.Queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.close()


def test_the_worker_hooks_are_one_object_checked_once() -> None:
    # _core.Pool and _core.zygote_serve read a WorkerHooks once; what is
    # missing or of the wrong kind is named, before any process starts.
    from forkfarm import _core, _protocol

    hooks = _protocol.WORKER_HOOKS
    fields = hooks._asdict()
    del fields["worker_exit"]
    missing = types.SimpleNamespace(**fields)
    with pytest.raises(TypeError, match="no 'worker_exit'"):
        _core.Pool(1, cast(Any, missing), None, ())
    with pytest.raises(TypeError, match="'encode_error' must be callable"):
        _core.Pool(1, hooks._replace(encode_error=cast(Any, None)), None, ())
    with pytest.raises(TypeError, match="'protocol' must be an int"):
        _core.Pool(1, hooks._replace(protocol=cast(Any, "5")), None, ())
    # The module itself is no longer the hooks.
    with pytest.raises(TypeError, match="no 'protocol'"):
        _core.Pool(1, cast(Any, _protocol), None, ())
    with pytest.raises(TypeError, match="no 'worker_exit'"):
        _core.zygote_serve(-1, cast(Any, missing), None, ())
