"""Arrays born in shared memory (issue 18): in a worker, NumPy's allocator is
forkfarm's, large results travel with no copy, and they still behave as
copies in both directions."""

from __future__ import annotations

import gc
import os
import signal
import time
from typing import Any

import pytest

np = pytest.importorskip("numpy")

import forkfarm  # noqa: E402
from forkfarm import _core  # noqa: E402

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20

# What a worker keeps between tasks (each worker has its own).
_kept: list[Any] = []


def handler_name(_: object = None) -> str:
    from numpy._core.multiarray import get_handler_name

    return str(get_handler_name())


def counts(_: object = None) -> dict[str, int]:
    return _core.shared_counts()


def full(nbytes: int, value: float, order: str = "C") -> Any:
    return np.full((nbytes // 8 // 64, 64), value, order=order)  # type: ignore[call-overload]


def full_and_keep(nbytes: int, value: float, order: str = "C") -> Any:
    array = full(nbytes, value, order)
    _kept.append(array)
    return array


def kept_part(kind: str) -> Any:
    """A view of the array kept last: what a task may return of it."""
    array = _kept[-1]
    return {"whole": array, "rows": array[2:], "column": array[:, 3], "transposed": array.T}[kind]


def write_kept(value: float) -> None:
    _kept[-1][...] = value


def read_kept(_: object = None) -> float:
    return float(_kept[-1].sum())


def forget_kept(_: object = None) -> int:
    _kept.clear()
    gc.collect()
    return int(_core.shared_counts()["held"])


def slot_pid(_: object = None) -> int:
    return os.getpid()


def die(_: object = None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def keep_shared_and_pid(nbytes: int) -> tuple[int, int]:
    """Keeps one more array born in shared memory, filled (so resident)."""
    _kept.append(np.full(nbytes // 8, 1.0))
    return os.getpid(), int(_core.shared_counts()["held"])


def grow_by_resize(nbytes: int) -> Any:
    array = np.ones(nbytes // 8)
    array.resize(2 * array.size, refcheck=False)  # realloc of a held region
    array[array.size // 2 :] = 2.0
    return array


def from_iter(count: int) -> Any:
    # fromiter grows its buffer by realloc as it goes.
    return np.fromiter((float(i) for i in range(count)), dtype=np.float64)


def sum_then_scribble(array: Any) -> float:
    """What a task saw, before it writes over its argument."""
    seen = float(array.sum())
    array[...] = -1.0
    time.sleep(0.005)  # the other tasks run meanwhile
    return seen


def first_after(seconds: float, array: Any) -> float:
    time.sleep(seconds)
    return float(array.flat[0])


def fork_then_compare(nbytes: int) -> tuple[float, float]:
    """A worker that forks while it holds an array: neither side sees the
    other's writes afterwards."""
    array = np.full(nbytes // 8, 1.0)
    _kept.append(array)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        array[:] = 3.0  # the child's write
        os.write(write, b"x")
        os._exit(0)
    os.close(write)
    os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    seen_by_parent = float(array[0])
    array[:] = 5.0
    return seen_by_parent, float(array[-1])


@pytest.fixture(scope="module")
def pool() -> Any:
    with forkfarm.Pool(1) as p:
        yield p


class TestAllocator:
    def test_workers_allocate_in_shared_memory_and_the_parent_does_not(self, pool: Any) -> None:
        assert pool.apply(handler_name) == "forkfarm_shared"
        assert handler_name() != "forkfarm_shared"

    def test_a_result_travels_with_no_copy(self, pool: Any) -> None:
        before = pool.apply(counts)
        result = pool.apply(full, (8 * MiB, 2.5))
        after = pool.apply(counts)
        assert result.shape == (8 * MiB // 8 // 64, 64) and float(result.sum()) == 2.5 * MiB
        assert after["lent"] - before["lent"] == 1
        assert after["lent_bytes"] - before["lent_bytes"] == 8 * MiB
        assert after["copies"] == before["copies"]
        assert after["held"] == before["held"]  # the worker let it go
        result[...] = 0.0  # the parent's to write

    def test_fortran_order_and_a_map_of_many(self, pool: Any) -> None:
        before = pool.apply(counts)
        arrays = pool.starmap(full, [(2 * MiB, float(i)) for i in range(6)], chunksize=3)
        fortran = pool.apply(full, (2 * MiB, 1.0, "F"))
        assert [float(a.sum()) for a in arrays] == [i * 2.0 * MiB / 8 for i in range(6)]
        assert fortran.flags.f_contiguous and float(fortran.sum()) == fortran.size
        assert pool.apply(counts)["lent"] - before["lent"] == 7

    def test_small_arrays_are_not_shared(self, pool: Any) -> None:
        before = pool.apply(counts)
        assert float(pool.apply(full, (MiB // 2, 1.0)).sum()) == MiB // 2 // 8
        assert pool.apply(counts)["allocations"] == before["allocations"]

    def test_threshold_zero_turns_it_off(self) -> None:
        with forkfarm.Pool(1, initializer=_core.set_shared_threshold, initargs=(0,)) as p:
            assert float(p.apply(full, (4 * MiB, 1.0)).sum()) == 4 * MiB // 8
            assert p.apply(counts)["allocations"] == 0

    def test_realloc_of_a_held_region(self, pool: Any) -> None:
        grown = pool.apply(grow_by_resize, (2 * MiB,))
        assert grown.size == 2 * (2 * MiB // 8)
        assert float(grown[: grown.size // 2].sum()) == grown.size // 2
        assert float(grown[grown.size // 2 :].sum()) == grown.size
        values = pool.apply(from_iter, (300_000,))
        np.testing.assert_array_equal(values, np.arange(300_000, dtype=np.float64))


class TestValueSemantics:
    """A result behaves as a copy, whatever the worker keeps."""

    @pytest.mark.parametrize("kind", ["whole", "rows", "column", "transposed"])
    def test_worker_keeps_the_array_and_both_sides_write(self, pool: Any, kind: str) -> None:
        before = pool.apply(counts)
        made = pool.apply(full_and_keep, (4 * MiB, 1.0, "F" if kind == "transposed" else "C"))
        size = made.size
        part = pool.apply(kept_part, (kind,))
        expected = part.copy()
        # The sender writes after sending: the receiver does not see it.
        pool.apply(write_kept, (7.0,))
        np.testing.assert_array_equal(part, expected)
        np.testing.assert_array_equal(made, np.ones_like(made))
        # The receiver writes: the sender does not see it.
        part[...] = -3.0
        made[...] = -4.0
        assert pool.apply(read_kept) == 7.0 * size
        after = pool.apply(counts)
        # The arrays the worker kept went by copy, at least the whole one.
        assert after["copies"] - before["copies"] >= 1
        assert pool.apply(forget_kept) == 0

    def test_a_fork_in_a_worker_keeps_both_sides_apart(self, pool: Any) -> None:
        seen_by_parent, own = pool.apply(fork_then_compare, (4 * MiB,))
        assert seen_by_parent == 1.0  # the child's write stayed in the child
        assert own == 5.0
        assert pool.apply(counts)["frozen"] >= 1
        pool.apply(forget_kept)


class TestArgumentsAreCopies:
    """Arguments behave as copies: no task sees another's writes, nor the
    parent's after sending, nor the parent the tasks'."""

    @pytest.mark.parametrize("opted_in", [False, True])
    def test_tasks_of_a_map_do_not_see_each_others_writes(self, opted_in: bool) -> None:
        with forkfarm.Pool(2) as p:
            if opted_in:
                with forkfarm.shared_allocations():
                    array = np.ones(MiB // 8 * 2)
            else:
                array = np.ones(MiB // 8 * 2)
            assert p.map(sum_then_scribble, [array] * 8, chunksize=1) == [float(array.size)] * 8
            assert p.map(sum_then_scribble, [array[: array.size // 2]] * 4, chunksize=1) == [array.size / 2] * 4
            assert float(array.sum()) == array.size

    def test_arrays_made_in_the_block_are_born_shared(self) -> None:
        before = _core.shared_counts()
        with forkfarm.shared_allocations():
            big = np.zeros(2 * MiB // 8)
            small = np.zeros(MiB // 16)
            assert handler_name() == "forkfarm_shared"
        outside = np.zeros(2 * MiB // 8)
        assert handler_name() != "forkfarm_shared"
        after = _core.shared_counts()
        assert after["held"] - before["held"] == 1
        assert after["held_bytes"] - before["held_bytes"] == big.nbytes
        del big, small, outside
        assert _core.shared_counts()["held"] == before["held"]

    def test_sender_and_receiver_writes_stay_apart(self) -> None:
        with forkfarm.Pool(1) as p:
            with forkfarm.shared_allocations():
                array = np.full((512, 512), 1.0)  # 2 MiB
            before = _core.shared_counts()["lent"]
            fortran = np.asfortranarray(array)  # a copy, NumPy's: too made in no block
            # Sent with no copy; the parent's write after sending is not seen.
            late = p.apply_async(first_after, (0.3, array))
            array[0, 0] = 42.0
            assert late.get(timeout=30) == 1.0
            assert _core.shared_counts()["lent"] - before == 1
            # The task's writes are not the parent's.
            assert p.apply(sum_then_scribble, (array,)) == array.size + 41.0
            assert array[0, 0] == 42.0 and float(array[1:].sum()) == 511 * 512
            # A row slice and a Fortran-ordered array travel too.
            assert p.apply(sum_then_scribble, (array[10:20],)) == 10 * 512
            assert p.apply(sum_then_scribble, (fortran,)) == fortran.size
            assert float(fortran.sum()) == fortran.size

    def test_arrays_made_before_a_pool_forks(self) -> None:
        with forkfarm.shared_allocations():
            array = np.full(2 * MiB // 8, 3.0)
        with forkfarm.Pool(1) as p:  # its workers fork with the array held
            assert p.apply(sum_then_scribble, (array,)) == 3.0 * array.size
            array[:] = 4.0
            assert p.apply(sum_then_scribble, (array,)) == 4.0 * array.size
        assert float(array.sum()) == 4.0 * array.size
        del array
        gc.collect()


def _memfd_mappings() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if "memfd:" in line)


class TestStats:
    def test_pool_stats_show_the_shared_bytes_held(self, pool: Any) -> None:
        before = pool.stats()
        with forkfarm.shared_allocations():
            mine = np.ones(2 * MiB // 8)
        result = pool.apply(full, (4 * MiB, 1.0))
        stats = pool.stats()
        assert stats.shared_bytes - before.shared_bytes == mine.nbytes
        assert stats.received_bytes - before.received_bytes >= result.nbytes
        assert "born shared" in str(stats)
        del mine, result
        gc.collect()
        after = pool.stats()
        assert after.shared_bytes == before.shared_bytes
        assert after.received_bytes == before.received_bytes


class TestMemory:
    def test_many_results_reuse_a_few_chunks(self, pool: Any) -> None:
        # 2,000 results of 1 MiB: regions are reused, not made per array.
        for start in range(0, 2000, 200):
            arrays = pool.starmap(full, [(MiB, float(start + i)) for i in range(200)], chunksize=20)
            assert [float(a[-1, -1]) for a in arrays] == [float(start + i) for i in range(200)]
            del arrays
        gc.collect()
        assert _memfd_mappings() < 40
        worker = pool.apply(counts)
        assert worker["held"] == 0
        assert worker["allocations"] >= 2000

    def test_max_memory_per_child_counts_arrays_born_shared(self) -> None:
        # Each task keeps 40 MiB more of shared-born arrays: the worker's own
        # memory, so past 100 MiB it is replaced after its task.
        with forkfarm.Pool(1, max_memory_per_child=100 << 20) as p:
            seen = [p.apply(keep_shared_and_pid, (40 * MiB,)) for _ in range(8)]
        pids = [pid for pid, _ in seen]
        assert len(set(pids)) >= 2, seen
        assert max(held for _, held in seen) <= 4, seen

    def test_a_killed_worker_leaves_nothing_and_results_survive(self) -> None:
        other = np.full(MiB, 9.0)

        def kill_with_a_result_in_flight() -> None:
            with forkfarm.Pool(1) as p:
                pid = p.apply(slot_pid)
                # The result is in flight (sent, not yet read) when its
                # worker dies.
                pending = p.apply_async(full, (8 * MiB, 4.0))
                with pytest.raises(forkfarm.WorkerLostError):
                    p.apply(die)
                first = pending.get(timeout=30)
                # The dead worker's result is still the parent's.
                assert float(first.sum()) == 4.0 * MiB
                second = p.apply(full, (8 * MiB, 6.0))
                assert p.apply(slot_pid) != pid
                assert float(second.sum()) == 6.0 * MiB
                del first, second
            gc.collect()

        # The first round makes what a process makes once (the runtime's
        # descriptors); the next ones must leave nothing more.
        kill_with_a_result_in_flight()
        fds, mappings = _settled_fds(), _memfd_mappings()
        for _ in range(3):
            kill_with_a_result_in_flight()
        assert _settled_fds(fds) <= fds
        assert _memfd_mappings() <= mappings
        assert float(other.sum()) == 9.0 * MiB


def _settled_fds(target: int | None = None) -> int:
    """The descriptor count once the loop thread closed what it closes
    after a pool is gone (asynchronously): at most target, or after a
    pause."""
    deadline = time.monotonic() + (5 if target is not None else 0.3)
    count = len(os.listdir("/proc/self/fd"))
    while (target is None or count > target) and time.monotonic() < deadline:
        time.sleep(0.02)
        count = len(os.listdir("/proc/self/fd"))
    return count
