"""bench/clientcpu.py's pure parts: the series' worker specs, the medians, the command line."""

from __future__ import annotations

from typing import Any

import pytest

from bench.__main__ import main
from bench.clientcpu import _spec, format_summary, summarize

BASE = {"system": "rkv", "config": "default", "addrs": ["127.0.0.1:1"], "generator": "trio"}


@pytest.mark.parametrize(
    ("series", "want"),
    [
        ("client", {**BASE, "one_client": True}),
        ("rkv", BASE),
        ("rkv:raw", {**BASE, "config": "raw", "generator": "raw"}),
    ],
)
def test_each_series_gets_its_worker_spec(series: str, want: dict[str, Any]) -> None:
    assert _spec(BASE, series) == want
    assert BASE["generator"] == "trio"  # the cluster's spec is not changed


def test_an_unknown_series_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown series"):
        _spec(BASE, "etcd")


def test_unknown_series_on_the_command_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client-cpu", "--series", "client,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def point(series: str, workload: str, clients: int, us: float, ops: float) -> dict[str, Any]:
    return {
        "series": series,
        "workload": workload,
        "clients": clients,
        "ops_per_s": ops,
        "client_us_per_op": us,
        "servers_us_per_op": 2 * us,
    }


def test_summary_takes_medians_per_series_workload_and_clients() -> None:
    points = [
        point("client", "put", 64, 30.0, 100),
        point("client", "put", 64, 10.0, 300),
        point("client", "put", 64, 20.0, 200),
        point("rkv:raw", "put", 64, 5.0, 400),
        point("client", "get", 1, 99.0, 50),
        point("client", "put", 1, 7.0, 60),
    ]
    rows = summarize(points)
    assert [(r["workload"], r["clients"], r["series"]) for r in rows] == [
        ("get", 1, "client"),
        ("put", 1, "client"),
        ("put", 64, "client"),
        ("put", 64, "rkv:raw"),
    ]
    client64 = rows[2]
    assert client64["runs"] == 3
    assert (client64["client_us_per_op"], client64["ops_per_s"]) == (20.0, 200)
    assert client64["servers_us_per_op"] == 40.0
    table = format_summary(rows)
    assert "| put | 64 | client | 3 | 200 | 20.0 | 40.0 |" in table.splitlines()
