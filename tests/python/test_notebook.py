"""examples/notebook.ipynb runs in a Jupyter kernel (issue 7): a lambda map
with a progress bar widget, functions and classes defined in cells, a NumPy
farm over a shared array and the stats table, under the forkserver start
method that a kernel's threads call for."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.timeout(180)

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebook.ipynb"

# Runs in a child: nbclient's threads would outlive the test here, and a
# parent with threads gives its later pools the fork server. The kernel
# talks over Unix sockets (absolute paths: the kernel runs in examples/), so
# nothing listens on a network address.
EXECUTE = """
import sys
import nbclient, nbformat
from jupyter_client.manager import KernelManager

source, target, sockets, directory = sys.argv[1:]
notebook = nbformat.read(source, as_version=4)
manager = KernelManager(kernel_name="python3", transport="ipc", ip=sockets)
client = nbclient.NotebookClient(
    notebook, km=manager, timeout=120, resources={"metadata": {"path": directory}}
)
client.execute()
nbformat.write(notebook, target)
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("notebook")
    target = directory / "executed.ipynb"
    # Python's default buffering, as a user's kernel has it: what the
    # workers print must arrive without PYTHONUNBUFFERED.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", EXECUTE, str(NOTEBOOK), str(target), str(directory / "ipc"), str(NOTEBOOK.parent)],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return nbformat.read(target, as_version=4)


def _outputs(notebook: Any) -> list[Any]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _text(notebook: Any) -> str:
    return "".join(o.get("text", "") for o in _outputs(notebook) if o.output_type == "stream")


def test_no_cell_fails(executed: Any) -> None:
    """Only the cells that show a failing task raise."""
    errors = [
        output
        for cell in executed.cells
        if cell.cell_type == "code" and "raises-exception" not in cell.metadata.get("tags", [])
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, errors


def test_the_kernel_gets_the_fork_server(executed: Any) -> None:
    assert "start method: forkserver\n" in _text(executed)


def test_lambdas_and_cell_functions_and_classes(executed: Any) -> None:
    text = _text(executed)
    assert f"sum of squares: {sum(x * x for x in range(20_000))}\n" in text
    assert "longest: 26623 307 True\n" in text  # the class came back as itself


def test_progress_bars_are_widgets(executed: Any) -> None:
    bars = [
        o
        for o in _outputs(executed)
        if o.output_type == "display_data" and "application/vnd.jupyter.widget-view+json" in o.data
    ]
    assert len(bars) == 3
    assert "0/20000" in bars[0].data["text/plain"]  # items, not chunks


def test_the_numpy_farm_matches_serial(executed: Any) -> None:
    assert "rows filled: 1024 matches serial: True\n" in _text(executed)


def test_the_stats_table(executed: Any) -> None:
    [table] = [o for o in _outputs(executed) if o.output_type == "execute_result"]
    html = table.data["text/html"]
    # The three tasks of the failure cells (the map's failing chunk, the
    # unpicklable exception, the breakpoint()).
    assert "3 failed" in html and html.count("<tr>") == 3  # a header and two workers
    assert "busy s" in html and "restarts" in html
    assert "failed: 3 workers: 2\n" in _text(executed)
    json.dumps(table.data)  # the saved notebook can hold it


def _cell_text(notebook: Any, source_start: str) -> str:
    """The stream output of the one code cell whose source starts so."""
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_worker_prints_land_in_the_cell_that_ran_them(executed: Any) -> None:
    text = _cell_text(executed, "def shout(x):")
    for x in range(4):
        assert f"task {x} says hello\n" in text
    assert "results: [0, 1, 2, 3]\n" in text
    # Printed by tasks of a pool its with block terminates: none lost.
    last = _cell_text(executed, "with forkfarm.Pool(2) as short_lived:")
    assert sorted(last.splitlines()) == [f"task {x} says hello" for x in (10, 11, 12)]
    # And nowhere else.
    assert _text(executed).count("says hello") == 7


def test_worker_log_records_reach_the_kernel_loggers(executed: Any) -> None:
    lines = _cell_text(executed, "import logging").splitlines()
    assert sorted(line.split(" ", 1)[1] for line in lines) == ["INFO farm: measured 0", "INFO farm: measured 1"]
    assert all(line.startswith("ForkServerPoolWorker-") for line in lines)


def _cell_error(notebook: Any, source_start: str) -> Any:
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    [error] = [o for o in cell.outputs if o.output_type == "error"]
    return error


def _plain(traceback: list[str]) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))


def test_a_cell_function_failing_shows_its_source_line(executed: Any) -> None:
    error = _cell_error(executed, "def reciprocal(x):")
    assert error.ename == "ZeroDivisionError"
    shown = _plain(error.traceback)
    # The worker's frame names the cell's file and shows its line.
    assert re.search(r'File "[^"]*ipykernel_\d+[^"]*", line 2, in reciprocal\n +return 1 / \(x - 3\)', shown), shown
    # The remote traceback starts at the cell's function: no forkfarm frame.
    remote = shown.split('"""')[1]
    assert "forkfarm" not in remote and remote.count('File "') == 1, remote
    # Here, forkfarm's frames between the cell and the raise are hidden.
    assert "skipping hidden" in shown, shown


def test_an_unpicklable_exception_arrives_as_remote_error(executed: Any) -> None:
    assert "caught as ValueError: RemoteError[ValueError] True\n" in _cell_text(executed, "import threading")
    error = _cell_error(executed, "import threading")
    assert error.ename == "RemoteError[ValueError]"
    assert "bad value 7" in error.evalue and "could not be pickled" in error.evalue
    shown = _plain(error.traceback)
    assert re.search(r'line 7, in guarded\n +raise error', shown), shown


def test_breakpoint_in_a_notebook_says_it_needs_a_terminal(executed: Any) -> None:
    text = _cell_text(executed, "def paused(x):")
    assert "breakpoint() in a forkfarm worker" in text and "needs the program to run in a terminal" in text
