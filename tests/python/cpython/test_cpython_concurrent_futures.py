"""CPython's own concurrent.futures suite, ``test.test_concurrent_futures``,
with ``forkfarm.Executor`` in ProcessPoolExecutor's place
(run_concurrent_futures.py says how).

Every process-pool class (executor, wait, as_completed, shutdown,
initializer, failing initializer and deadlock, under the fork, forkserver
and spawn contexts) runs in a child interpreter of its own; every test must
pass, apart from the accepted failures below, each with its reason.
docs/migration.md repeats the list. A hang, or an interpreter that does not
exit after its class, fails.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from run_concurrent_futures import debian_copy
from suite_driver import CLASS_DEADLINE, check_class, list_classes, run_class

if importlib.util.find_spec("test.test_concurrent_futures") is None and debian_copy() is None:
    pytest.skip(
        "this Python has no test.test_concurrent_futures, and no Debian "
        "libpython3.X-testsuite is installed (tools/ensure-cpython-suites.sh)",
        allow_module_level=True,
    )

RUNNER = "run_concurrent_futures.py"

# By test id: what forkfarm does differently on purpose, tests that run the
# standard library's class by construction, and tests of the standard
# library's executor's private internals. docs/migration.md has the same
# list, under "concurrent.futures".
_CONTEXTS = ("Fork", "Forkserver", "Spawn")
_LOST_WORKER = (
    "deliberate: a worker that dies fails only the call it was running (here with "
    "WorkerLostError, a BrokenProcessPool); the executor replaces it and takes more "
    "calls, where ProcessPoolExecutor breaks and refuses every later submit()"
)
_MAX_TASKS = (
    "deliberate: max_tasks_per_child works with the fork start method (workers are "
    "forked from the single-threaded zygote, so the deadlock that makes CPython refuse "
    "the combination, gh-90622, cannot happen), so no ValueError is raised"
)
_MAX_TASKS_SPAWN = (
    "deliberate: with max_tasks_per_child and no mp_context the executor keeps its "
    "usual start method rather than switch to spawn, since fork is safe with it "
    "(gh-90622 does not apply to forks from the zygote)"
)
_EXECUTOR_BY_NAME = (
    "by construction: the child script imports concurrent.futures.{executor_type.__name__}, "
    "which is the abstract concurrent.futures.Executor for forkfarm.Executor "
    "('Executor() takes no arguments')"
)
_GH83386 = (
    "by construction: the child script imports concurrent.futures.{executor_type.__name__} "
    "(the abstract Executor here) and calls multiprocessing.set_start_method without "
    "importing multiprocessing (NameError); the suite skips it for ProcessPoolExecutor "
    "itself, which hangs there (gh-83386)"
)
_FINALIZATION = (
    "private internals: it makes the standard library's executor fail to start its "
    "queue feeder thread (threading._start_joinable_thread mocked) and expects "
    "BrokenProcessPool; forkfarm.Executor starts no thread, so the map runs, and "
    "fails with the TypeError of mul() called with one argument"
)
ACCEPTED: dict[str, str] = {
    **{f"ProcessPool{c}ProcessPoolExecutorTest.test_killed_child": _LOST_WORKER for c in _CONTEXTS},
    "ProcessPoolForkProcessPoolExecutorTest.test_max_tasks_per_child": _MAX_TASKS,
    **{
        f"ProcessPool{c}ProcessPoolExecutorTest.test_max_tasks_per_child_defaults_to_spawn_context": _MAX_TASKS_SPAWN
        for c in _CONTEXTS
    },
    **{
        f"ProcessPool{c}ProcessPoolShutdownTest.{name}": _EXECUTOR_BY_NAME
        for c in _CONTEXTS
        for name in ("test_interpreter_shutdown", "test_submit_after_interpreter_shutdown")
    },
    **{f"ProcessPool{c}ProcessPoolShutdownTest.test_hang_gh83386": _GH83386 for c in _CONTEXTS},
    # Python 3.13 on.
    **{f"ProcessPool{c}ProcessPoolExecutorTest.test_python_finalization_error": _FINALIZATION for c in _CONTEXTS},
}

pytestmark = [pytest.mark.cpython_suite, pytest.mark.timeout(CLASS_DEADLINE + 60)]


@pytest.mark.parametrize("class_name", list_classes(RUNNER))
def test_cpython_concurrent_futures_class(
    class_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_class(RUNNER, class_name, tmp_path)
    with capsys.disabled():
        print(f"\n  {class_name}: {run.summary(ACCEPTED)}", end="")
    problems = check_class(class_name, run, ACCEPTED)
    assert not problems, "\n".join(problems)
