"""The fork server: where the pools of a threaded parent get their zygotes.

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

import importlib
import multiprocessing.spawn
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import types
from collections.abc import Iterable, Sequence
from multiprocessing import util as _mp_util
from typing import Any, NoReturn

from . import _core, _protocol

_REPLY = struct.Struct("q")
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
    fail there with an error that names them)."""
    import cloudpickle

    main = sys.modules.get("__main__")
    found = {
        name: obj
        for name, obj in (vars(main).items() if main is not None else ())
        if isinstance(obj, (types.FunctionType, type))
        and getattr(obj, "__module__", None) == "__main__"
        and getattr(obj, "__qualname__", None) == name
    }
    try:
        return [cloudpickle.dumps(found, protocol=_protocol.PROTOCOL)], _protocol.snapshot_of(found)
    except Exception:  # noqa: BLE001 - one of them does not pickle: find it
        pass
    chunks: list[bytes] = []
    sent: dict[str, Any] = {}
    for name, obj in found.items():
        try:
            chunks.append(cloudpickle.dumps({name: obj}, protocol=_protocol.PROTOCOL))
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
            f"from forkfarm._forkserver import serve; serve({theirs.fileno()}, {preload!r})"
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
        if len(reply) != _REPLY.size or len(got) != 1:
            for fd in got:
                os.close(fd)
            code = self._process.poll() if self._process is not None else None
            why = reply.decode(errors="replace") if reply else f"it exited with code {code}"
            raise RuntimeError(f"forkfarm's fork server could not start {what}: {why}")
        (pid,) = _REPLY.unpack(reply)
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


# -- in the fork server ------------------------------------------------------


# The requests: what each carries (its descriptors) and what the child
# becomes.
_REQUESTS = {b"Z": 2, b"P": 3}
# The wait status the server reports for each Process child it reaps.
_STATUS = struct.Struct("i")
# The pipe each Process child's status goes into, by pid.
_statuses: dict[int, int] = {}


def serve(fd: int, preload: Sequence[str] = ()) -> None:
    """The fork server's loop, until the parent closes its end (or dies),
    after importing the modules of ``preload``."""
    # Loaded once here rather than in every child: a child that loads
    # __main__'s functions by value needs cloudpickle at once.
    import cloudpickle  # noqa: F401

    from . import _process

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    _import_preload(preload)
    connection = socket.socket(fileno=fd)
    while True:
        message, fds, _flags, _address = socket.recv_fds(connection, 16, 3)
        if not message:
            os._exit(0)
        if _REQUESTS.get(message) != len(fds):
            for descriptor in fds:
                os.close(descriptor)
            continue
        # The pidfd must name this child, and its status have its pipe: it
        # is not reaped before both exist.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
        except OSError as error:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            for descriptor in fds:
                os.close(descriptor)
            connection.send(f"fork failed: {error}".encode())
            continue
        if pid == 0:
            connection.close()
            # The other children's status pipes are the server's alone.
            for status in _statuses.values():
                os.close(status)
            _statuses.clear()
            if message == b"Z":
                _become_zygote(*fds)
            channel, status, parent = fds
            os.close(status)
            _process.serve_child(channel, parent)
        if message == b"P":
            _statuses[pid] = fds.pop(1)
        for descriptor in fds:
            os.close(descriptor)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as error:
            os.kill(pid, signal.SIGKILL)
            connection.send(f"pidfd_open failed: {error}".encode())
        else:
            socket.send_fds(connection, [_REPLY.pack(pid)], [pidfd])
            os.close(pidfd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def _import_preload(module_names: Sequence[str]) -> None:
    """Imports each module, before any zygote is forked, so that every
    worker inherits it. A hint, as multiprocessing's: a module that fails
    to import is left to the workers that need it, which then report the
    error. ``__main__`` travels with each pool's spec instead."""
    for name in module_names:
        if name == "__main__":
            continue
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a hint: the workers import it themselves
            continue


def _reap() -> None:
    """Reaps the children that ended, and reports each Process child's
    wait status to its parent."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid <= 0:
            return
        fd = _statuses.pop(pid, None)
        if fd is None:
            continue
        try:
            os.write(fd, _STATUS.pack(status))
        except OSError:  # the parent closed its Popen already
            pass
        os.close(fd)


def _fail_to_start(text: str) -> None:
    raise RuntimeError(text)


def _run_initializer(init: bytes) -> None:
    initializer, initargs = pickle.loads(init)
    initializer(*initargs)


def _become_zygote(ctl: int, spec_fd: int) -> NoReturn:
    """In the child of the fork server: load the pool's spec and serve it.
    A spec that cannot load still makes a zygote, whose workers fail to
    start with the reason: the pool reports it as it reports any failing
    initializer."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    initializer: Any = None
    initargs: tuple[Any, ...] = ()
    max_tasks = max_memory = max_message = 0
    try:
        with open(spec_fd, "rb") as file:
            file.seek(0)  # the parent's writes moved the shared offset
            spec = pickle.loads(file.read())
        max_tasks, max_memory, max_message = spec["max_tasks"], spec["max_memory"], spec["max_message"]
        sys.path[:] = spec["sys_path"]
        try:
            os.chdir(spec["cwd"])
        except OSError:
            pass
        main = sys.modules["__main__"]
        for chunk in spec["main"]:
            try:
                vars(main).update(pickle.loads(chunk))
            except Exception:  # noqa: BLE001, S112 - what failed travels with each call
                continue
        if spec["init"] is not None:
            # Unpickled in each worker, which can open the parent's segments.
            initializer, initargs = _run_initializer, (spec["init"],)
    except BaseException as error:  # noqa: BLE001 - reported by the workers
        initializer = _fail_to_start
        initargs = (f"the pool's zygote could not load what the pool sent it: {error!r}",)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        _core.zygote_serve(ctl, _protocol, initializer, initargs, max_tasks, max_memory, max_message)
    finally:
        os._exit(1)
