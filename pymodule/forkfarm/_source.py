"""Functions sent by value keep their source.

cloudpickle (3.1 and later) renames the code of every function it pickles
by value ``"<dynamic-code>"``, so a frame of a lambda or of a notebook's
function reads ``File "<dynamic-code>", line 3, in f`` in the worker's
traceback, with no source line. forkfarm's by-value pickler
(:func:`pickler_class`, cloudpickle's own with one reducer changed) keeps
each code object's real ``co_filename``, nested code objects and lambdas
included, and ships the lines of a file the worker cannot read itself (a
notebook cell, ``<stdin>``, an IPython kernel's temporary file that is not
on disk) once per pickled payload. Unpickling puts them in the worker's
``linecache``, as IPython puts a cell's, so the worker's traceback shows
``File "<ipython-input-1-...>", line 3, in f`` and the line below it, as a
local one would.

Loading needs no special unpickler: the bytes are cloudpickle's, loaded by
``pickle.loads``, and the code objects are rebuilt by :func:`_code_at`.
"""

from __future__ import annotations

import functools
import io
import linecache
import os
import types
from collections.abc import Callable
from typing import Any


def _readable_file(filename: str) -> bool:
    """Whether filename is a file the worker can read its lines from (it
    shares the parent's file system)."""
    if filename.startswith("<") and filename.endswith(">"):
        return False
    try:
        return os.path.isfile(filename) and os.access(filename, os.R_OK)
    except (OSError, ValueError):
        return False


def source_lines(filename: str, code: types.CodeType | None = None) -> list[str] | None:
    """The lines of filename that linecache holds here, when filename is no
    file the worker could read itself (a cell, ``<stdin>``); else None.
    Only the cache is looked at: nothing is read from disk."""
    if not filename or _readable_file(filename):
        return None
    lines: list[str] = []
    entry = linecache.cache.get(filename)
    if entry is not None:
        try:
            lines = list(linecache.getlines(filename) if len(entry) == 1 else entry[2])
        except Exception:  # noqa: BLE001 - a broken lazy loader: no lines
            lines = []
    if not lines and code is not None:
        # Python 3.14's REPL keeps its inputs per code object, not by name.
        from_code = getattr(linecache, "_getlines_from_code", None)
        if from_code is not None:
            try:
                lines = list(from_code(code))
            except Exception:  # noqa: BLE001 - a private API that changed
                lines = []
    if not lines or not all(isinstance(line, str) for line in lines):
        return None
    return lines


def seed_lines(filename: str, lines: list[str]) -> None:
    """Puts filename's lines in this process's linecache, as IPython does
    for a cell: no modification time, so ``checkcache`` keeps them."""
    linecache.cache[filename] = (sum(len(line) for line in lines), None, lines, filename)


def _code_at(
    make: Callable[..., types.CodeType], args: tuple[Any, ...], filename: str, lines: list[str] | None
) -> types.CodeType:
    """A code object cloudpickle's reducer described, with its filename
    back; and the file's lines in linecache when they came with it."""
    code = make(*args)
    if lines is not None:
        seed_lines(filename, lines)
    if code.co_filename != filename:
        code = code.replace(co_filename=filename)
    return code


@functools.cache
def pickler_class() -> Any:
    """cloudpickle's pickler, keeping code objects' filenames and shipping
    the lines of those the worker cannot read (made on first use:
    cloudpickle loads only when something travels by value). Subclass it
    to add reducers; ``ship_source = False`` keeps the filenames but sends
    no lines."""
    import cloudpickle

    code_reduce = cloudpickle.CloudPickler.dispatch_table[types.CodeType]

    class SourcePickler(cloudpickle.CloudPickler):  # type: ignore[misc]
        ship_source = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # The files whose lines this payload carries already (or that
            # have none to carry): each goes once, with its first code.
            self._files_seen: set[str] = set()

        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is types.CodeType:
                return self._reduce_code(obj)
            return super().reducer_override(obj)

        def _reduce_code(self, code: types.CodeType) -> tuple[Any, ...]:
            make, args = code_reduce(code)
            filename = code.co_filename
            lines = None
            if self.ship_source and filename not in self._files_seen:
                self._files_seen.add(filename)
                lines = source_lines(filename, code)
            return _code_at, (make, args, filename, lines)

    return SourcePickler


def dumps(obj: Any, protocol: int, *, ship_source: bool = True) -> bytes:
    """obj pickled by value (cloudpickle), its code keeping its filenames;
    loaded by ``pickle.loads``."""
    buffer = io.BytesIO()
    pickler = pickler_class()(buffer, protocol=protocol)
    pickler.ship_source = ship_source
    pickler.dump(obj)
    return buffer.getvalue()
