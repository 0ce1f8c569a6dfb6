"""The shared segments this process has mapped, by id: what shared arrays,
shared ctypes and synchronization primitives rebuild their handles from.
Without NumPy, so that the primitives do not need it."""

from __future__ import annotations

import weakref
from typing import Any

from . import _core

# Every segment this process has mapped, by id, while something uses it.
mapped: weakref.WeakValueDictionary[int, _core.Segment] = weakref.WeakValueDictionary()
# The segments a worker opened from its parent, kept mapped (so that the
# next task finds them warm) until the parent lets them go. The parent keeps
# no such cache: what it opens (arrays its workers made) lives as long as
# its arrays.
_opened: dict[int, _core.Segment] = {}


def new(size: int, map_bytes: int = -1) -> _core.Segment:
    """A new segment of size bytes, registered, with its first ``map_bytes``
    bytes mapped here (all of them when negative: a queue maps its own
    windows). In a worker the parent makes it, so that it can travel back as
    a handle."""
    segment = _core.Segment(size, parent=_core.in_worker(), mapped=map_bytes)
    mapped[segment.id] = segment
    return segment


def find(segment_id: int, map_bytes: int = -1) -> _core.Segment:
    """The segment of an id: mapped already, inherited, or opened from the
    parent, with its first ``map_bytes`` bytes mapped (all when negative)."""
    for key in [k for k, s in _opened.items() if s.released]:
        del _opened[key]
    segment = mapped.get(segment_id)
    if segment is None:
        segment = _core.Segment.open(segment_id, map_bytes)
        mapped[segment_id] = segment
        if _core.in_worker():
            # The next task will likely bring it again: keep it mapped.
            _opened[segment_id] = segment
    return segment


def segment_of(obj: Any) -> _core.Segment | None:
    """The segment that holds an array's (or a buffer's) memory, if any:
    the first Segment among its bases."""
    base: Any = obj
    while base is not None:
        if isinstance(base, _core.Segment):
            return base
        base = getattr(base, "base", None)
        if isinstance(base, memoryview):
            base = base.obj
    return None
