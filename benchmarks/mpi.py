"""W15 and W16 across MPI ranks, forkfarm against mpi4py.futures, in
alternating mpiexec runs of benchmarks/mpi_jobs.py (medians of the timed
regions; each job's start-up is not timed).

- W15: ``map(noop, 20,000 items, chunksize=1)`` over 3 ranks (rank 0 and 2
  that run tasks): forkfarm.Pool under ``python -m forkfarm.mpi`` against
  MPIPoolExecutor under ``python -m mpi4py.futures``. Target: at least 3x
  its throughput.
- W16: 16 tasks that each sum a sixteenth of one 256 MiB read-only array,
  on 2 ranks of 1 worker each (``--hybrid --workers 1``): forkfarm sends
  the shared array once per rank; mpi4py.futures gets it as an argument of
  every task. Reports the time and the bytes sent.

    .venv/bin/python benchmarks/mpi.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLAGS = ["--allow-run-as-root", "--oversubscribe"]

JOBS = {
    ("w15", "forkfarm"): ["-m", "forkfarm.mpi"],
    ("w15", "mpi4py"): ["-m", "mpi4py.futures"],
    ("w16", "forkfarm"): ["-m", "forkfarm.mpi", "--hybrid", "--workers", "1"],
    ("w16", "mpi4py"): ["-m", "mpi4py.futures"],
}


def run(workload: str, library: str) -> dict[str, float]:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("mpiexec is missing: install Debian's openmpi-bin (make test does)")
    command = [mpiexec, *FLAGS, "-n", "3", sys.executable, *JOBS[(workload, library)], "mpi_jobs.py", workload, library]
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE, timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    samples: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in JOBS}
    for _ in range(rounds):
        for key in JOBS:
            samples[key].append(run(*key))

    def median(key: tuple[str, str], field: str) -> float:
        return statistics.median(s[field] for s in samples[key])

    print(f"MPI, 3 ranks on one node, {rounds} alternating runs, medians")
    ours, theirs = median(("w15", "forkfarm"), "tasks_per_second"), median(("w15", "mpi4py"), "tasks_per_second")
    print(f"W15 map(noop, 20,000, chunksize=1): forkfarm {ours:,.0f} tasks/s, "
          f"mpi4py.futures {theirs:,.0f} tasks/s: {ours / theirs:.2f}x (target >= 3x)")
    ours, theirs = median(("w16", "forkfarm"), "seconds"), median(("w16", "mpi4py"), "seconds")
    sent_ours = median(("w16", "forkfarm"), "bytes_sent") / 2**20
    sent_theirs = median(("w16", "mpi4py"), "bytes_sent") / 2**20
    print(f"W16 16 tasks over one 256 MiB array, 2 ranks x 1 worker: forkfarm {ours:.2f} s "
          f"({sent_ours:,.0f} MiB sent), mpi4py.futures {theirs:.2f} s ({sent_theirs:,.0f} MiB sent): "
          f"{theirs / ours:.1f}x faster, {sent_theirs / sent_ours:.1f}x fewer bytes")


if __name__ == "__main__":
    main()
