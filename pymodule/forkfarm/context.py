"""``Process``, start methods and contexts, with multiprocessing's API.

``Process`` (``forkfarm/_process.py``) is multiprocessing's Process started
through forkfarm's runtime: forked, or made by the fork server when the
caller has other threads, as a pool's zygote is.

A pool's start method says where its workers come from:

- ``"fork"``: a zygote forked from the caller, so that workers see the
  caller as it was when the pool was made;
- ``"forkserver"`` (and its alias ``"spawn"``): a zygote forked by the fork
  server, a fresh interpreter started once and kept for later pools; the
  functions and classes of ``__main__`` travel by value.

Unless one is set, or named by the context, a pool forks, except when the
caller has other threads (a Jupyter kernel always has): then it takes the
fork server, since a process with threads must not fork. A ``Process``
chooses the same way, and a context's ``Process`` follows its method.
:func:`set_executable` and :func:`set_forkserver_preload` say what the fork
server runs and imports before it forks.

The logger (:func:`get_logger`, :func:`log_to_stderr`) is multiprocessing's:
its ``Process`` logs there, and so do forkfarm's pools.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.managers
import multiprocessing.spawn
import os
import types
from collections.abc import Callable, Iterable
from multiprocessing import active_children, current_process, parent_process
from multiprocessing.util import get_logger, log_to_stderr
from typing import Any

from . import _forkserver, _process, _reexport, _start
from ._process import Process

__all__ = [
    "ForkfarmContext",
    "Manager",
    "Process",
    "active_children",
    "allow_connection_pickling",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
]

START_METHODS = _start.START_METHODS

# multiprocessing.context's other public names that mean the same here:
# its Process classes, pickling guards and errors. Its context classes are
# not forkfarm's, and are not among them.
_STDLIB_NAMES = {
    "AuthenticationError",
    "BufferTooShort",
    "ForkProcess",
    "ForkServerProcess",
    "ProcessError",
    "SpawnProcess",
    "TimeoutError",
    "assert_spawning",
    "get_spawning_popen",
    "set_spawning_popen",
}


def __getattr__(name: str) -> Any:
    if name in _STDLIB_NAMES:
        return _reexport.attribute(__name__, multiprocessing.context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def Manager() -> multiprocessing.managers.SyncManager:  # noqa: N802 - multiprocessing's name
    """A started ``SyncManager``: multiprocessing's own, in a forked server
    process. Its proxies reach forkfarm's pool workers too."""
    return multiprocessing.get_context("fork").Manager()


def freeze_support() -> None:
    """Nothing to do: forkfarm never starts a frozen executable again."""


def allow_connection_pickling() -> None:
    """As multiprocessing's: makes sure the reducers of
    ``multiprocessing.connection`` (its connections and sockets, pickled by
    ``forkfarm.reduction.ForkingPickler``) are installed, which importing
    forkfarm already does. A forkfarm ``Connection`` still travels by
    inheritance only; a descriptor goes through one with
    ``forkfarm.reduction.send_handle``."""
    import multiprocessing.connection  # noqa: F401 - registers its reducers


def set_executable(executable: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
    """Sets the Python interpreter that runs forkfarm's fork server, where
    the workers of ``"forkserver"`` and ``"spawn"`` pools come from, as
    ``multiprocessing.set_executable`` sets the interpreter its spawn and
    forkserver start methods run. The setting is multiprocessing's own
    (``forkfarm.spawn.get_executable()`` returns it), so multiprocessing's
    start methods use it too. A fork server running with another
    interpreter is replaced at the next pool that needs one; a
    ``Process`` and a forked pool start no interpreter, so it does not
    concern them."""
    multiprocessing.spawn.set_executable(os.fsdecode(executable))


def set_forkserver_preload(module_names: list[str]) -> None:
    """Sets the modules forkfarm's fork server imports when it starts,
    before it forks anything, so that the workers of ``"forkserver"`` and
    ``"spawn"`` pools start with them imported (a module imported once,
    not once per worker). As multiprocessing's, this is a hint: a module
    that fails to import is skipped (a worker that needs it then imports
    it and reports the error), and ``"__main__"`` is skipped too, as a
    pool sends ``__main__``'s functions and classes anyway. A fork server
    started with other modules is replaced at the next pool that needs
    one. multiprocessing's own fork server is given the same list."""
    names = list(module_names)
    if not all(type(name) is str for name in names):
        raise TypeError("module_names must be a list of strings")
    _forkserver.set_preload(names)
    multiprocessing.forkserver.set_forkserver_preload(names)


# The package, whose names a context offers as multiprocessing's do: it
# hands itself over at import (bind_package), so that this module need not
# import the package that imports it.
_package: types.ModuleType | None = None


def bind_package(package: types.ModuleType) -> None:
    """Called once by the package at import, with itself."""
    global _package
    _package = package


_check = _start.check
threaded = _start.threaded


class ForkfarmContext:
    """What :func:`get_context` returns: forkfarm's API behind one start
    method, as a multiprocessing context is."""

    def __init__(self, method: str = "fork") -> None:
        self._method = _check(method)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("get_context", "set_start_method"):
            raise AttributeError(name)
        if _package is None:
            raise AttributeError(name)
        return getattr(_package, name)

    def get_context(self, method: str | None = None) -> ForkfarmContext:
        return ForkfarmContext(_check(method))

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._method

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        _default.set_start_method(method, force)

    def get_all_start_methods(self) -> list[str]:
        return list(START_METHODS)

    @property
    def Process(self) -> type[_process.Process]:  # noqa: N802 - multiprocessing's name
        """The Process class of this context's start method."""
        return _process.ForkProcess if self._method == "fork" else _process.ForkServerProcess

    def Pool(  # noqa: N802 - multiprocessing's name
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
    ) -> Any:
        return self.__getattr__("Pool")(processes, initializer, initargs, maxtasksperchild, context=self)

    def __repr__(self) -> str:
        return f"<forkfarm context {self._method!r}>"


class _DefaultContext(ForkfarmContext):
    """The module's own context, whose start method may be set once (the
    setting lives in _start, where pools and Process read it)."""

    def __init__(self) -> None:
        super().__init__("fork")

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        _start.setting.set(method, force)

    def get_start_method(self, allow_none: bool = False) -> str:
        method = _start.setting.method
        if method is None and not allow_none:
            return "fork"
        return method  # type: ignore[return-value]

    @property
    def Process(self) -> type[_process.Process]:  # noqa: N802 - multiprocessing's name
        """forkfarm.Process, which reads the method set when it starts."""
        return _process.Process


_default = _DefaultContext()


def get_context(method: str | None = None) -> ForkfarmContext:
    """A context: forkfarm's API behind the start method named, or the
    module's own context (whose method is chosen per pool unless set)."""
    return _default if method is None else ForkfarmContext(_check(method))


def get_start_method(allow_none: bool = False) -> str:
    return _default.get_start_method(allow_none)


def set_start_method(method: str | None, force: bool = False) -> None:
    """Sets the start method of the pools made without a context, once
    (``force`` to change it): ``"fork"``, ``"forkserver"`` or ``"spawn"``
    (the fork server too)."""
    _default.set_start_method(method, force)


def get_all_start_methods() -> list[str]:
    return list(START_METHODS)
