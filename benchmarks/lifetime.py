"""What 1,000 pools and 1,000 shared arrays leave behind in the parent
(shared/FAULTS.md row 24, issue 5's figure).

Creates and drops ``--cycles`` pools (each runs one task that carries a
shared array and an out-of-band buffer, so the arena and the lending
sockets are exercised), then as many shared arrays of 1 MiB, and prints the
parent's open descriptors, /dev/shm entries and resident memory every tenth
of the way. Flat columns are the result; no assertion (the tests are
tests/python/test_shared.py, TestLifetime).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import forkfarm  # noqa: E402


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def shm_entries() -> int:
    try:
        return len(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return 0


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def row(label: str, i: int) -> dict[str, float]:
    gc.collect()
    sample = {"cycle": i, "fds": fds(), "dev_shm": shm_entries(), "rss_mib": round(rss_mib(), 1)}
    print(f"{label:7s} {i:6d}  fds {sample['fds']:4d}  /dev/shm {sample['dev_shm']:3d}  "
          f"rss {sample['rss_mib']:7.1f} MiB", flush=True)
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1000)
    args = parser.parse_args()
    step = max(1, args.cycles // 10)
    big = np.ones((256 << 10) // 8)  # 256 KiB: out of band, through the arena
    shared = forkfarm.zeros(args.cycles)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(args.cycles + 1):
            if i % step == 0:
                row("pools", i)
            if i == args.cycles:
                break
            with forkfarm.Pool(2) as pool:
                assert pool.apply(np.sum, (big,)) == big.size
                shared[i] = i
                assert pool.apply(np.sum, (shared[: i + 1],)) == i * (i + 1) / 2
        for i in range(args.cycles + 1):
            if i % step == 0:
                row("arrays", i)
            if i == args.cycles:
                break
            array = forkfarm.full(1 << 17, float(i))  # 1 MiB, touched
            del array
    print(f"warnings: {len(caught)}" + "".join(f"\n  {w.message}" for w in caught))


if __name__ == "__main__":
    main()
