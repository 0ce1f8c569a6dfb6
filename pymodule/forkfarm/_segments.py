"""The shared segments this process has mapped, by id: what shared arrays,
shared ctypes and synchronization primitives rebuild their handles from.
Without NumPy, so that the primitives do not need it."""

from __future__ import annotations

import weakref

from . import _core

# Every segment this process has mapped, by id, while something uses it.
mapped: weakref.WeakValueDictionary[int, _core.Segment] = weakref.WeakValueDictionary()
# The segments a worker opened from its parent, kept mapped (so that the
# next task finds them warm) until the parent lets them go. The parent keeps
# no such cache: what it opens (arrays its workers made) lives as long as
# its arrays.
_opened: dict[int, _core.Segment] = {}


def new(size: int) -> _core.Segment:
    """A new segment of size bytes, registered. In a worker the parent makes
    it, so that it can travel back as a handle."""
    segment = _core.Segment(size, parent=_core.in_worker())
    mapped[segment.id] = segment
    return segment


def find(segment_id: int) -> _core.Segment:
    """The segment of an id: mapped already, inherited, or opened from the
    parent."""
    for key in [k for k, s in _opened.items() if s.released]:
        del _opened[key]
    segment = mapped.get(segment_id)
    if segment is None:
        segment = _core.Segment.open(segment_id)
        mapped[segment_id] = segment
        if _core.in_worker():
            # The next task will likely bring it again: keep it mapped.
            _opened[segment_id] = segment
    return segment
