"""Where workers come from: the start methods, the one set with
``set_start_method``, and the choice a pool or a Process makes when none
is set. The lowest layer of the package's process creation: context.py
(the public face), _process.py (Process) and _engine.py (pools) read it,
and it reads nothing of theirs."""

from __future__ import annotations

import threading

START_METHODS = ["fork", "forkserver", "spawn"]


def check(method: str | None) -> str:
    """A start method's name, checked: None is ``"fork"``."""
    if method is None:
        return "fork"
    if method not in START_METHODS:
        raise ValueError(f"cannot find context for {method!r}")
    return method


class _Setting:
    """The start method of the package's default context: unset until
    ``set_start_method``, which sets it once unless forced."""

    def __init__(self) -> None:
        self.method: str | None = None

    def set(self, method: str | None, force: bool = False) -> None:
        if self.method is not None and not force:
            raise RuntimeError("context has already been set")
        self.method = None if method is None and force else check(method)


setting = _Setting()


def threaded() -> bool:
    """Whether this process runs Python threads besides the caller's: then
    a pool takes the fork server rather than fork. Threads the threading
    module did not start (the runtime's own among them) are not counted:
    they hold no lock of Python's."""
    current = threading.current_thread()
    if current is not threading.main_thread():
        return True
    return any(
        thread is not current and not isinstance(thread, threading._DummyThread)
        for thread in threading.enumerate()
    )


def for_pool(context: object) -> str:
    """The start method of a new pool: the one its context names (ours or
    multiprocessing's, or a method's name), or the one set with
    ``set_start_method``, or else ``"fork"``, unless the caller has other
    threads: then ``"forkserver"``, since a process with threads must not
    fork. ``"spawn"`` is the fork server too."""
    if context is None:
        method = setting.method
    elif isinstance(context, str):
        method = context
    else:  # a default context may have none set
        method = context.get_start_method(allow_none=True)  # type: ignore[attr-defined]
    if method is None:
        return "forkserver" if threaded() else "fork"
    return "forkserver" if check(method) == "spawn" else method
