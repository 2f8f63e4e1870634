"""The pure parts of `bench resp` (bench/resp.py): redis-benchmark's tests and command line,
its `--csv` output, the support probe's RESP bytes and replies, the CPU-per-op figures of a
row, a row from a native-client `load` point, and the printed table.

Owns: those, tested in tests/bench/test_bench_resp.py. Must not: start processes, open
sockets or read clocks (bench/resp.py does).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.stats import GENERATOR_BOUND_CORES, cores, per_op_us

HOST = "127.0.0.1"
DEFAULT_TESTS = ("ping", "set", "get", "incr", "mset")
EXPANDS = {"ping": ("ping_inline", "ping_mbulk")}
"""`-t ping` is two tests in redis-benchmark; each gets its own process here."""

_PROBE_KEY = b"bench:resp:probe"
PROBES: dict[str, list[bytes]] = {
    "ping_inline": [b"PING"],
    "ping_mbulk": [b"PING"],
    "set": [b"SET", _PROBE_KEY, b"xxx"],
    "get": [b"GET", _PROBE_KEY],
    "incr": [b"INCR", _PROBE_KEY + b":counter"],
    "mset": [b"MSET", _PROBE_KEY, b"xxx"],
}
"""One command per test, like the test's own, sent once before it: an error reply marks the
test not supported on that server."""


def expand_tests(tests: Sequence[str]) -> list[str]:
    """redis-benchmark test names, one per process: "ping" is ping_inline and ping_mbulk."""
    out: list[str] = []
    for t in tests:
        for x in EXPANDS.get(t.lower(), (t.lower(),)):
            if x not in PROBES:
                raise ValueError(f"unknown test {t!r} (have {', '.join(DEFAULT_TESTS)})")
            if x not in out:
                out.append(x)
    return out


def benchmark_argv(
    port: int, test: str, *, clients: int, requests: int, size: int, keys: int
) -> list[str]:
    """One redis-benchmark run of one test, quiet, CSV. (No -e: redis-benchmark 7 stops at the
    first error reply anyway, printing "Error from server: ..." on stderr, and warns on -e.)"""
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", test]
    argv += ["-c", str(clients), "-n", str(requests), "-d", str(size), "-q", "--csv"]
    if keys > 1:
        argv += ["-r", str(keys)]
    return argv


def parse_csv(text: str) -> tuple[list[dict[str, Any]], int]:
    """redis-benchmark `--csv` output: its rows ({"test", "rps", "p50_latency_ms", ...} as
    floats) and the number of lines that are not CSV (warnings, "Error from server: ...")."""
    rows: list[dict[str, Any]] = []
    other = 0
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith('"'):
            other += 1
            continue
        fields = next(csv.reader(io.StringIO(line)))
        if header is None and fields and fields[0] == "test":
            header = fields
            continue
        if header is None or len(fields) != len(header):
            other += 1
            continue
        row: dict[str, Any] = {"test": fields[0]}
        for k, v in zip(header[1:], fields[1:], strict=True):
            try:
                row[k] = float(v)
            except ValueError:
                row[k] = v
        rows.append(row)
    return rows, other


def encode_command(args: Sequence[bytes]) -> bytes:
    """A RESP array of bulk strings (what a client sends)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def reply_error(first_line: bytes) -> str | None:
    """The error text of a reply's first line ("-ERR ..." or RESP3 "!"), None when not one."""
    if first_line.startswith(b"-"):
        return first_line[1:].decode("utf-8", "replace").strip()
    if first_line.startswith(b"!"):
        return "(blob error)"
    return None


def figures(
    *, ops: int, elapsed_s: float, gen_cpu_s: float, srv_cpu_s: Mapping[str, float]
) -> dict[str, Any]:
    """The CPU side of a row: generator and servers (summed over nodes), per op and in cores."""
    srv = sum(srv_cpu_s.values()) if srv_cpu_s else math.nan
    gen_cores = cores(gen_cpu_s, elapsed_s)
    return {
        "gen_cpu_s": round(gen_cpu_s, 4) if math.isfinite(gen_cpu_s) else None,
        "srv_cpu_s": {k: round(v, 4) for k, v in sorted(srv_cpu_s.items())},
        "gen_us_per_op": per_op_us(gen_cpu_s, ops),
        "srv_us_per_op": per_op_us(srv, ops),
        "gen_cores": gen_cores,
        "srv_cores": cores(srv, elapsed_s),
        "generator_bound": gen_cores is not None and gen_cores > GENERATOR_BOUND_CORES,
    }


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The printed table: one line per target x test; unsupported tests say so and why."""
    head = (
        f"{'target':13s} {'generator':16s} {'test':14s} {'ops/s':>9s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'gen us/op':>9s} {'srv us/op':>9s} {'gen cores':>9s}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r['target']:13s} {r['generator']:16s} {r['test']:14s} "
        if not r.get("supported", True):
            lines.append(left + f"not supported: {r.get('note', '')}")
            continue
        if r.get("error"):
            lines.append(left + f"{'FAILED':>9s}  {r['error']}")
            continue
        note = []
        if r.get("generator_bound"):
            note.append("GEN-BOUND")
        if r.get("errors_seen"):
            note.append(f"errors: {r['errors_seen']}")
        if r.get("note"):
            note.append(r["note"])
        lines.append(
            left
            + f"{_f(r.get('ops_per_s'), '9.0f')} {_f(r.get('p50_ms'), '7.3f')} "
            + f"{_f(r.get('p99_ms'), '7.3f')} {_f(r.get('gen_us_per_op'), '9.1f')} "
            + f"{_f(r.get('srv_us_per_op'), '9.1f')} {_f(r.get('gen_cores'), '9.2f')}  "
            + "; ".join(note)
        )
    return "\n".join(lines)


def native_row(point: Mapping[str, Any], target: str) -> dict[str, Any]:
    """A table row from a `load` point of bench.stats (rkv's native client)."""
    lat = point["latency_ms"]
    per, cc = point["cpu_us_per_op"], point["cpu_cores"]
    label = (
        point["system"] if point["config"] == "default" else f"{point['system']}:{point['config']}"
    )
    return {
        "target": target,
        "generator": label,
        "test": point["workload"].upper(),
        "supported": True,
        "requests": point["ops"],
        "ops_per_s": point["ops_per_s"],
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "errors_seen": point["errors"],
        "gen_us_per_op": per["generator"],
        "srv_us_per_op": per["servers"],
        "gen_cores": cc["generator"],
        "srv_cores": cc["servers"],
        "generator_bound": point["generator_bound"],
    }
