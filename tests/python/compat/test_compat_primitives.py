"""multiprocessing's observable behaviour of Lock, RLock, Semaphore,
BoundedSemaphore, Event, Condition and Barrier, checked on both modules
(the ``mp`` fixture): timeouts, errors, waking across processes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

TOLERANCE = 0.1  # seconds a timed wait may be late


def _timed(call: Any, *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call(*args)
    return result, time.monotonic() - started


def _join(processes: list[Any]) -> None:
    for process in processes:
        process.join(30)
        assert process.exitcode == 0


class TestTimeouts:
    def test_lock(self, mp: Any) -> None:
        lock = mp.Lock()
        lock.acquire()
        got, took = _timed(lock.acquire, True, 0.2)
        assert got is False and 0.2 <= took < 0.2 + TOLERANCE
        got, took = _timed(lock.acquire, False)
        assert got is False and took < TOLERANCE
        lock.release()

    def test_semaphore(self, mp: Any) -> None:
        semaphore = mp.Semaphore(0)
        got, took = _timed(semaphore.acquire, True, 0.2)
        assert got is False and 0.2 <= took < 0.2 + TOLERANCE

    def test_event(self, mp: Any) -> None:
        got, took = _timed(mp.Event().wait, 0.2)
        assert got is False and 0.2 <= took < 0.2 + TOLERANCE

    def test_condition(self, mp: Any) -> None:
        condition = mp.Condition()
        with condition:
            got, took = _timed(condition.wait, 0.2)
        assert got is False and 0.2 <= took < 0.2 + TOLERANCE

    def test_negative_timeout_does_not_wait(self, mp: Any) -> None:
        lock = mp.Lock()
        lock.acquire()
        got, took = _timed(lock.acquire, True, -1)
        assert got is False and took < TOLERANCE
        lock.release()


class TestErrors:
    def test_release_of_an_unlocked_lock(self, mp: Any) -> None:
        with pytest.raises(ValueError, match="released too many times"):
            mp.Lock().release()

    def test_release_of_an_unheld_rlock(self, mp: Any) -> None:
        with pytest.raises(AssertionError):
            mp.RLock().release()

    def test_bounded_semaphore(self, mp: Any) -> None:
        semaphore = mp.BoundedSemaphore(1)
        with pytest.raises(ValueError, match="released too many times"):
            semaphore.release()

    def test_condition_without_its_lock(self, mp: Any) -> None:
        condition = mp.Condition()
        with pytest.raises(AssertionError):
            condition.wait(0.01)
        with pytest.raises(AssertionError):
            condition.notify()

    def test_pickling_outside_inheritance(self, mp: Any) -> None:
        import pickle

        with pytest.raises(RuntimeError, match="inheritance"):
            pickle.dumps(mp.Lock())


class TestOwners:
    def test_lock_released_by_another_thread(self, mp: Any) -> None:
        """A Lock has no owner: another thread may release it."""
        lock = mp.Lock()
        lock.acquire()
        thread = threading.Thread(target=lock.release)
        thread.start()
        thread.join()
        assert lock.acquire(timeout=0)
        lock.release()

    def test_lock_released_by_another_process(self, mp: Any, fork: Any) -> None:
        lock = mp.Lock()
        lock.acquire()
        child = fork(target=lock.release)
        child.start()
        _join([child])
        assert lock.acquire(timeout=1)
        lock.release()

    def test_rlock_released_by_the_wrong_thread(self, mp: Any) -> None:
        lock = mp.RLock()
        lock.acquire()
        errors: list[BaseException] = []

        def release() -> None:
            try:
                lock.release()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        thread = threading.Thread(target=release)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], AssertionError)
        lock.release()

    def test_rlock_is_recursive(self, mp: Any) -> None:
        lock = mp.RLock()
        assert lock.acquire() and lock.acquire(timeout=0)
        lock.release()
        lock.release()
        with pytest.raises(AssertionError):
            lock.release()

    def test_semaphore_value(self, mp: Any) -> None:
        semaphore = mp.Semaphore(3)
        semaphore.acquire()
        assert semaphore.get_value() == 2
        semaphore.release()
        semaphore.release()
        assert semaphore.get_value() == 4


def _set_later(event: Any) -> None:
    time.sleep(0.2)
    event.set()


class TestAcrossProcesses:
    def test_event_wait(self, mp: Any, fork: Any) -> None:
        event = mp.Event()
        child = fork(target=_set_later, args=(event,))
        child.start()
        got, took = _timed(event.wait, 10)
        assert got is True and took < 5
        _join([child])
        assert event.is_set()
        event.clear()
        assert not event.is_set()

    def test_condition_notify_n(self, mp: Any, fork: Any) -> None:
        """notify(2) of 5 waiting processes wakes exactly 2; notify_all
        wakes the rest."""
        condition = mp.Condition()
        ready = mp.Semaphore(0)
        woken = mp.Value("i", 0)

        def wait() -> None:
            with condition:
                ready.release()
                if condition.wait(20):
                    with woken.get_lock():
                        woken.value += 1

        children = [fork(target=wait) for _ in range(5)]
        for child in children:
            child.start()
        for _ in children:
            assert ready.acquire(timeout=10)
        with condition:  # every waiter is inside wait() once this is ours
            condition.notify(2)
        time.sleep(0.5)
        assert woken.value == 2
        with condition:
            condition.notify_all()
        _join(children)
        assert woken.value == 5

    def test_queue_of_semaphore_releases(self, mp: Any, fork: Any) -> None:
        semaphore = mp.Semaphore(0)

        def release() -> None:
            for _ in range(100):
                semaphore.release()

        children = [fork(target=release) for _ in range(2)]
        for child in children:
            child.start()
        for _ in range(200):
            assert semaphore.acquire(timeout=10)
        _join(children)
        assert not semaphore.acquire(timeout=0.01)


class TestBarrier:
    def test_thousand_parties(self, mp: Any, fork: Any) -> None:
        """One round of 1,000 parties: 4 processes of 250 threads each.
        Every party gets a distinct index."""
        parties, processes = 1000, 4
        barrier = mp.Barrier(parties, timeout=30)
        indices = mp.Array("i", [-1] * parties)
        slot = mp.Value("i", 0)

        def party() -> None:
            index = barrier.wait()
            with slot.get_lock():
                indices[slot.value] = index
                slot.value += 1

        def process() -> None:
            threads = [threading.Thread(target=party) for _ in range(parties // processes)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        children = [fork(target=process) for _ in range(processes)]
        for child in children:
            child.start()
        _join(children)
        assert sorted(indices[:]) == list(range(parties))
        assert barrier.n_waiting == 0 and not barrier.broken

    def test_abort_breaks_waiters(self, mp: Any, fork: Any) -> None:
        barrier = mp.Barrier(3)
        broken = mp.Value("i", 0)

        def wait() -> None:
            try:
                barrier.wait(20)
            except threading.BrokenBarrierError:
                broken.value += 1

        child = fork(target=wait)
        child.start()
        while barrier.n_waiting < 1:
            time.sleep(0.01)
        barrier.abort()
        _join([child])
        assert broken.value == 1 and barrier.broken
        with pytest.raises(threading.BrokenBarrierError):
            barrier.wait()
        barrier.reset()
        assert not barrier.broken

    def test_timeout_breaks_the_barrier(self, mp: Any) -> None:
        barrier = mp.Barrier(2)
        started = time.monotonic()
        with pytest.raises(threading.BrokenBarrierError):
            barrier.wait(0.2)
        assert time.monotonic() - started < 0.2 + 2 * TOLERANCE
        assert barrier.broken

    def test_action_runs_once(self, mp: Any, fork: Any) -> None:
        runs = mp.Value("i", 0)

        def action() -> None:
            runs.value += 1

        barrier = mp.Barrier(2, action=action)
        child = fork(target=barrier.wait, args=(20,))
        child.start()
        barrier.wait(20)
        _join([child])
        assert runs.value == 1
