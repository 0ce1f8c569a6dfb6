"""``breakpoint()`` in a worker: pdb on the terminal the program runs in.

A worker's standard input is /dev/null (``_protocol.worker_setup``), so
the default hook's pdb would read an end of file and quit the task with
``bdb.BdbQuit``. Each new worker sets ``sys.breakpointhook`` to
:func:`breakpointhook` instead (:func:`install`), unless the user chose a
hook of their own (``PYTHONBREAKPOINT``, or a ``sys.breakpointhook`` the
parent set before the pool forked).

The hook opens ``/dev/tty``, the controlling terminal that the worker
shares with the parent (the zygote and the workers are forked into the
parent's session, and the fork server is started in it too), and runs
pdb on it. One worker at a time debugs on a terminal: the hook takes an
exclusive ``flock`` on a lock file named after the terminal, in a
directory of the user's own, before it prints anything, and lets go when
the debugger stops tracing (``c`` with no breakpoint left, ``q``, or the
task's outermost frame returning); the others wait in ``flock``. A
breakpoint set with ``b`` stops again later, and takes the lock again.
(A ``flock`` on the ``/dev/tty`` descriptor itself would lock every
terminal of the machine at once: ``/dev/tty`` is one inode whatever
terminal it opens, measured with two pseudo-terminals. It is only the
fallback when no private directory can be had.)

Where there is no terminal (a Jupyter kernel is started in a session of
its own; a CI job, a daemon), ``open("/dev/tty")`` fails at once and the
hook raises :class:`RuntimeError` saying what to do instead: it never
waits for input that cannot come.

The workers ignore SIGINT (the zygote's ``SIG_IGN``), and pdb is told
not to change that (``nosigint``): Ctrl-C stays the parent's to handle.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import stat
import sys
import time
from types import FrameType
from typing import IO, Any

TTY = "/dev/tty"

# Modules whose frames are forkfarm's, not the task's: pdb does not stop
# in them, and the first of them below breakpoint() is where the task's
# stack ends (a worker's Python stack goes on below into the frames of the
# parent that made the pool, suspended in the fork for good).
OWN_MODULES = ("forkfarm", "forkfarm.*")

NO_TERMINAL = (
    "breakpoint() in a forkfarm worker (pid {pid}) needs the program to run "
    "in a terminal: the worker runs pdb on the terminal the parent runs in "
    "(/dev/tty), and it has none ({reason}); a Jupyter kernel or a CI job "
    "has no terminal. Run the script from a terminal; or set PYTHONBREAKPOINT "
    "before the pool starts, to a debugger that needs no terminal (e.g. "
    "PYTHONBREAKPOINT=remote_pdb.set_trace, from pip install remote-pdb) or "
    "to 0 to skip breakpoints; or call the function in this process, "
    "outside the pool, and debug it there."
)


def _chosen_by_environment() -> str:
    """PYTHONBREAKPOINT, as the default hook reads it ("" when unset)."""
    if sys.flags.ignore_environment:
        return ""
    return os.environ.get("PYTHONBREAKPOINT", "")


def install() -> None:
    """Runs once in each new worker: forkfarm's hook, unless PYTHONBREAKPOINT
    is set or ``sys.breakpointhook`` is already someone else's."""
    if _chosen_by_environment() or sys.breakpointhook is not sys.__breakpointhook__:
        return
    sys.breakpointhook = breakpointhook


def breakpointhook(*args: Any, **kws: Any) -> Any:
    """``breakpoint()`` in a worker: pdb on the terminal, one worker at a
    time. Raises RuntimeError at once when the worker has no terminal."""
    if _chosen_by_environment():
        # Set after the hook was installed (in the task itself, say).
        return sys.__breakpointhook__(*args, **kws)
    header = kws.pop("header", None)
    commands = kws.pop("commands", None)  # Python 3.14's pdb.set_trace takes them
    if args or kws:
        raise TypeError("breakpoint() in a forkfarm worker takes only header= and commands=")
    frame = sys._getframe(1)
    terminal = _terminal()
    debugging = terminal.held  # breakpoint() stepped over in pdb: no header
    terminal.acquire()
    try:
        if not debugging:
            terminal.announce(frame, header)
        debugger = _debugger(terminal)
        if commands is not None:
            debugger.rcLines.extend(commands)
        debugger.start(frame)
    except BaseException:
        terminal.release()
        raise
    return None


class Terminal:
    """This process's end of the terminal: the files pdb reads and writes,
    and the lock that lets one worker of the terminal debug at a time."""

    def __init__(self) -> None:
        fd = os.open(TTY, os.O_RDWR | os.O_NOCTTY)  # not inherited (PEP 446)
        self.pid = os.getpid()
        self.input: IO[str] = open(fd, errors="replace")  # noqa: SIM115 - the process's
        self.output: IO[str] = open(  # noqa: SIM115 - the process's
            os.dup(fd), "w", errors="backslashreplace", buffering=1
        )
        self.lock_fd = _lock_file(fd)
        self.held = False
        self.waited = 0.0

    def acquire(self) -> None:
        """Waits until no other worker debugs on this terminal."""
        if self.held:
            return
        start = time.monotonic()
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        self.waited = time.monotonic() - start
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def announce(self, frame: FrameType, header: str | None, again: bool = False) -> None:
        """The lines that say which worker the prompt below belongs to."""
        code = frame.f_code
        where = f"{code.co_name}() at {code.co_filename}:{frame.f_lineno}"
        bottom = task_frame(frame)
        if bottom is not frame:
            where += f", in the task {bottom.f_code.co_name}()"
        name = multiprocessing.current_process().name
        what = "stopped" if again else "breakpoint()"
        lines = [f"forkfarm: {what} in worker {name} (pid {os.getpid()}), in {where}"]
        if self.waited >= 0.1:
            lines.append(f"forkfarm: (waited {self.waited:.1f} s for another worker's debugger)")
        if not again:
            lines.append(
                "forkfarm: one worker debugs at a time; 'c' goes on with the task, "
                "'q' fails it with BdbQuit"
            )
        if header is not None:
            lines.append(header)
        self.output.write("\n".join(lines) + "\n")
        self.output.flush()


_terminal_of_process: Terminal | None = None


def _terminal() -> Terminal:
    """This process's terminal, opened on the first breakpoint (again in a
    child the task forked: a lock taken through a descriptor shared with
    its parent would be the parent's lock)."""
    global _terminal_of_process
    if _terminal_of_process is None or _terminal_of_process.pid != os.getpid():
        try:
            _terminal_of_process = Terminal()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise RuntimeError(NO_TERMINAL.format(pid=os.getpid(), reason=reason)) from exc
    return _terminal_of_process


def _terminal_id() -> str:
    """The controlling terminal's device number (field 7 of
    /proc/self/stat), or the session's id where that cannot be read."""
    try:
        with open("/proc/self/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
        return f"tty{int(fields[4])}"
    except (OSError, IndexError, ValueError):
        return f"session{os.getsid(0)}"


def _private_dir() -> str:
    """A directory only this user can write in: $XDG_RUNTIME_DIR when it is
    theirs, else forkfarm-<uid> in the temporary directory, made 0700."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime:
        try:
            info = os.stat(runtime)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == uid:
                return runtime
        except OSError:
            pass
    import tempfile  # only here: not every program that imports forkfarm needs it

    path = os.path.join(tempfile.gettempdir(), f"forkfarm-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise OSError(f"{path} is not a private directory of this user")
    return path


def _lock_file(tty_fd: int) -> int:
    """The descriptor to flock: the terminal's lock file, or the terminal
    itself (every terminal of the machine at once) when there is none."""
    try:
        path = os.path.join(_private_dir(), f"forkfarm-debug-{_terminal_id()}.lock")
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return tty_fd


def task_frame(frame: FrameType) -> FrameType:
    """The outermost frame of the task that frame is in: the last one
    before forkfarm's own (or the bottom of the stack)."""
    while frame.f_back is not None and not _is_own(frame.f_back):
        frame = frame.f_back
    return frame


def _is_own(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__")
    return isinstance(name, str) and (name == "forkfarm" or name.startswith("forkfarm."))


def _debugger(terminal: Terminal) -> Any:
    """A pdb.Pdb on the terminal that holds the terminal's lock while it
    traces. pdb (with bdb, cmd, code...) is imported only here, when a task
    calls breakpoint(), not by every program that imports forkfarm."""
    import pdb

    class WorkerPdb(pdb.Pdb):
        """pdb on the terminal, holding the terminal's lock while it traces."""

        def __init__(self, terminal: Terminal) -> None:
            super().__init__(
                stdin=terminal.input,
                stdout=terminal.output,
                skip=list(OWN_MODULES),
                nosigint=True,
            )
            # pdb reads the terminal's lines itself. input() would read
            # sys.stdin; readline would put the terminal in raw mode, and a
            # worker stopped at the prompt (a timeout, terminate()) would
            # leave it so. The terminal's own line editing (erase, kill,
            # word erase) works.
            self.use_rawinput = False
            self.terminal = terminal

        def start(self, frame: FrameType) -> None:
            """set_trace(frame), with the task's stack as the whole stack:
            where, up and down stay within the task, and tracing ends when
            the task's outermost frame returns."""
            self.set_trace(frame)
            bottom = task_frame(frame)
            self.botframe = bottom
            below = bottom.f_back
            while below is not None:  # forkfarm's and the parent's, never run again
                below.f_trace = None
                below = below.f_back

        def interaction(self, frame: FrameType | None, tb_or_exc: Any) -> None:
            if not self.terminal.held:
                # Stopped again at a breakpoint set in an earlier session,
                # maybe in a later task: this task's stack is the stack now.
                self.terminal.acquire()
                if frame is not None:
                    self.terminal.announce(frame, None, again=True)
                    bottom = task_frame(frame)
                    bottom.f_trace = self.trace_dispatch  # so that its return ends the session
                    self.botframe = bottom
            # While the prompt is up, the terminal is the worker's standard
            # input and output too: pdb's interact and !print(...) use them.
            saved = sys.stdin, sys.stdout
            sys.stdin, sys.stdout = self.terminal.input, self.terminal.output
            try:
                super().interaction(frame, tb_or_exc)
            except BaseException:
                # pdb's run or restart (Restart), or anything else that
                # leaves the prompt by an exception: the task fails with it
                # and is no longer traced, so the terminal is free again.
                self.terminal.release()
                raise
            finally:
                sys.stdin, sys.stdout = saved

        def set_continue(self) -> None:
            super().set_continue()
            self.terminal.release()

        def set_quit(self) -> None:
            super().set_quit()
            self.terminal.release()

        def dispatch_return(self, frame: FrameType, arg: Any) -> Any:
            result = super().dispatch_return(frame, arg)
            if frame is self.botframe and not self.quitting:
                # The task's outermost frame returns (stepped past its end,
                # or an exception leaves it): the task goes on without the
                # debugger, and the next worker may have the terminal.
                if self.terminal.held:
                    self.terminal.output.write(
                        "forkfarm: the task's outermost frame returns; "
                        "it goes on without the debugger\n"
                    )
                self.set_continue()
            return result

    return WorkerPdb(terminal)
