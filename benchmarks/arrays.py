"""forkfarm's NumPy benchmarks (W7-W10), side by side with its peers.

    W7   ``map(arr_sum, [a] * 8)`` with ``a`` a plain 64 MiB ndarray, on
         forkfarm.Pool, multiprocessing.Pool, ProcessPoolExecutor, loky,
         mpire and joblib.Parallel (its default backend, loky, with
         auto-memmap of arrays above 1 MB)                       -> s
    W7b  the same with ``a`` born in shared memory (made inside
         ``forkfarm.shared_allocations()``): sent with no copy; against
         its ideal, the sums alone on workers that share ``a``   -> s
    W8   the same task on forkfarm shared arrays of 1 MiB to 1 GiB, one
         ``apply`` at a time: the time per task, the time the worker spent
         in it, and the overhead around it; and ``apply(arr_first)``, which
         touches one element, for the cost of getting the array  -> µs
    W9   ``map(made_result, [64 MiB] * 4)``: four new 64 MiB arrays made by
         ``np.full`` in the workers and returned                 -> ms
    W9k  a 64 MiB result returned by ``apply`` that the worker made once
         and keeps (so it must go by copy); forkfarm also with the result
         in a shared array the worker made                       -> ms
    W10  examples/numpy_farm.py: a blockwise stencil on 2 workers, against
         the same NumPy code run serially                        -> speedup

W7 and W9 also measure their physical ideal in the same rounds: for W7 one
warm copy of ``a`` plus the eight sums split over WORKERS workers that
share ``a`` already, so that nothing travels; for W9 the workers' own
making of the four arrays, returning nothing, on a forkfarm pool whose
workers use NumPy's own allocator.

Method: the implementations of a workload run in interleaved rounds (A B C,
A B C, ...), ``--rounds`` times, each with a pool made once outside the
timed region and warmed up; the medians are reported, and every ratio is
taken between medians of the same run. Results go to stdout and to
``benchmarks/results/arrays.json``.

Usage::

    python benchmarks/arrays.py [--rounds N] [--quick] [--only W7,W9]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "examples")]

import forkfarm  # noqa: E402
import tasks  # noqa: E402

WORKERS = 2
MiB = 1 << 20


# --------------------------------------------------------------------------
# The implementations of W7 and W9: open a pool, map, apply, close.
# --------------------------------------------------------------------------


class Impl:
    def __init__(self, name: str, factory: Callable[[], Any]) -> None:
        self.name = name
        self.factory = factory

    def open(self) -> Any:
        return self.factory()

    def map(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(h.map(func, items))

    def apply(self, h: Any, func: Callable[..., Any], *args: Any) -> Any:
        return h.apply(func, args)

    def close(self, h: Any) -> None:
        h.terminate()
        h.join()


class SharedResultImpl(Impl):
    """W9 with the result in a shared array the worker made (the pattern
    with no copy at all): apply() runs big_shared_result instead."""

    def apply(self, h: Any, func: Callable[..., Any], *args: Any) -> Any:
        return h.apply(tasks.big_shared_result, args)


class IdealW7(Impl):
    """W7's ideal: one warm copy of the array in this process, then the
    tasks split over WORKERS workers that already share the array (a
    forkfarm shared array, made in the untimed warm-up), so that nothing
    travels."""

    def open(self) -> Any:
        return forkfarm.Pool(WORKERS), {}

    def map(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        pool, made = h
        source = items[0]
        if id(source) not in made:
            made[id(source)] = (np.zeros_like(source), forkfarm.as_shared(source))
        warm, shared = made[id(source)]
        np.copyto(warm, source)
        return list(pool.map(func, [shared if x is source else x for x in items]))

    def close(self, h: Any) -> None:
        h[0].terminate()
        h[0].join()


class SumsAlone(Impl):
    """W7b's ideal: the tasks split over WORKERS workers that share the
    array already (a forkfarm shared array, made in the warm-up)."""

    def open(self) -> Any:
        return forkfarm.Pool(WORKERS), {}

    def map(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        pool, made = h
        source = items[0]
        if id(source) not in made:
            made[id(source)] = forkfarm.as_shared(source)
        shared = made[id(source)]
        return list(pool.map(func, [shared if x is source else x for x in items]))

    def close(self, h: Any) -> None:
        h[0].terminate()
        h[0].join()


class IdealW9(Impl):
    """W9's ideal: the workers make the arrays and return nothing, with
    NumPy's own allocator."""

    def open(self) -> Any:
        return forkfarm.Pool(WORKERS, initializer=forkfarm._core.set_shared_threshold, initargs=(0,))

    def map(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(h.map(tasks.made_and_dropped, items, chunksize=1))


class ExecutorImpl(Impl):
    def apply(self, h: Any, func: Callable[..., Any], *args: Any) -> Any:
        return h.submit(func, *args).result()

    def close(self, h: Any) -> None:
        h.shutdown(wait=True)


class MpireImpl(Impl):
    def open(self) -> Any:
        pool = self.factory()
        return pool

    def map(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(h.map(func, [(x,) for x in items], chunk_size=1, concatenate_numpy_output=False))

    def apply(self, h: Any, func: Callable[..., Any], *args: Any) -> Any:
        return h.apply(func, args=args)

    def close(self, h: Any) -> None:
        h.terminate()


class JoblibImpl(Impl):
    """joblib.Parallel as users call it: its default backend (loky) with its
    default auto-memmap of arrays above 1 MB. The executor behind it is
    reused between calls, as joblib does."""

    def open(self) -> Any:
        return self.factory()

    def map(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        joblib = importlib.import_module("joblib")
        return list(h(joblib.delayed(func)(x) for x in items))

    def apply(self, h: Any, func: Callable[..., Any], *args: Any) -> Any:
        joblib = importlib.import_module("joblib")
        return h([joblib.delayed(func)(*args)])[0]

    def close(self, h: Any) -> None:
        pass


def implementations() -> list[Impl]:
    out: list[Impl] = [
        Impl("forkfarm.Pool", lambda: forkfarm.Pool(WORKERS)),
        Impl("multiprocessing.Pool", lambda: multiprocessing.get_context("fork").Pool(WORKERS)),
        ExecutorImpl(
            "ProcessPoolExecutor",
            lambda: concurrent.futures.ProcessPoolExecutor(
                WORKERS, mp_context=multiprocessing.get_context("fork")
            ),
        ),
    ]
    try:
        loky = importlib.import_module("loky")
        out.append(ExecutorImpl("loky", lambda: loky.ProcessPoolExecutor(WORKERS)))
    except ImportError:
        pass
    try:
        mpire = importlib.import_module("mpire")
        out.append(MpireImpl("mpire", lambda: mpire.WorkerPool(WORKERS, keep_alive=True)))
    except ImportError:
        pass
    try:
        joblib = importlib.import_module("joblib")
        out.append(JoblibImpl("joblib (auto-memmap)", lambda: joblib.Parallel(n_jobs=WORKERS)))
    except ImportError:
        pass
    return out


@contextmanager
def opened(impls: list[Impl]) -> Iterator[dict[str, Any]]:
    handles: dict[str, Any] = {}
    try:
        for impl in impls:
            handles[impl.name] = impl.open()
        yield handles
    finally:
        for impl in impls:
            if impl.name in handles:
                impl.close(handles[impl.name])


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    impls: list[Impl], rounds: int, run: Callable[[Impl, Any], Any], check: Callable[[Any], None]
) -> dict[str, list[float]]:
    """Samples of run(impl, handle) per implementation, in interleaved
    rounds, after one untimed warm-up each."""
    samples: dict[str, list[float]] = {impl.name: [] for impl in impls}
    with opened(impls) as handles:
        for impl in impls:
            check(run(impl, handles[impl.name]))
        for r in range(rounds):
            for impl in impls:
                h = handles[impl.name]
                result: list[Any] = []
                samples[impl.name].append(timed(lambda: result.append(run(impl, h))))
                check(result[0])
            print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return samples


# --------------------------------------------------------------------------
# The workloads
# --------------------------------------------------------------------------


def w7(rounds: int, nbytes: int) -> dict[str, Any]:
    a = np.ones(nbytes // 8)
    expected = float(a.size)

    def check(values: list[float]) -> None:
        assert values == [expected] * 8, values

    impls = [IdealW7("ideal: one copy, sums split", lambda: None), *implementations()]
    samples = interleaved(impls, rounds, lambda i, h: i.map(h, tasks.arr_sum, [a] * 8), check)
    serial = [timed(lambda: [tasks.arr_sum(a) for _ in range(8)]) for _ in range(rounds)]
    return {"samples": samples, "serial_s": statistics.median(serial), "nbytes": nbytes}


def w7b(rounds: int, nbytes: int) -> dict[str, Any]:
    with forkfarm.shared_allocations():
        born = np.ones(nbytes // 8)
    plain = np.ones(nbytes // 8)
    expected = float(born.size)

    def check(values: list[float]) -> None:
        assert values == [expected] * 8, values

    impls = [
        SumsAlone("ideal: the sums alone", lambda: None),
        Impl("forkfarm.Pool", lambda: forkfarm.Pool(WORKERS)),
        Impl("forkfarm.Pool, plain a", lambda: forkfarm.Pool(WORKERS)),
    ]

    def run(impl: Impl, h: Any) -> Any:
        array = plain if impl.name.endswith("plain a") else born
        return impl.map(h, tasks.arr_sum, [array] * 8)

    samples = interleaved(impls, rounds, run, check)
    return {"samples": samples, "nbytes": nbytes}


def w8(calls: int, sizes: list[int]) -> dict[str, Any]:
    """Per size: the cost of getting a shared array (consecutive
    ``apply(arr_first)``, the sizes interleaved in rounds so that the
    machine's noise falls on all of them alike), the overhead around
    ``apply(arr_sum)`` (wall time minus the worker's own time), and, for
    comparison, the overhead around a task that sleeps as long with no array
    at all."""
    out: dict[str, Any] = {str(n): {} for n in sizes}
    with forkfarm.Pool(WORKERS) as pool:
        arrays = {n: forkfarm.full(n // 8, 1.0) for n in sizes}
        for shared in arrays.values():
            pool.map(tasks.arr_sum, [shared] * 8, chunksize=1)  # each worker maps it
        firsts: dict[int, list[float]] = {n: [] for n in sizes}
        for _ in range(10):
            for n, shared in arrays.items():
                block = [timed(lambda: pool.apply(tasks.arr_first, (shared,))) for _ in range(calls // 10)]
                firsts[n].append(statistics.median(block))
        for n, shared in arrays.items():
            walls, inside = [], []
            for _ in range(max(10, calls // 10)):
                start = time.perf_counter()
                total, seconds = pool.apply(tasks.arr_sum_timed, (shared,))
                walls.append(time.perf_counter() - start)
                inside.append(seconds)
                assert total == shared.size
            task_s = statistics.median(inside)
            bare = []
            for _ in range(max(10, calls // 10)):
                start = time.perf_counter()
                slept = pool.apply(tasks.sleep_timed, (task_s,))
                bare.append(time.perf_counter() - start - slept)
            out[str(n)] = {
                "first_element_us": statistics.median(firsts[n]) * 1e6,
                "task_us": statistics.median(walls) * 1e6,
                "in_worker_us": task_s * 1e6,
                "overhead_us": statistics.median(w - s for w, s in zip(walls, inside)) * 1e6,
                "overhead_without_array_us": statistics.median(bare) * 1e6,
            }
            print(f"  W8 {n // MiB} MiB: {out[str(n)]}", file=sys.stderr)
        del arrays
    return out


def w9(rounds: int, nbytes: int) -> dict[str, Any]:
    impls = [IdealW9("ideal: the workers' making", lambda: None), *(i for i in implementations() if not isinstance(i, JoblibImpl))]

    def check(values: list[Any]) -> None:
        assert len(values) == 4, f"{len(values)} results"
        assert all(v is None or (v.nbytes == nbytes and v[-1] == 1.0) for v in values), "wrong results"

    samples = interleaved(impls, rounds, lambda i, h: i.map(h, tasks.made_result, [nbytes] * 4), check)
    return {"samples": samples, "nbytes": nbytes}


def w9k(rounds: int, nbytes: int) -> dict[str, Any]:
    impls = [i for i in implementations() if not isinstance(i, JoblibImpl)]
    impls.insert(1, SharedResultImpl("forkfarm, shared array", lambda: forkfarm.Pool(WORKERS)))

    def check(value: Any) -> None:
        assert value.nbytes == nbytes and value[-1] == 1.0

    samples = interleaved(impls, rounds, lambda i, h: i.apply(h, tasks.big_result, nbytes), check)
    return {"samples": samples, "nbytes": nbytes}


def w10(rounds: int, size: int, steps: int) -> dict[str, Any]:
    numpy_farm = importlib.import_module("numpy_farm")
    runs = [numpy_farm.run(size, steps, WORKERS, 2 * WORKERS) for _ in range(rounds)]
    assert all(r["ok"] for r in runs), runs
    return {
        "serial_s": statistics.median(r["serial_s"] for r in runs),
        "parallel_s": statistics.median(r["parallel_s"] for r in runs),
        "speedup": statistics.median(r["speedup"] for r in runs),
        "size": size,
        "steps": steps,
    }


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(s) for name, s in samples.items() if s}


def print_peers(title: str, samples: dict[str, list[float]], scale: float, unit: str) -> dict[str, float]:
    """Prints each implementation's median and its ratio to forkfarm's."""
    m = medians(samples)
    base = m["forkfarm.Pool"]
    print(f"\n{title}")
    for name, value in m.items():
        print(f"  {name:24s} {value * scale:9.4g} {unit:2s}  {value / base:8.1f}x forkfarm's time")
    return m


def report(results: dict[str, Any]) -> None:
    if "W7" in results:
        r = results["W7"]
        title = f"W7  map(arr_sum, [a] * 8), a = {r['nbytes'] // MiB} MiB ndarray (median s)"
        m = print_peers(title, r["samples"], 1.0, "s")
        base = m["forkfarm.Pool"]
        print(f"  {'serial, in this process':24s} {r['serial_s']:9.4f} s")
        of_ideal = m["ideal: one copy, sums split"] / base
        print(f"  target >= 0.9 of the ideal: {'met' if of_ideal >= 0.9 else 'NOT met'} ({of_ideal:.2f})")
        print(
            "  target >= 1000x multiprocessing.Pool: "
            f"{'met' if m['multiprocessing.Pool'] / base >= 1000 else 'NOT met'}"
            f" ({m['multiprocessing.Pool'] / base:.0f}x)"
        )
        jl = m.get("joblib (auto-memmap)")
        if jl:
            print(
                f"  target >= 20x joblib: {'met' if jl / base >= 20 else 'NOT met'} ({jl / base:.1f}x)"
            )
    if "W7b" in results:
        r = results["W7b"]
        title = f"W7b map(arr_sum, [a] * 8), a = {r['nbytes'] // MiB} MiB born in shared memory (median s)"
        m = print_peers(title, r["samples"], 1.0, "s")
        of_ideal = m["ideal: the sums alone"] / m["forkfarm.Pool"]
        print(f"  target >= 0.9 of the ideal: {'met' if of_ideal >= 0.9 else 'NOT met'} ({of_ideal:.2f})")
    if "W8" in results:
        print("\nW8  forkfarm shared arrays, one apply at a time (median µs)")
        print(
            f"  {'size':>9s} {'arr_first':>10s} {'arr_sum':>10s} {'in worker':>10s}"
            f" {'overhead':>9s} {'same, no array':>14s}"
        )
        rows = results["W8"]
        for nbytes, row in rows.items():
            print(
                f"  {int(nbytes) // MiB:5d} MiB {row['first_element_us']:10.1f} {row['task_us']:10.1f}"
                f" {row['in_worker_us']:10.1f} {row['overhead_us']:9.1f}"
                f" {row['overhead_without_array_us']:14.1f}"
            )
        firsts = [row["first_element_us"] for row in rows.values()]
        spread = max(firsts) / max(min(firsts), 1e-9)
        print(
            f"  target: getting the array costs the same at every size (within 2x: {spread:.2f}x)"
            f" and under 100 µs (max {max(firsts):.1f} µs): "
            f"{'met' if spread <= 2 and max(firsts) < 100 else 'NOT met'}"
        )
        print(
            "  (the overhead around a long task is the parent's wake-up after it slept; the"
            " last column shows the same without any array)"
        )
    if "W9" in results:
        r = results["W9"]
        title = f"W9  map(made_result, [{r['nbytes'] // MiB} MiB] * 4): new arrays made in the workers (median ms)"
        m = print_peers(title, r["samples"], 1e3, "ms")
        of_ideal = m["ideal: the workers' making"] / m["forkfarm.Pool"]
        print(f"  target >= 0.9 of the ideal: {'met' if of_ideal >= 0.9 else 'NOT met'} ({of_ideal:.2f})")
    if "W9k" in results:
        r = results["W9k"]
        title = f"W9k a {r['nbytes'] // MiB} MiB result the worker keeps, returned by apply (median ms)"
        m = print_peers(title, r["samples"], 1e3, "ms")
        base = m["forkfarm.Pool"]
        ratio = m["multiprocessing.Pool"] / base
        print(
            f"  target >= 100x multiprocessing.Pool: {'met' if ratio >= 100 else 'NOT met'}"
            f" ({ratio:.0f}x) with a plain ndarray"
        )
        shared = m.get("forkfarm, shared array")
        if shared:
            ratio = m["multiprocessing.Pool"] / shared
            print(f"    and {'met' if ratio >= 100 else 'NOT met'} ({ratio:.0f}x) with a shared array")
    if "W10" in results:
        r = results["W10"]
        print(
            f"\nW10 diffusion stencil {r['size']}x{r['size']}, {r['steps']} steps: serial {r['serial_s']:.3f} s, "
            f"2 workers {r['parallel_s']:.3f} s, speedup {r['speedup']:.2f} "
            f"(target >= 1.8: {'met' if r['speedup'] >= 1.8 else 'NOT met'})"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="small sizes, 2 rounds: a smoke run")
    p.add_argument("--only", default="W7,W7b,W8,W9,W9k,W10")
    p.add_argument("--output", default=os.path.join(HERE, "results", "arrays.json"))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    only = set(ns.only.split(","))
    rounds = 2 if ns.quick else ns.rounds
    big = 8 * MiB if ns.quick else 64 * MiB
    results: dict[str, Any] = {}
    if "W7" in only:
        print("W7 ...", file=sys.stderr)
        results["W7"] = w7(rounds, big)
    if "W7b" in only:
        print("W7b ...", file=sys.stderr)
        results["W7b"] = w7b(rounds, big)
    if "W8" in only:
        print("W8 ...", file=sys.stderr)
        sizes = [1 * MiB, 16 * MiB] if ns.quick else [1 * MiB, 16 * MiB, 256 * MiB, 1024 * MiB]
        results["W8"] = w8(20 if ns.quick else 100, sizes)
    if "W9" in only:
        print("W9 ...", file=sys.stderr)
        results["W9"] = w9(rounds, big)
    if "W9k" in only:
        print("W9k ...", file=sys.stderr)
        results["W9k"] = w9k(rounds, big)
    if "W10" in only:
        print("W10 ...", file=sys.stderr)
        results["W10"] = w10(min(rounds, 3), 1024 if ns.quick else 4096, 2 if ns.quick else 4)
    report(results)
    os.makedirs(os.path.dirname(ns.output), exist_ok=True)
    with open(ns.output, "w") as f:
        json.dump({"results": results, "machine": platform.platform(), "cpus": os.cpu_count()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
