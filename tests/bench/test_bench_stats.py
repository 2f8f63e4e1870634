"""The pure parts of the benchmark harness: histogram buckets and percentiles, merging of
worker results, the JSON shape of a measured point and of the summary, and argument parsing.
No servers are started and nothing is timed."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.__main__ import _sizes, build_parser
from bench.drivers import parse_series
from bench.loadgen import split
from bench.stats import (
    LOAD_KEYS,
    Histogram,
    WorkerResult,
    bucket_bounds,
    bucket_index,
    load_point,
    median_max,
    merge_workers,
    summarize,
)

latencies = st.lists(st.integers(min_value=0, max_value=10**8), min_size=1, max_size=300)


@given(st.integers(min_value=0, max_value=10**10))
def test_value_falls_inside_its_bucket_and_bucket_is_narrow(v: int) -> None:
    low, high = bucket_bounds(bucket_index(v))
    assert low <= v <= high
    # 7 significant bits: a bucket is at most 1/64 of its lower bound wide (exact below 128).
    assert high - low <= max(0, low // 64)


def test_bucket_indexes_are_contiguous_and_ordered() -> None:
    prev_high = -1
    for i in range(0, 2000):
        low, high = bucket_bounds(i)
        assert low == prev_high + 1, i
        assert bucket_index(low) == i and bucket_index(high) == i
        prev_high = high


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([5], 50, 5),
        ([5], 100, 5),
        ([1, 2, 3, 4], 50, 2),  # nearest rank: ceil(0.5 * 4) = 2nd value
        ([1, 2, 3, 4], 75, 3),
        ([1, 2, 3, 4], 100, 4),
        (list(range(1, 101)), 99, 99),
        ([0] * 999 + [100], 99.9, 0),
        ([0] * 998 + [100, 100], 99.9, 100),
        ([0, 0, 0, 127], 99, 127),
    ],
)
def test_percentiles_exact_below_128us(values: list[int], p: float, expected: int) -> None:
    h = Histogram()
    for v in values:
        h.record(v)
    assert h.percentile_us(p) == expected


@settings(max_examples=100)
@given(latencies, st.sampled_from([50, 90, 99, 99.9, 100]))
def test_percentile_within_bucket_error_of_true_nearest_rank(values: list[int], p: float) -> None:
    h = Histogram()
    for v in values:
        h.record(v)
    rank = math.ceil(Fraction(str(p)) * len(values) / 100)  # exact nearest rank
    true = sorted(values)[max(1, rank) - 1]
    got = h.percentile_us(p)
    assert abs(got - true) <= max(1, true / 64)
    assert min(values) <= got <= max(values)


def test_empty_histogram_and_bad_percentiles() -> None:
    h = Histogram()
    assert math.isnan(h.percentile_us(50))
    assert h.summary_ms()["p99"] is None
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError):
            h.percentile_us(bad)


@settings(max_examples=50)
@given(st.lists(latencies, min_size=1, max_size=5))
def test_merging_equals_recording_everything_in_one(parts: list[list[int]]) -> None:
    merged, whole = Histogram(), Histogram()
    for part in parts:
        h = Histogram()
        for v in part:
            h.record(v)
            whole.record(v)
        merged.merge(h)
    assert merged.counts == whole.counts
    assert (merged.count, merged.total_us, merged.min_us, merged.max_us) == (
        whole.count,
        whole.total_us,
        whole.min_us,
        whole.max_us,
    )


@settings(max_examples=50)
@given(latencies)
def test_histogram_json_roundtrip(values: list[int]) -> None:
    h = Histogram()
    for v in values:
        h.record(v)
    back = Histogram.from_json(json.loads(json.dumps(h.to_json())))
    assert back == h


def test_histogram_json_rejects_inconsistent_counts() -> None:
    h = Histogram()
    h.record(10)
    data = h.to_json()
    data["count"] = 2
    with pytest.raises(ValueError):
        Histogram.from_json(data)


def _worker(values: list[int], ops: int, errors: int, elapsed: float, cpu: float) -> WorkerResult:
    h = Histogram()
    for v in values:
        h.record(v)
    return WorkerResult(ops, errors, elapsed, cpu, h, {"Timeout": errors} if errors else {})


def test_merge_workers_adds_counts_and_takes_longest_window() -> None:
    a = _worker([100, 200], 2, 1, 10.0, 0.5)
    b = _worker([300], 1, 0, 10.2, 0.25)
    b.stalled_at_end = 2
    m = merge_workers([a, b])
    assert (m.ops, m.errors, m.elapsed_s, m.cpu_s) == (3, 1, 10.2, 0.75)
    assert m.stalled_at_end == 2
    assert m.hist.count == 3 and m.hist.max_us == 300
    assert m.error_kinds == {"Timeout": 1}
    with pytest.raises(ValueError):
        merge_workers([])
    # A worker result survives the JSON trip between processes.
    assert WorkerResult.from_json(json.loads(json.dumps(a.to_json()))) == a


def _point(system: str, config: str, clients: int, run: int, rate: float) -> dict[str, object]:
    rng = random.Random(run)
    values = [rng.randrange(500, 5000) for _ in range(int(rate))]
    merged = _worker(values, len(values), 0, 1.0, 0.1)
    return load_point(
        system=system,
        config=config,
        version="1",
        workload="put",
        value_size=100,
        clients=clients,
        procs=1,
        duration_s=1.0,
        run=run,
        merged=merged,
        server_cpu_s={"n0": 0.3, "n1": 0.2},
    )


def test_load_point_json_shape() -> None:
    p = _point("etcd", "default", 16, 1, 400)
    assert set(p) == LOAD_KEYS
    assert p["ops_per_s"] == 400.0
    assert p["cpu_cores"] == {"generator": 0.1, "generator_procs": [0.1], "servers": 0.5}
    # 400 ops: 0.1 s of generator CPU and 0.5 s of the servers' together.
    assert p["cpu_us_per_op"] == {"generator": 250.0, "servers": 1250.0}
    assert p["generator_bound"] is False
    lat = p["latency_ms"]
    assert isinstance(lat, dict)
    assert 0.5 <= lat["p50"] <= lat["p99"] <= lat["p999"] <= 5.0
    json.dumps(p)  # plain JSON, no NaN surprises in the written file
    assert "NaN" not in json.dumps(p)


def test_summarize_groups_runs_per_series_and_point() -> None:
    points = [
        _point("etcd", "default", 1, 1, 100),
        _point("etcd", "default", 1, 2, 300),
        _point("etcd", "default", 1, 3, 200),
        _point("pysyncobj", "nobatch", 1, 1, 50),
        {"kind": "something-else"},
    ]
    rows = summarize(points)
    assert [(r["series"], r["clients"], r["runs"]) for r in rows] == [
        ("etcd", 1, 3),
        ("pysyncobj:nobatch", 1, 1),
    ]
    etcd = rows[0]
    assert etcd["ops_per_s"] == {"median": 200.0, "min": 100.0, "max": 300.0}
    assert etcd["pooled_latency_ms"]["p50"] is not None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], {"n": 0, "median": None, "max": None, "min": None}),
        ([1.5], {"n": 1, "median": 1.5, "max": 1.5, "min": 1.5}),
        ([3.0, 1.0, 2.0, 10.0], {"n": 4, "median": 2.5, "max": 10.0, "min": 1.0}),
    ],
)
def test_median_max(values: list[float], expected: dict[str, object]) -> None:
    assert median_max(values) == expected


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=64))
def test_split_shares_add_up_and_differ_by_at_most_one(total: int, parts: int) -> None:
    shares = split(total, parts)
    assert len(shares) == parts and sum(shares) == total
    assert max(shares) - min(shares) <= 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100", [100]), ("100,64k", [100, 65536]), ("64KiB", [65536]), ("256m", [256 << 20])],
)
def test_size_arguments(text: str, expected: list[int]) -> None:
    assert _sizes(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("etcd", ("etcd", "default")), ("pysyncobj:nobatch", ("pysyncobj", "nobatch"))],
)
def test_series_names(text: str, expected: tuple[str, str]) -> None:
    assert parse_series(text) == expected


def test_compare_command_line() -> None:
    a = build_parser().parse_args(
        ["compare", "--clients", "1,16,64", "--duration", "10", "--runs", "3"]
    )
    assert (a.clients, a.duration, a.runs, a.sizes) == ([1, 16, 64], 10.0, 3, [100, 65536])
