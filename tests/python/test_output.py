"""Worker output forwarded to the submitter's streams (docs/output.md):
what a task prints, from Python or native code, arrives before its result,
in the streams and the context of the code that submitted it, and nothing
printed is lost when its worker is killed or the pool terminated."""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
import subprocess
import sys
import textwrap
import threading

import output_tasks as tasks
import pytest

import forkfarm

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def captured() -> contextlib.AbstractContextManager[tuple[io.StringIO, io.StringIO]]:  # type: ignore[misc]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


@pytest.fixture(params=["fork", "forkserver"])
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_map_output_reaches_the_redirected_streams(method: str) -> None:
    with captured() as (out, err):
        with forkfarm.Pool(2, context=method, output="forward") as pool:
            assert pool.map(tasks.speak, range(4), chunksize=1) == [0, 2, 4, 6]
    lines = out.getvalue().splitlines()
    for x in range(4):
        assert f"out {x}" in lines and f"native {x}" in lines
        # A task's lines stay together and in the order it wrote them.
        assert lines.index(f"native {x}") == lines.index(f"out {x}") + 1
    assert sorted(err.getvalue().splitlines()) == [f"err {x}" for x in range(4)]


def test_output_comes_before_the_result_of_every_call() -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(2, output="forward") as pool:
            assert pool.apply(tasks.speak, (1,)) == 2
            assert "out 1\n" in out.getvalue()
            assert pool.apply_async(tasks.speak, (2,)).get(30) == 4
            assert "out 2\n" in out.getvalue()
            got = []
            for value in pool.imap(tasks.speak, [3, 4]):
                got.append(value)
                assert f"out {value // 2}\n" in out.getvalue()
            assert got == [6, 8]
        with forkfarm.Executor(2, output="forward") as executor:
            assert executor.submit(tasks.speak, 5).result(30) == 10
            assert "out 5\n" in out.getvalue()
            assert list(executor.map(tasks.speak, [6, 7])) == [12, 14]
            assert "out 6\n" in out.getvalue() and "out 7\n" in out.getvalue()


def test_output_of_a_call_whose_result_is_never_asked_for_arrives() -> None:
    with captured() as (out, _err):
        pool = forkfarm.Pool(1, output="forward")
        pool.apply_async(tasks.speak, (9,))
        pool.close()
        pool.join()
    assert "out 9\nnative 9\n" in out.getvalue()


def test_native_stdio_and_child_processes_are_captured() -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(1, output="forward") as pool:
            assert pool.apply(tasks.speak_unflushed_c, (3,)) == 3
            assert pool.apply(tasks.speak_through_child, (4,)) == 4
    assert "c-level 3\n" in out.getvalue()
    assert "child 4\n" in out.getvalue()


def test_output_of_a_failing_task_comes_with_its_error() -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(1, output="forward") as pool:
            with pytest.raises(ValueError, match="failed 5"):
                pool.apply(tasks.speak_then_raise, (5,))
            assert "about to fail 5\n" in out.getvalue()


def test_what_a_killed_worker_printed_arrives_with_its_error() -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(1, output="forward") as pool:
            with pytest.raises(forkfarm.WorkerLostError):
                pool.apply(tasks.speak_then_die, (6,))
            assert "last words 6\n" in out.getvalue()
            # The replacement worker's output is its own.
            assert pool.apply(tasks.speak, (7,)) == 14
    assert out.getvalue().count("last words 6") == 1


def test_nothing_is_lost_at_the_end_of_a_with_block() -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(2, output="forward") as pool:
            pool.apply_async(tasks.speak_then_sleep, (8,))
            pool.apply_async(tasks.speak_then_sleep, (9,))
            # Both are asleep once their first line is out.
            deadline = 100
            while pool.stats().in_flight < 2 and deadline:
                deadline -= 1
                threading.Event().wait(0.05)
            threading.Event().wait(0.3)
        # terminate() has run: what the sleepers printed is here.
    assert "sleeping 8\n" in out.getvalue()
    assert "sleeping 9\n" in out.getvalue()


def test_a_task_that_ends_without_a_newline_keeps_its_text() -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(1, output="forward") as pool:
            pool.apply(tasks.no_newline, (1,))
            pool.apply(tasks.speak, (2,))
    assert out.getvalue().startswith("partial 1out 2\n")


def test_ten_thousand_lines_arrive_whole_and_in_order() -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(2, output="forward") as pool:
            assert pool.starmap(tasks.lines, [("a", 5000), ("b", 5000)], chunksize=1) == [5000, 5000]
    lines = out.getvalue().splitlines()
    assert len(lines) == 10000
    for tag in "ab":
        assert [line for line in lines if line.startswith(tag + " ")] == [f"{tag} {i}" for i in range(5000)]


def test_output_prefix_names_the_worker_slot() -> None:
    with captured() as (out, err):
        with forkfarm.Pool(2, output="forward", output_prefix=True) as pool:
            pool.map(tasks.speak, range(4), chunksize=1)
    for line in out.getvalue().splitlines() + err.getvalue().splitlines():
        assert line.startswith(("[worker 0] ", "[worker 1] ")), line
    assert "] out 3" in out.getvalue()


def test_initializer_output_arrives_with_the_first_task() -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(1, initializer=tasks.initializer_speaks, initargs=("hi",), output="forward") as pool:
            pool.apply(tasks.speak, (1,))
    assert out.getvalue().startswith("initializer hi\nout 1\n")


class _ContextRouted(io.StringIO):
    """A stream that files each write under a ContextVar's value at the
    time of the write, as Jupyter's OutStream files it under the cell."""

    def __init__(self, var: contextvars.ContextVar[str]) -> None:
        super().__init__()
        self.var = var
        self.by_context: dict[str, list[str]] = {}

    def write(self, text: str) -> int:
        self.by_context.setdefault(self.var.get("none"), []).append(text)
        return len(text)


def test_output_goes_to_the_context_that_submitted_the_task() -> None:
    cell: contextvars.ContextVar[str] = contextvars.ContextVar("cell")
    routed = _ContextRouted(cell)
    with contextlib.redirect_stdout(routed):
        with forkfarm.Pool(2, output="forward") as pool:

            def submit(name: str, x: int) -> forkfarm.pool.ApplyResult[int]:
                cell.set(name)
                return pool.apply_async(tasks.speak, (x,))

            first = contextvars.copy_context().run(submit, "cell-1", 1)
            second = contextvars.copy_context().run(submit, "cell-2", 2)
            cell.set("cell-3")  # the cell running now
            assert first.get(30) == 2 and second.get(30) == 4
    assert "".join(routed.by_context["cell-1"]) == "out 1\nnative 1\n"
    assert "".join(routed.by_context["cell-2"]) == "out 2\nnative 2\n"
    assert "cell-3" not in routed.by_context


def test_inherit_leaves_the_workers_on_the_parent_descriptors(capfd: pytest.CaptureFixture[str]) -> None:
    with captured() as (out, _err):
        with forkfarm.Pool(1, output="inherit") as pool:
            assert not pool._engine.capture
            pool.apply(tasks.speak, (1,))
    assert out.getvalue() == ""
    assert "native 1" in capfd.readouterr().out


def test_auto_forwards_only_when_the_streams_are_not_the_descriptors(tmp_path: str) -> None:
    script = textwrap.dedent(
        """
        import contextlib, io, sys
        import forkfarm
        with forkfarm.Pool(1) as pool:
            print("plain", pool._engine.capture)
        with contextlib.redirect_stdout(io.StringIO()):
            with forkfarm.Pool(1) as pool:
                captured = pool._engine.capture
        print("redirected", captured)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["plain", "False", "redirected", "True"]


def test_bad_output_options_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="output must be one of 'auto', 'forward', 'inherit', not 'loud'"):
        forkfarm.Pool(1, output="loud")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="output_prefix must be a bool, not str"):
        forkfarm.Pool(1, output_prefix="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be used with output='inherit'"):
        forkfarm.Executor(1, output="inherit", log_level="INFO")
