"""The pure parts of issue 18's fair anchor: CPU per operation, generator-bound marking, the
printed tables (compare and floor), and that a chart marks generator-bound points. No servers
are started and nothing is timed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.__main__ import build_parser
from bench.drivers import make_driver
from bench.floor import derived_floor, format_floor_table, summarize_samples
from bench.stats import (
    GENERATOR_BOUND_CORES,
    Histogram,
    WorkerResult,
    cores,
    format_table,
    generator_bound,
    load_point,
    per_op_us,
    point_generator_bound,
    point_per_op,
    summarize,
)


def _merged(ops: int, cpu: float, elapsed: float = 10.0) -> WorkerResult:
    h = Histogram()
    for i in range(ops):
        h.record(1000 + i % 7)
    return WorkerResult(ops, 0, elapsed, cpu, h)


def _point(
    series: str, clients: int, run: int, ops: int, procs_cpu: list[float], srv: float
) -> dict[str, object]:
    system, _, config = series.partition(":")
    return load_point(
        system=system,
        config=config or "default",
        version="1",
        workload="put",
        value_size=100,
        clients=clients,
        procs=len(procs_cpu),
        duration_s=10.0,
        run=run,
        merged=_merged(ops, sum(procs_cpu)),
        server_cpu_s={"n0": srv / 2, "n1": srv / 4, "n2": srv / 4},
        worker_cpu_s=procs_cpu,
        generator="raw" if system == "etcd" and not config else "trio",
    )


@pytest.mark.parametrize(
    ("cpu", "ops", "expected"),
    [
        (1.0, 10_000, 100.0),
        (0.25, 4_000, 62.5),
        (1.0, 0, None),
        (math.nan, 10, None),
        (0.0, 10, 0.0),
    ],
)
def test_per_op_us(cpu: float, ops: int, expected: float | None) -> None:
    assert per_op_us(cpu, ops) == expected


def test_cores() -> None:
    assert cores(3.0, 10.0) == 0.3
    assert cores(3.0, 0.0) is None
    assert cores(math.nan, 10.0) is None


@pytest.mark.parametrize(
    ("procs", "bound"),
    [
        ([0.59], False),
        ([GENERATOR_BOUND_CORES], False),  # above 60 % of a core, not at it
        ([0.61], True),
        ([0.3, 0.7], True),  # any one process is enough
        ([0.5, 0.5], False),  # 1.0 core in all, but no process above 0.6
        ([None, 0.2], False),
        ([], False),
    ],
)
def test_generator_bound(procs: list[float | None], bound: bool) -> None:
    assert generator_bound(procs) is bound


def test_point_reports_per_op_cpu_and_marks_a_busy_generator() -> None:
    # 10 s window, 20,000 ops: 0.7 cores in one generator process.
    p = _point("etcd", 64, 1, 20_000, [7.0], 6.0)
    assert p["cpu_us_per_op"] == {"generator": 350.0, "servers": 300.0}
    assert p["cpu_cores"]["generator_procs"] == [0.7]
    assert p["cpu_s"]["generator_procs"] == [7.0]
    assert p["generator_bound"] is True and p["generator"] == "raw"
    # The same load over two processes of 0.35 cores each is not generator-bound.
    q = _point("etcd", 64, 1, 20_000, [3.5, 3.5], 6.0)
    assert q["cpu_us_per_op"]["generator"] == 350.0
    assert q["generator_bound"] is False
    assert "NaN" not in json.dumps(p)


def test_points_of_older_files_get_per_op_and_bound_from_their_cpu() -> None:
    p = _point("rkv", 1, 1, 1_000, [1.0], 2.0)
    for k in ("cpu_us_per_op", "generator_bound"):
        del p[k]
    del p["cpu_cores"]["generator_procs"]  # type: ignore[attr-defined]
    assert point_per_op(p) == {"generator": 1000.0, "servers": 2000.0}
    assert point_generator_bound(p) is False
    p["cpu_cores"]["generator"] = 0.9  # type: ignore[index]
    assert point_generator_bound(p) is True


def test_summary_takes_median_per_op_and_counts_bound_runs() -> None:
    points = [
        _point("etcd", 64, 1, 20_000, [7.0], 6.0),  # 350 / 300 us, bound
        _point("etcd", 64, 2, 20_000, [4.0], 8.0),  # 200 / 400 us
        _point("etcd", 64, 3, 10_000, [3.0], 5.0),  # 300 / 500 us
        _point("etcd:trio", 64, 1, 10_000, [5.0], 5.0),
    ]
    rows = summarize(points)
    etcd = next(r for r in rows if r["series"] == "etcd")
    assert etcd["cpu_us_per_op"] == {"generator": 300.0, "servers": 400.0}
    assert (etcd["generator_bound"], etcd["generator_bound_runs"]) == (True, 1)
    assert etcd["generator"] == "raw"
    trio = next(r for r in rows if r["series"] == "etcd:trio")
    assert (trio["generator_bound"], trio["generator"]) == (False, "trio")

    table = format_table(rows).splitlines()
    assert "gen us/op" in table[0] and "srv us/op" in table[0]
    etcd_line = next(line for line in table if line.startswith("etcd "))
    assert "GEN-BOUND (1/3 runs)" in etcd_line
    assert "300.0" in etcd_line and "400.0" in etcd_line
    trio_line = next(line for line in table if line.startswith("etcd:trio"))
    assert "GEN-BOUND" not in trio_line


def test_chart_marks_generator_bound_points(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from bench.chart import plot_compare

    rows = summarize(
        [
            _point("etcd", 1, 1, 5_000, [2.0], 3.0),
            _point("etcd", 64, 1, 20_000, [7.0], 6.0),
            _point("rkv", 1, 1, 4_000, [2.0], 3.0),
            _point("rkv", 64, 1, 15_000, [5.0], 6.0),
        ]
    )
    out = plot_compare(rows, tmp_path / "c.png", title="t")
    assert out.stat().st_size > 0


def test_floor_summary_pools_writers() -> None:
    r = summarize_samples([[100.0, 300.0], [200.0]], wall_s=0.5)
    assert (r["n"], r["writers"], r["ops_per_s"]) == (3, 2, 6.0)
    assert r["latency_ms"]["p50"] == pytest.approx(0.2, rel=1 / 64)
    assert r["latency_ms"]["max"] == 0.3
    empty = summarize_samples([[]], wall_s=1.0)
    assert empty["n"] == 0 and empty["ops_per_s"] is None and empty["latency_ms"]["p50"] is None


def test_floor_derived_figure_and_table() -> None:
    results = {
        "lmdb x3 lockstep": {"kind": "lmdb", **summarize_samples([[400.0]] * 3, 1.0)},
        "rtt": {"kind": "rtt", **summarize_samples([[30.0, 30.0, 40.0]], 1.0)},
    }
    d = derived_floor(results)
    assert d is not None and d["p50_ms"] == pytest.approx(0.46)
    assert derived_floor({"rtt": results["rtt"]}) is None
    table = format_floor_table(results).splitlines()
    assert table[0].split()[:2] == ["what", "writers"]
    assert table[2].split()[:5] == ["lmdb", "x3", "lockstep", "3", "3"]


def test_series_and_generators() -> None:
    assert make_driver("etcd").generator() == "raw"
    assert make_driver("etcd:trio").generator() == "trio"
    assert make_driver("rkv").generator() == "trio"
    assert make_driver("rkv:raw").generator() == "raw"
    with pytest.raises(ValueError):
        make_driver("pysyncobj:raw")


def test_floor_command_line() -> None:
    a = build_parser().parse_args(["floor", "--samples", "200"])
    assert (a.cmd, a.samples, a.round_trips, a.warmup) == ("floor", 200, 5000, 50)
