"""W19-W20: joblib.Parallel on forkfarm's backend against joblib's default, loky.

    W19  ``Parallel(n_jobs=2, batch_size="auto")(delayed(tiny)(i) for i in
         range(10_000))``, ``tiny`` returning ``i * i``: the time of a
         repeated call (its workers started by an untimed call before the
         clock) and tasks/s; and the first, cold call of each backend in
         this process (the workers' start), once, before the rounds.  -> ms
    W20  ``Parallel(n_jobs=2)(delayed(col_sum)(a, i) for i in range(20))``
         with ``a`` a 200 MiB float64 ndarray and joblib's default
         ``max_nbytes`` (auto-memmapping of arrays above 1 MB); ``col_sum``
         returns ``float(a[i::20].sum())``: some 50 ms of work in all
         (every cache line of ``a`` read once). The time per call, and the bytes each backend copies to get
         ``a`` to its workers (below).                                   -> s
         Its ideal: the 20 tasks' work alone, split over two processes
         forked from this one, which share ``a`` already (nothing travels,
         the fork itself is not timed): the slower child's time.

Both backends are reached through joblib's public API only
(``joblib.parallel_config(backend=...)``), so the script measures whatever
``import forkfarm.joblib`` registers.

Bytes copied, measured the same way for both backends, three ways:

- **copies of a**: an extra, untimed W20 call per backend and round runs
  ``col_sum_where`` instead of ``col_sum``: each task also reports what
  backs its ``a``, the mapping of ``/proc/self/maps`` holding the array's
  first byte: a file or memfd (its device, inode and the file offset of the
  data), or anonymous memory. Tasks whose ``a`` lies at the same place of
  the same file read the same copy; an ``a`` in anonymous memory (unpickled
  from a pipe) is a private copy, shared only by the tasks given the same
  array object (a batch's, unpickled together). The number of distinct copies
  times ``a.nbytes`` is the **bytes copied per call** reported: the bytes
  of ``a`` duplicated so that the workers could read it. Not seen: a region
  that one copy after another reused at the same offset (it would count
  once); the two columns below would show those bytes.
- **written**: the growth of this process's ``wchar`` (``/proc/self/io``)
  over each timed call: every byte it passed to write(2) and its kin, so
  joblib's dump of ``a`` into its memmapping folder (``/dev/shm`` unless
  ``JOBLIB_TEMP_FOLDER`` says otherwise), and whatever goes through pipes
  and sockets (loky's call queue). Bytes copied into shared memory by a
  plain memcpy (forkfarm's rings and arena) are not in it.
- **new shm**: during the untimed call (made once Shmem has stopped
  dropping: loky's backend unlinks a call's files a little after the
  call), a thread samples the machine's ``Shmem`` (``/proc/meminfo``)
  every 2 ms; the column is its peak above its value before the call:
  tmpfs files (the memmapping folder) and memfds (forkfarm's arena) that
  appeared, by write(2) or by memcpy. Shared
  memory kept from an earlier call and filled again is not in it, and it
  sees the whole machine: another program's shared memory would show.

What no column sees: the bytes of a backend's own task messages copied by
memcpy into memory it had already (forkfarm's rings); for W20 they are the
pickles of a memmap reference, a few KiB.

Method: the backends run in interleaved rounds (forkfarm then loky in round
1, loky then forkfarm in round 2, and so on), ``--rounds`` times, in this
one process; a round times 15 calls of W19, 3 of W20, per backend after
one untimed call (``--quick``: 2 rounds, 10 and 2 calls, a 32 MiB ``a``). Medians of all the timed calls are reported, and ratios are
taken between medians of the same run; nothing is asserted about timings.
Results go to stdout and to ``benchmarks/results/joblib_parallel.json``
(the raw samples, per round, and the medians).

Usage::

    python benchmarks/joblib_parallel.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np

import forkfarm.joblib  # noqa: F401 - registers the backend "forkfarm"

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ["forkfarm", "loky"]
WORKERS = 2
MiB = 1 << 20
PARTS = 20  # W20's tasks


# --------------------------------------------------------------------------
# The tasks: module-level functions, as joblib's users write them.
# --------------------------------------------------------------------------


def tiny(i: int) -> int:
    return i * i


def col_sum(a: np.ndarray, i: int) -> float:
    return float(a[i::PARTS].sum())


# In a worker: the arrays in private memory it was given, by id, with a
# serial number each, so that a later array at a freed one's address counts
# as the new copy it is.
_private: dict[int, tuple[weakref.ref[np.ndarray], int]] = {}
_serial = itertools.count()


def private_copy(a: np.ndarray) -> int:
    """The serial number of a's copy in this worker: the same for the tasks
    given the same array object (a batch's tasks, unpickled together)."""
    known = _private.get(id(a))
    if known is not None and known[0]() is a:
        return known[1]
    serial = next(_serial)
    _private[id(a)] = (weakref.ref(a), serial)
    return serial


def backing(a: np.ndarray) -> tuple[str, str]:
    """What holds a's data in this process: a kind ("anonymous", "memfd",
    "tmpfs file", "file") and a key that is the same for two tasks that
    read the same copy (device, inode and file offset of the data; for
    anonymous memory, this process and private_copy's number)."""
    address = a.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                path = fields[5].strip() if len(fields) > 5 else ""
                inode = int(fields[4])
                if inode == 0:
                    return "anonymous", f"{os.getpid()}:{private_copy(a)}"
                offset = int(fields[2], 16) + address - low
                kind = (
                    "memfd"
                    if path.startswith("/memfd:")
                    else "tmpfs file"
                    if path.startswith("/dev/shm/")
                    else "file"
                )
                return kind, f"{fields[3]}:{inode}:{offset}"
    return "unknown", f"{os.getpid()}:{private_copy(a)}"


def col_sum_where(a: np.ndarray, i: int) -> tuple[float, str, str]:
    return (col_sum(a, i), *backing(a))


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------


def wchar() -> int:
    """Bytes this process (all its threads) passed to write-like calls."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def shmem() -> int:
    """The machine's shared memory (tmpfs files, memfds, shared anonymous
    mappings), in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    return 0


def settle(limit: float = 3.0) -> None:
    """Waits (up to limit seconds) until Shmem has not dropped for 200 ms:
    joblib's loky backend unlinks a call's memmapped files a little after
    the call returns (its resource tracker), and a file of the last call
    still there would lower the next call's growth by its size."""
    deadline = time.monotonic() + limit
    low, steady = shmem(), 0
    while steady < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
        now = shmem()
        steady = steady + 1 if now >= low else 0
        low = min(low, now)


class ShmemPeak:
    """Samples Shmem every 2 ms in a thread, for the peak above its value
    at the start."""

    def __enter__(self) -> ShmemPeak:
        self.start = self.peak = shmem()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, shmem())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, shmem())

    @property
    def grown(self) -> int:
        return self.peak - self.start


def order(round_index: int) -> list[str]:
    """The backends in round round_index's order: alternating."""
    return BACKENDS if round_index % 2 == 0 else BACKENDS[::-1]


def call(backend: str, fn: Callable[[], Any]) -> Any:
    with joblib.parallel_config(backend=backend):
        return fn()


def timed(backend: str, fn: Callable[[], Any], check: Callable[[Any], None]) -> tuple[float, int]:
    """The time of one call of fn under backend, and this process's bytes
    written during it."""
    with joblib.parallel_config(backend=backend):
        written = wchar()
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        written = wchar() - written
    check(result)
    return seconds, written


# --------------------------------------------------------------------------
# The workloads
# --------------------------------------------------------------------------


def w19(rounds: int, calls: int, tasks: int) -> dict[str, Any]:
    expected = [i * i for i in range(tasks)]

    def run() -> list[int]:
        return list(joblib.Parallel(n_jobs=WORKERS, batch_size="auto")(joblib.delayed(tiny)(i) for i in range(tasks)))

    def check(result: list[int]) -> None:
        assert result == expected, "wrong results"

    cold = {}
    for backend in BACKENDS:  # the first calls of each backend in this process
        cold[backend] = timed(backend, run, check)[0]
    samples: dict[str, list[list[float]]] = {b: [] for b in BACKENDS}
    for r in range(rounds):
        for backend in order(r):
            check(call(backend, run))
            samples[backend].append([timed(backend, run, check)[0] for _ in range(calls)])
        print(f"  W19 round {r + 1}/{rounds} done", file=sys.stderr)
    return {"tasks": tasks, "cold_s": cold, "samples_s": samples}


def ideal_w20(a: np.ndarray) -> float:
    """The 20 tasks split over WORKERS processes forked from this one, which
    share a: the slower child's time for its share of the work."""
    children = []
    for w in range(WORKERS):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its tasks, its time, and out
            try:
                os.close(read)
                start = time.perf_counter()
                for i in range(w, PARTS, WORKERS):
                    col_sum(a, i)
                os.write(write, repr(time.perf_counter() - start).encode())
            finally:
                os._exit(0)
        os.close(write)
        children.append((pid, read))
    seconds = []
    for pid, read in children:
        with os.fdopen(read, "rb") as f:
            seconds.append(float(f.read()))
        os.waitpid(pid, 0)
    return max(seconds)


def w20(rounds: int, calls: int, nbytes: int) -> dict[str, Any]:
    a = np.random.default_rng(0).random(nbytes // 8)
    expected = [float(a[i::PARTS].sum()) for i in range(PARTS)]

    def run() -> list[float]:
        return list(joblib.Parallel(n_jobs=WORKERS)(joblib.delayed(col_sum)(a, i) for i in range(PARTS)))

    def where() -> list[tuple[float, str, str]]:
        return list(joblib.Parallel(n_jobs=WORKERS)(joblib.delayed(col_sum_where)(a, i) for i in range(PARTS)))

    def check(result: list[float]) -> None:
        assert result == expected, "wrong results"

    samples: dict[str, list[list[float]]] = {b: [] for b in BACKENDS}
    written: dict[str, list[list[int]]] = {b: [] for b in BACKENDS}
    copies: dict[str, list[int]] = {b: [] for b in BACKENDS}
    kinds: dict[str, list[dict[str, int]]] = {b: [] for b in BACKENDS}
    new_shm: dict[str, list[int]] = {b: [] for b in BACKENDS}
    ideal: list[float] = []
    for r in range(rounds):
        for backend in order(r):
            check(call(backend, run))
            times, bytes_ = [], []
            for _ in range(calls):
                seconds, wrote = timed(backend, run, check)
                times.append(seconds)
                bytes_.append(wrote)
            samples[backend].append(times)
            written[backend].append(bytes_)
            settle()
            with ShmemPeak() as peak:
                seen = call(backend, where)
            check([value for value, _, _ in seen])
            distinct = {(kind, key) for _, kind, key in seen}
            copies[backend].append(len(distinct))
            by_kind: dict[str, int] = {}
            for kind, _ in distinct:
                by_kind[kind] = by_kind.get(kind, 0) + 1
            kinds[backend].append(by_kind)
            new_shm[backend].append(peak.grown)
        ideal.append(ideal_w20(a))
        print(f"  W20 round {r + 1}/{rounds} done", file=sys.stderr)
    return {
        "nbytes": a.nbytes,
        "tasks": PARTS,
        "samples_s": samples,
        "written_bytes": written,
        "copies_of_a": copies,
        "copies_by_kind": kinds,
        "new_shm_peak_bytes": new_shm,
        "ideal_s": ideal,
    }


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def report(results: dict[str, Any], rounds: int, calls19: int, calls: int) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    r = results["W19"]
    m = {b: statistics.median(flat(r["samples_s"][b])) for b in BACKENDS}
    medians["W19"] = {
        b: {"call_s": m[b], "tasks_per_s": r["tasks"] / m[b], "cold_s": r["cold_s"][b], "ratio_to_loky": m[b] / m["loky"]}
        for b in BACKENDS
    }
    print(
        f"\nW19 Parallel(n_jobs={WORKERS}, batch_size='auto') of {r['tasks']} tiny tasks, "
        f"{rounds} interleaved rounds x {calls19} calls, medians"
    )
    print(f"  {'backend':10s} {'call (ms)':>10s} {'tasks/s':>10s} {'x loky':>7s} {'cold (ms)':>10s}")
    for b in BACKENDS:
        row = medians["W19"][b]
        print(
            f"  {b:10s} {row['call_s'] * 1e3:10.1f} {row['tasks_per_s']:10.0f} "
            f"{row['ratio_to_loky']:7.2f} {row['cold_s'] * 1e3:10.1f}"
        )
    print("  (x loky: the time's ratio to loky's; cold: each backend's first call in the process, once)")

    r = results["W20"]
    nbytes = r["nbytes"]
    m = {b: statistics.median(flat(r["samples_s"][b])) for b in BACKENDS}
    ideal = statistics.median(r["ideal_s"])
    medians["W20"] = {
        b: {
            "call_s": m[b],
            "ratio_to_loky": m[b] / m["loky"],
            "ratio_to_ideal": m[b] / ideal,
            "copies_of_a": statistics.median(r["copies_of_a"][b]),
            "bytes_copied_per_call": statistics.median(r["copies_of_a"][b]) * nbytes,
            "written_bytes": statistics.median(flat(r["written_bytes"][b])),
            "new_shm_peak_bytes": statistics.median(r["new_shm_peak_bytes"][b]),
        }
        for b in BACKENDS
    }
    medians["W20"]["ideal_s"] = ideal
    print(
        f"\nW20 Parallel(n_jobs={WORKERS})(delayed(col_sum)(a, i) for i in range({PARTS})), "
        f"a = {nbytes // MiB} MiB float64, default max_nbytes; {rounds} rounds x {calls} calls, medians"
    )
    print(
        f"  {'backend':10s} {'call (s)':>9s} {'x loky':>7s} {'x ideal':>8s} "
        f"{'copies of a':>11s} {'copied MiB':>10s} {'written MiB':>11s} {'new shm MiB':>11s}"
    )
    for b in BACKENDS:
        row = medians["W20"][b]
        kinds = sorted({k for seen in r["copies_by_kind"][b] for k in seen})
        print(
            f"  {b:10s} {row['call_s']:9.3f} {row['ratio_to_loky']:7.2f} {row['ratio_to_ideal']:8.1f} "
            f"{row['copies_of_a']:11g} {row['bytes_copied_per_call'] / MiB:10.1f} "
            f"{row['written_bytes'] / MiB:11.1f} {row['new_shm_peak_bytes'] / MiB:11.1f}  ({', '.join(kinds)})"
        )
    print(f"  {'ideal':10s} {ideal:9.3f}   (the work alone on {WORKERS} forked processes sharing a)")
    print(
        "  copies of a: distinct copies the tasks read (by the mapping behind each task's a);"
        " copied = copies x a.nbytes;\n  written: wchar of this process over a call;"
        " new shm: peak growth of the machine's Shmem over an untimed call"
    )
    return medians


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="2 rounds, a 32 MiB array: a smoke run")
    p.add_argument("--output", default=os.path.join(HERE, "results", "joblib_parallel.json"))
    ns = p.parse_args()
    rounds = 2 if ns.quick else ns.rounds
    calls = 2 if ns.quick else 3  # W20's; W19's calls take some 30 ms, so it makes more
    nbytes = (32 if ns.quick else 200) * MiB
    results: dict[str, Any] = {}
    print("W19 ...", file=sys.stderr)
    results["W19"] = w19(rounds, 5 * calls, 10_000)
    print("W20 ...", file=sys.stderr)
    results["W20"] = w20(rounds, calls, nbytes)
    medians = report(results, rounds, 5 * calls, calls)
    os.makedirs(os.path.dirname(ns.output), exist_ok=True)
    with open(ns.output, "w") as f:
        json.dump(
            {
                "results": results,
                "medians": medians,
                "rounds": rounds,
                "calls_per_round": calls,
                "joblib": joblib.__version__,
                "memmapping_folder": "JOBLIB_TEMP_FOLDER" if os.environ.get("JOBLIB_TEMP_FOLDER") else "default",
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
            },
            f,
            indent=1,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
