"""Lease churn (issue 16): what leases cost a fresh 3-node rkv cluster, in four phases, on
three clusters of their own.

- sequential (on the churn phase's cluster, first): one client, one request at a time,
  blocks of plain put, put with a lease, keepalive, grant, revoke and get interleaved
  (bench.leaseclient): what a lease operation costs next to a put in the same run.
- churn: `clients` closed-loop clients over `procs` generator processes (bench.leasegen),
  each looping grant(ttl) -> put a key with the lease -> keepalive -> revoke: p50/p99 of each
  operation and of the whole cycle, cycles/s, each generator's and the servers' CPU per
  cycle.
- live: `live_leases` leases granted by `keepers` processes and kept alive at ttl/3: the
  keepalives/s and their latency, the leader's (and each node's) CPU, the checkpoint
  entries and leases the leader proposed (its /metrics), leases lost (should be none).
- lapse: `lapse_leases` leases, one key each, granted and then left to expire, from this
  process: expiry throughput (leases expired per second) and the delay from each lease's
  deadline (when its grant was sent + TTL: the promise's lower bound) to the watch event of
  its key's delete, and any key gone before its deadline (the promise broken).

Owns: the phases, the generator processes' handshake (spawn, wait for `ready`, hand them the
window's start, read their JSON), the CPU and /metrics readings around the windows, the
printed table and the results file. Must not: generate churn or keep
leases alive itself (bench.leasegen) or summarize histograms other than through bench.stats.
"""

from __future__ import annotations

import math
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import trio

from bench.common import envelope, fresh_cluster, host_info, series_meta, stamp, write_json
from bench.drivers import Driver
from bench.leaseclient import SEQ_KINDS, lapse, sequential
from bench.leasegen import OPS, GenArgs, GenResult
from bench.loadgen import split
from bench.nodewatch import scrape
from bench.procs import cpu_delta, pids_cpu
from bench.stats import GENERATOR_BOUND_CORES, Histogram, cores, generator_bound, per_op_us

READY_TIMEOUT = 600.0
"""How long generators may take to connect and grant their leases."""
LEASE_METRICS = (
    "rkv_lease_checkpoints_proposed_total",
    "rkv_lease_checkpoint_entries_proposed_total",
    "rkv_lease_expiries_proposed_total",
    "rkv_leases",
)


def _readline(f: IO[bytes], deadline: float) -> str:
    """One line of a generator's stdout (unbuffered pipe), or RuntimeError past `deadline`."""
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([f], [], [], left)[0]:
            raise RuntimeError("lease generator not ready in time")
        chunk = os.read(f.fileno(), 1)
        if not chunk:
            raise RuntimeError("lease generator exited early")
        buf += chunk
    return buf.decode().strip()


def _leader_index(driver: Driver) -> int:
    i = trio.run(driver.leader)
    if i is None:
        raise RuntimeError("no leader")
    return i


def _metrics(driver: Any) -> list[dict[str, float]]:
    out = []
    for i in range(len(driver.servers)):
        m = scrape(driver.metrics_url(i))
        out.append({k: m.get(k, 0.0) for k in LEASE_METRICS})
    return out


def run_generators(
    driver: Driver, gens: list[GenArgs], warmup: float, duration: float
) -> dict[str, Any]:
    """Start `gens`, wait until each is ready, run the window, return their merged figures
    and the servers' and generators' CPU over it, and each node's lease metrics' change."""
    nodes = [(s.name, s.pid) for s in driver.servers]
    procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
    with tempfile.TemporaryDirectory(prefix="rkv-bench-lease-") as tmp:
        try:
            for w, g in enumerate(gens):
                err = open(Path(tmp) / f"g{w}.err", "w+b")  # noqa: SIM115 - closed below
                p = subprocess.Popen(
                    g.to_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                    bufsize=0, cwd=Path(__file__).resolve().parents[1],
                )  # fmt: skip
                procs.append((p, err))
            deadline = time.monotonic() + READY_TIMEOUT
            for p, err in procs:
                assert p.stdout is not None
                try:
                    line = _readline(p.stdout, deadline)
                except RuntimeError as e:
                    err.seek(0)
                    tail = err.read().decode(errors="replace").strip().splitlines()
                    raise RuntimeError(f"{e}: {tail[-1] if tail else 'no output'}") from None
                if line != "ready":
                    raise RuntimeError(f"lease generator said {line!r}")
            start = time.time() + warmup
            for p, _ in procs:
                assert p.stdin is not None
                p.stdin.write(f"{start!r}\n".encode())
                p.stdin.flush()
            time.sleep(max(0.0, start - time.time()))
            m0, c0 = _metrics(driver), pids_cpu(nodes)
            time.sleep(max(0.0, start + duration - time.time()))
            m1, c1 = _metrics(driver), pids_cpu(nodes)
            results = []
            for p, err in procs:
                out, _ = p.communicate(timeout=60 + 2 * duration)
                if p.returncode != 0 or not out.strip():
                    err.seek(0)
                    tail = err.read().decode(errors="replace").strip().splitlines()
                    raise RuntimeError(
                        f"lease generator failed (exit {p.returncode}): "
                        f"{tail[-1] if tail else 'no output'}"
                    )
                results.append(GenResult.from_json(_last_json(out)))
        finally:
            for p, err in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                err.close()
    hists: dict[str, Histogram] = {}
    for r in results:
        for k, h in r.hists.items():
            hists.setdefault(k, Histogram()).merge(h)
    gen_cores = [cores(r.cpu_s, r.elapsed_s) for r in results]
    server_cpu = cpu_delta(c0, c1)
    return {
        "hists": hists,
        "cycles": sum(r.cycles for r in results),
        "errors": sum(r.errors for r in results),
        "error_kinds": _sum_kinds(r.error_kinds for r in results),
        "lost": sum(r.lost for r in results),
        "behind_s": max(r.behind_s for r in results),
        "generator_cpu_s": [round(r.cpu_s, 3) for r in results],
        "generator_cores": gen_cores,
        "generator_bound": generator_bound(gen_cores),
        "servers_cpu_s": {k: round(v, 3) for k, v in server_cpu.items()},
        "metrics_delta": [{k: m1[i][k] - m0[i][k] for k in LEASE_METRICS} for i in range(len(m0))],
        "metrics_end": m1,
    }


def _last_json(out: bytes) -> dict[str, Any]:
    import json

    line = out.decode().strip().splitlines()[-1]
    data: dict[str, Any] = json.loads(line)
    return data


def _sum_kinds(kinds: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        for name, n in k.items():
            out[name] = out.get(name, 0) + n
    return out


def _gens(
    driver: Driver, mode: str, total: int, parts: int, ttl: float, duration: float
) -> list[GenArgs]:
    """`total` clients (churn) or leases (keep) split over `parts` generator processes."""
    out, off = [], 0
    for n in split(total, max(1, min(parts, total))):
        if mode == "churn":
            out.append(GenArgs(driver.addrs(), mode, n, off, ttl, duration))
        else:
            out.append(GenArgs(driver.addrs(), mode, 1, off, ttl, duration, n))
        off += n
    return out


def churn_phase(
    driver: Driver, *, clients: int, procs: int, ttl: float, warmup: float, duration: float
) -> dict[str, Any]:
    gens = _gens(driver, "churn", clients, procs, ttl, duration)
    r = run_generators(driver, gens, warmup, duration)
    cpu = sum(r["servers_cpu_s"].values())
    return {
        "clients": clients,
        "procs": len(gens),
        "ttl_s": ttl,
        "duration_s": duration,
        "cycles": r["cycles"],
        "cycles_per_s": round(r["cycles"] / duration, 2),
        "latency_ms": {k: r["hists"][k].summary_ms() for k in (*OPS, "cycle")},
        "errors": r["errors"],
        "error_kinds": r["error_kinds"],
        "servers_cpu_s": r["servers_cpu_s"],
        "servers_cpu_us_per_cycle": per_op_us(cpu, r["cycles"]),
        "generator_cpu_us_per_cycle": per_op_us(sum(r["generator_cpu_s"]), r["cycles"]),
        "generator_cores": r["generator_cores"],
        "generator_bound": r["generator_bound"],
    }


def live_phase(
    driver: Driver, *, leases: int, keepers: int, ttl: float, warmup: float, duration: float
) -> dict[str, Any]:
    gens = _gens(driver, "keep", leases, keepers, ttl, duration)
    leader = _leader_index(driver)
    r = run_generators(driver, gens, warmup, duration)
    name = driver.servers[leader].name
    ka = r["hists"]["keepalive"]
    delta = r["metrics_delta"][leader]
    return {
        "leases": leases,
        "keepers": len(gens),
        "ttl_s": ttl,
        "duration_s": duration,
        "leader": name,
        "keepalives_per_s": round(ka.count / duration, 1),
        "keepalive_ms": ka.summary_ms(),
        "renewals_behind_s": round(r["behind_s"], 3),
        "leases_lost": r["lost"],
        "errors": r["errors"],
        "error_kinds": r["error_kinds"],
        "leader_cpu_cores": cores(r["servers_cpu_s"].get(name, math.nan), duration),
        "servers_cpu_s": r["servers_cpu_s"],
        "servers_cpu_us_per_keepalive": per_op_us(sum(r["servers_cpu_s"].values()), ka.count),
        "checkpoint_entries_proposed": delta["rkv_lease_checkpoint_entries_proposed_total"],
        "checkpointed_leases_proposed": delta["rkv_lease_checkpoints_proposed_total"],
        "leader_leases_at_end": r["metrics_end"][leader]["rkv_leases"],
        "generator_cores": r["generator_cores"],
        "generator_bound": r["generator_bound"],
    }


def lapse_phase(driver: Driver, *, leases: int, ttl: float) -> dict[str, Any]:
    leader = _leader_index(driver)
    pid = driver.servers[leader].pid
    c0 = pids_cpu([("leader", pid)])
    out = trio.run(lapse, driver.addrs(), leases, ttl)
    c1 = pids_cpu([("leader", pid)])
    cpu = cpu_delta(c0, c1).get("leader", math.nan)
    out["leader_cpu_us_per_lease"] = per_op_us(cpu, leases)
    out["expiries_proposed"] = _metrics(driver)[leader]["rkv_lease_expiries_proposed_total"]
    return out


def _with_metrics(d: Driver) -> None:
    d.metrics = True  # type: ignore[attr-defined]


def lease_churn(
    *,
    clients: int,
    procs: int,
    ttl: float,
    duration: float,
    warmup: float,
    live_leases: int,
    keepers: int,
    live_ttl: float,
    live_duration: float,
    lapse_leases: int,
    lapse_ttl: float,
    seq_rounds: int,
    out_dir: Path,
    tmp_dir: Path | None,
) -> dict[str, Any]:
    meta = {"host": host_info(tmp_dir), "systems": series_meta(["rkv"])}
    result: dict[str, Any] = {}
    with fresh_cluster("rkv", tmp_dir, configure=_with_metrics) as d:
        result["sequential"] = trio.run(sequential, d.addrs(), seq_rounds)
        result["churn"] = churn_phase(
            d, clients=clients, procs=procs, ttl=ttl, warmup=warmup, duration=duration
        )
    with fresh_cluster("rkv", tmp_dir, configure=_with_metrics) as d:
        result["live"] = live_phase(
            d, leases=live_leases, keepers=keepers, ttl=live_ttl, warmup=warmup,
            duration=live_duration,
        )  # fmt: skip
    with fresh_cluster("rkv", tmp_dir, configure=_with_metrics) as d:
        result["lapse"] = lapse_phase(d, leases=lapse_leases, ttl=lapse_ttl)
    print(format_report(result))
    path = out_dir / f"lease-churn-{stamp()}.json"
    write_json(path, envelope("lease-churn", meta, result=result))
    print(f"results: {path}")
    return result


def _f(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def format_report(r: dict[str, Any]) -> str:
    sq, c, lv, lp = r["sequential"], r["churn"], r["live"], r["lapse"]
    bound = " GENERATOR-BOUND" if c["generator_bound"] else ""
    lines = [
        f"sequential: 1 client, {sq['rounds']} rounds of {sq['block']} of each kind, "
        "interleaved (ms: p50, p99, median of the blocks' p50)",
        *(
            f"  {k:10s} {_f(sq[k]['p50']):>8s} {_f(sq[k]['p99']):>8s} "
            f"{_f(sq[k]['median_block_p50']):>8s}"
            for k in SEQ_KINDS
        ),
        f"churn: {c['clients']} clients over {c['procs']} procs, ttl {c['ttl_s']} s: "
        f"{_f(c['cycles_per_s'], '.1f')} cycles/s, {c['errors']} errors{bound}",
        f"  {'op':10s} {'p50 ms':>8s} {'p99 ms':>8s}",
    ]
    for k in (*OPS, "cycle"):
        s = c["latency_ms"][k]
        lines.append(f"  {k:10s} {_f(s.get('p50')):>8s} {_f(s.get('p99')):>8s}")
    lines.append(
        f"  servers CPU/cycle {_f(c['servers_cpu_us_per_cycle'], '.0f')} us, generators "
        f"{_f(c['generator_cpu_us_per_cycle'], '.0f')} us (cores {c['generator_cores']}; "
        f"bound over {GENERATOR_BOUND_CORES})"
    )
    ka = lv["keepalive_ms"]
    lines += [
        f"live: {lv['leases']} leases (ttl {lv['ttl_s']} s) kept by {lv['keepers']} procs: "
        f"{_f(lv['keepalives_per_s'], '.0f')} keepalives/s, p50 {_f(ka.get('p50'))} "
        f"p99 {_f(ka.get('p99'))} ms, behind {lv['renewals_behind_s']} s, "
        f"lost {lv['leases_lost']}{' GENERATOR-BOUND' if lv['generator_bound'] else ''}",
        f"  leader CPU {_f(lv['leader_cpu_cores'], '.3f')} cores; checkpoints proposed "
        f"{lv['checkpoint_entries_proposed']:.0f} entries / "
        f"{lv['checkpointed_leases_proposed']:.0f} leases in {lv['duration_s']} s",
    ]
    d = lp["delay_ms"]
    lines += [
        f"lapse: {lp['expired']}/{lp['leases']} leases (ttl {lp['ttl_s']} s) expired, "
        f"{_f(lp['expired_per_s'], '.0f')} expired/s over {lp['expiry_span_s']} s "
        f"(granted over {lp['grant_span_s']} s)",
        f"  deadline -> key gone: p50 {_f(d.get('p50'))} p99 {_f(d.get('p99'))} max "
        f"{_f(d.get('max'))} ms; gone before deadline {lp['gone_before_deadline']}; "
        f"leader CPU/lease {_f(lp['leader_cpu_us_per_lease'], '.0f')} us",
    ]
    return "\n".join(lines)
