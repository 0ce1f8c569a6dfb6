"""joblib on forkfarm (issue 7): ``import forkfarm.joblib`` registers the
"forkfarm" backend, and ``joblib.Parallel`` runs on a forkfarm Pool."""

from __future__ import annotations

import os
from typing import Any

import pytest

joblib = pytest.importorskip("joblib")
np = pytest.importorskip("numpy")

import forkfarm  # noqa: E402
import forkfarm.joblib  # noqa: E402,F401 - registers the backend
import helpers  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def test_parallel_runs_on_forkfarm_workers() -> None:
    with joblib.parallel_config(backend="forkfarm", n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(_pid_and_square)(i) for i in range(200))
    assert [square for _, square in out] == [i * i for i in range(200)]
    pids = {pid for pid, _ in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_arrays_and_lambdas() -> None:
    with joblib.parallel_config(backend="forkfarm", n_jobs=2):
        sums = joblib.Parallel()(joblib.delayed(np.sum)(np.full(1 << 18, i, dtype=np.float64)) for i in range(6))
        assert sums == [float(i * (1 << 18)) for i in range(6)]
        assert joblib.Parallel()(joblib.delayed(lambda x: -x)(i) for i in range(5)) == [0, -1, -2, -3, -4]


def test_errors_reach_the_caller() -> None:
    with joblib.parallel_config(backend="forkfarm", n_jobs=2):
        with pytest.raises(ValueError, match="on purpose"):
            joblib.Parallel()(joblib.delayed(helpers.raise_value_error)("on purpose") for _ in range(3))


def test_a_crashed_worker_fails_the_call_instead_of_hanging() -> None:
    with joblib.parallel_config(backend="forkfarm", n_jobs=2):
        with pytest.raises(forkfarm.WorkerLostError):
            joblib.Parallel()(joblib.delayed(helpers.exit_with_code)(3) for _ in range(2))


def test_n_jobs_one_runs_here() -> None:
    with joblib.parallel_config(backend="forkfarm", n_jobs=1):
        out: Any = joblib.Parallel()(joblib.delayed(_pid_and_square)(2) for _ in range(1))
    assert out == [(os.getpid(), 4)]
