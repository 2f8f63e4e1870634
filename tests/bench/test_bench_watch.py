"""The pure helpers of the disk and snapshot-install benchmarks: Prometheus text parsing,
growth summaries, the samples after a node's first compaction, the leader's "snapshot sent"
log lines and fill rates. No servers are started and nothing is timed."""

from __future__ import annotations

import pytest

from bench.__main__ import build_parser
from bench.nodewatch import (
    fill_rates,
    growth,
    max_commit,
    parse_metrics,
    since_first_compaction,
)
from bench.snapinstall import parse_sent

EXPOSITION = """\
# HELP rkv_commit_index Highest log index known committed.
# TYPE rkv_commit_index gauge
rkv_commit_index 12345.0
rkv_role{role="leader"} 1.0
rkv_store_used_bytes 2.097152e+06
rkv_snapshot_index NaN
garbage line without value
rkv_bad notanumber
"""


def test_parse_metrics_keeps_unlabelled_samples_only() -> None:
    m = parse_metrics(EXPOSITION)
    assert m["rkv_commit_index"] == 12345.0
    assert m["rkv_store_used_bytes"] == 2097152.0
    assert "rkv_role" not in m
    assert "rkv_bad" not in m and "garbage" not in m
    assert m["rkv_snapshot_index"] != m["rkv_snapshot_index"]  # NaN kept as NaN


def test_growth_of_a_flat_series_has_zero_slope() -> None:
    g = growth([(0, 5.0), (100_000, 5.0), (200_000, 5.0)])
    assert g["slope_per_100k"] == 0.0
    assert (g["min"], g["max"], g["first"], g["last"], g["n"]) == (5.0, 5.0, 5.0, 5.0, 3)


def test_growth_slope_is_per_100k_of_x() -> None:
    # y grows 2 bytes per write: 200,000 bytes per 100k writes
    g = growth([(x, 2.0 * x + 7) for x in range(0, 500_001, 50_000)])
    assert g["slope_per_100k"] == pytest.approx(200_000.0)
    assert g["min"] == 7.0 and g["max"] == 1_000_007.0


def test_growth_of_nothing_and_of_one_point() -> None:
    assert growth([])["n"] == 0 and growth([])["slope_per_100k"] is None
    assert growth([(3, 4)])["slope_per_100k"] == 0.0


def _rec(entries: int, **nodes: dict[str, int]) -> dict[str, object]:
    return {"t_s": entries / 1000, "entries": entries, "nodes": nodes}


def test_since_first_compaction_starts_at_the_nodes_first_snapshot() -> None:
    samples = [
        _rec(0, a={"snapshot_index": 0, "x": 1}, b={"snapshot_index": 0}),
        _rec(10, a={"snapshot_index": 0, "x": 2}, b={"snapshot_index": 5}),
        _rec(20, a={"snapshot_index": 9, "x": 3}, b={"snapshot_index": 5}),
        _rec(30, a={"snapshot_index": 9, "x": 4}, b={"snapshot_index": 5}),
    ]
    assert [p["entries"] for p in since_first_compaction(samples, "a")] == [20, 30]
    assert [p["x"] for p in since_first_compaction(samples, "a")] == [3, 4]
    assert [p["entries"] for p in since_first_compaction(samples, "b")] == [10, 20, 30]
    assert since_first_compaction(samples, "missing") == []


def test_max_commit_ignores_nodes_without_an_answer() -> None:
    assert max_commit({"a": {"commit": 3}, "b": {"commit": None}, "c": {"commit": 9}}) == 9
    assert max_commit({"a": {"commit": None}}) is None


def test_parse_sent_picks_the_lines_for_one_follower() -> None:
    log = (
        "2026-11-27 08:00:00,000 INFO rkv.node: 127.0.0.1:1: snapshot at 1020000 sent to "
        "127.0.0.1:2 (130 chunks, 1000070 records)\n"
        "2026-11-27 08:00:01,000 INFO rkv.node: 127.0.0.1:1: snapshot at 7 sent to "
        "127.0.0.1:3 (1 chunks, 9 records)\n"
        "2026-11-27 08:00:02,000 WARNING rkv.node: 127.0.0.1:1: snapshot to 127.0.0.1:2 failed\n"
    )
    assert parse_sent(log, "127.0.0.1:2") == [{"index": 1020000, "chunks": 130, "records": 1000070}]
    assert parse_sent(log, "127.0.0.1:4") == []


def test_fill_rates_between_samples() -> None:
    samples = [
        {"t_s": 0.0, "entries": 0},
        {"t_s": 10.0, "entries": 5000},
        {"t_s": 10.0, "entries": 5000},  # no time passed: skipped
        {"t_s": 30.0, "entries": 15000},
    ]
    assert fill_rates(samples) == [
        {"entries": 5000, "ops_per_s": 500.0},
        {"entries": 15000, "ops_per_s": 500.0},
    ]


def test_fill_rates_give_node_cpu_per_entry_when_every_node_is_known() -> None:
    samples = [
        {"t_s": 0.0, "entries": 0, "nodes": {"a": {"cpu_s": 1.0}, "b": {"cpu_s": 2.0}}},
        {"t_s": 10.0, "entries": 4000, "nodes": {"a": {"cpu_s": 3.0}, "b": {"cpu_s": 4.0}}},
        {"t_s": 20.0, "entries": 8000, "nodes": {"a": {"cpu_s": 4.0}, "b": {"cpu_s": None}}},
    ]
    rates = fill_rates(samples)
    assert rates[0] == {"entries": 4000, "ops_per_s": 400.0, "cpu_ms_per_op": 1.0}
    assert rates[1] == {"entries": 8000, "ops_per_s": 400.0}


def test_parser_knows_disk_and_snapinstall() -> None:
    a = build_parser().parse_args(
        ["disk", "--writes", "10", "--keys", "5", "--rkv-args", "--snapshot-entries 100"]
    )
    assert (a.cmd, a.writes, a.keys, a.every, a.size) == ("disk", 10, 5, 50_000, [100])
    assert a.rkv_args == "--snapshot-entries 100"
    b = build_parser().parse_args(["snapinstall", "--keys", "1000", "--extra-writes", "3000"])
    assert (b.cmd, b.keys, b.extra_writes, b.clients) == ("snapinstall", 1000, 3000, 64)
