"""``Process``: multiprocessing's Process, started through forkfarm's runtime.

A process with threads must not fork: the child of a fork made while
another thread held a lock (malloc's, the import lock, a logging handler's)
can deadlock on it. So ``start()`` takes one of two ways, as a pool does:

- **fork** (:class:`ForkPopen`), when the caller runs no Python thread but
  its own: the caller forks in C through the runtime, with the runtime's
  loop thread parked where it holds no lock, its callback thread between
  two batches of completion callbacks (one that runs on for a second makes
  the caller count as threaded), and the interpreter's fork steps around
  it (``PyOS_BeforeFork`` and the ``AfterFork`` pair) exactly as
  ``os.fork()`` runs them. The child is multiprocessing's fork child:
  it runs ``Process._bootstrap``, the after-fork hooks, and exits with the
  target's code. forkfarm's own threads make no fork unsafe here, so
  CPython's warning about forking a multi-threaded process (3.12 and
  later), which ``os.fork()`` alone raises, does not fire for them.
- **the fork server** (:class:`ServerPopen`), when the caller has other
  Python threads (a Jupyter kernel always has): forkfarm's fork server, a
  fresh single-threaded interpreter, forks the child. The child gets the
  caller's ``sys.path``, working directory, ``sys.argv``, environment,
  standard output and error, and the functions and classes of
  ``__main__`` by value, as a pool's workers do; the process object
  travels pickled, with forkfarm's locks, queues, events, pipes, shared
  arrays and ``Value``/``Array`` as handles to the same shared memory
  (their segments' descriptors go with it). It is not the caller's
  child, so it is watched through a pidfd (the ``sentinel``, readable
  when the child ends) and its exit status comes from the fork server,
  which reaps it.

A start method set with ``forkfarm.set_start_method``, or a context's
(``forkfarm.get_context(method).Process``), decides instead: ``"fork"``
always forks, even with other threads running, as multiprocessing does, and
warns then as CPython 3.12 and later do (``DeprecationWarning``), since it
is the caller's explicit choice; ``"forkserver"`` and ``"spawn"`` always
take the fork server.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import functools
import io
import multiprocessing.context
import multiprocessing.process
import multiprocessing.util
import os
import pickle
import signal
import socket
import struct
import sys
import traceback
import warnings
from multiprocessing import connection as _mp_connection
from multiprocessing import popen_fork as _mp_popen_fork
from multiprocessing.reduction import ForkingPickler
from typing import Any, NoReturn

from . import _core, _forkserver, _protocol, _source, _start

__all__ = ["CallbacksBusy", "ForkPopen", "ForkProcess", "ForkServerProcess", "Process", "ServerPopen"]

# multiprocessing's modules, whose private parts (the child's exit function,
# the spawning Popen, ORIGINAL_DIR) this module uses as their own Popen
# classes do; typeshed does not describe them.
_mp_util: Any = multiprocessing.util
_mp_context: Any = multiprocessing.context
_mp_process: Any = multiprocessing.process

# Python 3.12 and later run the child's atexit handlers (its own only) when
# a forked Process ends, as their popen_fork does.
_CHILD_ATEXIT = sys.version_info >= (3, 12)

# How long a child that ended may wait for the fork server's report of its
# exit status, which follows its reaping by microseconds: only a stuck or
# killed server runs it out, and the exit code is then 255, as with
# multiprocessing's forkserver.
STATUS_TIMEOUT = 30.0
UNKNOWN_EXITCODE = 255

# How long a fork waits for a batch of completion callbacks (Python code
# on the runtime's callback thread) to end: longer, and the caller counts as
# threaded.
FORK_CALLBACK_WAIT = 1.0

_STATUS = struct.Struct("i")
# The most descriptors one message to the child carries (SCM_MAX_FD is 253).
_FDS_PER_MESSAGE = 250


class Process(multiprocessing.process.BaseProcess):
    """A process that runs ``target(*args, **kwargs)`` or its ``run()``, as
    ``multiprocessing.Process``: ``start``, ``join(timeout)``,
    ``terminate``, ``kill``, ``interrupt`` (SIGINT, on every Python),
    ``close``, ``is_alive``, ``exitcode``, ``pid``, ``name``, ``daemon``,
    ``sentinel``, ``authkey``.

    ``start()`` forks when this process runs no other Python thread, and
    has forkfarm's fork server fork the child when it does (see the
    module's notes); a start method set with ``set_start_method`` decides
    instead: ``"fork"`` forks even with other threads running (and warns
    then, on 3.12 and later, as multiprocessing does), ``"forkserver"`` and
    ``"spawn"`` take the fork server. Under the fork server, what the child
    gets travels pickled: the target and arguments must pickle (lambdas and
    ``__main__``'s functions travel by value), and forkfarm's primitives,
    queues, pipes and shared memory travel as handles to the same memory."""

    # Not multiprocessing's: its default context is left alone in the child.
    _start_method = None
    # "fork", "forkserver", or None: chosen at start.
    _forkfarm_method: str | None = None

    @staticmethod
    def _Popen(process_obj: multiprocessing.process.BaseProcess) -> Any:  # noqa: N802 - multiprocessing's name
        method, chosen = start_method_for(process_obj)
        if method == "forkserver":
            return ServerPopen(process_obj)
        try:
            return ForkPopen(process_obj)
        except CallbacksBusy:
            # The callback thread runs Python code: as good as a thread.
            if not chosen:
                return ServerPopen(process_obj)
        if not _start.threaded():  # else start_method_for warned already
            _warn_of_threads(stacklevel=4)
        return ForkPopen(process_obj, wait_for_callbacks=False)

    def interrupt(self) -> None:
        """Sends SIGINT to the child, as ``Process.interrupt()`` of Python
        3.14: its ``KeyboardInterrupt``, by default."""
        self._check_closed()  # type: ignore[attr-defined]
        self._popen.interrupt()  # type: ignore[attr-defined]


class ForkProcess(Process):
    """A :class:`Process` that always forks: ``get_context("fork").Process``."""

    _forkfarm_method = "fork"


class ForkServerProcess(Process):
    """A :class:`Process` that always comes from the fork server:
    ``get_context("forkserver").Process`` (and ``"spawn"``'s)."""

    _forkfarm_method = "forkserver"


def start_method_for(process_obj: multiprocessing.process.BaseProcess) -> tuple[str, bool]:
    """How a Process starts, and whether the caller chose it: its class's
    method, or the one set with ``set_start_method``, or else ``"fork"``
    unless this process runs other Python threads (then
    ``"forkserver"``)."""
    method = getattr(process_obj, "_forkfarm_method", None)
    if method is None:
        method = _start.setting.method
    if method is None:
        return ("forkserver" if _start.threaded() else "fork"), False
    if method == "fork":
        if _start.threaded():
            _warn_of_threads(stacklevel=5)
        return "fork", True
    return "forkserver", True


def _warn_of_threads(stacklevel: int) -> None:
    """The warning CPython gives, from 3.12 on, of a fork in a process with
    threads: the caller chose fork all the same."""
    if sys.version_info >= (3, 12):
        warnings.warn(
            f"This process (pid={os.getpid()}) is multi-threaded, use of fork() "
            "may lead to deadlocks in the child.",
            DeprecationWarning,
            stacklevel=stacklevel,
        )


class CallbacksBusy(Exception):
    """The runtime's callback thread ran completion callbacks (Python code)
    for longer than a fork may wait: the caller is as good as threaded."""


class ForkPopen(_mp_popen_fork.Popen):
    """multiprocessing's fork Popen, forking through the runtime: the loop
    thread parked, and the callback thread between two batches of
    callbacks (CallbacksBusy when one runs on past _core.fork's wait,
    unless told not to wait)."""

    method = "fork"

    def __init__(self, process_obj: Any, wait_for_callbacks: bool = True) -> None:
        self._callbacks_wait = -1.0 if not wait_for_callbacks else FORK_CALLBACK_WAIT
        super().__init__(process_obj)

    def _launch(self, process_obj: Any) -> None:
        code = 1
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        try:
            self.pid = _core.fork(self._callbacks_wait)
        except BaseException as exc:
            for fd in (parent_r, child_w, child_r, parent_w):
                os.close(fd)
            if isinstance(exc, OSError) and exc.errno == errno.EBUSY:
                raise CallbacksBusy(str(exc)) from None
            raise
        if self.pid == 0:
            try:
                if _CHILD_ATEXIT:
                    atexit._clear()
                    atexit.register(_mp_util._exit_function)
                os.close(parent_r)
                os.close(parent_w)
                code = process_obj._bootstrap(parent_sentinel=child_r)
            finally:
                if _CHILD_ATEXIT:
                    atexit._run_exitfuncs()
                os._exit(code)
        else:
            os.close(child_w)
            os.close(child_r)
            self.finalizer = _mp_util.Finalize(self, _mp_util.close_fds, (parent_r, parent_w))
            self.sentinel = parent_r

    def interrupt(self) -> None:
        self._send_signal(signal.SIGINT)  # type: ignore[attr-defined]


class InheritedFd:
    """A descriptor a fork server's child received with its arguments
    (multiprocessing's ``DupFd`` protocol: ``Popen.duplicate_for_child``
    gives its index)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        return _inherited_fds[self.index]


# In a fork server's child: the descriptors that came with its arguments.
_inherited_fds: list[int] = []


class ServerPopen(_mp_popen_fork.Popen):
    """A child forked by forkfarm's fork server. The caller is not its
    parent: ``sentinel`` is a pidfd of the child, readable once it ended,
    signals go through it (no pid can be reused under it), and the exit
    status comes from the fork server, which reaps the child and writes
    its wait status into a pipe of this Popen's."""

    method = "forkserver"
    DupFd = InheritedFd

    def __init__(self, process_obj: Any) -> None:
        self._fds: list[int] = []
        self._status_fd = -1
        # The arguments stay alive until the child ends: the slots their
        # handles name must not be reused before the child has attached.
        self._keep: object = None
        super().__init__(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj: Any) -> None:
        main, sent = _forkserver.main_by_value()
        _mp_context.set_spawning_popen(self)
        try:
            data, pins = self._pickle(process_obj, sent)
        finally:
            _mp_context.set_spawning_popen(None)
        spec = {
            "sys_path": list(sys.path),
            "sys_argv": list(sys.argv),
            "cwd": os.getcwd(),
            "orig_dir": _mp_process.ORIGINAL_DIR,
            "environ": dict(os.environ),
            "main": main,
            "log_to_stderr": _mp_util._log_to_stderr,
            "log_level": _mp_util._logger.getEffectiveLevel() if _mp_util._logger else None,
            "stdio": [],
            "segments": pins,
            "inherited": len(self._fds),
            "process": data,
        }
        owned: list[int] = []
        try:
            for segment_id in pins:
                owned.append(_core.segment_fd(segment_id))
            stdio = []
            for fd in (1, 2):
                try:
                    os.fstat(fd)
                except OSError:
                    continue
                stdio.append(fd)
            spec["stdio"] = stdio
            fds = [*owned, *self._fds, *stdio]
            self.pid, pidfd, self._status_fd = _start_in_server(
                pickle.dumps(spec, protocol=_protocol.PROTOCOL), fds
            )
        finally:
            for fd in owned:
                os.close(fd)
        self.sentinel = pidfd
        self.finalizer = _mp_util.Finalize(self, _mp_util.close_fds, (pidfd, self._status_fd))
        self._keep = (process_obj._target, process_obj._args, process_obj._kwargs)

    def _pickle(self, process_obj: Any, sent: _protocol.MainSnapshot) -> tuple[bytes, list[int]]:
        """The process object pickled for its child: shared objects as
        handles; its target and class by value when a reference would not
        resolve there, and the whole object by value (cloudpickle) when
        plain pickle refuses something in it (a lambda among the
        arguments)."""
        state = dict(vars(process_obj))
        state["_target"] = _protocol.sendable(state.get("_target"), sent)
        payload = _Rebuild(_protocol.sendable(type(process_obj), sent), state)
        try:
            return _core.dumps_with_pins(payload, _protocol.PROTOCOL, _forking_dumps)
        except Exception as exc:  # noqa: BLE001 - re-raised unless cloudpickle can
            if not _protocol._pickling_failed(exc):
                raise
            first = exc
        del self._fds[:]
        try:
            return _core.dumps_with_pins(_ByValue(process_obj), _protocol.PROTOCOL, _forking_dumps)
        except Exception as second:  # noqa: BLE001 - reported with the first
            first.add_note(f"forkfarm tried to send it by value (cloudpickle) too: {second}")
            raise first from None

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None:
            timeout = 0 if flag == os.WNOHANG else None
            if not _mp_connection.wait([self.sentinel], timeout):
                return None
            self.returncode = self._read_status()
            self._keep = None
        return self.returncode

    def _read_status(self) -> int:
        """The exit code the fork server reports for the child, which has
        ended: it reaps the child at once, so this waits microseconds."""
        if not _mp_connection.wait([self._status_fd], STATUS_TIMEOUT):
            return UNKNOWN_EXITCODE
        try:
            data = os.read(self._status_fd, _STATUS.size)
        except OSError:
            return UNKNOWN_EXITCODE
        if len(data) != _STATUS.size:
            return UNKNOWN_EXITCODE
        return os.waitstatus_to_exitcode(_STATUS.unpack(data)[0])

    def _send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                signal.pidfd_send_signal(self.sentinel, sig)
            except ProcessLookupError:
                pass
            except OSError:
                if self.wait(timeout=0.1) is None:
                    raise

    def interrupt(self) -> None:
        self._send_signal(signal.SIGINT)


def _forking_dumps(obj: object, protocol: int) -> bytes:
    """pickle.dumps with multiprocessing's own reducers (its connections
    and sockets travel as descriptors, through duplicate_for_child)."""
    return bytes(ForkingPickler.dumps(obj, protocol))


class _ByValue:
    """An object pickled whole by cloudpickle, with multiprocessing's
    reducers too, and loaded as what it holds."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce__(self) -> tuple[Any, ...]:
        import cloudpickle

        buffer = io.BytesIO()
        _by_value_pickler()(buffer, protocol=_protocol.PROTOCOL).dump(self.obj)
        return cloudpickle.loads, (buffer.getvalue(),)


@functools.cache
def _by_value_pickler() -> Any:
    """forkfarm's by-value pickler (cloudpickle's, keeping code filenames:
    ``_source.py``) with multiprocessing's reducers (made on first use:
    cloudpickle loads only when something travels by value)."""
    base = _source.pickler_class()

    class Pickler(base):  # type: ignore[misc, valid-type]
        dispatch_table = collections.ChainMap(
            ForkingPickler._extra_reducers,  # type: ignore[attr-defined]
            base.dispatch_table,
        )

    return Pickler


class _Rebuild:
    """A process object as its class and attributes, so that the class and
    the target can travel by value when a reference would not resolve."""

    __slots__ = ("cls", "state")

    def __init__(self, cls: Any, state: dict[str, Any]) -> None:
        self.cls = cls
        self.state = state

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.cls, self.state)


def _rebuild(cls: Any, state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def fd_for_child(fd: int) -> Any:
    """While a Process's arguments are pickled for the fork server: a
    handle the child turns back into a copy of fd, else None (the object
    must then be inherited, by fork)."""
    popen = _mp_context.get_spawning_popen()
    if isinstance(popen, ServerPopen) and _core.pickling_for_pool():
        return popen.DupFd(popen.duplicate_for_child(fd))
    return None


def _start_in_server(spec: bytes, fds: list[int]) -> tuple[int, int, int]:
    """Has the fork server fork a child that loads spec, with fds: (pid, a
    pidfd of it, the read end of the pipe its exit status comes in)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spec_fd = os.memfd_create("forkfarm-process-spec", os.MFD_CLOEXEC)
    status_r, status_w = os.pipe()
    parent = os.pidfd_open(os.getpid())
    pidfd = -1
    try:
        with open(spec_fd, "wb", closefd=False) as file:
            file.write(spec)
        pid, pidfd = _forkserver.process(theirs.fileno(), status_w, parent)
        theirs.close()
        # Sent while the child reads them: however many, the socket's
        # buffer never has to hold them all.
        ours.settimeout(_forkserver.REQUEST_TIMEOUT)
        batches = [fds[i : i + _FDS_PER_MESSAGE] for i in range(0, len(fds), _FDS_PER_MESSAGE)]
        socket.send_fds(ours, [struct.pack("qq", len(fds), len(batches))], [spec_fd])
        for batch in batches:
            socket.send_fds(ours, [b"F"], batch)
    except BaseException:
        if pidfd >= 0:
            # A child that cannot get what it needs does not run.
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        os.close(status_r)
        raise
    finally:
        for fd in (spec_fd, status_w, parent):
            os.close(fd)
        ours.close()
        theirs.close()
    return pid, pidfd, status_r


# -- in the fork server's child ------------------------------------------------


def _receive(channel: socket.socket) -> tuple[bytes, list[int]]:
    """The spec and the descriptors the parent queued for this child."""
    header, fds, _flags, _address = socket.recv_fds(channel, 16, 1)
    count, batches = struct.unpack("qq", header)
    (spec_fd,) = fds
    received: list[int] = []
    for _ in range(batches):
        _tag, more, _flags, _address = socket.recv_fds(channel, 1, _FDS_PER_MESSAGE)
        received.extend(more)
    # Received without close-on-exec, unlike what a forked child inherits.
    for fd in received:
        os.set_inheritable(fd, False)
    if len(received) != count:
        raise RuntimeError(f"expected {count} descriptors from the parent, got {len(received)}")
    with open(spec_fd, "rb") as file:
        file.seek(0)  # the parent's writes moved the shared offset
        return file.read(), received


def _prepare(spec: dict[str, Any], fds: list[int]) -> Any:
    """Makes this process look as the parent does where a forked child
    would, and returns the process object."""
    segments, rest = fds[: len(spec["segments"])], fds[len(spec["segments"]) :]
    inherited, stdio = rest[: spec["inherited"]], rest[spec["inherited"] :]
    for target, fd in zip(spec["stdio"], stdio):
        os.dup2(fd, target)
        os.close(fd)
    sys.path[:] = spec["sys_path"]
    sys.argv[:] = spec["sys_argv"]
    os.environ.clear()
    os.environ.update(spec["environ"])
    try:
        os.chdir(spec["cwd"])
    except OSError:
        pass
    _mp_process.ORIGINAL_DIR = spec["orig_dir"]
    if spec["log_to_stderr"]:
        _mp_util.log_to_stderr()
    if spec["log_level"] is not None:
        _mp_util.get_logger().setLevel(spec["log_level"])
    main = sys.modules["__main__"]
    for chunk in spec["main"]:
        try:
            vars(main).update(pickle.loads(chunk))
        except Exception:  # noqa: BLE001, S112 - what failed travels with the process
            continue
    for segment_id, fd in zip(spec["segments"], segments):
        _core.adopt_segment(segment_id, fd)
    _inherited_fds[:] = inherited
    return pickle.loads(spec["process"])


def serve_child(channel_fd: int, parent_sentinel: int) -> NoReturn:
    """The body of a Process's child forked by the fork server: loads what
    the parent sent, then runs the process as multiprocessing's fork child
    does (``_bootstrap``, with a pidfd of the parent as its parent's
    sentinel), and exits with its code."""
    code = 1
    try:
        # The fork server's own settings, not the child's.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.set_inheritable(parent_sentinel, False)
        with socket.socket(fileno=channel_fd) as channel:
            data, fds = _receive(channel)
        process_obj = _prepare(pickle.loads(data), fds)
    except BaseException:  # noqa: BLE001 - reported, and the child exits 1
        try:
            sys.stderr.write("forkfarm: the process could not load what its parent sent:\n")
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(1)
    try:
        if _CHILD_ATEXIT:
            atexit._clear()
            atexit.register(_mp_util._exit_function)
        code = process_obj._bootstrap(parent_sentinel=parent_sentinel)
    finally:
        if _CHILD_ATEXIT:
            atexit._run_exitfuncs()
        os._exit(code)
