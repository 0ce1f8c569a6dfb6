"""What a streaming worker costs its parent, and what a big result costs in
memory: the figures of the trust boundary (issue 15).

1. **Streaming.** While a worker of pool A sends a result of hundreds of
   MiB in fragments as fast as the parent takes them, this times
   ``A.stats()`` and ``B.apply()`` on a second pool, over and over: how
   long one worker's stream can keep the parent's lock, and the loop thread
   that serves every pool, from others. Target: under 50 ms.
2. **Peak memory.** A child interpreter receives one 512 MiB result (a
   bytes object, which travels in fragments through the ring, and a NumPy
   array, which travels out of band through the worker's arena) and reports
   its peak resident memory above where it started, as a multiple of the
   result's size. Target: at most 1.2.

Each figure is measured in a fresh child interpreter, in rounds that
alternate between this build and, with ``--other DIR``, another build
installed into DIR (``pip install --target DIR``), so both see the same
machine at the same time; medians.

    python benchmarks/trust.py [--rounds 3] [--other /tmp/base-site]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

STREAM = r"""
import json, threading, time
import forkfarm

SIZE = {size}

def big(n):
    return b"x" * n

def square(x):
    return x * x

if __name__ == "__main__":
    a, b = forkfarm.Pool(1), forkfarm.Pool(1)
    a.apply(square, (1,)), b.apply(square, (1,))
    stats, applies = [], []
    result = a.apply_async(big, (SIZE,))
    # The stream starts once the worker has built the bytes: time until it
    # ends.
    while not result.ready():
        began = time.perf_counter()
        a.stats()
        stats.append(time.perf_counter() - began)
        began = time.perf_counter()
        b.apply(square, (3,))
        applies.append(time.perf_counter() - began)
    assert len(result.get()) == SIZE
    a.terminate(); b.terminate(); a.join(); b.join()
    stats.sort(); applies.sort()
    print(json.dumps({{
        "samples": len(stats),
        "stats_max_ms": stats[-1] * 1e3,
        "stats_p99_ms": stats[int(len(stats) * 0.99)] * 1e3,
        "apply_max_ms": applies[-1] * 1e3,
        "apply_p99_ms": applies[int(len(applies) * 0.99)] * 1e3,
    }}))
"""

PEAK = r"""
import json, resource
import forkfarm

SIZE = 512 << 20

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

def as_bytes(n):
    return b"x" * n

def as_array(n):
    import numpy as np
    return np.ones(n // 8)

if __name__ == "__main__":
    kind = {kind!r}
    with forkfarm.Pool(1) as pool:
        pool.apply(as_bytes, (10,))
        if kind == "array":
            import numpy as np
            pool.apply(as_array, (1 << 20,))
        before = peak_kib()
        value = pool.apply(as_bytes if kind == "bytes" else as_array, (SIZE,))
        # Touch all of it, as a user would.
        total = len(value) if kind == "bytes" else float(value.sum())
        after = peak_kib()
    print(json.dumps({{"peak_over_result": (after - before) * 1024 / SIZE, "check": total}}))
"""


def run(code: str, site: str | None) -> dict[str, float]:
    env_path = [site] if site else []
    command = [sys.executable, "-c", f"import sys; sys.path[:0] = {env_path!r}\n" + code]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other", help="another build, installed with pip --target")
    parser.add_argument("--stream-mib", type=int, default=512)
    args = parser.parse_args()
    builds = [("this build", None)] + ([("other build", args.other)] if args.other else [])
    cases = {
        "stream": STREAM.format(size=args.stream_mib << 20),
        "peak bytes": PEAK.format(kind="bytes"),
        "peak array": PEAK.format(kind="array"),
    }
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for case, code in cases.items():
            for name, site in builds:
                results.setdefault((case, name), []).append(run(code, site))
    for (case, name), samples in results.items():
        keys = [k for k in samples[0] if k not in ("check", "samples")]
        figures = ", ".join(f"{k} {statistics.median(s[k] for s in samples):.2f}" for k in keys)
        print(f"{case:11s} {name:11s} {figures}")


if __name__ == "__main__":
    main()
