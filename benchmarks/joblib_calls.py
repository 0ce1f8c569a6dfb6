"""W18: repeated joblib ``Parallel`` calls, as scikit-learn makes them.

``cross_val_score(LogisticRegression(max_iter=200), X, y, cv=5, n_jobs=2)``
on a small synthetic dataset, called CALLS times in one fresh interpreter
per sample (scikit-learn imported and the data made before the clock
starts): the **first** call (a pool's start, and for the fork server's
workers their imports of scikit-learn) and the **repeated** calls (the
median of calls 2 and on), for:

- ``forkfarm``: joblib's backend ``"forkfarm"``, on forkfarm's reusable
  executor, whose workers stay between calls (forkfarm/joblib.py);
- ``forkfarm fork``: the same backend with the fork start method set, so a
  new executor forked per call;
- ``loky``: joblib's default backend, its reusable executor.

Interleaved rounds, medians, and each row's ratio to loky.

    .venv/bin/python benchmarks/joblib_calls.py [--rounds N] [--calls N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

RUN = """
import json, time
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
import joblib
backend = {backend!r}
if backend.startswith("forkfarm"):
    import forkfarm, forkfarm.joblib
    if backend == "forkfarm fork":
        forkfarm.set_start_method("fork")
    name = "forkfarm"
else:
    name = "loky"
X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
times = []
with joblib.parallel_config(backend=name):
    for _ in range({calls}):
        start = time.perf_counter()
        cross_val_score(LogisticRegression(max_iter=200), X, y, cv=5, n_jobs=2)
        times.append(time.perf_counter() - start)
print(json.dumps(times))
"""

BACKENDS = ["forkfarm", "forkfarm fork", "loky"]


def sample(backend: str, calls: int) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", RUN.format(backend=backend, calls=calls)],
        capture_output=True,
        text=True,
        check=True,
    )
    times: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=6)
    args = parser.parse_args()
    first: dict[str, list[float]] = {name: [] for name in BACKENDS}
    again: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for _ in range(args.rounds):
        for name in BACKENDS:
            times = sample(name, args.calls)
            first[name].append(times[0])
            again[name].append(statistics.median(times[1:]))
    print(
        f"W18 cross_val_score(LogisticRegression, cv=5, n_jobs=2), {args.rounds} interleaved rounds "
        f"of {args.calls} calls, medians"
    )
    print(f"{'':16} {'first (ms)':>11} {'ratio':>6} {'repeated (ms)':>14} {'ratio':>6}")
    loky_first, loky_again = statistics.median(first["loky"]), statistics.median(again["loky"])
    for name in BACKENDS:
        f, a = statistics.median(first[name]), statistics.median(again[name])
        print(f"{name:16} {f * 1e3:11.1f} {f / loky_first:6.2f} {a * 1e3:14.1f} {a / loky_again:6.2f}")


if __name__ == "__main__":
    main()
