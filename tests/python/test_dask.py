"""dask on forkfarm (issue 7): ``dask.compute(..., scheduler=executor)``
runs a graph's tasks on a forkfarm Executor."""

from __future__ import annotations

import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import forkfarm  # noqa: E402
import helpers  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def test_delayed_graph() -> None:
    square = dask.delayed(helpers.square)
    add = dask.delayed(helpers.add)
    with forkfarm.Executor(2) as executor:
        total = add(square(3), add(square(4), 1))
        assert dask.compute(total, scheduler=executor) == (26,)
        assert executor.stats().done >= 3  # the graph's tasks ran on the workers


def test_array_reduction() -> None:
    with forkfarm.Executor(2) as executor:
        ones = da.ones((800, 800), chunks=(200, 200))
        (total,) = dask.compute((ones * 2).sum(), scheduler=executor)
        assert total == 2 * 800 * 800
        assert executor.stats().done >= 16
