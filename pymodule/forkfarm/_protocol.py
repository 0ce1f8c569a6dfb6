"""The messages between the parent and its workers.

The worker's loop is C (``pymodule/worker.c``); this module gives it the
encodings, as one :class:`WorkerHooks` object (:data:`WORKER_HOOKS`), so
that both sides agree in one place:

- a call is a pickled ``(func, args, kwds)`` tuple, or, for a module-level
  function called again and again, ``(args, kwds)`` with ``(CALL, func)``
  as its context, sent to each worker once (:func:`encode_callee`);
- a map sends its ``(kind, func)`` once per worker, as the context of its
  tasks (:func:`encode_function`), and each chunk is a pickled list of items;
- large buffers (an ndarray's data) travel out of band through the arena,
  and shared arrays as handles (``pymodule/codec.c``, ``shared.py``);
- a result is the pickled value (a map chunk's list of ints or floats
  travels as a compact array); a failure is flagged by the runtime and
  carries :func:`encode_error`'s bytes: the exception and its chain, link
  by link, each with its traceback (``_remote.py``).

The bytes themselves (plain pickles, frames of out-of-band buffers, the
compact arrays) are ``pymodule/codec.c``'s, whose first comment describes
each kind.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from . import _core, _debug, _output, _remote, _source

CALL = 0
MAP = 1
STARMAP = 2

PROTOCOL = 5
loads = pickle.loads
# Pickle protocol 5, with shared arrays as handles and large out-of-band
# buffers through the arena (pymodule/codec.c). Used for messages and
# results; contexts, sent once per worker, stay plain pickles.
dumps = _core.dumps


# -- what pickle cannot send by reference ------------------------------------
#
# pickle sends a function or a class as a reference (module and name) that
# the worker looks up. That fails for lambdas, nested functions and
# closures, and for what __main__ (a script, a notebook cell) defined after
# the pool's workers were forked: the worker's copy of __main__ predates
# it. Those travel by value, with cloudpickle: always when the reference
# cannot work, and for anything else only when plain pickle fails, so that
# importable functions keep the fast path.

# The functions and classes a pool's workers have in their __main__, by
# name, held weakly: the snapshot keeps nothing alive, so a global the
# program deletes is freed while its pools live.
MainSnapshot = dict[str, "weakref.ref[Any]"]


def snapshot_of(names: Mapping[str, Any]) -> MainSnapshot:
    """A snapshot of the functions and classes among names."""
    return {
        name: weakref.ref(obj)
        for name, obj in names.items()
        if isinstance(obj, (types.FunctionType, type))
    }


def main_snapshot() -> MainSnapshot:
    """What __main__ holds now: taken when a pool forks its zygote, so that
    what __main__ defines later is known to be missing in the workers."""
    main = sys.modules.get("__main__")
    return snapshot_of(vars(main)) if main is not None else {}


def by_reference(obj: Any, main_at_fork: MainSnapshot) -> bool:
    """Whether pickle's reference to a function or class resolves in a
    worker forked when main_at_fork was taken."""
    qualname = getattr(obj, "__qualname__", "")
    if "<" in qualname:  # <lambda>, <locals>
        return False
    if getattr(obj, "__module__", None) != "__main__":
        return True
    top = qualname.split(".")[0]
    main = sys.modules.get("__main__")
    now = getattr(main, top, None)
    then = main_at_fork.get(top)
    return now is not None and then is not None and then() is now


class ByValue:
    """A function or class sent by value: cloudpickle's bytes, its code
    keeping its filenames and carrying the lines of cells
    (``_source.py``), loaded by pickle in the worker."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce__(self) -> tuple[Any, ...]:
        return pickle.loads, (_source.dumps(self.obj, PROTOCOL),)


# The runtime objects behind forkfarm's locks and semaphores (their acquire
# and release are the runtime's own methods, bound to them), by id, to the
# primitive that owns each; weak, so an entry goes with its primitive, and
# an id cannot be reused while its entry is there.
_method_owners: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def register_method_owner(runtime_object: Any, owner: Any) -> None:
    """Lets a bound method of runtime_object (``lock.acquire``) be a task's
    function: it travels as that method of owner, which pickles as a
    handle."""
    _method_owners[id(runtime_object)] = owner


class MethodOf:
    """A method of a forkfarm primitive, called by name on the primitive,
    which travels (as a handle) where its runtime object cannot."""

    __slots__ = ("owner", "name")

    def __init__(self, owner: Any, name: str) -> None:
        self.owner = owner
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.owner, self.name)(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return MethodOf, (self.owner, self.name)


def sendable(obj: Any, main_at_fork: MainSnapshot) -> Any:
    """obj itself, or obj wrapped to travel by value when it is a function
    or class whose reference would not resolve in a worker, or as a method
    of its primitive when it is a lock's or a semaphore's."""
    if isinstance(obj, (types.FunctionType, type)) and not by_reference(obj, main_at_fork):
        return ByValue(obj)
    if isinstance(obj, types.BuiltinMethodType):
        owner = _method_owners.get(id(getattr(obj, "__self__", None)))
        if owner is not None:
            return MethodOf(owner, obj.__name__)
    return obj


def _pickling_failed(exc: BaseException) -> bool:
    if isinstance(exc, pickle.PicklingError):
        return True
    text = str(exc)
    return isinstance(exc, (AttributeError, TypeError)) and ("pickle" in text or "Can't get local" in text)


def _dumps_by_value(payload: Any, original: BaseException, **options: Any) -> bytes:
    """The payload pickled whole by cloudpickle, when plain pickle refused
    it; the original error, named and explained, when cloudpickle cannot
    either."""
    try:
        pickled = _source.dumps(payload, PROTOCOL)
    except Exception as second:  # noqa: BLE001 - reported with the first
        original.add_note(f"forkfarm tried to send it by value (cloudpickle) too: {second}")
        raise original from None
    return dumps(_Pickled(pickled), PROTOCOL, **options)


class _Pickled:
    """Bytes cloudpickle made, loaded as what they hold."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return pickle.loads, (self.data,)


def dumps_or_by_value(payload: Any, protocol: int = PROTOCOL, **options: Any) -> bytes:
    """dumps, falling back to cloudpickle for what plain pickle refuses (a
    lambda among a map's items, say)."""
    try:
        return dumps(payload, protocol, **options)
    except Exception as exc:
        if not _pickling_failed(exc):
            raise
        return _dumps_by_value(payload, exc, **options)


def dumps_by_value(value: Any, error: BaseException) -> bytes:
    """A result that plain pickle refused (an instance of a class that came
    by value), pickled by cloudpickle; raises when that fails too, and the
    worker reports the original error."""
    if not _pickling_failed(error):
        raise error
    # Filenames kept, no lines shipped: the parent's linecache is its own.
    return dumps(_Pickled(_source.dumps(value, PROTOCOL, ship_source=False)), PROTOCOL)


def encode_call(func: Callable[..., Any], args: Iterable[Any], kwds: Mapping[str, Any]) -> bytes:
    """Encodes ``func(*args, **kwds)``."""
    payload = (func, tuple(args), dict(kwds))
    try:  # the hot path calls dumps itself: no Python frame in between
        return dumps(payload, PROTOCOL)
    except Exception as exc:
        if not _pickling_failed(exc):
            raise
        return _dumps_by_value(payload, exc)


def encode_callee(func: Callable[..., Any]) -> bytes:
    """Encodes a function called again and again (``apply``, ``submit``) as
    the context of its calls, sent to each worker once."""
    return dumps_or_by_value((CALL, func), oob=False)


_NO_ARGUMENTS = dumps(((), {}), PROTOCOL)


def encode_arguments(args: Iterable[Any], kwds: Mapping[str, Any]) -> bytes:
    """Encodes the arguments of a call whose function is its context."""
    if not args and not kwds:
        return _NO_ARGUMENTS
    payload = (tuple(args), dict(kwds))
    try:
        return dumps(payload, PROTOCOL)
    except Exception as exc:
        if not _pickling_failed(exc):
            raise
        return _dumps_by_value(payload, exc)


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
    return dumps_or_by_value((STARMAP if star else MAP, func), oob=False)


def encode_items(items: Sequence[Any], memo: _core.BufferMemo | None = None) -> bytes:
    """Encodes a chunk of a map. The chunks of one map share a memo, so that
    a large buffer they all carry is copied into the arena once."""
    try:
        return dumps(items, PROTOCOL, memo=memo)
    except Exception as exc:
        if not _pickling_failed(exc):
            raise
        return _dumps_by_value(items, exc, memo=memo)


# Where a worker's failure happened, first in its encoding: the call raised
# (False), the task's message could not be unpickled (LOAD_FAILED), or the
# value could not be pickled ((RESULT_FAILED, the original error's
# encoding)). The Pool reports all three as the exception itself; the
# Executor reports each as ProcessPoolExecutor does.
LOAD_FAILED = "load"
RESULT_FAILED = "result"


def encode_error(exc: BaseException, stage: object = False) -> bytes:
    """Encodes a failure: the exception and each exception chained to it,
    pickled one by one, with the type's name, the text, the reprs of the
    args, the notes and the traceback (forkfarm's frames left out) beside
    each in plain strings (``_remote.encode_links``), so that the parent
    can rebuild the chain, and name a link that does not pickle here or
    does not unpickle there (``_errors.decode_error``); after where it
    happened (``stage``)."""
    links = [tuple(link) for link in _remote.encode_links(exc)]
    return pickle.dumps((stage, links), protocol=PROTOCOL)


def encode_load_error(exc: BaseException) -> bytes:
    """Encodes the failure of a task's message to unpickle in the worker."""
    return encode_error(exc, LOAD_FAILED)


def encode_result_error(exc: BaseException, value: Any) -> bytes:
    """Encodes the failure of a result that could not be pickled: a
    MaybeEncodingError, which the Pool reports, with the original error's
    own encoding beside it, which the Executor reports."""
    return encode_error(MaybeEncodingError(exc, value), (RESULT_FAILED, encode_error(exc)))


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
    workers do: standard input is not the parent's to read. breakpoint()
    runs pdb on the terminal instead (``_debug``). Its standard output and
    error go where its pool captures them, if it does (``_output``)."""
    try:
        if sys.stdin is not None:
            sys.stdin.close()
        sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the worker
    except (OSError, ValueError):
        pass
    _debug.install()
    _output.start_worker()


def worker_exit() -> None:
    """Runs just before a worker exits: flush what the tasks printed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


class WorkerHooks(NamedTuple):
    """What the worker's C loop (``pymodule/worker.c``) calls: given once
    to ``_core.Pool`` and ``_core.zygote_serve``, which read every field
    when the pool is made and raise TypeError naming one that is missing
    or of the wrong kind."""

    # loads(buffer, buffers=...) -> the task's message
    loads: Callable[..., Any]
    # dumps(value, protocol) -> a result's bytes
    dumps: Callable[[Any, int], bytes]
    # the pickle protocol dumps is given
    protocol: int
    # a call (or an initializer, or a context) that raised
    encode_error: Callable[[BaseException], bytes]
    # a result that could not be pickled
    encode_result_error: Callable[[BaseException, Any], bytes]
    # a task's message that could not be unpickled in the worker
    encode_load_error: Callable[[BaseException], bytes]
    # a result plain pickle refused, by value (cloudpickle), or raises
    dumps_by_value: Callable[[Any, BaseException], bytes]
    # before the initializer, in each new worker
    worker_setup: Callable[[], None]
    # just before a worker exits
    worker_exit: Callable[[], None]


WORKER_HOOKS = WorkerHooks(
    loads=loads,
    dumps=dumps,
    protocol=PROTOCOL,
    encode_error=encode_error,
    encode_result_error=encode_result_error,
    encode_load_error=encode_load_error,
    dumps_by_value=dumps_by_value,
    worker_setup=worker_setup,
    worker_exit=worker_exit,
)
