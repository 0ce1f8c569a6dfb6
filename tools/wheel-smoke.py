"""A smoke test of an installed forkfarm, run by tools/test-wheels.sh from a
temporary directory outside the checkout:

    python wheel-smoke.py --checkout CHECKOUT [--no-numpy]

It checks that `forkfarm` is the installed package, not CHECKOUT's, then
runs a Pool map, an Executor future, a shared array filled by tasks, a
Queue across a forkfarm.Process, and a worker killed by SIGKILL in a task,
which fails that task with WorkerLostError while the pool goes on. Every
wait has a timeout, and every part runs under an alarm (SIGALRM, not a
watchdog thread: a parent with threads would make forkfarm start its fork
server instead of forking); at the end no child of this process may be
left, and any that is gets SIGKILL. Exits 0 when everything passed."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

PART_SECONDS = 60  # the alarm of one part
WAIT_SECONDS = 30  # each wait inside a part


class PartTimeout(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001
    raise PartTimeout(f"a part ran over {PART_SECONDS} s")


# Tasks: module-level functions, sent by reference to forked workers.
def square(x):
    return x * x


def fill_row(array, row):
    array[row, :] = row + 1
    return int(array[row].sum())


def produce(queue, count):
    for i in range(count):
        queue.put(("item", i))
    queue.put(None)


def die_by_sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def descendants(pid=None):
    """The pids of every live descendant of pid (default: this process),
    from /proc."""
    pid = os.getpid() if pid is None else pid
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":  # a zombie is gone but for its reaping
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def part(name, function):
    started = time.monotonic()
    signal.alarm(PART_SECONDS)
    try:
        function()
    finally:
        signal.alarm(0)
    print(f"wheel-smoke: {name}: ok ({time.monotonic() - started:.2f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", required=True, type=Path)
    parser.add_argument("--no-numpy", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _on_alarm)

    import forkfarm

    where = Path(forkfarm.__file__).resolve()
    checkout = args.checkout.resolve()
    assert not where.is_relative_to(checkout), f"forkfarm comes from the checkout: {where}"
    print(f"wheel-smoke: forkfarm {forkfarm.__version__} from {where.parent}", flush=True)

    def pool_map():
        with forkfarm.Pool(2) as pool:
            result = pool.map_async(square, range(1000), chunksize=10).get(timeout=WAIT_SECONDS)
            assert result == [x * x for x in range(1000)], result[:10]
            pool.close()
            pool.join()

    def executor_future():
        with forkfarm.Executor(max_workers=2) as executor:
            future = executor.submit(pow, 3, 7)
            assert future.result(timeout=WAIT_SECONDS) == 2187
            assert list(executor.map(square, range(5), timeout=WAIT_SECONDS)) == [0, 1, 4, 9, 16]

    def shared_array():
        import numpy as np

        array = forkfarm.zeros((4, 1000), dtype=np.int64)
        assert isinstance(array, forkfarm.SharedArray), type(array)
        with forkfarm.Pool(2) as pool:
            sums = pool.starmap_async(fill_row, [(array, row) for row in range(4)]).get(
                timeout=WAIT_SECONDS
            )
            pool.close()
            pool.join()
        # The workers wrote into the parent's array, in place.
        assert sums == [1000 * (row + 1) for row in range(4)], sums
        expected = np.repeat(np.arange(1, 5, dtype=np.int64)[:, None], 1000, axis=1)
        assert np.array_equal(array, expected)

    def queue_across_process():
        queue = forkfarm.Queue()
        process = forkfarm.Process(target=produce, args=(queue, 100))
        process.start()
        try:
            items = []
            while (item := queue.get(timeout=WAIT_SECONDS)) is not None:
                items.append(item)
            assert items == [("item", i) for i in range(100)], items[:5]
            process.join(WAIT_SECONDS)
            assert process.exitcode == 0, process.exitcode
        finally:
            if process.is_alive():
                process.kill()
                process.join(5)

    def worker_crash():
        with forkfarm.Pool(2) as pool:
            try:
                pool.apply_async(die_by_sigkill).get(timeout=WAIT_SECONDS)
            except forkfarm.WorkerLostError as error:
                assert error.signal == signal.SIGKILL, (error, error.signal)
            else:
                raise AssertionError("a worker killed by SIGKILL did not fail its task")
            # The dead worker was replaced: the pool still runs tasks.
            assert pool.apply_async(square, (12,)).get(timeout=WAIT_SECONDS) == 144
            pool.close()
            pool.join()

    failed = False
    parts = [("Pool map", pool_map), ("Executor future", executor_future)]
    if not args.no_numpy:
        parts.append(("shared array", shared_array))
    parts += [("Queue across a Process", queue_across_process), ("worker crash", worker_crash)]
    for name, function in parts:
        try:
            part(name, function)
        except BaseException as error:  # noqa: BLE001
            failed = True
            print(f"wheel-smoke: {name}: FAILED: {error!r}", file=sys.stderr, flush=True)
            import traceback

            traceback.print_exc()

    # Nothing may be left: the zygotes exit once their pools are joined.
    deadline = time.monotonic() + 10
    while (left := descendants()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        failed = True
        print(f"wheel-smoke: FAILED: processes left behind: {left}", file=sys.stderr, flush=True)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    print("wheel-smoke: FAILED" if failed else "wheel-smoke: passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
