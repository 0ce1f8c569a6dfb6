"""NumPy arrays in shared memory, passed to workers without a copy.

:func:`shared_array` (and :func:`zeros`, :func:`empty`, :func:`full`,
:func:`as_shared`) returns a :class:`SharedArray`: an ordinary
``numpy.ndarray`` whose memory is an anonymous shared segment (a memfd,
mode 0600, never a name under /dev/shm). Passed to a pool's task, it travels
as a handle (segment id, offset, shape, strides, dtype), so the worker sees
the very same memory in O(1), whatever its size, and may write into it.
Slices and views travel the same way. The memory is freed when the last
process holding it lets go, SIGKILL included; no resource tracker is
involved.

A worker opens a segment made after its pool started by asking the parent
for its descriptor (SCM_RIGHTS) once, and keeps it until the parent drops
the array. A shared array made in a worker is made by the parent for it, so
that it comes back as a handle too. Outside a pool's messages
(``pickle.dumps`` of your own), a shared array pickles by value, as a plain
ndarray.

Plain arrays can be born in shared memory too, and then keep value
semantics (a task gets a copy, as with pickle) with no copy made: in a
worker the data of every array of at least 1 MiB is (a result then travels
to the parent with no copy), and in the parent the arrays made inside
``with`` :func:`shared_allocations` are (passed to tasks, they travel with
no copy). docs/arrays.md says when data is copied, moved or shared.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal, SupportsIndex

import numpy as np
import numpy.typing as npt

from . import _core, _segments

__all__ = ["SharedArray", "as_shared", "empty", "full", "shared_allocations", "shared_array", "zeros"]

def _extent(array: np.ndarray[Any, Any]) -> tuple[int, int]:
    """The byte offsets, from the first element, of the lowest and one past
    the highest byte the array covers."""
    low = high = 0
    for n, stride in zip(array.shape, array.strides):
        if n == 0:
            return 0, 0
        if stride < 0:
            low += (n - 1) * stride
        else:
            high += (n - 1) * stride
    return low, high + array.itemsize


def _handle(array: np.ndarray[Any, Any]) -> tuple[Any, ...] | None:
    segment = _segments.segment_of(array)
    if segment is None:
        return None
    # Segments a worker made on its own (not through its parent) cannot be
    # opened by the parent: they travel by value.
    if not segment.lendable:
        return None
    # One its creator already let go is gone by the time the other side
    # looks for it: it travels by value.
    if not segment.creator and segment.released:
        return None
    offset = array.__array_interface__["data"][0] - segment.address
    low, high = _extent(array)
    if offset + low < 0 or offset + high > max(segment.size, 0) and array.size:
        return None
    # The task (or the result) keeps it open for the other side even if
    # this side drops it first.
    _core.pin(segment.id)
    return (
        segment.id,
        offset,
        array.shape,
        array.strides,
        array.dtype,
        bool(array.flags.writeable),
    )


def rebuild(
    segment_id: int,
    offset: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: np.dtype[Any],
    writeable: bool,
) -> SharedArray:
    """The shared array a handle describes (_handle's tuple), on its
    segment, mapped here if it is not yet: how arrays arrive in another
    process without a copy (pickles, and the MPI wire)."""
    segment = _segments.find(segment_id)
    # Made in C on the segment's bytes, checked to lie within them: the
    # handle came from another process.
    array: SharedArray = _core.array_on_segment(segment, offset, shape, strides, dtype, writeable, SharedArray)
    return array


class SharedArray(np.ndarray):  # type: ignore[type-arg, unused-ignore]
    """A ``numpy.ndarray`` in shared memory. Use it as any ndarray; passed
    to a pool's task it travels as a handle, not a copy. Results of
    arithmetic on it are plain ndarrays in private memory."""

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        if _core.pickling_for_pool():
            handle = _handle(self)
            if handle is not None:
                return rebuild, handle
        return self.view(np.ndarray).__reduce_ex__(protocol)

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __array_wrap__(
        self, array: Any, context: Any = None, return_scalar: bool = False
    ) -> Any:
        result = super().__array_wrap__(array, context, return_scalar)
        if isinstance(result, SharedArray) and _segments.segment_of(result) is None:
            return result.view(np.ndarray)
        return result


def _normalize_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        dims = tuple(int(n) for n in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, not {shape!r}") from None
    if any(n < 0 for n in dims):
        raise ValueError(f"negative dimensions are not allowed: {dims}")
    return dims


def shared_array(
    shape: int | Sequence[int], dtype: npt.DTypeLike = float, order: Literal["C", "F"] = "C"
) -> SharedArray:
    """A new array of zeros in shared memory, like ``numpy.zeros``.

    ``order`` is ``"C"`` (row-major) or ``"F"`` (column-major). Object
    arrays cannot be shared: their elements are pointers into one process.
    """
    dims = _normalize_shape(shape)
    kind = np.dtype(dtype)
    if kind.hasobject:
        raise TypeError(
            f"dtype {kind} holds Python objects, which cannot live in shared memory"
        )
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    # In a worker the parent makes it, so that it can come back as a handle.
    segment = _segments.new(math.prod(dims) * kind.itemsize)
    array: SharedArray = _core.array_on_segment(segment, 0, dims, None, kind, True, SharedArray, order == "F")
    return array


def zeros(shape: int | Sequence[int], dtype: npt.DTypeLike = float, order: Literal["C", "F"] = "C") -> SharedArray:
    """A shared array of zeros (``numpy.zeros``)."""
    return shared_array(shape, dtype, order)


def empty(shape: int | Sequence[int], dtype: npt.DTypeLike = float, order: Literal["C", "F"] = "C") -> SharedArray:
    """A shared array (``numpy.empty``). New shared memory is zeroed by the
    kernel anyway, so this is :func:`zeros`."""
    return shared_array(shape, dtype, order)


def full(
    shape: int | Sequence[int],
    fill_value: Any,
    dtype: npt.DTypeLike | None = None,
    order: Literal["C", "F"] = "C",
) -> SharedArray:
    """A shared array filled with ``fill_value`` (``numpy.full``)."""
    if dtype is None:
        dtype = np.array(fill_value).dtype
    array = shared_array(shape, dtype, order)
    array.fill(fill_value)
    return array


def as_shared(array: npt.ArrayLike) -> SharedArray:
    """``array`` in shared memory: itself if it already is a shared array
    that travels as a handle, else a copy (keeping Fortran order)."""
    if isinstance(array, SharedArray) and _handle(array) is not None:
        return array
    source = np.asanyarray(array)
    order: Literal["C", "F"] = "F" if source.flags.f_contiguous and not source.flags.c_contiguous else "C"
    shared = shared_array(source.shape, source.dtype, order)
    np.copyto(shared, source)
    return shared


@contextlib.contextmanager
def shared_allocations() -> Iterator[None]:
    """Inside the block, the data of NumPy arrays of at least 1 MiB made in
    this thread (or asyncio task) is born in shared memory, so that passing
    them to a pool's tasks copies nothing.

    They stay plain arrays with value semantics: a task gets what the array
    held when it was sent, and neither side sees what the other writes
    afterwards (from the first send, the parent's writes go to pages of its
    own, and workers map the data privately). Arrays keep their memory
    after the block; they are freed as usual. Smaller arrays, and arrays
    made in other threads, use NumPy's own allocator. Workers do this by
    default for the arrays they return.
    """
    previous = _core.use_shared_allocator()
    try:
        yield
    finally:
        _core.restore_allocator(previous)
