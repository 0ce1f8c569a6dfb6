"""examples/demo.py runs to its end in a child process (as `make demo` runs
it), prints a measured figure for each of its six parts, shows the crash
the way each library takes it (forkfarm: WorkerLostError naming SIGKILL;
multiprocessing: a timeout), and leaves no process behind. The figures
themselves are never asserted on: the machine is shared. Also
examples/monte_carlo.py, on a small input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("tqdm")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Every process of a run carries this variable in its environment (the
# demo's pools are forked from it), so that the test can find any of them
# that outlived the demo, wherever it was reparented.
TOKEN_VARIABLE = "FORKFARM_DEMO_TEST_TOKEN"

TIME = r"\d+(?:\.\d+)? (?:µs|ms|s)"  # a duration as the demo prints one
RATIO = r"forkfarm \d+(?:\.\d+)?× (?:faster|slower)"


def _processes_with(token: str) -> list[int]:
    """Pids of the live processes whose environment holds the token."""
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _survivors(token: str, grace: float) -> list[int]:
    deadline = time.monotonic() + grace
    while True:
        left = _processes_with(token)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _run(script: str, *args: str, timeout: float, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    token = uuid.uuid4().hex
    env = {**os.environ, TOKEN_VARIABLE: token}
    # Output to files, not pipes: a process left behind would hold a pipe
    # open, and the wait for its end would hide it.
    out_path, err_path = tmp_path / f"{script}.out", tmp_path / f"{script}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        try:
            done = subprocess.run(
                [sys.executable, str(EXAMPLES / script), *args],
                stdout=out, stderr=err, timeout=timeout, env=env,
            )
        except subprocess.TimeoutExpired:
            for pid in _processes_with(token):  # only the run's own processes
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise
    stdout = out_path.read_text(encoding="utf-8")
    stderr = err_path.read_text(encoding="utf-8")
    left = _survivors(token, grace=5.0)
    assert not left, f"processes of {script} outlived it: {left}\n{stdout}"
    return subprocess.CompletedProcess(done.args, done.returncode, stdout, stderr)


def _parts(output: str) -> dict[str, str]:
    """The demo's output cut into its parts, by their headings "1. ".."6. "."""
    parts: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        heading = re.match(r"([1-6])\. ", line)
        if heading:
            current = heading.group(1)
        elif not line.strip():
            current = None
        if current is not None:
            parts[current] = parts.get(current, "") + line + "\n"
    return parts


# Slow: it moves 512 MiB through multiprocessing's pipes and waits 3 s for
# a result that never comes; under ASan that takes minutes.
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.timeout(150)
def test_demo(tmp_path: Path) -> None:
    done = _run("demo.py", timeout=120, tmp_path=tmp_path)
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr[-4000:]}"
    parts = _parts(out)
    assert sorted(parts) == ["1", "2", "3", "4", "5", "6"], out

    assert re.search(r"start method fork for both", out), out

    assert re.search(
        rf"forkfarm {TIME}, multiprocessing {TIME} per call: {RATIO} "
        r"\(2 workers, 2,000 calls, median of 3 runs\)",
        parts["1"],
    ), parts["1"]
    assert re.search(
        rf"forkfarm {TIME}, multiprocessing {TIME} for the map: {RATIO} "
        r"\(2 workers, 200,000 items, median of 3 runs\)",
        parts["2"],
    ), parts["2"]
    assert "64 MiB NumPy array" in parts["3"]
    assert re.search(
        rf"forkfarm {TIME}, multiprocessing {TIME} for the map: {RATIO} "
        r"\(2 workers, 8 tasks, median of 3 runs\)",
        parts["3"],
    ), parts["3"]

    crash = parts["4"]
    assert re.search(
        rf"forkfarm: apply\(die\) raised WorkerLostError \(SIGKILL\) after {TIME}: .*SIGKILL", crash
    ), crash
    assert re.search(r"the same forkfarm pool then ran .*: 1,000 results, all correct", crash), crash
    assert re.search(
        r"multiprocessing: no result and no error: apply_async\(die\)\.get\(timeout=3\) raised "
        r"TimeoutError after \d+\.\d s",
        crash,
    ), crash
    assert "terminates that pool" in crash

    assert re.search(rf"forkfarm took {TIME} for the 200 items with the bar", parts["5"]), parts["5"]
    assert "200/200" in done.stderr, done.stderr[-2000:]  # tqdm's bar, at its end

    stats = parts["6"]
    assert re.search(r"stats\(\) after parts 1-5: [\d,]+ tasks done, 1 failed, 1 worker restart", stats), stats
    assert re.search(r"\bpid +tasks +busy s +idle s\b", stats), stats
    rows = re.findall(r"^ +\d+ +\d+ +\d+\.\d{3} +\d+\.\d{3} +\d+ +\d+ +([01])$", stats, re.MULTILINE)
    assert sorted(rows) == ["0", "1"], stats  # two workers, one of them replaced once

    assert re.search(r": 0 child processes left \d+ ms after join\(\)", out), out
    assert re.search(r"The demo took \d+\.\d s", out), out


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.timeout(90)
def test_monte_carlo(tmp_path: Path) -> None:
    done = _run(
        "monte_carlo.py", "--tasks", "4", "--points", "20000", "--repeat", "1",
        timeout=60, tmp_path=tmp_path,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-4000:]}"
    assert re.search(r"forkfarm vs multiprocessing: \d+\.\d\dx", done.stdout), done.stdout
    assert "so the estimates are identical" in done.stdout
