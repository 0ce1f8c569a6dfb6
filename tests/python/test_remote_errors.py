"""Exceptions raised in workers, on their way home (docs/errors.md): what
cannot be pickled there or unpickled here arrives as forkfarm.RemoteError,
a subclass of the original type when it can be; chains, contexts and notes
survive, link by link; remote tracebacks show the source of functions sent
by value (a notebook cell's), and none of forkfarm's frames."""

from __future__ import annotations

import json
import linecache
import multiprocessing.pool
import os
import pickle
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures.process import _RemoteTraceback
from pathlib import Path
from typing import Any

import pytest
import remote_helpers as rh

import forkfarm
from forkfarm import _remote, _source

pytestmark = pytest.mark.timeout(60)

T = 30  # seconds any one result may take
PACKAGE_DIR = os.path.dirname(os.path.abspath(forkfarm.__file__))


def pool_error(func: Callable[..., Any], *args: Any, **pool_options: Any) -> BaseException:
    """What pool.apply(func, args) raises, on a fresh two-worker pool."""
    with forkfarm.Pool(2, **pool_options) as p:
        with pytest.raises(BaseException) as caught:
            p.apply(func, args)
        assert p.apply(rh.square, (7,)) == 49  # the pool goes on
    return caught.value


def executor_error(func: Callable[..., Any], *args: Any) -> BaseException:
    with forkfarm.Executor(2) as ex:
        error = ex.submit(func, *args).exception(T)
        assert ex.submit(rh.square, 7).result(T) == 49
    assert error is not None
    return error


def remote_text(error: BaseException) -> str:
    """The remote traceback text, wherever down the chain of causes it is."""
    seen = error
    while seen is not None:
        if isinstance(seen, (multiprocessing.pool.RemoteTraceback, _RemoteTraceback)):
            return str(seen.tb)
        seen = seen.__cause__  # type: ignore[assignment]
    raise AssertionError(f"no remote traceback in the causes of {error!r}")


# -- cannot be pickled in the worker --------------------------------------------


class TestUnpicklableInWorker:
    def test_an_exception_holding_a_lock_arrives_as_a_remote_error_of_its_type(self) -> None:
        error = pool_error(rh.raise_locked, "boom 42")
        assert isinstance(error, forkfarm.RemoteError)
        assert isinstance(error, rh.LockedError) and isinstance(error, ValueError)
        assert error.type_name == "remote_helpers.LockedError"
        assert error.message == "boom 42"
        assert error.args_reprs == ("'boom 42'",)
        assert "could not be pickled there" in error.reason and "_thread.lock" in error.reason
        assert str(error) == f"remote_helpers.LockedError: boom 42 ({error.reason})"
        assert repr(error) == "RemoteError('remote_helpers.LockedError', 'boom 42')"
        assert "in raise_locked" in error.traceback and "LockedError: boom 42" in error.traceback
        # The Pool's compatibility: the worker's traceback as the cause.
        assert type(error.__cause__) is multiprocessing.pool.RemoteTraceback
        assert remote_text(error) == '\n"""\n' + error.traceback + '"""'

    def test_except_the_original_base_type_catches_it(self) -> None:
        with forkfarm.Pool(2) as p:
            try:
                p.apply(rh.raise_with_lambda, ("boom 42",))
            except ValueError as caught:
                error: BaseException = caught
            else:
                pytest.fail("no ValueError")
        assert isinstance(error, forkfarm.RemoteError)
        assert error.type_name == "ValueError" and error.message.startswith("('boom 42', <function")
        assert error.args_reprs[0] == "'boom 42'"
        assert error.args_reprs[1].startswith("<function raise_with_lambda.<locals>.<lambda> at 0x")

    def test_executor_gives_the_standard_remote_traceback(self) -> None:
        error = executor_error(rh.raise_locked, "boom 42")
        assert isinstance(error, forkfarm.RemoteError) and isinstance(error, rh.LockedError)
        assert type(error.__cause__) is _RemoteTraceback
        assert "in raise_locked" in error.__cause__.tb

    def test_a_type_the_parent_cannot_import_is_a_plain_remote_error(self) -> None:
        error = pool_error(rh.raise_ghost, False)
        assert type(error) is forkfarm.RemoteError
        assert not isinstance(error, ValueError)
        assert error.type_name == "ghost_module.GhostError"
        assert error.message.startswith("('boo', ")
        assert "could not be pickled there" in error.reason
        assert "GhostError" in error.traceback and "in raise_ghost" in error.traceback


# -- cannot be unpickled in the parent ------------------------------------------


class TestUnpicklableInParent:
    def test_an_init_with_two_arguments_arrives_as_a_remote_error_of_its_type(self) -> None:
        # TwoArgError pickles as (cls, ("a failed: b",)): calling it with
        # one argument fails here.
        with pytest.raises(TypeError):
            pickle.loads(pickle.dumps(rh.TwoArgError("a", "b")))
        error = pool_error(rh.raise_two_args, "a", "b")
        assert isinstance(error, forkfarm.RemoteError) and isinstance(error, rh.TwoArgError)
        assert error.type_name == "remote_helpers.TwoArgError"
        assert error.message == "a failed: b"
        assert "could not be unpickled here" in error.reason and "TypeError" in error.reason
        # The worker's traceback, then the unpickling error, down the causes.
        remote = error.__cause__
        assert type(remote) is multiprocessing.pool.RemoteTraceback
        assert "in raise_two_args" in remote.tb
        assert isinstance(remote.__cause__, TypeError)
        assert "missing 1 required positional argument" in str(remote.__cause__)

    def test_both_failures_give_the_same_class(self) -> None:
        in_worker = pool_error(rh.raise_two_args, "a", "b", True)
        in_parent = pool_error(rh.raise_two_args, "a", "b", False)
        assert "could not be pickled there" in in_worker.reason  # type: ignore[attr-defined]
        assert "could not be unpickled here" in in_parent.reason  # type: ignore[attr-defined]
        assert type(in_worker) is type(in_parent)
        assert issubclass(type(in_worker), forkfarm.RemoteError) and issubclass(type(in_worker), rh.TwoArgError)

    def test_a_module_only_the_worker_has_gives_a_plain_remote_error(self) -> None:
        error = pool_error(rh.raise_ghost, True)
        assert type(error) is forkfarm.RemoteError
        assert error.type_name == "ghost_module.GhostError"
        assert "could not be unpickled here" in error.reason
        assert isinstance(error.__cause__, multiprocessing.pool.RemoteTraceback)
        assert isinstance(error.__cause__.__cause__, ModuleNotFoundError)

    def test_executor(self) -> None:
        error = executor_error(rh.raise_two_args, "a", "b")
        assert isinstance(error, rh.TwoArgError) and isinstance(error, forkfarm.RemoteError)
        assert type(error.__cause__) is _RemoteTraceback
        assert isinstance(error.__cause__.__cause__, TypeError)


# -- the subclass ----------------------------------------------------------------


class TestSubclass:
    def test_key_error_text_is_not_quoted_again(self) -> None:
        error = pool_error(rh.raise_locked_key, "k")
        assert isinstance(error, KeyError) and isinstance(error, forkfarm.RemoteError)
        assert error.message == "'k'"  # str() of the original KeyError
        assert str(error).startswith("remote_helpers.LockedKeyError: 'k' (raised in a worker")

    def test_unicode_decode_error_has_a_text(self) -> None:
        error = pool_error(rh.raise_locked_decode)
        assert isinstance(error, UnicodeDecodeError) and isinstance(error, forkfarm.RemoteError)
        assert "can't decode byte 0xff in position 0: invalid start byte" in str(error)

    def test_os_error(self) -> None:
        with forkfarm.Pool(2) as p:
            with pytest.raises(OSError) as caught:
                p.apply(rh.raise_locked_os_error)
        assert isinstance(caught.value, forkfarm.RemoteError)
        assert caught.value.message == "[Errno 2] no such thing"
        assert caught.value.args_reprs == ("2", "'no such thing'")

    def test_a_base_exception_only_type_is_a_plain_remote_error(self) -> None:
        error = pool_error(rh.raise_locked_exit)
        assert type(error) is forkfarm.RemoteError
        assert not isinstance(error, SystemExit)
        assert error.type_name == "remote_helpers.LockedExit" and error.args_reprs == ("3",)

    def test_a_type_that_refuses_subclasses_is_a_plain_remote_error(self) -> None:
        error = pool_error(rh.raise_no_subclass, "nope")
        assert type(error) is forkfarm.RemoteError
        assert error.type_name == "remote_helpers.NoSubclassError" and error.message == "nope"

    def test_it_pickles_and_unpickles_again(self) -> None:
        error = pool_error(rh.raise_with_notes, "locked")
        assert isinstance(error, rh.LockedError) and isinstance(error, forkfarm.RemoteError)
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        for name in ("type_name", "message", "traceback", "reason", "args_reprs", "notes"):
            assert getattr(again, name) == getattr(error, name), name
        assert again.__notes__ == ["first note", "second note"]
        assert str(again) == str(error)

    def test_the_factory_alone(self) -> None:
        made = _remote.remote_error("KeyError", "'k'", "tb", "why", ("'k'",), ["n"], ("builtins", "KeyError"))
        assert isinstance(made, KeyError) and type(made).__qualname__ == "RemoteError[KeyError]"
        assert made.args == ("KeyError: 'k' (why)",)
        same = _remote.remote_error("KeyError", "x", origin=("builtins", "KeyError"))
        assert type(same) is type(made)  # one class per original type
        interrupt = _remote.remote_error("KeyboardInterrupt", "", origin=("builtins", "KeyboardInterrupt"))
        assert type(interrupt) is forkfarm.RemoteError and str(interrupt) == "KeyboardInterrupt"
        local = _remote.remote_error("x.<locals>.E", "m", origin=("x", "f.<locals>.E"))
        assert type(local) is forkfarm.RemoteError
        plain = forkfarm.RemoteError("T", "m", "tb", "r", ("1",), ("note",))
        assert pickle.loads(pickle.dumps(plain)).notes == ["note"]


# -- chains ---------------------------------------------------------------------


class TestChains:
    def test_an_unpicklable_cause_does_not_lose_the_exception(self) -> None:
        error = pool_error(rh.raise_from_locked)
        assert type(error) is KeyError and error.args == ("outer",)
        cause = error.__cause__
        assert isinstance(cause, forkfarm.RemoteError) and isinstance(cause, rh.LockedError)
        assert cause.message == "inner"
        assert error.__context__ is cause  # one object, as in the worker
        # The real cause is kept; the worker's traceback is the last cause's.
        text = remote_text(error)
        assert type(cause.__cause__) is multiprocessing.pool.RemoteTraceback
        assert "LockedError: inner" in text and "KeyError: 'outer'" in text
        assert "The above exception was the direct cause of the following exception" in text
        # A link's own traceback is its own chain's: the cause knows nothing
        # of the exception it caused.
        assert "LockedError: inner" in cause.traceback and "KeyError" not in cause.traceback

    def test_an_unpicklable_exception_keeps_its_picklable_cause(self) -> None:
        error = pool_error(rh.raise_locked_from_key_error)
        assert isinstance(error, forkfarm.RemoteError) and error.message == "outer"
        cause = error.__cause__
        assert type(cause) is KeyError and cause.args == ("inner",)
        assert type(cause.__cause__) is multiprocessing.pool.RemoteTraceback
        assert "KeyError: 'inner'" in error.traceback and "LockedError: outer" in error.traceback

    def test_the_context_survives(self) -> None:
        error = pool_error(rh.raise_during_handling)
        assert type(error) is ValueError and error.args == ("while handling",)
        context = error.__context__
        assert type(context) is KeyError and context.args == ("missing",)
        assert error.__suppress_context__ is False
        # No cause of its own: the remote traceback is the cause, as before.
        assert type(error.__cause__) is multiprocessing.pool.RemoteTraceback
        assert "During handling of the above exception" in error.__cause__.tb

    def test_a_real_cause_is_kept_as_itself(self) -> None:
        error = pool_error(rh.raise_from_os_error)
        assert type(error) is RuntimeError
        cause = error.__cause__
        assert type(cause) is FileNotFoundError and cause.errno == 2 and cause.strerror == "no such file"
        assert type(cause.__cause__) is multiprocessing.pool.RemoteTraceback
        assert "in raise_from_os_error" in cause.__cause__.tb

    def test_from_none(self) -> None:
        error = pool_error(rh.raise_from_none)
        assert type(error) is ValueError
        assert error.__suppress_context__ is True
        assert type(error.__context__) is KeyError and error.__context__.args == ("hidden",)
        assert type(error.__cause__) is multiprocessing.pool.RemoteTraceback

    def test_a_cycle_of_contexts(self) -> None:
        error = pool_error(rh.raise_cycle)
        assert type(error) is ValueError and error.args == ("first",)
        second = error.__context__
        assert type(second) is KeyError and second.args == ("second",)
        assert second.__context__ is error

    def test_an_exception_group_arrives_with_its_members(self) -> None:
        error = pool_error(rh.raise_group, False)
        assert type(error) is ExceptionGroup
        assert [type(e) for e in error.exceptions] == [ValueError, KeyError]
        assert "in raise_group" in remote_text(error)

    def test_an_exception_group_with_a_bad_member_is_one_remote_error(self) -> None:
        error = pool_error(rh.raise_group, True)
        assert type(error) is forkfarm.RemoteError and error.type_name == "ExceptionGroup"
        assert "ValueError: a" in error.traceback and "remote_helpers.LockedError: b" in error.traceback

    def test_executor_keeps_the_chain(self) -> None:
        error = executor_error(rh.raise_from_locked)
        assert type(error) is KeyError
        cause = error.__cause__
        assert isinstance(cause, rh.LockedError) and isinstance(cause, forkfarm.RemoteError)
        assert type(cause.__cause__) is _RemoteTraceback

    def test_a_long_chain_is_cut_but_its_text_is_whole(self) -> None:
        def deep() -> BaseException:
            error: BaseException = ValueError("0")
            for i in range(1, 40):
                try:
                    raise error
                except ValueError as caught:
                    try:
                        raise ValueError(str(i)) from caught
                    except ValueError as outer:
                        error = outer
            return error

        links = _remote.encode_links(deep())
        assert len(links) == _remote.MAX_LINKS
        assert links[-1].cause is None  # the cut
        assert "ValueError: 0\n" in links[0].traceback and "ValueError: 39\n" in links[0].traceback
        rebuilt = _remote.rebuild(links)
        assert rebuilt.args == ("39",) and rebuilt.__cause__.args == ("38",)  # type: ignore[union-attr]


# -- notes ------------------------------------------------------------------------


class TestNotes:
    @pytest.mark.parametrize("kind", ["plain", "drops-dict"])
    def test_notes_arrive(self, kind: str) -> None:
        error = pool_error(rh.raise_with_notes, kind)
        assert type(error) is (ValueError if kind == "plain" else rh.DropsItsDict)
        assert error.__notes__ == ["first note", "second note"]

    def test_a_remote_errors_notes(self) -> None:
        error = pool_error(rh.raise_with_notes, "locked")
        assert isinstance(error, forkfarm.RemoteError)
        assert error.notes == ["first note", "second note"]
        assert error.__notes__ == ["first note", "second note"]
        assert "first note\nsecond note" in error.traceback

    def test_a_causes_notes(self) -> None:
        error = pool_error(rh.raise_with_noted_cause)
        assert type(error.__cause__) is KeyError
        assert error.__cause__.__notes__ == ["the cause's note"]


# -- the source of functions sent by value --------------------------------------


def _cell() -> tuple[str, Callable[..., Any], Callable[..., Any]]:
    """A function defined in a simulated notebook cell: code compiled under
    a name no file has, its lines in this process's linecache only (as
    IPython puts them), defined in a namespace of its own so that it
    travels by value."""
    name = f"<ipython-input-7-{uuid.uuid4().hex[:12]}>"
    source = textwrap.dedent(
        """\
        def cell_function(x):
            divide = lambda y: y / x  # the lambda's own line
            if x == 0:
                return divide(1)
            raise ValueError(f"cell says no to {x}")

        def where(_=None):
            import linecache
            return (cell_function.__code__.co_filename,
                    (lambda: 0).__code__.co_filename,
                    linecache.getline(cell_function.__code__.co_filename, 5))
        """
    )
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, name, "exec"), namespace)
    return name, namespace["cell_function"], namespace["where"]


@pytest.fixture
def forget_cells() -> Iterator[None]:
    before = set(linecache.cache)
    yield
    for name in set(linecache.cache) - before:
        linecache.cache.pop(name, None)


@pytest.mark.usefixtures("forget_cells")
class TestSource:
    @pytest.mark.parametrize("context", [None, "forkserver"])
    def test_a_cells_frames_show_its_lines(self, context: str | None) -> None:
        options = {} if context is None else {"context": forkfarm.get_context(context)}
        with forkfarm.Pool(2, **options) as p:
            # Made after the workers: only what travels can tell them.
            name, cell_function, where = _cell()
            filename, lambda_filename, line = p.apply(where)
            assert filename == name and lambda_filename == name
            assert line == '    raise ValueError(f"cell says no to {x}")\n'
            with pytest.raises(ValueError, match="cell says no to 3") as caught:
                p.apply(cell_function, (3,))
            with pytest.raises(ZeroDivisionError) as divided:
                p.map(cell_function, [0])
        text = remote_text(caught.value)
        assert f'  File "{name}", line 5, in cell_function\n' in text
        assert '    raise ValueError(f"cell says no to {x}")\n' in text
        text = remote_text(divided.value)
        assert f'  File "{name}", line 4, in cell_function\n    return divide(1)\n' in text
        assert f'  File "{name}", line 2, in <lambda>\n' in text
        assert "divide = lambda y: y / x  # the lambda's own line" in text
        assert "<dynamic-code>" not in text

    def test_executor(self) -> None:
        with forkfarm.Executor(2) as ex:
            name, cell_function, _where = _cell()
            error = ex.submit(cell_function, 4).exception(T)
        assert isinstance(error, ValueError)
        assert type(error.__cause__) is _RemoteTraceback
        assert f'  File "{name}", line 5, in cell_function\n' in error.__cause__.tb
        assert 'raise ValueError(f"cell says no to {x}")' in error.__cause__.tb

    def test_lines_travel_once_per_payload(self) -> None:
        name, cell_function, where = _cell()
        payload = _source.dumps([cell_function, where, cell_function], 5)
        assert payload.count(b"the lambda's own line") == 1
        linecache.cache.pop(name)
        loaded = pickle.loads(payload)
        assert loaded[0].__code__.co_filename == name
        assert loaded[0].__code__.co_consts and any(
            getattr(const, "co_filename", None) == name for const in loaded[0].__code__.co_consts
        )
        assert linecache.getline(name, 2).strip() == "divide = lambda y: y / x  # the lambda's own line"
        no_lines = _source.dumps(cell_function, 5, ship_source=False)
        assert b"the lambda's own line" not in no_lines

    def test_a_readable_files_lines_stay_home(self, tmp_path: Path) -> None:
        path = tmp_path / "on_disk.py"
        path.write_text("def on_disk():\n    return 1  # a comment only the file has\n")
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        linecache.getlines(str(path))  # known here too
        payload = _source.dumps(namespace["on_disk"], 5)
        assert b"a comment only the file has" not in payload
        assert pickle.loads(payload).__code__.co_filename == str(path)


# A notebook run in a real kernel, in a child (nbclient's threads would
# outlive the test here), over Unix sockets; prints each cell's output.
RUN_CELLS = """
import json, sys
import nbclient, nbformat
from jupyter_client.manager import KernelManager

cells, sockets = json.loads(sys.argv[1]), sys.argv[2]
notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
manager = KernelManager(kernel_name="python3", transport="ipc", ip=sockets)
nbclient.NotebookClient(notebook, km=manager, timeout=100).execute()
print(json.dumps([
    "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")
    for cell in notebook.cells
]))
"""

CELLS = [
    "import os, forkfarm\nbefore = forkfarm.Pool(2)",
    # ipykernel names the cell after a file it does not write.
    "def f(x):\n    y = x * 2\n    raise ValueError(f'cell value {y}')\n"
    "print(os.path.exists(f.__code__.co_filename))",
    # One pool made before the cell (f goes with each call), one after (f
    # goes with __main__ to the fork server).
    "after = forkfarm.Pool(2)\n"
    "for pool in (before, after):\n"
    "    try:\n        pool.apply(f, (21,))\n"
    "    except ValueError as e:\n        print(e.__cause__.tb)\n"
    "    pool.terminate()",
]


@pytest.mark.timeout(150)
def test_a_real_notebook_cell(tmp_path: Path) -> None:
    for module in ("nbformat", "nbclient", "ipykernel"):
        pytest.importorskip(module)
    done = subprocess.run(
        [sys.executable, "-c", RUN_CELLS, json.dumps(CELLS), str(tmp_path / "ipc")],
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    outputs = json.loads(done.stdout.splitlines()[-1])
    assert outputs[1] == "False\n"  # the cell's "file" is not on disk
    frames = re.findall(r'  File "([^"]+)", line 3, in f\n    raise ValueError\(f\'cell value \{y\}\'\)\n', outputs[2])
    assert len(frames) == 2, outputs[2]
    assert all(re.search(r"/ipykernel_\d+/\d+\.py$", frame) for frame in frames), frames


# -- forkfarm's own frames --------------------------------------------------------


class TestOwnFrames:
    def _check(self, text: str) -> None:
        assert PACKAGE_DIR not in text
        frames = re.findall(r'^  File "([^"]+)", line \d+, in (\S+)$', text, re.MULTILINE)
        assert frames, text
        # The traceback starts at the user's function.
        assert frames[0][0].endswith("remote_helpers.py") and frames[0][1] == "failing_initializer", frames

    def test_an_executor_initializer(self) -> None:
        # executor.py's _initialize_worker calls the initializer.
        with forkfarm.Executor(1, initializer=rh.failing_initializer) as ex:
            # The executor may be broken before submit() (its worker failed
            # first), which then raises what the future would hold.
            try:
                error = ex.submit(rh.square, 2).exception(T)
            except forkfarm.InitializerError as refused:
                error = refused
        assert isinstance(error, forkfarm.InitializerError)
        assert isinstance(error.__cause__, RuntimeError)
        self._check(remote_text(error.__cause__))

    def test_a_pool_initializer(self) -> None:
        with pytest.raises(forkfarm.InitializerError) as caught:
            with forkfarm.Pool(1, initializer=rh.failing_initializer) as p:
                p.apply(rh.square, (2,))
        assert isinstance(caught.value.__cause__, RuntimeError)
        self._check(remote_text(caught.value.__cause__))

    def test_the_filter(self) -> None:
        # A frame in forkfarm's files goes, whatever calls it.
        def raise_through_forkfarm() -> None:
            _source.seed_lines("<nowhere>", None)  # type: ignore[arg-type]  # fails inside forkfarm

        try:
            raise_through_forkfarm()
        except TypeError as error:
            text = _remote.format_remote(error)
        assert "in raise_through_forkfarm" in text and PACKAGE_DIR not in text


# -- unchanged --------------------------------------------------------------------


def test_an_unpicklable_result_is_still_maybe_encoding_error() -> None:
    with forkfarm.Pool(2) as p:
        with pytest.raises(multiprocessing.pool.MaybeEncodingError) as caught:
            p.apply(rh.make_locked_result)
        assert p.apply(rh.square, (7,)) == 49
    assert "Error sending result" in str(caught.value) and "as a result" in str(caught.value)
    assert type(caught.value.__cause__) is multiprocessing.pool.RemoteTraceback
