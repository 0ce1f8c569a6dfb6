"""The fork server's side: the loop that runs in the server process
(started by _forkserver.py with ``python -c``), forking a zygote for each
pool ("Z") and a child for each Process ("P"), and reaping them. Nothing
here runs in the program that uses forkfarm."""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import _core, _process, _protocol
from ._forkserver import REPLY

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
            socket.send_fds(connection, [REPLY.pack(pid)], [pidfd])
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
        _core.zygote_serve(ctl, _protocol.WORKER_HOOKS, initializer, initargs, max_tasks, max_memory, max_message)
    finally:
        os._exit(1)
