"""mypy --strict passes on the installed package (with its stub of the C
extension and py.typed) and on the examples (issue 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]


def _mypy(tmp_path: Path, *targets: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            *targets,
        ],
        capture_output=True,
        text=True,
        # Outside the checkout, so that `forkfarm` is the installed package.
        cwd=tmp_path,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_the_package_passes_strict_mypy(tmp_path: Path) -> None:
    _mypy(tmp_path, "-p", "forkfarm")


def test_the_examples_pass_strict_mypy(tmp_path: Path) -> None:
    _mypy(tmp_path, str(ROOT / "examples"))


def test_the_stub_covers_the_extension() -> None:
    """Every public name of _core is in _core.pyi."""
    import forkfarm
    from forkfarm import _core

    stub = (Path(forkfarm.__file__).parent / "_core.pyi").read_text()
    missing = [
        name
        for name in dir(_core)
        if not name.startswith("_") and f"class {name}" not in stub and f"def {name}(" not in stub and f"{name}:" not in stub
    ]
    assert not missing
