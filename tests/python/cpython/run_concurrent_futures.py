"""Runs the process-pool classes of CPython's own concurrent.futures suite
with ``forkfarm.Executor`` in ProcessPoolExecutor's place, and writes each
test's outcome as JSON.

    python run_concurrent_futures.py --list
    python run_concurrent_futures.py RESULTS.json CLASS [CLASS ...]

The suite is ``test.test_concurrent_futures`` of the interpreter that runs
this script: a package from Python 3.13 on, one module before. A Python
built without it (some pyenv builds) takes Debian's copy from the
``libpython3.X-testsuite`` package (tools/ensure-cpython-suites.sh installs
it): for its own version, or the nearest older one Debian has; the
interpreters the run starts find it too (``suite_path/sitecustomize.py``).
The suite's fork, forkserver and spawn mixins make ``forkfarm.Executor``
with forkfarm's context of the same name; the standard library's
ProcessPoolExecutor, which a few tests make by name, keeps
multiprocessing's.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import unittest
from pathlib import Path
from types import ModuleType
from typing import Any

import forkfarm

from suite_result import run_classes, write_results

PACKAGE = "test.test_concurrent_futures"
# The package's modules with process-pool classes (Python 3.13 and later).
PACKAGE_MODULES = (
    "test_process_pool", "test_shutdown", "test_deadlock", "test_wait",
    "test_as_completed", "test_init",
)
MIXINS = ("ProcessPoolForkMixin", "ProcessPoolForkserverMixin", "ProcessPoolSpawnMixin")


def debian_copy() -> Path | None:
    """Debian's libpython3.X-testsuite copy of the suite: for this Python's
    version if Debian has one, else for the nearest older version it has
    (Debian 12 ships 3.11's only; the suite's process-pool tests are the
    same from 3.11 to 3.12)."""
    major, minor = sys.version_info[:2]
    for older in range(minor, 10, -1):
        base = Path("/usr/lib") / f"python{major}.{older}" / "test"
        for candidate in (base / "test_concurrent_futures", base / "test_concurrent_futures.py"):
            if candidate.exists():
                return candidate
    return None


def _load_debian_copy(location: Path) -> ModuleType:
    """Imports Debian's copy as ``test.test_concurrent_futures``, its
    folder added to the ``test`` package's path (so that its imports of
    ``test.support`` are this interpreter's), here and in every interpreter
    started from here: forkserver and spawn workers import the suite's
    functions by name."""
    import test

    folder = str(location.parent)
    if folder not in test.__path__:
        test.__path__.append(folder)
    os.environ["FORKFARM_CPYTHON_SUITE_DIR"] = folder
    hook = str(Path(__file__).resolve().parent / "suite_path")
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ["PYTHONPATH"] = os.pathsep.join([hook, *(p for p in paths if p)])
    return importlib.import_module(PACKAGE)


def suite_modules() -> tuple[ModuleType, list[ModuleType]]:
    """The module that defines the executor mixins, and the modules with
    test classes."""
    try:
        found = importlib.util.find_spec(PACKAGE)
    except ImportError:
        found = None
    if found is not None:
        top = importlib.import_module(PACKAGE)
    else:
        location = debian_copy()
        if location is None:
            raise SystemExit(
                f"this Python has no {PACKAGE}, and Debian's libpython3.X-testsuite "
                "for it is not installed"
            )
        top = _load_debian_copy(location)
    if hasattr(top, "__path__"):
        modules = [importlib.import_module(f"{PACKAGE}.{name}") for name in PACKAGE_MODULES]
        return importlib.import_module(f"{PACKAGE}.util"), modules
    return top, [top]


def swap_in_forkfarm(mixins_module: ModuleType) -> None:
    """Makes the suite's process-pool mixins build forkfarm's Executor with
    forkfarm's context of the same start method."""

    def get_context(self: Any) -> Any:
        return forkfarm.get_context(self.ctx)

    for name in MIXINS:
        mixin = getattr(mixins_module, name)
        mixin.executor_type = forkfarm.Executor
        mixin.get_context = get_context


def keep_the_standard_executor_standard() -> None:
    """A few tests make the standard library's ProcessPoolExecutor by name,
    with the mixin's context, forkfarm's now: that class is built on
    multiprocessing's queues and locks (it reads their internals), so it
    gets multiprocessing's context of the same start method, and those
    tests check the standard library's class as they do in CPython."""
    import concurrent.futures.process
    import multiprocessing

    cls = concurrent.futures.process.ProcessPoolExecutor
    original = cls.__init__

    def __init__(self: Any, max_workers: Any = None, mp_context: Any = None, *args: Any, **kwargs: Any) -> None:
        if isinstance(mp_context, forkfarm.context.ForkfarmContext):
            mp_context = multiprocessing.get_context(mp_context.get_start_method())
        original(self, max_workers, mp_context, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[method-assign]


def process_pool_classes(modules: list[ModuleType]) -> dict[str, type[unittest.TestCase]]:
    found: dict[str, type[unittest.TestCase]] = {}
    for module in modules:
        for name, value in vars(module).items():
            if (
                name.startswith("ProcessPool")
                and isinstance(value, type)
                and issubclass(value, unittest.TestCase)
            ):
                found[name] = value
    return found


def main(argv: list[str]) -> int:
    mixins_module, modules = suite_modules()
    swap_in_forkfarm(mixins_module)
    keep_the_standard_executor_standard()
    classes = process_pool_classes(modules)
    if argv[1:] == ["--list"]:
        print("\n".join(sorted(classes)))
        return 0
    results_path, names = argv[1], argv[2:]
    set_up = getattr(mixins_module, "setup_module", None) or getattr(
        mixins_module, "setUpModule", None
    )
    outcomes = run_classes(
        [classes[name] for name in names], set_up, None, results_path + ".progress"
    )
    # The suite registers its own clean-ups (threads, the resource tracker)
    # as module clean-ups; unittest runs them after the module's tests.
    unittest.case.doModuleCleanups()
    write_results(results_path, outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
