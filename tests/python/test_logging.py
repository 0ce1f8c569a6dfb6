"""Log records of workers handled by the parent's loggers (docs/logging.md):
with their level, logger name, message, worker pid and exception text, at
the level asked for, and not lost when the worker dies."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import output_tasks as tasks
import pytest

import forkfarm
from forkfarm import _logging

pytestmark = pytest.mark.timeout(60)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[Collect]:
    """The root logger configured, as a program that called basicConfig."""
    root = logging.getLogger()
    handler = Collect()
    saved = root.level, list(root.handlers)
    for old in saved[1]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for old in saved[1]:
            root.addHandler(old)
        root.setLevel(saved[0])


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_records_reach_the_parent_loggers_when_logging_is_configured(collected: Collect, method: str) -> None:
    with forkfarm.Pool(1, context=method) as pool:
        assert pool.apply(tasks.log_levels, (3,)) == 3
        # Handled before the result was delivered.
        messages = [(r.levelname, r.name, r.getMessage()) for r in collected.records]
    assert messages == [
        ("INFO", "worker.task", "info 3"),
        ("WARNING", "worker.task", "warning 3"),
        ("ERROR", "worker.task", "failed 3"),
    ]
    error = collected.records[-1]
    assert error.process != os.getpid() and error.process is not None
    assert error.processName == ("ForkPoolWorker-1" if method == "fork" else "ForkServerPoolWorker-1")
    assert error.exc_text is not None and "ZeroDivisionError: division by zero" in error.exc_text
    assert error.forkfarm_worker == 0  # type: ignore[attr-defined]


def test_log_level_asks_for_more(collected: Collect) -> None:
    with forkfarm.Executor(1, log_level="DEBUG") as executor:
        assert executor.submit(tasks.log_levels, 4).result(30) == 4
    assert [r.getMessage() for r in collected.records][:2] == ["debug 4", "info 4"]


def test_records_are_not_forwarded_without_configuration_or_log_level() -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    for old in saved:
        root.removeHandler(old)
    try:
        with forkfarm.Pool(1, output="inherit") as pool:
            assert pool._engine.capture is False
    finally:
        for old in saved:
            root.addHandler(old)


def test_a_record_logged_before_the_worker_died_is_not_lost(collected: Collect) -> None:
    with forkfarm.Pool(1) as pool:
        with pytest.raises(forkfarm.WorkerLostError):
            pool.apply(tasks.speak_then_die, (5,))
    assert [r.getMessage() for r in collected.records] == ["record before death 5"]


def test_a_record_with_an_unpicklable_attribute_still_arrives(collected: Collect) -> None:
    with forkfarm.Pool(1) as pool:
        assert pool.apply(tasks.log_unpicklable, (6,)) == 6
    (record,) = collected.records
    assert record.getMessage() == "holding 6"
    assert "lock" in str(record.lock)  # type: ignore[attr-defined]


def test_a_record_cut_short_is_left_out() -> None:
    handler = _logging.ForwardingHandler(-1, logging.NOTSET)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "whole %s", ("one",), None)
    import pickle
    import struct

    body = pickle.dumps(handler.prepare(record))
    frame = struct.pack("<I", len(body)) + body
    decoded = _logging.decode(frame + frame[: len(frame) // 2])
    assert [r.getMessage() for r in decoded] == ["whole one"]


def test_bad_log_levels_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="log_level 'LOUD' is not a logging level name"):
        forkfarm.Pool(1, log_level="LOUD")
    with pytest.raises(TypeError, match="log_level must be a logging level"):
        forkfarm.Pool(1, log_level=2.5)  # type: ignore[arg-type]
