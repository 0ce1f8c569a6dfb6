"""Runs classes of CPython's own multiprocessing suite with forkfarm in
multiprocessing's place, and writes each test's outcome as JSON.

    python run_multiprocessing.py --list
    python run_multiprocessing.py RESULTS.json CLASS [CLASS ...]

The suite is ``test._test_multiprocessing`` of the interpreter that runs
this script. Its "processes" classes get forkfarm's names through the
suite's own mixin, and its "manager" classes forkfarm's Manager; the module
global ``multiprocessing`` that the test bodies use is forkfarm too, so
nothing falls back to the standard library. One process runs the classes
it is given and then exits as any program would: the driver
(test_cpython_multiprocessing.py) counts a process that does not exit
promptly as a failure.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import forkfarm
import forkfarm.connection
import forkfarm.sharedctypes
import test._test_multiprocessing as suite

from suite_result import run_classes, write_results

START_METHOD = "fork"

# The mixin attributes that are plain functions on the class (the suite
# wraps them in staticmethod so that they do not bind to the test case).
_STATIC_NAMES = (
    "current_process", "parent_process", "active_children", "set_executable",
    "Pool", "Pipe", "Queue", "JoinableQueue", "Lock", "RLock", "Semaphore",
    "BoundedSemaphore", "Condition", "Event", "Barrier", "Value", "Array",
    "RawValue", "RawArray",
)


def _missing(name: str) -> Callable[..., object]:
    """Stands for a name forkfarm lacks, so that only the tests using it fail."""

    def missing(*args: object, **kwargs: object) -> object:
        raise AttributeError(f"module 'forkfarm' has no attribute {name!r}")

    return missing


def swap_in_forkfarm() -> None:
    """Puts forkfarm's names where the suite looks for multiprocessing's."""
    mixin = suite.ProcessesMixin
    for name in _STATIC_NAMES:
        setattr(mixin, name, staticmethod(getattr(forkfarm, name, _missing(name))))
    mixin.Process = forkfarm.Process
    mixin.connection = forkfarm.connection
    suite.ManagerMixin.Process = forkfarm.Process
    suite.multiprocessing = forkfarm
    suite.wait = forkfarm.connection.wait
    suite.Value = forkfarm.sharedctypes.Value
    suite.copy = forkfarm.sharedctypes.copy
    for name in ("util", "reduction", "shared_memory"):
        if hasattr(forkfarm, name):
            setattr(suite, name, getattr(forkfarm, name))


def install() -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "forkfarm_cpython_suite"}
    for kind in ("processes", "manager"):
        suite.install_tests_in_module_dict(namespace, START_METHOD, only_type=kind)
    return namespace


def class_names(namespace: dict[str, object]) -> list[str]:
    return sorted(
        name for name in namespace
        if name.startswith(("WithProcessesTest", "WithManagerTest"))
    )


def main(argv: list[str]) -> int:
    swap_in_forkfarm()
    namespace = install()
    if argv[1:] == ["--list"]:
        print("\n".join(class_names(namespace)))
        return 0
    results_path, names = argv[1], argv[2:]
    outcomes = run_classes(
        [namespace[name] for name in names],  # type: ignore[misc]
        namespace["setUpModule"],  # type: ignore[arg-type]
        namespace["tearDownModule"],  # type: ignore[arg-type]
    )
    write_results(results_path, outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
