"""Draws benchmarks/results/latest.json as docs/benchmarks.png, and prints
it as a Markdown table with ``--markdown``.

One panel per workload. W1-W4: how many times faster forkfarm.Pool is than
each peer (peer time / forkfarm time, log scale; right of the grey line
means forkfarm is faster; the dashed line is the target). W5: each
implementation's efficiency against the ideal 2-core speedup. W6: each
implementation's makespan over the ideal one.

Usage::

    python benchmarks/plot.py [--input FILE] [--output PNG] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_INPUT = HERE / "results" / "latest.json"
DEFAULT_OUTPUT = HERE.parent / "docs" / "benchmarks.png"
BASELINE = "forkfarm.Pool"

#: The target of each ratio panel (peer time / forkfarm time).
RATIO_TARGETS = {"W1": 10.0, "W2": 10.0, "W3": 2.0, "W4": 2.0}
TARGET_PEER = "multiprocessing.Pool"


def _ok(entry: dict[str, Any]) -> bool:
    return entry.get("status") == "ok" and entry.get("median") is not None


def _ratio_panel(ax: Any, key: str, w: dict[str, Any]) -> None:
    names, values = [], []
    for name, entry in w["implementations"].items():
        if name == BASELINE or not _ok(entry) or entry.get("ratio_vs_forkfarm") is None:
            continue
        names.append(name)
        values.append(entry["ratio_vs_forkfarm"])
    colors = ["#4c72b0" if n.startswith("forkfarm") else "#dd8452" for n in names]
    y = range(len(names))
    ax.barh(list(y), values, color=colors)
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", linewidth=1)
    target = RATIO_TARGETS.get(key)
    if target:
        ax.axvline(target, color="#55a868", linestyle="--", linewidth=1.2)
    top = max(values + [target or 1.0]) * 2.5
    low = min(values + [1.0]) / 2
    ax.set_xlim(low, top)
    for i, v in enumerate(values):
        ax.text(v * 1.08, i, f"{v:.1f}x", va="center", fontsize=8)
    ax.set_xlabel("times faster than the peer (peer time / forkfarm time)", fontsize=8)


def _ideal_panel(ax: Any, key: str, w: dict[str, Any]) -> None:
    names, values = [], []
    for name, entry in w["implementations"].items():
        if not _ok(entry) or entry.get("vs_ideal") is None:
            continue
        names.append(name)
        values.append(entry["vs_ideal"])
    colors = ["#4c72b0" if n.startswith("forkfarm") else "#dd8452" for n in names]
    y = range(len(names))
    ax.barh(list(y), values, color=colors)
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    if key == "W5":
        ax.axvline(0.95, color="#55a868", linestyle="--", linewidth=1.2)
        ax.axvline(1.0, color="grey", linewidth=1)
        ax.set_xlim(min(values + [0.8]) - 0.05, 1.1)
        ax.set_xlabel("efficiency: ideal 2-core time / time (higher is better)", fontsize=8)
    else:
        ax.axvline(1.05, color="#55a868", linestyle="--", linewidth=1.2)
        ax.axvline(1.0, color="grey", linewidth=1)
        ax.set_xlim(0.95, max(values + [1.1]) * 1.05)
        ax.set_xlabel("makespan / ideal makespan (lower is better)", fontsize=8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)


def draw(input_path: Path = DEFAULT_INPUT, output_path: Path = DEFAULT_OUTPUT) -> Path:
    """Renders the PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(Path(input_path).read_text(encoding="utf-8"))
    keys = list(doc["workloads"])
    cols = 2
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.1 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        w = doc["workloads"][key]
        if key in ("W5", "W6"):
            _ideal_panel(ax, key, w)
        else:
            _ratio_panel(ax, key, w)
        status = w.get("target_status") or ""
        mark = "target met" if status.startswith("met") else "target NOT met" if status else ""
        ax.set_title(f"{key}: {w['title']}  [{mark}]", fontsize=10)
    machine = doc.get("machine", {})
    fig.suptitle(
        f"forkfarm vs its peers: {doc.get('workers', 2)} workers, "
        f"{machine.get('cpu_count')} CPUs, Python {machine.get('python')}, "
        f"medians of interleaved rounds ({doc.get('timestamp', '')[:10]}); "
        "dashed green: target",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output_path, dpi=110)
    plt.close(fig)
    return output_path


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "tasks/s":
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:,.1f}"


def markdown(input_path: Path = DEFAULT_INPUT) -> str:
    """The medians as a Markdown table per workload."""
    doc = json.loads(Path(input_path).read_text(encoding="utf-8"))
    out: list[str] = []
    for key, w in doc["workloads"].items():
        out.append(f"**{key}: {w['title']}** ({w['unit']}; target: {w.get('target')})")
        out.append("")
        extra = " | vs ideal" if w.get("ideal_seconds") else ""
        out.append(f"| implementation | median | peer / forkfarm{extra} |")
        out.append("|---|---:|---:|" + ("---:|" if extra else ""))
        for name, entry in w["implementations"].items():
            if entry.get("status") != "ok":
                out.append(f"| {name} | {entry.get('error') or 'n/a'} | |" + (" |" if extra else ""))
                continue
            r = entry.get("ratio_vs_forkfarm")
            rel = "1.00 (base)" if name == BASELINE else ("n/a" if r is None else f"{r:.2f}x")
            row = f"| {name} | {_fmt(entry['median'], w['unit'])} | {rel} |"
            if extra:
                v = entry.get("vs_ideal")
                row += f" {'n/a' if v is None else f'{v:.3f}'} |"
            out.append(row)
        if w.get("serial_median") is not None:
            out.append(f"| serial (this process) | {_fmt(w['serial_median'], 's')} | |" + (" |" if extra else ""))
        out.append("")
        if w.get("target_status"):
            out.append(f"Target {w['target_status']}.")
            out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--markdown", action="store_true", help="print the tables instead")
    ns = p.parse_args()
    if ns.markdown:
        print(markdown(ns.input))
    else:
        print(draw(ns.input, ns.output))


if __name__ == "__main__":
    main()
