"""The hostile-worker soak (benchmarks/hostile_soak.py) in a subprocess:
workers write random bytes over every structure they can reach while a Pool
and an Executor run self-checking tasks. The parent must not crash, no task
may return a wrong value or hang, and nothing may leak.

Its duration is FORKFARM_SOAK_SECONDS (default 10; CI runs 60). Select it
with ``-m soak``, leave it out with ``-m 'not soak'``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hostile_soak.py"
SECONDS = float(os.environ.get("FORKFARM_SOAK_SECONDS", "10"))
# Start-up, the warm-up pool, the last tasks and the shutdown's watchdog.
SLACK = 120.0


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + SLACK + 60)
def test_hostile_soak(capsys: pytest.CaptureFixture[str]) -> None:
    command = [sys.executable, str(SCRIPT), "--seconds", str(SECONDS)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS + SLACK)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else expired.stdout or ""
        err = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else expired.stderr or ""
        pytest.fail(f"the soak did not end within {SECONDS + SLACK:.0f} s (a hang)\n{out}\n{err[-5000:]}")
    counts = [line for line in proc.stdout.splitlines() if line.startswith("hostile-soak:")]
    # Shown in the run's log (CI's included), not only on failure.
    with capsys.disabled():
        print("\n" + ("\n".join(counts) or "(no counts: the soak died before printing them)"))
    assert proc.returncode == 0, (
        f"the soak failed ({_describe(proc.returncode)})\n{proc.stdout}\n{proc.stderr[-5000:]}"
    )
