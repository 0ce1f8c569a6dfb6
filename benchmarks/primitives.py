"""Issue 6's workloads, side by side: queues and locks of multiprocessing,
faster-fifo and forkfarm, in the same run, interleaved, medians.

- W11: a Queue between 1 producer and 1 consumer process, 200,000 small
  messages (messages/s).
- W12: the same with 2 producers and 2 consumers.
- W13: a Pipe ping-pong between 2 processes: the round trip (µs).
- W14: a Lock: an uncontended acquire+release (ns), and a contended
  hand-off: 2 processes each take it 100,000 times to add to a shared
  counter (ns per acquire+release).

Processes are forked (each library's objects travel by inheritance); they
wait on a start signal, so process start-up is not timed. Results go to
benchmarks/results/primitives.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import timeit
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import forkfarm  # noqa: E402

FORK = multiprocessing.get_context("fork")


def _faster_fifo() -> Any:
    try:
        import faster_fifo

        return faster_fifo
    except ImportError:
        return None


def make_queue(library: str) -> Any:
    if library == "multiprocessing":
        return FORK.Queue()
    if library == "faster-fifo":
        return _faster_fifo().Queue(max_size_bytes=64 << 20)
    return forkfarm.Queue()


def _producer(q: Any, ready: Any, go: Any, count: int) -> None:
    ready.release()
    go.wait()
    put = q.put
    for i in range(count):
        put(i)


def _consumer(q: Any, ready: Any, go: Any, count: int, done: Any) -> None:
    ready.release()
    go.wait()
    get = q.get
    for _ in range(count):
        get(timeout=60)
    done.release()


def queue_rate(library: str, producers: int, consumers: int, messages: int) -> float:
    """Messages per second through the library's queue."""
    q = make_queue(library)
    ready, go, done = FORK.Semaphore(0), FORK.Event(), FORK.Semaphore(0)
    per_producer = messages // producers
    per_consumer = per_producer * producers // consumers
    processes = [FORK.Process(target=_producer, args=(q, ready, go, per_producer)) for _ in range(producers)]
    processes += [
        FORK.Process(target=_consumer, args=(q, ready, go, per_consumer, done)) for _ in range(consumers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    for _ in range(consumers):
        done.acquire()
    took = time.perf_counter() - started
    for process in processes:
        process.join()
    return per_consumer * consumers / took


def _echo(conn: Any, other_end: Any) -> None:
    other_end.close()
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return


def pipe_round_trip_us(library: str, trips: int = 20_000) -> float:
    """A small object sent and echoed back, per round trip."""
    a, b = FORK.Pipe() if library == "multiprocessing" else forkfarm.Pipe()
    child = FORK.Process(target=_echo, args=(b, a))
    child.start()
    b.close()
    for i in range(200):  # warm
        a.send(i)
        a.recv()
    started = time.perf_counter()
    for i in range(trips):
        a.send(i)
        a.recv()
    took = time.perf_counter() - started
    a.close()
    child.join()
    return took / trips * 1e6


def make_lock(library: str) -> Any:
    return FORK.Lock() if library == "multiprocessing" else forkfarm.Lock()


def lock_uncontended_ns(library: str) -> float:
    lock = make_lock(library)
    acquire, release = lock.acquire, lock.release
    n = 500_000
    took = min(timeit.repeat("a(); r()", globals={"a": acquire, "r": release}, number=n, repeat=3))
    return took / n * 1e9


def _hand_off(lock: Any, counter: Any, ready: Any, go: Any, rounds: int) -> None:
    ready.release()
    go.wait()
    for _ in range(rounds):
        with lock:
            counter.value += 1


def lock_contended_ns(library: str, rounds: int = 100_000) -> float:
    lock = make_lock(library)
    counter = FORK.RawValue("l", 0)
    ready, go = FORK.Semaphore(0), FORK.Event()
    processes = [FORK.Process(target=_hand_off, args=(lock, counter, ready, go, rounds)) for _ in range(2)]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    for process in processes:
        process.join()
    took = time.perf_counter() - started
    assert counter.value == 2 * rounds, counter.value
    return took / (2 * rounds) * 1e9


def interleaved(libraries: list[str], rounds: int, measure: Callable[[str], float]) -> dict[str, float]:
    samples: dict[str, list[float]] = {library: [] for library in libraries}
    for _ in range(rounds):
        for library in libraries:
            samples[library].append(measure(library))
    return {library: statistics.median(values) for library, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    queues = ["multiprocessing", "forkfarm"] + (["faster-fifo"] if _faster_fifo() else [])
    results: dict[str, Any] = {}
    print(f"W11/W12: {args.messages:,} small messages, medians of {args.rounds} interleaved rounds")
    for name, producers, consumers in (("W11 1P1C", 1, 1), ("W12 2P2C", 2, 2)):
        rates = interleaved(queues, args.rounds, lambda lib: queue_rate(lib, producers, consumers, args.messages))
        base = rates["multiprocessing"]
        results[name] = rates
        print(name, "  ".join(f"{lib} {rate / 1e3:,.0f}k msg/s ({rate / base:.1f}x)" for lib, rate in rates.items()))
    trips = interleaved(["multiprocessing", "forkfarm"], args.rounds, pipe_round_trip_us)
    results["W13 pipe round trip"] = trips
    print("W13 pipe round trip", "  ".join(
        f"{lib} {us:.1f} µs ({trips['multiprocessing'] / us:.1f}x)" for lib, us in trips.items()))
    locks = ["multiprocessing", "forkfarm"]
    for name, measure in (("W14 uncontended", lock_uncontended_ns), ("W14 contended", lock_contended_ns)):
        ns = interleaved(locks, args.rounds, measure)
        results[name] = ns
        print(name, "  ".join(f"{lib} {value:,.0f} ns" for lib, value in ns.items()))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "primitives.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
