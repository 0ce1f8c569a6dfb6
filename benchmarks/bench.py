"""forkfarm benchmark: forkfarm against its peers, measured side by side.

Implementations (each with 2 workers):

    forkfarm.Pool          the baseline every ratio is taken against
    forkfarm.Executor      forkfarm's concurrent.futures.Executor
    multiprocessing.Pool
    ProcessPoolExecutor    concurrent.futures
    loky                   loky.ProcessPoolExecutor (optional: "n/a" if missing)
    mpire                  mpire.WorkerPool(keep_alive=True) (optional)

Workloads (W1-W4 run ``tasks.noop``, so only runtime overhead is measured):

    W1  sequential round trip, 2,000 calls after warm-up:
        pools ``apply(noop)``, executors ``submit(noop).result()``,
        mpire ``apply(noop)``                                   -> µs per call
    W2  ``imap_unordered(noop, range(50_000), chunksize=1)``;
        executors ``map(noop, ..., chunksize=1)``               -> tasks/s
    W3  ``map(noop, range(1_000_000))`` with the default chunksize;
        executors ``map(..., chunksize=10_000)`` (chunksize=1 would take
        minutes)                                                -> tasks/s
    W4  cold start: create the pool, first result, close/join;
        executors: construct, ``submit(noop).result()``, shutdown -> ms
    W5  ``map(numpy_task, range(64))``: 64 CPU-bound NumPy tasks of about
        20 ms; a serial run in this process is measured in the same rounds,
        and the efficiency is serial / (parallel x 2)           -> s
    W6  ``map(busy_wait, durations)``: 10,000 CPU-bound tasks of 1-10 ms
        (uniform, fixed seed), default chunksize; the ideal makespan is
        sum(durations) / 2                                      -> s

Method: for each workload the implementations run in interleaved rounds
(A B C ..., A B C ..., ...), ``--rounds`` times, and the medians are reported.
For W1-W3 a fresh pool is created per round outside the timed region and
warmed up with 50 calls; W4 times the whole life of a fresh pool. A failing
implementation records its error instead of stopping the run. The table goes
to stdout, progress to stderr, and everything (raw samples included) to
``benchmarks/results/latest.json``.

Usage::

    python benchmarks/bench.py [--rounds N] [--quick] [--only W1,W3]
                               [--timeout SECONDS] [--output FILE]

``--quick`` is a smoke run: 3 rounds of 500 / 5,000 / 200,000 / 16 / 1,000
tasks for W1 / W2 / W3 / W5 / W6. W6 runs ``--w6-rounds`` rounds (default 1:
each takes about 28 s per implementation at full size). A default run takes
about ten minutes. ``--timeout`` abandons a sample that takes longer (recorded as an
error). The exit status is 1 if a forkfarm implementation failed, else 0; the
timings themselves are never asserted on.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import importlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tasks import busy_wait, noop, numpy_task, numpy_warmup  # noqa: E402  (needs the sys.path entry above)

WORKERS = 2
WARMUP_CALLS = 50
EXECUTOR_W3_CHUNKSIZE = 10_000
BASELINE = "forkfarm.Pool"
SERIAL = "serial (this process)"
DEFAULT_OUTPUT = HERE / "results" / "latest.json"


def _expect(got: int, want: int) -> None:
    if got != want:
        raise RuntimeError(f"got {got} results, expected {want}")


# --------------------------------------------------------------------------
# Implementations: one small adapter per API shape.
# --------------------------------------------------------------------------


class Impl:
    """Adapter giving every pool/executor the same five operations."""

    name: str = "?"
    kind: str = "?"  # "pool" or "executor"

    def __init__(self, name: str) -> None:
        self.name = name

    def open(self) -> Any:
        raise NotImplementedError

    def call(self, h: Any) -> Any:
        """One synchronous round trip of noop()."""
        raise NotImplementedError

    def warmup(self, h: Any, workload: str) -> None:
        """Untimed warm-up before W1-W3: WARMUP_CALLS round trips."""
        for _ in range(WARMUP_CALLS):
            self.call(h)

    def unordered(self, h: Any, n: int) -> int:
        """W2: n single-task chunks; returns the number of results received."""
        raise NotImplementedError

    def bulk_map(self, h: Any, n: int) -> int:
        """W3: map over range(n); returns the number of results received."""
        raise NotImplementedError

    def compute(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> int:
        """W5/W6: map func over items with the default chunksize; returns
        the number of results."""
        raise NotImplementedError

    def close(self, h: Any) -> None:
        """Graceful shutdown, waiting for the workers."""
        raise NotImplementedError

    def kill(self, h: Any) -> None:
        """Forceful shutdown after an error."""
        raise NotImplementedError


class PoolImpl(Impl):
    """multiprocessing.Pool-shaped API (forkfarm.Pool, multiprocessing.Pool)."""

    kind = "pool"

    def __init__(self, name: str, factory: Callable[..., Any]) -> None:
        super().__init__(name)
        self.factory = factory

    def open(self) -> Any:
        return self.factory(WORKERS)

    def call(self, h: Any) -> Any:
        return h.apply(noop)

    def unordered(self, h: Any, n: int) -> int:
        return sum(1 for _ in h.imap_unordered(noop, range(n), chunksize=1))

    def bulk_map(self, h: Any, n: int) -> int:
        return len(h.map(noop, range(n)))

    def compute(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> int:
        return len(h.map(func, items))

    def close(self, h: Any) -> None:
        h.close()
        h.join()

    def kill(self, h: Any) -> None:
        h.terminate()
        h.join()


class ExecutorImpl(Impl):
    """concurrent.futures.Executor-shaped API."""

    kind = "executor"

    def __init__(self, name: str, factory: Callable[..., Any]) -> None:
        super().__init__(name)
        self.factory = factory

    def open(self) -> Any:
        return self.factory(max_workers=WORKERS)

    def call(self, h: Any) -> Any:
        return h.submit(noop).result()

    def unordered(self, h: Any, n: int) -> int:
        return sum(1 for _ in h.map(noop, range(n), chunksize=1))

    def bulk_map(self, h: Any, n: int) -> int:
        return sum(1 for _ in h.map(noop, range(n), chunksize=EXECUTOR_W3_CHUNKSIZE))

    def compute(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> int:
        return sum(1 for _ in h.map(func, items))

    def close(self, h: Any) -> None:
        h.shutdown(wait=True)

    def kill(self, h: Any) -> None:
        terminate = getattr(h, "terminate_workers", None)  # Python >= 3.14
        if callable(terminate):
            terminate()
            return
        try:
            h.shutdown(wait=True, cancel_futures=True, kill_workers=True)  # loky
        except TypeError:
            h.shutdown(wait=True, cancel_futures=True)


class MpireImpl(Impl):
    """mpire.WorkerPool; keep_alive so one pool serves warm-up and workload.

    mpire workers that are kept alive remember whether their first job was
    ordered (map) or not (apply, imap_unordered), and a later job of the other
    kind with the same function gets garbled results (seen with mpire 2.10).
    So mpire warms up with WARMUP_CALLS tasks of the workload's own kind.
    """

    kind = "pool"

    def __init__(self, name: str, mpire: ModuleType) -> None:
        super().__init__(name)
        self.mpire = mpire

    def open(self) -> Any:
        return self.mpire.WorkerPool(n_jobs=WORKERS, keep_alive=True)

    def call(self, h: Any) -> Any:
        return h.apply(noop)

    def warmup(self, h: Any, workload: str) -> None:
        if workload == "W2":
            _expect(self.unordered(h, WARMUP_CALLS), WARMUP_CALLS)
        elif workload in ("W3", "W5", "W6"):
            _expect(self.bulk_map(h, WARMUP_CALLS), WARMUP_CALLS)
        else:
            super().warmup(h, workload)

    def unordered(self, h: Any, n: int) -> int:
        return sum(1 for _ in h.imap_unordered(noop, range(n), chunk_size=1))

    def bulk_map(self, h: Any, n: int) -> int:
        return len(h.map(noop, range(n)))

    def compute(self, h: Any, func: Callable[[Any], Any], items: list[Any]) -> int:
        return len(h.map(func, items))

    def close(self, h: Any) -> None:
        h.stop_and_join()

    def kill(self, h: Any) -> None:
        h.terminate()


@dataclass
class Candidate:
    """An implementation, or the reason it cannot run at all."""

    name: str
    impl: Impl | None
    unavailable: str | None = None  # "n/a (...)" when an optional peer is missing
    error: str | None = None  # import failure of a required implementation


def _describe(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _unavailable(exc: ImportError) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return "n/a (not installed)"
    return f"n/a ({_describe(exc)})"


def load_candidates() -> list[Candidate]:
    out: list[Candidate] = []
    try:
        forkfarm = importlib.import_module("forkfarm")
        # The peers' start method (multiprocessing's default), named: left
        # to choose, forkfarm would take its fork server here, since loky
        # and mpire leave threads running in this process.
        method = multiprocessing.get_start_method()
        context = forkfarm.get_context(method)
        out.append(Candidate("forkfarm.Pool", PoolImpl("forkfarm.Pool", context.Pool)))
        out.append(
            Candidate(
                "forkfarm.Executor",
                ExecutorImpl(
                    "forkfarm.Executor",
                    lambda max_workers: forkfarm.Executor(max_workers, mp_context=method),
                ),
            )
        )
    except Exception as exc:  # forkfarm is required, but report rather than crash
        for name in ("forkfarm.Pool", "forkfarm.Executor"):
            out.append(Candidate(name, None, error=f"error: {_describe(exc)}"))
    out.append(
        Candidate("multiprocessing.Pool", PoolImpl("multiprocessing.Pool", multiprocessing.Pool))
    )
    out.append(
        Candidate(
            "ProcessPoolExecutor",
            ExecutorImpl("ProcessPoolExecutor", concurrent.futures.ProcessPoolExecutor),
        )
    )
    try:
        loky = importlib.import_module("loky")
        out.append(Candidate("loky", ExecutorImpl("loky", loky.ProcessPoolExecutor)))
    except ImportError as exc:
        out.append(Candidate("loky", None, unavailable=_unavailable(exc)))
    try:
        mpire = importlib.import_module("mpire")
        out.append(Candidate("mpire", MpireImpl("mpire", mpire)))
    except ImportError as exc:
        out.append(Candidate("mpire", None, unavailable=_unavailable(exc)))
    return out


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    w1_calls: int
    w2_tasks: int
    w3_tasks: int
    w5_tasks: int
    w6_tasks: int

    def w6_durations(self) -> list[float]:
        """W6's task lengths: uniform in 1-10 ms, the same in every run."""
        import random

        rng = random.Random(20261124)
        return [rng.uniform(0.001, 0.010) for _ in range(self.w6_tasks)]


FULL = Sizes(w1_calls=2_000, w2_tasks=50_000, w3_tasks=1_000_000, w5_tasks=64, w6_tasks=10_000)
QUICK = Sizes(w1_calls=500, w2_tasks=5_000, w3_tasks=200_000, w5_tasks=16, w6_tasks=1_000)


class SampleTimeout(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise SampleTimeout in the main thread if the block runs too long."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise SampleTimeout(f"no result after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    fresh_pool_timed: bool  # True: pool life is inside the timed region (W4)

    def size(self, sizes: Sizes) -> int:
        return {
            "W1": sizes.w1_calls,
            "W2": sizes.w2_tasks,
            "W3": sizes.w3_tasks,
            "W5": sizes.w5_tasks,
            "W6": sizes.w6_tasks,
        }.get(self.key, 1)

    def describe(self, impl_kind: str, sizes: Sizes) -> str:
        n = self.size(sizes)
        if self.key == "W1":
            op = "submit(noop).result()" if impl_kind == "executor" else "apply(noop)"
            return f"{op} x {n:,}"
        if self.key == "W2":
            if impl_kind == "executor":
                return f"map(noop, range({n:,}), chunksize=1)"
            return f"imap_unordered(noop, range({n:,}), chunksize=1)"
        if self.key == "W3":
            if impl_kind == "executor":
                return f"map(noop, range({n:,}), chunksize={EXECUTOR_W3_CHUNKSIZE:,})"
            return f"map(noop, range({n:,}))"
        if self.key == "W5":
            return f"map(numpy_task, range({n}))"
        if self.key == "W6":
            return f"map(busy_wait, {n:,} durations of 1-10 ms)"
        if impl_kind == "executor":
            return "construct + submit(noop).result() + shutdown(wait=True)"
        return "Pool(2) + apply(noop) + close() + join()"

    def body(self, impl: Impl, h: Any, sizes: Sizes) -> None:
        """The timed operation for W1-W3 (W4 is handled by run_sample)."""
        if self.key == "W1":
            call = impl.call
            for _ in range(sizes.w1_calls):
                call(h)
        elif self.key == "W2":
            _expect(impl.unordered(h, sizes.w2_tasks), sizes.w2_tasks)
        elif self.key == "W3":
            _expect(impl.bulk_map(h, sizes.w3_tasks), sizes.w3_tasks)
        elif self.key == "W5":
            _expect(impl.compute(h, numpy_task, list(range(sizes.w5_tasks))), sizes.w5_tasks)
        elif self.key == "W6":
            durations = sizes.w6_durations()
            _expect(impl.compute(h, busy_wait, durations), len(durations))
        else:
            raise ValueError(self.key)

    def metric(self, seconds: float, sizes: Sizes) -> float:
        if self.key == "W1":
            return seconds / sizes.w1_calls * 1e6  # µs per call
        if self.key == "W2":
            return sizes.w2_tasks / seconds  # tasks/s
        if self.key == "W3":
            return sizes.w3_tasks / seconds  # tasks/s
        if self.key in ("W5", "W6"):
            return seconds
        return seconds * 1e3  # ms


WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in (
        Workload("W1", "sequential round trip of noop", "µs/call", False, False),
        Workload("W2", "imap_unordered, chunksize=1", "tasks/s", True, False),
        Workload("W3", "map, default chunksize", "tasks/s", True, False),
        Workload("W4", "cold start: create, first result, close/join", "ms", False, True),
        Workload("W5", "64 NumPy tasks of ~20 ms", "s", False, False),
        Workload("W6", "10,000 tasks of 1-10 ms, default chunksize", "s", False, False),
    )
}

#: The issue's targets, checked on the medians (and never asserted on).
TARGETS: dict[str, str] = {
    "W1": ">= 10x multiprocessing.Pool and >= 10x ProcessPoolExecutor",
    "W2": ">= 10x multiprocessing.Pool's throughput",
    "W3": ">= 2x multiprocessing.Pool",
    "W4": "<= 1/2 of multiprocessing.Pool (fork)",
    "W5": ">= 0.95 of the ideal 2-core speedup, and no peer faster (beyond 2% noise)",
    "W6": "makespan within 5% of the ideal",
}


def serial_seconds(key: str, sizes: Sizes) -> float:
    """W5's reference: the same tasks run one after another here."""
    assert key == "W5"
    numpy_task(0)  # warm up NumPy
    start = time.perf_counter()
    for seed in range(sizes.w5_tasks):
        numpy_task(seed)
    return time.perf_counter() - start


def ideal_seconds(key: str, sizes: Sizes, serial: float | None) -> float | None:
    """The best a 2-worker pool can do: half the serial time."""
    if key == "W5":
        return None if serial is None else serial / WORKERS
    if key == "W6":
        return sum(sizes.w6_durations()) / WORKERS
    return None


def target_status(key: str, cells: dict[str, Cell], ideal: float | None) -> str | None:
    """'met' or 'NOT met' (with the figure that decides), from medians."""
    base = cells.get(BASELINE)
    base_median = base.median if base and not base.error else None
    if base_median is None:
        return None
    w = WORKLOADS[key]

    def vs(name: str) -> float | None:
        cell = cells.get(name)
        return ratio(w, cell.median if cell else None, base_median)

    checks: list[tuple[bool, str]] = []
    if key in ("W1", "W2", "W3", "W4"):
        need = {"W1": 10.0, "W2": 10.0, "W3": 2.0, "W4": 2.0}[key]
        peers = ["multiprocessing.Pool"] + (["ProcessPoolExecutor"] if key == "W1" else [])
        for peer in peers:
            r = vs(peer)
            if r is not None:
                checks.append((r >= need, f"{r:.2f}x {peer}"))
    elif key == "W5" and ideal:
        efficiency = ideal / base_median
        checks.append((efficiency >= 0.95, f"efficiency {efficiency:.3f}"))
        # Within 2% is the noise of this machine between runs of the same
        # pool: "faster" means beyond it.
        faster = [
            n
            for n, c in cells.items()
            if n not in (BASELINE, SERIAL) and c.median and c.median < base_median * 0.98
        ]
        checks.append((not faster, "no peer faster" if not faster else "faster: " + ", ".join(faster)))
    elif key == "W6" and ideal:
        over = base_median / ideal
        checks.append((over <= 1.05, f"makespan {over:.3f}x ideal"))
    if not checks:
        return None
    met = all(ok for ok, _ in checks)
    return ("met" if met else "NOT met") + " (" + "; ".join(text for _, text in checks) + ")"


@dataclass
class Cell:
    """Results of one implementation on one workload."""

    samples: list[float] = field(default_factory=list)
    error: str | None = None
    unavailable: str | None = None
    traceback: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


class Runner:
    def __init__(self, sizes: Sizes, timeout: float) -> None:
        self.sizes = sizes
        self.timeout = timeout
        self.leaked = False  # a pool could not be shut down

    def _dispose(self, impl: Impl, h: Any, graceful: bool) -> None:
        try:
            with deadline(self.timeout):
                if graceful:
                    impl.close(h)
                else:
                    impl.kill(h)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            if graceful:
                self._dispose(impl, h, graceful=False)
            else:
                self.leaked = True
                print(
                    f"  warning: could not shut down {impl.name}: {_describe(exc)}",
                    file=sys.stderr,
                )

    def run_sample(self, w: Workload, impl: Impl) -> float:
        """One timed measurement; raises on any failure (after cleaning up)."""
        gc.collect()
        if w.fresh_pool_timed:
            h = None
            try:
                with deadline(self.timeout):
                    start = time.perf_counter()
                    h = impl.open()
                    impl.call(h)
                    impl.close(h)
                    elapsed = time.perf_counter() - start
            except BaseException:
                if h is not None:
                    self._dispose(impl, h, graceful=False)
                raise
            return w.metric(elapsed, self.sizes)

        with deadline(self.timeout):
            h = impl.open()
        try:
            with deadline(self.timeout):
                impl.warmup(h, w.key)
                if w.key == "W5":
                    # W5 measures the work, not start-up (W4 does): every
                    # worker imports NumPy first, as forked ones have.
                    _expect(impl.compute(h, numpy_warmup, [0.05] * (2 * WORKERS)), 2 * WORKERS)
            gc.collect()
            with deadline(self.timeout):
                start = time.perf_counter()
                w.body(impl, h, self.sizes)
                elapsed = time.perf_counter() - start
        except BaseException:
            self._dispose(impl, h, graceful=False)
            raise
        self._dispose(impl, h, graceful=True)
        return w.metric(elapsed, self.sizes)

    def run_workload(
        self, w: Workload, candidates: Sequence[Candidate], rounds: int
    ) -> dict[str, Cell]:
        cells: dict[str, Cell] = {}
        if w.key == "W5":
            cells[SERIAL] = Cell()
        for c in candidates:
            cells[c.name] = Cell(error=c.error, unavailable=c.unavailable)
        for r in range(rounds):
            parts: list[str] = []
            if w.key == "W5":
                gc.collect()
                value = serial_seconds(w.key, self.sizes)
                cells[SERIAL].samples.append(value)
                parts.append(f"{SERIAL}={fmt_value(value, w.unit)}")
            for c in candidates:
                cell = cells[c.name]
                if c.impl is None or cell.error is not None:
                    continue
                try:
                    value = self.run_sample(w, c.impl)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:
                    cell.error = f"error: {_describe(exc)}"
                    cell.traceback = traceback.format_exc()
                    parts.append(f"{c.name}=ERROR")
                    continue
                cell.samples.append(value)
                parts.append(f"{c.name}={fmt_value(value, w.unit)}")
            print(f"[{w.key}] round {r + 1}/{rounds}: " + "  ".join(parts), file=sys.stderr)
        return cells


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def fmt_value(v: float, unit: str) -> str:
    if unit == "tasks/s":
        return f"{v:,.0f}"
    if unit == "s":
        return f"{v:.3f}"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def ratio(w: Workload, peer: float | None, base: float | None) -> float | None:
    """Peer cost / forkfarm cost: above 1 means forkfarm was faster."""
    if peer is None or base is None or peer <= 0 or base <= 0:
        return None
    return base / peer if w.higher_is_better else peer / base


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("forkfarm", "numpy", "loky", "mpire"):
        ver: str | None = None
        try:
            mod = importlib.import_module(name)
            ver = getattr(mod, "__version__", None)
        except Exception:
            mod = None
        if ver is None:
            try:
                ver = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                ver = None if mod is None else "unknown"
        out[name] = ver
    return out


def machine_info() -> dict[str, Any]:
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "cpu_count": os.cpu_count(),
        "sched_getaffinity": affinity,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "multiprocessing_start_method": multiprocessing.get_start_method(allow_none=False),
    }


def ideal_figure(key: str, median: float, ideal: float) -> str:
    """W5: the efficiency against the ideal speedup; W6: the makespan over
    the ideal one."""
    if key == "W5":
        return f"efficiency {ideal / median:.3f}"
    return f"{median / ideal:.3f}x ideal"


def workload_ideals(results: dict[str, dict[str, Cell]], sizes: Sizes) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, cells in results.items():
        serial = cells.get(SERIAL)
        ideal = ideal_seconds(key, sizes, serial.median if serial else None)
        if ideal:
            out[key] = ideal
    return out


def print_report(
    results: dict[str, dict[str, Cell]],
    candidates: Sequence[Candidate],
    sizes: Sizes,
    rounds: int,
    info: dict[str, Any],
    vers: dict[str, str | None],
    wall: float,
) -> None:
    ideals = workload_ideals(results, sizes)
    kinds = {c.name: (c.impl.kind if c.impl else "pool") for c in candidates}
    print()
    print(
        f"forkfarm benchmark: {WORKERS} workers, medians of {rounds} interleaved"
        f" round{'s' if rounds != 1 else ''} (run took {wall:.0f} s)"
    )
    print(
        f"Python {info['python']} ({info['python_implementation']}) on {info['platform']};"
        f" os.cpu_count()={info['cpu_count']}, sched_getaffinity={info['sched_getaffinity']};"
        f" start method (forkfarm and multiprocessing): {info['multiprocessing_start_method']}"
    )
    print(", ".join(f"{k} {v or 'n/a'}" for k, v in vers.items()))

    width = max(len(c.name) for c in candidates) + 2
    for key, cells in results.items():
        w = WORKLOADS[key]
        better = "higher" if w.higher_is_better else "lower"
        print()
        print(f"{w.key}  {w.title}  [{w.unit}, {better} is better]")
        print(f"  pools: {w.describe('pool', sizes)}")
        print(f"  executors: {w.describe('executor', sizes)}")
        print(f"  {'implementation':<{width}}{'median':>12}{'min .. max':>24}{'vs forkfarm':>14}")
        base = cells.get(BASELINE)
        base_median = base.median if base and not base.error else None
        for c in candidates:
            cell = cells[c.name]
            name = c.name + (" *" if key == "W3" and kinds[c.name] == "executor" else "")
            if cell.unavailable:
                print(f"  {name:<{width}}  {cell.unavailable}")
                continue
            if cell.error and not cell.samples:
                print(f"  {name:<{width}}  {cell.error[:100]}")
                continue
            med = cell.median
            assert med is not None
            lo, hi = min(cell.samples), max(cell.samples)
            spread = f"{fmt_value(lo, w.unit)} .. {fmt_value(hi, w.unit)}"
            if c.name == BASELINE:
                rel = "1.00 (base)"
            else:
                rv = ratio(w, med, base_median)
                rel = "n/a" if rv is None else f"{rv:.2f}x"
            line = f"  {name:<{width}}{fmt_value(med, w.unit):>12}{spread:>24}{rel:>14}"
            ideal = ideals.get(key)
            if ideal:
                line += f"  {ideal_figure(key, med, ideal)}"
            if cell.error:
                line += f"  ({len(cell.samples)} rounds, then {cell.error[:60]})"
            print(line)
        serial = cells.get(SERIAL)
        if serial and serial.median is not None:
            print(f"  {SERIAL:<{width}}{fmt_value(serial.median, w.unit):>12}")
        if ideals.get(key):
            print(f"  ideal (2 workers): {ideals[key]:.3f} s")
        status = target_status(key, cells, ideals.get(key))
        if status:
            print(f"  target: {TARGETS[key]}: {status}")

    print()
    print("Ratios: peer cost / forkfarm.Pool cost (µs or ms ratio, or inverse of the")
    print("  tasks/s ratio); above 1.00 means forkfarm.Pool was faster.")
    if "W3" in results:
        print(
            f"  * executors run W3 as map(noop, ..., chunksize={EXECUTOR_W3_CHUNKSIZE:,}):"
            " chunksize=1 would take minutes."
        )
    print(
        "W1-W3: fresh pool per round, created and warmed up"
        f" ({WARMUP_CALLS} calls) outside the timed region; W4 times the whole pool life."
    )
    print(
        "loky = loky.ProcessPoolExecutor; mpire = mpire.WorkerPool(keep_alive=True),"
        " closed with stop_and_join(),\n"
        f"  and warmed up with {WARMUP_CALLS} tasks of the workload's own kind."
    )


def write_json(
    path: Path,
    results: dict[str, dict[str, Cell]],
    candidates: Sequence[Candidate],
    sizes: Sizes,
    rounds: int,
    quick: bool,
    info: dict[str, Any],
    vers: dict[str, str | None],
    started: datetime,
    wall: float,
) -> None:
    workloads: dict[str, Any] = {}
    ideals = workload_ideals(results, sizes)
    for key, cells in results.items():
        w = WORKLOADS[key]
        base = cells.get(BASELINE)
        base_median = base.median if base and not base.error else None
        impls: dict[str, Any] = {}
        for c in candidates:
            cell = cells[c.name]
            kind = c.impl.kind if c.impl else None
            impls[c.name] = {
                "status": (
                    "n/a" if cell.unavailable else "error" if cell.error else "ok"
                ),
                "operation": w.describe(kind or "pool", sizes) if c.impl else None,
                "samples": cell.samples,
                "median": cell.median,
                "ratio_vs_forkfarm": ratio(w, cell.median, base_median),
                "error": cell.error or cell.unavailable,
                "traceback": cell.traceback,
            }
        ideal = ideals.get(key)
        if ideal:
            for name, entry in impls.items():
                med = entry["median"]
                entry["vs_ideal"] = None if not med else (
                    ideal / med if key == "W5" else med / ideal
                )
        serial = cells.get(SERIAL)
        workloads[key] = {
            "title": w.title,
            "unit": w.unit,
            "higher_is_better": w.higher_is_better,
            "size": w.size(sizes) if key != "W4" else None,
            "rounds": len(cells[BASELINE].samples) if BASELINE in cells else None,
            "serial_median": serial.median if serial else None,
            "serial_samples": serial.samples if serial else None,
            "ideal_seconds": ideal,
            "vs_ideal_definition": (
                "efficiency = ideal / median" if key == "W5"
                else "median / ideal" if key == "W6" else None
            ),
            "target": TARGETS.get(key),
            "target_status": target_status(key, cells, ideal),
            "implementations": impls,
        }
    doc = {
        "timestamp": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 3),
        "rounds": rounds,
        "quick": quick,
        "workers": WORKERS,
        "warmup_calls": WARMUP_CALLS,
        "executor_w3_chunksize": EXECUTOR_W3_CHUNKSIZE,
        "baseline": BASELINE,
        "ratio_definition": "peer cost / forkfarm.Pool cost; >1 means forkfarm.Pool faster",
        "sizes": {
            "W1_calls": sizes.w1_calls,
            "W2_tasks": sizes.w2_tasks,
            "W3_tasks": sizes.w3_tasks,
            "W5_tasks": sizes.w5_tasks,
            "W6_tasks": sizes.w6_tasks,
        },
        "machine": info,
        "versions": vers,
        "workloads": workloads,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark forkfarm against its peers.")
    p.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 5, 3 with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="fewer iterations: a smoke run")
    p.add_argument(
        "--w6-rounds", type=int, default=1, help="rounds of W6, the long one (default 1)"
    )
    p.add_argument(
        "--no-plot", action="store_true", help="do not redraw docs/benchmarks.png"
    )
    p.add_argument("--only", default=None, help="comma-separated workloads, e.g. W1,W3")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds before one sample is abandoned as an error (default 120, 0 = none)",
    )
    p.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file (default {DEFAULT_OUTPUT})"
    )
    ns = p.parse_args(argv)
    if ns.rounds is None:
        ns.rounds = 3 if ns.quick else 5
    if ns.rounds < 1:
        p.error("--rounds must be at least 1")
    if ns.only:
        keys = [k.strip().upper() for k in ns.only.split(",") if k.strip()]
        unknown = [k for k in keys if k not in WORKLOADS]
        if unknown or not keys:
            p.error(f"--only: unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
        ns.only = [k for k in WORKLOADS if k in keys]
    else:
        ns.only = list(WORKLOADS)
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    sizes = QUICK if ns.quick else FULL
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    candidates = load_candidates()
    info = machine_info()
    vers = versions()
    runner = Runner(sizes, ns.timeout)

    results: dict[str, dict[str, Cell]] = {}
    for key in ns.only:
        rounds = ns.w6_rounds if key == "W6" else ns.rounds
        results[key] = runner.run_workload(WORKLOADS[key], candidates, rounds)
    wall = time.perf_counter() - t0

    print_report(results, candidates, sizes, ns.rounds, info, vers, wall)
    write_json(
        ns.output, results, candidates, sizes, ns.rounds, ns.quick, info, vers, started, wall
    )
    print(f"\nwrote {ns.output}")
    if not ns.no_plot:
        try:
            import plot

            print(f"wrote {plot.draw(ns.output)}")
        except ImportError as exc:
            print(f"no plot: {_describe(exc)}", file=sys.stderr)

    failed = any(
        results[k][name].error for k in results for name in ("forkfarm.Pool", "forkfarm.Executor")
    )
    sys.stdout.flush()
    sys.stderr.flush()
    if runner.leaked:
        # A pool we could not shut down may block interpreter exit: leave now.
        os._exit(1 if failed else 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
