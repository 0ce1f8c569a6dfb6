"""How a map's items become tasks: cut into chunks, fixed or adaptive,
and encoded by the pool's encoder. Pool's map results and iterators
(_results.py) drive it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._backend import Task
from ._engine import Engine, TaskLimits

#: Worker time an adaptive chunk aims at: long enough that the cost of a
#: round trip (tens of microseconds) is lost in it, short enough that the
#: workers finish together and results flow back steadily.
_TARGET_CHUNK_SECONDS = 0.005
#: How much an adaptive chunk may grow over the largest one so far, so that
#: an estimate made on tiny chunks (dominated by fixed costs) is corrected
#: in a few steps rather than trusted at once.
_CHUNK_GROWTH = 8
#: Chunks in flight per worker when they are fed lazily.
CHUNKS_PER_WORKER = 4


class ChunkFeed:
    """Cuts the items of a map into chunks and submits them.

    With a chunksize, every chunk has that size. Without one (``None``), the
    size adapts as joblib's ``batch_size="auto"`` does: from the time the
    workers report for each chunk, it aims at :data:`_TARGET_CHUNK_SECONDS`
    per chunk, starting from one item and growing at most
    :data:`_CHUNK_GROWTH`-fold per step; for inputs of known length it never
    takes more than a fair share of what is left (a quarter of it per worker),
    so that tiny tasks travel in large chunks while long or uneven tasks are
    spread one by one.

    Lists, tuples and ranges are sliced (a range slice travels as three
    numbers); other iterables are consumed as chunks are cut.
    """

    def __init__(
        self,
        engine: Engine,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
        limits: TaskLimits,
    ) -> None:
        self.engine = engine
        self.encoder = engine.encoder
        self.limits = limits
        self.context = engine.function(func, star)
        self.items: list[Any] | tuple[Any, ...] | range | None = None
        self.iterator: Iterator[Any] | None = None
        self.length: int | None = None
        if isinstance(iterable, (list, tuple, range)):
            self.items = iterable
            self.length = len(iterable)
        else:
            self.iterator = iter(iterable)
        self.fixed = chunksize
        self.position = 0
        self.largest = 1
        self.seconds_per_item: float | None = None
        self.recent: list[tuple[int, float]] = []  # (items, seconds per item)
        self.exhausted = self.length == 0
        # What the input iterable raised, once it has: the items before it
        # are still delivered, as multiprocessing does.
        self.failure: Exception | None = None
        # Within one map a buffer that many items carry is copied once.
        self.memo = self.encoder.memo()

    def _size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.seconds_per_item is None:
            return 1
        target = max(1, int(_TARGET_CHUNK_SECONDS / max(self.seconds_per_item, 1e-9)))
        size = min(target, self.largest * _CHUNK_GROWTH)
        if self.length is not None:
            # The tail shrinks so the workers finish together, but not below
            # an eighth of the target: tinier chunks would cost more in
            # round trips than they save in balance.
            left = self.length - self.position
            share = -(-left // (CHUNKS_PER_WORKER * self.engine.workers))
            size = min(size, max(1, share, target // _CHUNK_GROWTH))
        self.largest = max(self.largest, size)
        return size

    def next_chunk(self) -> tuple[Any, int, int] | None:
        """The next chunk as (payload, offset of its first item, count), or
        None once the items are exhausted."""
        if self.exhausted:
            return None
        size = self._size()
        start = self.position
        if self.items is not None:
            assert self.length is not None
            chunk: Any = self.items[start : start + size]
            count = len(chunk)
            if count < 64 and isinstance(chunk, range):
                chunk = list(chunk)  # a short list pickles faster than a range
            self.exhausted = start + count >= self.length
        else:
            assert self.iterator is not None
            try:
                chunk = list(itertools.islice(self.iterator, size))
            except Exception as exc:  # noqa: BLE001 - raised to the consumer in its place
                # The chunk being cut is lost with the error, as in
                # multiprocessing, whose chunks are cut the same way.
                self.failure = exc
                self.exhausted = True
                return None
            count = len(chunk)
            if count < size:
                self.exhausted = True
            if count == 0:
                return None
        self.position = start + count
        return self.encoder.items(chunk, self.memo), start, count

    def cut_all(self) -> tuple[list[Any], list[int]]:
        """Every chunk left of a fixed chunksize over a sequence, at once:
        (payloads, item counts)."""
        assert self.fixed is not None and self.items is not None and self.length is not None
        items, size, start, length = self.items, self.fixed, self.position, self.length
        if size == 1:
            payloads = self.encoder.singletons(items[start:])
            counts = [1] * len(payloads)
        else:
            starts = range(start, length, size)
            memo = self.memo
            payloads = [self.encoder.items(items[i : i + size], memo) for i in starts]
            counts = [min(size, length - i) for i in starts]
        self.position = length
        self.exhausted = True
        return payloads, counts

    def record(self, task: Task, count: int) -> None:
        """Learns from a finished chunk how long an item takes."""
        if self.fixed is not None or count == 0:
            return
        ns = task.run_ns()
        if ns <= 0:
            return
        # The median over the recent chunks of the larger sizes: small
        # chunks are blurred by the fixed cost of a chunk, and a worker that
        # lost its core for a while (time is measured by the clock) reports
        # an outlier the median ignores.
        recent = self.recent
        recent.append((count, ns * 1e-9 / count))
        if len(recent) > 16:
            del recent[0]
        largest = max(c for c, _ in recent)
        rates = sorted(r for c, r in recent if c * 8 >= largest)
        self.seconds_per_item = rates[len(rates) // 2]
