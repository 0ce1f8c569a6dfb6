"""The compatibility suite: each test runs once against the standard
library's multiprocessing and once against forkfarm, through the ``mp``
fixture, so that the two can be seen to agree."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection  # noqa: F401 - mp.connection in the tests
from typing import Any

import pytest

import forkfarm


@pytest.fixture(params=["multiprocessing", "forkfarm"])
def mp(request: pytest.FixtureRequest) -> Any:
    """The module under test: ``import <it> as multiprocessing``."""
    if request.param == "multiprocessing":
        if multiprocessing.get_start_method(allow_none=True) not in (None, "fork"):
            pytest.skip("the suite compares with multiprocessing's fork start method")
        return multiprocessing
    return forkfarm


@pytest.fixture
def fork(mp: Any) -> Any:
    """The module's Process class (fork): either module's primitives travel
    to it by inheritance."""
    return mp.Process
