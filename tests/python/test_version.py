"""The version is written once, in meson.build: the runtime returns it
(ff_version, as forkfarm._core.__version__), forkfarm.__version__ is that,
and meson-python put the same in the installed package's metadata."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import forkfarm
from forkfarm import _core

ROOT = Path(__file__).resolve().parents[2]


def _meson_project_version() -> str:
    text = (ROOT / "meson.build").read_text()
    match = re.search(r"project\([^)]*?\bversion:\s*'([^']+)'", text, re.S)
    assert match, "meson.build has no project version"
    return match.group(1)


def test_the_package_version_is_the_runtimes() -> None:
    assert isinstance(forkfarm.__version__, str)
    assert forkfarm.__version__ == _core.__version__


def test_the_version_is_meson_builds() -> None:
    assert forkfarm.__version__ == _meson_project_version()


def test_the_metadata_has_the_same_version() -> None:
    assert importlib.metadata.version("forkfarm") == forkfarm.__version__
