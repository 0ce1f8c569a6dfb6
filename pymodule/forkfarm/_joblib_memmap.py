"""joblib's memmapping contract on forkfarm's executor (used by joblib.py).

joblib promises that a NumPy array above ``max_nbytes`` reaches the
workers as a read-only ``np.memmap`` (``mmap_mode``), dumped once per
``Parallel`` call to a temporary folder that is removed at the call's end;
and that an array a worker returns comes back as a plain array, unless a
file of the caller's own backs it. joblib's own machinery does each step:
its ``TemporaryResourcesManager`` owns the folders (and registers them with
its resource tracker, which removes them if this process dies), its
forward reducer dumps an array once and names the file, and its backward
reducer turns a returned memmap into what the caller should get.

Those reducers are written for a pickler's dispatch table, which
forkfarm's encoder does not take per call: so the arrays of a batch (the
call's arguments, and lists, tuples and dicts within them) are swapped for
small objects that pickle as the reducer says, and everything else travels
as forkfarm sends it. A forkfarm shared array keeps its handle: it is
shared already, with no file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from . import _segments

__all__ = ["Memmapping", "for_the_caller"]


class _Reduced:
    """An object that pickles as ``reducer(obj)`` says: joblib's reducers
    return ``(callable, args)``, which is what ``__reduce__`` returns."""

    __slots__ = ("obj", "reducer")

    def __init__(self, obj: Any, reducer: Callable[[Any], Any]) -> None:
        self.obj = obj
        self.reducer = reducer

    def __reduce__(self) -> Any:
        return self.reducer(self.obj)


# Argument types that hold no array: most calls carry only these, and
# looking at them costs far less than swapping (W19's 10,000 tiny calls).
_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})


def _may_hold_arrays(item: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> bool:
    """Whether a call's arguments are anything but plain scalars."""
    _, args, kwargs = item
    for value in args:
        if type(value) not in _PLAIN:
            return True
    if kwargs:
        for value in kwargs.values():
            if type(value) not in _PLAIN:
                return True
    return False


class Memmapping:
    """The memmapping of one ``Parallel`` call: where its arrays are
    dumped, and the reducer that dumps them (joblib's, over a folder of
    its ``TemporaryResourcesManager``)."""

    def __init__(
        self,
        context_id: Any,
        max_nbytes: float | int | str | None,
        mmap_mode: str | None,
        temp_folder: str | None,
        verbose: int,
        prewarm: bool | str,
    ) -> None:
        import numpy as np
        from joblib._memmapping_reducer import TemporaryResourcesManager, get_memmapping_reducers
        from joblib.disk import memstr_to_bytes

        self._np = np
        if isinstance(max_nbytes, str):  # "1M", as Parallel takes it
            max_nbytes = memstr_to_bytes(max_nbytes)
        self._make_manager: Callable[[], Any] = lambda: TemporaryResourcesManager(
            temp_folder, context_id=context_id
        )
        # Made with the first array to dump: making it registers its folder
        # with joblib's resource tracker, a process of its own.
        self._manager: Any = None
        forward, _ = get_memmapping_reducers(
            temp_folder_resolver=self._folder,
            max_nbytes=max_nbytes,
            mmap_mode=mmap_mode,
            verbose=verbose,
            prewarm=prewarm,
            # Files go when the call ends (clean); the workers are not
            # loky's and share no resource tracker with this process.
            unlink_on_gc_collect=False,
        )
        self._reduce = forward[np.ndarray]
        self._max_nbytes = max_nbytes

    def _folder(self) -> str:
        """The call's temporary folder (for joblib's reducer)."""
        if self._manager is None:
            self._manager = self._make_manager()
        folder: str = self._manager.resolve_temp_folder_name()
        return folder

    def _wants(self, array: Any) -> bool:
        """Whether joblib's reducer has something to do with this array:
        a memmap, or a view of one, is sent as its file; a large plain
        array is dumped; a forkfarm shared array keeps its handle."""
        if _segments.segment_of(array) is not None:
            return False
        base = array
        while base is not None:
            if isinstance(base, self._np.memmap):
                return True
            base = getattr(base, "base", None)
        return (
            self._max_nbytes is not None
            and not array.dtype.hasobject
            and array.nbytes > self._max_nbytes
        )

    def _swap(self, value: Any, swapped: dict[int, Any], depth: int = 0) -> Any:
        """value, its large arrays (within lists, tuples and dicts) swapped
        for what pickles as joblib's reducer says; value itself when it
        has none. An array met twice gets the same stand-in (swapped, by
        id), so that the batch's pickle carries it once and the worker
        maps it once for all the batch's calls."""
        if isinstance(value, self._np.ndarray):
            if id(value) not in swapped:
                wanted = self._wants(value)
                swapped[id(value)] = _Reduced(value, self._reduce) if wanted else value
            return swapped[id(value)]
        if depth >= 4:
            return value
        if type(value) in (list, tuple):
            items = [self._swap(item, swapped, depth + 1) for item in value]
            if all(new is old for new, old in zip(items, value)):
                return value
            return type(value)(items)
        if type(value) is dict:
            new = {key: self._swap(item, swapped, depth + 1) for key, item in value.items()}
            if all(new[key] is item for key, item in value.items()):
                return value
            return new
        return value

    def prepare(self, batch: Any) -> Any:
        """The batch (joblib's ``BatchedCalls``) as it will travel: a copy
        whose calls' arguments are swapped, or the batch itself when
        nothing needs to be."""
        items = getattr(batch, "items", None)
        if not isinstance(items, list) or not any(map(_may_hold_arrays, items)):
            return batch
        new_items = []
        changed = False
        swapped: dict[int, Any] = {}
        for func, args, kwargs in items:
            new_args = self._swap(tuple(args), swapped)
            new_kwargs = self._swap(dict(kwargs), swapped)
            changed |= new_args is not args or new_kwargs is not kwargs
            new_items.append((func, new_args, new_kwargs))
        if not changed:
            return batch
        prepared = copy.copy(batch)
        prepared.items = new_items
        return prepared

    def clean(self) -> None:
        """Removes the call's folder and its files: the call is over (or
        its workers were killed), and a worker that still maps a file
        keeps its pages."""
        if self._manager is not None:
            self._manager._clean_temporary_resources(force=True, allow_non_empty=True)


def _backward(value: Any) -> Any:
    """A returned array pickled as joblib's backward reducer says, when a
    memmap backs it: a joblib temporary becomes a plain array, a file of
    the caller's own a memmap of it again."""
    import numpy as np
    from joblib._memmapping_reducer import _get_backing_memmap, reduce_array_memmap_backward

    if isinstance(value, np.ndarray) and _get_backing_memmap(value) is not None:
        return _Reduced(value, reduce_array_memmap_backward)
    return value


def for_the_caller(results: Any) -> Any:
    """In a worker: a batch's results ready to travel back, a memmap among
    them as joblib's backward reducer says."""
    import sys

    if "numpy" in sys.modules and isinstance(results, list):
        return [_backward(value) for value in results]
    return results
