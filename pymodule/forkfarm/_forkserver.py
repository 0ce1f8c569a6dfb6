"""The fork server: where the pools of a threaded parent get their zygotes
(this file is the client's side; _forkserver_loop.py runs in the server).

A process with threads must not fork: the child of a fork made while another
thread held a lock (malloc's, the import lock, a logging handler's) can
deadlock on it. So when the parent has threads, as a Jupyter kernel always
has, or asks for ``"forkserver"``, a pool's zygote comes from here: a fresh
interpreter, started once with fork and exec and kept for later pools, that
forks one single-threaded zygote per pool. The zygote then serves the pool
exactly as a forked one would (``ff_zygote_serve``).

A request carries the zygote's end of the pool's control socket and a memfd
with the pool's spec; the answer carries the zygote's pid and a pidfd of it,
through which the pool notices the zygote's exit. The spec holds the
parent's ``sys.path`` and working directory, the pool's initializer and its
arguments, and the functions and classes of ``__main__``, by value: the
workers find them by name, as forked workers would find the ones defined
before the pool was made.
"""

from __future__ import annotations

import multiprocessing.spawn
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import types
from collections.abc import Iterable
from multiprocessing import util as _mp_util
from typing import Any

from . import _protocol, _source

REPLY = struct.Struct("q")
# How long the fork server may take to make a zygote: a fork and a pickle.
# One that takes longer is stuck, and is replaced.
REQUEST_TIMEOUT = 30.0


# -- in the parent -----------------------------------------------------------

# What the fork server imports before it forks any zygote
# (set_forkserver_preload): its workers start with them imported.
_preload: tuple[str, ...] = ()


def set_preload(module_names: Iterable[str]) -> None:
    """Sets the modules the fork server imports when it starts; a server
    started with other modules (or another executable) is replaced at the
    next pool that needs it."""
    global _preload
    _preload = tuple(module_names)


def _settings() -> tuple[str, tuple[str, ...]]:
    """What a fork server starts with: the interpreter (multiprocessing's
    setting, which set_executable changes) and the modules to preload."""
    executable = multiprocessing.spawn.get_executable()  # bytes once set, on POSIX
    return (os.fsdecode(executable) if executable else ""), _preload


def main_by_value() -> tuple[list[bytes], _protocol.MainSnapshot]:
    """The functions and classes __main__ defines, pickled by value, and
    what of them was sent: the pool's snapshot of its workers' __main__.
    They go in one pickle, so that functions sharing a global share it in
    the workers too; if one of them cannot be pickled, each goes alone and
    those that fail stay behind (they travel by value with each call, or
    fail there with an error that names them). Their code keeps its
    filenames, with the lines of cells (``_source.py``)."""
    main = sys.modules.get("__main__")
    found = {
        name: obj
        for name, obj in (vars(main).items() if main is not None else ())
        if isinstance(obj, (types.FunctionType, type))
        and getattr(obj, "__module__", None) == "__main__"
        and getattr(obj, "__qualname__", None) == name
    }
    try:
        return [_source.dumps(found, _protocol.PROTOCOL)], _protocol.snapshot_of(found)
    except Exception:  # noqa: BLE001 - one of them does not pickle: find it
        pass
    chunks: list[bytes] = []
    sent: dict[str, Any] = {}
    for name, obj in found.items():
        try:
            chunks.append(_source.dumps({name: obj}, _protocol.PROTOCOL))
        except Exception:  # noqa: BLE001, S112 - it stays behind
            continue
        sent[name] = obj
    return chunks, _protocol.snapshot_of(sent)


class _Server:
    """The parent's connection to its fork server, started on first use and
    again after a fork of the parent (a child does not share its parent's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = 0
        self._settings = _settings()

    def _connection(self) -> socket.socket:
        if (
            self._socket is not None
            and self._owner == os.getpid()
            and self._settings != _settings()
        ):
            # set_executable or set_forkserver_preload since it started:
            # the next pools get a server started as they now say.
            self.stop()
        if (
            self._socket is None
            or self._process is None
            or self._owner != os.getpid()
            or self._process.poll() is not None
        ):
            self._start()
        assert self._socket is not None
        return self._socket

    def _start(self) -> None:
        if self._socket is not None and self._owner == os.getpid():
            self._socket.close()
        executable, preload = _settings()
        if not executable:
            raise RuntimeError(
                "the forkserver start method needs a Python executable to start, "
                "and sys.executable is empty (see forkfarm.set_executable)"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = (
            f"import sys; sys.path[:] = {sys.path!r}; "
            f"from forkfarm._forkserver_loop import serve; serve({theirs.fileno()}, {preload!r})"
        )
        args = [executable, *subprocess._args_from_interpreter_flags(), "-c", code]  # type: ignore[attr-defined]
        try:
            # subprocess forks and execs at once, in C: safe from threads.
            self._process = subprocess.Popen(
                args, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        finally:
            theirs.close()
        ours.settimeout(REQUEST_TIMEOUT)
        self._socket = ours
        self._owner = os.getpid()
        self._settings = (executable, preload)

    def zygote(self, spec: bytes) -> tuple[int, int, int]:
        """A new zygote for a pool: (ctl, pid, pidfd), the pool's to own."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        spec_fd = os.memfd_create("forkfarm-pool-spec", os.MFD_CLOEXEC)
        try:
            with open(spec_fd, "wb", closefd=False) as file:
                file.write(spec)
            pid, pidfd = self._request(b"Z", [theirs.fileno(), spec_fd], "a zygote")
        except BaseException:
            ours.close()
            raise
        finally:
            os.close(spec_fd)
            theirs.close()
        return ours.detach(), pid, pidfd

    def process(self, channel: int, status: int, parent: int) -> tuple[int, int]:
        """A new child for a Process, which reads what to run from channel
        (a socket) and takes parent (a pidfd of its parent) as its parent's
        sentinel; the server writes its wait status into status (a pipe)
        when it reaps it. (pid, pidfd), the pidfd the caller's to own."""
        return self._request(b"P", [channel, status, parent], "a process")

    def _request(self, tag: bytes, fds: list[int], what: str) -> tuple[int, int]:
        """Asks the server to fork a child: its pid and a pidfd of it."""
        with self._lock:
            connection = self._connection()
            try:
                socket.send_fds(connection, [tag], fds)
                reply, got, _flags, _address = socket.recv_fds(connection, 256, 1)
            except TimeoutError:
                # Its late answer must not be taken for the next one's.
                self._abandon()
                raise RuntimeError(
                    f"forkfarm's fork server did not answer within {REQUEST_TIMEOUT:g} s; "
                    "it was stopped, and the next request starts another"
                ) from None
        if len(reply) != REPLY.size or len(got) != 1:
            for fd in got:
                os.close(fd)
            code = self._process.poll() if self._process is not None else None
            why = reply.decode(errors="replace") if reply else f"it exited with code {code}"
            raise RuntimeError(f"forkfarm's fork server could not start {what}: {why}")
        (pid,) = REPLY.unpack(reply)
        return pid, got[0]


    def _abandon(self) -> None:
        """Stops a fork server that no longer answers."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def forget_in_child(self) -> None:
        """In a forked child: the connection is the parent's. The child's
        copy of its socket is closed, so that the server sees its end when
        the parent dies, however long the child lives."""
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._process = None
        self._owner = 0

    def stop(self) -> None:
        """Closes the connection, and waits for the server to see its end
        and exit: at the interpreter's exit, so that nothing is left."""
        if self._owner != os.getpid():
            return
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


_server = _Server()
# Stopped at exit after multiprocessing's exit function has terminated and
# joined the Process children, whose exit statuses come from the server:
# that function runs the finalizers of negative priority last.
_mp_util.Finalize(None, _server.stop, exitpriority=-100)
os.register_at_fork(after_in_child=_server.forget_in_child)


def process(channel: int, status: int, parent: int) -> tuple[int, int]:
    """A child for a Process from the fork server (see _Server.process)."""
    return _server.process(channel, status, parent)


def zygote(
    initializer: Any,
    initargs: tuple[Any, ...],
    max_tasks: int,
    max_memory: int,
    max_message: int = 0,
) -> tuple[tuple[int, int, int], _protocol.MainSnapshot]:
    """A zygote from the fork server for a new pool, and the pool's snapshot
    of its workers' __main__. The initializer and its arguments are pickled
    for a pool, so that locks, queues and shared arrays travel as handles;
    the pool must keep them alive as long as it lives."""
    main, sent = main_by_value()
    init = None
    if initializer is not None:
        init = _protocol.dumps_or_by_value(
            (_protocol.sendable(initializer, sent), tuple(initargs)), oob=False
        )
    spec = {
        "sys_path": list(sys.path),
        "cwd": os.getcwd(),
        "main": main,
        "init": init,
        "max_tasks": max_tasks,
        "max_memory": max_memory,
        "max_message": max_message,
    }
    return _server.zygote(pickle.dumps(spec, protocol=_protocol.PROTOCOL)), sent
