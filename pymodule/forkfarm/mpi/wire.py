"""How values travel between MPI ranks: rank 0 to the others and back.

A message is a small header (a lowercase, pickled ``send``), then its
pickle-5 body and each out-of-band buffer by the uppercase, buffer-based
``Send``: the bytes of a NumPy array are never copied into a pickle. The
body is cloudpickle's, so that what ``__main__`` defines and lambdas
travel too. A shared array travels as a reference to its segment, and the
segment itself goes to each rank once per pool (root.py sends it), straight
from rank 0's memory into the rank's own shared memory.
"""

from __future__ import annotations

import io
import pickle
import sys
from collections.abc import Callable
from typing import Any

from .. import _core, _segments, _source

PROTOCOL = 5
# Buffers from this size travel as MPI buffers of their own.
OOB_THRESHOLD = 64 * 1024
TAG_TO_WORKER = 11
TAG_TO_ROOT = 12

def mpi() -> Any:
    """mpi4py's MPI module, imported when a pool first needs it."""
    from mpi4py import MPI

    return MPI


def world() -> Any:
    """The communicator the pools farm over: MPI.COMM_WORLD."""
    return mpi().COMM_WORLD


class _WirePickler(_source.pickler_class()):  # type: ignore[misc]
    """cloudpickle (forkfarm's, which keeps code objects' filenames and
    ships the lines of cells: ``_source.py``), with shared arrays as
    references to their segments, which are collected to be sent on their
    own."""

    def __init__(self, file: io.BytesIO, buffer_callback: Callable[[pickle.PickleBuffer], bool]) -> None:
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
        self.segments: dict[int, _core.Segment] = {}

    def persistent_id(self, obj: Any) -> Any:
        # Without forkfarm.shared imported there is no shared array to find.
        shared = sys.modules.get("forkfarm.shared")
        if shared is None or not isinstance(obj, shared.SharedArray):
            return None
        segment = _segments.segment_of(obj)
        if segment is None or obj.size == 0:
            return None
        self.segments[segment.id] = segment
        offset = obj.__array_interface__["data"][0] - segment.address
        return ("segment", segment.id, offset, obj.shape, obj.strides, obj.dtype.str, bool(obj.flags.writeable))


Wire = tuple[bytes, list[Any], dict[int, _core.Segment]]


def encode(value: Any, copy: bool = False) -> Wire:
    """A value for the wire: the pickle, its large buffers, and the segments
    of the shared arrays it refers to. With ``copy`` the buffers are copies,
    taken now: a task is sent later, by the MPI thread, and must carry its
    arguments as they were when it was submitted."""
    buffers: list[Any] = []

    def collect(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OOB_THRESHOLD:
            return True  # in band
        buffers.append(bytearray(view) if copy else view)
        return False

    file = io.BytesIO()
    pickler = _WirePickler(file, collect)
    pickler.dump(value)
    return file.getvalue(), buffers, pickler.segments


class _WireUnpickler(pickle.Unpickler):
    """Rebuilds the shared arrays a _WirePickler sent as references, on the
    segments this rank received. (A subclass: assigning persistent_load to
    an instance is refused from Python 3.13 on.)"""

    def __init__(self, file: io.BytesIO, buffers: list[Any], segments: dict[int, _core.Segment]) -> None:
        super().__init__(file, buffers=buffers)
        self.segments = segments

    def persistent_load(self, pid: Any) -> Any:
        kind, segment_id, offset, shape, strides, dtype, writeable = pid
        if kind != "segment" or segment_id not in self.segments:
            raise pickle.UnpicklingError(f"a shared array refers to segment {segment_id}, which never came")
        from ..shared import rebuild

        return rebuild(self.segments[segment_id].id, offset, shape, strides, _numpy_dtype(dtype), writeable)


def decode(body: Any, buffers: list[Any], segments: dict[int, _core.Segment]) -> Any:
    """What encode() made, with shared arrays rebuilt on the segments this
    rank received."""
    return _WireUnpickler(io.BytesIO(body), buffers, segments).load()


def _numpy_dtype(text: str) -> Any:
    import numpy

    return numpy.dtype(text)


def send(comm: Any, dest: int, tag: int, header: tuple[Any, ...], body: bytes, buffers: list[Any]) -> int:
    """Sends a message; returns its size in bytes."""
    lengths = [memoryview(b).nbytes for b in buffers]
    comm.send((*header, len(body), lengths), dest=dest, tag=tag)
    byte = mpi().BYTE
    comm.Send([body, byte], dest=dest, tag=tag)
    for buffer in buffers:
        comm.Send([buffer, byte], dest=dest, tag=tag)
    return len(body) + sum(lengths)


def receive_rest(comm: Any, source: int, tag: int, body_length: int, lengths: list[int]) -> tuple[bytearray, list[bytearray]]:
    body = bytearray(body_length)
    byte = mpi().BYTE
    comm.Recv([body, byte], source=source, tag=tag)
    buffers = []
    for length in lengths:
        buffer = bytearray(length)
        comm.Recv([buffer, byte], source=source, tag=tag)
        buffers.append(buffer)
    return body, buffers
