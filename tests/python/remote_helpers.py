"""Task functions and exception classes for test_remote_errors.py: at module
level, so that workers find them by reference (``conftest.py`` puts this
directory on ``sys.path``, in the test process and so in every worker)."""

from __future__ import annotations

import os
import sys
import threading
import types
from typing import Any, NoReturn


class LockedError(ValueError):
    """A ValueError holding a lock: it cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class LockedKeyError(KeyError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.lock = threading.Lock()


class LockedDecodeError(UnicodeDecodeError):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lock = threading.Lock()


class LockedOSError(OSError):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lock = threading.Lock()


class LockedExit(SystemExit):
    """A BaseException that is no Exception, and cannot be pickled."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.lock = threading.Lock()


class NoSubclassError(ValueError):
    """A ValueError that refuses subclasses, and cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("NoSubclassError takes no subclass")


class TwoArgError(Exception):
    """Pickles (as ``(cls, args)``), but does not unpickle: its __init__
    needs two arguments and BaseException keeps one in ``args``. With
    ``lock=True`` it does not pickle either."""

    def __init__(self, what: str, why: str, lock: bool = False) -> None:
        super().__init__(f"{what} failed: {why}")
        if lock:
            self.lock = threading.Lock()


class DropsItsDict(Exception):
    """Pickles as its class and args only: its notes would not travel in
    its own pickle."""

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), self.args


def raise_locked(message: str) -> NoReturn:
    raise LockedError(message)


def raise_with_lambda(message: str) -> NoReturn:
    raise ValueError(message, lambda: None)


def raise_locked_key(key: str) -> NoReturn:
    raise LockedKeyError(key)


def raise_locked_decode() -> NoReturn:
    raise LockedDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


def raise_locked_os_error() -> NoReturn:
    raise LockedOSError(2, "no such thing")


def raise_locked_exit() -> NoReturn:
    raise LockedExit(3)


def raise_no_subclass(message: str) -> NoReturn:
    raise NoSubclassError(message)


def raise_two_args(what: str, why: str, lock: bool = False) -> NoReturn:
    raise TwoArgError(what, why, lock)


def raise_ghost(register: bool) -> NoReturn:
    """Raises an exception of a class made in the worker, in a module the
    parent does not have: with register, the module is in the worker's
    sys.modules (the exception pickles there and fails to unpickle here);
    without, it is not (it does not even pickle)."""
    module = types.ModuleType("ghost_module")
    exec("class GhostError(ValueError):\n    pass\n", vars(module))
    if register:
        sys.modules["ghost_module"] = module
    raise module.GhostError("boo", os.getpid())


def raise_from_locked() -> NoReturn:
    """A picklable KeyError whose cause (and context) cannot be pickled."""
    try:
        raise_locked("inner")
    except LockedError as inner:
        raise KeyError("outer") from inner


def raise_locked_from_key_error() -> NoReturn:
    """An unpicklable exception whose cause pickles."""
    try:
        raise KeyError("inner")
    except KeyError as inner:
        raise LockedError("outer") from inner


def raise_during_handling() -> NoReturn:
    """Implicit chaining: a ValueError raised while a KeyError was handled."""
    try:
        {}["missing"]
    except KeyError:
        raise ValueError("while handling")  # noqa: B904 - the implicit chain is the point


def raise_from_os_error() -> NoReturn:
    try:
        raise OSError(2, "no such file")
    except OSError as inner:
        raise RuntimeError("could not read") from inner


def raise_from_none() -> NoReturn:
    try:
        raise KeyError("hidden")
    except KeyError:
        raise ValueError("shown") from None


def raise_cycle() -> NoReturn:
    """Two exceptions each the other's context."""
    first = ValueError("first")
    second = KeyError("second")
    first.__context__ = second
    second.__context__ = first
    raise first


def raise_group(bad: bool) -> NoReturn:
    members: list[Exception] = [ValueError("a"), LockedError("b") if bad else KeyError("b")]
    raise ExceptionGroup("many", members)


def raise_with_notes(kind: str) -> NoReturn:
    error: Exception
    if kind == "plain":
        error = ValueError("noted")
    elif kind == "locked":
        error = LockedError("noted")
    else:
        error = DropsItsDict("noted")
    error.add_note("first note")
    error.add_note("second note")
    raise error


def raise_with_noted_cause() -> NoReturn:
    try:
        inner = KeyError("inner")
        inner.add_note("the cause's note")
        raise inner
    except KeyError as caught:
        raise ValueError("outer") from caught


def make_locked_result() -> LockedError:
    return LockedError("as a result")


def failing_initializer() -> None:
    raise RuntimeError("initializer failed on purpose")


def square(x: int) -> int:
    return x * x
