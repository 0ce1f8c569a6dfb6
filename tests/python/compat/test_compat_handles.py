"""File descriptors passed between processes with ``reduction.send_handle``
and ``recv_handle`` (SCM_RIGHTS), over the module's own ``Pipe``, checked
on both modules (the ``mp`` fixture); then what only forkfarm's pipes do:
handles and messages travel apart, and a handle waits out the reads of
wake-ups on the same socket."""

from __future__ import annotations

import multiprocessing
import multiprocessing.reduction
import os
import time
from pathlib import Path
from typing import Any

import pytest

import forkfarm
import forkfarm.reduction

pytestmark = pytest.mark.timeout(60)


def _write_to_received(conn: Any, reduction: Any, data: bytes) -> None:
    fd = reduction.recv_handle(conn)
    os.write(fd, data)
    os.close(fd)


def _send_a_read_end(conn: Any, reduction: Any, data: bytes) -> None:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    reduction.send_handle(conn, r, os.getppid())
    os.close(r)  # the descriptor in flight keeps the pipe open


def _handles_between_messages(conn: Any, reduction: Any) -> None:
    first = conn.recv()
    fd = reduction.recv_handle(conn)
    second = conn.recv()
    os.write(fd, f"{first}+{second}".encode())
    os.close(fd)
    r, w = os.pipe()
    os.write(w, b"reply")
    os.close(w)
    conn.send("sending")
    reduction.send_handle(conn, r, os.getppid())
    os.close(r)
    conn.send("sent")


def _write_a_plain_byte(conn: Any) -> None:
    os.write(conn.fileno(), b"\0")


class TestHandles:
    def test_a_descriptor_to_a_child(self, mp: Any, tmp_path: Path) -> None:
        conn, child_conn = mp.Pipe()
        process = mp.Process(target=_write_to_received, args=(child_conn, mp.reduction, b"foo"))
        process.start()
        path = tmp_path / "written-by-the-child"
        with open(path, "wb") as file:
            mp.reduction.send_handle(conn, file.fileno(), process.pid)
        process.join(10)
        assert process.exitcode == 0
        assert path.read_bytes() == b"foo"

    def test_a_descriptor_from_a_child(self, mp: Any) -> None:
        conn, child_conn = mp.Pipe()
        process = mp.Process(target=_send_a_read_end, args=(child_conn, mp.reduction, b"from the child"))
        process.start()
        fd = mp.reduction.recv_handle(conn)
        try:
            assert os.read(fd, 100) == b"from the child"
            assert os.read(fd, 100) == b""  # the child closed the write end
        finally:
            os.close(fd)
        process.join(10)
        assert process.exitcode == 0

    def test_handles_between_messages(self, mp: Any, tmp_path: Path) -> None:
        conn, child_conn = mp.Pipe()
        process = mp.Process(target=_handles_between_messages, args=(child_conn, mp.reduction))
        process.start()
        time.sleep(0.1)  # the child sleeps in recv: a wake-up precedes the handle
        path = tmp_path / "joined"
        conn.send("one")
        with open(path, "wb") as file:
            mp.reduction.send_handle(conn, file.fileno(), process.pid)
        conn.send("two")
        assert conn.recv() == "sending"
        fd = mp.reduction.recv_handle(conn)
        try:
            assert conn.recv() == "sent"
            assert os.read(fd, 100) == b"reply"
        finally:
            os.close(fd)
        process.join(10)
        assert process.exitcode == 0
        assert path.read_bytes() == b"one+two"

    def test_bytes_without_a_descriptor(self, mp: Any) -> None:
        conn, child_conn = mp.Pipe()
        process = mp.Process(target=_write_a_plain_byte, args=(child_conn,))
        process.start()
        with pytest.raises(RuntimeError):
            mp.reduction.recv_handle(conn)
        process.join(10)

    def test_end_of_stream(self, mp: Any) -> None:
        a, b = mp.Pipe()
        a.close()
        with pytest.raises(EOFError):
            mp.reduction.recv_handle(b)


def _open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class TestForkfarmPipes:
    def test_a_handle_outlives_the_reads_of_wake_ups(self) -> None:
        a, b = forkfarm.Pipe()
        r, w = os.pipe()
        forkfarm.reduction.send_handle(a, w, os.getpid())
        # Both sleep on b's socket, where the handle is, and read it there.
        assert b.poll(0.05) is False
        assert forkfarm.connection.wait([b], timeout=0.05) == []
        a.send("message")
        assert b.recv() == "message"
        fd = forkfarm.reduction.recv_handle(b)
        os.write(fd, b"x")
        os.close(fd)
        os.close(w)
        assert os.read(r, 10) == b"x"
        os.close(r)

    def test_closing_an_end_closes_the_handles_it_kept(self) -> None:
        a, b = forkfarm.Pipe()
        r, w = os.pipe()
        forkfarm.reduction.send_handle(a, w, os.getpid())
        os.close(w)
        before = _open_descriptors()
        assert b.poll(0.05) is False  # b keeps the handle it read
        kept = _open_descriptors() - before
        assert len(kept) == 1
        b.close()
        assert not (_open_descriptors() & kept)
        assert os.read(r, 10) == b""  # no write end is left anywhere
        os.close(r)

    def test_multiprocessings_functions_on_a_forkfarm_pipe(self) -> None:
        a, b = forkfarm.Pipe()
        r, w = os.pipe()
        multiprocessing.reduction.send_handle(a, w, os.getpid())
        got = forkfarm.reduction.recv_handle(b)
        forkfarm.reduction.send_handle(b, r, os.getpid())
        back = multiprocessing.reduction.recv_handle(a)
        os.write(got, b"round trip")
        assert os.read(back, 100) == b"round trip"
        for fd in (r, w, got, back):
            os.close(fd)

    def test_forkfarms_functions_on_a_multiprocessing_pipe(self) -> None:
        a, b = multiprocessing.Pipe()
        r, w = os.pipe()
        forkfarm.reduction.send_handle(a, w, os.getpid())
        fd = forkfarm.reduction.recv_handle(b)
        os.write(fd, b"y")
        assert os.read(r, 10) == b"y"
        for descriptor in (r, w, fd):
            os.close(descriptor)

    def test_a_closed_end(self) -> None:
        a, b = forkfarm.Pipe()
        a.close()
        with pytest.raises(OSError, match="closed"):
            forkfarm.reduction.send_handle(a, 0, os.getpid())
        with pytest.raises(OSError, match="closed"):
            forkfarm.reduction.recv_handle(a)
        with pytest.raises(BrokenPipeError):
            forkfarm.reduction.send_handle(b, 0, os.getpid())
