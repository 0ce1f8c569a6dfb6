"""The compatibility suite: each test runs once against the standard
library's multiprocessing and once against forkfarm, through the ``mp``
fixture, so that the two can be seen to agree."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

import forkfarm


@pytest.fixture(params=["multiprocessing", "forkfarm"])
def mp(request: pytest.FixtureRequest) -> Any:
    """The module under test: ``import <it> as multiprocessing``."""
    if request.param == "multiprocessing":
        return multiprocessing.get_context("fork")
    return forkfarm


@pytest.fixture
def fork() -> Any:
    """Starts child processes (fork), for either module's primitives, which
    both travel to a forked child by inheritance."""
    return multiprocessing.get_context("fork").Process
