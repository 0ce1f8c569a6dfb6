"""Tasks for test_fork_safety.py: each starts a pool or an executor inside
the worker that runs it and reports what happened, as a picklable tuple:
``("ok", value)`` or ``("error", exception type name, message)``.

Every inner wait has a timeout (INNER_TIMEOUT), so that a pool that would
hang inside a worker shows as a ``TimeoutError`` result instead of a hang.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import threading
import time
from typing import Any

INNER_TIMEOUT = 20.0


def square(x: int) -> int:
    return x * x


def _outcome(run: Any, n: int) -> tuple[Any, ...]:
    try:
        return ("ok", run(n))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        return ("error", type(exc).__name__, str(exc)[:300])


def _loky(n: int) -> int:
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=2)
    return int(executor.submit(square, n).result(timeout=INNER_TIMEOUT))


def _process_pool_executor(n: int) -> int:
    with concurrent.futures.ProcessPoolExecutor(2) as executor:
        return int(executor.submit(square, n).result(timeout=INNER_TIMEOUT))


def _mp_pool(n: int) -> int:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return int(pool.apply_async(square, (n,)).get(timeout=INNER_TIMEOUT))


def _forkfarm_pool(n: int) -> int:
    import forkfarm

    with forkfarm.Pool(2) as pool:
        return int(sum(pool.map_async(square, range(n)).get(timeout=INNER_TIMEOUT)))


def _forkfarm_fork_pool(n: int) -> int:
    import forkfarm

    with forkfarm.get_context("fork").Pool(2) as pool:
        return int(sum(pool.map_async(square, range(n)).get(timeout=INNER_TIMEOUT)))


def _forkfarm_executor(n: int) -> int:
    import forkfarm

    with forkfarm.Executor(2) as executor:
        return int(executor.submit(square, n).result(timeout=INNER_TIMEOUT))


def _forkfarm_reusable(n: int) -> int:
    import forkfarm

    executor = forkfarm.get_reusable_executor(max_workers=2)
    try:
        return int(executor.submit(square, n).result(timeout=INNER_TIMEOUT))
    finally:
        executor.shutdown(wait=True)


INSIDE = {
    "loky": _loky,
    "process_pool_executor": _process_pool_executor,
    "mp_pool": _mp_pool,
    "forkfarm_pool": _forkfarm_pool,
    "forkfarm_fork_pool": _forkfarm_fork_pool,
    "forkfarm_executor": _forkfarm_executor,
    "forkfarm_reusable": _forkfarm_reusable,
}


def inside(kind: str, n: int) -> tuple[Any, ...]:
    """Starts a pool of ``kind`` in this worker and runs ``square(n)`` (or
    a sum of squares) on it."""
    return _outcome(INSIDE[kind], n)


def daemon_flag(_: Any = None) -> bool:
    return bool(multiprocessing.current_process().daemon)


# --------------------------------------------------------------------------
# A multiprocessing Queue the parent used before it forked
# --------------------------------------------------------------------------

QUEUE: Any = None


def make_queue() -> None:
    """A Queue the parent puts to and gets from (its feeder thread starts)."""
    global QUEUE
    QUEUE = multiprocessing.get_context("fork").Queue()
    QUEUE.put("parent")
    assert QUEUE.get(timeout=INNER_TIMEOUT) == "parent"


def put_to_inherited_queue(value: Any) -> str:
    """In a fork's worker: puts to the Queue it inherited, and waits until
    its feeder thread has written it."""
    QUEUE.put(value)
    QUEUE.close()
    QUEUE.join_thread()
    return "sent"


# --------------------------------------------------------------------------
# Threads of the parent that hold locks when it forks
# --------------------------------------------------------------------------

# A library's lock, which a thread of the parent keeps taking.
LIBRARY_LOCK = threading.Lock()
BUSY_LOGGER = "fork_safety_busy"


class FormattingHandler(logging.Handler):
    """Formats each record under the handler's lock, and counts them. No
    stream: a buffered stream's own lock, held by a thread of the parent
    when it forked, stays held in the child (CPython resets logging's
    locks after a fork, not io's), whatever forks it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)
        self.count += 1


class Busy:
    """Threads that keep taking logging's locks (the module's and a
    handler's), a library's lock and malloc's, until closed."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.logger = logging.getLogger(BUSY_LOGGER)
        self.handler = FormattingHandler()
        self.logger.addHandler(self.handler)
        self.logger.propagate = False
        self.threads = [
            threading.Thread(target=target, daemon=True)
            for target in (self._log, self._allocate, self._hold)
        ]
        for thread in self.threads:
            thread.start()

    def _log(self) -> None:
        while not self.stop.is_set():
            self.logger.warning("busy %d", 1)
            logging.getLogger(f"{BUSY_LOGGER}.{time.monotonic_ns() % 97}")

    def _allocate(self) -> None:
        while not self.stop.is_set():
            blocks = [bytearray(4096 + i) for i in range(64)]
            del blocks

    def _hold(self) -> None:
        while not self.stop.is_set():
            with LIBRARY_LOCK:
                time.sleep(0.0005)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        self.logger.removeHandler(self.handler)
        self.handler.close()


def log_and_allocate(n: int) -> int:
    """Takes logging's locks (the busy logger's handler too, in a fork's
    worker) and allocates, in the worker."""
    logging.getLogger(BUSY_LOGGER).warning("task %d", n)
    logging.getLogger(f"{BUSY_LOGGER}.task.{n}")
    blocks = [bytearray(1024 + i) for i in range(256)]
    return n * n + len(blocks) - 256


def worker_and_library_lock(_: Any = None) -> tuple[str, bool]:
    """This worker's name, and whether it can take the library's lock."""
    taken = LIBRARY_LOCK.acquire(timeout=5)
    if taken:
        LIBRARY_LOCK.release()
    return multiprocessing.current_process().name, taken
