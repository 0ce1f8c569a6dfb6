"""The exceptions of forkfarm, and the one place where the runtime's codes
become them."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import queue
import signal as _signal
import struct
from collections.abc import Callable
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from . import _core, _remote

# RemoteError and RemoteTraceback live with the encoding of a worker's
# exceptions (_remote.py); they are forkfarm's exceptions too.
from ._remote import RemoteError as RemoteError, RemoteTraceback as RemoteTraceback


def _signal_name(signum: int) -> str:
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class WorkerLostError(BrokenProcessPool):
    """The worker running a task exited before it returned a result.

    Only that task fails: the pool replaces the worker and goes on. It is a
    :class:`concurrent.futures.process.BrokenProcessPool`, so ``except``
    clauses written for ProcessPoolExecutor still catch it. ``.pid``,
    ``.exitcode`` and ``.signal`` say how the worker ended; ``.task`` is the
    call it lost (the ``AsyncResult``, ``Future`` or map result).
    """

    def __init__(
        self,
        message: str,
        *,
        pid: int | None = None,
        exitcode: int | None = None,
        signal: int | None = None,
        task: Any = None,
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal
        self.task = task

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_worker_lost, (
            self.args[0],
            self.pid,
            self.exitcode,
            self.signal,
        )

    @classmethod
    def from_exit(
        cls, pid: int, exit_code: int, signum: int, starting: bool = False
    ) -> WorkerLostError:
        if signum:
            how = f"was killed by {_signal_name(signum)}"
            exitcode: int | None = -signum
        elif exit_code >= 0:
            how = f"exited with code {exit_code}"
            exitcode = exit_code
        else:
            how = "exited"
            exitcode = None
        return cls(
            f"the worker process (pid {pid}) {how} before it was ready"
            if starting
            else f"the worker process (pid {pid}) running the task {how}",
            pid=pid or None,
            exitcode=exitcode,
            signal=signum or None,
        )


def _rebuild_worker_lost(
    message: str, pid: int | None, exitcode: int | None, signum: int | None
) -> WorkerLostError:
    return WorkerLostError(message, pid=pid, exitcode=exitcode, signal=signum)


class TaskTimeoutError(multiprocessing.TimeoutError, TimeoutError):
    """A task ran longer than the pool's ``timeout=``: its worker was stopped
    (SIGTERM, then SIGKILL after a grace period) and replaced. Both a
    ``multiprocessing.TimeoutError`` and the builtin ``TimeoutError``, so
    the ``except`` clauses of either API catch it. ``.pid`` is the worker's
    pid, ``.signal`` the signal that ended it."""

    def __init__(self, message: str, pid: int = 0, signal: int = 0) -> None:
        super().__init__(message)
        self.pid = pid
        self.signal = signal

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.pid, self.signal)


class WorkerStartError(BrokenProcessPool):
    """A process of the pool (a worker, or the pool's zygote) could not be
    started: fork, or a descriptor or memory it needed, failed. ``.errno``
    says why: ``EAGAIN`` is a limit on processes (``RLIMIT_NPROC``, a
    cgroup's ``pids.max``), ``EMFILE`` one on descriptors."""

    def __init__(self, errno_: int, message: str | None = None) -> None:
        if message is None:
            message = _start_message(errno_)
        super().__init__(message)
        self.errno = errno_

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.errno, str(self))


def _start_message(err: int) -> str:
    name = errno.errorcode.get(err, str(err))
    text = f"a process of the pool could not be started: {name} ({os.strerror(err)})"
    if err == errno.EAGAIN:
        text += ": the limit on processes (RLIMIT_NPROC, or the cgroup's pids.max) was reached, so fork failed"
    elif err in (errno.EMFILE, errno.ENFILE):
        text += ": no descriptor was left for it"
    return text


class MessageTooLargeError(ValueError):
    """A task's result was larger than the pool's ``max_message_size``: the
    task fails with this, and the pool goes on. ``.size`` is the result's
    size in bytes (a lower bound when ``.exact`` is false: a worker that
    kept sending past the limit was stopped), ``.limit`` the pool's
    limit."""

    def __init__(self, size: int, limit: int, exact: bool = True) -> None:
        if exact:
            text = (
                f"the task's result is {size} bytes ({_mib(size)}), over the pool's "
                f"max_message_size of {limit} bytes ({_mib(limit)})"
            )
        else:
            text = (
                f"the task's worker sent more than the pool's max_message_size of "
                f"{limit} bytes ({_mib(limit)}; {size} bytes had arrived), so it was "
                "stopped and replaced"
            )
        super().__init__(text)
        self.size = size
        self.limit = limit
        self.exact = exact

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.size, self.limit, self.exact)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def decode_error(detail: bytes, traceback_class: Callable[[str], BaseException] = RemoteTraceback) -> BaseException:
    """The exception a worker encoded (``_protocol.encode_error``): itself,
    or a :class:`RemoteError` standing for it when it did not pickle there
    or does not unpickle here, chained as it was, with the worker's
    traceback as a traceback_class (``_remote.rebuild``)."""
    return decode_failure(detail, traceback_class)[0]


def decode_failure(
    detail: bytes, traceback_class: Callable[[str], BaseException] = RemoteTraceback
) -> tuple[BaseException, object]:
    """:func:`decode_error`'s exception, and where the worker says it
    failed: False (the call raised), ``"load"`` (the task's message did not
    unpickle there) or ``("result", the original error's encoding)`` (the
    value did not pickle)."""
    try:
        stage, encoded = pickle.loads(detail)
        links = _remote.valid_links(encoded)
    except Exception:  # noqa: BLE001 - not what a worker encodes
        links = None
    if links is None:
        return RuntimeError(f"the worker failed: {detail[:200].decode(errors='replace')}"), False
    return _remote.rebuild(links, traceback_class), stage


class InitializerError(BrokenProcessPool):
    """A worker's initializer failed, so the pool cannot run tasks. The
    initializer's exception is the ``__cause__``."""


class PoolTerminatedError(CancelledError):
    """The pool was terminated before the task finished."""


def _initializer_error(detail: bytes, pid: int, exit_code: int, signum: int) -> BaseException:
    cause: BaseException | None = None
    if detail:
        cause = decode_error(detail)
    elif pid:
        cause = WorkerLostError.from_exit(pid, exit_code, signum, starting=True)
    message = (
        "a worker initializer failed, so the pool cannot run tasks"
        if detail
        else "workers keep failing to start, so the pool cannot run tasks"
    )
    if cause is not None:
        message += f": {type(cause).__name__}: {cause}"
    err = InitializerError(message)
    err.__cause__ = cause
    return err


def from_outcome(status: int, detail: bytes, exit: tuple[int, int, int]) -> BaseException:
    """The exception for a task that did not return a result."""
    pid, exit_code, signum = exit
    spawn_errno = _core.ESPAWN_BASE - status
    if 0 < spawn_errno < 4096:
        return WorkerStartError(spawn_errno)
    if status == _core.EMSGSIZE:
        size, exact, limit = struct.unpack("=QQQ", detail)
        return MessageTooLargeError(size, limit, bool(exact))
    if status == _core.EWORKERLOST:
        return WorkerLostError.from_exit(pid, exit_code, signum)
    if status == _core.EPROTOCOL:
        return WorkerLostError(
            f"the worker process (pid {pid}) running the task wrote a corrupt message "
            "into shared memory, so it was killed and replaced",
            pid=pid or None,
            exitcode=-signum if signum else None,
            signal=signum or None,
        )
    if status == _core.EINITFAILED:
        return _initializer_error(detail, pid, exit_code, signum)
    if status == -errno.ETIMEDOUT:
        how = _signal.Signals(signum).name if signum > 0 else f"exit code {exit_code}"
        return TaskTimeoutError(
            f"the task ran past the pool's timeout: its worker (pid {pid}) was stopped "
            f"({how}) and replaced",
            pid,
            signum,
        )
    if status == _core.ECANCELED:
        return PoolTerminatedError("the pool was terminated before the task finished")
    if status == _core.EZYGOTELOST:
        return BrokenProcessPool(
            f"the pool's zygote process (pid {pid}) exited, so the pool cannot run tasks"
        )
    if status == _core.ETASKFAILED:
        return decode_error(detail)
    return OSError(-status, _core.strerror(status))


class AbandonedLockWarning(RuntimeWarning):
    """A lock's holder died holding it; the lock was taken over. What it
    protected may be inconsistent."""


# The classes the runtime's codes are raised as, and how a pool that cannot
# run tasks says why: registered once, so that _core raises them directly
# (pymodule/errors.c holds the table of codes). Queues raise queue's Empty
# and Full, and a pipe multiprocessing's BufferTooShort, as the modules
# forkfarm stands in for do.
_core.register_errors(
    WorkerStartError=WorkerStartError,
    Empty=queue.Empty,
    Full=queue.Full,
    AbandonedLockWarning=AbandonedLockWarning,
    BufferTooShort=multiprocessing.BufferTooShort,
    pool_failure=from_outcome,
)
