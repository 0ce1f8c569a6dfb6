"""Interactive code (issue 7): lambdas, closures and what __main__ defines
after the pool was made travel by value with cloudpickle; importable
functions keep travelling by reference."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

import forkfarm
import helpers
from forkfarm import _protocol

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pool() -> Any:
    with forkfarm.Pool(2) as p:
        yield p


def test_lambdas_and_closures(pool: forkfarm.Pool) -> None:
    offset = 10

    def nested(x: int) -> int:
        return x * offset

    assert pool.map(lambda x: x + offset, range(4)) == [10, 11, 12, 13]
    assert pool.apply(nested, (3,)) == 30
    assert pool.apply(lambda: "called") == "called"
    assert list(pool.imap_unordered(nested, [1], chunksize=1)) == [10]
    assert pool.starmap(lambda a, b: a * b, [(2, 3)]) == [6]


def test_lambdas_among_arguments_and_items(pool: forkfarm.Pool) -> None:
    assert pool.apply(helpers.call_it, (lambda: 5,)) == 5
    assert pool.map(helpers.call_it, [lambda: 1, lambda: 2], chunksize=1) == [1, 2]
    assert pool.map(helpers.call_it, [lambda: 3, lambda: 4], chunksize=2) == [3, 4]


def test_executor(pool: forkfarm.Pool) -> None:
    with forkfarm.Executor(1) as executor:
        assert executor.submit(lambda a: a * 2, 21).result(timeout=10) == 42
        assert list(executor.map(lambda a: -a, [1, 2])) == [-1, -2]


def test_importable_functions_travel_by_reference() -> None:
    snapshot = _protocol.main_snapshot()
    assert _protocol.sendable(helpers.square, snapshot) is helpers.square
    assert isinstance(_protocol.sendable(lambda: 1, snapshot), _protocol.ByValue)
    # Sent by reference: the pickle names the function and holds no code.
    payload = _protocol.encode_call(helpers.square, (2,), {})
    assert b"square" in payload and b"co_code" not in payload and b"cloudpickle" not in payload


def test_what_cannot_travel_is_named(pool: forkfarm.Pool) -> None:
    with pytest.raises(TypeError, match="_thread.lock") as caught:
        pool.apply(len, (threading.Lock(),))
    assert any("cloudpickle" in note for note in getattr(caught.value, "__notes__", []))
    assert pool.apply(len, ([1, 2],)) == 2  # the pool is fine


SCRIPT = textwrap.dedent(
    """
    import forkfarm

    pool = forkfarm.Pool(2)

    def late(x):  # defined after the pool: its workers never saw it
        return x * 3

    class Point:
        def __init__(self, x):
            self.x = x

    def make(x):
        return Point(x)

    print(pool.map(late, range(4)))
    print(pool.apply(late, (5,)))
    print([p.x for p in pool.map(make, [1, 2])])
    with forkfarm.Executor(1) as executor:
        print(executor.submit(late, 2).result())
    pool.close()
    pool.join()
    """
)


def test_main_defined_after_the_pool(tmp_path: Any) -> None:
    script = tmp_path / "notebook_like.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["[0, 3, 6, 9]", "15", "[1, 2]", "6"]


def test_by_value_pickles_load_with_plain_pickle() -> None:
    data = pickle.dumps(_protocol.ByValue(lambda x: x + 1))
    assert pickle.loads(data)(1) == 2


def test_asyncio_run_in_executor() -> None:
    import asyncio

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with forkfarm.Executor(2) as executor:
            calls = [loop.run_in_executor(executor, helpers.square, i) for i in range(10)]
            calls.append(loop.run_in_executor(executor, lambda: -1))
            return list(await asyncio.gather(*calls))

    assert asyncio.run(main()) == [i * i for i in range(10)] + [-1]


@pytest.mark.parametrize("ordered", [True, False])
def test_async_for_over_imap(pool: forkfarm.Pool, ordered: bool) -> None:
    import asyncio

    async def main() -> tuple[list[int], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        got = [x async for x in pool.imap_async_iter(helpers.sleep_then_square, range(8), 1, ordered=ordered)]
        task.cancel()
        return got, ticks

    got, ticks = asyncio.run(main())
    assert (got if ordered else sorted(got)) == [x * x for x in range(8)]
    assert ticks > 0  # the event loop ran while results were awaited
