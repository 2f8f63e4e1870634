"""bench.leasechurn and bench.leasegen: the generator's JSON round trip and measurement
window, the bad-argument errors, and a tiny real run of `python -m bench lease-churn`
(3-node clusters, 2 churn processes, 2 keepers, leases left to expire)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.leasegen import GenResult, _Window
from bench.stats import Histogram

ROOT = Path(__file__).resolve().parents[2]


def test_gen_result_survives_json() -> None:
    h = Histogram()
    for us in (900, 1500, 40_000):
        h.record(us)
    r = GenResult({"keepalive": h}, 3, 1, {"Timeout": 1}, 2, 0.25, 10.0, 0.5)
    back = GenResult.from_json(json.loads(json.dumps(r.to_json())))
    assert back.to_json() == r.to_json()
    assert back.hists["keepalive"].count == 3


@pytest.mark.parametrize(
    ("t0", "t1", "counted"),
    [(10.0, 10.5, True), (9.9, 10.5, False), (19.5, 20.0, False), (15.0, 19.99, True)],
)
def test_the_window_counts_what_starts_and_ends_inside_it(
    t0: float, t1: float, counted: bool
) -> None:
    w = _Window(("grant",))
    w.start, w.end = 10.0, 20.0
    assert w.ok("grant", t0, t1) is counted
    assert w.hists["grant"].count == int(counted)


def test_failures_count_inside_the_window_only() -> None:
    w = _Window(("grant",))
    w.start, w.end = 10.0, 20.0
    w.fail(9.0, TimeoutError())
    w.fail(12.0, TimeoutError())
    assert (w.errors, w.kinds) == (1, {"TimeoutError": 1})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "0"], "--clients must be at least 1"),
        (["--live-leases", "0"], "--live-leases must be at least 1"),
        (["--lapse-ttl", "0"], "--lapse-ttl must be positive"),
        (["--warmup", "-1"], "--warmup must not be negative"),
        (["--seq-rounds", "0"], "--seq-rounds must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: list[str], message: str) -> None:
    argv = [sys.executable, "-m", "bench", "lease-churn", *args]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip() == f"lease-churn: {message}"


def test_a_tiny_lease_churn_run(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "lease-churn", "--clients", "2", "--procs", "2"]
    argv += ["--duration", "1.5", "--warmup", "0.5", "--live-leases", "40", "--keepers", "2"]
    argv += ["--live-ttl", "3", "--live-duration", "2", "--lapse-leases", "30"]
    argv += ["--lapse-ttl", "1", "--seq-rounds", "1", "--out-dir", str(tmp_path)]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "deadline -> key gone" in run.stdout
    (out,) = tmp_path.glob("lease-churn-*.json")
    r = json.loads(out.read_text())["result"]
    churn, live, lapse = r["churn"], r["live"], r["lapse"]
    for kind in ("put", "put_lease", "keepalive", "grant", "revoke", "get"):
        assert r["sequential"][kind]["p50"] > 0
    assert churn["cycles"] > 0 and churn["errors"] == 0
    for op in ("grant", "put", "keepalive", "revoke", "cycle"):
        assert churn["latency_ms"][op]["p50"] > 0
    assert churn["latency_ms"]["cycle"]["p50"] >= churn["latency_ms"]["grant"]["p50"]
    assert len(churn["generator_cores"]) == 2 and sum(churn["servers_cpu_s"].values()) > 0
    assert live["leases_lost"] == 0 and live["keepalives_per_s"] > 0
    assert live["leader_leases_at_end"] == 40
    assert live["checkpoint_entries_proposed"] >= 0
    # every lapsed key went, none before the promise (its grant's send + TTL)
    assert (lapse["expired"], lapse["gone_before_deadline"]) == (30, 0)
    assert lapse["delay_ms"]["p50"] is not None
