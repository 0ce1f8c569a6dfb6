"""A producer/consumer pipeline with JoinableQueue: a multiprocessing
program that runs unchanged on forkfarm. Replace the import below with
``import forkfarm as multiprocessing`` and run it again: same output.

Two producers put numbers on a work queue, three consumers take them, work
out how many steps each takes to reach 1 under the Collatz map, put the
result on a result queue and mark the work item done. The main process
waits for the work queue to be drained (``join``), stops the consumers with
sentinels and prints what came back.
"""

import multiprocessing
from typing import Any

STOP = None


def produce(work: Any, start: int, stop: int) -> None:
    for n in range(start, stop):
        work.put(n)


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def consume(work: Any, results: Any) -> None:
    while True:
        n = work.get()
        if n is STOP:
            work.task_done()
            return
        results.put((n, collatz_steps(n)))
        work.task_done()


def main() -> None:
    work: Any = multiprocessing.JoinableQueue()
    results: Any = multiprocessing.Queue()
    producers = [
        multiprocessing.Process(target=produce, args=(work, 1, 5001)),
        multiprocessing.Process(target=produce, args=(work, 5001, 10001)),
    ]
    consumers = [multiprocessing.Process(target=consume, args=(work, results)) for _ in range(3)]
    for process in producers + consumers:
        process.start()
    for process in producers:
        process.join()
    work.join()  # every number taken and marked done
    for _ in consumers:
        work.put(STOP)
    steps = dict(results.get() for _ in range(10000))
    for process in consumers:
        process.join()
    longest = max(steps, key=lambda n: (steps[n], -n))
    print(f"numbers: {len(steps)}")
    print(f"total steps: {sum(steps.values())}")
    print(f"longest: {longest} takes {steps[longest]} steps")
    print(f"exit codes: {[p.exitcode for p in producers + consumers]}")


if __name__ == "__main__":
    main()
