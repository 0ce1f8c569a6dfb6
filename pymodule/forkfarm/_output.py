"""Where a worker's output goes: the ``output=`` option of Pool and
Executor.

With output captured, the runtime gives each worker files for its
descriptors 1 and 2 (and a third for log records, ``_logging.py``), and
hands back with each task's outcome what the worker wrote while it ran that
task, even when the worker was killed (lib/output.c). The parent writes it
to the ``sys.stdout`` and ``sys.stderr`` of the code that submitted the
task, in that code's context, before the task's result is delivered: in
Jupyter the cell that ran the map, whatever cell runs now; under
``contextlib.redirect_stdout`` or pytest's capture, the redirect.

- ``"auto"`` (the default) captures when the parent's ``sys.stdout`` or
  ``sys.stderr`` is not its own descriptor 1 or 2 (Jupyter, IDE consoles,
  captured output), and inherits otherwise, which costs nothing.
- ``"forward"`` always captures; ``"inherit"`` never does: the workers
  write to the parent's descriptors, as multiprocessing's do.
"""

from __future__ import annotations

import contextvars
import io
import sys
from typing import Any, Literal, TextIO

from . import _core, _logging

__all__ = ["OutputMode", "Sink", "captures", "check", "start_worker"]

OutputMode = Literal["auto", "forward", "inherit"]
MODES: tuple[str, ...] = ("auto", "forward", "inherit")


def check(output: object, prefix: object) -> None:
    """Raises for an ``output=`` or ``output_prefix=`` that is not one."""
    if output not in MODES:
        raise ValueError(f"output must be one of {', '.join(map(repr, MODES))}, not {output!r}")
    if not isinstance(prefix, bool):
        raise TypeError(f"output_prefix must be a bool, not {type(prefix).__name__}")


def _is_descriptor(stream: object, fd: int) -> bool:
    """Whether stream writes straight to descriptor fd of this process."""
    try:
        return stream is not None and stream.fileno() == fd  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def captures(output: str) -> bool:
    """Whether a pool made now with ``output=`` captures its workers'
    output."""
    if output == "forward":
        return True
    if output == "inherit":
        return False
    if sys.stdout is None and sys.stderr is None:
        return False  # nowhere to forward to (pythonw)
    return not (_is_descriptor(sys.stdout, 1) and _is_descriptor(sys.stderr, 2))


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _prefixed(text: str, slot: int) -> str:
    label = f"[worker {slot}] "
    return "".join(label + line for line in text.splitlines(keepends=True))


class Sink:
    """Where the output of the tasks of one call goes: the streams and the
    context (Jupyter's cell, a ContextVar a logging filter reads) of the
    code that made the call, taken when it made it."""

    __slots__ = ("context", "prefix", "stderr", "stdout")

    def __init__(self, prefix: bool) -> None:
        self.context = contextvars.copy_context()
        self.stdout: TextIO | None = sys.stdout
        self.stderr: TextIO | None = sys.stderr
        self.prefix = prefix

    def deliver(self, task: Any) -> None:
        """Writes what the task's worker printed while it ran it (nothing
        when it printed nothing)."""
        got = task.output()
        if got is not None:
            self.write(*got)

    def write(self, slot: int, out: bytes, err: bytes, records: bytes) -> None:
        """Writes one task's output: standard output, standard error, then
        its log records, each as the worker wrote it. A Context cannot be
        entered twice at once, so each delivery runs in a copy."""
        self.context.copy().run(self._write, slot, out, err, records)

    def _write(self, slot: int, out: bytes, err: bytes, records: bytes) -> None:
        for data, stream in ((out, self.stdout), (err, self.stderr)):
            if not data or stream is None:
                continue
            text = _decode(data)
            if self.prefix and slot >= 0:
                text = _prefixed(text, slot)
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed stream: the output has nowhere to go
        if records:
            _logging.replay(records, slot)


# The streams a worker inherited from its parent: kept, never finalized
# here, since what their buffers hold is the parent's to print.
_inherited: list[object] = []


def _stream(fd: int) -> TextIO:
    # Line-buffered: a line printed is in the file at once, so a worker
    # killed after printing it loses nothing whole.
    return io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(fd, "w", closefd=False)),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )


def start_worker() -> None:
    """In a new worker whose output is captured: Python's standard streams
    write to the captured descriptors, whatever the parent's were (a
    Jupyter OutStream, a redirect)."""
    if _core.worker_output_fd(0) < 0:
        return
    _inherited.extend((sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))
    out, err = _stream(1), _stream(2)
    sys.stdout, sys.stderr = out, err
    # The originals as well, which code restoring the streams goes back to
    # (typeshed declares them final).
    setattr(sys, "__stdout__", out)  # noqa: B010
    setattr(sys, "__stderr__", err)  # noqa: B010
