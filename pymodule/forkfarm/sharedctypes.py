"""ctypes objects in shared memory, as ``multiprocessing.sharedctypes``.

:func:`RawValue` and :func:`RawArray` return ctypes objects whose memory is
a shared segment; :func:`Value` and :func:`Array` wrap them with a lock
(``lock=True`` makes a new :class:`forkfarm.RLock`, which a dead holder
does not keep), as multiprocessing does, and
``numpy.frombuffer(arr.get_obj())`` views them without a copy.

What differs: a raw object passed to a pool's task travels as a handle to
the same memory (multiprocessing refuses and asks for inheritance). The
synchronized wrappers keep multiprocessing's rule (their wrapper class is
multiprocessing's): share them by inheritance (a global or the pool's
``initargs``).
"""

from __future__ import annotations

import ctypes
# The wrappers Value and Array return are multiprocessing's, so are their classes.
from multiprocessing.sharedctypes import (
    Synchronized as Synchronized,
    SynchronizedArray as SynchronizedArray,
    SynchronizedBase as SynchronizedBase,
    SynchronizedString as SynchronizedString,
    synchronized,
)
from multiprocessing.sharedctypes import typecode_to_type  # type: ignore[attr-defined]
from typing import Any

from . import _core, _segments
from .synchronize import RLock

__all__ = ["Array", "RawArray", "RawValue", "Value", "copy", "synchronized"]

_shared_types: dict[Any, type] = {}


def _shared_type(base: Any) -> Any:
    """A subclass of the ctypes type base whose instances pickle as handles
    inside a pool's messages."""
    kind = _shared_types.get(base)
    if kind is None:
        kind = type(base.__name__, (base,), {"__reduce__": _reduce_shared})
        _shared_types[base] = kind
    return kind


def _reduce_shared(obj: Any) -> Any:
    segment = _segment_of_ctype(obj)
    if _core.pickling_for_pool() and segment is not None and segment.lendable:
        _core.pin(segment.id)
        return _rebuild_ctype, (segment.id, _describe(type(obj).__mro__[1]))
    raise RuntimeError(
        f"{type(obj).__name__} objects should only be shared between processes "
        "through inheritance, or as arguments of a forkfarm pool's tasks"
    )


def _segment_of_ctype(obj: Any) -> _core.Segment | None:
    """The segment under a ctypes object made by from_buffer (ctypes keeps
    a memoryview of it)."""
    objects = getattr(obj, "_objects", None)
    # A dict of the objects it keeps alive, or (a simple type) that one.
    for value in objects.values() if isinstance(objects, dict) else (objects,):
        if isinstance(value, memoryview):
            value = value.obj
        if isinstance(value, _core.Segment):
            return value
    return None


def _describe(kind: Any) -> Any:
    """A picklable description of a ctypes type: array types have no
    importable name, so they travel as (element, length)."""
    if issubclass(kind, ctypes.Array):
        return ("array", _describe(kind._type_), kind._length_)
    return kind


def _undescribe(description: Any) -> Any:
    if isinstance(description, tuple):
        _, element, length = description
        return _undescribe(element) * length
    return description


def _rebuild_ctype(segment_id: int, description: Any) -> Any:
    return _shared_type(_undescribe(description)).from_buffer(_segments.find(segment_id))


def _new(base: Any) -> Any:
    segment = _segments.new(ctypes.sizeof(base))
    return _shared_type(base).from_buffer(segment)


def _ctype(typecode_or_type: Any) -> Any:
    kind = typecode_to_type.get(typecode_or_type, typecode_or_type)
    if not (isinstance(kind, type) and issubclass(kind, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array)):  # noqa: E501
        raise TypeError(f"{typecode_or_type!r} is neither a typecode nor a ctypes type")
    return kind


def RawValue(typecode_or_type: Any, *args: Any) -> Any:  # noqa: N802 - multiprocessing's name
    """A ctypes object in shared memory, initialized with args."""
    obj = _new(_ctype(typecode_or_type))
    if args:
        obj.__init__(*args)
    return obj


def RawArray(typecode_or_type: Any, size_or_initializer: Any) -> Any:  # noqa: N802
    """A ctypes array in shared memory: of that many zeros, or a copy of a
    sequence."""
    kind = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        if size_or_initializer < 0:
            raise ValueError(f"array size cannot be negative: {size_or_initializer}")
        return _new(kind * size_or_initializer)
    values = list(size_or_initializer)
    array = _new(kind * len(values))
    array.__init__(*values)
    return array


def _with_lock(obj: Any, lock: Any, ctx: Any) -> Any:
    if lock is False:
        return obj
    if lock in (True, None):
        lock = ctx.RLock() if ctx is not None else RLock()
    if not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire'")
    return synchronized(obj, lock, ctx=ctx)


def Value(typecode_or_type: Any, *args: Any, lock: Any = True, ctx: Any = None) -> Any:  # noqa: N802
    """A synchronized shared ctypes object, as ``multiprocessing.Value``."""
    return _with_lock(RawValue(typecode_or_type, *args), lock, ctx)


def Array(  # noqa: N802
    typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True, ctx: Any = None
) -> Any:
    """A synchronized shared ctypes array, as ``multiprocessing.Array``."""
    return _with_lock(RawArray(typecode_or_type, size_or_initializer), lock, ctx)


def copy(obj: Any) -> Any:
    """A new shared object with obj's value."""
    new = _new(type(obj).__mro__[1] if type(obj) in _shared_types.values() else type(obj))
    # new is of the shared subclass of obj's type, which ctypes will not
    # assign from obj's: the bytes are the value.
    ctypes.memmove(ctypes.addressof(new), ctypes.addressof(obj), ctypes.sizeof(obj))
    return new
