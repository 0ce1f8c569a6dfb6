"""CPython's own multiprocessing suite, ``test._test_multiprocessing``, with
forkfarm in multiprocessing's place (run_multiprocessing.py says how).

Every class of the suite's "processes" variant and of its "manager" variant
runs in a child interpreter of its own; every test must pass, apart from the
accepted failures below, each with its reason. docs/migration.md repeats the
list. A hang, or an interpreter that does not exit after its class, fails.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from suite_driver import CLASS_DEADLINE, check_class, list_classes, run_class

if importlib.util.find_spec("test._test_multiprocessing") is None:
    pytest.skip(
        "this Python has no test._test_multiprocessing (Debian's python3 needs "
        "libpython3.X-testsuite)",
        allow_module_level=True,
    )

RUNNER = "run_multiprocessing.py"

# By test id: what forkfarm does differently on purpose, and tests that
# read private internals of multiprocessing's implementation.
_NO_FEEDER = (
    "deliberate: forkfarm's Queue has no feeder thread, so put() of an object "
    "that cannot be pickled raises in the caller, where multiprocessing's feeder "
    "thread reports it later (through its private _on_queue_feeder_error hook) "
    "and the caller never learns"
)
_CLOSE_KEEPS_READING = (
    "deliberate: close() ends this handle's puts, and its get() and empty() go on "
    "working; multiprocessing 3.13's feeder thread closes the reading end too, so "
    "empty() raises OSError there, but only once a put has started that thread"
)
_PLAIN_PICKLE = (
    "deliberate: forkfarm's pipes and queues pickle with plain pickle, not "
    "multiprocessing's ForkingPickler and its registered reducers, so a "
    "multiprocessing Connection or a socket does not travel through them, and "
    "a forkfarm Connection travels by inheritance only (docs/migration.md); "
    "descriptors travel with reduction.send_handle"
)
ACCEPTED: dict[str, str] = {
    "WithProcessesTestPicklingConnections.test_access": _PLAIN_PICKLE,
    "WithProcessesTestPicklingConnections.test_pickling": _PLAIN_PICKLE,
    "WithProcessesTestQueue.test_queue_feeder_donot_stop_onexc": _NO_FEEDER,
    "WithProcessesTestQueue.test_queue_feeder_on_queue_feeder_error": _NO_FEEDER,
    # From Python 3.13 on; the test makes its queues with multiprocessing.Queue
    # (forkfarm's here) in both variants.
    "WithProcessesTestQueue.test_closed_queue_empty_exceptions": _CLOSE_KEEPS_READING,
    "WithManagerTestQueue.test_closed_queue_empty_exceptions": _CLOSE_KEEPS_READING,
    "WithProcessesTestPoolWorkerErrors.test_unpickleable_result": (
        "deliberate: a result that pickle refuses (a lambda) travels by value "
        "with cloudpickle, so the task succeeds where multiprocessing raises "
        "MaybeEncodingError"
    ),
}

pytestmark = [pytest.mark.cpython_suite, pytest.mark.timeout(CLASS_DEADLINE + 60)]


@pytest.mark.parametrize("class_name", list_classes(RUNNER))
def test_cpython_multiprocessing_class(
    class_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_class(RUNNER, class_name, tmp_path)
    with capsys.disabled():
        print(f"\n  {class_name}: {run.summary(ACCEPTED)}", end="")
    problems = check_class(class_name, run, ACCEPTED)
    assert not problems, "\n".join(problems)
