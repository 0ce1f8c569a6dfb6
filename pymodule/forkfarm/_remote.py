"""A worker's exception on its way home: encoded in the worker, link by
link of its chain, and rebuilt here; and :class:`RemoteError`, what stands
for an exception that cannot make the trip (docs/errors.md).

In the worker, :func:`encode_links` turns the exception and every
exception chained to it (``__cause__``, ``__context__``, each once) into
one :class:`Link` each: its type's module and qualified name, its text,
the reprs of its args, its notes, its traceback formatted without
forkfarm's own frames, and the exception pickled on its own, or why it
could not be. One link that does not pickle loses nothing of the others.

Here, :func:`rebuild` unpickles each link, or makes a RemoteError for it
(a subclass of the original type when that type is importable here), and
links them again as they were. The worker's traceback goes where
multiprocessing puts it: a ``RemoteTraceback`` as the ``__cause__`` of the
exception raised, or, when that exception has a cause of its own, of the
last exception down its chain of causes.
"""

from __future__ import annotations

import importlib
import multiprocessing.pool
import os
import pickle
import reprlib
import sys
import threading
import traceback
import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

# The traceback of an exception raised in a worker, attached to it as
# ``__cause__`` (``.tb`` is its text): multiprocessing's own class, so that
# code testing the cause's type finds what it looks for.
RemoteTraceback = multiprocessing.pool.RemoteTraceback  # type: ignore[attr-defined]

PROTOCOL = 5
# The links of a chain encoded at most (the exception raised first); the
# traceback text of the first one still shows the whole chain.
MAX_LINKS = 32
# The longest repr of an argument kept, in characters.
MAX_REPR = 1000

# Frames in files under this directory are forkfarm's, left out of remote
# tracebacks: a traceback starts at the user's function.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


# -- RemoteError ---------------------------------------------------------------


def _text(type_name: str, message: str, reason: str) -> str:
    text = f"{type_name}: {message}" if message else type_name
    if reason:
        text += f" ({reason})"
    return text


class RemoteError(Exception):
    """An exception raised in a worker that could not travel as itself: it
    could not be pickled there, or not unpickled here.

    When the original type can be imported here and is an ``Exception``,
    the error is an instance of a subclass of both (``RemoteError[T]``,
    made once per type), so ``except T`` catches it; the original's
    ``__init__`` is never called. ``.type_name`` is the original's
    qualified class name, ``.message`` its text, ``.args_reprs`` the reprs
    of its args, ``.notes`` its notes (also its ``__notes__``),
    ``.traceback`` the worker's formatted traceback (its chain included),
    ``.reason`` why it could not travel."""

    # Named as forkfarm exports it, in tracebacks and in a pickle of the
    # class itself.
    __module__ = "forkfarm"

    type_name: str
    message: str
    traceback: str
    reason: str
    args_reprs: tuple[str, ...]
    notes: list[str]
    _origin: tuple[str, str] | None

    def __init__(
        self,
        type_name: str,
        message: str,
        traceback: str = "",
        reason: str = "",
        args_reprs: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__(_text(type_name, message, reason))
        _fill(self, type_name, message, traceback, reason, args_reprs, notes, None)

    # Its own, not the original type's: KeyError's would quote the text,
    # UnicodeDecodeError's would print '' (its fields were never set).
    def __str__(self) -> str:
        return _text(self.type_name, self.message, self.reason)

    def __repr__(self) -> str:
        return f"RemoteError({self.type_name!r}, {self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return remote_error, (
            self.type_name,
            self.message,
            self.traceback,
            self.reason,
            self.args_reprs,
            self.notes,
            self._origin,
        )


def _fill(
    err: RemoteError,
    type_name: str,
    message: str,
    traceback: str,
    reason: str,
    args_reprs: Sequence[str],
    notes: Sequence[str],
    origin: tuple[str, str] | None,
) -> None:
    err.type_name = type_name
    err.message = message
    err.traceback = traceback
    err.reason = reason
    err.args_reprs = tuple(args_reprs)
    err.notes = list(notes)
    err._origin = origin
    if notes:
        err.__notes__ = list(notes)


def _original_type(origin: tuple[str, str] | None) -> type[Exception] | None:
    """The class module.qualname names here, importing its module as
    unpickling would; None unless it is an Exception class."""
    if origin is None:
        return None
    module_name, qualname = origin
    if not module_name or not qualname or "<" in qualname:
        return None
    try:
        found: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:  # noqa: BLE001 - not importable here
        return None
    if isinstance(found, type) and issubclass(found, Exception) and not issubclass(found, RemoteError):
        return found
    return None


# The RemoteError subclass made for each original type (RemoteError itself
# for a type that refused to be subclassed).
_classes: dict[type, type[RemoteError]] = {}
_classes_lock = threading.Lock()


def _class_for(original: type[Exception] | None) -> type[RemoteError]:
    if original is None:
        return RemoteError
    with _classes_lock:
        cls = _classes.get(original)
    if cls is not None:
        return cls
    name = f"RemoteError[{type_name_of(original)}]"

    def body(namespace: dict[str, Any]) -> None:
        namespace["__module__"] = RemoteError.__module__
        namespace["__qualname__"] = name
        namespace["__doc__"] = f"A {type_name_of(original)} raised in a worker that could not travel as itself."

    try:
        made: type[RemoteError] = types.new_class(name, (RemoteError, original), {}, body)
    except Exception:  # noqa: BLE001 - a layout conflict, a refusing __init_subclass__
        made = RemoteError
    with _classes_lock:
        return _classes.setdefault(original, made)


def remote_error(
    type_name: str,
    message: str,
    traceback: str = "",
    reason: str = "",
    args_reprs: Sequence[str] = (),
    notes: Sequence[str] = (),
    origin: tuple[str, str] | None = None,
) -> RemoteError:
    """A RemoteError standing for an exception of the class origin names
    (``(module, qualname)``): an instance of that class too when it is an
    Exception importable here and takes a subclass. RemoteError pickles to
    a call of this."""
    cls = _class_for(_original_type(origin))
    err: RemoteError | None = None
    if cls is not RemoteError:
        try:
            # The original's __new__ (through the MRO), never its __init__.
            err = cls.__new__(cls)
            BaseException.__init__(err, _text(type_name, message, reason))
        except Exception:  # noqa: BLE001 - a __new__ that wants arguments
            err = None
    if err is None:
        err = RemoteError(type_name, message, traceback, reason, args_reprs, notes)
    _fill(err, type_name, message, traceback, reason, args_reprs, notes, origin)
    return err


# -- in the worker ---------------------------------------------------------------


class Link(NamedTuple):
    """One exception of a chain, as it travels. cause and context are the
    positions of those links in the list (None: there is none, or it did
    not fit in :data:`MAX_LINKS`)."""

    module: str
    qualname: str
    type_name: str
    message: str
    args_reprs: tuple[str, ...]
    notes: tuple[str, ...]
    suppress_context: bool
    cause: int | None
    context: int | None
    pickled: bytes | None
    pickle_error: str
    traceback: str


def type_name_of(cls: type) -> str:
    """module.qualname, or the bare name of a builtin."""
    module = getattr(cls, "__module__", None) or "builtins"
    qualname = getattr(cls, "__qualname__", None) or cls.__name__
    return qualname if module == "builtins" else f"{module}.{qualname}"


_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxstring = _repr.maxlong = _repr.maxother = MAX_REPR
_repr.maxtuple = _repr.maxlist = _repr.maxarray = _repr.maxdict = 30
_repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 30


def safe_repr(value: object) -> str:
    """repr(value), bounded (reprlib) and truncated, or why it failed."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ is reported
        return f"<repr() failed: {type(exc).__name__}>"
    if len(text) > MAX_REPR:
        text = text[:MAX_REPR] + f"...<{len(text) - MAX_REPR} more characters>"
    return text


def _own_frame(filename: str | None) -> bool:
    return bool(filename) and os.path.abspath(filename or "").startswith(PACKAGE_DIR)


def _drop_own_frames(top: traceback.TracebackException) -> None:
    """Removes forkfarm's frames from every traceback of top's chain (and
    of its exception groups' members)."""
    pending: list[traceback.TracebackException | None] = [top]
    seen: set[int] = set()
    while pending:
        te = pending.pop()
        if te is None or id(te) in seen:
            continue
        seen.add(id(te))
        frames = [frame for frame in te.stack if not _own_frame(frame.filename)]
        if len(frames) != len(te.stack):
            te.stack = traceback.StackSummary.from_list(frames)
        pending += [te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())]


def format_remote(exc: BaseException) -> str:
    """exc's traceback and its chain's, as Python prints them, without
    forkfarm's frames."""
    try:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
        _drop_own_frames(te)
        return "".join(te.format())
    except Exception:  # noqa: BLE001 - the exception alone, then
        try:
            return "".join(traceback.format_exception_only(type(exc), exc))
        except Exception:  # noqa: BLE001
            return f"{type_name_of(type(exc))}: <the exception could not be formatted>\n"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ is still reported
        return "<the exception's str() failed>"


def _notes(exc: BaseException) -> tuple[str, ...]:
    try:
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, (list, tuple)):
            return ()
        return tuple(note if isinstance(note, str) else safe_repr(note) for note in notes)
    except Exception:  # noqa: BLE001
        return ()


def _args_reprs(exc: BaseException) -> tuple[str, ...]:
    try:
        args = exc.args
        return tuple(safe_repr(arg) for arg in args) if isinstance(args, tuple) else ()
    except Exception:  # noqa: BLE001
        return ()


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and the exceptions chained to it, each once, exc first."""
    order = [exc]
    index = {id(exc)}
    position = 0
    while position < len(order):
        current = order[position]
        position += 1
        for other in (current.__cause__, current.__context__):
            if other is not None and id(other) not in index and len(order) < MAX_LINKS:
                index.add(id(other))
                order.append(other)
    return order


def encode_links(exc: BaseException) -> list[Link]:
    """exc and its chain as links, exc first (in the worker)."""
    order = _chain(exc)
    position = {id(e): i for i, e in enumerate(order)}
    links = []
    for e in order:
        cls = type(e)
        try:
            pickled: bytes | None = pickle.dumps(e, protocol=PROTOCOL)
            pickle_error = ""
        except BaseException as error:  # noqa: BLE001 - anything may fail to pickle
            pickled = None
            pickle_error = safe_repr(error)
        links.append(
            Link(
                module=str(getattr(cls, "__module__", "") or ""),
                qualname=str(getattr(cls, "__qualname__", "") or cls.__name__),
                type_name=type_name_of(cls),
                message=_message(e),
                args_reprs=_args_reprs(e),
                notes=_notes(e),
                suppress_context=bool(e.__suppress_context__),
                cause=position.get(id(e.__cause__)) if e.__cause__ is not None else None,
                context=position.get(id(e.__context__)) if e.__context__ is not None else None,
                pickled=pickled,
                pickle_error=pickle_error,
                traceback=format_remote(e),
            )
        )
    return links


# -- here ------------------------------------------------------------------------


def wrap_traceback(text: str) -> str:
    """A remote traceback's text as multiprocessing shows it."""
    return '\n"""\n' + text + '"""'


def _stand_in(link: Link, reason: str) -> RemoteError:
    return remote_error(
        link.type_name,
        link.message,
        link.traceback,
        reason,
        link.args_reprs,
        link.notes,
        (link.module, link.qualname),
    )


def _build(link: Link) -> tuple[BaseException, BaseException | None]:
    """The exception a link stands for, and the error that unpickling it
    here raised, if it did."""
    if link.pickled is None:
        return _stand_in(link, f"raised in a worker; it could not be pickled there: {link.pickle_error}"), None
    try:
        exc = pickle.loads(link.pickled)
    except Exception as unpickling:  # noqa: BLE001 - anything may fail to unpickle
        return _stand_in(link, f"raised in a worker; it could not be unpickled here: {unpickling!r}"), unpickling
    if not isinstance(exc, BaseException):
        return _stand_in(link, "raised in a worker"), None
    if link.notes and not isinstance(getattr(exc, "__notes__", None), list):
        exc.__notes__ = list(link.notes)  # a __reduce__ that leaves them out
    return exc, None


def rebuild(
    links: Sequence[Link], traceback_class: Callable[[str], BaseException] = RemoteTraceback
) -> BaseException:
    """The exception links describe, chained as it was in the worker, with
    the worker's traceback as a traceback_class (multiprocessing's
    ``RemoteTraceback``; the Executor gives concurrent.futures' own)."""
    built = [_build(link) for link in links]
    for link, (exc, unpickling) in zip(links, built):
        if link.cause is not None:
            exc.__cause__ = built[link.cause][0]
        elif unpickling is not None:
            exc.__cause__ = unpickling
        else:
            exc.__cause__ = None
        exc.__context__ = built[link.context][0] if link.context is not None else None
        exc.__suppress_context__ = link.suppress_context
    # The remote traceback goes at the end of the first exception's chain
    # of causes: as the cause of the exception raised when it had none
    # (as multiprocessing does), else of its last cause; an unpickling
    # error that was the cause there becomes the traceback's cause.
    position, seen = 0, {0}
    while links[position].cause is not None and links[position].cause not in seen:
        position = links[position].cause  # type: ignore[assignment]
        seen.add(position)
    last = built[position][0]
    remote = traceback_class(wrap_traceback(links[0].traceback))
    remote.__cause__ = last.__cause__
    suppress = last.__suppress_context__
    last.__cause__ = remote
    last.__suppress_context__ = suppress
    return built[0][0]


def _valid(link: Link, count: int) -> bool:
    """Whether every field of link has the type a worker gives it, and its
    cause and context are positions in a list of count links."""
    texts = (link.module, link.qualname, link.type_name, link.message, link.pickle_error, link.traceback)
    if not all(isinstance(text, str) for text in texts):
        return False
    for strings in (link.args_reprs, link.notes):
        if not isinstance(strings, tuple) or not all(isinstance(text, str) for text in strings):
            return False
    for position in (link.cause, link.context):
        if position is not None and not (type(position) is int and 0 <= position < count):
            return False
    return isinstance(link.suppress_context, bool) and (link.pickled is None or isinstance(link.pickled, bytes))


def valid_links(value: object) -> list[Link] | None:
    """value as a list of links, or None when it is not one (not what a
    worker encodes)."""
    if not isinstance(value, list) or not value:
        return None
    links = []
    for item in value:
        if not isinstance(item, tuple) or len(item) != len(Link._fields):
            return None
        link = Link._make(item)
        if not _valid(link, len(value)):
            return None
        links.append(link)
    return links
