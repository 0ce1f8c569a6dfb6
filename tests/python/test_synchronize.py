"""forkfarm's process-shared Lock, RLock, Semaphore, BoundedSemaphore,
Event, Condition and Barrier: what they add to multiprocessing's (a dead
holder does not keep a lock, handles in pool tasks, slots reused) and FAULTS
row 17. Behaviour shared with multiprocessing is checked against it in
compat/test_compat_primitives.py."""

from __future__ import annotations

import gc
import importlib.util
import os
import pickle
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import forkfarm
import helpers
from forkfarm import synchronize

pytestmark = pytest.mark.timeout(60)


def _fork(body: Any) -> int:
    """Runs body() in a forked child that then exits; returns its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


class TestDeadHolder:
    """Row 17: a process killed while it holds a lock does not hang the
    others; the next acquirer takes the lock over, warned, in bounded time."""

    @pytest.mark.parametrize("kind", [forkfarm.Lock, forkfarm.RLock])
    def test_holder_exits(self, kind: Any) -> None:
        lock = kind()
        pid = _fork(lock.acquire)
        os.waitpid(pid, 0)
        started = time.monotonic()
        with pytest.warns(forkfarm.AbandonedLockWarning, match=f"process {pid} died"):
            assert lock.acquire(timeout=5)
        assert time.monotonic() - started < 1.0
        lock.release()
        assert lock.acquire(timeout=0)
        lock.release()

    def test_waiter_recovers_when_holder_is_killed(self) -> None:
        lock = forkfarm.Lock()
        held = forkfarm.Event()

        def hold() -> None:
            lock.acquire()
            held.set()
            time.sleep(60)

        pid = _fork(hold)
        try:
            assert held.wait(10)
            assert not lock.acquire(timeout=0.2)  # a live holder keeps it
            threading.Timer(0.2, os.kill, (pid, signal.SIGKILL)).start()
            started = time.monotonic()
            with pytest.warns(forkfarm.AbandonedLockWarning):
                assert lock.acquire(timeout=10)
            assert time.monotonic() - started < 1.5
            lock.release()
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

    def test_pool_worker_killed_holding_an_inherited_lock(self) -> None:
        lock = forkfarm.Lock()
        with forkfarm.Pool(2, initializer=helpers.set_shared_lock, initargs=(lock,)) as p:
            with pytest.raises(forkfarm.WorkerLostError):
                p.apply(helpers.take_shared_lock_and_die)
            taken, caught = p.apply(helpers.take_shared_lock, (5.0,))
            assert taken
            assert any("died holding it" in message for message in caught)
            # Once taken over, it is an ordinary lock again.
            assert p.apply(helpers.take_shared_lock, (5.0,)) == (True, [])
        assert lock.acquire(timeout=0)
        lock.release()

    def test_pool_worker_killed_holding_a_lock_passed_as_argument(self) -> None:
        lock = forkfarm.Lock()
        with forkfarm.Pool(1) as p:
            with pytest.raises(forkfarm.WorkerLostError):
                p.apply(helpers.take_lock_and_die, (lock,))
            with pytest.warns(forkfarm.AbandonedLockWarning):
                assert lock.acquire(timeout=5)
            lock.release()


class TestAcrossAPool:
    def test_lock_protects_a_shared_counter(self) -> None:
        lock = forkfarm.Lock()
        counter = forkfarm.RawValue("i", 0)
        with forkfarm.Pool(2) as p:
            pids = p.starmap(helpers.add_under_lock, [(lock, counter, 2000)] * 4, chunksize=1)
        assert counter.value == 8000
        assert len(set(pids)) >= 1

    def test_value_uses_a_forkfarm_rlock(self) -> None:
        value = forkfarm.Value("i", 0)
        assert isinstance(value.get_lock(), forkfarm.RLock)
        with forkfarm.Pool(2, initializer=helpers.set_shared_lock, initargs=(value,)) as p:
            p.map(helpers.increment_shared_value, range(200))
        assert value.value == 200

    def test_event_and_semaphore_travel_as_handles(self) -> None:
        event = forkfarm.Event()
        semaphore = forkfarm.Semaphore(0)
        with forkfarm.Pool(2) as p:
            waiting = p.apply_async(helpers.wait_event, (event, 10.0))
            time.sleep(0.1)
            assert not waiting.ready()
            event.set()
            assert waiting.get(timeout=10) is True
            p.apply(helpers.release_semaphore, (semaphore, 3))
        assert semaphore.get_value() == 3

    def test_plain_pickle_is_refused(self) -> None:
        for obj in (forkfarm.Lock(), forkfarm.RLock(), forkfarm.Semaphore(), forkfarm.Event(),
                    forkfarm.Condition()):
            with pytest.raises(RuntimeError, match="inheritance"):
                pickle.dumps(obj)


class TestSlots:
    def test_slots_are_reused(self) -> None:
        gc.collect()
        slabs = len(synchronize._slabs.slabs)
        for _ in range(5000):
            forkfarm.Lock()
            forkfarm.Event()
        gc.collect()
        # 10,000 primitives made and dropped fit in the slabs there were
        # (or one more: the 1,024 slots of a slab are reused).
        assert len(synchronize._slabs.slabs) <= max(slabs, 1) + 1

    def test_a_pool_keeps_the_slots_its_workers_copied(self) -> None:
        lock = forkfarm.Lock()
        segment, offset = lock._segment, lock._offset
        with forkfarm.Pool(1) as p:
            del lock
            gc.collect()
            # The zygote holds a copy: the slot must not go to a new lock.
            fresh = [forkfarm.Lock() for _ in range(2000)]
            assert all((f._segment, f._offset) != (segment, offset) for f in fresh)
            p.apply(helpers.square, (2,))
        del fresh


class TestBehaviour:
    def test_event_repr_says_whether_it_is_set(self) -> None:
        event = forkfarm.Event()
        assert repr(event) == f"<Event at {id(event):#x} unset>"
        event.set()
        assert repr(event) == f"<Event at {id(event):#x} set>"

    def test_connection_families_are_multiprocessings(self) -> None:
        import multiprocessing.connection

        assert forkfarm.connection.families == multiprocessing.connection.families
        assert "AF_UNIX" in forkfarm.connection.families

    def test_rlock_is_recursive_and_owned(self) -> None:
        lock = forkfarm.RLock()
        assert lock.acquire() and lock.acquire()
        errors: list[BaseException] = []

        def other() -> None:
            try:
                lock.release()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert isinstance(errors[0], AssertionError)
        lock.release()
        lock.release()
        with pytest.raises(AssertionError):
            lock.release()

    def test_bounded_semaphore(self) -> None:
        semaphore = forkfarm.BoundedSemaphore(2)
        assert semaphore.acquire(timeout=0)
        semaphore.release()
        with pytest.raises(ValueError, match="released too many times"):
            semaphore.release()

    @pytest.mark.parametrize("bad", [-1, 1.5, "2"])
    def test_semaphore_bad_value(self, bad: Any) -> None:
        with pytest.raises((ValueError, TypeError)):
            forkfarm.Semaphore(bad)

    def test_condition_needs_its_lock(self) -> None:
        condition = forkfarm.Condition()
        with pytest.raises(AssertionError):
            condition.wait(0.01)
        with pytest.raises(AssertionError):
            condition.notify()
        with pytest.raises(TypeError, match="forkfarm Lock"):
            forkfarm.Condition(threading.Lock())  # type: ignore[arg-type]

    def test_wait_for(self) -> None:
        condition = forkfarm.Condition(forkfarm.Lock())
        flag = forkfarm.RawValue("i", 0)

        def later() -> None:
            time.sleep(0.1)
            with condition:
                flag.value = 1
                condition.notify_all()

        thread = threading.Thread(target=later)
        thread.start()
        with condition:
            assert condition.wait_for(lambda: flag.value == 1, timeout=10)
            assert not condition.wait_for(lambda: flag.value == 2, timeout=0.05)
        thread.join()

    def test_ctrl_c_interrupts_a_wait(self) -> None:
        lock = forkfarm.Lock()
        lock.acquire()
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            lock.acquire(timeout=10)
        assert time.monotonic() - started < 1.0
        lock.release()

    def test_no_warning_for_an_ordinary_handoff(self) -> None:
        lock = forkfarm.Lock()
        lock.acquire()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            threading.Timer(0.1, lock.release).start()
            assert lock.acquire(timeout=5)
            lock.release()


def _ping_pong(condition: Any, trips: int, timeout: float) -> int:
    """One side of a ping-pong: trips x (notify, wait), then a last notify
    for the other side's last wait. Returns the waits that timed out."""
    missed = 0
    with condition:
        for _ in range(trips):
            condition.notify()
            if not condition.wait(timeout):
                missed += 1
        condition.notify()
    return missed


def _start_waiters(condition: Any, count: int, where: str, timeout: float = 20.0) -> tuple[Any, Any]:
    """count waiters (forked children or threads) that wait once on
    condition; returns (their join, a counter of those notified). Returns
    once all of them are inside wait()."""
    ready = forkfarm.Semaphore(0)
    woken = forkfarm.Value("i", 0)

    def wait() -> None:
        with condition:
            ready.release()
            notified = condition.wait(timeout)
        if notified:
            with woken.get_lock():
                woken.value += 1

    if where == "processes":
        pids = [_fork(wait) for _ in range(count)]

        def join() -> None:
            for pid in pids:
                assert os.waitpid(pid, 0)[1] == 0
    else:
        threads = [threading.Thread(target=wait) for _ in range(count)]
        for thread in threads:
            thread.start()

        def join() -> None:
            for thread in threads:
                thread.join(timeout + 10)
                assert not thread.is_alive()

    for _ in range(count):
        assert ready.acquire(timeout=10)
    with condition:  # each waiter released ready under the lock: all wait now
        pass
    return join, woken


class TestCondition:
    """A notify wakes waiters that were waiting before it, and only as many
    as it says; nothing a waiter leaves behind (a timeout, its death) makes
    a later notify go missing."""

    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("lock", [forkfarm.Lock, forkfarm.RLock])
    def test_ping_pong_parent_and_child(self, lock: Any) -> None:
        condition = forkfarm.Condition(lock())
        theirs = forkfarm.RawValue("i", -1)

        def child() -> None:
            theirs.value = _ping_pong(condition, 20_000, 5.0)

        pid = _fork(child)
        mine = _ping_pong(condition, 20_000, 5.0)
        assert os.waitpid(pid, 0)[1] == 0
        assert (mine, theirs.value) == (0, 0)
        assert condition._sleeping_count.get_value() == 0

    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("lock", [forkfarm.Lock, forkfarm.RLock])
    def test_ping_pong_two_threads(self, lock: Any) -> None:
        condition = forkfarm.Condition(lock())
        theirs: list[int] = []
        thread = threading.Thread(target=lambda: theirs.append(_ping_pong(condition, 20_000, 5.0)))
        thread.start()
        mine = _ping_pong(condition, 20_000, 5.0)
        thread.join(60)
        assert (mine, theirs) == (0, [0])

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("where", ["processes", "threads"])
    def test_notify_one_of_three_wakes_exactly_one(self, where: str) -> None:
        condition = forkfarm.Condition()
        join, woken = _start_waiters(condition, 3, where)
        with condition:
            condition.notify(1)
        time.sleep(0.3)
        assert woken.value == 1
        with condition:
            condition.notify(1)
        time.sleep(0.3)
        assert woken.value == 2
        with condition:
            condition.notify_all()
        join()
        assert woken.value == 3
        assert condition._sleeping_count.get_value() == 0
        assert condition._wait_semaphore.get_value() == 0

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("n", [0, -1])
    def test_notify_of_none_wakes_nobody(self, n: int) -> None:
        condition = forkfarm.Condition()
        join, woken = _start_waiters(condition, 2, "threads", timeout=0.5)
        with condition:
            condition.notify(n)
        join()
        assert woken.value == 0

    @pytest.mark.timeout(60)
    def test_a_notifier_does_not_wake_itself(self) -> None:
        """The notifier's next wait begins after its notify: the waiter
        that was there gets the notification, however late it wakes."""
        condition = forkfarm.Condition()
        join, woken = _start_waiters(condition, 1, "processes")
        with condition:
            condition.notify()
            assert condition.wait(0.2) is False
        join()
        assert woken.value == 1

    @pytest.mark.timeout(60)
    def test_timed_out_waits_leave_no_trace(self) -> None:
        condition = forkfarm.Condition()
        with condition:
            for _ in range(3):
                started = time.monotonic()
                assert condition.wait(0.05) is False
                assert time.monotonic() - started >= 0.05
        assert condition._sleeping_count.get_value() == 0
        join, woken = _start_waiters(condition, 2, "processes")
        with condition:
            condition.notify(1)
        time.sleep(0.3)
        assert woken.value == 1
        with condition:
            condition.notify(1)
        join()
        assert woken.value == 2

    @pytest.mark.timeout(60)
    def test_a_killed_waiter_does_not_eat_a_later_notify(self) -> None:
        condition = forkfarm.Condition()
        ready = forkfarm.Semaphore(0)

        def wait_for_ever() -> None:
            with condition:
                ready.release()
                condition.wait()

        pid = _fork(wait_for_ever)
        assert ready.acquire(timeout=10)
        with condition:  # it is inside wait() now
            pass
        time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        # A notify while only the dead one waits is not kept for a wait
        # that begins after it...
        with condition:
            condition.notify()
            assert condition.wait(0.1) is False
        # ...and each later notify wakes the living waiter, at once.
        for where in ("processes", "threads", "processes"):
            join, woken = _start_waiters(condition, 1, where)
            started = time.monotonic()
            with condition:
                condition.notify()
            join()
            assert woken.value == 1
            assert time.monotonic() - started < 2.0

    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("timeouts", [(None,), (None, 0.0005, 0.01)])
    def test_bounded_buffer_across_processes_and_threads(self, timeouts: tuple[float | None, ...]) -> None:
        """Producers and consumers, 3 processes of each with 2 threads
        each, hand 30,000 items through a buffer of one with notify(1) on
        two conditions of one lock (and with some waits timing out): none
        hangs, and every notification is taken."""
        lock = forkfarm.Lock()
        not_empty, not_full = forkfarm.Condition(lock), forkfarm.Condition(lock)
        count, moved = forkfarm.RawValue("l", 0), forkfarm.RawValue("l", 0)
        per_thread = 5_000

        def threads(body: Any) -> None:
            workers = [threading.Thread(target=body) for _ in range(2)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

        def produce() -> None:
            for i in range(per_thread):
                with lock:
                    while count.value >= 1:
                        not_full.wait(timeouts[i % len(timeouts)])
                    count.value += 1
                    not_empty.notify()

        def consume() -> None:
            for i in range(per_thread):
                with lock:
                    while count.value == 0:
                        not_empty.wait(timeouts[i % len(timeouts)])
                    count.value -= 1
                    moved.value += 1
                    not_full.notify()

        pids = [_fork(lambda: threads(produce)) for _ in range(3)]
        pids += [_fork(lambda: threads(consume)) for _ in range(3)]
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
        assert (moved.value, count.value) == (30_000, 0)
        for condition in (not_empty, not_full):
            assert condition._sleeping_count.get_value() == 0
            assert condition._wait_semaphore.get_value() == 0

    @pytest.mark.timeout(60)
    def test_ctrl_c_interrupts_a_wait_which_keeps_its_lock(self) -> None:
        condition = forkfarm.Condition()
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        with condition:
            with pytest.raises(KeyboardInterrupt):
                condition.wait(10)
            assert condition._lock._is_owned()
        assert time.monotonic() - started < 2.0
        assert condition._sleeping_count.get_value() == 0

    def test_repr_counts_the_waiters(self) -> None:
        condition = forkfarm.Condition(forkfarm.Lock())
        assert repr(condition) == "<Condition(<Lock(owner=None)>, 0)>"
        join, _ = _start_waiters(condition, 2, "threads", timeout=0.3)
        assert repr(condition).endswith(", 2)>")
        join()


class TestBarrier:
    @pytest.mark.timeout(60)
    def test_abort_then_reset_across_processes(self) -> None:
        """CPython's test_abort_and_reset, in short: one party aborts, the
        others see BrokenBarrierError, a reset makes the barrier whole."""
        parties = 4
        barrier = forkfarm.Barrier(parties, timeout=20)
        between = forkfarm.Barrier(parties, timeout=20)
        broken = forkfarm.Value("i", 0)
        passed = forkfarm.Value("i", 0)

        def party(aborter: bool) -> None:
            try:
                barrier.wait()
                if aborter:
                    barrier.abort()
                else:
                    barrier.wait()
            except threading.BrokenBarrierError:
                with broken.get_lock():
                    broken.value += 1
            if between.wait() == 0:
                barrier.reset()
            between.wait()
            barrier.wait()
            with passed.get_lock():
                passed.value += 1

        started = time.monotonic()
        pids = [_fork(lambda: party(False)) for _ in range(parties - 2)]
        pids.append(_fork(lambda: party(True)))
        party(False)
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
        assert (broken.value, passed.value) == (parties - 1, parties)
        assert not barrier.broken
        assert time.monotonic() - started < 10


CPYTHON_SUITE = Path(__file__).resolve().parent / "cpython"
PRIMITIVE_CLASSES = [
    f"WithProcesses{name}"
    for name in ("TestLock", "TestSemaphore", "TestCondition", "TestEvent", "TestBarrier")
]


@pytest.mark.cpython_suite
@pytest.mark.timeout(600)
@pytest.mark.parametrize("class_name", PRIMITIVE_CLASSES)
def test_cpythons_own_tests_pass_and_no_child_prints_a_traceback(class_name: str, tmp_path: Path) -> None:
    """CPython's _TestLock, _TestSemaphore, _TestCondition, _TestEvent and
    _TestBarrier with forkfarm's names (cpython/test_cpython_multiprocessing.py
    runs them too) pass, and no child process prints a traceback: before the
    Condition was fixed, lost wake-ups broke barriers and the children died
    with BrokenBarrierError ("Process Process-N:")."""
    try:
        found = importlib.util.find_spec("test._test_multiprocessing") is not None
    except ModuleNotFoundError:  # no test package at all
        found = False
    if not found:
        pytest.skip("this interpreter has no test suite")
    if str(CPYTHON_SUITE) not in sys.path:
        sys.path.insert(0, str(CPYTHON_SUITE))
    from suite_driver import run_class

    run = run_class("run_multiprocessing.py", class_name, tmp_path)
    assert not run.hung and run.returncode == 0, run.log_tail
    outcomes = {test: result["outcome"] for test, result in run.outcomes.items()}
    assert outcomes and set(outcomes.values()) <= {"passed", "skipped"}, outcomes
    output = (tmp_path / f"{class_name}.log").read_text(errors="replace")
    assert "Traceback" not in output and "Process Process-" not in output, output[-4000:]
