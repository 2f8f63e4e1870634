"""bench.watchfanout and bench.watchers: the pure parts (spreading watchers over processes,
reading a write's number from its key, delivery latencies from ack and arrival times), and
a tiny real run of `python -m bench watch-fanout` (3-node cluster, 2 watcher processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.watchers import latencies, seq_of
from bench.watchfanout import key_of, split

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("total", "parts", "want"),
    [(1000, 4, [250] * 4), (10, 3, [4, 3, 3]), (2, 5, [1, 1]), (7, 1, [7])],
)
def test_split_spreads_watchers_evenly(total: int, parts: int, want: list[int]) -> None:
    assert split(total, parts) == want


def test_seq_of_reads_the_writers_keys_only() -> None:
    assert seq_of(key_of(42), b"wf/") == 42
    assert seq_of(b"wf/other", b"wf/") is None
    assert seq_of(b"xx/00000001", b"wf/") is None


def test_latencies_from_the_ack_over_the_measured_window() -> None:
    arrivals = [[1.0], [2.010, 2.020], [3.001, 2.999], [9.0]]
    acks: list[float | None] = [0.5, 2.0, 3.0, None]
    h, early = latencies(arrivals, acks, first=1)  # write 0 is warmup, write 3 failed
    assert h.count == 4 and early == 1
    assert (h.min_us, h.max_us) == (0, 20_000)  # an arrival before the ack counts as 0
    assert h.percentile_us(50) == pytest.approx(1000, rel=0.02)


def test_a_tiny_watch_fanout_run(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "watch-fanout", "--watchers", "6", "--procs", "2"]
    argv += ["--rate", "20", "--duration", "1", "--warmup", "0.5", "--out-dir", str(tmp_path)]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "delivery (write ack -> event): p50" in run.stdout
    (out,) = tmp_path.glob("watch-fanout-*.json")
    r = json.loads(out.read_text())["result"]
    assert r["failed_writes"] == 0 and r["watch_errors"] == 0
    assert (r["events_missing"], r["events_measured"]) == (0, 6 * 20)
    assert r["latency_ms"]["p50"] is not None and r["latency_ms"]["p50"] >= 0
    assert set(r["generator_cores"]) == {"writer", "watcher0", "watcher1"}
    assert sum(m["rkv_watch_events_delivered_total"] for m in r["nodes_watch_metrics"]) >= 6 * 30
    assert r["servers_cpu_s"] > 0


def test_bad_arguments_are_one_line_errors() -> None:
    argv = [sys.executable, "-m", "bench", "watch-fanout", "--watchers", "0"]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stderr.strip().startswith("error: --watchers")
