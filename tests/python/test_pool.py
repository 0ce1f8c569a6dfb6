"""Tests for forkfarm.Pool, which mirrors multiprocessing.Pool."""

from __future__ import annotations

import multiprocessing  # only to compare exception classes
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import forkfarm
import helpers

pytestmark = pytest.mark.timeout(60)

# Upper bound for every blocking get(); a hang shows up as a TimeoutError
# with a traceback instead of as a pytest-timeout kill.
T = 30


def gen(n: int) -> Iterator[int]:
    """A generator: an iterable without __len__."""
    yield from range(n)


# ==========================================================================
# Construction and argument validation
# ==========================================================================


class TestConstruction:
    def test_default_processes(self) -> None:
        with forkfarm.Pool() as p:
            assert p.map(helpers.square, range(10)) == [x * x for x in range(10)]

    def test_keyword_arguments_and_context_none(self) -> None:
        with forkfarm.Pool(
            processes=2, initializer=None, initargs=(), maxtasksperchild=None, context=None
        ) as p:
            assert p.apply(helpers.add, (2, 3)) == 5

    def test_more_processes_than_cores(self) -> None:
        with forkfarm.Pool(processes=4) as p:
            assert p.map(helpers.square, range(40)) == [x * x for x in range(40)]

    @pytest.mark.parametrize("processes", [0, -1])
    def test_processes_below_one(self, processes: int) -> None:
        with pytest.raises(ValueError):
            forkfarm.Pool(processes=processes)

    @pytest.mark.parametrize("initializer", [42, "not callable", (1, 2)])
    def test_non_callable_initializer(self, initializer: Any) -> None:
        with pytest.raises(TypeError):
            forkfarm.Pool(processes=2, initializer=initializer)

    @pytest.mark.parametrize("maxtasks", [0, -1])
    def test_maxtasksperchild_not_positive(self, maxtasks: int) -> None:
        with pytest.raises(ValueError):
            forkfarm.Pool(processes=2, maxtasksperchild=maxtasks)

    @pytest.mark.parametrize("maxtasks", [1.5, "3"])
    def test_maxtasksperchild_not_int(self, maxtasks: Any) -> None:
        with pytest.raises((ValueError, TypeError)):
            forkfarm.Pool(processes=2, maxtasksperchild=maxtasks)


class TestArgumentValidation:
    def test_non_callable_func_apply(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(TypeError):
            pool.apply(42)

    @pytest.mark.parametrize(
        "call",
        [
            lambda p: p.apply_async(42),
            lambda p: p.map_async(42, [1, 2]),
            lambda p: p.imap(42, [1, 2]),
            lambda p: p.imap_unordered(42, [1, 2]),
            lambda p: p.starmap_async(42, [(1, 2)]),
        ],
        ids=["apply_async", "map_async", "imap", "imap_unordered", "starmap_async"],
    )
    def test_non_callable_func_raises_at_call(self, pool: forkfarm.Pool, call: Any) -> None:
        with pytest.raises(TypeError):
            call(pool)

    def test_non_callable_func_map(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(TypeError):
            pool.map("nope", [1, 2])

    @pytest.mark.parametrize("chunksize", [0, -1])
    def test_bad_chunksize_map(self, pool: forkfarm.Pool, chunksize: int) -> None:
        with pytest.raises(ValueError):
            pool.map(helpers.square, range(10), chunksize=chunksize)

    @pytest.mark.parametrize("chunksize", [0, -1])
    def test_bad_chunksize_map_async(self, pool: forkfarm.Pool, chunksize: int) -> None:
        # Raised either by the call itself or by get(); never a silent result.
        with pytest.raises(ValueError):
            pool.map_async(helpers.square, range(10), chunksize=chunksize).get(T)

    @pytest.mark.parametrize("chunksize", [0, -1])
    def test_bad_chunksize_starmap(self, pool: forkfarm.Pool, chunksize: int) -> None:
        with pytest.raises(ValueError):
            pool.starmap(helpers.add, [(1, 2)] * 5, chunksize=chunksize)

    @pytest.mark.parametrize("method", ["imap", "imap_unordered"])
    @pytest.mark.parametrize("chunksize", [0, -1])
    def test_bad_chunksize_imap(self, pool: forkfarm.Pool, method: str, chunksize: int) -> None:
        with pytest.raises(ValueError):
            list(getattr(pool, method)(helpers.square, range(10), chunksize=chunksize))


# ==========================================================================
# apply / apply_async / AsyncResult
# ==========================================================================


class TestApply:
    def test_apply(self, pool: forkfarm.Pool) -> None:
        assert pool.apply(helpers.square, (7,)) == 49

    def test_apply_kwds(self, pool: forkfarm.Pool) -> None:
        assert pool.apply(helpers.args_and_kwargs, (1, 2), {"a": 3}) == ((1, 2), {"a": 3})
        assert pool.apply(helpers.echo_kwargs, kwds={"x": 1}) == {"x": 1}

    def test_apply_runs_in_a_worker(self, pool: forkfarm.Pool) -> None:
        assert pool.apply(helpers.getpid) != os.getpid()

    def test_apply_async_get(self, pool: forkfarm.Pool) -> None:
        results = [pool.apply_async(helpers.add, (i, 1)) for i in range(20)]
        assert [r.get(T) for r in results] == [i + 1 for i in range(20)]

    def test_apply_async_kwds(self, pool: forkfarm.Pool) -> None:
        r = pool.apply_async(helpers.args_and_kwargs, (1,), {"k": "v"})
        assert r.get(T) == ((1,), {"k": "v"})

    def test_async_result_lifecycle(self, pool: forkfarm.Pool) -> None:
        r = pool.apply_async(helpers.sleep_and_return, (1.5, "done"))
        assert not r.ready()
        with pytest.raises(ValueError):
            r.successful()
        t0 = time.monotonic()
        assert r.wait(0.1) is None
        assert time.monotonic() - t0 < 1.4
        assert not r.ready()
        assert r.get(T) == "done"
        assert r.ready()
        assert r.successful() is True

    def test_wait_without_timeout(self, pool: forkfarm.Pool) -> None:
        r = pool.apply_async(helpers.sleep_and_return, (0.2, 5))
        r.wait()
        assert r.ready()
        assert r.get(0) == 5

    def test_successful_false_after_error(self, pool: forkfarm.Pool) -> None:
        r = pool.apply_async(helpers.raise_value_error, ("bad",))
        r.wait(T)
        assert r.ready()
        assert r.successful() is False

    def test_get_timeout(self, pool: forkfarm.Pool) -> None:
        r = pool.apply_async(helpers.sleep_and_return, (2, "late"))
        t0 = time.monotonic()
        with pytest.raises(forkfarm.TimeoutError):
            r.get(timeout=0.1)
        assert time.monotonic() - t0 < 1.5
        # The result is still delivered afterwards.
        assert r.get(T) == "late"

    def test_get_timeout_is_multiprocessing_timeout(self, pool: forkfarm.Pool) -> None:
        r = pool.apply_async(helpers.sleep_and_return, (2, None))
        with pytest.raises(multiprocessing.TimeoutError):
            r.get(timeout=0.05)
        r.get(T)


class TestTimeoutErrorClass:
    def test_same_class_as_multiprocessing(self) -> None:
        assert forkfarm.TimeoutError is multiprocessing.TimeoutError


# ==========================================================================
# Callbacks
# ==========================================================================


class TestCallbacks:
    def test_apply_async_callback_before_get_returns(self, pool: forkfarm.Pool) -> None:
        seen: list[Any] = []
        r = pool.apply_async(helpers.square, (6,), callback=seen.append)
        assert r.get(T) == 36
        assert seen == [36]

    def test_apply_async_callback_runs_in_parent(self, pool: forkfarm.Pool) -> None:
        pids: list[int] = []
        r = pool.apply_async(helpers.square, (2,), callback=lambda _: pids.append(os.getpid()))
        r.get(T)
        assert pids == [os.getpid()]

    def test_apply_async_error_callback(self, pool: forkfarm.Pool) -> None:
        errors: list[BaseException] = []
        ok: list[Any] = []
        r = pool.apply_async(
            helpers.raise_value_error, ("boom",), callback=ok.append, error_callback=errors.append
        )
        with pytest.raises(ValueError):
            r.get(T)
        assert ok == []
        assert len(errors) == 1
        assert isinstance(errors[0], ValueError)
        assert errors[0].args == ("boom",)

    def test_error_callback_not_called_on_success(self, pool: forkfarm.Pool) -> None:
        errors: list[BaseException] = []
        r = pool.apply_async(helpers.square, (3,), error_callback=errors.append)
        assert r.get(T) == 9
        assert errors == []

    def test_map_async_callback_gets_full_list(self, pool: forkfarm.Pool) -> None:
        seen: list[Any] = []
        r = pool.map_async(helpers.square, range(50), chunksize=3, callback=seen.append)
        expected = [x * x for x in range(50)]
        assert r.get(T) == expected
        assert seen == [expected]

    def test_map_async_error_callback(self, pool: forkfarm.Pool) -> None:
        errors: list[BaseException] = []
        ok: list[Any] = []
        r = pool.map_async(
            helpers.fail_on_odd, [0, 2, 3, 4], callback=ok.append, error_callback=errors.append
        )
        with pytest.raises(ValueError):
            r.get(T)
        assert ok == []
        assert len(errors) == 1
        assert isinstance(errors[0], ValueError) and errors[0].args == ("odd: 3",)

    def test_starmap_async_callbacks(self, pool: forkfarm.Pool) -> None:
        seen: list[Any] = []
        errors: list[BaseException] = []
        r = pool.starmap_async(
            helpers.fail_at, [(x, 5) for x in range(10)], callback=seen.append,
            error_callback=errors.append,
        )
        with pytest.raises(ValueError) as excinfo:
            r.get(T)
        assert excinfo.value.args == (5,)
        assert seen == []
        assert len(errors) == 1 and errors[0].args == (5,)

        r = pool.starmap_async(helpers.add, [(1, 2), (3, 4)], callback=seen.append)
        assert r.get(T) == [3, 7]
        assert seen == [[3, 7]]


# ==========================================================================
# map / starmap / imap / imap_unordered
# ==========================================================================


N = 10_000


class TestMap:
    @pytest.mark.parametrize("chunksize", [1, None])
    def test_map_10k(self, pool: forkfarm.Pool, chunksize: int | None) -> None:
        kwargs = {} if chunksize is None else {"chunksize": chunksize}
        assert pool.map(helpers.square, range(N), **kwargs) == [x * x for x in range(N)]

    @pytest.mark.parametrize("chunksize", [1, 7, 1000, 20_000])
    def test_map_chunksizes(self, pool: forkfarm.Pool, chunksize: int) -> None:
        assert pool.map(helpers.square, range(1234), chunksize=chunksize) == [
            x * x for x in range(1234)
        ]

    def test_map_async(self, pool: forkfarm.Pool) -> None:
        r = pool.map_async(helpers.square, range(100))
        assert r.get(T) == [x * x for x in range(100)]
        assert r.ready() and r.successful()

    def test_map_list_input(self, pool: forkfarm.Pool) -> None:
        assert pool.map(helpers.identity, ["a", "b", "c"]) == ["a", "b", "c"]

    def test_map_generator(self, pool: forkfarm.Pool) -> None:
        assert pool.map(helpers.square, gen(500)) == [x * x for x in range(500)]

    def test_map_async_generator(self, pool: forkfarm.Pool) -> None:
        assert pool.map_async(helpers.square, gen(50)).get(T) == [x * x for x in range(50)]

    def test_map_empty(self, pool: forkfarm.Pool) -> None:
        assert pool.map(helpers.square, []) == []
        assert pool.map(helpers.square, gen(0)) == []

    def test_map_async_empty(self, pool: forkfarm.Pool) -> None:
        r = pool.map_async(helpers.square, [])
        assert r.get(T) == []
        assert r.ready() and r.successful()

    def test_map_uses_several_workers(self, pool: forkfarm.Pool, tmp_path: Path) -> None:
        # Two tasks that can only finish if they run at the same time.
        pids = pool.starmap(
            helpers.rendezvous, [(str(tmp_path), 2, "a"), (str(tmp_path), 2, "b")], chunksize=1
        )
        assert len(set(pids)) == 2
        assert os.getpid() not in pids


class TestStarmap:
    def test_starmap(self, pool: forkfarm.Pool) -> None:
        args = [(i, i * 10) for i in range(100)]
        assert pool.starmap(helpers.add, args) == [a + b for a, b in args]

    def test_starmap_three_args_chunksize(self, pool: forkfarm.Pool) -> None:
        args = [(i, i, i) for i in range(300)]
        assert pool.starmap(helpers.add3, args, chunksize=7) == [3 * i for i in range(300)]

    def test_starmap_async(self, pool: forkfarm.Pool) -> None:
        r = pool.starmap_async(helpers.add, [("a", "b"), ("c", "d")])
        assert r.get(T) == ["ab", "cd"]

    def test_starmap_generator(self, pool: forkfarm.Pool) -> None:
        args = ((i, 1) for i in range(100))
        assert pool.starmap(helpers.add, args) == [i + 1 for i in range(100)]

    def test_starmap_empty(self, pool: forkfarm.Pool) -> None:
        assert pool.starmap(helpers.add, []) == []


class TestImap:
    @pytest.mark.parametrize("chunksize", [1, None])
    def test_imap_10k(self, pool: forkfarm.Pool, chunksize: int | None) -> None:
        kwargs = {} if chunksize is None else {"chunksize": chunksize}
        assert list(pool.imap(helpers.square, range(N), **kwargs)) == [x * x for x in range(N)]

    @pytest.mark.parametrize("chunksize", [1, None, 13])
    def test_imap_unordered_10k(self, pool: forkfarm.Pool, chunksize: int | None) -> None:
        kwargs = {} if chunksize is None else {"chunksize": chunksize}
        out = list(pool.imap_unordered(helpers.square, range(N), **kwargs))
        assert sorted(out) == [x * x for x in range(N)]

    def test_imap_chunksize(self, pool: forkfarm.Pool) -> None:
        assert list(pool.imap(helpers.square, range(1000), chunksize=7)) == [
            x * x for x in range(1000)
        ]

    def test_imap_generator(self, pool: forkfarm.Pool) -> None:
        assert list(pool.imap(helpers.square, gen(300))) == [x * x for x in range(300)]

    def test_imap_unordered_generator(self, pool: forkfarm.Pool) -> None:
        assert sorted(pool.imap_unordered(helpers.square, gen(300))) == [
            x * x for x in range(300)
        ]

    def test_imap_unordered_duplicates_kept(self, pool: forkfarm.Pool) -> None:
        data = [1, 1, 2, 2, 2, 3]
        assert sorted(pool.imap_unordered(helpers.identity, data)) == data

    def test_imap_empty(self, pool: forkfarm.Pool) -> None:
        assert list(pool.imap(helpers.square, [])) == []
        assert list(pool.imap(helpers.square, gen(0))) == []

    def test_imap_unordered_empty(self, pool: forkfarm.Pool) -> None:
        assert list(pool.imap_unordered(helpers.square, [])) == []

    def test_imap_iterator_protocol(self, pool: forkfarm.Pool) -> None:
        it = pool.imap(helpers.square, range(3))
        assert iter(it) is it
        assert next(it) == 0
        assert it.next(T) == 1
        assert it.next(timeout=T) == 4
        with pytest.raises(StopIteration):
            it.next(T)

    @pytest.mark.parametrize("method", ["imap", "imap_unordered"])
    def test_next_timeout(self, pool: forkfarm.Pool, method: str) -> None:
        it = getattr(pool, method)(helpers.sleep_and_return, [2])
        t0 = time.monotonic()
        with pytest.raises(forkfarm.TimeoutError):
            it.next(timeout=0.1)
        assert time.monotonic() - t0 < 1.5
        # Still usable after the timeout.
        assert it.next(T) is None
        with pytest.raises(StopIteration):
            it.next(T)

    def test_next_timeout_is_multiprocessing_timeout(self, pool: forkfarm.Pool) -> None:
        it = pool.imap(helpers.sleep_and_return, [2])
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.05)
        assert list(it) == [None]


# ==========================================================================
# Exceptions raised by tasks
# ==========================================================================


class TestTaskExceptions:
    def test_apply_same_type_and_args(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(ValueError) as excinfo:
            pool.apply(helpers.raise_value_error, ("bad value",))
        assert type(excinfo.value) is ValueError
        assert excinfo.value.args == ("bad value",)

    def test_custom_exception_type(self, pool: forkfarm.Pool) -> None:
        r = pool.apply_async(helpers.raise_custom_error, (17, "detail"))
        with pytest.raises(helpers.CustomError) as excinfo:
            r.get(T)
        assert type(excinfo.value) is helpers.CustomError
        assert excinfo.value.args == (17, "detail")

    def test_multi_arg_builtin_exception(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(KeyError) as excinfo:
            pool.apply(helpers.raise_key_error_two_args)
        assert excinfo.value.args == ("missing", 7)

    def test_remote_traceback_in_cause(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(helpers.CustomError) as excinfo:
            pool.apply(helpers.raise_custom_error, (1, "x"))
        cause = excinfo.value.__cause__
        assert cause is not None
        text = str(cause)
        assert "raise_custom_error" in text
        assert "CustomError" in text

    def test_map_raises_first_failing_chunk(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(ValueError) as excinfo:
            pool.map(helpers.fail_at_3_and_late_7, range(10), chunksize=1)
        assert excinfo.value.args == (3,)
        assert "fail_at_3_and_late_7" in str(excinfo.value.__cause__)

    def test_map_async_exception(self, pool: forkfarm.Pool) -> None:
        r = pool.map_async(helpers.fail_on_odd, range(6), chunksize=2)
        with pytest.raises(ValueError) as excinfo:
            r.get(T)
        assert excinfo.value.args[0].startswith("odd: ")
        assert r.ready() and not r.successful()

    def test_starmap_exception(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(ValueError) as excinfo:
            pool.starmap(helpers.fail_at, [(x, 4) for x in range(8)])
        assert excinfo.value.args == (4,)

    def test_imap_yields_until_failure(self, pool: forkfarm.Pool) -> None:
        it = pool.imap(helpers.fail_on_odd, [0, 2, 4, 5, 6], chunksize=1)
        assert [it.next(T) for _ in range(3)] == [0, 2, 4]
        with pytest.raises(ValueError) as excinfo:
            it.next(T)
        assert excinfo.value.args == ("odd: 5",)
        assert "fail_on_odd" in str(excinfo.value.__cause__)

    def test_imap_unordered_raises(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(ValueError):
            list(pool.imap_unordered(helpers.fail_on_odd, range(10)))

    def test_pool_usable_after_task_exception(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(ValueError):
            pool.apply(helpers.raise_value_error, ("x",))
        assert pool.map(helpers.square, range(10)) == [x * x for x in range(10)]


# ==========================================================================
# Data round trips
# ==========================================================================

ROUND_TRIP_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**64 + 1,
    -(2**200),
    1.5,
    -0.25,
    1e308,
    float("inf"),
    "",
    "plain ascii",
    "héllo wörld ✓ 𝄞",
    b"",
    bytes(range(256)),
    (),
    (1, (2, (3, "four"))),
    [],
    [1, [2, [3, [4]]], "x"],
    {},
    {"a": 1, "b": [1, 2, {"c": (3, 4)}], 5: None, (1, 2): b"k"},
    [{"k": [(1, 2.5, "s", b"b", None)]}],
]


class TestRoundTrip:
    @pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=repr)
    def test_value_round_trip(self, pool: forkfarm.Pool, value: Any) -> None:
        out = pool.apply(helpers.identity, (value,))
        assert out == value
        assert type(out) is type(value)
        # The worker saw the right type too.
        assert pool.apply(helpers.type_name, (value,)) == type(value).__name__

    def test_round_trip_via_map(self, pool: forkfarm.Pool) -> None:
        assert pool.map(helpers.identity, ROUND_TRIP_VALUES, chunksize=3) == ROUND_TRIP_VALUES

    def test_large_result(self, pool: forkfarm.Pool) -> None:
        n = 10 * 1024 * 1024
        out = pool.apply(helpers.make_bytes, (n,))
        assert type(out) is bytes
        assert out == helpers.make_bytes(n)

    def test_large_argument(self, pool: forkfarm.Pool) -> None:
        data = helpers.make_bytes(10 * 1024 * 1024 + 3)
        assert pool.apply(helpers.length, (data,)) == len(data)
        assert pool.apply(helpers.identity, (data,)) == data


# ==========================================================================
# Initializer, module state, maxtasksperchild
# ==========================================================================


class TestInitializer:
    def test_initializer_sets_worker_global(self) -> None:
        with forkfarm.Pool(
            processes=2, initializer=helpers.set_worker_value, initargs=("hello",)
        ) as p:
            assert p.map(helpers.get_worker_value, range(20), chunksize=1) == ["hello"] * 20
        # The parent's copy is untouched.
        assert helpers.WORKER_VALUE is None

    def test_initargs_multiple(self) -> None:
        with forkfarm.Pool(
            processes=2, initializer=helpers.set_worker_value_pair, initargs=(1, [2, 3])
        ) as p:
            assert p.apply(helpers.get_worker_value) == (1, [2, 3])

    def test_initializer_runs_once_per_worker(self) -> None:
        with forkfarm.Pool(
            processes=2, initializer=helpers.set_worker_value, initargs=(0,)
        ) as p:
            out = p.map(helpers.get_init_calls_and_pid, range(40), chunksize=1)
        assert {calls for calls, _ in out} == {1}
        assert len({pid for _, pid in out}) <= 2

    def test_initializer_with_maxtasksperchild(self) -> None:
        with forkfarm.Pool(
            processes=2,
            initializer=helpers.set_worker_value,
            initargs=("fresh",),
            maxtasksperchild=1,
        ) as p:
            out = p.map(helpers.get_worker_value, range(8), chunksize=1)
        assert out == ["fresh"] * 8

    def test_failing_initializer_does_not_hang(self) -> None:
        with forkfarm.Pool(processes=2, initializer=helpers.failing_initializer) as p:
            t0 = time.monotonic()
            # apply_async() raises if the pool is already broken; else get().
            with pytest.raises(forkfarm.InitializerError) as excinfo:
                p.apply_async(helpers.square, (3,)).get(timeout=10)
            assert not isinstance(excinfo.value, forkfarm.TimeoutError), "task hung"
            assert time.monotonic() - t0 < 10


class TestModuleState:
    def test_workers_see_state_at_pool_creation(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(helpers, "MODULE_STATE", {"set": "before pool"})
        with forkfarm.Pool(processes=2) as p:
            out = p.map(helpers.get_module_state, range(4), chunksize=1)
        assert out == [{"set": "before pool"}] * 4


class TestMaxTasksPerChild:
    @pytest.mark.parametrize("maxtasks", [1, 2])
    def test_workers_replaced(self, maxtasks: int) -> None:
        with forkfarm.Pool(processes=2, maxtasksperchild=maxtasks) as p:
            out = p.map(helpers.square_and_pid, range(20), chunksize=1)
        assert [sq for sq, _ in out] == [x * x for x in range(20)]
        pids = {pid for _, pid in out}
        assert len(pids) > 2
        assert os.getpid() not in pids

    def test_apply_async_with_maxtasksperchild(self) -> None:
        with forkfarm.Pool(processes=2, maxtasksperchild=1) as p:
            rs = [p.apply_async(helpers.square_and_pid, (i,)) for i in range(10)]
            out = [r.get(T) for r in rs]
        assert [sq for sq, _ in out] == [i * i for i in range(10)]
        assert len({pid for _, pid in out}) > 2

    def test_without_maxtasksperchild_workers_reused(self, pool: forkfarm.Pool) -> None:
        out = pool.map(helpers.square_and_pid, range(20), chunksize=1)
        assert len({pid for _, pid in out}) <= 2


# ==========================================================================
# Lifecycle: close / terminate / join / context manager
# ==========================================================================

AFTER_STOP_CALLS = [
    ("apply", lambda p: p.apply(helpers.square, (1,))),
    ("apply_async", lambda p: p.apply_async(helpers.square, (1,))),
    ("map", lambda p: p.map(helpers.square, [1])),
    ("map_async", lambda p: p.map_async(helpers.square, [1])),
    ("starmap", lambda p: p.starmap(helpers.add, [(1, 2)])),
    ("starmap_async", lambda p: p.starmap_async(helpers.add, [(1, 2)])),
    ("imap", lambda p: list(p.imap(helpers.square, [1]))),
    ("imap_unordered", lambda p: list(p.imap_unordered(helpers.square, [1]))),
]


class TestLifecycle:
    @pytest.mark.parametrize("name,call", AFTER_STOP_CALLS, ids=[n for n, _ in AFTER_STOP_CALLS])
    def test_use_after_close(self, name: str, call: Any) -> None:
        p = forkfarm.Pool(processes=2)
        try:
            p.close()
            with pytest.raises(ValueError):
                call(p)
        finally:
            p.terminate()
            p.join()

    @pytest.mark.parametrize("name,call", AFTER_STOP_CALLS, ids=[n for n, _ in AFTER_STOP_CALLS])
    def test_use_after_terminate(self, name: str, call: Any) -> None:
        p = forkfarm.Pool(processes=2)
        p.terminate()
        p.join()
        with pytest.raises(ValueError):
            call(p)

    def test_join_while_running(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(ValueError):
            pool.join()
        # The failed join did not break the pool.
        assert pool.apply(helpers.square, (4,)) == 16

    def test_close_join_finishes_pending_work(self) -> None:
        p = forkfarm.Pool(processes=2)
        try:
            rs = [p.apply_async(helpers.sleep_and_return, (0.2, i)) for i in range(6)]
            m = p.map_async(helpers.square, range(100))
            p.close()
            p.join()
            assert all(r.ready() for r in rs)
            assert [r.get(0) for r in rs] == list(range(6))
            assert m.ready() and m.get(0) == [x * x for x in range(100)]
        finally:
            p.terminate()
            p.join()

    def test_terminate_does_not_wait_for_tasks(self) -> None:
        p = forkfarm.Pool(processes=2)
        rs = [p.apply_async(helpers.sleep_and_return, (30, i)) for i in range(4)]
        time.sleep(0.2)
        t0 = time.monotonic()
        p.terminate()
        p.join()
        assert time.monotonic() - t0 < 10
        assert not any(r.ready() and r.successful() for r in rs)

    def test_close_then_terminate(self) -> None:
        p = forkfarm.Pool(processes=2)
        p.close()
        p.terminate()
        p.join()
        with pytest.raises(ValueError):
            p.apply(helpers.square, (1,))

    def test_context_manager_returns_pool(self) -> None:
        pool = forkfarm.Pool(processes=2)
        with pool as p:
            assert p is pool
            assert p.apply(helpers.square, (5,)) == 25
        with pytest.raises(ValueError):
            p.apply(helpers.square, (1,))

    def test_context_exit_terminates(self) -> None:
        t0 = time.monotonic()
        with forkfarm.Pool(processes=2) as p:
            r = p.apply_async(helpers.sleep_and_return, (30, "never"))
            time.sleep(0.2)
        assert time.monotonic() - t0 < 10
        assert not (r.ready() and r.successful())

    def test_context_exit_on_exception(self) -> None:
        with pytest.raises(RuntimeError, match="inside"):
            with forkfarm.Pool(processes=2) as p:
                p.apply_async(helpers.sleep_and_return, (30, None))
                raise RuntimeError("inside")
        with pytest.raises(ValueError):
            p.apply(helpers.square, (1,))

    def test_submit_from_many_threads(self, pool: forkfarm.Pool) -> None:
        out: dict[int, list[int]] = {}

        def submit(k: int) -> None:
            rs = [pool.apply_async(helpers.add, (k, i)) for i in range(50)]
            out[k] = [r.get(T) for r in rs]

        threads = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T)
        assert out == {k: [k + i for i in range(50)] for k in range(4)}


# ==========================================================================
# Worker death
# ==========================================================================


class TestWorkerDeath:
    def test_worker_lost_error_class(self) -> None:
        assert issubclass(forkfarm.WorkerLostError, BrokenProcessPool)

    @pytest.mark.timeout(30)
    def test_sigkill(self, pool: forkfarm.Pool, tmp_path: Path) -> None:
        pidfile = tmp_path / "pid"
        r = pool.apply_async(helpers.die_by_sigkill, (str(pidfile),))
        with pytest.raises(forkfarm.WorkerLostError) as excinfo:
            r.get(20)
        err = excinfo.value
        assert isinstance(err, BrokenProcessPool)
        assert err.pid == int(pidfile.read_text())
        assert err.signal == signal.SIGKILL
        assert err.exitcode in (None, -signal.SIGKILL)
        assert "SIGKILL" in str(err)
        assert r.ready() and not r.successful()

    @pytest.mark.timeout(30)
    def test_os_exit(self, pool: forkfarm.Pool, tmp_path: Path) -> None:
        pidfile = tmp_path / "pid"
        r = pool.apply_async(helpers.exit_with_code, (42, str(pidfile)))
        with pytest.raises(forkfarm.WorkerLostError) as excinfo:
            r.get(20)
        err = excinfo.value
        assert err.pid == int(pidfile.read_text())
        assert err.exitcode == 42
        assert err.signal is None
        assert "42" in str(err)

    @pytest.mark.timeout(30)
    def test_apply_raises_worker_lost(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(forkfarm.WorkerLostError):
            pool.apply(helpers.exit_with_code, (3,))

    @pytest.mark.timeout(30)
    def test_error_callback_gets_worker_lost(self, pool: forkfarm.Pool) -> None:
        errors: list[BaseException] = []
        r = pool.apply_async(helpers.die_by_sigkill, error_callback=errors.append)
        with pytest.raises(forkfarm.WorkerLostError):
            r.get(20)
        assert len(errors) == 1 and isinstance(errors[0], forkfarm.WorkerLostError)

    @pytest.mark.timeout(30)
    def test_pool_usable_after_sigkill(self, pool: forkfarm.Pool, tmp_path: Path) -> None:
        with pytest.raises(forkfarm.WorkerLostError):
            pool.apply_async(helpers.die_by_sigkill).get(20)
        assert pool.map(helpers.square, range(100)) == [x * x for x in range(100)]
        assert pool.apply(helpers.add, (1, 2)) == 3
        # The dead worker was replaced: two tasks still run side by side.
        pids = pool.starmap(
            helpers.rendezvous, [(str(tmp_path), 2, "a"), (str(tmp_path), 2, "b")], chunksize=1
        )
        assert len(set(pids)) == 2

    @pytest.mark.timeout(30)
    def test_pool_usable_after_os_exit(self, pool: forkfarm.Pool) -> None:
        for _ in range(3):
            with pytest.raises(forkfarm.WorkerLostError):
                pool.apply_async(helpers.exit_with_code, (42,)).get(20)
        assert pool.map(helpers.square, range(50)) == [x * x for x in range(50)]

    @pytest.mark.timeout(30)
    def test_other_tasks_unaffected(self, pool: forkfarm.Pool) -> None:
        before = [pool.apply_async(helpers.sleep_and_return, (0.1, i)) for i in range(5)]
        doomed = pool.apply_async(helpers.die_by_sigkill)
        after = [pool.apply_async(helpers.sleep_and_return, (0.1, i)) for i in range(5, 10)]
        with pytest.raises(forkfarm.WorkerLostError):
            doomed.get(20)
        assert [r.get(20) for r in before + after] == list(range(10))

    @pytest.mark.timeout(30)
    def test_map_with_dying_worker(self, pool: forkfarm.Pool) -> None:
        with pytest.raises(forkfarm.WorkerLostError):
            pool.starmap_async(helpers.sigkill_at, [(x, 5) for x in range(10)]).get(20)
        assert pool.map(helpers.square, range(10)) == [x * x for x in range(10)]


# ==========================================================================
# multiprocessing's behaviour that CPython's own suite checks
# ==========================================================================


class SaidWhen(Exception):
    pass


def raising_after(total: int, when: int) -> Iterator[int]:
    """Yields 0, 1, ... and raises SaidWhen in place of item ``when``."""
    for i in range(total):
        if i == when:
            raise SaidWhen(i)
        yield i


class Counted:
    """An iterable that counts the items taken from it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.taken = 0

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.taken += 1
            yield i


class TestMultiprocessingConformance:
    def test_imap_gives_the_results_before_a_failing_iterable_then_its_error(self) -> None:
        with forkfarm.Pool(2) as p:
            it = p.imap(helpers.square, raising_after(10, 3), 1)
            assert [next(it) for _ in range(3)] == [0, 1, 4]
            with pytest.raises(SaidWhen):
                next(it)
            with pytest.raises(StopIteration):
                next(it)
            # The chunk being cut is lost with the error, as in multiprocessing.
            it = p.imap(helpers.square, raising_after(20, 7), 4)
            assert [next(it) for _ in range(4)] == [0, 1, 4, 9]
            with pytest.raises(SaidWhen):
                next(it)
            it = p.imap(helpers.square, raising_after(1, 0), 1)
            with pytest.raises(SaidWhen):
                next(it)

    def test_imap_unordered_gives_every_result_before_the_iterables_error(self) -> None:
        with forkfarm.Pool(2) as p:
            it = p.imap_unordered(helpers.square, raising_after(10, 5), 1)
            seen = []
            with pytest.raises(SaidWhen):
                for value in it:
                    seen.append(value)
            assert sorted(seen) == [0, 1, 4, 9, 16]

    def test_imap_buffersize_takes_the_input_lazily(self) -> None:
        source = Counted(10_000)
        with forkfarm.Pool(2) as p:
            it = p.imap(helpers.square, source, 1, 3)
            assert next(it) == 0
            # Three chunks ahead of the consumer at most, and one consumed.
            assert source.taken <= 4
            assert [next(it) for _ in range(5)] == [1, 4, 9, 16, 25]
            assert source.taken <= 9
            unordered = p.imap_unordered(helpers.square, range(50), 5, buffersize=2)
            assert sorted(unordered) == [x * x for x in range(50)]

    @pytest.mark.parametrize(
        "buffersize, error",
        [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError)],
    )
    def test_imap_refuses_a_bad_buffersize(self, buffersize: Any, error: type) -> None:
        with forkfarm.Pool(1) as p:
            with pytest.raises(error, match="buffersize"):
                p.imap(helpers.square, range(3), 1, buffersize)

    def test_pool_lists_its_workers_as_multiprocessing_does(self) -> None:
        with forkfarm.Pool(3) as p:
            workers = p._pool
            assert len(workers) == 3
            pids = {w.pid for w in workers}
            assert pids == set(p.map(helpers.getpid, range(300), chunksize=1)) | pids
            assert all(w.is_alive() for w in workers)
            assert sorted(w.name for w in workers) == [
                "ForkPoolWorker-1", "ForkPoolWorker-2", "ForkPoolWorker-3"
            ]
            assert repr(p) == "<forkfarm.pool.Pool state=RUN pool_size=3>"
        assert "state=TERMINATE" in repr(p)

    def test_workers_answer_current_and_parent_process_as_multiprocessing_does(self) -> None:
        import multiprocessing

        with forkfarm.Pool(2) as p:
            answers = p.map(helpers.worker_identity, range(20), chunksize=1)
        for name, daemon, parent_pid, parent_alive, authkey in answers:
            assert name in ("ForkPoolWorker-1", "ForkPoolWorker-2")
            assert daemon
            assert parent_pid == os.getpid()
            assert parent_alive
            assert authkey == bytes(multiprocessing.current_process().authkey)

    def test_fork_server_workers_have_their_names_and_parent_too(self) -> None:
        with forkfarm.get_context("forkserver").Pool(1) as p:
            name, _daemon, parent_pid, parent_alive, _key = p.apply(helpers.worker_identity)
        assert name == "ForkServerPoolWorker-1"
        assert parent_pid == os.getpid()
        assert parent_alive

    def test_a_task_error_has_multiprocessings_remote_traceback_as_cause(self) -> None:
        import multiprocessing.pool

        with forkfarm.Pool(1) as p:
            with pytest.raises(ValueError) as caught:
                p.apply(helpers.raise_value_error, ("boom",))
        assert type(caught.value.__cause__) is multiprocessing.pool.RemoteTraceback
        assert forkfarm.pool.RemoteTraceback is multiprocessing.pool.RemoteTraceback
        assert "raise_value_error" in caught.value.__cause__.tb

    def test_a_running_pool_collected_warns_with_multiprocessings_words(self) -> None:
        import gc

        p = forkfarm.Pool(1)
        p.terminate()
        p._state = forkfarm.pool.RUN
        with pytest.warns(ResourceWarning, match="^unclosed running multiprocessing pool"):
            del p
            gc.collect()


class TestCallbackRace:
    def test_every_callback_fires_when_a_result_beats_its_submit(self) -> None:
        """The callback thread may finish a task before apply_async has
        stored it: with the interpreter switching threads as often as it
        can, every callback still fires with its value."""
        import sys

        got: list[int] = []
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            with forkfarm.Pool(2) as p:
                results = [p.apply_async(helpers.square, (i,), callback=got.append) for i in range(5000)]
                assert [r.get(T) for r in results] == [i * i for i in range(5000)]
                deadline = time.monotonic() + T
                while len(got) < 5000 and time.monotonic() < deadline:
                    time.sleep(0.01)
        finally:
            sys.setswitchinterval(old)
        assert sorted(got) == [i * i for i in range(5000)]
