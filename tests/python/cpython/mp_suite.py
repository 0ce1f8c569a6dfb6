"""CPython's ``test._test_multiprocessing`` with forkfarm in
multiprocessing's place, installed in this module's namespace when it is
imported: the suite's test classes are this module's, so that workers (a
fork server's included) find them by reference as they would find a test
module's classes.
"""

from __future__ import annotations

from collections.abc import Callable

import forkfarm
import forkfarm.connection
import forkfarm.sharedctypes
import test._test_multiprocessing as suite

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


def install() -> None:
    for kind in ("processes", "manager"):
        suite.install_tests_in_module_dict(globals(), START_METHOD, only_type=kind)


def class_names() -> list[str]:
    return sorted(
        name for name in globals()
        if name.startswith(("WithProcessesTest", "WithManagerTest"))
    )


swap_in_forkfarm()
install()


