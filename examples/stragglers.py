"""Spotting a straggler with pool.stats().

A map of 40 items where one item takes far longer than the others: while
the map runs, the main process looks at the pool's stats every 0.2 s and
names any worker that has been on one task for more than a second, with
its pid, so that you can inspect it (py-spy dump --pid ..., say).

    .venv/bin/python examples/stragglers.py
"""

import time

import forkfarm


def work(i: int) -> int:
    time.sleep(3.0 if i == 17 else 0.05)  # item 17 is the straggler
    return i


def main() -> None:
    with forkfarm.Pool(2) as pool:
        result = pool.map_async(work, range(40), chunksize=1)
        reported = set()
        while not result.ready():
            stats = pool.stats()
            for worker in stats.workers:
                if worker.current_task is not None and worker.current_seconds > 1.0:
                    if worker.current_task not in reported:
                        reported.add(worker.current_task)
                        print(
                            f"straggler: worker {worker.pid} has run task {worker.current_task} "
                            f"for {worker.current_seconds:.1f} s "
                            f"({worker.tasks} tasks done, {worker.busy_seconds:.1f} s busy)"
                        )
            time.sleep(0.2)
        stats = pool.stats()
        print(f"done: {stats.done} tasks, {stats.failed} failed; results {result.get()[:5]}...")
        for worker in stats.workers:
            print(
                f"  worker {worker.pid}: {worker.tasks} tasks, busy {worker.busy_seconds:.2f} s, "
                f"idle {worker.idle_seconds:.2f} s, {worker.bytes_sent} B out, "
                f"{worker.bytes_received} B back, {worker.restarts} restarts"
            )


if __name__ == "__main__":
    main()
