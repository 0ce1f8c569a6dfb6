"""The data plane seen from Python: adaptive chunks, a map's function sent
once per worker, messages larger than a ring, and many maps at once."""

from __future__ import annotations

import functools
import itertools
import uuid
from collections import defaultdict
from typing import Any

import pytest

import forkfarm
import helpers


def _generator(n: int) -> Any:
    return (x for x in range(n))


CONTAINERS = {
    "list": lambda n: list(range(n)),
    "tuple": lambda n: tuple(range(n)),
    "range": range,
    "generator": _generator,
}


class TestAdaptiveChunks:
    @pytest.mark.parametrize("kind", sorted(CONTAINERS))
    @pytest.mark.parametrize("n", [0, 1, 7, 1000, 100_003])
    def test_map_matches_serial(self, pool: forkfarm.Pool, kind: str, n: int) -> None:
        assert pool.map(helpers.square, CONTAINERS[kind](n)) == [x * x for x in range(n)]

    @pytest.mark.parametrize("kind", sorted(CONTAINERS))
    def test_imap_in_order(self, pool: forkfarm.Pool, kind: str) -> None:
        n = 20_011
        assert list(pool.imap(helpers.square, CONTAINERS[kind](n))) == [x * x for x in range(n)]

    @pytest.mark.parametrize("kind", sorted(CONTAINERS))
    def test_imap_unordered_complete(self, pool: forkfarm.Pool, kind: str) -> None:
        n = 20_011
        got = list(pool.imap_unordered(helpers.square, CONTAINERS[kind](n)))
        assert sorted(got) == [x * x for x in range(n)]

    def test_starmap_adaptive(self, pool: forkfarm.Pool) -> None:
        pairs = [(i, i + 1) for i in range(5000)]
        assert pool.starmap(helpers.add, pairs) == [a + b for a, b in pairs]

    def test_slow_tasks_spread_over_workers(self, pool: forkfarm.Pool) -> None:
        # Tasks of a few milliseconds stay in chunks of one or two items, so
        # both workers get some of only 40.
        assert pool.map(helpers.sleep_then_identity, range(40)) == list(range(40))
        pids = pool.map(helpers.sleep_then_pid, range(40))
        assert len(set(pids)) == 2

    def test_endless_generator_consumed_lazily(self, pool: forkfarm.Pool) -> None:
        it = pool.imap(helpers.square, itertools.count())
        assert [next(it) for _ in range(5000)] == [x * x for x in range(5000)]

    def test_map_async_finishes_after_close(self) -> None:
        pool = forkfarm.Pool(2)
        try:
            result = pool.map_async(helpers.sleep_then_identity, range(300))
            pool.close()
            assert result.get(timeout=60) == list(range(300))
            pool.join()
        finally:
            pool.terminate()


class TestFunctionSentOnce:
    def test_map_function_unpickled_once_per_worker(self, pool: forkfarm.Pool) -> None:
        token = uuid.uuid4().hex
        func = helpers.CountedAdder(token, 5)
        # A thousand chunks of one map share one copy of the function in
        # each worker.
        assert pool.map(func, range(10_000), chunksize=10) == [x + 5 for x in range(10_000)]
        counts: dict[int, int] = defaultdict(int)
        for pid, count in pool.map(helpers.unpickled_count, [token] * 200, chunksize=1):
            counts[pid] = count
        assert counts, "no worker answered"
        assert all(count <= 1 for count in counts.values()), counts
        assert sum(counts.values()) >= 1

    def test_imap_function_unpickled_once_per_worker(self, pool: forkfarm.Pool) -> None:
        token = uuid.uuid4().hex
        func = helpers.CountedAdder(token, 1)
        assert list(pool.imap(func, range(3000), chunksize=3)) == [x + 1 for x in range(3000)]
        counts = dict(pool.map(helpers.unpickled_count, [token] * 200, chunksize=1))
        assert all(count <= 1 for count in counts.values()), counts

    def test_more_live_maps_than_cached_functions(self, pool: forkfarm.Pool) -> None:
        # Twenty iterators alive at once, consumed in turns, each with its
        # own function: workers evict and reload functions as they go.
        iterators = [
            pool.imap(helpers.CountedAdder(uuid.uuid4().hex, k), range(200), chunksize=7)
            for k in range(20)
        ]
        outputs: list[list[int]] = [[] for _ in iterators]
        for _ in range(200):
            for k, it in enumerate(iterators):
                outputs[k].append(next(it))
        for k, out in enumerate(outputs):
            assert out == [x + k for x in range(200)]

    def test_function_that_cannot_load_fails_its_map_only(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(RuntimeError, match="cannot be loaded here"):
            pool.map(helpers.Unloadable(), range(100))
        assert pool.map(helpers.square, range(10)) == [x * x for x in range(10)]


class TestLargeMessages:
    # The rings hold 1 MiB; larger messages travel in fragments.
    @pytest.mark.parametrize("size", [1 << 18, (1 << 20) + 17, 5 * (1 << 20) + 3])
    def test_map_large_arguments_and_results(self, pool: forkfarm.Pool, size: int) -> None:
        blobs = [helpers.make_bytes(size + i) for i in range(4)]
        assert pool.map(helpers.identity, blobs, chunksize=1) == blobs

    def test_large_and_small_interleaved(self, pool: forkfarm.Pool) -> None:
        items: list[Any] = []
        for i in range(40):
            items.append(helpers.make_bytes(3 * (1 << 20) + i) if i % 5 == 0 else i)
        assert list(pool.imap(helpers.identity, items, chunksize=1)) == items


class TestRunTime:
    def test_task_reports_worker_time(self, pool: forkfarm.Pool) -> None:
        result = pool.apply_async(helpers.sleep_and_return, (0.05, "x"))
        assert result.get(timeout=30) == "x"
        assert result._task is not None
        assert result._task.run_ns() >= 45_000_000


class TestCompactResults:
    """A chunk's list of ints or floats skips pickle; every value and type
    must come back exactly as pickle would bring it."""

    def test_ints(self, pool: forkfarm.Pool) -> None:
        got = pool.map(helpers.square, range(-5000, 5000), chunksize=1000)
        assert got == [x * x for x in range(-5000, 5000)]
        assert all(type(v) is int for v in got)

    def test_extreme_ints(self, pool: forkfarm.Pool) -> None:
        values = [2**63 - 1, -(2**63)] * 100
        assert pool.map(helpers.identity, values, chunksize=200) == values

    def test_big_int_falls_back_to_pickle(self, pool: forkfarm.Pool) -> None:
        got = pool.map(helpers.big_when_last, range(1000), chunksize=1000)
        assert got == [2**70 + x if x == 999 else x for x in range(1000)]

    def test_bools_stay_bools(self, pool: forkfarm.Pool) -> None:
        got = pool.map(helpers.true_when_even, range(500), chunksize=500)
        assert got == [True if x % 2 == 0 else x for x in range(500)]
        assert [type(v) for v in got[:2]] == [bool, int]

    def test_int_subclass_kept(self, pool: forkfarm.Pool) -> None:
        got = pool.map(helpers.my_int, range(200), chunksize=200)
        assert all(type(v) is helpers.MyInt for v in got)

    def test_floats(self, pool: forkfarm.Pool) -> None:
        got = pool.map(helpers.as_float, range(3000), chunksize=3000)
        assert got == [x / 7 for x in range(3000)]
        assert all(type(v) is float for v in got)

    def test_special_floats_bit_exact(self, pool: forkfarm.Pool) -> None:
        import math
        import struct

        got = pool.map(helpers.special_float, range(600), chunksize=600)
        want = [helpers.special_float(x) for x in range(600)]
        assert [struct.pack("<d", v) for v in got] == [struct.pack("<d", v) for v in want]
        assert math.isnan(got[0]) and math.copysign(1.0, got[1]) == -1.0


class TestCallsReuseTheirFunction:
    """apply() and submit() send a module-level function to each worker
    once; each call then carries only its arguments."""

    def test_apply_many_calls(self, pool: forkfarm.Pool) -> None:
        for i in range(300):
            assert pool.apply(helpers.add, (i, 1)) == i + 1
        assert pool.apply(helpers.echo_kwargs, (), {"a": 1}) == {"a": 1}
        assert pool.apply(helpers.args_and_kwargs, (1, 2), {"k": 3}) == ((1, 2), {"k": 3})
        assert helpers.add in pool._engine.encoder._contexts

    def test_more_functions_than_kept(self, pool: forkfarm.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pool._engine.encoder._contexts, "LIMIT", 3)
        funcs = [helpers.square, helpers.identity, helpers.type_name, helpers.length, abs]
        for _ in range(20):
            for f in funcs:
                arg = [1, 2] if f is helpers.length else -3
                assert pool.apply(f, (arg,)) == f(arg)
        assert len(pool._engine.encoder._contexts) <= 3

    def test_other_callables_travel_with_each_call(self, pool: forkfarm.Pool) -> None:
        method = "abc".upper
        partial = functools.partial(helpers.add, 10)
        assert pool.apply(method) == "ABC"
        assert pool.apply(partial, (5,)) == 15
        assert method not in pool._engine.encoder._contexts
        assert partial not in pool._engine.encoder._contexts

    def test_executor_submit(self) -> None:
        with forkfarm.Executor(max_workers=2) as ex:
            futures = [ex.submit(helpers.add, i, i) for i in range(200)]
            assert [f.result(30) for f in futures] == [2 * i for i in range(200)]
            assert ex.submit(helpers.raise_value_error, "boom").exception(30).args == ("boom",)
