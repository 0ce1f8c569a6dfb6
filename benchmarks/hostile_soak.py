"""A hostile-worker soak: for ``--seconds``, a Pool and an Executor run a
steady stream of self-checking tasks while, with probability ``--rate``, a
task is hostile instead and writes random bytes over the shared memory its
worker can reach. The parent must not crash, no task may return a wrong
value, nothing may hang and nothing may leak.

    python benchmarks/hostile_soak.py --seconds 60 [--workers 2] [--seed N] [--rate 0.02]
        [--targets ring,arena,...] [--timeout 30] [--truncate-mappings]

Both pools have ``--workers`` workers and a task ``timeout=`` of 10 s (so
that a worker a hostile task left hanging is replaced); each keeps
3 x ``--workers`` tasks in flight, submitted from the main thread (no
other thread: a parent with threads would get the fork server).

The honest tasks (each checked by the parent):

- ``square``: x -> x*x;
- ``big_arg``: a NumPy argument of 1-4 MiB (out of band, through the
  parent's arena); the worker returns a digest the parent computed before
  sending;
- ``big_result``: the worker returns a 1-4 MiB array (through its own
  arena) that the parent rebuilds and compares;
- ``zeros``: the worker makes a ``forkfarm.zeros(n)``, fills it with a known
  pattern and returns it (it comes back as a handle);
- ``shared_in``: a shared array made by the parent, read by the worker;
- ``queue_lock``: a ``forkfarm.Queue`` and a ``forkfarm.Lock`` as
  arguments: the worker puts a self-describing message, gets one, and
  holds the lock (``acquire(timeout=)``) for a moment; the parent puts one
  before and gets one after, so every get has a message waiting. Any
  message taken must be one that was put, intact;
- ``map``: ``Pool.map_async`` / ``Executor.map`` of ``square`` with chunks.

A hostile task picks a target and corrupts it, then returns at once,
carries on with ordinary work over what it corrupted (a large result, a
shared array, and the queue or the lock if that was its target), or exits
(``os._exit`` or SIGKILL). The parent draws the kind of target, so that it
knows which queue, lock or arrays to replace
afterwards; the worker draws everything else from a seed the parent gives
it (which mapping, field, value and bytes). Targets:

- ``ring``: its own worker segment (the ``memfd:forkfarm-worker`` mapping
  in /proc/self/maps): a random value into a ring's head, tail, magic or
  capacity, or random bytes into a ring's data area. Bytes go only where
  no unread record is (a worker that rewrites the tasks queued for itself,
  or the results it already sent, is lying, which no runtime can detect);
  over the result ring they may be published by moving its tail over them;
- ``arena``: random bytes over the first 8192 bytes (header and slot
  table) of an arena chunk (a ``memfd:forkfarm-segment`` starting with
  ``FFARENA1``): the parent's, shared by every worker, or its own;
- ``channel``: random bytes over the Queue's channel header (4096 bytes
  into its segment: the lock, counters, positions and sizes);
- ``lock``: random bytes over the Lock's 64-byte slot, or its word set to a
  live pid (held forever) or to 0;
- ``ftruncate``: ``ftruncate(fd, 0 | 1 | random)`` on a memfd from
  /proc/self/fd (errors ignored): the worker's own segment, and the
  segments it inherited from the parent (those that existed when its pool
  started: the first queue, lock slab and shared arrays, the parent's
  first arena chunk). With
  ``--truncate-mappings``, also on a memfd reopened through
  /proc/self/map_files (any segment the worker maps; needs
  CAP_SYS_ADMIN, else it is skipped);
- ``segment_header``: random bytes over the 4096-byte header page of a
  shared segment (magic ``FFFSEGM1``: shared arrays, the queue's segment,
  the locks' slab).

After a channel, lock, segment-header or ftruncate target the parent
replaces what it may have hit (the Queue, the Lock, the parent-made shared
arrays) for later tasks. ``--targets`` limits the draw to some targets, to
tell which one breaks what.

How each task ends:

- correct: an honest task returned the right value;
- tolerated: an honest task failed in a way corruption explains, once at
  least one hostile task was submitted: ``worker_lost``
  (WorkerLostError), ``protocol`` (WorkerLostError saying "corrupt":
  the runtime found a corrupt message), ``task_timeout``
  (TaskTimeoutError, the pool's ``timeout=``), ``arena_refused`` (the
  runtime refused a buffer or segment: "could not be received", "not a
  shared array", "not reachable"), and, for a queue or lock that a hostile
  task targeted, ``queue_empty``, ``queue_full``, ``queue_corrupt``
  (RuntimeError "shared memory held an impossible state", ValueError "holds
  no channel"), ``lock_timeout``, ``lock_released`` (ValueError "released
  too many times"), ``queue_garbage`` (a get that handed out something
  that is not a message at all: bytes that do not unpickle, another
  object; a hostile worker may put anything in a queue it holds, but a
  message that was put must come out intact). ``parent_*`` are the same
  for the parent's own put and get of a ``queue_lock`` task.
  ``abandoned_lock`` counts AbandonedLockWarnings (the task itself may
  have succeeded);
- violation: a wrong value, any other exception, any failure (or
  AbandonedLockWarning) while no hostile task had been submitted yet (so
  ``--rate 0`` must end with every task correct), or a task not finished
  ``--timeout`` (at most 30) seconds after its submission (a hang).

Hostile tasks may end in any way, but must end. At the end both pools are
closed and joined (a watchdog terminates them past 60 s, a violation),
everything is dropped, ``gc.collect()`` runs and idle arena chunks are
released (``_core.trim_arena(0)``: a chunk still mapped after that is held
by something); then the parent's open descriptors and memfd mappings must
be back within a small margin (``FD_MARGIN``, ``MAPPING_MARGIN``) of what
they were after a warm-up pool, and /dev/shm must hold no new entry.

Output: on stderr first, the pid, the seed and the targets (a run that
crashes can be replayed with the same ``--seed``, timing aside). Then on
stdout one line::

    hostile-soak: seconds= workers= seed= rate= tasks= correct=
        tolerated=N{kind=n,...} hostile=N{target=n,...} actions={...}
        violations=N{kind=n,...} fds=before->after mappings=before->after
        dev_shm=+n leaks=none|fds,mappings,dev_shm result=OK|FAIL

``tasks`` counts every task collected, hostile ones included; ``hostile``
the hostile tasks by target, ``actions`` what those that returned report
having done (``<target>:no_target`` when nothing of that kind was mapped);
the first violations are described on stderr. Exit status 0, or 1 on any
violation or leak. A parent that crashes dies with its signal (SIGSEGV:
-11, SIGBUS: -7), after faulthandler's Python traceback on stderr when the
crash is in a Python thread; the runtime's loop thread blocks every
signal, so a crash there ends the process without a word (run it under
gdb to see where).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import ctypes
import faulthandler
import gc
import hashlib
import multiprocessing
import os
import pickle
import queue
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import forkfarm
from forkfarm import _core

MiB = 1 << 20
# The pools' own limit per task: a worker that hangs (a hostile one that
# waits forever on a ring it broke) is stopped and replaced past it.
TASK_TIMEOUT = 10.0
# How long a queue or lock operation waits in the workers, and here (where
# a message is always there to get, unless the queue was corrupted).
QUEUE_TIMEOUT = 2.0
PARENT_QUEUE_TIMEOUT = 1.0
# Leak margins: the runtime may keep a few descriptors and mappings for
# good (a new slab of lock slots, say).
FD_MARGIN = 4
MAPPING_MARGIN = 2

# The worker segment (lib/internal.h, lib/ring.c): two rings, each a
# 256-byte header and then its data.
RING_HEADER = 256
RING_CAPACITY = 1 << 20
RING_OFFSETS = {"task": 0, "result": RING_HEADER + RING_CAPACITY}
RING_TAIL, RING_HEAD, RING_MAGIC, RING_CAP = 0, 64, 128, 136
# The channel's header (lib/channel.c channel_shared_t), 4096 bytes into
# the queue's segment: field -> (offset, size).
CHANNEL_FIELDS = {
    "lock": (0, 16),
    "magic": (16, 4),
    "maxsize": (20, 4),
    "puts": (24, 4),
    "gets": (28, 4),
    "getters_asleep": (32, 4),
    "putters_asleep": (36, 4),
    "count": (40, 4),
    "unfinished": (44, 4),
    "joiners_asleep": (48, 4),
    "head": (56, 8),
    "tail": (64, 8),
    "capacity": (72, 8),
    "base_capacity": (80, 8),
    "max_capacity": (88, 8),
}
CHANNEL_HEADER = 96
ARENA_MAGIC = b"FFARENA1"
ARENA_HEADER = 8192
SEGMENT_MAGIC = b"FFFSEGM1"
SEGMENT_HEADER = 4096
LOCK_SLOT = 64

TARGETS = ("ring", "arena", "channel", "lock", "ftruncate", "segment_header")
MODES = ("return", "continue", "exit")


# -- honest tasks (module level: workers find them by reference) -----------


def square(x: int) -> int:
    return x * x


def digest(buffer: Any) -> str:
    return hashlib.blake2b(memoryview(buffer).cast("B"), digest_size=16).hexdigest()


def big_arg(array: np.ndarray) -> str:
    return digest(np.ascontiguousarray(array))


def pattern(n: int, seed: int) -> np.ndarray:
    return np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)


def big_result(n: int, seed: int) -> np.ndarray:
    return pattern(n, seed)


def zeros_filled(n: int, seed: int) -> np.ndarray:
    array = forkfarm.zeros(n, dtype=np.uint64)
    array[:] = pattern(n, seed)
    return array


def shared_in(array: np.ndarray) -> str:
    return digest(np.ascontiguousarray(array))


def message(tag: int, size: int) -> tuple[int, int, bytes]:
    """A queue message that describes itself: the parent can tell any
    message put in the soak from one that was damaged or made up."""
    block = hashlib.blake2b(tag.to_bytes(8, "little"), digest_size=64).digest()
    return tag, size, (block * (size // 64 + 1))[:size]


def get_message(q: Any, timeout: float) -> Any:
    """q.get, but a message that cannot be unpickled comes back as
    ("undecodable", why): a queue hands out the bytes some process put, and
    a hostile one may have put (or made it frame) anything."""
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise
    except RuntimeError as exc:
        if "impossible state" in str(exc):
            raise
        return ("undecodable", repr(exc))
    except Exception as exc:  # noqa: BLE001 - whatever unpickling garbage raises
        return ("undecodable", repr(exc))


def queue_lock(q: Any, lock: Any, tag: int, size: int, x: int) -> tuple[Any, ...]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q.put(message(tag, size), timeout=QUEUE_TIMEOUT)
        got = get_message(q, QUEUE_TIMEOUT)
        status, value = "lock_timeout", None
        if lock.acquire(timeout=QUEUE_TIMEOUT):
            try:
                time.sleep(0.0002)
                status, value = "ok", x * 7
            finally:
                lock.release()
    abandoned = sum(issubclass(w.category, forkfarm.AbandonedLockWarning) for w in caught)
    return (status, got, value, abandoned)


# -- the hostile task ----------------------------------------------------------


@dataclass
class MemfdMapping:
    start: int
    end: int
    inode: int
    path: str


def memfd_mappings() -> list[MemfdMapping]:
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(None, 5)
            if len(parts) < 6 or "/memfd:forkfarm-" not in parts[5]:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.append(MemfdMapping(start, end, int(parts[4]), parts[5].strip()))
    return found


def peek(address: int, n: int) -> bytes:
    """Reads memory through /proc/self/mem: a page past the end of a
    truncated memfd gives an error here rather than SIGBUS."""
    try:
        with open("/proc/self/mem", "rb", buffering=0) as mem:
            return os.pread(mem.fileno(), n, address)
    except OSError:
        return b""


def poke(address: int, data: bytes) -> None:
    ctypes.memmove(address, data, len(data))


def random_u64(rng: random.Random, current: int) -> int:
    """A random value for a 64-bit position: anything, or near the current
    one (which passes more checks)."""
    kind = rng.randrange(6)
    if kind == 0:
        value = rng.getrandbits(64)
    elif kind == 1:
        value = current + 16 * rng.randint(-64, 64)
    elif kind == 2:
        value = current + rng.randrange(1, 1 << 21)
    elif kind == 3:
        value = rng.choice((0, (1 << 64) - 1, 1 << 63, RING_CAPACITY))
    elif kind == 4:
        value = current ^ (1 << rng.randrange(64))
    else:
        value = current - rng.randrange(1, 1 << 21)
    return value % (1 << 64)


def own_worker_segment() -> MemfdMapping | None:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:forkfarm-worker"):
                inodes.add(os.fstat(int(fd)).st_ino)
        except OSError:
            pass
    for m in memfd_mappings():
        if "forkfarm-worker" in m.path and m.inode in inodes:
            return m
    return None


def corrupt_ring(rng: random.Random, *unused: Any) -> str | None:
    segment = own_worker_segment()
    if segment is None or segment.end - segment.start < 2 * (RING_HEADER + RING_CAPACITY):
        return None
    which = rng.choice(tuple(RING_OFFSETS))
    header = segment.start + RING_OFFSETS[which]
    what = rng.choice(("head", "tail", "magic", "capacity", "data", "data"))
    if what in ("head", "tail"):
        word = ctypes.c_uint64.from_address(header + (RING_HEAD if what == "head" else RING_TAIL))
        word.value = random_u64(rng, word.value)
    elif what == "magic":
        word32 = ctypes.c_uint32.from_address(header + RING_MAGIC)
        word32.value = rng.choice((rng.getrandbits(32), 0, word32.value ^ (1 << rng.randrange(32))))
    elif what == "capacity":
        word = ctypes.c_uint64.from_address(header + RING_CAP)
        word.value = rng.choice(
            (rng.getrandbits(64), 0, 1 << rng.randrange(64), RING_CAPACITY * 2, RING_CAPACITY // 2)
        )
    else:
        data = header + RING_HEADER
        tail_word = ctypes.c_uint64.from_address(header + RING_TAIL)
        tail = tail_word.value
        head = ctypes.c_uint64.from_address(header + RING_HEAD).value
        used = tail - head
        if not 0 <= used <= RING_CAPACITY or tail % 16:
            return f"{which}-data(skipped)"
        free = RING_CAPACITY - used
        length = min(rng.randrange(16, 4097), free // 2)
        # Over the result ring, this worker is the only producer: the bytes
        # may go right at the tail and be published. Anywhere else they go
        # in the far half of the free space, where no record is and none
        # will be written before this task ends.
        publish = which == "result" and rng.random() < 0.5
        at = tail if publish else tail + free // 2 + rng.randrange(max(1, free // 2 - length))
        index = at % RING_CAPACITY
        length = min(length, RING_CAPACITY - index)
        if length <= 0:
            return f"{which}-data(skipped)"
        poke(data + index, os.urandom(length))
        if publish:
            tail_word.value = tail + (length + 15) // 16 * 16
            return f"{which}-data-published"
    return f"{which}-{what}"


def corrupt_arena(rng: random.Random, *unused: Any) -> str | None:
    chunks = [
        m for m in memfd_mappings()
        if m.end - m.start >= ARENA_HEADER and peek(m.start, 8) == ARENA_MAGIC
    ]
    if not chunks:
        return None
    chunk = rng.choice(chunks)
    how = rng.randrange(3)
    if how == 0:
        poke(chunk.start, os.urandom(ARENA_HEADER))
        return "arena-all"
    if how == 1:
        offset = rng.randrange(0, 64, 4)
        poke(chunk.start + offset, os.urandom(rng.randrange(1, 65 - offset)))
        return "arena-header"
    slots = (ARENA_HEADER - 64) // 24
    for _ in range(rng.randint(1, 8)):
        slot = chunk.start + 64 + 24 * rng.randrange(min(slots, rng.choice((4, 16, slots))))
        poke(slot, os.urandom(rng.choice((4, 8, 24))))
    return "arena-slots"


def corrupt_channel(rng: random.Random, q: Any, *unused: Any) -> str | None:
    if q is None:
        return None
    header = q._segment.address  # the channel's region: 4096 bytes into the segment
    how = rng.randrange(4)
    if how == 0:
        poke(header, os.urandom(CHANNEL_HEADER))
        return "channel-all"
    if how == 1:
        # The lock word: a live holder (this worker), so that others wait.
        ctypes.c_uint32.from_address(header).value = os.getpid()
        return "channel-lock-held"
    name = rng.choice(tuple(CHANNEL_FIELDS))
    offset, size = CHANNEL_FIELDS[name]
    if size == 8 and how == 2:
        word = ctypes.c_uint64.from_address(header + offset)
        word.value = random_u64(rng, word.value)
    else:
        poke(header + offset, os.urandom(size))
    return f"channel-{name}"


def corrupt_lock(rng: random.Random, q: Any, lock: Any, *unused: Any) -> str | None:
    if lock is None:
        return None
    slot = lock._segment.address + lock._offset
    how = rng.randrange(4)
    if how == 0:
        poke(slot, os.urandom(LOCK_SLOT))
        return "lock-slot"
    word = ctypes.c_uint32.from_address(slot)
    if how == 1:
        word.value = rng.getrandbits(32)
        return "lock-word"
    if how == 2:
        word.value = os.getpid()  # held by a live process
        return "lock-held"
    word.value = 0
    return "lock-freed"


def corrupt_fd(rng: random.Random, *unused: Any, reopen: bool = False) -> str | None:
    descriptors = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:"):
                descriptors.append(int(name))
        except OSError:
            pass
    source = "fd"
    opened = None
    if reopen and rng.random() < 0.5:
        mappings = memfd_mappings()
        if mappings:
            m = rng.choice(mappings)
            try:
                opened = os.open(f"/proc/self/map_files/{m.start:x}-{m.end:x}", os.O_RDWR)
                descriptors = [opened]
                source = "map_files"
            except OSError:
                pass
    if not descriptors:
        return None
    fd = rng.choice(descriptors)
    try:
        size = os.fstat(fd).st_size
        length = rng.choice((0, 1, rng.randrange(0, 2 * size + 2)))
        os.ftruncate(fd, length)
        done = f"ftruncate-{source}-{'0' if length == 0 else '1' if length == 1 else 'random'}"
    except OSError:
        done = f"ftruncate-{source}-refused"
    if opened is not None:
        os.close(opened)
    return done


def corrupt_segment_header(rng: random.Random, *unused: Any) -> str | None:
    segments = [
        m for m in memfd_mappings()
        if m.end - m.start >= SEGMENT_HEADER and peek(m.start, 8) == SEGMENT_MAGIC
    ]
    if not segments:
        return None
    segment = rng.choice(segments)
    if rng.random() < 0.5:
        poke(segment.start, os.urandom(SEGMENT_HEADER))
        return "segment-page"
    offset = rng.choice((0, 8, 16, 24))  # magic, id, size, released
    poke(segment.start + offset, os.urandom(8 if offset < 24 else 4))
    return "segment-field"


CORRUPT: dict[str, Callable[..., str | None]] = {
    "ring": corrupt_ring,
    "arena": corrupt_arena,
    "channel": corrupt_channel,
    "lock": corrupt_lock,
    "ftruncate": corrupt_fd,
    "segment_header": corrupt_segment_header,
}


def hostile(target: str, mode: str, seed: int, q: Any, lock: Any, reopen: bool) -> Any:
    """Corrupts one target, then returns, carries on, or exits."""
    rng = random.Random(seed)
    if target == "ftruncate":
        done = corrupt_fd(rng, reopen=reopen)
    else:
        done = CORRUPT[target](rng, q, lock)
    if mode == "exit":
        if rng.random() < 0.3:
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(rng.choice((0, 1, 3, 70, 71)))
    if mode == "continue":
        # Ordinary work over what was corrupted: a large result through the
        # arena and the result ring, a shared array, and the queue or the
        # lock it corrupted (a message taken is put back: honest tasks
        # count on every message they put being there for some get).
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if target == "channel":
                    q.put(q.get(timeout=0.5), timeout=0.5)
                if target == "lock" and lock.acquire(timeout=0.5):
                    lock.release()
        except Exception:  # noqa: BLE001 - a hostile task may fail any way
            pass
        return ("hostile", done, pattern(rng.randrange(1, 1 << 18), seed), zeros_filled(1000, seed))
    return ("hostile", done)


# -- the parent ----------------------------------------------------------------


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def memfd_mapping_count() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if "/memfd:" in line)


def shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


class Hang(Exception):
    """A task not finished by its deadline."""


class WatchdogExpired(Exception):
    """A shutdown step took too long."""


@dataclass
class Item:
    side: str  # "pool" or "executor"
    kind: str
    handle: Any
    submitted: float
    deadline: float
    # True when the value is right, False when it is wrong, or the name of
    # what went wrong (a queue_lock task's "lock_timeout"); None: hostile.
    check: Callable[[Any], Any] | None = None
    target: str = ""
    # A queue_lock task's queue, the generations of the queue and the lock
    # it used, and whether the parent's own put went in.
    queue: Any = None
    qgen: int = -1
    lgen: int = -1
    parent_put: bool = False


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.np_rng = np.random.default_rng(args.seed)
        self.tasks = 0
        self.correct = 0
        self.tolerated: collections.Counter[str] = collections.Counter()
        self.hostile: collections.Counter[str] = collections.Counter()
        self.actions: collections.Counter[str] = collections.Counter()
        self.violations: collections.Counter[str] = collections.Counter()
        self.details: list[str] = []
        self.hostile_submitted = 0
        self.next_tag = 1
        # Generations of the queue and the lock: the tasks that used one a
        # hostile task targeted may fail with its errors.
        self.qgen = self.lgen = 0
        self.targeted_q: set[int] = set()
        self.targeted_l: set[int] = set()
        self.tags: dict[int, set[int]] = collections.defaultdict(set)
        self.bases = {n: self.np_rng.integers(0, 2**63, n // 8, dtype=np.uint64) for n in (1 * MiB, 2 * MiB, 4 * MiB)}
        self.queue: Any = None
        self.lock: Any = None
        self.arrays: list[tuple[Any, str]] = []
        self.new_queue()
        self.new_lock()
        self.new_arrays()

    # -- shared objects --

    def new_queue(self) -> None:
        self.qgen += 1
        self.queue = forkfarm.Queue()

    def new_lock(self) -> None:
        self.lgen += 1
        self.lock = forkfarm.Lock()

    def new_arrays(self) -> None:
        self.arrays = []
        for _ in range(3):
            n = self.rng.choice((1000, 20000, 200000))
            array = forkfarm.zeros(n, dtype=np.uint64)
            array[:] = pattern(n, self.rng.getrandbits(32))
            self.arrays.append((array, digest(array)))

    # -- outcomes --

    def violation(self, kind: str, item: Item, detail: str) -> None:
        self.violations[kind] += 1
        if len(self.details) < 20:
            self.details.append(
                f"{kind}: {item.side} {item.kind} submitted at {item.submitted - self.started:.2f}s,"
                f" ended after {time.monotonic() - item.submitted:.2f}s: {detail}"
            )

    def tolerate(self, kind: str, item: Item, error: BaseException) -> None:
        if self.hostile_submitted == 0:
            self.violation("failed_without_hostility", item, f"{type(error).__name__}: {error}")
        else:
            self.tolerated[kind] += 1

    def classify_error(self, item: Item, error: BaseException, prefix: str = "") -> None:
        """An honest task (or the parent's side of one, with prefix
        "parent_") that raised: tolerated, or a violation."""
        text = str(error)

        def tolerate(kind: str) -> None:
            self.tolerate(prefix + kind, item, error)

        queue_targeted = item.qgen in self.targeted_q
        lock_targeted = item.lgen in self.targeted_l
        if isinstance(error, forkfarm.TaskTimeoutError):
            tolerate("task_timeout")
        elif isinstance(error, forkfarm.WorkerLostError):
            tolerate("protocol" if "corrupt" in text else "worker_lost")
        elif isinstance(error, queue.Empty) and queue_targeted:
            tolerate("queue_empty")
        elif isinstance(error, queue.Full) and queue_targeted:
            tolerate("queue_full")
        elif (
            isinstance(error, (RuntimeError, ValueError))
            and ("impossible state" in text or "holds no channel" in text)
            and queue_targeted
        ):
            tolerate("queue_corrupt")
        elif isinstance(error, ValueError) and "released too many times" in text and lock_targeted:
            tolerate("lock_released")
        elif isinstance(error, (RuntimeError, ValueError, LookupError, pickle.UnpicklingError)) and any(
            s in text for s in ("could not be received", "not a shared array", "not reachable")
        ):
            tolerate("arena_refused")
        elif isinstance(error, (multiprocessing.TimeoutError, concurrent.futures.TimeoutError, Hang)):
            self.violation("hang", item, f"not finished {self.args.timeout:.0f}s after submission")
        else:
            self.violation(f"error:{type(error).__name__}", item, f"{type(error).__name__}: {error}")

    def wait(self, item: Item) -> Any:
        """The value of item, or raises its exception, or Hang."""
        left = max(0.0, item.deadline - time.monotonic())
        handle = item.handle
        if isinstance(handle, concurrent.futures.Future):
            try:
                return handle.result(left)
            except concurrent.futures.TimeoutError:
                if not handle.done():
                    raise Hang() from None
                raise
        if hasattr(handle, "__next__"):  # Executor.map's iterator
            try:
                return list(handle)
            except concurrent.futures.TimeoutError as error:
                if isinstance(error, forkfarm.TaskTimeoutError):
                    raise
                raise Hang() from None
        try:
            return handle.get(left)
        except multiprocessing.TimeoutError:
            if not handle.ready():
                raise Hang() from None
            raise

    def collect(self, item: Item) -> None:
        self.tasks += 1
        error: BaseException | None = None
        try:
            value = self.wait(item)
        except Exception as exc:  # noqa: BLE001 - classified below
            value, error = None, exc
        if item.check is None:  # hostile: any ending but a hang
            self.hostile[item.target] += 1
            if isinstance(error, Hang):
                self.violation("hang", item, f"hostile {item.target} not finished after {self.args.timeout:.0f}s")
            elif error is None and isinstance(value, tuple) and len(value) >= 2 and value[0] == "hostile":
                self.actions[value[1] or f"{item.target}:no_target"] += 1
            return
        if item.kind == "queue_lock":
            self.parent_get(item)
        if isinstance(error, Hang):
            self.violation("hang", item, f"not finished {self.args.timeout:.0f}s after submission")
        elif error is not None:
            self.classify_error(item, error)
        else:
            try:
                ok = item.check(value)
            except Exception as exc:  # noqa: BLE001 - a value the check cannot read is wrong
                ok = False
                value = f"{value!r:.200} ({exc!r})"
            if ok is True:
                self.correct += 1
            elif ok == "queue_garbage":
                self.tolerate(ok, item, ValueError("garbage"))
            elif ok == "abandoned_without_hostility":
                self.violation(ok, item, "AbandonedLockWarning in the worker")
            elif ok == "lock_timeout":
                if item.lgen in self.targeted_l:
                    self.tolerate("lock_timeout", item, TimeoutError("lock"))
                else:
                    self.violation("lock_timeout_untargeted", item, "acquire timed out on a lock no one targeted")
            else:
                self.violation("wrong_value", item, f"{value!r:.300}")

    # -- queue and lock --

    def message_verdict(self, gen: int, got: Any) -> str:
        """"good": a message put in queue generation gen, intact; "garbage":
        nothing like a message (undecodable bytes, another object), which
        only a queue a hostile task wrote over may hand out; "damaged": a
        message whose tag or bytes are wrong."""
        if not (
            isinstance(got, tuple)
            and len(got) == 3
            and type(got[0]) is int
            and type(got[1]) is int
            and type(got[2]) is bytes
        ):
            return "garbage"
        tag, size, _ = got
        return "good" if tag in self.tags[gen] and got == message(tag, size) else "damaged"

    def check_queue_lock(self, item: Item, x: int, value: Any) -> Any:
        status, got, result, abandoned = value
        if abandoned:
            if self.hostile_submitted == 0:
                return "abandoned_without_hostility"
            self.tolerated["abandoned_lock"] += abandoned
        verdict = self.message_verdict(item.qgen, got)
        if verdict == "garbage" and item.qgen in self.targeted_q:
            return "queue_garbage"
        if verdict != "good":
            return False
        if status == "lock_timeout":
            return "lock_timeout"
        return status == "ok" and result == x * 7

    def parent_op(self, item: Item, op: Callable[[], Any]) -> Any:
        """A parent-side queue operation, its failures classified."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return op()
            except Exception as exc:  # noqa: BLE001 - classified
                self.classify_error(item, exc, "parent_")
                return None
            finally:
                abandoned = sum(issubclass(w.category, forkfarm.AbandonedLockWarning) for w in caught)
                if abandoned and self.hostile_submitted == 0:
                    self.violation("abandoned_without_hostility", item, "AbandonedLockWarning")
                elif abandoned:
                    self.tolerated["abandoned_lock"] += abandoned

    def parent_put(self, item: Item) -> None:
        tag = self.next_tag
        self.next_tag += 1
        self.tags[item.qgen].add(tag)
        size = self.rng.choice((16, 1000, 40000, 100000))
        q = item.queue

        def put() -> bool:
            q.put(message(tag, size), timeout=PARENT_QUEUE_TIMEOUT)
            return True

        item.parent_put = bool(self.parent_op(item, put))

    def parent_get(self, item: Item) -> None:
        if not item.parent_put:
            return
        q = item.queue
        got = self.parent_op(item, lambda: ("got", get_message(q, PARENT_QUEUE_TIMEOUT)))
        if got is None:
            return
        verdict = self.message_verdict(item.qgen, got[1])
        if verdict == "garbage" and item.qgen in self.targeted_q:
            self.tolerated["parent_queue_garbage"] += 1
        elif verdict != "good":
            self.violation("wrong_value", item, f"parent got {got[1]!r:.300} from the queue")

    # -- submitting --

    def submit(self, side: str, runner: Any) -> Item:
        now = time.monotonic()
        deadline = now + self.args.timeout

        def call(fn: Callable[..., Any], *a: Any) -> Any:
            if side == "pool":
                return runner.apply_async(fn, a)
            return runner.submit(fn, *a)

        if self.rng.random() < self.args.rate:
            return self.submit_hostile(side, call, now, deadline)
        kind = self.rng.choices(
            ("square", "big_arg", "big_result", "zeros", "shared_in", "queue_lock", "map"),
            (30, 12, 12, 12, 8, 14, 12),
        )[0]
        item = Item(side, kind, None, now, deadline, qgen=self.qgen, lgen=self.lgen)
        if kind == "square":
            x = self.rng.randrange(-(10**12), 10**12)
            item.handle = call(square, x)
            item.check = lambda v, x=x: v == x * x and type(v) is int
        elif kind == "big_arg":
            n = self.rng.choice(tuple(self.bases))
            array = self.bases[n] ^ np.uint64(self.rng.getrandbits(64))
            expected = digest(array)
            item.handle = call(big_arg, array)
            item.check = lambda v, e=expected: v == e
        elif kind in ("big_result", "zeros"):
            n = self.rng.randrange(MiB // 8, 4 * MiB // 8) if kind == "big_result" else self.rng.randrange(1, 1 << 18)
            seed = self.rng.getrandbits(32)
            item.handle = call(big_result if kind == "big_result" else zeros_filled, n, seed)
            item.check = lambda v, n=n, s=seed: (
                isinstance(v, np.ndarray) and v.dtype == np.uint64 and bool(np.array_equal(v, pattern(n, s)))
            )
        elif kind == "shared_in":
            array, expected = self.rng.choice(self.arrays)
            item.handle = call(shared_in, array)
            item.check = lambda v, e=expected: v == e
        elif kind == "queue_lock":
            item.queue = self.queue
            self.parent_put(item)
            tag = self.next_tag
            self.next_tag += 1
            self.tags[item.qgen].add(tag)
            size = self.rng.choice((16, 1000, 40000, 100000))
            x = self.rng.randrange(10**9)
            item.handle = call(queue_lock, self.queue, self.lock, tag, size, x)
            item.check = lambda v, item=item, x=x: self.check_queue_lock(item, x, v)
        else:
            start = self.rng.randrange(10**6)
            count = self.rng.randrange(1, 400)
            chunksize = self.rng.randrange(1, 40)
            xs = range(start, start + count)
            if side == "pool":
                item.handle = runner.map_async(square, xs, chunksize=chunksize)
            else:
                item.handle = runner.map(square, xs, chunksize=chunksize, timeout=self.args.timeout)
            item.check = lambda v, xs=xs: list(v) == [x * x for x in xs]
        return item

    def submit_hostile(self, side: str, call: Callable[..., Any], now: float, deadline: float) -> Item:
        target = self.rng.choice(self.args.targets)
        mode = self.rng.choice(MODES)
        self.hostile_submitted += 1
        item = Item(side, "hostile", None, now, deadline, target=target)
        item.handle = call(
            hostile, target, mode, self.rng.getrandbits(63), self.queue, self.lock, self.args.truncate_mappings
        )
        # What it may corrupt is not used by later tasks.
        # (A worker inherits the descriptors of the segments that existed
        # when its pool started: ftruncate may reach any of them.)
        if target in ("channel", "segment_header", "ftruncate"):
            self.targeted_q.add(self.qgen)
            self.new_queue()
        if target in ("lock", "segment_header", "ftruncate"):
            self.targeted_l.add(self.lgen)
            self.new_lock()
        if target in ("segment_header", "ftruncate"):
            self.new_arrays()
        return item

    # -- the run --

    def run(self) -> int:
        args = self.args
        window = 3 * args.workers
        pool = forkfarm.Pool(args.workers, timeout=TASK_TIMEOUT)
        executor = forkfarm.Executor(args.workers, timeout=TASK_TIMEOUT)
        sides = {"pool": pool, "executor": executor}
        inflight: dict[str, collections.deque[Item]] = {s: collections.deque() for s in sides}
        self.started = time.monotonic()
        end = self.started + args.seconds
        broken = False
        try:
            while time.monotonic() < end and not broken:
                for side, runner in sides.items():
                    while len(inflight[side]) < window:
                        try:
                            inflight[side].append(self.submit(side, runner))
                        except Exception as exc:  # noqa: BLE001 - a pool that refuses work is broken
                            self.tasks += 1
                            self.violation(f"submit:{type(exc).__name__}", Item(side, "submit", None, time.monotonic(), 0), repr(exc))
                            broken = True
                            break
                oldest = min((q[0] for q in inflight.values() if q), key=lambda i: i.submitted)
                inflight[oldest.side].popleft()
                self.collect(oldest)
            for q in inflight.values():
                while q:
                    self.collect(q.popleft())
        finally:
            inflight.clear()
            self.shutdown(pool, executor)
        return 0

    def shutdown(self, pool: forkfarm.Pool, executor: forkfarm.Executor) -> None:
        def expired(signum: int, frame: Any) -> None:
            raise WatchdogExpired()

        previous = signal.signal(signal.SIGALRM, expired)
        signal.alarm(60)
        try:
            pool.close()
            executor.shutdown(wait=False)
            pool.join()
            executor.shutdown(wait=True)
        except WatchdogExpired:
            self.violations["hang:shutdown"] += 1
            self.details.append("hang: the pools did not close and join within 60 s; terminated")
            signal.alarm(0)
            pool.terminate()
            executor.shutdown(wait=False, cancel_futures=True)
            pool.join()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def warm_up(workers: int) -> None:
    """Starts what the runtime keeps for the process (its loop thread and
    descriptors, the slab of lock slots, an arena chunk) before the leak
    baseline is taken."""
    with forkfarm.Pool(workers) as pool:
        q: forkfarm.Queue[Any] = forkfarm.Queue()
        lock = forkfarm.Lock()
        pool.apply(queue_lock, (q, lock, 0, 16, 1))
        pool.apply(big_arg, (np.ones(MiB // 8),))
        pool.apply(big_result, (MiB // 8, 1))
        pool.apply(zeros_filled, (1000, 1))
        pool.map(square, range(100), chunksize=10)
    executor = forkfarm.Executor(workers)
    executor.submit(square, 3).result()
    executor.shutdown()
    del pool, q, lock, executor


def release_idle() -> None:
    gc.collect()
    _core.trim_arena(0)  # idle arena chunks: one still mapped after this is held
    gc.collect()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2, help="workers of the Pool, and of the Executor")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate", type=float, default=0.02, help="probability that a task is hostile")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a task may take, from submission")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"the hostile targets to draw from, comma-separated (default: all of {','.join(TARGETS)})",
    )
    parser.add_argument(
        "--truncate-mappings",
        action="store_true",
        help="ftruncate targets also include segments reopened through /proc/self/map_files",
    )
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    args.timeout = min(args.timeout, 30.0)
    args.targets = tuple(t for t in args.targets.split(",") if t)
    unknown = set(args.targets) - set(TARGETS)
    if unknown or not args.targets:
        parser.error(f"unknown targets {sorted(unknown)}; choose among {','.join(TARGETS)}")
    # A crash of this process prints its Python stack; one of a worker (a
    # hostile task may well kill its own) stays quiet.
    faulthandler.enable()
    os.register_at_fork(after_in_child=faulthandler.disable)
    print(f"hostile-soak: pid {os.getpid()}, seed {args.seed}, rate {args.rate}, targets {','.join(args.targets)}", file=sys.stderr, flush=True)

    warm_up(args.workers)
    release_idle()
    fds_before, maps_before, shm_before = fd_count(), memfd_mapping_count(), shm_entries()

    soak = Soak(args)
    started = time.monotonic()
    soak.run()
    wall = time.monotonic() - started
    del soak.queue, soak.lock, soak.arrays
    soak.tags.clear()
    release_idle()
    time.sleep(0.2)  # the loop thread closes what the last exits released
    release_idle()
    fds_after, maps_after, shm_after = fd_count(), memfd_mapping_count(), shm_entries()

    leaks = []
    if fds_after > fds_before + FD_MARGIN:
        leaks.append("fds")
    if maps_after > maps_before + MAPPING_MARGIN:
        leaks.append("mappings")
    if shm_after - shm_before:
        leaks.append("dev_shm")

    def counts(c: collections.Counter[str]) -> str:
        return "{" + ",".join(f"{k}={v}" for k, v in sorted(c.items())) + "}"

    bad = sum(soak.violations.values()) > 0 or bool(leaks)
    print(
        f"hostile-soak: seconds={wall:.0f} workers={args.workers} seed={args.seed} rate={args.rate}"
        f" tasks={soak.tasks} correct={soak.correct}"
        f" tolerated={sum(soak.tolerated.values())}{counts(soak.tolerated)}"
        f" hostile={sum(soak.hostile.values())}{counts(soak.hostile)}"
        f" actions={counts(soak.actions)}"
        f" violations={sum(soak.violations.values())}{counts(soak.violations)}"
        f" fds={fds_before}->{fds_after} mappings={maps_before}->{maps_after}"
        f" dev_shm=+{len(shm_after - shm_before)}"
        f" leaks={','.join(leaks) or 'none'} result={'FAIL' if bad else 'OK'}",
        flush=True,
    )
    for line in soak.details:
        print(f"  {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
