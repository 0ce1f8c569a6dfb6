"""Task functions of tests/python/test_output.py and test_logging.py: what
workers print and log (importable by name, so that fork-server workers
find them too)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time


def speak(x: int) -> int:
    """Prints through Python to both streams and writes to descriptor 1."""
    print("out", x)
    print("err", x, file=sys.stderr)
    os.write(1, b"native %d\n" % x)
    return x * 2


def speak_unflushed_c(x: int) -> int:
    """C stdio's printf, fully buffered on a file: only the runtime's
    flush at the end of the task gets it out."""
    libc = ctypes.CDLL(None)
    libc.printf(b"c-level %d\n", ctypes.c_int(x))
    return x


def speak_through_child(x: int) -> int:
    subprocess.run(["sh", "-c", f"echo child {x}"], check=True)
    return x


def lines(tag: str, count: int) -> int:
    for i in range(count):
        print(f"{tag} {i}")
    return count


def speak_then_die(x: int) -> None:
    print("last words", x)
    logging.getLogger("dying").warning("record before death %s", x)
    os.kill(os.getpid(), signal.SIGKILL)


def speak_then_sleep(x: int) -> None:
    print("sleeping", x)
    time.sleep(60)


def speak_then_raise(x: int) -> None:
    print("about to fail", x)
    raise ValueError(f"failed {x}")


def no_newline(x: int) -> int:
    print("partial", x, end="")
    return x


def log_levels(x: int) -> int:
    log = logging.getLogger("worker.task")
    log.debug("debug %s", x)
    log.info("info %s", x)
    log.warning("warning %s", x)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("failed %s", x)
    return x


def log_unpicklable(x: int) -> int:
    logging.getLogger("worker.task").warning("holding %s", x, extra={"lock": __import__("threading").Lock()})
    return x


def initializer_speaks(tag: str) -> None:
    print("initializer", tag)
