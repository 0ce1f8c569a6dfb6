"""The programs of examples/dropin run unchanged, but for their import, on
multiprocessing and on forkfarm, and print the same thing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

DROPIN = Path(__file__).resolve().parents[2] / "examples" / "dropin"
IMPORT = "import multiprocessing\n"


def _run(source: str, tmp_path: Path, name: str) -> str:
    script = tmp_path / name
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=100,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("program", sorted(p.name for p in DROPIN.glob("*.py")))
def test_same_output(program: str, tmp_path: Path) -> None:
    source = (DROPIN / program).read_text()
    # The one line that changes, and nothing else that imports multiprocessing.
    assert source.count(IMPORT) == 1
    assert "import multiprocessing." not in source and "from multiprocessing" not in source
    dropped_in = source.replace(IMPORT, "import forkfarm as multiprocessing\n")
    expected = _run(source, tmp_path, "with_multiprocessing.py")
    got = _run(dropped_in, tmp_path, "with_forkfarm.py")
    assert got == expected
    assert got.strip()
