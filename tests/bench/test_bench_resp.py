"""The pure parts of `bench resp` (bench/respwire.py): redis-benchmark's tests and command
line, its CSV, the support probe's bytes and replies, the CPU-per-op figures and the printed
table. No servers are started and nothing is timed."""

from __future__ import annotations

import math

import pytest

from bench.__main__ import build_parser
from bench.respwire import (
    benchmark_argv,
    encode_command,
    expand_tests,
    figures,
    format_table,
    native_row,
    parse_csv,
    reply_error,
)
from bench.stats import Histogram, WorkerResult, load_point

CSV = (
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
    '"p99_latency_ms","max_latency_ms"\n'
    '"MSET (10 keys)","7163.32","6.797","0.808","7.583","11.479","12.375","16.911"\n'
)


def test_ping_expands_into_its_two_tests_and_names_are_checked() -> None:
    assert expand_tests(["ping", "SET", "get", "incr", "mset"]) == [
        "ping_inline",
        "ping_mbulk",
        "set",
        "get",
        "incr",
        "mset",
    ]
    assert expand_tests(["ping_mbulk", "ping"]) == ["ping_mbulk", "ping_inline"]
    with pytest.raises(ValueError, match="lrange"):
        expand_tests(["lrange"])


def test_benchmark_argv_is_the_issue_command_for_one_test() -> None:
    argv = benchmark_argv(7001, "set", clients=50, requests=100_000, size=3, keys=1)
    assert argv == [
        "redis-benchmark", "-h", "127.0.0.1", "-p", "7001", "-t", "set",
        "-c", "50", "-n", "100000", "-d", "3", "-q", "--csv",
    ]  # fmt: skip
    assert "-e" not in argv  # redis-benchmark 7 warns on it and stops at an error anyway
    assert benchmark_argv(1, "get", clients=1, requests=1, size=3, keys=1000)[-2:] == [
        "-r",
        "1000",
    ]


def test_parse_csv_reads_rows_with_commas_in_names_and_counts_other_lines() -> None:
    text = "WARNING: something\n" + CSV + "\nError from server: ERR x\n"
    rows, other = parse_csv(text)
    assert other == 2
    assert rows == [
        {
            "test": "MSET (10 keys)",
            "rps": 7163.32,
            "avg_latency_ms": 6.797,
            "min_latency_ms": 0.808,
            "p50_latency_ms": 7.583,
            "p95_latency_ms": 11.479,
            "p99_latency_ms": 12.375,
            "max_latency_ms": 16.911,
        }
    ]


def test_parse_csv_without_rows() -> None:
    assert parse_csv("") == ([], 0)
    header_only = CSV.splitlines()[0] + "\n"
    assert parse_csv(header_only) == ([], 0)
    # A row before any header, or of the wrong width, is not a row.
    assert parse_csv('"SET","1.0"\n') == ([], 1)
    assert parse_csv(header_only + '"SET","1.0"\n') == ([], 1)


def test_probe_bytes_and_replies() -> None:
    assert encode_command([b"SET", b"k", b""]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
    assert reply_error(b"-ERR rkv does not support 'incr' yet") == (
        "ERR rkv does not support 'incr' yet"
    )
    assert reply_error(b"!21") == "(blob error)"
    for ok in (b"+OK", b"+PONG", b":1", b"$3", b"$-1", b"_"):
        assert reply_error(ok) is None


def test_figures_per_op_and_cores() -> None:
    f = figures(ops=20_000, elapsed_s=10.0, gen_cpu_s=2.0, srv_cpu_s={"rkv0": 3.0, "rkv1": 1.0})
    assert f["gen_us_per_op"] == 100.0
    assert f["srv_us_per_op"] == 200.0  # summed over the nodes
    assert f["gen_cores"] == 0.2
    assert f["srv_cores"] == 0.4
    assert f["generator_bound"] is False
    assert figures(ops=10, elapsed_s=1.0, gen_cpu_s=0.7, srv_cpu_s={})["generator_bound"]
    empty = figures(ops=0, elapsed_s=1.0, gen_cpu_s=math.nan, srv_cpu_s={})
    assert empty["gen_us_per_op"] is None and empty["srv_us_per_op"] is None
    assert empty["gen_cpu_s"] is None and empty["gen_cores"] is None


def test_table_marks_unsupported_failed_and_generator_bound() -> None:
    rows = [
        {
            "target": "redis-server",
            "generator": "redis-benchmark",
            "test": "SET",
            "supported": True,
            "ops_per_s": 4831.0,
            "p50_ms": 3.527,
            "p99_ms": 13.1,
            "gen_us_per_op": 20.6,
            "srv_us_per_op": 20.0,
            "gen_cores": 0.7,
            "generator_bound": True,
        },
        {
            "target": "rkv leader",
            "generator": "redis-benchmark",
            "test": "INCR",
            "supported": False,
            "note": "ERR rkv does not support 'incr' yet",
        },
        {"target": "rkv follower", "generator": "redis-benchmark", "test": "GET", "error": "x"},
    ]
    lines = format_table(rows).splitlines()
    assert len(lines) == 5 and lines[0].split()[:3] == ["target", "generator", "test"]
    assert "4831" in lines[2] and "3.527" in lines[2] and "GEN-BOUND" in lines[2]
    assert "not supported: ERR rkv does not support 'incr'" in lines[3]
    assert "4831" not in lines[3] and "FAILED  x" in lines[4]


def test_native_row_from_a_load_point() -> None:
    h = Histogram()
    for us in (1000, 2000, 3000):
        h.record(us)
    merged = WorkerResult(ops=3, errors=0, elapsed_s=1.0, cpu_s=0.003, hist=h)
    p = load_point(
        system="rkv",
        config="raw",
        version="0",
        workload="put",
        value_size=3,
        clients=50,
        procs=1,
        duration_s=1.0,
        run=1,
        merged=merged,
        server_cpu_s={"rkv0": 0.006},
        generator="raw",
    )
    r = native_row(p, "rkv native")
    assert r["generator"] == "rkv:raw" and r["test"] == "PUT" and r["requests"] == 3
    assert r["gen_us_per_op"] == 1000.0 and r["srv_us_per_op"] == 2000.0
    assert r["ops_per_s"] == 3.0 and r["supported"] is True


def test_resp_command_line_defaults_are_the_issue_17_command() -> None:
    a = build_parser().parse_args(["resp"])
    assert (a.clients, a.requests, a.size, a.keys) == (50, 100_000, [3], 1)
    assert a.tests == ["ping", "set", "get", "incr", "mset"]
    assert a.native == ["rkv", "rkv:raw"]
    a = build_parser().parse_args(["resp", "--clients", "8", "--tests", "set,get"])
    assert a.clients == 8 and a.tests == ["set", "get"]
