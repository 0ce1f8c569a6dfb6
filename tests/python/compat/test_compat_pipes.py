"""multiprocessing's observable behaviour of Pipe, Connection and
connection.wait, checked on both modules (the ``mp`` fixture)."""

from __future__ import annotations

import array
import time
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)


def _echo(conn: Any, other_end: Any) -> None:
    other_end.close()  # the parent's end, inherited: only the parent's copy stays
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return


def _send_later(conn: Any, value: Any, delay: float) -> None:
    time.sleep(delay)
    conn.send(value)


class TestPipe:
    def test_objects_and_bytes(self, mp: Any) -> None:
        a, b = mp.Pipe()
        for value in (None, 1, "two", [3, {"four": 4.0}], b"x" * 100_000):
            a.send(value)
            assert b.recv() == value
        b.send_bytes(b"hello world", 6, 5)
        assert a.recv_bytes() == b"world"
        a.send_bytes(b"")
        assert b.recv_bytes() == b""
        buf = bytearray(8)
        b.send_bytes(b"abc")
        assert a.recv_bytes_into(buf, 2) == 3
        assert buf == bytearray(b"\0\0abc\0\0\0")

    def test_recv_bytes_into_counts_its_offset_in_bytes(self, mp: Any) -> None:
        a, b = mp.Pipe()
        buffer = array.array("i", [0] * 10)
        a.send_bytes(array.array("i", [1, 2]))
        assert b.recv_bytes_into(buffer, 8 * buffer.itemsize) == 2 * buffer.itemsize
        assert buffer.tolist() == [0] * 8 + [1, 2]
        a.send_bytes(b"x")
        with pytest.raises(ValueError, match="offset too large"):
            b.recv_bytes_into(bytearray(4), 5)
        with pytest.raises(ValueError, match="negative offset"):
            b.recv_bytes_into(bytearray(4), -1)

    def test_arguments_by_keyword(self, mp: Any) -> None:
        a, b = mp.Pipe()
        assert b.poll(timeout=0.01) is False
        a.send_bytes(b"hello")
        assert b.poll(timeout=5) is True
        assert b.recv_bytes(maxlength=10) == b"hello"
        a.send_bytes(b"abc")
        buf = bytearray(5)
        assert b.recv_bytes_into(buf=buf, offset=1) == 3
        assert buf == bytearray(b"\0abc\0")

    def test_buffer_too_short(self, mp: Any) -> None:
        a, b = mp.Pipe()
        a.send_bytes(b"0123456789")
        with pytest.raises(mp.BufferTooShort) as caught:
            b.recv_bytes_into(bytearray(4))
        assert caught.value.args[0] == b"0123456789"

    def test_one_way(self, mp: Any) -> None:
        reader, writer = mp.Pipe(duplex=False)
        assert reader.readable and not reader.writable
        assert writer.writable and not writer.readable
        writer.send(1)
        assert reader.recv() == 1
        with pytest.raises(OSError, match="read-only"):
            reader.send(2)
        with pytest.raises(OSError, match="write-only"):
            writer.recv()

    def test_poll(self, mp: Any, fork: Any) -> None:
        a, b = mp.Pipe()
        assert not b.poll()
        started = time.monotonic()
        assert not b.poll(0.2)
        assert 0.2 <= time.monotonic() - started < 0.5
        child = fork(target=_send_later, args=(a, "late", 0.1))
        child.start()
        assert b.poll(10)
        assert b.recv() == "late"
        child.join(10)

    def test_ping_pong_with_a_process(self, mp: Any, fork: Any) -> None:
        a, b = mp.Pipe()
        child = fork(target=_echo, args=(b, a))
        child.start()
        b.close()
        for i in range(2000):
            a.send(i)
            assert a.recv() == i
        a.close()
        child.join(10)
        assert child.exitcode == 0

    def test_eof_when_the_other_end_is_gone(self, mp: Any, fork: Any) -> None:
        a, b = mp.Pipe()
        child = fork(target=_send_later, args=(b, "last", 0.0))
        child.start()
        b.close()  # the child's copy is the last one
        child.join(10)
        assert a.recv() == "last"
        with pytest.raises(EOFError):
            a.recv()
        assert a.poll(0)  # at the end of the stream, poll says so

    def test_closed_handle(self, mp: Any) -> None:
        a, b = mp.Pipe()
        a.close()
        assert a.closed
        with pytest.raises(OSError, match="handle is closed"):
            a.send(1)
        with pytest.raises(OSError, match="handle is closed"):
            a.recv()
        a.close()  # twice is fine

    def test_send_to_a_closed_end(self, mp: Any) -> None:
        a, b = mp.Pipe()
        b.close()
        with pytest.raises(BrokenPipeError):
            for _ in range(10):  # buffered first, then refused
                a.send_bytes(b"x" * 70_000)


class TestWait:
    def test_wait_for_connections_and_sentinels(self, mp: Any, fork: Any) -> None:
        a, b = mp.Pipe()
        c, d = mp.Pipe()
        assert mp.connection.wait([a, c], timeout=0.1) == []
        child = fork(target=_send_later, args=(d, "from d", 0.1))
        child.start()
        assert mp.connection.wait([a, c], timeout=10) == [c]
        assert c.recv() == "from d"
        ready = mp.connection.wait([child.sentinel, a], timeout=10)
        assert ready == [child.sentinel]
        child.join(10)
        b.send("now")
        assert mp.connection.wait([a, c], timeout=0) == [a]
