"""bench/latency.py's pure parts: the trees of an A/B, the A/B table and the breakdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.latency import ab_table, breakdown, parse_strace_summary, parse_trees


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("", {"this": None}),
        ("a=/x,b=", {"a": Path("/x"), "b": None}),
        ("base=/tmp/one, new=/tmp/two", {"base": Path("/tmp/one"), "new": Path("/tmp/two")}),
    ],
)
def test_parse_trees(text: str, expect: dict[str, Path | None]) -> None:
    assert parse_trees(text) == expect


def _run(name: str, p50: float, cpu: float) -> dict[str, Any]:
    stages = {
        "node": "n",
        "counts": {"windows": 10, "put/windows": 10, "put/turns": 20},
        "stages": {
            "put: frame_read > decoded": {"n": 10, "p50_us": 40, "p90_us": 50, "mean_us": 42},
            "put: total": {"n": 10, "p50_us": 1500, "p90_us": 2000, "mean_us": 1600},
            "put: rare > thing": {"n": 0, "p50_us": 1, "p90_us": 1, "mean_us": 1},
        },
    }
    node = {"role": "leader", "per_put": {"turns": 2.0, "fsyncs": 1.0, "cpu_us": 900.0}}
    return {
        "name": name,
        "p50_ms": p50,
        "p90_ms": p50 * 2,
        "mean_ms": p50,
        "servers_cpu_us_per_put": cpu,
        "nodes": {"rkv0": {**node, "stages": stages}, "rkv1": {**node, "stages": None}},
    }


def test_ab_table_gives_each_trees_medians() -> None:
    runs = [_run("a", 2.0, 3000), _run("b", 1.5, 2000), _run("a", 3.0, 3100), _run("a", 1.0, 10)]
    lines = ab_table(runs).splitlines()
    a = next(line for line in lines if line.startswith("a "))
    b = next(line for line in lines if line.startswith("b "))
    assert "2.000 (2.00 / 3.00 / 1.00)" in a and a.rstrip().endswith("3000")
    assert "1.500 (1.50)" in b and b.rstrip().endswith("2000")


def test_breakdown_lists_the_window_and_skips_rare_transitions() -> None:
    text = breakdown(_run("a", 2.0, 3000))
    assert "put: frame_read > decoded" in text and "put: total" in text
    assert "rare > thing" not in text
    assert "per window: windows 1.00, turns 2.00" in text
    assert "(no stage dump)" in text


def test_parse_strace_summary() -> None:
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 61.20    0.120000          60      2000           fdatasync
 20.00    0.040000          10      4000       100 recvfrom
  0.10    0.000100           1       100           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.160100          26      6100       100 total
"""
    assert parse_strace_summary(text) == {"fdatasync": 2000, "recvfrom": 4000, "epoll_wait": 100}
