"""What the drivers of CPython's suites share: run some classes of a suite in
a child interpreter, with a deadline, and compare each test's outcome with
the list of accepted failures.

A class runs in its own process group so that a hang, the interpreter's at
exit included, is ended whole and reported as a failure: a hang is never
accepted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# How long one class may take, its interpreter's exit included. The
# standard library's slowest class takes about 40 s on two cores.
CLASS_DEADLINE = 240.0

FAILING = ("failed", "error", "unexpected-success", "running")


@dataclass
class ClassRun:
    """The outcome of running one class in a child interpreter."""

    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    hung: bool = False
    returncode: int | None = None
    log_tail: str = ""

    def counts(self, accepted: dict[str, str]) -> dict[str, int]:
        """Tests by outcome, the failures on the accepted list counted as
        "accepted"."""
        counted: dict[str, int] = {}
        for test_id, result in self.outcomes.items():
            outcome = result["outcome"]
            if outcome in FAILING and outcome != "running" and test_id in accepted:
                outcome = "accepted"
            counted[outcome] = counted.get(outcome, 0) + 1
        return counted

    def summary(self, accepted: dict[str, str]) -> str:
        """One line for the log: "25 passed, 1 skipped, 2 accepted"."""
        counted = self.counts(accepted)
        return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counted.items())) or "nothing ran"


def list_classes(runner: str) -> list[str]:
    """The class names that the runner script offers on this Python."""
    listed = subprocess.run(
        [sys.executable, str(HERE / runner), "--list"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if listed.returncode != 0:
        raise RuntimeError(f"{runner} --list failed:\n{listed.stderr[-4000:]}")
    return [line for line in listed.stdout.splitlines() if line.strip()]


def run_class(runner: str, class_name: str, workdir: Path) -> ClassRun:
    """Runs one class; ends its whole process group at the deadline."""
    results = workdir / f"{class_name}.json"
    log = workdir / f"{class_name}.log"
    env = dict(os.environ)
    # The suite's tests look for leftover processes themselves; they must
    # not see pytest's plugins or this process's tracebacks in theirs.
    env.pop("PYTEST_CURRENT_TEST", None)
    run = ClassRun()
    with open(log, "wb") as stream:
        child = subprocess.Popen(
            [sys.executable, str(HERE / runner), str(results), class_name],
            stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT,
            cwd=workdir, env=env, start_new_session=True,
        )
        try:
            run.returncode = child.wait(timeout=CLASS_DEADLINE)
        except subprocess.TimeoutExpired:
            run.hung = True
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        finally:
            # What the tests left behind in the group goes with it.
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    progress = workdir / f"{class_name}.json.progress"
    if results.exists():
        run.outcomes = json.loads(results.read_text())
    elif progress.exists():
        # The class did not finish: what it got through, and where it hung.
        run.outcomes = json.loads(progress.read_text())
    run.log_tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
    return run


def check_class(
    class_name: str, run: ClassRun, accepted: dict[str, str]
) -> list[str]:
    """What is wrong with a class's run, as lines for an assertion message:
    a hang, an interpreter that did not exit, a failure that is not
    accepted, or an accepted failure that now passes (the list must say
    what is true)."""
    problems: list[str] = []
    if run.hung:
        stuck = [test for test, result in run.outcomes.items() if result["outcome"] == "running"]
        where = f"in {stuck[0]}" if stuck else "after its tests (at the interpreter's exit)"
        problems.append(f"{class_name} hung {where} until killed at {CLASS_DEADLINE:.0f} s")
    elif run.returncode != 0:
        problems.append(f"{class_name}: the runner exited with status {run.returncode}")
    elif not run.outcomes:
        problems.append(f"{class_name}: no test ran")
    for test_id, result in sorted(run.outcomes.items()):
        failing = result["outcome"] in FAILING
        if failing and (test_id not in accepted or result["outcome"] == "running"):
            problems.append(f"{test_id}: {result['outcome']}\n{result['detail']}")
        elif not failing and test_id in accepted and result["outcome"] != "skipped":
            problems.append(
                f"{test_id}: {result['outcome']}, but it is listed as an accepted "
                f"failure ({accepted[test_id]}): take it off the list"
            )
    if problems:
        problems.append(f"--- the end of the class's output:\n{run.log_tail}")
    return problems
