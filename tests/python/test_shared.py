"""NumPy task farming: shared arrays travel as handles, large buffers out of
band through the arena, and multiprocessing's shared ctypes objects."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import time
from typing import Any

import pytest

np = pytest.importorskip("numpy")

import forkfarm  # noqa: E402
import helpers  # noqa: E402
from forkfarm import _core  # noqa: E402

DTYPES = [
    np.bool_,
    np.int8,
    np.uint16,
    np.int32,
    np.int64,
    np.float32,
    np.float64,
    np.complex128,
    "U5",
    "S3",
    "datetime64[ns]",
    np.dtype([("a", "<i4"), ("b", "<f8", (2,)), ("c", "S2")]),
]


def _sample(shape: tuple[int, ...], dtype: Any) -> Any:
    """Distinct, deterministic values of any of DTYPES."""
    count = int(np.prod(shape))
    raw = np.arange(count, dtype=np.int64).reshape(shape)
    kind = np.dtype(dtype)
    if kind.fields:
        out = np.zeros(shape, kind)
        out["a"] = raw
        out["b"] = raw[..., None] * 0.5
        out["c"] = raw.astype("S2")
        return out
    if kind.kind in "US":
        return raw.astype(kind)
    if kind.kind == "M":
        return raw.astype("datetime64[ns]")
    return raw.astype(kind)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settled_fds(target: int | None = None) -> int:
    """The open descriptor count once the loop thread has closed what it
    closes after a pool is gone (it does so asynchronously): at most target,
    or after a short pause without one."""
    if target is None:
        time.sleep(0.3)
        return _open_fds()
    deadline = time.monotonic() + 5
    count = _open_fds()
    while count > target and time.monotonic() < deadline:
        time.sleep(0.02)
        count = _open_fds()
    return count


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


# The 2 GiB tests need the array, its copy in the arena and a margin.
# Under `make test-python-asan`: memory figures there are ASan's.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")

needs_memory = pytest.mark.skipif(
    _available_gib() < 12, reason="needs 12 GiB of available memory for 2 GiB arrays"
)


def _shm_names() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.fixture(scope="module")
def pool() -> Any:
    with forkfarm.Pool(2) as p:
        yield p


class TestSharedArrays:
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_round_trip_of_every_dtype(self, pool: Any, dtype: Any) -> None:
        source = _sample((40, 7), dtype)
        shared = forkfarm.as_shared(source)
        assert isinstance(shared, forkfarm.SharedArray)
        back = pool.apply(helpers.as_plain, (shared,))
        np.testing.assert_array_equal(back, source)
        assert pool.apply(helpers.memory_of, (shared,)) == "segment"

    def test_returned_shared_array_is_the_same_memory(self, pool: Any) -> None:
        shared = forkfarm.zeros((100, 3))
        back = pool.apply(helpers.identity, (shared[10:20],))
        assert np.shares_memory(back, shared)
        back[:] = 7
        assert (shared[10:20] == 7).all() and shared.sum() == 7 * 30

    def test_workers_write_their_slices_in_place(self, pool: Any) -> None:
        out = forkfarm.zeros((64, 1000))
        bands = [(out, i, i + 8, float(i)) for i in range(0, 64, 8)]
        pids = pool.starmap(helpers.fill_rows, bands)
        assert os.getpid() not in pids
        for start in range(0, 64, 8):
            assert (out[start : start + 8] == start).all()

    @pytest.mark.parametrize(
        "view",
        [
            lambda a: a[::2, 1:],
            lambda a: a.T,
            lambda a: a[::-1, ::-3],
            lambda a: a[5],
            lambda a: a[3:3],
        ],
        ids=["strided", "transposed", "negative-strides", "row", "empty-slice"],
    )
    def test_views_travel_as_handles(self, pool: Any, view: Any) -> None:
        shared = forkfarm.as_shared(np.arange(20 * 30, dtype=np.float64).reshape(20, 30))
        expected = view(shared)
        back = pool.apply(helpers.identity, (expected,))
        np.testing.assert_array_equal(back, expected)
        assert back.strides == expected.strides
        if expected.size:
            assert np.shares_memory(back, shared)

    def test_fortran_order(self, pool: Any) -> None:
        shared = forkfarm.zeros((30, 20), order="F")
        assert shared.flags.f_contiguous
        pool.starmap(helpers.fill_rows, [(shared, 0, 15, 1.0), (shared, 15, 30, 2.0)])
        assert shared[:15].sum() == 15 * 20 and shared[15:].sum() == 2 * 15 * 20
        np.testing.assert_array_equal(pool.apply(helpers.as_plain, (shared.T,)), shared.T)

    def test_zero_dimensional_and_empty(self, pool: Any) -> None:
        scalar = forkfarm.full((), 3.5)
        assert scalar.shape == () and pool.apply(helpers.as_plain, (scalar,)) == 3.5
        empty = forkfarm.empty((0, 3), dtype=np.int32)
        back = pool.apply(helpers.as_plain, (empty,))
        assert back.shape == (0, 3) and back.dtype == np.int32

    def test_made_before_the_pool_is_inherited(self) -> None:
        shared = forkfarm.zeros(16)
        with forkfarm.Pool(2) as p:
            p.starmap(helpers.fill_rows, [(shared, i, i + 1, i) for i in range(16)])
        np.testing.assert_array_equal(shared, np.arange(16))

    def test_read_only_views_stay_read_only(self, pool: Any) -> None:
        shared = forkfarm.zeros(10)
        shared.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            pool.apply(helpers.fill_rows, (shared, 0, 1, 1.0))

    def test_arithmetic_gives_plain_arrays(self) -> None:
        shared = forkfarm.full(4, 2.0)
        assert type(shared + 1) is np.ndarray
        assert float(shared.sum()) == 8.0

    def test_outside_a_pool_it_pickles_by_value(self) -> None:
        shared = forkfarm.as_shared(np.arange(5))
        copy = pickle.loads(pickle.dumps(shared))
        assert type(copy) is np.ndarray
        np.testing.assert_array_equal(copy, shared)
        assert not np.shares_memory(copy, shared)

    def test_bad_input_is_named(self) -> None:
        with pytest.raises(TypeError, match="Python objects"):
            forkfarm.zeros(3, dtype=object)
        with pytest.raises(ValueError, match="negative"):
            forkfarm.zeros((2, -1))
        with pytest.raises(ValueError, match="order"):
            forkfarm.zeros(2, order="K")
        with pytest.raises(LookupError, match="not reachable"):
            _core.Segment.open(0x7FFFFFFF00000001)

    def test_a_worker_made_array_comes_back_as_shared_memory(self, pool: Any) -> None:
        back = pool.apply(helpers.make_shared, (1000, 2.0))
        assert isinstance(back, forkfarm.SharedArray)
        assert helpers.memory_of(back) == "segment"
        np.testing.assert_array_equal(back, np.full(1000, 2.0))
        # The parent lends it on: another task writes into the same memory.
        pool.starmap(helpers.fill_rows, [(back, 0, 500, 5.0), (back, 500, 1000, 6.0)])
        assert back[:500].sum() == 2500 and back[500:].sum() == 3000

    def test_worker_made_arrays_outlive_their_worker(self) -> None:
        with forkfarm.Pool(1, maxtasksperchild=1) as p:
            first = p.apply(helpers.make_shared, (100, 1.0))
            pids = {p.apply(helpers.getpid) for _ in range(3)}
            assert len(pids) == 3  # the maker is long gone
            p.apply(helpers.fill_rows, (first, 0, 50, 9.0))
        assert first[:50].sum() == 450 and first[50:].sum() == 50

    def test_worker_made_arrays_leave_nothing_behind(self, pool: Any) -> None:
        pool.apply(helpers.make_and_drop_shared, (10,))
        time.sleep(0.05)
        fds = _settled_fds()
        pool.map(helpers.make_and_drop_shared, [100] * 4, chunksize=1)
        for _ in range(100):
            back = pool.apply(helpers.make_shared, (1024, 1.0))
            del back
        gc.collect()
        pool.apply(helpers.getpid)  # the last FORGET comes after this result
        assert _settled_fds(fds) <= fds

    @pytest.mark.slow
    @needs_memory
    def test_two_gibibytes(self, pool: Any) -> None:
        n = (2 << 30) // 8 + 2
        shared = forkfarm.zeros(n)  # pages are only allocated where touched
        assert pool.apply(helpers.write_last, (shared, 9.0)) == 0.0
        assert shared[-1] == 9.0 and shared[-2] == 0.0


def test_executor_passes_shared_and_large_arrays() -> None:
    shared = forkfarm.full(10, 3.0)
    big = np.arange(1 << 18, dtype=np.float64)
    with forkfarm.Executor(2) as executor:
        assert executor.submit(helpers.memory_of, shared).result(timeout=30) == "segment"
        np.testing.assert_array_equal(executor.submit(helpers.identity, big).result(timeout=30), big)
        assert list(executor.map(helpers.memory_of, [big] * 4, chunksize=2)) == ["region"] * 4


class TestOutOfBand:
    def test_large_arguments_and_results_use_the_arena(self, pool: Any) -> None:
        array = np.arange(1 << 20, dtype=np.float64)  # 8 MiB
        assert pool.apply(helpers.memory_of, (array,)) == "region"
        back = pool.apply(helpers.make_array, (1 << 20, 3.0))
        assert helpers.memory_of(back) == "region"
        assert back.sum() == 3.0 * (1 << 20)

    def test_small_buffers_stay_in_the_pickle(self, pool: Any) -> None:
        assert pool.apply(helpers.memory_of, (np.arange(100),)) == "private"

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_round_trip_of_every_dtype(self, pool: Any, dtype: Any) -> None:
        source = _sample((300, 100), dtype)  # above the threshold for most
        back = pool.apply(helpers.identity, (source,))
        np.testing.assert_array_equal(back, source)
        assert back.dtype == source.dtype

    def test_non_contiguous_and_fortran(self, pool: Any) -> None:
        source = np.arange(400 * 300, dtype=np.float64).reshape(400, 300)
        for view in (source[::2, ::3], np.asfortranarray(source), source.T):
            np.testing.assert_array_equal(pool.apply(helpers.identity, (view,)), view)

    def test_bytearray_and_picklebuffer(self, pool: Any) -> None:
        data = bytearray(os.urandom(200_000))
        assert pool.apply(helpers.identity, (data,)) == data
        assert pool.apply(helpers.buffer_length, (pickle.PickleBuffer(data),)) == len(data)

    def test_one_copy_for_a_map_that_repeats_an_array(self, pool: Any) -> None:
        array = np.ones(1 << 20)
        assert pool.map(helpers.memory_of, [array] * 8, chunksize=1) == ["region"] * 8
        assert pool.map(np.sum, [array] * 8) == [float(1 << 20)] * 8

    def test_a_view_kept_after_its_task_stays_valid(self, pool: Any) -> None:
        first = np.full(1 << 18, 1.0)
        assert pool.map(helpers.keep_and_sum, [first] * 2, chunksize=1) == [float(1 << 18)] * 2
        # Later messages must not overwrite what the workers kept.
        for value in (2.0, 3.0):
            assert pool.apply(np.sum, (np.full(1 << 18, value),)) == value * (1 << 18)
        kept = pool.map(helpers.get_kept_sum, range(4), chunksize=1)
        assert all(k in (0.0, float(1 << 17)) for k in kept) and max(kept) == float(1 << 17)

    def test_a_result_outlives_its_task(self, pool: Any) -> None:
        """A decoded result's buffers go back when it goes, not when its
        AsyncResult or Future does: later results must not land in them."""
        kept = pool.apply(helpers.make_array, (1 << 17, 1.0))
        with forkfarm.Executor(1) as executor:
            kept_too = executor.submit(helpers.make_array, 1 << 17, 2.0).result(timeout=30)
            gc.collect()
            for value in (3.0, 4.0, 5.0):
                assert executor.submit(helpers.make_array, 1 << 17, value).result(timeout=30).sum() == value * (1 << 17)
        gc.collect()
        for value in (6.0, 7.0, 8.0):
            assert pool.apply(helpers.make_array, (1 << 17, value)).sum() == value * (1 << 17)
        assert kept.sum() == 1.0 * (1 << 17) and helpers.memory_of(kept) == "region"
        assert kept_too.sum() == 2.0 * (1 << 17)

    def test_results_never_read_give_their_memory_back(self, pool: Any) -> None:
        # Thousands of 1 MiB results dropped unread must not exhaust the arena.
        for _ in range(300):
            pool.apply_async(helpers.make_array, (1 << 17, 1.0))
        assert pool.apply(helpers.make_array, (1 << 17, 2.0)).sum() == 2.0 * (1 << 17)

    @pytest.mark.slow
    @needs_memory
    def test_two_gibibytes_out_of_band(self, pool: Any) -> None:
        source = np.ones((2 << 30) // 8 + 8, dtype=np.float64)
        assert pool.apply(np.sum, (source,)) == source.size
        del source
        gc.collect()


class TestLifetime:
    def test_arrays_leave_no_descriptor_name_or_memory(self, pool: Any) -> None:
        for _ in range(50):  # warm up allocator and caches
            pool.apply(helpers.as_plain, (forkfarm.zeros(1 << 17),))
        fds, names, rss = _open_fds(), _shm_names(), _rss_kib()
        for i in range(1000):
            shared = forkfarm.full(1 << 17, float(i))  # 1 MiB, touched
            if i % 50 == 0:
                assert pool.apply(helpers.as_plain, (shared[:4],))[0] == i
            del shared
        gc.collect()
        assert _open_fds() <= fds
        assert _shm_names() == names
        assert _rss_kib() - rss < 64 * 1024, "1000 arrays of 1 MiB must not stay resident"

    def test_pools_leave_no_descriptor_or_name(self) -> None:
        shared = forkfarm.zeros(1 << 16)
        # The runtime and the arena are made once per process.
        with forkfarm.Pool(1) as p:
            p.apply(np.sum, (np.ones(1 << 15),))
        _settled_fds()
        fds, names, rss = _open_fds(), _shm_names(), _rss_kib()
        # Row 24: a thousand pools (benchmarks/lifetime.py prints the curve).
        # Under ASan a pool's fork copies the sanitizer's large mappings, and
        # late in the suite a thousand took over 120 s: a quarter of them
        # still shows any descriptor or name a pool leaves.
        for i in range(250 if UNDER_ASAN else 1000):
            with forkfarm.Pool(1) as p:
                p.apply(helpers.fill_rows, (shared, i % 100, i % 100 + 1, 1.0))
                p.apply(np.sum, (np.ones(1 << 15),))
        gc.collect()
        assert shared[:100].sum() == 100
        assert _settled_fds(fds) <= fds
        assert _shm_names() == names
        if not UNDER_ASAN:  # ASan's quarantine keeps freed memory resident
            assert _rss_kib() - rss < 8 * 1024, "1000 pools must not grow the parent"

    def test_arena_memory_goes_back_after_the_pool(self) -> None:
        # From an arena without idle chunks of earlier tests (the module's
        # pool lives on, and its join is what trims).
        forkfarm._protocol.trim_arena()
        big = np.ones((256 << 20) // 8)
        rss = _rss_kib()
        with forkfarm.Pool(1) as p:
            assert p.apply(np.sum, (big,)) == big.size
            assert _rss_kib() - rss > 200 * 1024  # the copy in the arena
        assert _rss_kib() - rss < 140 * 1024, "a 256 MiB chunk outlived its pool"

    def test_array_dropped_before_its_task_starts(self) -> None:
        with forkfarm.Pool(1) as p:
            p.apply(helpers.getpid)
            busy = p.apply_async(helpers.sleep_and_return, (0.3,))
            # Made after the pool (so lent, not inherited), dropped at once.
            result = p.apply_async(helpers.as_plain, (forkfarm.full(1000, 7.0),))
            gc.collect()
            busy.get(timeout=10)
            np.testing.assert_array_equal(result.get(timeout=10), np.full(1000, 7.0))

    @pytest.mark.slow
    @needs_memory
    def test_crash_with_a_gibibyte_in_flight(self) -> None:
        """FAULTS.md row 10: the task fails alone, and the arena region the
        dead worker held is reclaimed, not leaked."""
        big = np.ones((1 << 30) // 8)
        rss = _rss_kib()
        with forkfarm.Pool(1) as p:
            with pytest.raises(forkfarm.WorkerLostError):
                p.apply(helpers.touch_then_die, (big,))
            for _ in range(3):  # the same region serves again
                assert p.apply(np.sum, (big,)) == big.size
            assert _rss_kib() - rss < 1.5 * (1 << 20), "a second 1 GiB region was made"
        assert _rss_kib() - rss < 200 * 1024

    def test_killing_a_worker_that_holds_a_view(self) -> None:
        shared = forkfarm.full(1 << 16, 5.0)
        big = np.full(1 << 18, 1.0)
        with forkfarm.Pool(1) as p:
            assert p.apply(helpers.keep_and_sum, (shared,)) == 5.0 * (1 << 16)
            assert p.apply(helpers.keep_and_sum, (big,)) == float(1 << 18)
            pid = p.apply(helpers.getpid)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    if p.apply(helpers.getpid) != pid:
                        break
                except forkfarm.WorkerLostError:
                    pass
                time.sleep(0.01)
            # The parent's array is intact, and the arena still serves.
            assert (shared == 5.0).all()
            for _ in range(20):
                assert p.apply(np.sum, (big,)) == float(1 << 18)


class TestSharedCtypes:
    def test_raw_array_travels_to_tasks(self, pool: Any) -> None:
        raw = forkfarm.RawArray("d", 8)
        pool.starmap(helpers.add_to_ctype, [(raw, i, float(i)) for i in range(8)])
        assert list(raw) == [float(i) for i in range(8)]
        np.testing.assert_array_equal(np.frombuffer(raw), np.arange(8.0))

    def test_raw_value_and_initializer(self) -> None:
        value = forkfarm.RawValue("i", 41)
        assert value.value == 41
        array = forkfarm.RawArray("i", [1, 2, 3])
        assert list(array) == [1, 2, 3]
        with pytest.raises(TypeError, match="typecode"):
            forkfarm.RawArray("?x", 3)

    def test_value_with_lock_by_inheritance(self) -> None:
        counter = forkfarm.Value("i", 0)
        assert hasattr(counter, "get_lock") and counter.value == 0
        with forkfarm.Pool(2, initializer=helpers.set_worker_value, initargs=(counter,)) as p:
            p.map(helpers.increment_shared_counter, [200] * 4, chunksize=1)
        assert counter.value == 800

    def test_array_get_obj_and_frombuffer(self) -> None:
        array = forkfarm.Array("d", [1.0, 2.0, 3.0])
        view = np.frombuffer(array.get_obj())
        view[1] = 20.0
        assert array[1] == 20.0
        with array.get_lock():
            array[0] = 10.0
        assert list(array) == [10.0, 20.0, 3.0]
        assert forkfarm.Array("i", 4, lock=False)[:] == [0, 0, 0, 0]
        with pytest.raises(AttributeError, match="acquire"):
            forkfarm.Value("i", 0, lock=object())

    def test_synchronized_objects_keep_multiprocessing_rule(self, pool: Any) -> None:
        counter = forkfarm.Value("i", 0)
        with pytest.raises(RuntimeError, match="inheritance"):
            pool.apply(helpers.identity, (counter,))


def test_numpy_farm_example_matches_serial() -> None:
    """examples/numpy_farm.py's check, on a small image with uneven bands."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "numpy_farm.py"
    spec = importlib.util.spec_from_file_location("numpy_farm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Tasks pickle the kernel by reference: its module must be importable.
    sys.modules["numpy_farm"] = module
    spec.loader.exec_module(module)
    result = module.run(size=200, steps=3, workers=2, blocks=5, runs=1)
    assert result["ok"], result
