"""breakpoint() in a task (forkfarm/_debug.py): pdb on the terminal the
program runs in, one worker at a time, and a clear error where there is
no terminal. Each test runs a script in a child Python: under a
pseudo-terminal (pexpect) that is its controlling terminal, or in a
session of its own with pipes, where there is none."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.timeout(90)

PROMPT = r"\(Pdb\) "
HEADER = r"forkfarm: breakpoint\(\) in worker (\S+) \(pid (\d+)\), in task\(\) at (\S+):(\d+)"
WAIT = 30  # seconds, for any one expect

TASK = """
import os
import sys
import time

import forkfarm


def task(x):
    y = x * 10
    print(f"reached {x} in {os.getpid()}", flush=True)
    breakpoint()
    return y + 1


def plain(x):
    return -x
"""


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONBREAKPOINT"}
    env.update(extra)
    return env


def _script(tmp_path: Path, main: str) -> Path:
    path = tmp_path / "script.py"
    path.write_text(TASK + "\n" + textwrap.dedent(main))
    return path


class Terminal:
    """A script run under a pseudo-terminal, everything it printed kept."""

    def __init__(self, script: Path, env: dict[str, str]) -> None:
        self.log = io.StringIO()
        self.child = pexpect.spawn(
            sys.executable,
            [str(script)],
            cwd=str(script.parent),
            env=env,
            encoding="utf-8",
            timeout=WAIT,
            dimensions=(50, 200),
        )
        self.child.logfile_read = self.log

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        self.child.expect(pattern, timeout=timeout)
        match: re.Match[str] = self.child.match
        return match

    def command(self, line: str) -> str:
        """Sends a pdb command; what it printed, up to the next prompt
        (without the echoed command)."""
        self.child.sendline(line)
        self.expect(PROMPT)
        before: str = self.child.before
        return before.replace("\r\n", "\n").split(line + "\n", 1)[-1]

    def read_until(self, done: Callable[[str], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.output):
            assert time.monotonic() < deadline, f"timed out; the terminal shows:\n{self.output}"
            self.read_for(0.1)

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.child.read_nonblocking(4096, timeout=0.05)
            except pexpect.TIMEOUT:
                pass

    def finish(self) -> str:
        """Waits for the script to exit; everything it printed."""
        self.child.expect(pexpect.EOF, timeout=WAIT)
        self.child.close()
        assert self.child.exitstatus == 0, self.output
        return self.output

    @property
    def output(self) -> str:
        return self.log.getvalue().replace("\r\n", "\n")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    started: list[Terminal] = []

    def start(main: str, **env: str) -> Terminal:
        started.append(Terminal(_script(tmp_path, main), _environment(**env)))
        return started[-1]

    yield start
    for term in started:
        term.child.close(force=True)


@pytest.mark.parametrize("context", ["fork", "forkserver"])
def test_pdb_on_the_terminal_then_continue(terminal: Any, context: str) -> None:
    term = terminal(
        f"""
        if __name__ == "__main__":
            with forkfarm.Pool(2, context={context!r}) as pool:
                print("result:", pool.map(task, [4242]), flush=True)
        """
    )
    header = term.expect(HEADER)
    name, pid, filename, line = header.groups()
    assert name.endswith("PoolWorker-1") or name.endswith("PoolWorker-2")
    assert int(line) == TASK.splitlines().index("    breakpoint()") + 1
    # Through the fork server the workers have no __main__ of the script's,
    # so task travels by value, and cloudpickle names its file
    # <dynamic-code> (issue 19, item 2).
    assert filename.endswith("script.py") or (context == "forkserver" and filename == "<dynamic-code>")
    term.expect(PROMPT)
    assert f"reached 4242 in {pid}" in term.output
    assert re.search(r"^42420$", term.command("p y"), re.M)
    assert re.search(r"^4242$", term.command("p x"), re.M)
    # The stack is the task's: pdb's where shows no frame of forkfarm's.
    where = term.command("w")
    assert "task()" in where and "forkfarm" not in where
    term.child.sendline("c")
    term.expect(r"result: \[42421\]")
    assert "Traceback" not in term.finish()


def test_one_worker_debugs_at_a_time(terminal: Any) -> None:
    # A barrier holds both tasks until both workers run one: both reach
    # breakpoint() together, and the second waits for the first.
    term = terminal(
        """
        def meet(x):
            barrier.wait(timeout=20)
            return task(x)

        if __name__ == "__main__":
            barrier = forkfarm.Barrier(2)
            with forkfarm.Pool(2) as pool:
                print("result:", pool.map(meet, [1, 2], chunksize=1), flush=True)
        """
    )
    first = term.expect(HEADER)
    term.expect(PROMPT)
    term.read_until(lambda out: "reached 1 in" in out and "reached 2 in" in out)
    term.read_for(1.5)
    assert term.output.count("(Pdb) ") == 1, term.output
    assert term.output.count("forkfarm: breakpoint() in worker") == 1, term.output
    x1 = int(term.command("p x").split()[0])

    term.child.sendline("c")
    second = term.expect(HEADER)
    assert second.group(2) != first.group(2)
    term.expect(r"waited \d+\.\d s for another worker's debugger")
    term.expect(PROMPT)
    x2 = int(term.command("p x").split()[0])
    assert {x1, x2} == {1, 2}
    term.child.sendline("c")
    term.expect(r"result: \[11, 21\]")
    term.finish()


def test_stepping_past_the_task_lets_the_next_worker_debug(terminal: Any) -> None:
    # n past the task's last line: the task returns its result and the
    # terminal's lock goes to the worker that waits, with no c or q.
    term = terminal(
        """
        def meet(x):
            barrier.wait(timeout=20)
            return task(x)

        if __name__ == "__main__":
            barrier = forkfarm.Barrier(2)
            with forkfarm.Pool(2) as pool:
                print("result:", pool.map(meet, [1, 2], chunksize=1), flush=True)
        """
    )
    first = term.expect(HEADER)
    term.expect(PROMPT)
    assert "-> return y + 1" in term.command("n")
    assert "--Return--" in term.command("n")
    # Out of task() into meet(), the task's outermost frame, and out of it
    # (Python 3.13's pdb stops at meet's return too; 3.11's and 3.12's not).
    for _ in range(3):
        term.child.sendline("n")
        if term.child.expect([PROMPT, "the task's outermost frame returns; it goes on without the debugger"]):
            break
    else:
        pytest.fail(f"still in the task's frames:\n{term.output}")
    second = term.expect(HEADER)
    assert second.group(2) != first.group(2)
    term.expect(PROMPT)
    term.child.sendline("c")
    term.expect(r"result: \[11, 21\]")
    term.finish()


def test_quit_fails_the_task_with_bdbquit(terminal: Any) -> None:
    term = terminal(
        """
        if __name__ == "__main__":
            with forkfarm.Pool(2) as pool:
                stopped = pool.apply_async(task, (7,))
                others = pool.map_async(plain, range(5), chunksize=1)
                try:
                    stopped.get(timeout=60)
                except BaseException as exc:
                    print("stopped:", type(exc).__module__, type(exc).__name__, flush=True)
                print("others:", others.get(timeout=60), flush=True)
                print("after:", pool.map(plain, range(3)), flush=True)
        """
    )
    term.expect(HEADER)
    term.expect(PROMPT)
    term.read_for(0.5)
    assert "stopped:" not in term.output
    term.child.sendline("q")
    term.expect("stopped: bdb BdbQuit")
    term.expect(r"others: \[0, -1, -2, -3, -4\]")
    term.expect(r"after: \[0, -1, -2\]")
    term.finish()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"PYTHONBREAKPOINT": "0"}, "[(1, None), (2, None)]"),
        ({"PYTHONBREAKPOINT": "hooks.record"}, "[(1, 'hooked 1'), (2, 'hooked 2')]"),
        ({}, "[(1, 'parent hook 1'), (2, 'parent hook 2')]"),
    ],
    ids=["PYTHONBREAKPOINT=0", "PYTHONBREAKPOINT=hooks.record", "sys.breakpointhook"],
)
def test_a_hook_the_user_chose_is_kept(
    terminal: Any, tmp_path: Path, setting: dict[str, str], expected: str
) -> None:
    # breakpoint() returns what the hook returns.
    (tmp_path / "hooks.py").write_text(
        "import sys\n\ndef record():\n    return f\"hooked {sys._getframe(1).f_locals['x']}\"\n"
    )
    term = terminal(
        """
        def chosen(x):
            return x, breakpoint()

        def parent_hook():
            return f"parent hook {sys._getframe(1).f_locals['x']}"

        if __name__ == "__main__":
            if "PYTHONBREAKPOINT" not in os.environ:
                sys.breakpointhook = parent_hook
            with forkfarm.Pool(2) as pool:
                print("result:", pool.map(chosen, [1, 2]), flush=True)
        """,
        **setting,
    )
    term.expect(r"result: .*\n")
    output = term.finish()
    assert f"result: {expected}" in output
    assert "(Pdb)" not in output and "forkfarm: breakpoint()" not in output


def test_without_a_terminal_breakpoint_fails_at_once(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        if __name__ == "__main__":
            try:
                os.close(os.open("/dev/tty", os.O_RDWR))
                print("parent terminal: yes")
            except OSError:
                print("parent terminal: none")
            with forkfarm.Pool(2) as pool:
                start = time.monotonic()
                try:
                    pool.apply(task, (1,))
                except RuntimeError as exc:
                    print("error:", type(exc).__name__, exc)
                print(f"seconds: {time.monotonic() - start:.3f}")
                print("after:", pool.apply(plain, (3,)))
        """,
    )
    # A session of its own: no controlling terminal, as under CI or in a
    # Jupyter kernel; standard input a pipe nobody writes.
    run = subprocess.run(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        capture_output=True,
        text=True,
        start_new_session=True,
        env=_environment(),
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "parent terminal: none" in out
    error = next(line for line in out.splitlines() if line.startswith("error:"))
    assert error.startswith("error: RuntimeError breakpoint() in a forkfarm worker (pid ")
    assert "needs the program to run in a terminal" in error
    assert "PYTHONBREAKPOINT=remote_pdb.set_trace" in error
    assert "outside the pool" in error
    seconds = float(re.search(r"seconds: (\S+)", out).group(1))  # type: ignore[union-attr]
    assert seconds < 5
    assert "after: -3" in out


NOTEBOOK_RUNNER = """
import os
import sys

import nbclient
import nbformat
from jupyter_client.manager import KernelManager

os.close(os.open("/dev/tty", os.O_RDWR))  # the runner has a terminal
directory = sys.argv[1]
cell = '''
import time
import forkfarm

def task(x):
    breakpoint()
    return x

start = time.monotonic()
with forkfarm.Pool(2) as pool:
    try:
        pool.apply(task, (1,))
    except RuntimeError as exc:
        print("error:", exc)
    print(f"seconds: {time.monotonic() - start:.3f}")
'''
notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
manager = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(directory, "ipc"))
client = nbclient.NotebookClient(notebook, km=manager, timeout=60, resources={"metadata": {"path": directory}})
client.execute()
print("OUTPUT<<" + "".join(o.get("text", "") for o in notebook.cells[0].outputs) + ">>OUTPUT")
"""


@pytest.mark.timeout(150)
def test_in_a_jupyter_kernel_breakpoint_fails_at_once(tmp_path: Path) -> None:
    # Jupyter started from a terminal: its kernels run in sessions of their
    # own, with no terminal, so a worker's breakpoint() must not wait.
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    runner = tmp_path / "runner.py"
    runner.write_text(NOTEBOOK_RUNNER)
    child = pexpect.spawn(
        sys.executable, [str(runner), str(tmp_path)], cwd=str(tmp_path), env=_environment(),
        encoding="utf-8", timeout=120,
    )
    try:
        child.expect(r"OUTPUT<<(.*)>>OUTPUT", timeout=120)
        text = child.match.group(1).replace("\r\n", "\n")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close(force=True)
    assert "error: breakpoint() in a forkfarm worker (pid " in text
    assert "needs the program to run in a terminal" in text
    seconds = float(re.search(r"seconds: (\S+)", text).group(1))  # type: ignore[union-attr]
    assert seconds < 10
