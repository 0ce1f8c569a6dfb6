"""``forkfarm.get_reusable_executor``: loky's reusable executor on the
forkfarm runtime. One :class:`forkfarm.Executor` per process, handed out
again to every call with compatible arguments; its idle workers exit after
a timeout, which the runtime's loop thread keeps (``set_idle_limit``), and
start again on demand."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from . import _engine, _node, _reuse
from .executor import Executor

__all__ = ["get_reusable_executor"]


# Start method names get_reusable_executor takes: loky's own context names
# are the fork server here.
_REUSABLE_METHODS = {
    "forkserver": "forkserver",
    "spawn": "spawn",
    "loky": "forkserver",
    "loky_init_main": "forkserver",
}

_reusable_lock = threading.Lock()
# The executor get_reusable_executor handed out, and what it was made with.
_reusable: tuple[Executor, tuple[Any, ...]] | None = None


def _reusable_method(mp_context: Any) -> str:
    """The start method of get_reusable_executor's context: the fork
    server unless another is named; never fork."""
    if mp_context is None:
        return "forkserver"
    name = mp_context if isinstance(mp_context, str) else mp_context.get_start_method()
    if name == "fork":
        raise ValueError(
            "the reusable executor cannot use the fork start method: its workers would see this "
            "process as it was when they were made; use 'forkserver' or 'spawn'"
        )
    if name not in _REUSABLE_METHODS:
        raise ValueError(f"cannot find context for {name!r}")
    return _REUSABLE_METHODS[name]


def get_reusable_executor(
    max_workers: int | None = None,
    *,
    mp_context: Any = None,
    context: Any = None,
    timeout: float | None = 10.0,
    kill_workers: bool = False,
    reuse: bool | str = "auto",
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    env: dict[str, str] | None = None,
    inner_threads: int | str | None = _engine.AUTO,
) -> Executor:
    """The process's reusable :class:`Executor`, as loky's function of that
    name: the same live executor for every call with compatible arguments,
    so that its workers, and what they imported, serve call after call.

    ``max_workers`` defaults to :func:`forkfarm.available_cpus`.
    ``mp_context`` (or ``context``, loky's name) is a start method or a
    context: the fork server by default, ``"spawn"`` too; fork is refused
    (ValueError): workers made once must not stand for this process as it
    was then. ``timeout`` is how long a worker may stay idle, in seconds,
    before it exits (None: no limit); the executor starts workers again
    when calls come. ``initializer(*initargs)`` runs in each worker, after
    ``env`` is set in its environment. ``inner_threads`` caps the BLAS and
    OpenMP threads of each worker, as :class:`Executor`'s does (forkfarm's
    own; loky's function has none).

    With ``reuse="auto"`` the executor is reused when every argument but
    ``max_workers`` is the one it was made with (the initializer and the
    callables among its arguments by identity, the arguments as they
    pickle), and so are ``sys.path`` and the working directory; with
    ``reuse=True`` it is reused whatever those arguments; with
    ``reuse=False`` never. An executor shut down or broken is never reused.
    Otherwise it is shut down (waiting for its calls, after killing its
    workers with ``kill_workers=True``) and a new one is made. A different
    ``max_workers`` makes a new executor too: this runtime's pools have a
    fixed size, where loky resizes its executor in place.

    One executor per process, shared by its threads.
    """
    global _reusable
    if mp_context is not None and context is not None and mp_context is not context:
        raise TypeError("give mp_context or context, not both")
    method = _reusable_method(mp_context if mp_context is not None else context)
    if reuse not in ("auto", True, False):
        raise ValueError(f"reuse must be 'auto', True or False, not {reuse!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    initargs = tuple(initargs)
    env = dict(env) if env else None
    call = _reuse.call_key(initializer, initargs)
    arguments = (
        method,
        call if call is not None else object(),  # unpicklable: never equal
        tuple(sorted(env.items())) if env else None,
        timeout,
        inner_threads,
        _reuse.place_key(),
    )
    with _reusable_lock:
        current = _reusable
        if current is not None:
            executor, made_with = current
            if reuse == "auto":
                reuse = made_with == arguments
            alive = not executor._shutdown_requested and not executor._broken
            wanted = max_workers if max_workers is not None else _node.available_cpus()
            if alive and reuse and wanted == executor._max_workers:
                return executor
            _reusable = None
            if kill_workers and alive:
                executor.kill_workers()
            executor.shutdown(wait=True)
        if env:
            initargs = (env, initializer, *initargs)
            initializer = _reuse.with_env
        executor = Executor(
            max_workers, initializer, initargs, mp_context=method, inner_threads=inner_threads
        )
        executor._mp_context = executor._engine.backend.mp_context()
        if timeout is not None:
            executor._core.set_idle_limit(timeout, False)  # type: ignore[attr-defined]
        _reusable = executor, arguments
        return executor


def _forget_in_child() -> None:
    """In a forked child the reusable executor is the parent's, whose pool
    the runtime refuses to a fork of it: forgotten, so that the child's
    get_reusable_executor makes its own instead of handing out one whose
    every call fails. The lock is new: a thread of the parent may have held
    it at the fork."""
    global _reusable, _reusable_lock
    _reusable = None
    _reusable_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
