"""forkfarm demo: forkfarm.Pool and multiprocessing.Pool side by side.

Six short parts, every figure measured while the demo runs, on this machine:

1. the round trip of one small task: ``apply(noop)`` many times in a row;
2. a map of many small tasks: ``map(square, range(200_000))``;
3. a 64 MiB NumPy array sent to the workers: ``map(array_sum, [a] * 8)``;
4. a worker killed in the middle of a task (SIGKILL): multiprocessing's
   result never comes (the demo gives it a timeout, then terminates that
   pool); forkfarm raises ``WorkerLostError`` and its pool goes on;
5. a map with a progress bar (``progress=True``, a tqdm bar on stderr);
6. the forkfarm pool's ``stats()`` table after all of that.

Both pools have the same number of workers and the same start method (fork,
where the platform has it), are made once and warmed up before anything is
timed. Parts 1-3 run each library in turn, several times (interleaved, the
order alternating), and print the medians; "N× faster" is
multiprocessing's time divided by forkfarm's.

Where each task computes for tens of milliseconds or more, the pool's
overhead per task hardly counts: ``examples/monte_carlo.py`` runs such a
job, a NumPy Monte Carlo, on both pools.

Both pools are terminated and joined on the way out, after an error or
Ctrl-C too (multiprocessing's workers are made to ignore Ctrl-C, as
forkfarm's do, so that it reaches this process only).

Run it with ``make demo`` or ``python examples/demo.py [--repeat N]
[--workers N]``. It needs NumPy, and tqdm for part 5.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.pool
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

import forkfarm

ROUND_TRIP_CALLS = 2_000
WARMUP_CALLS = 50
MAP_ITEMS = 200_000
ARRAY_MIB = 64
ARRAY_TASKS = 8
CRASH_TIMEOUT = 3.0  # seconds multiprocessing's get() is given in part 4
AFTER_CRASH_ITEMS = 1_000
PROGRESS_ITEMS = 200
PROGRESS_SLEEP = 0.01  # seconds each task of part 5 sleeps


# -- the tasks ----------------------------------------------------------------


def noop(x: Any = None) -> Any:
    """Does nothing: a round trip of it measures only the pool."""
    return x


def square(x: int) -> int:
    return x * x


def array_sum(a: np.ndarray) -> float:
    """Reads every element of the array once."""
    return float(a.sum())


def die() -> None:
    """Kills its own worker, as a segfault or the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def ignore_sigint() -> None:
    """multiprocessing's workers ignore Ctrl-C, as forkfarm's do: it
    reaches this process only, which terminates both pools. (A worker that
    Ctrl-C killed in the middle of reading a task would keep the lock of
    multiprocessing's task queue, and terminate() would wait for it forever.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# -- measuring and printing ---------------------------------------------------


def say(line: str = "") -> None:
    # Flushed at once: the workers are forked, and a line still in this
    # process's buffer would be theirs too; and tqdm's bar goes to stderr.
    print(line, flush=True)


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {plural or noun + 's'}"


def duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs" if seconds < 1e-4 else f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def verdict(ff_seconds: float, mp_seconds: float) -> str:
    ratio = mp_seconds / ff_seconds
    digits = 0 if ratio >= 10 else 1
    if ratio >= 1:
        return f"forkfarm {ratio:.{digits}f}× faster"
    return f"forkfarm {1 / ratio:.1f}× slower"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def side_by_side(
    repeat: int, ff: Callable[[], Any], mp: Callable[[], Any], check: Callable[[Any], None]
) -> tuple[float, float]:
    """Runs ff and mp ``repeat`` times each, interleaved, the order
    alternating from round to round; checks every result; returns the two
    median times in seconds."""
    times: dict[str, list[float]] = {"ff": [], "mp": []}
    for round_ in range(repeat):
        order = [("ff", ff), ("mp", mp)]
        if round_ % 2:
            order.reverse()
        for name, fn in order:
            seconds, result = timed(fn)
            check(result)
            times[name].append(seconds)
    return statistics.median(times["ff"]), statistics.median(times["mp"])


def wait_for_children(seconds: float) -> tuple[list[int], float]:
    """Waits up to ``seconds`` for this process's children to be gone;
    returns those left and the time waited."""
    start = time.perf_counter()
    while True:
        left = children()
        waited = time.perf_counter() - start
        if not left or waited > seconds:
            return left, waited
        time.sleep(0.005)


def children() -> list[int]:
    """Pids of this process's children still there (zombies included)."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == me:
            found.append(int(entry.name))
    return found


# -- the parts ----------------------------------------------------------------


def part_round_trip(ff: Any, mp: Any, repeat: int, workers: int) -> None:
    n = ROUND_TRIP_CALLS
    say(f"1. Round trip of one small task: apply(noop), {n:,} calls one after the other")

    def calls(pool: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                pool.apply(noop)

        return run

    ff_s, mp_s = side_by_side(repeat, calls(ff), calls(mp), lambda _: None)
    say(
        f"   forkfarm {duration(ff_s / n)}, multiprocessing {duration(mp_s / n)} per call: "
        f"{verdict(ff_s, mp_s)} ({workers} workers, {n:,} calls, median of {repeat} runs)"
    )


def part_small_map(ff: Any, mp: Any, repeat: int, workers: int) -> None:
    n = MAP_ITEMS
    say(f"2. Many small tasks: map(square, range({n:,})), each library's default chunksize")
    expected = [x * x for x in range(n)]

    def check(result: list[int]) -> None:
        if result != expected:
            raise RuntimeError("map(square) returned a wrong result")

    ff_s, mp_s = side_by_side(
        repeat, lambda: ff.map(square, range(n)), lambda: mp.map(square, range(n)), check
    )
    say(
        f"   forkfarm {duration(ff_s)}, multiprocessing {duration(mp_s)} for the map: "
        f"{verdict(ff_s, mp_s)} ({workers} workers, {n:,} items, median of {repeat} runs)"
    )


def part_array(ff: Any, mp: Any, repeat: int, workers: int) -> None:
    k = ARRAY_TASKS
    a = np.random.default_rng(0).random(ARRAY_MIB * 2**20 // 8)  # float64
    say(
        f"3. A {ARRAY_MIB} MiB NumPy array sent to the workers: map(array_sum, [a] * {k}), "
        f"{k} tasks that each sum the whole array"
    )
    expected = array_sum(a)

    def check(result: list[float]) -> None:
        if result != [expected] * k:
            raise RuntimeError("map(array_sum) returned a wrong result")

    ff_s, mp_s = side_by_side(
        repeat, lambda: ff.map(array_sum, [a] * k), lambda: mp.map(array_sum, [a] * k), check
    )
    say(
        f"   forkfarm {duration(ff_s)}, multiprocessing {duration(mp_s)} for the map: "
        f"{verdict(ff_s, mp_s)} ({workers} workers, {k} tasks, median of {repeat} runs)"
    )
    say(
        f"   (multiprocessing pickles the array into a pipe for each task, {k * ARRAY_MIB} MiB in all;"
    )
    say("    forkfarm copies it once per map into shared memory that the workers map)")


def part_crash(ff: Any, mp: multiprocessing.pool.Pool) -> None:
    say("4. A worker killed in the middle of its task: a task, die(), that SIGKILLs its own worker")

    start = time.perf_counter()
    try:
        ff.apply(die)
    except forkfarm.WorkerLostError as exc:
        lost = time.perf_counter() - start
        how = signal.Signals(exc.signal).name if exc.signal else f"exit code {exc.exitcode}"
        say(f"   forkfarm: apply(die) raised WorkerLostError ({how}) after {duration(lost)}: {exc}")
    else:
        say("   forkfarm: die() returned a result (the worker was not killed?)")
    n = AFTER_CRASH_ITEMS
    seconds, result = timed(lambda: ff.map(square, range(n)))
    ok = result == [x * x for x in range(n)]
    say(
        f"   the same forkfarm pool then ran map(square, range({n:,})): {len(result):,} results, "
        f"{'all correct' if ok else 'WRONG'}, in {duration(seconds)}"
    )
    if not ok:
        raise RuntimeError("map(square) after the crash returned a wrong result")

    start = time.perf_counter()
    try:
        mp.apply_async(die).get(timeout=CRASH_TIMEOUT)
    except multiprocessing.TimeoutError:
        waited = time.perf_counter() - start
        say(
            f"   multiprocessing: no result and no error: apply_async(die).get(timeout={CRASH_TIMEOUT:g}) "
            f"raised TimeoutError after {waited:.1f} s"
        )
        say("   (without a timeout, get() would wait forever); the demo terminates that pool")
    except Exception as exc:  # not what multiprocessing has done so far: say so
        waited = time.perf_counter() - start
        say(f"   multiprocessing: {type(exc).__name__} after {waited:.1f} s: {exc}")
    else:
        say("   multiprocessing: die() returned a result (the worker was not killed?)")
    mp.terminate()
    mp.join()


def part_progress(ff: Any, workers: int) -> None:
    n = PROGRESS_ITEMS
    say(
        f"5. A progress bar: map(nap, [{PROGRESS_SLEEP:g}] * {n}, progress=True), "
        f"each task sleeps {duration(PROGRESS_SLEEP)} (the tqdm bar is on stderr)"
    )
    try:
        import tqdm  # noqa: F401  (progress=True needs it)
    except ImportError:
        say("   skipped: progress=True needs tqdm (pip install tqdm)")
        return
    seconds, result = timed(lambda: ff.map(nap, [PROGRESS_SLEEP] * n, progress=True))
    sys.stderr.flush()
    if len(result) != n:
        raise RuntimeError("map(nap) returned a wrong result")
    ideal = n * PROGRESS_SLEEP / workers
    say(
        f"   forkfarm took {duration(seconds)} for the {n} items with the bar, against "
        f"{duration(ideal)} of sleep per worker ({n} × {duration(PROGRESS_SLEEP)} / {workers} workers)"
    )


def part_stats(ff: Any) -> None:
    stats = ff.stats()
    restarts = sum(w.restarts for w in stats.workers)
    say(
        f"6. The forkfarm pool's stats() after parts 1-5: {count(stats.done, 'task')} done, "
        f"{stats.failed:,} failed, {count(restarts, 'worker restart')} (a map's chunk counts as one task)"
    )
    for line in str(stats).splitlines():
        say(f"   {line}".rstrip())


# -- the demo -----------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="forkfarm.Pool and multiprocessing.Pool side by side.")
    p.add_argument("--repeat", type=int, default=3, help="runs of parts 1-3; medians are shown (default 3)")
    p.add_argument("--workers", type=int, default=2, help="workers of each pool (default 2)")
    ns = p.parse_args(argv)
    if ns.repeat < 1 or ns.workers < 1:
        p.error("--repeat and --workers must be positive")
    return ns


def run(ns: argparse.Namespace, pools: ExitStack) -> None:
    started = time.perf_counter()
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    workers = ns.workers

    # forkfarm's pool first: multiprocessing's starts Python helper threads
    # in this process, which should not be running when forkfarm forks its
    # zygote. forkfarm's own thread, running when multiprocessing forks its
    # workers, is a C thread that holds none of Python's locks.
    ff = forkfarm.Pool(workers, context=method)
    pools.callback(ff.join)
    pools.callback(ff.terminate)
    mp_context = multiprocessing.get_context(method)
    mp = mp_context.Pool(workers, initializer=ignore_sigint)
    pools.callback(mp.join)
    pools.callback(mp.terminate)
    for _ in range(WARMUP_CALLS):
        ff.apply(noop)
        mp.apply(noop)

    say("forkfarm demo: forkfarm.Pool against multiprocessing.Pool, side by side, measured now")
    say(
        f"forkfarm {forkfarm.__version__}, Python {sys.version.split()[0]}, NumPy {np.__version__}, "
        f"{forkfarm.available_cpus()} CPUs usable"
    )
    methods = {ff.start_method, mp_context.get_start_method()}
    if len(methods) == 1:
        how = f"start method {ff.start_method} for both"
    else:
        how = f"start methods {ff.start_method} (forkfarm), {mp_context.get_start_method()} (multiprocessing)"
    say(f"Both pools: {workers} workers, {how}, made once and warmed up with {WARMUP_CALLS} calls.")
    say(
        f"Parts 1-3 run the two in turn, {ns.repeat} times, and show medians; "
        "\"N× faster\" = multiprocessing's time / forkfarm's."
    )
    say()
    part_round_trip(ff, mp, ns.repeat, workers)
    say()
    part_small_map(ff, mp, ns.repeat, workers)
    say()
    part_array(ff, mp, ns.repeat, workers)
    say()
    part_crash(ff, mp)
    say()
    part_progress(ff, workers)
    say()
    part_stats(ff)
    say()

    ff.close()
    ff.join()
    # join() returns once the workers are done; forkfarm's zygote (the
    # process the workers are forked from) exits just after, in the background.
    left, waited = wait_for_children(5.0)
    processes = count(len(left), "child process", "child processes")
    say(
        f"Both pools closed or terminated, and joined: {processes} left"
        + (f" ({', '.join(map(str, left))})" if left else "")
        + f" {waited * 1e3:.0f} ms after join(). The demo took {time.perf_counter() - started:.1f} s"
        + " after its imports."
    )
    say(
        "Compute-bound work, where a task's microseconds of overhead hardly count: "
        "examples/monte_carlo.py."
    )


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # µ and × on a terminal that lacks them
    try:
        with ExitStack() as pools:  # terminates and joins every pool, whatever happens
            run(ns, pools)
    except KeyboardInterrupt:
        print("\ninterrupted: every pool was terminated", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
