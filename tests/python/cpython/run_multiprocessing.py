"""Runs classes of CPython's own multiprocessing suite with forkfarm in
multiprocessing's place, and writes each test's outcome as JSON.

    python run_multiprocessing.py --list
    python run_multiprocessing.py RESULTS.json CLASS [CLASS ...]

The suite is ``test._test_multiprocessing`` of the interpreter that runs
this script, installed in mp_suite.py: its "processes" classes get
forkfarm's names through the suite's own mixin, and its "manager" classes
forkfarm's Manager; the module global ``multiprocessing`` that the test
bodies use is forkfarm too, so nothing falls back to the standard library. One process runs the classes
it is given and then exits as any program would: the driver
(test_cpython_multiprocessing.py) counts a process that does not exit
promptly as a failure.
"""

from __future__ import annotations

import sys

import mp_suite
from suite_result import run_classes, write_results


def main(argv: list[str]) -> int:
    if argv[1:] == ["--list"]:
        print("\n".join(mp_suite.class_names()))
        return 0
    results_path, names = argv[1], argv[2:]
    outcomes = run_classes(
        [getattr(mp_suite, name) for name in names],
        mp_suite.setUpModule,  # type: ignore[attr-defined]
        mp_suite.tearDownModule,  # type: ignore[attr-defined]
        results_path + ".progress",
    )
    write_results(results_path, outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
