"""``multiprocessing.connection``: ``Pipe``, ``Connection``, ``wait``,
``Listener`` and ``Client``. Connections are the standard library's over a
socket pair for now (issue 6 moves ``Pipe`` onto shared-memory rings)."""

from multiprocessing.connection import Client, Connection, Listener, Pipe, wait

__all__ = ["Client", "Connection", "Listener", "Pipe", "wait"]
