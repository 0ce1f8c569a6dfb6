"""Workers kept for the next pool: a closed pool's idle workers, with their
zygote, parked for a grace period and adopted by the next compatible pool
(``Pool(reuse=...)``), as loky's reusable executor keeps its workers.

A parked pool is a live runtime pool that takes no task: its core (the C
pool, its zygote and its idle workers) and its encoder wait here, under a
key that says what the workers are (:func:`reuse_key`). Nothing runs in
this process for it: the runtime's loop thread closes the parked pool when
its grace period ends (``_core.Pool.set_idle_limit``), which stops the
workers and the zygote and lets the pool's descriptors go; the next access
to the lot drops what is left of it (a Python object). A pool that adopts
one disarms that limit first, and takes it only if the pool was still
open, so an expiry and an adoption never both happen.

Only pools whose workers come from the fork server are parked: a fork
pool's workers are copies of the parent as it was at the pool's creation,
and a later pool must see the parent as it is then.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from . import _backend, _core, _forkserver, _protocol

__all__ = [
    "DEFAULT_GRACE",
    "Released",
    "ReuseKey",
    "adopt",
    "call_key",
    "compatible",
    "grace_of",
    "park",
    "parked_count",
    "place_key",
    "release_all",
    "reuse_key",
    "with_env",
]

# Pool(reuse=True): how long a closed pool's workers wait to be adopted, in
# seconds (loky's idle timeout).
DEFAULT_GRACE = 10.0

# At most this many pools wait at once; parking one more closes the oldest.
MAX_PARKED = 4


class ReuseKey(NamedTuple):
    """What makes a pool's workers what they are, as :func:`compatible`
    compares it."""

    method: str
    processes: int
    # The initializer by identity, the callables among its arguments by
    # identity too, and the arguments as pickled for the workers: equal
    # arrays pickle alike, where == on NumPy arrays is no answer.
    initializer: Callable[..., object] | None
    callables: tuple[Any, ...]
    initargs: bytes
    max_tasks: int | None
    timeout: float | None
    retries: int
    max_memory: int | None
    inner_threads: int | str | None
    pin: Any
    max_message: int | None
    role: str
    on_demand: bool
    sys_path: tuple[str, ...]
    cwd: str
    # The fork server's interpreter and preloaded modules.
    server: tuple[str, tuple[str, ...]]
    capture_output: bool = False
    log_level: int | None = None


def grace_of(reuse: object) -> float | None:
    """The grace period of a pool's ``reuse`` argument, in seconds: None for
    False (no reuse), DEFAULT_GRACE for True, else a positive number."""
    if reuse is False or reuse is None:
        return None
    if reuse is True:
        return DEFAULT_GRACE
    if not isinstance(reuse, (int, float)) or reuse != reuse or not 0 < reuse < 1e9:
        raise ValueError(f"reuse must be True, False or a positive number of seconds, not {reuse!r}")
    return float(reuse)


def _frozen(value: Any) -> Any:
    """A pin argument made hashable (a list of CPU lists is one)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    return value


def call_key(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """An initializer and its arguments as :func:`compatible` compares
    them: the initializer and the callables among its arguments by
    identity, the arguments as pickled for the workers. None when they do
    not pickle (then nothing is reused)."""
    try:
        pickled = _protocol.dumps_or_by_value(initargs, oob=False)
    except Exception:  # noqa: BLE001 - not comparable: not reused
        return None
    return initializer, tuple(arg for arg in initargs if callable(arg)), pickled


def place_key() -> tuple[Any, ...]:
    """What the fork server's workers take from this process when they are
    made: ``sys.path``, the working directory, and the server's interpreter
    and preloaded modules."""
    return tuple(sys.path), os.getcwd(), _forkserver._settings()


def with_env(env: dict[str, str], initializer: Callable[..., object] | None, *initargs: Any) -> None:
    """In a worker: sets the environment variables of env, then runs the
    initializer (get_reusable_executor's ``env``)."""
    os.environ.update(env)
    if initializer is not None:
        initializer(*initargs)


def reuse_key(method: str, settings: _backend.Settings) -> ReuseKey | None:
    """The key of a pool's workers, taken now (``sys.path`` and the working
    directory as they are at the pool's creation), or None when the pool
    cannot be reused: a fork pool, or an initializer whose arguments do not
    pickle."""
    if method == "fork":
        return None
    call = call_key(settings.initializer, settings.initargs)
    if call is None:
        return None
    sys_path, cwd, server = place_key()
    initializer, callables, initargs = call
    return ReuseKey(
        method,
        settings.processes,
        initializer,
        callables,
        initargs,
        settings.max_tasks,
        settings.timeout,
        settings.retries,
        settings.max_memory,
        settings.inner_threads,
        _frozen(settings.pin),
        settings.max_message,
        settings.role,
        settings.on_demand,
        sys_path,
        cwd,
        server,
        settings.capture_output,
        settings.log_level,
    )


def compatible(parked: ReuseKey, wanted: ReuseKey) -> bool:
    """Whether a pool whose workers were made for ``parked`` may serve a
    new pool that asks for ``wanted``: everything a worker is made of must
    be the same.

    - the start method (never ``"fork"``: such pools are not parked);
    - the number of workers: a pool of another size is not resized, it
      starts its own;
    - the initializer and the callables among its arguments, by identity
      (a function redefined under the same name is another one), and the
      arguments as they pickle for the workers (equal arrays pickle alike);
    - what else changes a worker: ``maxtasksperchild``, the task timeout,
      the retries, the memory and message limits, ``inner_threads``, the
      pinning, the role (a Pool's workers are not an Executor's), whether
      workers start on demand, whether their output is captured;
    - ``sys.path`` and the working directory, as they were when each pool
      was created: the workers import with the parent's path of then;
    - the fork server's interpreter and preloaded modules.

    A pool that broke (its initializer failed, its zygote died) is never
    adopted, whatever its key: :func:`adopt` checks that."""
    if parked.method == "fork" or wanted.method == "fork":
        return False
    return parked == wanted


class Released:
    """What a pool holds in place of its core and its encoder once they are
    parked (it must not keep them: the pool that adopts them is their only
    owner, and a pool let go lets its descriptors go): the workers are no
    longer its own, so it has none, closing and joining it are done, and it
    runs nothing (its front refuses tasks before they get here)."""

    def call(self, func: Callable[..., Any], args: Any, kwds: Any) -> tuple[Any, Any]:
        raise ValueError("Pool not running")

    def function(self, func: Callable[..., Any], star: bool) -> Any:
        raise ValueError("Pool not running")

    def memo(self) -> Any:
        raise ValueError("Pool not running")

    def items(self, chunk: Any, memo: Any) -> Any:
        raise ValueError("Pool not running")

    def singletons(self, items: Any) -> list[Any]:
        raise ValueError("Pool not running")

    def context(self, data: Any) -> Any:
        raise ValueError("Pool not running")

    def submit(
        self,
        payload: Any,
        notify: Callable[[Any], object] | None = None,
        queue: Any = None,
        context: Any = None,
        timeout: float = -1,
        retries: int = -1,
        claimable: bool = False,
    ) -> _backend.Task:
        raise ValueError("Pool not running")

    def submit_many(
        self, payloads: list[Any], queue: Any, context: Any, timeout: float = -1, retries: int = -1
    ) -> list[_backend.Task]:
        raise ValueError("Pool not running")

    def close(self) -> None:
        pass

    def terminate(self) -> None:
        pass

    def stop_workers(self, signum: int) -> None:
        pass

    def join(self, timeout: float | None = None) -> bool:
        return True

    def worker_pids(self) -> list[int]:
        return []

    def worker_count(self) -> int:
        return 0

    def worker_pidfd(self, pid: int) -> int | None:
        return None

    def error(self) -> _backend.Outcome | None:
        return None

    def take_output(self) -> None:
        return None

    def stats(self) -> tuple[int, int, int, int, list[tuple[int, ...]]]:
        return 0, 0, 0, 0, []


class _Parked(NamedTuple):
    key: ReuseKey
    core: _core.Pool
    encoder: _backend.LocalEncoder
    expires: float  # time.monotonic(): the runtime closes it by then


_lock = threading.Lock()
_lot: list[_Parked] = []


def _usable(core: _core.Pool) -> bool:
    return core.error() is None


def park(key: ReuseKey, core: _core.Pool, encoder: _backend.LocalEncoder, grace: float) -> bool:
    """Keeps a pool whose last task is done for the next compatible pool,
    for grace seconds: after that the runtime closes it. False (nothing is
    kept; the caller closes the pool) when it is broken or closed."""
    if not _usable(core) or not core.set_idle_limit(grace, True):
        return False
    dropped: list[_Parked] = []
    with _lock:
        dropped.extend(_expired())
        _lot.append(_Parked(key, core, encoder, time.monotonic() + grace))
        while len(_lot) > MAX_PARKED:
            dropped.append(_lot.pop(0))
    for parked in dropped:
        _drop(parked)
    return True


def _expired() -> list[_Parked]:
    """Takes out of the lot the pools whose grace period is over (the
    runtime has closed them, or is about to) or that broke. Under _lock."""
    now = time.monotonic()
    gone = [parked for parked in _lot if parked.expires <= now or not _usable(parked.core)]
    for parked in gone:
        _lot.remove(parked)
    return gone


def adopt(key: ReuseKey) -> tuple[_core.Pool, _backend.LocalEncoder] | None:
    """A parked pool compatible with key, taken out of the lot with its
    grace period disarmed, or None. Parked pools found broken or closed on
    the way (a grace period ended, the zygote died) are let go."""
    found = None
    with _lock:
        dropped = _expired()
        for parked in reversed(_lot):  # the most recent first
            if compatible(parked.key, key):
                _lot.remove(parked)
                # Disarmed only if still open: its expiry cannot close it
                # under the new pool.
                if parked.core.set_idle_limit(-1):
                    found = parked.core, parked.encoder
                    break
                dropped.append(parked)
    for parked in dropped:
        _drop(parked)
    return found


def _drop(parked: _Parked) -> None:
    """Lets a parked pool go that will not be adopted: closed, so that its
    workers and zygote exit (a no-op on one its grace period closed)."""
    try:
        parked.core.close()
    except Exception:  # noqa: BLE001 - closed or broken already
        pass


def parked_count() -> int:
    """How many pools wait in the lot (expired ones included until the next
    adoption lets them go)."""
    with _lock:
        return len(_lot)


def release_all(wait: bool = True) -> None:
    """Closes every parked pool, and with wait waits for their workers: at
    exit (no worker outlives the program), and for tests."""
    with _lock:
        parked = list(_lot)
        _lot.clear()
    for entry in parked:
        _drop(entry)
    if wait:
        for entry in parked:
            try:
                entry.core.join(5.0)
            except Exception:  # noqa: BLE001 - nothing more to do at exit
                pass


def _forget_in_child() -> None:
    """In a forked child the parked pools are the parent's: forgotten, not
    closed (the runtime leaves a fork's copy of a pool alone)."""
    _lot.clear()


os.register_at_fork(after_in_child=_forget_in_child)
# After the pools' own exit handler (registered earlier, so run later):
# parked workers never outlive the program.
atexit.register(release_all)
