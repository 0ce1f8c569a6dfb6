"""Log records of workers, handled by the parent's loggers.

A worker whose output is captured (``_output.py``) and whose pool forwards
logging gets one handler on its root logger, in place of what it inherited:
it writes each record, its message and exception already formatted, to the
records stream the runtime captures beside standard output and error. The
parent hands each record to the logger of the same name, before the task's
result, in the context of the code that submitted the task, as if it had
been logged there (``record.process`` and ``record.processName`` say which
worker; ``record.forkfarm_worker`` is its slot). A record is written with
one ``write()``, so one logged before the worker died is not lost.

Forwarding is on when the parent has configured logging (its root logger
has a handler) or when a pool is given ``log_level=``; the workers then
send the records at that level and above (the parent root logger's
effective level by default).
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
from typing import Any

from . import _core

__all__ = ["ForwardingHandler", "check_level", "decode", "forwarding_level", "replay", "start_worker"]

_LENGTH = struct.Struct("<I")

def check_level(log_level: object) -> int | None:
    """A pool's ``log_level=``, as a number (None: not given). Accepts the
    logging module's numbers and names."""
    if log_level is None:
        return None
    if isinstance(log_level, bool) or not isinstance(log_level, (int, str)):
        raise TypeError(f"log_level must be a logging level (int or name), not {type(log_level).__name__}")
    if isinstance(log_level, str):
        number = logging.getLevelName(log_level.upper())
        if not isinstance(number, int):
            raise ValueError(f"log_level {log_level!r} is not a logging level name")
        return number
    if log_level < 0:
        raise ValueError(f"log_level must be 0 or more, not {log_level}")
    return log_level


def forwarding_level(log_level: int | None) -> int | None:
    """The level a pool made now forwards its workers' records from: the
    one asked for, else the root logger's when logging is configured (the
    root logger has a handler), else None."""
    if log_level is not None:
        return log_level
    root = logging.getLogger()
    if not root.handlers:
        return None
    return root.getEffectiveLevel()


class ForwardingHandler(logging.Handler):
    """Writes each record, prepared as a QueueHandler prepares one, to a
    descriptor, as one length-prefixed pickle per ``write()``."""

    def __init__(self, fd: int, level: int) -> None:
        super().__init__(level)
        self._fd = fd

    def prepare(self, record: logging.LogRecord) -> dict[str, Any]:
        # The message and the exception as text: their arguments may not
        # pickle, or mean nothing in the parent.
        fields = dict(record.__dict__)
        fields["msg"] = record.getMessage()
        fields["args"] = None
        if record.exc_info:
            fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
        fields["exc_info"] = None
        for key, value in list(fields.items()):
            try:
                pickle.dumps(value)
            except Exception:  # noqa: BLE001 - anything may fail to pickle
                fields[key] = repr(value)
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            body = pickle.dumps(self.prepare(record), protocol=pickle.HIGHEST_PROTOCOL)
            frame = _LENGTH.pack(len(body)) + body
            written = 0
            while written < len(frame):
                written += os.write(self._fd, frame[written:])
        except Exception:  # noqa: BLE001 - logging never raises into the task
            self.handleError(record)


def start_worker(level: int | None) -> None:
    """In a new worker: when its pool forwards logging (level is not None)
    and its output is captured, its root logger forwards records from level
    up to the parent, in place of the handlers it inherited (which would
    print them a second time)."""
    fd = _core.worker_output_fd(2)
    if level is None or fd < 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(ForwardingHandler(fd, logging.NOTSET))
    root.setLevel(level)


def decode(data: bytes) -> list[logging.LogRecord]:
    """The records of a records stream; a record cut short (its worker was
    killed while writing it) is left out."""
    records = []
    offset = 0
    while offset + _LENGTH.size <= len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        start = offset + _LENGTH.size
        if start + length > len(data):
            break
        try:
            fields = pickle.loads(data[start : start + length])
        except Exception:  # noqa: BLE001 - a record that does not load is skipped
            fields = None
        if isinstance(fields, dict):
            records.append(logging.makeLogRecord(fields))
        offset = start + length
    return records


def replay(data: bytes, slot: int) -> None:
    """Hands the records of a records stream to the parent's loggers."""
    for record in decode(data):
        record.forkfarm_worker = slot
        logging.getLogger(record.name).handle(record)
