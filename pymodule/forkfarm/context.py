"""``Process``, start methods and contexts, with multiprocessing's API.

``Process`` is multiprocessing's fork Process: forking, waiting for and
signalling a child is what the operating system does, and the standard
library does it well. What changes is what children share: forkfarm's
locks, queues and shared memory travel to a ``Process`` through its
arguments by inheritance, as multiprocessing's do.

forkfarm has one start method today, ``"fork"``: workers come from a zygote
forked from the caller. ``get_context("fork")`` and
``set_start_method("fork")`` work; the other methods raise ``ValueError``
until the forkserver start method lands.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.managers
from collections.abc import Callable, Iterable
from multiprocessing import active_children, current_process, parent_process
from typing import Any

__all__ = [
    "ForkfarmContext",
    "Manager",
    "Process",
    "active_children",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_start_method",
    "parent_process",
    "set_start_method",
]

START_METHODS = ["fork"]


class Process(multiprocessing.context.ForkProcess):
    """A process that runs ``target(*args, **kwargs)`` or its ``run()``, as
    ``multiprocessing.Process``: ``start``, ``join(timeout)``,
    ``terminate``, ``kill``, ``close``, ``is_alive``, ``exitcode``, ``pid``,
    ``name``, ``daemon``, ``sentinel``, ``authkey``. Started with fork."""


def Manager() -> multiprocessing.managers.SyncManager:  # noqa: N802 - multiprocessing's name
    """A started ``SyncManager``: multiprocessing's own, in a forked server
    process. Its proxies reach forkfarm's pool workers too."""
    return multiprocessing.get_context("fork").Manager()


def freeze_support() -> None:
    """Nothing to do: forkfarm never starts a frozen executable again."""


def _check(method: str | None) -> str:
    if method is None:
        return "fork"
    if method not in START_METHODS:
        if method in ("spawn", "forkserver"):
            raise ValueError(
                f"start method {method!r} is not supported yet: forkfarm forks its "
                "workers from a zygote (the 'fork' method)"
            )
        raise ValueError(f"cannot find context for {method!r}")
    return method


class ForkfarmContext:
    """What :func:`get_context` returns: forkfarm's API behind one start
    method, as a multiprocessing context is."""

    def __init__(self, method: str = "fork") -> None:
        self._method = _check(method)

    def __getattr__(self, name: str) -> Any:
        import forkfarm

        if name.startswith("_") or name in ("get_context", "set_start_method"):
            raise AttributeError(name)
        return getattr(forkfarm, name)

    def get_context(self, method: str | None = None) -> ForkfarmContext:
        return ForkfarmContext(_check(method))

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._method

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        _default.set_start_method(method, force)

    def get_all_start_methods(self) -> list[str]:
        return list(START_METHODS)

    def Pool(  # noqa: N802 - multiprocessing's name
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
    ) -> Any:
        from .pool import Pool

        return Pool(processes, initializer, initargs, maxtasksperchild, context=self)

    def __repr__(self) -> str:
        return f"<forkfarm context {self._method!r}>"


class _DefaultContext(ForkfarmContext):
    """The module's own context, whose start method may be set once."""

    def __init__(self) -> None:
        super().__init__("fork")
        self._set = False

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        if self._set and not force:
            raise RuntimeError("context has already been set")
        if method is None and force:
            self._set = False
            return
        self._method = _check(method)
        self._set = True

    def get_start_method(self, allow_none: bool = False) -> str:
        if not self._set and allow_none:
            return None  # type: ignore[return-value]
        return self._method


_default = _DefaultContext()


def get_context(method: str | None = None) -> ForkfarmContext:
    """A context: forkfarm's API behind the start method named (``"fork"``,
    the default)."""
    return _default if method is None else ForkfarmContext(_check(method))


def get_start_method(allow_none: bool = False) -> str:
    return _default.get_start_method(allow_none)


def set_start_method(method: str | None, force: bool = False) -> None:
    """Sets the start method, once (``force`` to change it): ``"fork"``."""
    _default.set_start_method(method, force)


def get_all_start_methods() -> list[str]:
    return list(START_METHODS)
