"""Runs unittest classes of a CPython suite and records each test's outcome,
for the drivers of CPython's multiprocessing and concurrent.futures suites.

An outcome is one of "passed", "failed", "error", "skipped",
"expected-failure" (the suite's own @expectedFailure),
"unexpected-success", and "running" for a test that never ended; a failure keeps the last lines of its traceback so
that the driver can show why.
"""

from __future__ import annotations

import json
import os
import sys
import time
import unittest
from collections.abc import Callable, Iterable
from typing import Any

DETAIL_LINES = 25


def _test_id(test: unittest.TestCase | Any) -> str:
    # A class whose setUpClass fails reports a _ErrorHolder, named after it.
    description = getattr(test, "description", None)
    if description is not None:
        return str(description)
    return f"{type(test).__name__}.{test._testMethodName}"


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-DETAIL_LINES:])


class RecordingResult(unittest.TextTestResult):
    """A TextTestResult that also keeps each test's outcome by test id."""

    #: Where the outcomes so far are written after each test, so that a
    #: class that hangs still tells which test it hung in.
    results_path: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, dict[str, Any]] = {}
        self._started = 0.0

    def _record(self, test: Any, outcome: str, detail: str = "") -> None:
        self.outcomes[_test_id(test)] = {
            "outcome": outcome,
            "detail": detail,
            "seconds": round(time.monotonic() - self._started, 3),
        }

    def startTest(self, test: unittest.TestCase) -> None:  # noqa: N802 - unittest's name
        self._started = time.monotonic()
        super().startTest(test)
        self._record(test, "running")
        self._save()

    def stopTest(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().stopTest(test)
        self._save()

    def _save(self) -> None:
        if self.results_path is not None:
            write_results(self.results_path, self.outcomes)

    def addSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        super().addFailure(test, err)
        self._record(test, "failed", _tail(self.failures[-1][1]))

    def addError(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        super().addError(test, err)
        self._record(test, "error", _tail(self.errors[-1][1]))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        super().addExpectedFailure(test, err)
        self._record(test, "expected-failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)
        self._record(test, "unexpected-success")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802
        super().addSubTest(test, subtest, err)
        if err is not None:
            # unittest reports no success for a test whose subtest failed.
            self.outcomes[_test_id(test)] = {
                "outcome": "failed",
                "detail": _tail(self._exc_info_to_string(err, test)),
                "seconds": round(time.monotonic() - self._started, 3),
            }


def run_classes(
    classes: Iterable[type[unittest.TestCase]],
    set_up_module: Callable[[], None] | None = None,
    tear_down_module: Callable[[], None] | None = None,
    results_path: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Runs the classes' tests (between the module's set-up and tear-down,
    as unittest would) and returns the outcome of each, writing the
    outcomes so far to results_path after each test."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(cls) for cls in classes)

    class Result(RecordingResult):
        pass

    Result.results_path = results_path
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=Result)
    outcomes: dict[str, dict[str, Any]] = {}
    if set_up_module is not None:
        try:
            set_up_module()
        except unittest.SkipTest as skip:
            for test in _flatten(suite):
                outcomes[_test_id(test)] = {"outcome": "skipped", "detail": str(skip), "seconds": 0}
            return outcomes
    try:
        result = runner.run(suite)
        assert isinstance(result, RecordingResult)
        outcomes.update(result.outcomes)
    finally:
        if tear_down_module is not None:
            tear_down_module()
    return outcomes


def _flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    found: list[unittest.TestCase] = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            found.extend(_flatten(item))
        else:
            found.append(item)
    return found


def write_results(path: str, outcomes: dict[str, dict[str, Any]]) -> None:
    """Writes the outcomes whole or not at all: the driver reads a missing
    file as a run that never finished."""
    partial = path + ".partial"
    with open(partial, "w") as stream:
        json.dump(outcomes, stream, indent=1, sort_keys=True)
    os.replace(partial, path)
