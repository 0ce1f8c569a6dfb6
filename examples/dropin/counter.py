"""A Pool whose tasks add to a shared counter under a Lock: a
multiprocessing program that runs unchanged on forkfarm. Replace the import
below with ``import forkfarm as multiprocessing`` and run it again: same
output.

The counter is a shared ``Value`` and the lock a ``Lock``, handed to the
pool's workers through ``initializer``/``initargs``, as multiprocessing
requires. Each task counts the primes in a block of numbers and adds them
to the counter under the lock; the map's results and the counter must agree.
"""

import multiprocessing
from typing import Any

counter: Any = None
lock: Any = None


def init(shared_counter: Any, shared_lock: Any) -> None:
    global counter, lock
    counter, lock = shared_counter, shared_lock


def count_primes(block: tuple[int, int]) -> int:
    start, stop = block
    found = 0
    for n in range(max(start, 2), stop):
        if all(n % d for d in range(2, int(n**0.5) + 1)):
            found += 1
    with lock:
        counter.value += found
    return found


def main() -> None:
    shared_counter = multiprocessing.Value("i", 0, lock=False)
    shared_lock = multiprocessing.Lock()
    blocks = [(i, i + 2000) for i in range(0, 100_000, 2000)]
    with multiprocessing.Pool(2, initializer=init, initargs=(shared_counter, shared_lock)) as pool:
        per_block = pool.map(count_primes, blocks)
    print(f"blocks: {len(per_block)}")
    print(f"primes below 100000: {sum(per_block)}")
    print(f"counter: {shared_counter.value}")
    print(f"agree: {sum(per_block) == shared_counter.value}")


if __name__ == "__main__":
    main()
