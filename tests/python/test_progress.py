"""progress= on maps (issue 7): a tqdm bar, or any object with update(n),
counts items, not chunks; off by default."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

import forkfarm
import helpers

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A tqdm-compatible stand-in: records every update."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.updates: list[int] = []
        self.lock = threading.Lock()
        self.closed = False

    def update(self, n: int) -> None:
        with self.lock:
            self.updates.append(n)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def pool() -> Any:
    with forkfarm.Pool(2) as p:
        yield p


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_map_counts_items(pool: forkfarm.Pool, chunksize: Any) -> None:
    bar = Recorder()
    assert pool.map(helpers.square, range(100), chunksize, progress=bar) == [x * x for x in range(100)]
    assert sum(bar.updates) == 100
    if chunksize == 7:
        assert max(bar.updates) == 7  # a chunk's items at once, not 1 per chunk
    assert not bar.closed  # a bar the caller gave stays theirs


def test_starmap_and_async(pool: forkfarm.Pool) -> None:
    bar = Recorder()
    assert pool.starmap(helpers.add, [(i, i) for i in range(30)], progress=bar) == list(range(0, 60, 2))
    assert sum(bar.updates) == 30
    bar = Recorder()
    result = pool.map_async(helpers.square, range(40), 5, progress=bar)
    assert result.get(timeout=10) == [x * x for x in range(40)]
    assert sum(bar.updates) == 40


@pytest.mark.parametrize("ordered", [True, False])
def test_imap(pool: forkfarm.Pool, ordered: bool) -> None:
    bar = Recorder()
    method = pool.imap if ordered else pool.imap_unordered
    got = list(method(helpers.square, iter(range(50)), 4, progress=bar))
    assert sorted(got) == [x * x for x in range(50)]
    assert sum(bar.updates) == 50


def test_executor_map() -> None:
    bar = Recorder()
    with forkfarm.Executor(2) as executor:
        assert list(executor.map(helpers.square, range(20), chunksize=3, progress=bar)) == [
            x * x for x in range(20)
        ]
    assert sum(bar.updates) == 20


def test_tqdm_bar(pool: forkfarm.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """progress=True makes a tqdm.auto bar of the right total, and closes it."""
    import tqdm.auto

    made: list[Any] = []

    class BufferedBar(tqdm.auto.tqdm):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, file=io.StringIO(), **kwargs)
            made.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", BufferedBar)
    threads = threading.active_count()
    assert pool.map(helpers.square, range(64), 8, progress=True) == [x * x for x in range(64)]
    assert made and made[0].total == 64 and made[0].n == 64
    assert made[0].disable or made[0].fp.getvalue()  # it drew itself
    # No monitor thread: it would send the next pools to the fork server.
    assert threading.active_count() == threads


def test_bad_progress(pool: forkfarm.Pool) -> None:
    with pytest.raises(TypeError, match="progress"):
        pool.map(helpers.square, [1], progress="yes")
