"""multiprocessing's logger, its executable and its fork server's preload
through the module, checked on both modules (the ``mp`` fixture)."""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """multiprocessing's logger, given back as it was: its handlers, its
    level, and whether log_to_stderr was called."""
    logger = logging.getLogger("multiprocessing")
    handlers, level = list(logger.handlers), logger.level
    to_stderr = multiprocessing.util._log_to_stderr  # type: ignore[attr-defined]
    yield logger
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
    logger.setLevel(level)
    multiprocessing.util._log_to_stderr = to_stderr  # type: ignore[attr-defined]


def _log(get_logger: Any, message: str) -> None:
    get_logger().info(message)


class TestLogging:
    def test_get_logger_is_multiprocessings(self, mp: Any, logger: logging.Logger) -> None:
        assert mp.get_logger() is logger
        assert mp.util.get_logger() is logger
        assert not logger.propagate  # its records go to its own handlers only
        ctx = mp.get_context("fork")
        assert ctx.get_logger() is logger
        handlers = len(logger.handlers)
        assert ctx.log_to_stderr() is logger
        assert len(logger.handlers) == handlers + 1
        assert isinstance(logger.handlers[-1], logging.StreamHandler)

    def test_log_to_stderr_prints_the_records_of_a_process(
        self, mp: Any, logger: logging.Logger, capfd: pytest.CaptureFixture[str]
    ) -> None:
        assert mp.log_to_stderr(logging.INFO) is logger
        assert logger.level == logging.INFO
        process = mp.Process(target=_log, args=(mp.get_logger, "hello from the child"), name="logging-child")
        process.start()
        process.join(10)
        assert process.exitcode == 0
        err = capfd.readouterr().err
        assert "[INFO/logging-child] child process calling self.run()" in err
        assert "[INFO/logging-child] hello from the child" in err
        assert "[INFO/logging-child] process exiting with exitcode 0" in err

    def test_a_pool_logs_its_shutdown(self, mp: Any, logger: logging.Logger) -> None:
        records = _Records()
        logger.addHandler(records)
        logger.setLevel(logging.DEBUG)
        pool = mp.Pool(1)
        pool.close()
        pool.join()
        mine = [r.getMessage() for r in records.records if r.process == os.getpid()]
        assert "closing pool" in mine and "joining pool" in mine
        assert all(r.levelno == logging.DEBUG for r in records.records if r.getMessage() == "closing pool")


_FORKSERVER_SCRIPT = """
import sys
import {module} as multiprocessing

def imported(name):
    import sys
    return name in sys.modules

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_executable(sys.argv[1])
    ctx.set_forkserver_preload(["wave", "no_such_module_here"])
    with ctx.Pool(1) as pool:
        print(pool.apply(imported, ("wave",)), pool.apply(imported, ("colorsys",)))
    print(multiprocessing.spawn.get_executable() in (sys.argv[1], sys.argv[1].encode()))
"""


def _run(module: str, tmp_path: Path) -> tuple[str, list[str]]:
    marker = tmp_path / "started"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho started >> "{marker}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_FORKSERVER_SCRIPT.format(module=module)))
    done = subprocess.run(
        [sys.executable, str(script), str(wrapper)],
        capture_output=True, text=True, timeout=100, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    started = marker.read_text().split() if marker.exists() else []
    return done.stdout, started


class TestForkServer:
    def test_set_executable_and_preload(self, mp: Any, tmp_path: Path) -> None:
        """The fork server runs the executable set, and its workers start
        with the preloaded modules imported (one that does not exist is
        skipped); a module nobody imported is not there."""
        out, started = _run(mp.__name__, tmp_path)
        assert out.split() == ["True", "False", "True"]
        assert started  # the fork server was started through the wrapper

    def test_preload_takes_module_names(self, mp: Any) -> None:
        with pytest.raises(TypeError, match="module_names must be a list of strings"):
            mp.set_forkserver_preload(["wave", 1])
