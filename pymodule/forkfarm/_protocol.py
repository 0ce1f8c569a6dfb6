"""The messages between the parent and its workers.

A task is a pickled ``(kind, func, args, kwds)`` tuple; its result is a
pickled ``(ok, value)`` pair, where a failure carries the exception with the
worker's traceback attached. :func:`execute` is what a worker runs for each
task; the parent encodes with :func:`encode_call` / :func:`encode_chunk` and
decodes with :func:`decode_result`.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from multiprocessing.pool import MaybeEncodingError
from typing import Any

from ._errors import RemoteTraceback

CALL = 0
MAP = 1
STARMAP = 2

_PROTOCOL = 5


def encode_call(func: Callable[..., Any], args: Iterable[Any], kwds: Mapping[str, Any]) -> bytes:
    """Encodes ``func(*args, **kwds)``."""
    return pickle.dumps((CALL, func, tuple(args), dict(kwds)), protocol=_PROTOCOL)


def encode_chunk(func: Callable[..., Any], items: list[Any], star: bool) -> bytes:
    """Encodes ``[func(x) for x in items]``, or ``func(*x)`` when star is true."""
    return pickle.dumps((STARMAP if star else MAP, func, items, None), protocol=_PROTOCOL)


def _rebuild_exception(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(tb)
    return exc


class _ExceptionWithTraceback:
    """Pickles an exception so that it arrives with the remote traceback as
    its ``__cause__``."""

    def __init__(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.exc = exc
        self.tb = '\n"""\n' + text + '"""'

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_exception, (self.exc, self.tb)


def encode_error(exc: BaseException) -> bytes:
    """Encodes a failure. An exception that cannot be pickled is replaced by
    one that can, naming the original."""
    try:
        return pickle.dumps((False, _ExceptionWithTraceback(exc)), protocol=_PROTOCOL)
    except BaseException as pickling_error:  # noqa: BLE001 - anything may fail to pickle
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        substitute = RuntimeError(
            f"{type(exc).__qualname__}: {exc!s} (the exception could not be "
            f"pickled: {pickling_error!r})"
        )
        substitute.__traceback__ = None
        return pickle.dumps(
            (False, _rebuild_exception(substitute, '\n"""\n' + text + '"""')),
            protocol=_PROTOCOL,
        )


def execute(payload: bytes) -> bytes:
    """Runs one task in a worker and returns its encoded outcome."""
    try:
        kind, func, args, kwds = pickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001 - report every failure
        return encode_error(exc)
    try:
        if kind == CALL:
            result = func(*args, **kwds)
        elif kind == MAP:
            result = [func(x) for x in args]
        else:
            result = [func(*x) for x in args]
    except BaseException as exc:  # noqa: BLE001 - SystemExit too, for that task alone
        return encode_error(exc)
    try:
        return pickle.dumps((True, result), protocol=_PROTOCOL)
    except BaseException as exc:  # noqa: BLE001
        return encode_error(MaybeEncodingError(exc, result))


def decode_result(payload: bytes) -> Any:
    """Returns the value of a task's outcome, or raises its exception."""
    try:
        ok, value = pickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001
        raise pickle.UnpicklingError(
            f"the result of the task could not be unpickled: {exc!r}"
        ) from exc
    if ok:
        return value
    raise value


def worker_setup() -> None:
    """Runs in each new worker before its initializer, as multiprocessing's
    workers do: standard input is not the parent's to read."""
    try:
        if sys.stdin is not None:
            sys.stdin.close()
        sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the worker
    except (OSError, ValueError):
        pass


def worker_exit() -> None:
    """Runs just before a worker exits: flush what the tasks printed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
