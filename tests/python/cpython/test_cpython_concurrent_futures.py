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

# By test id: what forkfarm does differently on purpose, and tests that
# read private internals of the standard library's executor.
ACCEPTED: dict[str, str] = {}

pytestmark = [pytest.mark.cpython_suite, pytest.mark.timeout(CLASS_DEADLINE + 60)]


@pytest.mark.parametrize("class_name", list_classes(RUNNER))
def test_cpython_concurrent_futures_class(
    class_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_class(RUNNER, class_name, tmp_path)
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(run.counts().items()))
    with capsys.disabled():
        print(f"\n  {class_name}: {counts or 'nothing ran'}", end="")
    problems = check_class(class_name, run, ACCEPTED)
    assert not problems, "\n".join(problems)
