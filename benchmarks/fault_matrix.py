"""What each pool does when things go wrong, observed side by side: the
rows of shared/FAULTS.md that the peers can be put through, for
multiprocessing.Pool, concurrent.futures.ProcessPoolExecutor and forkfarm.

Each (library, scenario) runs in a child interpreter with a deadline; a
child that does not finish in time is reported as a hang and SIGKILLed with
its process group. The table it prints is docs/failures.md's comparison.
No assertion: the tests are tests/python/test_faults.py.

    python benchmarks/fault_matrix.py            # every scenario, markdown
    python benchmarks/fault_matrix.py --one forkfarm sigkill
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DEADLINE = 8.0  # seconds a scenario may take before it counts as a hang
# ProcessPoolExecutor's shutdown waits for its running and pre-queued calls.
DEADLINES = {"terminate_backlog": 30.0}


# -- tasks (module level, so every library can pickle them) -----------------

def square(x: int) -> int:
    return x * x


def die_by_sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault() -> None:
    ctypes.string_at(0)


def exit_42() -> None:
    os._exit(42)


def call_sys_exit() -> None:
    sys.exit(3)


def raise_value_error() -> None:
    raise ValueError("from the task")


def unpicklable_result() -> Any:
    return lambda: None


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def failing_initializer() -> None:
    raise RuntimeError("initializer failed")


def getpid(_: Any = None) -> int:
    return os.getpid()


# -- one library behind one interface ---------------------------------------

class Subject:
    """A pool of one library, with the calls the scenarios need."""

    def __init__(self, library: str, workers: int = 2, **kwargs: Any) -> None:
        self.library = library
        if library == "multiprocessing":
            self.pool: Any = multiprocessing.get_context("fork").Pool(workers, **kwargs)
        elif library == "ProcessPoolExecutor":
            self.pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("fork"), **kwargs
            )
        else:
            import forkfarm

            self.pool = forkfarm.Pool(workers, **kwargs)

    def submit(self, func: Any, *args: Any) -> Any:
        if self.library == "ProcessPoolExecutor":
            return self.pool.submit(func, *args)
        return self.pool.apply_async(func, args)

    def get(self, handle: Any, timeout: float) -> Any:
        if self.library == "ProcessPoolExecutor":
            return handle.result(timeout)
        return handle.get(timeout)

    def usable(self) -> str:
        try:
            return "usable" if self.get(self.submit(square, 3), 3.0) == 9 else "wrong result"
        except BaseException as exc:  # noqa: BLE001
            return f"unusable ({type(exc).__name__})"

    def close(self) -> None:
        if self.library == "ProcessPoolExecutor":
            self.pool.shutdown(wait=False, cancel_futures=True)
        else:
            self.pool.terminate()


def outcome(subject: Subject, func: Any, *args: Any, wait: float = 3.0) -> str:
    """What the caller gets: the result, the exception type, or a hang."""
    try:
        value = subject.get(subject.submit(func, *args), wait)
        return f"returns {value!r}"
    except (multiprocessing.TimeoutError, concurrent.futures.TimeoutError, TimeoutError):
        return f"hangs (no result after {wait:g} s)"
    except BaseException as exc:  # noqa: BLE001
        return type(exc).__name__


# -- the scenarios -------------------------------------------------------------

def crash(library: str, func: Any) -> str:
    subject = Subject(library)
    got = outcome(subject, func)
    left = subject.usable()
    subject.close()
    return f"{got}; pool {left}"


def scenario_sigkill(library: str) -> str:
    return crash(library, die_by_sigkill)


def scenario_segfault(library: str) -> str:
    return crash(library, segfault)


def scenario_exit(library: str) -> str:
    return crash(library, exit_42)


def scenario_sys_exit(library: str) -> str:
    return crash(library, call_sys_exit)


def scenario_raises(library: str) -> str:
    return crash(library, raise_value_error)


def scenario_unpicklable_argument(library: str) -> str:
    subject = Subject(library)
    try:
        got = outcome(subject, square, lambda: None)
    except BaseException as exc:  # noqa: BLE001 - raised at submit
        got = f"{type(exc).__name__} at the call"
    left = subject.usable()
    subject.close()
    return f"{got}; pool {left}"


def scenario_unpicklable_result(library: str) -> str:
    return crash(library, unpicklable_result)


def scenario_initializer(library: str) -> str:
    subject = Subject(library, initializer=failing_initializer)
    got = outcome(subject, square, 2)
    subject.close()
    return got


def scenario_cancel_running(library: str) -> str:
    if library == "multiprocessing":
        return "no cancel()"
    if library == "forkfarm":
        import forkfarm

        executor: Any = forkfarm.Executor(1)
    else:
        executor = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    future = executor.submit(sleep, 30)
    time.sleep(0.5)
    cancelled = future.cancel()
    executor.shutdown(wait=False, cancel_futures=True)
    if cancelled:
        return "cancelled; worker killed and replaced"
    return "cancel() returns False; the call runs on"


def scenario_terminate_backlog(library: str) -> str:
    subject = Subject(library)
    for _ in range(10_000):
        subject.submit(sleep, 5)
    time.sleep(0.2)
    started = time.monotonic()
    if library == "ProcessPoolExecutor":
        # It has no terminate(): the closest waits for the running calls.
        subject.pool.shutdown(wait=True, cancel_futures=True)
        return f"no terminate(); shutdown(cancel_futures=True) waits for the running calls: {time.monotonic() - started:.1f} s"
    subject.pool.terminate()
    subject.pool.join()
    return f"{time.monotonic() - started:.2f} s"


def scenario_lock_holder_killed(library: str) -> str:
    """A process that holds the library's Lock is SIGKILLed; another
    acquires it with a timeout."""
    if library == "ProcessPoolExecutor":
        return "no locks of its own (multiprocessing's)"
    if library == "forkfarm":
        import forkfarm

        lock: Any = forkfarm.Lock()
    else:
        lock = multiprocessing.get_context("fork").Lock()
    pid = os.fork()
    if pid == 0:
        lock.acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    started = time.monotonic()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        taken = lock.acquire(timeout=3)
    took = time.monotonic() - started
    if not taken:
        return "acquire(timeout=3) fails: held forever by the dead process"
    named = f", with {type(caught[0].message).__name__}" if caught else ""
    return f"taken over in {took * 1000:.0f} ms{named}"


def scenario_parent_killed(library: str) -> str:
    """The child makes a pool, prints its workers' pids and SIGKILLs itself;
    the runner looks for the workers 2 s later."""
    subject = Subject(library)
    for _ in range(2):
        subject.submit(sleep, 60)
    time.sleep(0.5)
    # Every worker process, from each library's own bookkeeping.
    if library == "multiprocessing":
        pids = [process.pid for process in subject.pool._pool]
    elif library == "ProcessPoolExecutor":
        pids = list(subject.pool._processes)
    else:
        pids = [pid for pid in subject.pool._core.worker_pids() if pid > 0]
    print("PIDS", " ".join(map(str, sorted(pids))), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    return ""


SCENARIOS = {
    "sigkill": ("1", "worker SIGKILLed mid-task", scenario_sigkill),
    "segfault": ("2", "segfault in the task", scenario_segfault),
    "exit": ("3", "`os._exit(42)` in the task", scenario_exit),
    "sys_exit": ("4", "`sys.exit()` in the task", scenario_sys_exit),
    "raises": ("5", "the task raises", scenario_raises),
    "unpicklable_argument": ("6", "unpicklable argument", scenario_unpicklable_argument),
    "unpicklable_result": ("8", "unpicklable result", scenario_unpicklable_result),
    "initializer": ("11", "initializer raises", scenario_initializer),
    "cancel_running": ("14", "`cancel()` of a running call", scenario_cancel_running),
    "terminate_backlog": ("15", "`terminate()` with 10,000 queued 5 s tasks", scenario_terminate_backlog),
    "lock_holder_killed": ("17", "a process SIGKILLed holding a Lock", scenario_lock_holder_killed),
    "parent_killed": ("18", "parent SIGKILLed", scenario_parent_killed),
}
LIBRARIES = ("multiprocessing", "ProcessPoolExecutor", "forkfarm")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def run_one(library: str, name: str) -> str:
    """Runs a scenario in a child interpreter in its own process group. Its
    output goes to a file: workers that outlive the child would hold a pipe
    open."""
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(
            [sys.executable, __file__, "--one", library, name],
            stdout=out,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = DEADLINES.get(name, DEADLINE)
            child.wait(timeout=deadline)
            result = None
        except subprocess.TimeoutExpired:
            result = f"hangs (killed after {deadline:g} s)"
        out.seek(0)
        text = out.read()
    if name == "parent_killed" and result is None:
        pids = [int(p) for line in text.splitlines() if line.startswith("PIDS") for p in line.split()[1:]]
        time.sleep(2.0)
        left = [pid for pid in pids if _alive(pid)]
        result = f"{len(left)} of {len(pids)} workers still alive after 2 s" if left else "all workers gone within 2 s"
    # Whatever the child left behind (its process group) goes.
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if result is not None:
        return result
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    return lines[-1][len("RESULT "):] if lines else f"child exited with {child.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", nargs=2, metavar=("LIBRARY", "SCENARIO"))
    args = parser.parse_args()
    if args.one:
        library, name = args.one
        print("RESULT", SCENARIOS[name][2](library), flush=True)
        os._exit(0)  # do not wait for a pool that may hang at exit
    print("| row | what happens | " + " | ".join(LIBRARIES) + " |")
    print("|---|---|" + "---|" * len(LIBRARIES))
    for name, (row, label, _) in SCENARIOS.items():
        cells = [run_one(library, name) for library in LIBRARIES]
        print(f"| {row} | {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
