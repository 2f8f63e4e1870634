"""Pure numbers of the benchmark: latency histograms, percentiles, result merging, JSON shape.

Owns: the log-linear latency histogram (mergeable across worker processes), the summary of one
load-generator run and of several runs, and the JSON schema written to bench/results. Must not
do I/O, start processes or import anything outside the standard library, so that
tests/bench/test_bench_stats.py can check it on any machine.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "rkv-bench/1"

# 7 significant bits: a bucket spans at most 1/64 of its value, so a reported percentile is
# within ~1.6% of the true sample (and exact below 128 us).
_SIG_BITS = 7
_EXACT = 1 << _SIG_BITS
_HALF = 1 << (_SIG_BITS - 1)


def bucket_index(value_us: int) -> int:
    """The histogram bucket of a latency in whole microseconds (negative values count as 0)."""
    v = max(0, int(value_us))
    if v < _EXACT:
        return v
    shift = v.bit_length() - _SIG_BITS
    return _EXACT + (shift - 1) * _HALF + ((v >> shift) - _HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest microsecond value that fall into bucket `index`."""
    if index < 0:
        raise ValueError(f"negative bucket index {index}")
    if index < _EXACT:
        return index, index
    rel = index - _EXACT
    shift = rel // _HALF + 1
    top = (rel % _HALF) + _HALF
    low = top << shift
    return low, low + (1 << shift) - 1


@dataclass(slots=True)
class Histogram:
    """Latencies in microseconds; sparse buckets so that merging and JSON stay small."""

    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total_us: int = 0
    min_us: int | None = None
    max_us: int | None = None

    def record(self, value_us: int) -> None:
        v = max(0, int(value_us))
        i = bucket_index(v)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.count += 1
        self.total_us += v
        self.min_us = v if self.min_us is None else min(self.min_us, v)
        self.max_us = v if self.max_us is None else max(self.max_us, v)

    def merge(self, other: Histogram) -> None:
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.count += other.count
        self.total_us += other.total_us
        if other.min_us is not None:
            self.min_us = other.min_us if self.min_us is None else min(self.min_us, other.min_us)
        if other.max_us is not None:
            self.max_us = other.max_us if self.max_us is None else max(self.max_us, other.max_us)

    def percentile_us(self, p: float) -> float:
        """The value at percentile p (0 < p <= 100): nearest rank, bucket midpoint, clamped to
        the exact min and max seen. NaN for an empty histogram."""
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        if self.count == 0:
            return math.nan
        # Rounded first so that float noise (99.9 / 100 * 1000 = 999.0000000000001) does not
        # push the nearest rank one sample up.
        rank = max(1, math.ceil(round(p / 100.0 * self.count, 9)))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                low, high = bucket_bounds(i)
                mid = (low + high) / 2.0
                assert self.min_us is not None and self.max_us is not None
                return float(min(max(mid, self.min_us), self.max_us))
        raise AssertionError("histogram counts do not add up to count")

    def mean_us(self) -> float:
        return self.total_us / self.count if self.count else math.nan

    def summary_ms(self) -> dict[str, float | None]:
        def ms(us: float) -> float | None:
            return None if math.isnan(us) else round(us / 1000.0, 4)

        return {
            "p50": ms(self.percentile_us(50)),
            "p90": ms(self.percentile_us(90)),
            "p99": ms(self.percentile_us(99)),
            "p999": ms(self.percentile_us(99.9)),
            "mean": ms(self.mean_us()),
            "min": None if self.min_us is None else self.min_us / 1000.0,
            "max": None if self.max_us is None else self.max_us / 1000.0,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": "us",
            "sig_bits": _SIG_BITS,
            "count": self.count,
            "total_us": self.total_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
            "buckets": [[i, self.counts[i]] for i in sorted(self.counts)],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        if data.get("sig_bits", _SIG_BITS) != _SIG_BITS or data.get("unit", "us") != "us":
            raise ValueError("histogram written with another bucket layout")
        h = cls(
            counts={int(i): int(c) for i, c in data["buckets"]},
            count=int(data["count"]),
            total_us=int(data["total_us"]),
            min_us=data["min_us"],
            max_us=data["max_us"],
        )
        if sum(h.counts.values()) != h.count:
            raise ValueError("histogram buckets do not add up to its count")
        return h


@dataclass(slots=True)
class WorkerResult:
    """What one load-generator process measured over its measurement window."""

    ops: int
    errors: int
    elapsed_s: float
    cpu_s: float
    hist: Histogram
    error_kinds: dict[str, int] = field(default_factory=dict)
    stalled_at_end: int = 0
    """Requests unanswered when the window closed that had waited over a second: a stalled
    system shows here (such requests count neither as ops nor, unless they fail, as errors)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "stalled_at_end": self.stalled_at_end,
            "errors": self.errors,
            "elapsed_s": self.elapsed_s,
            "cpu_s": self.cpu_s,
            "error_kinds": dict(self.error_kinds),
            "histogram": self.hist.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerResult:
        return cls(
            ops=int(data["ops"]),
            errors=int(data["errors"]),
            elapsed_s=float(data["elapsed_s"]),
            cpu_s=float(data["cpu_s"]),
            hist=Histogram.from_json(data["histogram"]),
            error_kinds={str(k): int(v) for k, v in data.get("error_kinds", {}).items()},
            stalled_at_end=int(data.get("stalled_at_end", 0)),
        )


def merge_workers(results: Sequence[WorkerResult]) -> WorkerResult:
    """Workers run side by side over the same window: ops, errors and CPU add up, the window is
    the longest one, histograms merge."""
    if not results:
        raise ValueError("no worker results to merge")
    hist = Histogram()
    kinds: dict[str, int] = {}
    for r in results:
        hist.merge(r.hist)
        for k, v in r.error_kinds.items():
            kinds[k] = kinds.get(k, 0) + v
    return WorkerResult(
        ops=sum(r.ops for r in results),
        errors=sum(r.errors for r in results),
        elapsed_s=max(r.elapsed_s for r in results),
        cpu_s=sum(r.cpu_s for r in results),
        hist=hist,
        error_kinds=kinds,
        stalled_at_end=sum(r.stalled_at_end for r in results),
    )


GENERATOR_BOUND_CORES = 0.6
"""A generator process busier than this (cores, over the window) marks its point
generator-bound: on a small machine it takes CPU the servers would have used, and at a full
core it is the limit itself (issue 18)."""


def per_op_us(cpu_s: float, ops: int) -> float | None:
    """CPU microseconds per operation; None without operations or without a CPU reading."""
    if ops <= 0 or not math.isfinite(cpu_s):
        return None
    return round(cpu_s / ops * 1e6, 2)


def cores(cpu_s: float, elapsed_s: float) -> float | None:
    """Cores busy on average over a window; None when either figure is missing."""
    if not elapsed_s > 0 or not math.isfinite(cpu_s):
        return None
    return round(cpu_s / elapsed_s, 3)


def generator_bound(
    proc_cores: Iterable[float | None], limit: float = GENERATOR_BOUND_CORES
) -> bool:
    """True when any generator process was busier than `limit` cores."""
    return any(c is not None and c > limit for c in proc_cores)


def load_point(
    *,
    system: str,
    config: str,
    version: str,
    workload: str,
    value_size: int,
    clients: int,
    procs: int,
    duration_s: float,
    run: int,
    merged: WorkerResult,
    server_cpu_s: Mapping[str, float],
    worker_cpu_s: Sequence[float] | None = None,
    generator: str = "",
) -> dict[str, Any]:
    """The JSON record of one measured point (one system, one workload, one client count).

    `worker_cpu_s`: each generator process's CPU seconds over the window (default: the merged
    figure as one process); `generator`: which generator drove the point ("raw", "trio")."""
    elapsed = merged.elapsed_s if merged.elapsed_s > 0 else math.nan
    procs_cpu = [merged.cpu_s] if worker_cpu_s is None else list(worker_cpu_s)
    procs_cores = [cores(c, elapsed) for c in procs_cpu]
    servers_cpu = sum(server_cpu_s.values())
    return {
        "schema": SCHEMA,
        "kind": "load",
        "system": system,
        "config": config,
        "version": version,
        "workload": workload,
        "value_size": value_size,
        "clients": clients,
        "procs": procs,
        "duration_s": duration_s,
        "run": run,
        "ops": merged.ops,
        "errors": merged.errors,
        "error_kinds": dict(merged.error_kinds),
        "stalled_at_end": merged.stalled_at_end,
        "elapsed_s": round(merged.elapsed_s, 4),
        "ops_per_s": round(merged.ops / elapsed, 2) if merged.ops else 0.0,
        "latency_ms": merged.hist.summary_ms(),
        "generator": generator,
        "cpu_s": {
            "generator": round(merged.cpu_s, 3),
            "generator_procs": [round(c, 3) for c in procs_cpu],
            "servers": {k: round(v, 3) for k, v in sorted(server_cpu_s.items())},
        },
        # Cores busy on average over the window; a generator near `procs` is saturated.
        "cpu_cores": {
            "generator": round(merged.cpu_s / elapsed, 3),
            "generator_procs": procs_cores,
            "servers": round(servers_cpu / elapsed, 3),
        },
        # CPU per completed operation: all generator processes together, all nodes together.
        "cpu_us_per_op": {
            "generator": per_op_us(merged.cpu_s, merged.ops),
            "servers": per_op_us(servers_cpu, merged.ops),
        },
        "generator_bound": generator_bound(procs_cores),
        "histogram": merged.hist.to_json(),
    }


LOAD_KEYS = frozenset(
    {
        "schema",
        "kind",
        "system",
        "config",
        "version",
        "workload",
        "value_size",
        "clients",
        "procs",
        "duration_s",
        "run",
        "ops",
        "errors",
        "error_kinds",
        "stalled_at_end",
        "elapsed_s",
        "ops_per_s",
        "latency_ms",
        "generator",
        "cpu_s",
        "cpu_cores",
        "cpu_us_per_op",
        "generator_bound",
        "histogram",
    }
)


def point_per_op(point: Mapping[str, Any]) -> dict[str, float | None]:
    """A point's CPU microseconds per op, also for points written before the field existed."""
    have = point.get("cpu_us_per_op")
    if have is not None:
        return dict(have)
    ops = int(point.get("ops", 0))
    cpu = point.get("cpu_s", {})
    return {
        "generator": per_op_us(float(cpu.get("generator", math.nan)), ops),
        "servers": per_op_us(float(sum(cpu.get("servers", {}).values())), ops),
    }


def point_generator_bound(point: Mapping[str, Any]) -> bool:
    """Whether a point was generator-bound (older points: from their generator cores)."""
    if "generator_bound" in point:
        return bool(point["generator_bound"])
    c = point.get("cpu_cores", {})
    procs = c.get("generator_procs") or [
        float(c.get("generator", 0.0)) / max(1, int(point.get("procs", 1)))
    ]
    return generator_bound(procs)


def series_label(point: Mapping[str, Any]) -> str:
    cfg = point.get("config") or "default"
    return point["system"] if cfg == "default" else f"{point['system']}:{cfg}"


def summarize(points: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Collapse the runs of each (series, workload, value size, clients) to median/min/max of
    throughput and median p50/p99/p999, sorted for tables and charts. Histograms of the runs are
    also merged so that the pooled p99 can be read next to the median of per-run p99s."""
    groups: dict[tuple[str, str, int, int], list[Mapping[str, Any]]] = {}
    for p in points:
        if p.get("kind") != "load":
            continue
        key = (series_label(p), p["workload"], int(p["value_size"]), int(p["clients"]))
        groups.setdefault(key, []).append(p)
    out: list[dict[str, Any]] = []
    for (label, workload, size, clients), runs in sorted(groups.items()):
        tput = [float(r["ops_per_s"]) for r in runs]
        pooled = Histogram()
        for r in runs:
            pooled.merge(Histogram.from_json(r["histogram"]))

        def med(name: str, runs: list[Mapping[str, Any]] = runs) -> float | None:
            vals = [r["latency_ms"][name] for r in runs if r["latency_ms"][name] is not None]
            return statistics.median(vals) if vals else None

        per_op = [point_per_op(r) for r in runs]

        def med_op(name: str, per_op: list[dict[str, float | None]] = per_op) -> float | None:
            vals = [v[name] for v in per_op if v[name] is not None]
            return statistics.median(vals) if vals else None

        bound = sum(1 for r in runs if point_generator_bound(r))

        out.append(
            {
                "series": label,
                "workload": workload,
                "value_size": size,
                "clients": clients,
                "runs": len(runs),
                "ops_per_s": {
                    "median": statistics.median(tput),
                    "min": min(tput),
                    "max": max(tput),
                },
                "latency_ms": {"p50": med("p50"), "p99": med("p99"), "p999": med("p999")},
                "pooled_latency_ms": pooled.summary_ms(),
                "errors": sum(int(r["errors"]) for r in runs),
                "stalled_at_end": sum(int(r.get("stalled_at_end", 0)) for r in runs),
                "generator_cores_max": max(float(r["cpu_cores"]["generator"]) for r in runs),
                "server_cores_median": statistics.median(
                    float(r["cpu_cores"]["servers"]) for r in runs
                ),
                "cpu_us_per_op": {"generator": med_op("generator"), "servers": med_op("servers")},
                "generator": ",".join(sorted({str(r.get("generator") or "?") for r in runs})),
                "generator_bound_runs": bound,
                "generator_bound": bound > 0,
            }
        )
    return out


def format_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """The printed table of a comparison: one row per summary row, CPU per op of the
    generator and of the servers, and GEN-BOUND where a generator process passed
    GENERATOR_BOUND_CORES in any run (that row measures the generator too)."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = (
        f"{'series':20s} {'workload':8s} {'size':>7s} {'clients':>7s} {'runs':>4s} "
        f"{'ops/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'gen us/op':>9s} {'srv us/op':>9s} "
        f"{'gen cores':>9s}  note"
    )
    lines = [head, "-" * len(head)]
    for r in summary:
        per_op = r.get("cpu_us_per_op") or {}
        lat = r.get("latency_ms") or {}
        note = []
        if r.get("generator_bound"):
            note.append(f"GEN-BOUND ({r.get('generator_bound_runs', '?')}/{r['runs']} runs)")
        if r.get("errors"):
            note.append(f"errors={r['errors']}")
        if r.get("stalled_at_end"):
            note.append(f"stalled={r['stalled_at_end']}")
        lines.append(
            f"{r['series']:20s} {r['workload']:8s} {r['value_size']:>6d}B {r['clients']:>7d} "
            f"{r['runs']:>4d} {num(r['ops_per_s']['median'], '9.1f')} "
            f"{num(lat.get('p50'), '8.3f')} {num(lat.get('p99'), '8.3f')} "
            f"{num(per_op.get('generator'), '9.1f')} {num(per_op.get('servers'), '9.1f')} "
            f"{num(r.get('generator_cores_max'), '9.3f')}  {' '.join(note)}".rstrip()
        )
    return "\n".join(lines)


def median_max(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median and max of trial durations (failover), None when no trial succeeded."""
    if not values:
        return {"n": 0, "median": None, "max": None, "min": None}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "max": max(values),
        "min": min(values),
    }
