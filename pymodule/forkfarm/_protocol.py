"""The messages between the parent and its workers.

The worker's loop is C (``pymodule/worker.c``); this module gives it the
encodings, so that both sides agree in one place:

- a call is a pickled ``(func, args, kwds)`` tuple, or, for a module-level
  function called again and again, ``(args, kwds)`` with ``(CALL, func)``
  as its context, sent to each worker once (:func:`encode_callee`);
- a map sends its ``(kind, func)`` once per worker, as the context of its
  tasks (:func:`encode_function`), and each chunk is a pickled list of items;
- large buffers (an ndarray's data) travel out of band through the arena,
  and shared arrays as handles (``pymodule/shared.c``, ``shared.py``);
- a result is the pickled value (a map chunk's list of ints or floats
  travels as a compact array, ``pymodule/compact.c``); a failure is flagged
  by the runtime and
  carries :func:`encode_error`'s bytes: the exception, with the worker's
  traceback attached.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
import types
from collections.abc import Callable, Iterable, Mapping
from multiprocessing.pool import MaybeEncodingError
from typing import Any

from . import _core
from ._errors import RemoteTraceback

CALL = 0
MAP = 1
STARMAP = 2

PROTOCOL = 5
loads = pickle.loads
# Pickle protocol 5, with shared arrays as handles and large out-of-band
# buffers through the arena (pymodule/shared.c). Used for messages and
# results; contexts, sent once per worker, stay plain pickles.
dumps = _core.dumps


def encode_call(func: Callable[..., Any], args: Iterable[Any], kwds: Mapping[str, Any]) -> bytes:
    """Encodes ``func(*args, **kwds)``."""
    return dumps((func, tuple(args), dict(kwds)), PROTOCOL)


def encode_callee(func: Callable[..., Any]) -> bytes:
    """Encodes a function called again and again (``apply``, ``submit``) as
    the context of its calls, sent to each worker once."""
    return dumps((CALL, func), PROTOCOL, oob=False)


_NO_ARGUMENTS = dumps(((), {}), PROTOCOL)


def encode_arguments(args: Iterable[Any], kwds: Mapping[str, Any]) -> bytes:
    """Encodes the arguments of a call whose function is its context."""
    if not args and not kwds:
        return _NO_ARGUMENTS
    return dumps((tuple(args), dict(kwds)), PROTOCOL)


def cacheable(func: Any) -> bool:
    """True for functions that pickle as a reference to a module-level name:
    their pickle never changes, so it can be sent once and reused."""
    if isinstance(func, types.FunctionType):
        qualname = func.__qualname__
        return "<" not in qualname  # neither a lambda nor a nested function
    if isinstance(func, types.BuiltinFunctionType):
        owner = getattr(func, "__self__", None)
        return owner is None or isinstance(owner, types.ModuleType)
    return False


def encode_function(func: Callable[..., Any], star: bool) -> bytes:
    """Encodes a map's function: the context of its chunks, sent to each
    worker once. Each item is run as ``func(x)``, or ``func(*x)`` when star
    is true."""
    return dumps((STARMAP if star else MAP, func), PROTOCOL, oob=False)


def encode_items(items: list[Any], memo: _core.BufferMemo | None = None) -> bytes:
    """Encodes a chunk of a map. The chunks of one map share a memo, so that
    a large buffer they all carry is copied into the arena once."""
    return dumps(items, PROTOCOL, memo=memo)


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
        return pickle.dumps((False, _ExceptionWithTraceback(exc)), protocol=PROTOCOL)
    except BaseException as pickling_error:  # noqa: BLE001 - anything may fail to pickle
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        substitute = RuntimeError(
            f"{type(exc).__qualname__}: {exc!s} (the exception could not be "
            f"pickled: {pickling_error!r})"
        )
        substitute.__traceback__ = None
        return pickle.dumps(
            (False, _rebuild_exception(substitute, '\n"""\n' + text + '"""')),
            protocol=PROTOCOL,
        )


def encode_result_error(exc: BaseException, value: Any) -> bytes:
    """Encodes the failure of a result that could not be pickled."""
    return encode_error(MaybeEncodingError(exc, value))


def decode_result(task: Any) -> Any:
    """Returns the value of a task that succeeded (a ``_core.Task``)."""
    try:
        return task.value(loads)
    except BaseException as exc:  # noqa: BLE001
        raise pickle.UnpicklingError(
            f"the result of the task could not be unpickled: {exc!r}"
        ) from exc


# What the arena keeps of warm memory once a pool is done with it: enough
# for the next large message, not the peak of a past one.
ARENA_KEEP = 128 << 20


def trim_arena() -> None:
    """Gives idle arena memory beyond :data:`ARENA_KEEP` back to the system."""
    _core.trim_arena(ARENA_KEEP)


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
