"""multiprocessing.managers through the module: a ``BaseManager`` subclass
serving a registered class to the module's processes, ``SyncManager`` and
``SharedMemoryManager``, checked on both modules (the ``mp`` fixture)."""

from __future__ import annotations

import multiprocessing.resource_tracker
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)


class Counter:
    """Served by a manager: each proxy call runs in a thread of its server."""

    def __init__(self, start: int = 0) -> None:
        self._lock = threading.Lock()
        self._value = start

    def add(self, amount: int) -> int:
        with self._lock:
            self._value += amount
            return self._value

    def value(self) -> int:
        return self._value


def _add(counter: Any, amount: int, times: int) -> None:
    for _ in range(times):
        counter.add(amount)


def _append_in_child(shared: Any, value: Any) -> None:
    shared.append(value)


def _double_shareable(shared: Any) -> None:
    for i in range(len(shared)):
        shared[i] = shared[i] * 2


@pytest.fixture
def resource_tracker() -> Iterator[None]:
    """A SharedMemory starts multiprocessing's resource tracker, a child
    process kept for the program's life: one the test started is stopped,
    so that later tests count only their own children."""
    tracker = multiprocessing.resource_tracker._resource_tracker  # type: ignore[attr-defined]
    running = tracker._pid is not None
    yield
    if not running:
        tracker._stop()


class TestManagers:
    def test_a_registered_class_served_to_processes(self, mp: Any) -> None:
        class CounterManager(mp.managers.BaseManager):  # type: ignore[misc,name-defined]
            pass

        CounterManager.register("Counter", Counter)
        with CounterManager() as manager:
            counter = manager.Counter(100)
            assert isinstance(counter, mp.managers.BaseProxy)
            workers = [mp.Process(target=_add, args=(counter, 1, 50)) for _ in range(3)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(20)
            assert [worker.exitcode for worker in workers] == [0, 0, 0]
            assert counter.value() == 250
            assert manager._process.is_alive()
        assert manager._process.exitcode is not None

    def test_a_manager_whose_server_is_the_modules_process(self, mp: Any) -> None:
        class CounterManager(mp.managers.BaseManager):  # type: ignore[misc,name-defined]
            pass

        CounterManager.register("Counter", Counter)
        with CounterManager(ctx=mp.get_context("fork")) as manager:
            counter = manager.Counter()
            worker = mp.Process(target=_add, args=(counter, 2, 10))
            worker.start()
            worker.join(20)
            assert worker.exitcode == 0
            assert counter.value() == 20

    def test_sync_manager(self, mp: Any) -> None:
        with mp.Manager() as manager:
            assert isinstance(manager, mp.managers.SyncManager)
            shared = manager.list()
            worker = mp.Process(target=_append_in_child, args=(shared, "from the child"))
            worker.start()
            worker.join(20)
            assert worker.exitcode == 0
            assert list(shared) == ["from the child"]

    def test_shared_memory_manager(self, mp: Any, resource_tracker: None) -> None:
        with mp.managers.SharedMemoryManager() as manager:
            shared = manager.ShareableList([1, 2, 3])
            worker = mp.Process(target=_double_shareable, args=(shared,))
            worker.start()
            worker.join(20)
            assert worker.exitcode == 0
            assert list(shared) == [2, 4, 6]
