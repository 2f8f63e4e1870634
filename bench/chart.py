"""Charts of a comparison: throughput and p99 latency vs clients, one line per system.

Owns: turning `stats.summarize` rows into one PNG (matplotlib, Agg backend, no display); a
point whose generator was above GENERATOR_BOUND_CORES in any run is circled in red on both
panels ("generator-bound": it measures the generator too). Must not compute statistics itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.stats import GENERATOR_BOUND_CORES


def _size_label(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def plot_compare(summary: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["workload"], int(r["value_size"])) for r in summary})
    if not panels:
        raise ValueError("nothing to plot")
    fig, axes = plt.subplots(
        len(panels), 2, figsize=(11, 3.6 * len(panels)), squeeze=False, constrained_layout=True
    )
    marked = False
    for row, (workload, size) in enumerate(panels):
        rows = [r for r in summary if r["workload"] == workload and r["value_size"] == size]
        ax_t, ax_l = axes[row][0], axes[row][1]
        for series in sorted({r["series"] for r in rows}):
            pts = sorted((r for r in rows if r["series"] == series), key=lambda r: r["clients"])
            xs = [r["clients"] for r in pts]
            med = [r["ops_per_s"]["median"] for r in pts]
            lo = [m - r["ops_per_s"]["min"] for m, r in zip(med, pts, strict=True)]
            hi = [r["ops_per_s"]["max"] - m for m, r in zip(med, pts, strict=True)]
            ax_t.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=series)
            p99 = [
                float("nan") if r["latency_ms"]["p99"] is None else r["latency_ms"]["p99"]
                for r in pts
            ]
            ax_l.plot(xs, p99, marker="o", label=series)
            bound = [i for i, r in enumerate(pts) if r.get("generator_bound")]
            if bound:
                marked = True
                for ax, ys in ((ax_t, med), (ax_l, p99)):
                    ax.scatter(
                        [xs[i] for i in bound],
                        [ys[i] for i in bound],
                        s=180,
                        facecolors="none",
                        edgecolors="red",
                        linewidths=1.5,
                        zorder=5,
                    )
        name = f"{workload}, {_size_label(size)} values"
        ax_t.set_title(f"throughput: {name}")
        ax_t.set_xlabel("concurrent clients")
        ax_t.set_ylabel("ops/s (median of runs, bars min-max)")
        ax_l.set_title(f"p99 latency: {name}")
        ax_l.set_xlabel("concurrent clients")
        ax_l.set_ylabel("p99 ms (median of runs)")
        ticks = sorted({int(r["clients"]) for r in rows})
        for ax in (ax_t, ax_l):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        ax_l.set_yscale("log")
    if marked:
        note = f"red circle: generator-bound (a generator process above {GENERATOR_BOUND_CORES} of a core)"
        title = f"{title}\n{note}" if title else note
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
