"""`python -m bench COMMAND ...` (or `./dev bench COMMAND ...`): the benchmark commands.

Commands: setup, compare, load (one point), client-cpu, failover, largefile, scale, disk, snapinstall,
flood, floor, resp, watch-fanout, lease-churn, chart, worker, watcher, flooder and
lease-worker (internal: one load-generator process, one watcher process, one flood process,
one lease generator process). Owns argument parsing only; each command's work lives in its
own module.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from bench.common import RESULTS_DIR


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _strs(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _sizes(text: str) -> list[int]:
    out = []
    for x in _strs(text):
        mult = 1
        low = x.lower()
        for suffix, m in (("kib", 1024), ("k", 1024), ("mib", 1 << 20), ("m", 1 << 20)):
            if low.endswith(suffix):
                low, mult = low[: -len(suffix)], m
                break
        out.append(int(low) * mult)
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="parent of the clusters' data dirs (default: system temp; must be a real disk)",
    )
    p.add_argument("--seed", type=int, default=1)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    sub.add_parser(
        "setup",
        help="install etcd-server, redis-server, redis-tools (apt) and pysyncobj, psutil, "
        "matplotlib, uvloop",
    )

    c = sub.add_parser("compare", help="all systems side by side, fresh cluster per point")
    c.add_argument(
        "--systems",
        type=_strs,
        default=None,
        help="default: rkv,etcd,pysyncobj,pysyncobj:nobatch (etcd: the raw uvloop generator; "
        "etcd:trio: the trio HTTP/1.1 one; rkv:raw: rkv's frames without rkv's client)",
    )
    c.add_argument("--clients", type=_ints, default=[1, 16, 64])
    c.add_argument("--workloads", type=_strs, default=["put", "get", "mixed"])
    c.add_argument("--sizes", type=_sizes, default=[100, 65536], help="value sizes, e.g. 100,64k")
    c.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    c.add_argument("--warmup", type=float, default=2.0)
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--procs", type=int, default=1, help="load-generator processes")
    c.add_argument("--keys", type=int, default=1000, help="key space (prefilled for reads)")
    c.add_argument("--no-chart", action="store_true")
    _common(c)

    ld = sub.add_parser("load", help="one point against one system (quick check)")
    ld.add_argument("system", help="rkv[:raw], etcd[:trio], pysyncobj[:default|nobatch|journal]")
    ld.add_argument("--clients", type=int, default=16)
    ld.add_argument("--workload", default="put", choices=["put", "get", "mixed"])
    ld.add_argument("--size", type=_sizes, default=[100])
    ld.add_argument("--duration", type=float, default=5.0)
    ld.add_argument("--warmup", type=float, default=1.0)
    ld.add_argument("--procs", type=int, default=1)
    ld.add_argument("--keys", type=int, default=1000)
    _common(ld)

    f = sub.add_parser("failover", help="kill -9 the leader, time to the first successful write")
    f.add_argument("--systems", type=_strs, default=["rkv", "etcd", "pysyncobj:nobatch"])
    f.add_argument("--trials", type=int, default=10)
    f.add_argument("--probe-interval", type=float, default=0.01, help="seconds between probes")
    f.add_argument("--timeout", type=float, default=30.0, help="give up a trial after this")
    _common(f)

    lf = sub.add_parser("largefile", help="upload and download one large file (MB/s)")
    lf.add_argument("--systems", type=_strs, default=["rkv", "etcd", "pysyncobj:nobatch"])
    lf.add_argument("--size", type=_sizes, default=[256 << 20], help="file size, e.g. 256m")
    lf.add_argument("--chunk", type=_sizes, default=[1 << 20], help="chunk size for KV systems")
    lf.add_argument("--window", type=int, default=4, help="chunks in flight")
    lf.add_argument("--runs", type=int, default=1)
    lf.add_argument("--timeout", type=float, default=1800.0, help="give up a transfer after")
    _common(lf)

    sc = sub.add_parser("scale", help="write N keys, RSS per node, restart-to-serving time")
    sc.add_argument("--systems", type=_strs, default=["rkv", "etcd", "pysyncobj:journal"])
    sc.add_argument("--keys", type=int, default=1_000_000)
    sc.add_argument("--size", type=_sizes, default=[100])
    sc.add_argument("--clients", type=int, default=64)
    sc.add_argument("--procs", type=int, default=1)
    sc.add_argument("--fill-timeout", type=float, default=7200.0, help="give up a fill after")
    _common(sc)

    dk = sub.add_parser("disk", help="rkv: data dir size while the same keys are overwritten")
    dk.add_argument("--writes", type=int, default=1_000_000)
    dk.add_argument("--keys", type=int, default=1000)
    dk.add_argument("--size", type=_sizes, default=[100])
    dk.add_argument("--clients", type=int, default=64)
    dk.add_argument("--procs", type=int, default=1)
    dk.add_argument("--every", type=int, default=50_000, help="sample every N committed entries")
    dk.add_argument(
        "--rkv-args", default="", help='more `rkv serve` options, e.g. "--snapshot-entries 5000"'
    )
    dk.add_argument("--fill-timeout", type=float, default=7200.0, help="give up after")
    _common(dk)

    si = sub.add_parser(
        "snapinstall", help="rkv: fill N keys, then time a lagging follower's snapshot install"
    )
    si.add_argument("--keys", type=int, default=1_000_000)
    si.add_argument("--size", type=_sizes, default=[100])
    si.add_argument("--clients", type=int, default=64)
    si.add_argument("--procs", type=int, default=1)
    si.add_argument(
        "--extra-writes",
        type=int,
        default=25_000,
        help="writes while the follower is down (must exceed the leader's compaction bound)",
    )
    si.add_argument("--rkv-args", default="", help="more `rkv serve` options")
    si.add_argument("--sample-every", type=int, default=50_000, help="fill progress samples")
    si.add_argument("--fill-timeout", type=float, default=7200.0, help="give up a fill after")
    si.add_argument("--catchup-timeout", type=float, default=1800.0)
    _common(si)

    fl = sub.add_parser(
        "flood", help="rkv: puts without and during a connection flood on the leader (issue 19)"
    )
    fl.add_argument("--connections", type=int, default=2000, help="flood connections held")
    fl.add_argument(
        "--reopen-after", type=float, default=1.0, help="seconds before a closed one reopens"
    )
    fl.add_argument("--clients", type=int, default=16)
    fl.add_argument("--procs", type=int, default=1)
    fl.add_argument("--size", type=_sizes, default=[100])
    fl.add_argument("--keys", type=int, default=1000)
    fl.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    fl.add_argument("--warmup", type=float, default=2.0)
    fl.add_argument("--rkv-args", default="", help="more `rkv serve` options")
    _common(fl)

    fo = sub.add_parser(
        "floor",
        help="what the machine charges: LMDB commit, 4 KiB append+fdatasync, loopback round trip",
    )
    fo.add_argument(
        "--samples", type=int, default=1000, help="commits (appends) per writer and kind"
    )
    fo.add_argument("--round-trips", type=int, default=5000, help="loopback ping-pongs")
    fo.add_argument("--warmup", type=int, default=50, help="untimed operations first")
    _common(fo)

    la = sub.add_parser(
        "latency",
        help="where a 1-client put's time goes: the nodes' stage timings, turns, fsyncs, CPU",
    )
    la.add_argument("--puts", type=int, default=2000, help="measured puts per run")
    la.add_argument("--warmup-puts", type=int, default=200, help="untimed puts first")
    la.add_argument("--size", type=_sizes, default=[100])
    la.add_argument("--runs", type=int, default=1, help="fresh clusters per tree")
    la.add_argument(
        "--trees",
        default="",
        help="A/B: NAME=DIR,... source trees the nodes run from, alternated run by run "
        "(default: this tree)",
    )
    la.add_argument(
        "--strace",
        action="store_true",
        help="count the leader's and a follower's syscalls per put (strace -c -f; slows them)",
    )
    _common(la)

    rs = sub.add_parser(
        "resp",
        help="redis-benchmark on a 3-node rkv cluster (leader, follower) and on a durable "
        "redis-server, and rkv's native client, in one run (issue 17)",
    )
    rs.add_argument("--clients", type=int, default=50, help="redis-benchmark -c, native clients")
    rs.add_argument("--requests", type=int, default=100_000, help="redis-benchmark -n per test")
    rs.add_argument(
        "--tests",
        type=_strs,
        default=["ping", "set", "get", "incr", "mset"],
        help="redis-benchmark -t names (one process each; ping is ping_inline and ping_mbulk)",
    )
    rs.add_argument("--size", type=_sizes, default=[3], help="value size (redis-benchmark -d)")
    rs.add_argument(
        "--keys",
        type=int,
        default=1,
        help="key space: 1 is redis-benchmark's default (one key); N > 1 passes -r N",
    )
    rs.add_argument(
        "--native",
        type=_strs,
        default=["rkv", "rkv:raw"],
        help="native-client series run for put and get on the same cluster (rkv, rkv:raw)",
    )
    rs.add_argument("--duration", type=float, default=5.0, help="native: measured seconds")
    rs.add_argument("--warmup", type=float, default=1.0, help="native: warmup seconds")
    rs.add_argument(
        "--timeout", type=float, default=900.0, help="give up one redis-benchmark after this"
    )
    _common(rs)

    wf = sub.add_parser(
        "watch-fanout",
        help="rkv: N watchers on one prefix, a steady write rate, event delivery latency "
        "(write ack -> event) and the servers' CPU per event (issue 16)",
    )
    wf.add_argument("--watchers", type=int, default=1000)
    wf.add_argument("--procs", type=int, default=4, help="watcher processes")
    wf.add_argument("--rate", type=float, default=50.0, help="writes per second")
    wf.add_argument("--size", type=_sizes, default=[100], help="value size")
    wf.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    wf.add_argument("--warmup", type=float, default=2.0)
    _common(wf)
    lc = sub.add_parser(
        "lease-churn",
        help="rkv leases: grant/put/keepalive/revoke cycles, many live leases kept alive, "
        "leases left to expire (issue 16)",
    )
    lc.add_argument("--clients", type=int, default=16, help="churn: closed-loop clients")
    lc.add_argument("--procs", type=int, default=2, help="churn: generator processes")
    lc.add_argument("--ttl", type=float, default=10.0, help="churn: lease TTL (seconds)")
    lc.add_argument("--duration", type=float, default=10.0, help="churn: measured seconds")
    lc.add_argument("--warmup", type=float, default=2.0, help="churn and live: warmup seconds")
    lc.add_argument("--live-leases", type=int, default=10_000, help="live: leases kept alive")
    lc.add_argument("--keepers", type=int, default=2, help="live: keeper processes")
    lc.add_argument("--live-ttl", type=float, default=30.0, help="live: their TTL (seconds)")
    lc.add_argument(
        "--live-duration", type=float, default=30.0, help="live: measured seconds (>= ttl/3)"
    )
    lc.add_argument("--lapse-leases", type=int, default=2000, help="lapse: leases to expire")
    lc.add_argument("--lapse-ttl", type=float, default=5.0, help="lapse: their TTL (seconds)")
    lc.add_argument(
        "--seq-rounds", type=int, default=8, help="sequential: rounds of 25 requests per kind"
    )
    _common(lc)

    lw = sub.add_parser("lease-worker", help=argparse.SUPPRESS)
    lw.add_argument("--args", required=True)

    cc = sub.add_parser(
        "client-cpu",
        help="rkv's client library's CPU per op (N tasks on one Client; a Client per task; "
        "the raw generator) on one cluster",
    )
    cc.add_argument("--series", type=_strs, default=["client", "rkv", "rkv:raw"])
    cc.add_argument("--clients", type=_ints, default=[1, 16, 64])
    cc.add_argument("--workloads", type=_strs, default=["put", "get"])
    cc.add_argument("--size", type=_sizes, default=[100])
    cc.add_argument("--duration", type=float, default=5.0, help="measured seconds per point")
    cc.add_argument("--warmup", type=float, default=1.0)
    cc.add_argument("--runs", type=int, default=3)
    cc.add_argument("--keys", type=int, default=1000, help="key space (prefilled for gets)")
    _common(cc)

    ch = sub.add_parser("chart", help="redraw the chart of a compare results file")
    ch.add_argument("results", type=Path)

    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("--args", required=True)

    wa = sub.add_parser("watcher", help=argparse.SUPPRESS)
    wa.add_argument("--args", required=True)

    fw = sub.add_parser("flooder", help=argparse.SUPPRESS)
    fw.add_argument("--port", type=int, required=True)
    fw.add_argument("--connections", type=int, required=True)
    fw.add_argument("--reopen-after", type=float, default=1.0)
    fw.add_argument("--seconds", type=float, required=True)
    return ap


def _lease_churn_error(args: argparse.Namespace) -> str | None:
    """What lease-churn cannot use in `args`, in one line (None: nothing)."""
    for name in ("clients", "procs", "live_leases", "keepers", "lapse_leases", "seq_rounds"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    for name in ("ttl", "duration", "live_ttl", "live_duration", "lapse_ttl"):
        if not getattr(args, name) > 0:
            return f"--{name.replace('_', '-')} must be positive"
    if args.warmup < 0:
        return "--warmup must not be negative"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "worker":
        from bench.loadgen import worker_entry

        worker_entry(args.args)
        return 0
    if args.cmd == "watcher":
        from bench.watchers import watcher_entry

        return watcher_entry(args.args)
    if args.cmd == "lease-worker":
        from bench.leasegen import gen_entry

        gen_entry(args.args)
        return 0
    if args.cmd == "flooder":
        from bench.flood import flooder_main

        return flooder_main(args.port, args.connections, args.reopen_after, args.seconds)
    if args.cmd == "setup":
        script = Path(__file__).resolve().parent / "setup.sh"
        env = dict(os.environ, PYTHON=sys.executable)
        return subprocess.call(["bash", str(script)], env=env)
    if args.cmd == "compare":
        from bench.compare import DEFAULT_SERIES, compare

        compare(
            series=args.systems or list(DEFAULT_SERIES),
            clients=args.clients,
            workloads=args.workloads,
            sizes=args.sizes,
            duration=args.duration,
            warmup=args.warmup,
            runs=args.runs,
            procs=args.procs,
            keys=args.keys,
            seed=args.seed,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
            chart=not args.no_chart,
        )
        return 0
    if args.cmd == "load":
        from bench.compare import _line, measure_point

        p = measure_point(
            args.system,
            workload=args.workload,
            value_size=args.size[0],
            clients=args.clients,
            procs=args.procs,
            duration=args.duration,
            warmup=args.warmup,
            keys=args.keys,
            run=1,
            seed=args.seed,
            tmp_dir=args.tmp_dir,
        )
        print(_line(p))
        return 0
    if args.cmd == "failover":
        from bench.failover import failover

        failover(
            series=args.systems,
            trials=args.trials,
            probe_interval=args.probe_interval,
            timeout=args.timeout,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
        )
        return 0
    if args.cmd == "largefile":
        from bench.largefile import largefile

        largefile(
            series=args.systems,
            size=args.size[0],
            chunk=args.chunk[0],
            window=args.window,
            runs=args.runs,
            seed=args.seed,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
            timeout=args.timeout,
        )
        return 0
    if args.cmd == "scale":
        from bench.scale import scale

        scale(
            series=args.systems,
            keys=args.keys,
            value_size=args.size[0],
            clients=args.clients,
            procs=args.procs,
            seed=args.seed,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
            fill_timeout=args.fill_timeout,
        )
        return 0
    if args.cmd == "disk":
        from bench.disk import disk

        disk(
            writes=args.writes,
            keys=args.keys,
            value_size=args.size[0],
            clients=args.clients,
            procs=args.procs,
            every=args.every,
            seed=args.seed,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
            extra_args=shlex.split(args.rkv_args),
            fill_timeout=args.fill_timeout,
        )
        return 0
    if args.cmd == "snapinstall":
        from bench.snapinstall import snapinstall

        snapinstall(
            keys=args.keys,
            value_size=args.size[0],
            clients=args.clients,
            procs=args.procs,
            extra_writes=args.extra_writes,
            sample_every=args.sample_every,
            seed=args.seed,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
            extra_args=shlex.split(args.rkv_args),
            fill_timeout=args.fill_timeout,
            catchup_timeout=args.catchup_timeout,
        )
        return 0
    if args.cmd == "flood":
        from bench.flood import flood

        flood(
            connections=args.connections,
            reopen_after=args.reopen_after,
            clients=args.clients,
            procs=args.procs,
            value_size=args.size[0],
            keys=args.keys,
            duration=args.duration,
            warmup=args.warmup,
            seed=args.seed,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
            extra_args=shlex.split(args.rkv_args),
        )
        return 0
    if args.cmd == "client-cpu":
        from bench.clientcpu import SERIES, client_cpu

        bad = [s for s in args.series if s not in SERIES]
        if bad:
            print(
                f"error: unknown --series {','.join(bad)} (one of {','.join(SERIES)})",
                file=sys.stderr,
            )
            return 2
        client_cpu(
            series=args.series,
            clients=args.clients,
            workloads=args.workloads,
            value_size=args.size[0],
            duration=args.duration,
            warmup=args.warmup,
            runs=args.runs,
            keys=args.keys,
            seed=args.seed,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
        )
        return 0
    if args.cmd == "floor":
        from bench.floor import floor

        floor(
            samples=args.samples,
            round_trips=args.round_trips,
            warmup=args.warmup,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
        )
        return 0
    if args.cmd == "latency":
        from bench.latency import latency, parse_trees

        latency(
            puts=args.puts,
            warmup=args.warmup_puts,
            size=args.size[0],
            runs=args.runs,
            trees=parse_trees(args.trees),
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
            strace=args.strace,
        )
        return 0
    if args.cmd == "resp":
        from bench.resp import resp

        for n in args.native:
            if n not in ("rkv", "rkv:raw"):
                raise SystemExit(f"--native takes rkv and rkv:raw, not {n!r}")
        resp(
            clients=args.clients,
            requests=args.requests,
            tests=args.tests,
            size=args.size[0],
            keys=args.keys,
            native=args.native,
            duration=args.duration,
            warmup=args.warmup,
            timeout=args.timeout,
            seed=args.seed,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
        )
        return 0
    if args.cmd == "watch-fanout":
        from bench.watchfanout import watch_fanout

        if min(args.watchers, args.procs) < 1 or min(args.rate, args.duration) <= 0:
            raise SystemExit("error: --watchers, --procs, --rate and --duration must be > 0")
        if args.warmup < 0:
            raise SystemExit("error: --warmup must be >= 0")
        watch_fanout(
            watchers=args.watchers,
            procs=args.procs,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            value_size=args.size[0],
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
        )
        return 0
    if args.cmd == "lease-churn":
        from bench.leasechurn import lease_churn

        bad = _lease_churn_error(args)
        if bad is not None:
            print(f"lease-churn: {bad}", file=sys.stderr)
            return 2
        lease_churn(
            clients=args.clients,
            procs=args.procs,
            ttl=args.ttl,
            duration=args.duration,
            warmup=args.warmup,
            live_leases=args.live_leases,
            keepers=args.keepers,
            live_ttl=args.live_ttl,
            live_duration=args.live_duration,
            lapse_leases=args.lapse_leases,
            lapse_ttl=args.lapse_ttl,
            seq_rounds=args.seq_rounds,
            out_dir=args.out_dir,
            tmp_dir=args.tmp_dir,
        )
        return 0
    if args.cmd == "chart":
        from bench.chart import plot_compare

        data = json.loads(args.results.read_text())
        print(plot_compare(data["summary"], args.results.with_suffix(".png")))
        return 0
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
