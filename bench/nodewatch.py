"""Watching rkv nodes from outside while a benchmark runs: data dir on disk, LMDB pages in
use, Raft indexes, resident memory.

Owns: parsing a node's Prometheus text (only unlabelled samples), one sample of one node
(data.mdb size, allocated blocks of its data dir, RSS, CPU seconds and I/O counters from
/proc, its /metrics scraped over HTTP), `Watcher`, a thread that samples every node each time the
cluster's commit index passed the next multiple of `every` entries (or each `interval`
seconds), and `growth`, the summary that says whether a series stays bounded. Must not open
a node's LMDB environment (a second open of a running env is not allowed): everything comes
from the file system, /proc and the node's own /metrics (`rkv serve --http-port`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.procs import cpu_seconds, rss_bytes

METRICS = {
    "rkv_commit_index": "commit",
    "rkv_applied_index": "applied",
    "rkv_last_index": "last_index",
    "rkv_log_entries": "log_entries",
    "rkv_snapshot_index": "snapshot_index",
    "rkv_kv_keys": "kv_keys",
    "rkv_store_used_bytes": "lmdb_used_bytes",
    "rkv_store_map_bytes": "lmdb_map_bytes",
    "rkv_is_leader": "is_leader",
}
"""The /metrics gauges a sample keeps, and their names in the results."""


def parse_metrics(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition: {name: value}. Labelled samples,
    comments and malformed lines are skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or "{" in parts[0]:
            continue
        try:
            out[parts[0]] = float(parts[1])
        except ValueError:
            continue
    return out


def scrape(url: str, timeout: float = 2.0) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return parse_metrics(r.read().decode())


def disk_usage(path: Path) -> dict[str, int]:
    """data.mdb's size (what `ls -l` shows) and the bytes allocated to the whole dir (`du`)."""
    mdb = path / "data.mdb"
    out = {"data_mdb_bytes": 0, "du_bytes": 0}
    with contextlib.suppress(OSError):
        out["data_mdb_bytes"] = mdb.stat().st_size
    with contextlib.suppress(OSError):
        for p in path.iterdir():
            with contextlib.suppress(OSError):
                out["du_bytes"] += p.stat().st_blocks * 512
    return out


def proc_io(pid: int) -> dict[str, int]:
    """rchar/wchar (bytes through read/write calls, sockets included) of a live process."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/io") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("rchar", "wchar", "read_bytes", "write_bytes"):
                out[k] = int(v)
    return out


def rss_parts(pid: int) -> dict[str, int]:
    """RssAnon (the process's own memory) and RssFile (pages of mapped files it touched,
    mostly LMDB's data.mdb: page cache the kernel can reclaim), bytes."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile"):
                out["rss_anon_bytes" if k == "RssAnon" else "rss_file_bytes"] = (
                    int(v.split()[0]) * 1024
                )
    return out


def node_sample(data_dir: Path, pid: int | None, metrics_url: str | None) -> dict[str, Any]:
    """Everything we know about one node right now; metrics are None when it does not answer."""
    s: dict[str, Any] = dict(disk_usage(data_dir))
    s["rss_bytes"] = rss_bytes(pid) if pid is not None else None
    # CPU seconds so far: per-write cost between samples holds up on a shared machine,
    # where ops/s swing with whatever else runs.
    s["cpu_s"] = cpu_seconds(pid) if pid is not None else None
    s.update(rss_parts(pid) if pid is not None else {})
    m: dict[str, float] = {}
    if metrics_url is not None:
        with contextlib.suppress(OSError, ValueError):
            m = scrape(metrics_url)
    for name, key in METRICS.items():
        v = m.get(name)
        s[key] = None if v is None or math.isnan(v) else int(v)
    return s


SampleFn = Callable[[], dict[str, dict[str, Any]]]


class Watcher:
    """Samples all nodes in a thread: whenever the highest commit index is `every` entries
    past the previous sample (`every` > 0), or each `interval` seconds (`every` == 0).

    `samples` holds {"t_s", "entries", "nodes": {name: node_sample}}, where `entries` counts
    committed entries since start() (client writes plus the odd no-op of a new term)."""

    def __init__(
        self,
        sample: SampleFn,
        *,
        every: int = 0,
        interval: float = 10.0,
        poll: float = 0.5,
        on_sample: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if every <= 0 and interval <= 0:
            raise ValueError("need every > 0 or interval > 0")
        self._sample = sample
        self.every = every
        self.interval = interval
        self.poll = poll
        self.on_sample = on_sample
        self.samples: list[dict[str, Any]] = []
        self.base_commit = 0
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def take(self) -> dict[str, Any]:
        nodes = self._sample()
        commit = max_commit(nodes)
        rec = {
            "t_s": round(time.monotonic() - self._t0, 2),
            "entries": None if commit is None else commit - self.base_commit,
            "nodes": nodes,
        }
        self.samples.append(rec)
        if self.on_sample is not None:
            self.on_sample(rec)
        return rec

    def start(self) -> dict[str, Any]:
        self._t0 = time.monotonic()
        first = self._sample()
        self.base_commit = max_commit(first) or 0
        self._stop.clear()
        rec = self.take()
        self._thread = threading.Thread(target=self._run, name="nodewatch", daemon=True)
        self._thread.start()
        return rec

    def stop(self) -> dict[str, Any]:
        """Stop the thread and take one last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.take()

    def _run(self) -> None:
        next_mark = self.every
        next_t = time.monotonic() + self.interval
        while not self._stop.wait(self.poll):
            try:
                if self.every > 0:
                    commit = max_commit(self._sample_commits())
                    if commit is None or commit - self.base_commit < next_mark:
                        continue
                    rec = self.take()
                    done = rec["entries"] or 0
                    while next_mark <= done:
                        next_mark += self.every
                elif time.monotonic() >= next_t:
                    self.take()
                    next_t += self.interval
            except Exception:  # a missed sample is counted, the run goes on
                self.errors += 1

    def _sample_commits(self) -> dict[str, dict[str, Any]]:
        commits = getattr(self._sample, "commits", None)
        return commits() if callable(commits) else self._sample()


def fill_rates(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Between consecutive samples: [{"entries": at the end, "ops_per_s", "cpu_ms_per_op":
    the nodes' CPU (all together) per committed entry, when every node's CPU is known}]."""
    out = []
    for a, b in itertools.pairwise(samples):
        de, dt = (b["entries"] or 0) - (a["entries"] or 0), b["t_s"] - a["t_s"]
        if dt > 0 and de > 0:
            row: dict[str, Any] = {"entries": b["entries"], "ops_per_s": round(de / dt, 1)}
            names = set(a.get("nodes", {})) | set(b.get("nodes", {}))
            cpu = [
                (b["nodes"].get(n, {}).get("cpu_s"), a["nodes"].get(n, {}).get("cpu_s"))
                for n in names
            ]
            if names and all(x is not None and y is not None for x, y in cpu):
                row["cpu_ms_per_op"] = round(1000 * sum(x - y for x, y in cpu) / de, 3)
            out.append(row)
    return out


def max_commit(nodes: dict[str, dict[str, Any]]) -> int | None:
    vals = [n.get("commit") for n in nodes.values()]
    known = [v for v in vals if isinstance(v, int)]
    return max(known) if known else None


class RkvNodes:
    """The sample function for an rkv driver started with `metrics = True`."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def _pid(self, i: int) -> int | None:
        s = self.driver.servers[i]
        return s.pid if s.alive() else None

    def __call__(self) -> dict[str, dict[str, Any]]:
        d = self.driver
        out: dict[str, dict[str, Any]] = {}
        for i, s in enumerate(d.servers):
            pid = self._pid(i)
            out[s.name] = node_sample(d.data_dir(i), pid, d.metrics_url(i) if pid else None)
        return out

    def commits(self) -> dict[str, dict[str, Any]]:
        """Only the commit index of each live node (cheap: one scrape each)."""
        out: dict[str, dict[str, Any]] = {}
        for i, s in enumerate(self.driver.servers):
            if self._pid(i) is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                v = scrape(self.driver.metrics_url(i)).get("rkv_commit_index")
                if v is not None:
                    out[s.name] = {"commit": int(v)}
        return out


def growth(points: Sequence[tuple[float, float]]) -> dict[str, float | int | None]:
    """Summary of a (x, y) series, e.g. (writes, bytes): first/last/min/max of y and the
    least-squares slope of y per 100,000 x. An empty series gives Nones."""
    if not points:
        return {"n": 0, "first": None, "last": None, "min": None, "max": None,
                "slope_per_100k": None}  # fmt: skip
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    n = len(points)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return {
        "n": n,
        "first": ys[0],
        "last": ys[-1],
        "min": min(ys),
        "max": max(ys),
        "slope_per_100k": round(slope * 100_000, 3),
    }


def since_first_compaction(samples: Sequence[dict[str, Any]], node: str) -> list[dict[str, Any]]:
    """The samples of `node` from the first one where its log had been compacted on."""
    out: list[dict[str, Any]] = []
    for rec in samples:
        s = rec["nodes"].get(node) or {}
        if out or (s.get("snapshot_index") or 0) > 0:
            out.append({"entries": rec["entries"], **s})
    return out


def mib(n: float | int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f}"
