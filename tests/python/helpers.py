"""Picklable task functions for the forkfarm test suite.

Workers receive tasks as by-reference pickles (``helpers.square`` and so on),
so everything a test sends to a worker has to live at module level in an
importable module. ``conftest.py`` puts this directory on ``sys.path`` so this
module is imported as the top-level module ``helpers`` in the test process and
in every worker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------
# Plain computations
# --------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def add(a: Any, b: Any) -> Any:
    return a + b


def add3(a: int, b: int, c: int) -> int:
    return a + b + c


def identity(x: Any) -> Any:
    return x


def type_name(x: Any) -> str:
    return type(x).__name__


def echo_kwargs(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def args_and_kwargs(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def length(x: Any) -> int:
    return len(x)


def make_bytes(n: int) -> bytes:
    # Not all the same byte, so a truncated or shuffled transfer is caught.
    block = bytes(range(256))
    reps, extra = divmod(n, len(block))
    return block * reps + block[:extra]


def getpid(_: Any = None) -> int:
    return os.getpid()


def square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def sleep_and_return(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def slow_identity(x: Any) -> Any:
    time.sleep(0.05)
    return x


# --------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------


class CustomError(Exception):
    """A user-defined exception type that must survive the trip home."""


def raise_value_error(msg: str) -> None:
    raise ValueError(msg)


def raise_custom_error(code: int, detail: str) -> None:
    raise CustomError(code, detail)


def raise_key_error_two_args() -> None:
    raise KeyError("missing", 7)


def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd: {x}")
    return x


def fail_at(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(x)
    return x * x


def fail_at_3_and_late_7(x: int) -> int:
    """Item 3 fails at once, item 7 fails only after a delay.

    Item 3 is then the first failure both by position and by time, so the
    expected exception does not depend on how "first" is defined.
    """
    if x == 3:
        raise ValueError(3)
    if x == 7:
        time.sleep(0.5)
        raise ValueError(7)
    return x


# --------------------------------------------------------------------------
# Worker death
# --------------------------------------------------------------------------


def _record_pid(pidfile: str | None) -> None:
    if pidfile is not None:
        Path(pidfile).write_text(str(os.getpid()))


def square_or_die_once(i: int, attempts: Any, doomed: bool) -> int:
    """Counts its runs in the shared array `attempts`; a doomed call SIGKILLs
    its worker on its first run (the soak of FAULTS row 25)."""
    attempts[i] += 1
    if doomed and attempts[i] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return i * i


def die_by_sigkill(pidfile: str | None = None) -> None:
    _record_pid(pidfile)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # not reached


def exit_with_code(code: int, pidfile: str | None = None) -> None:
    _record_pid(pidfile)
    os._exit(code)


def sigkill_at(x: int, bad: int) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)  # not reached
    return x * x


# --------------------------------------------------------------------------
# Rendezvous: proves that n tasks run at the same time
# --------------------------------------------------------------------------


def rendezvous(directory: str, n: int, name: str, timeout: float = 15.0) -> int:
    """Mark arrival in ``directory`` and wait until ``n`` tasks have arrived.

    Returns this worker's pid. Raises RuntimeError if the others do not show
    up in time, i.e. when fewer than ``n`` workers are running concurrently.
    """
    d = Path(directory)
    (d / f"{name}.arrived").write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(d.glob("*.arrived"))) >= n:
            return os.getpid()
        time.sleep(0.01)
    raise RuntimeError(f"rendezvous {name}: only {len(list(d.glob('*.arrived')))} of {n} arrived")


# --------------------------------------------------------------------------
# Initializers and worker-global state
# --------------------------------------------------------------------------

# Set by an initializer inside a worker.
WORKER_VALUE: Any = None
INIT_CALLS: int = 0

# Set by a test in the parent before it creates a pool.
MODULE_STATE: Any = "unset"


def set_worker_value(value: Any) -> None:
    global WORKER_VALUE, INIT_CALLS
    WORKER_VALUE = value
    INIT_CALLS += 1


def set_worker_value_pair(a: Any, b: Any) -> None:
    set_worker_value((a, b))


def get_worker_value(_: Any = None) -> Any:
    return WORKER_VALUE


def get_init_calls_and_pid(_: Any = None) -> tuple[int, int]:
    return INIT_CALLS, os.getpid()


def failing_initializer() -> None:
    raise RuntimeError("initializer failed on purpose")


def only_the_first_worker_starts(marker: str) -> None:
    """An initializer: the first worker to run it writes its pid to `marker`
    and starts; every later one exits with code 5 before it is ready."""
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os._exit(5)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)


def get_module_state(_: Any = None) -> Any:
    return MODULE_STATE


# A pool the parent sets before creating another pool, so that the second
# pool's workers hold a copy of it (see test_runtime.py).
INHERITED_POOL: Any = None


def use_inherited_pool() -> str:
    """Tries to use the parent's pool from inside a worker; returns the error."""
    try:
        INHERITED_POOL.apply(square, (2,))
    except RuntimeError as exc:
        return str(exc)
    return "no error"


def nested_pool_sum(n: int) -> int:
    """Runs a pool of its own inside a worker."""
    import forkfarm

    with forkfarm.Pool(2) as pool:
        return sum(pool.map(square, range(n)))


# --------------------------------------------------------------------------
# The data plane: how often a map's function is unpickled in a worker
# --------------------------------------------------------------------------

_unpickled: dict[str, int] = {}


def _rebuild_counted(token: str, offset: int) -> CountedAdder:
    _unpickled[token] = _unpickled.get(token, 0) + 1
    return CountedAdder(token, offset)


class CountedAdder:
    """Adds offset; counts, in each process, how many times it was
    unpickled there under its token."""

    def __init__(self, token: str, offset: int = 0) -> None:
        self.token = token
        self.offset = offset

    def __call__(self, x: int) -> int:
        return x + self.offset

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_counted, (self.token, self.offset)


def unpickled_count(token: str) -> tuple[int, int]:
    """(this worker's pid, how many times token was unpickled here)."""
    return os.getpid(), _unpickled.get(token, 0)


def _refuse_unpickling(reason: str) -> None:
    raise RuntimeError(reason)


class Unloadable:
    """A callable that pickles fine but cannot be unpickled in a worker."""

    def __call__(self, x: int) -> int:
        return x

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse_unpickling, ("this function cannot be loaded here",)


def sleep_then_identity(x: Any) -> Any:
    time.sleep(0.002)
    return x


def sleep_then_pid(_: Any) -> int:
    time.sleep(0.002)
    return os.getpid()


def as_float(x: int) -> float:
    return x / 7


def big_when_last(x: int) -> int:
    # One int beyond 64 bits in a chunk of small ones.
    return 2**70 + x if x == 999 else x


def true_when_even(x: int) -> int | bool:
    return True if x % 2 == 0 else x


class MyInt(int):
    pass


def my_int(x: int) -> int:
    return MyInt(x)


def special_float(x: int) -> float:
    return [float("nan"), -0.0, float("inf"), float("-inf"), 1e308, 5e-324][x % 6]


# ---- shared arrays and out-of-band buffers (test_shared.py) ----

_kept: list[Any] = []


def fill_rows(array: Any, start: int, stop: int, value: float) -> int:
    """Writes value into rows start:stop of a shared array, in place."""
    array[start:stop] = value
    return os.getpid()


def as_plain(array: Any) -> Any:
    """A private copy of an array, as a plain ndarray."""
    import numpy as np

    return np.array(array, copy=True)


def memory_of(array: Any) -> str:
    """What holds an array's memory in the worker: 'segment', 'region' (the
    arena) or 'private'."""
    from forkfarm import _core

    base = array
    while base is not None:
        if isinstance(base, _core.Segment):
            return "segment"
        if isinstance(base, _core.Region):
            return "region"
        base = getattr(base, "base", None)
        if isinstance(base, memoryview):
            base = base.obj
    return "private"


def keep_and_sum(array: Any) -> float:
    """Keeps a view of the array after the task, and sums it."""
    _kept.append(array[::2])
    return float(array.sum())


def make_array(n: int, value: float) -> Any:
    import numpy as np

    return np.full(n, value)


def write_last(array: Any, value: float) -> float:
    array[-1] = value
    return float(array[0])


def add_to_ctype(obj: Any, index: int, value: float) -> None:
    obj[index] = obj[index] + value


def increment_shared_counter(times: int) -> int:
    counter = WORKER_VALUE
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1
    return os.getpid()


def get_kept_sum(_: Any = None) -> float:
    return float(_kept[-1].sum()) if _kept else 0.0


def buffer_length(x: Any) -> int:
    return memoryview(x).nbytes


def touch_then_die(array: Any) -> None:
    """Reads an array it was sent, then dies by SIGKILL while holding it."""
    float(array[-1])
    os.kill(os.getpid(), signal.SIGKILL)


def make_shared(n: int, value: float) -> Any:
    """A shared array made in the worker, returned to the parent."""
    import forkfarm

    return forkfarm.full(n, value)


def make_and_drop_shared(count: int) -> int:
    """Makes and drops shared arrays in the worker; returns the worker's pid."""
    import forkfarm

    for i in range(count):
        array = forkfarm.full(1024, float(i))
        del array
    return os.getpid()


# --------------------------------------------------------------------------
# The fault matrix (test_faults.py)
# --------------------------------------------------------------------------


def segfault(_: Any = None) -> None:
    """Crashes the worker with a real SIGSEGV (a read of address 0)."""
    import ctypes

    ctypes.string_at(0)


def call_sys_exit(code: int = 3) -> None:
    import sys

    sys.exit(code)


def _crash_on_load(how: str) -> None:
    if how == "raise":
        raise RuntimeError("this argument refuses to load here")
    if how == "exit":
        os._exit(42)
    if how == "sys.exit":
        call_sys_exit(1)
    segfault()


class LoadsBadly:
    """An argument that pickles fine and fails to unpickle in the worker:
    by raising, by exiting (os._exit or sys.exit), or by crashing."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self) -> tuple[Any, ...]:
        return _crash_on_load, (self.how,)


PARENT_PID = os.getpid()


def _load_only_in_worker(value: int) -> int:
    if os.getpid() == PARENT_PID:
        raise RuntimeError("this result refuses to load in the parent")
    return value


class ResultLoadsBadly:
    """A result that pickles in the worker and fails to unpickle in the
    parent."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _load_only_in_worker, (1,)


def make_result_that_loads_badly(_: Any = None) -> ResultLoadsBadly:
    return ResultLoadsBadly()


def _refuse_pickling() -> Any:
    import pickle

    raise pickle.PicklingError("this result refuses to be pickled")


class PicklesBadly:
    """A result whose pickling raises PicklingError in the worker."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse_pickling()  # type: ignore[no-any-return]


class ExitsWhenPickled:
    """A result whose pickling calls sys.exit(1) in the worker."""

    def __reduce__(self) -> tuple[Any, ...]:
        call_sys_exit(1)
        raise AssertionError("unreachable")


def make_instance(cls: type[Any]) -> Any:
    return cls()


class Plain:
    """An object a weak reference can watch."""


def make_plain(_: Any = None) -> Plain:
    return Plain()


def log_to_queue_then_fail(q: Any) -> None:
    """An initializer that sends the ``concurrent.futures`` logger's
    records to q, then raises."""
    import logging
    from logging.handlers import QueueHandler

    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(QueueHandler(q))
    logger.propagate = False
    raise ValueError("this initializer fails")


def process_name_and_pid(_: Any = None) -> tuple[str, int]:
    """This process's multiprocessing name, and its pid."""
    import multiprocessing

    return multiprocessing.current_process().name, os.getpid()


def authkey(_: Any = None) -> bytes:
    """This process's multiprocessing authentication key."""
    import multiprocessing

    return bytes(multiprocessing.current_process().authkey)


def make_unpicklable_result(_: Any = None) -> Any:
    import threading

    return threading.Lock()


def pid_and_value(x: int) -> tuple[int, int]:
    return os.getpid(), x


def ignore_sigterm_then_sleep(seconds: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def die_unless_marked(path: str, value: Any) -> Any:
    """Counts its runs in path: dies by SIGKILL on the first, returns
    (value, runs) on the next."""
    with open(path, "a") as f:
        f.write("run\n")
    with open(path) as f:
        runs = len(f.readlines())
    if runs == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return value, runs


def always_die(path: str) -> None:
    with open(path, "a") as f:
        f.write("run\n")
    os.kill(os.getpid(), signal.SIGKILL)


_hoard: list[Any] = []


def grow_then_pid(megabytes: int) -> int:
    """Keeps megabytes of touched memory in the worker; returns its pid."""
    block = bytearray(megabytes << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    _hoard.append(block)
    return os.getpid()


# -- synchronization primitives (test_synchronize.py, FAULTS row 17) --------

SHARED_LOCK: Any = None


def set_shared_lock(lock: Any) -> None:
    """An initializer: keeps the lock the pool was given."""
    global SHARED_LOCK
    SHARED_LOCK = lock


def take_shared_lock_and_die() -> None:
    """Takes the pool's lock and dies holding it (SIGKILL)."""
    SHARED_LOCK.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


def take_lock_and_die(lock: Any) -> None:
    lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


def take_shared_lock(timeout: float) -> tuple[bool, list[str]]:
    """Takes and releases the pool's lock: (taken, warnings raised)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        taken = SHARED_LOCK.acquire(timeout=timeout)
        if taken:
            SHARED_LOCK.release()
    return taken, [str(w.message) for w in caught]


def add_under_lock(lock: Any, counter: Any, rounds: int) -> int:
    """Adds 1 to a shared counter rounds times, each under the lock."""
    for _ in range(rounds):
        with lock:
            counter.value += 1
    return os.getpid()


def set_event(event: Any) -> bool:
    event.set()
    return True


def wait_event(event: Any, timeout: float) -> bool:
    return bool(event.wait(timeout))


def release_semaphore(semaphore: Any, times: int) -> None:
    for _ in range(times):
        semaphore.release()


def increment_shared_value(_: Any = None) -> None:
    """Adds 1, under its lock, to the synchronized Value the pool's
    initializer kept (set_shared_lock)."""
    with SHARED_LOCK.get_lock():
        SHARED_LOCK.value += 1


# -- queues (test_queues.py, compat/test_queues.py) --------------------------


def put_all(q: Any, items: list[Any]) -> int:
    for item in items:
        q.put(item)
    return os.getpid()


def get_n(q: Any, n: int, timeout: float = 10.0) -> list[Any]:
    return [q.get(timeout=timeout) for _ in range(n)]


def consume_and_mark_done(q: Any, n: int) -> int:
    total = 0
    for _ in range(n):
        total += q.get(timeout=10)
        q.task_done()
    return total


def take_queue_lock_and_die(q: Any) -> None:
    """Takes a forkfarm queue's lock (the first field of its channel) and
    dies holding it."""
    lock = forkfarm_lock_of(q)
    lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


def forkfarm_lock_of(q: Any) -> Any:
    """The forkfarm Lock at the start of a queue's channel: its mutex."""
    from forkfarm import _core

    # A queue maps its ring itself, not through its segment object: the
    # channel's first page, which starts with the mutex, is mapped here.
    return _core.Mutex(_core.Segment.open(q._segment.id, 4096), 0)


def call_it(func: Any) -> Any:
    """Calls what it was given (a lambda, in test_interactive.py)."""
    return func()


def sleep_then_square(x: int) -> int:
    time.sleep(0.02)
    return x * x


def divide(a: float, b: float) -> float:
    return a / b


def parent_of(pid: int) -> int:
    """The parent pid of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def worker_identity(_: Any = None) -> tuple[str, bool, int | None, bool, bytes]:
    """How a pool worker answers multiprocessing's questions about itself:
    (name, daemon, parent's pid, parent alive, authkey)."""
    import multiprocessing

    me = multiprocessing.current_process()
    parent = multiprocessing.parent_process()
    return (
        me.name,
        bool(me.daemon),
        None if parent is None else parent.pid,
        parent is not None and parent.is_alive(),
        bytes(me.authkey),
    )


# --------------------------------------------------------------------------
# Process targets (tests/python/test_process.py): a fork server's child
# imports this module afresh, as a forked child has it already.
# --------------------------------------------------------------------------


def log_and_allocate(log_path: str, index: int) -> None:
    """Logs one line through logging (its module lock, a handler's lock)
    and allocates and frees memory: what a child forked while another
    thread held those locks would hang on."""
    import logging

    logger = logging.getLogger("forkfarm.tests.child")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(log_path)
    logger.addHandler(handler)
    try:
        blocks = [bytearray(1024 * (i % 64 + 1)) for i in range(256)]
        logger.info("child %d pid %d allocated %d", index, os.getpid(), sum(map(len, blocks)))
        del blocks
    finally:
        logger.removeHandler(handler)
        handler.close()


def use_shared(q: Any, lock: Any, event: Any, value: Any, array: Any, conn: Any) -> None:
    """Uses each of forkfarm's shared objects it was given, once."""
    with lock:
        value.value += 1
    with array.get_lock():
        array[0] += 10
    q.put(("from", os.getpid()))
    conn.send(conn.recv() * 2)
    event.set()


def describe_process(q: Any) -> None:
    """Puts what multiprocessing says of this process and its parent."""
    import multiprocessing
    import multiprocessing.connection

    me = multiprocessing.current_process()
    parent = multiprocessing.parent_process()
    assert parent is not None
    q.put(
        {
            "name": me.name,
            "pid": me.pid,
            "getpid": os.getpid(),
            "daemon": me.daemon,
            "authkey": bytes(me.authkey),
            "parent_pid": parent.pid,
            "parent_name": parent.name,
            "parent_alive": parent.is_alive(),
            "parent_sentinel_ready": bool(multiprocessing.connection.wait([parent.sentinel], 0)),
            "children": len(multiprocessing.active_children()),
        }
    )


def start_a_child(q: Any) -> None:
    """Tries to start a Process: a daemonic process may not."""
    import forkfarm

    try:
        child = forkfarm.Process(target=time.sleep, args=(0,))
        child.start()
        child.join(10)
        q.put(("started", child.exitcode))
    except AssertionError as exc:
        q.put(("refused", str(exc)))


def wait_for_interrupt(ready: Any) -> None:
    """Exits with 5 on KeyboardInterrupt (SIGINT), 0 if none comes."""
    import sys

    try:
        ready.set()
        time.sleep(30)
    except KeyboardInterrupt:
        sys.exit(5)


def wait_for_parent_then_mark(path: str) -> None:
    """Waits until the parent process has exited (its sentinel), then
    writes path."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    assert parent is not None
    parent.join(30)
    Path(path).write_text("parent gone" if not parent.is_alive() else "parent alive")


def sleep_then_mark(seconds: float, path: str) -> None:
    time.sleep(seconds)
    Path(path).write_text("done")


def take_shared_lock_in(lock: Any, timeout: float, q: Any) -> None:
    """Puts whether lock could be taken within timeout (and lets it go)."""
    taken = lock.acquire(timeout=timeout)
    if taken:
        lock.release()
    q.put(taken)


def call_and_send(conn: Any, func: Any, lock: Any) -> None:
    """Sends func() on conn, holding lock."""
    with lock:
        conn.send(func())


def number_each(arrays: Any) -> None:
    """Writes its index into the first item of each array."""
    for i, array in enumerate(arrays):
        array[0] = i


# A lock that a pool's completion callback holds for a while: a child
# forked meanwhile must not be born with it held.
CALLBACK_LOCK = __import__("threading").Lock()


def hold_callback_lock(seconds: float, started: Any) -> Any:
    """A completion callback (its argument, the result, ignored) that holds
    CALLBACK_LOCK for seconds, after setting started."""

    def callback(_result: Any) -> None:
        with CALLBACK_LOCK:
            started.set()
            time.sleep(seconds)

    return callback


def take_callback_lock(timeout: float) -> None:
    """Exits 3 unless CALLBACK_LOCK can be taken within timeout."""
    import sys

    if not CALLBACK_LOCK.acquire(timeout=timeout):
        sys.exit(3)
    CALLBACK_LOCK.release()
