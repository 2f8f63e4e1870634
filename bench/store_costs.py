"""Store-level costs, no cluster: `python -m bench.store_costs apply | scrub [options]`.

apply: LmdbStore.apply per put, batches of 256 puts (with and without client sessions),
  best and median of 5 runs; --tracking: with a scrub pass open meanwhile (every apply hands
  its changes to it, as on a node whose scrub runs). Run it with PYTHONPATH pointing at two
  trees to compare them.
commit: LmdbStore.save_and_apply (the node's group commit: log entries and their apply in one
  durable transaction) per put, --per puts per transaction, with the apply recording its
  changes for watchers as a node's does (--no-watch: not), in --dir (a tmpfs shows the CPU
  cost, a disk adds its fsyncs); best and median of --runs runs. The durable watch history
  (rkv.store.history) is written by that transaction: --ab runs each time with and without
  it (its writes stubbed out), interleaved in one process, and reports both and the
  difference of the medians; --cpu counts the process's CPU time instead of wall time (less
  noisy on a shared machine).
scrub: a scrub pass over a store of --keys keys (100-byte values), --sessions client
  sessions and a file of --file-mib MiB: records/s and MiB/s unpaced (pieces of 1000
  records, back to back), then --paced-seconds of the node's scrub task at its defaults
  (records/s achieved, CPU used).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

from rkv.codec import FileChunk, FileCommit, Put, Request, encode_request
from rkv.raft.types import Entry, HardState
from rkv.store import env as env_module
from rkv.store import open_store


def _store(d: str) -> Any:
    return open_store(d, cluster_id="c", node_id="n", voters=["n"], map_size=1 << 30)


def apply_cost(
    with_session: bool, batches: int = 200, per: int = 256, tracking: bool = False
) -> float:
    d = tempfile.mkdtemp(prefix="rkv-bench-apply-")
    s = _store(d)
    scrub = s.scrub_pass() if tracking else None
    try:
        batch_list, i = [], 0
        for _ in range(batches):
            batch = []
            for j in range(per):
                i += 1
                cid = (b"client%04d" % (j % 64)).ljust(16, b"x") if with_session else b""
                key = b"key%08d" % ((i * 7919) % 50000)
                data = encode_request(Request(cid, i if cid else 0, Put(key, os.urandom(100))))
                batch.append(Entry(1, i, data))
            batch_list.append(batch)
        s.save(None, [e for b in batch_list for e in b])
        t = time.perf_counter()
        for b in batch_list:
            s.apply(b)
        return (time.perf_counter() - t) / (batches * per) * 1e6
    finally:
        if scrub is not None:
            scrub.close()
        s.close()
        shutil.rmtree(d)


def fill(d: str, keys: int, sessions: int, file_mib: int) -> Any:
    s = _store(d)
    es: list[Entry] = []
    for i in range(keys):
        cid = b"client-%06d" % (i % sessions) if sessions else b""
        req = Request(cid, i + 1 if cid else 0, Put(b"key%08d" % i, os.urandom(100)))
        es.append(Entry(1, len(es) + 1, encode_request(req)))
    blob = b""
    for n in range(file_mib):
        chunk = os.urandom(1 << 20)
        blob += chunk
        es.append(
            Entry(1, len(es) + 1, encode_request(Request(b"", 0, FileChunk(b"f", b"u", n, chunk))))
        )
    if file_mib:
        commit = FileCommit(b"f", b"u", len(blob), file_mib, hashlib.sha256(blob).digest())
        es.append(Entry(1, len(es) + 1, encode_request(Request(b"", 0, commit))))
    for lo in range(0, len(es), 1000):
        part = es[lo : lo + 1000]
        s.save(HardState(1, "", part[-1].index), part)
        s.apply(part)
    return s


def scrub_rates(keys: int, sessions: int, file_mib: int, paced_seconds: float) -> None:
    import trio

    from rkv.integrity import IntegrityWatch
    from rkv.scrubber import Scrubber

    d = tempfile.mkdtemp(prefix="rkv-bench-scrub-")
    s = fill(d, keys, sessions, file_mib)
    try:
        t, cpu = time.perf_counter(), time.process_time()
        with s.scrub_pass() as p:
            records = nbytes = 0
            while True:
                chunk, verdict = p.step(1000, 16 << 20)
                records, nbytes = records + chunk.records, nbytes + chunk.bytes
                if verdict is not None:
                    break
        el, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(
            f"unpaced: {records} records, {nbytes / 2**20:.1f} MiB in {el:.2f} s: "
            f"{records / el:,.0f} records/s, {nbytes / 2**20 / el:.1f} MiB/s "
            f"(CPU {cpu / el:.0%}), verdict {verdict.status}"
        )

        async def paced() -> Scrubber:
            import logging

            log = logging.getLogger("bench")
            sc = Scrubber(
                "n",
                s,
                IntegrityWatch("n", log),
                log,
                records_per_second=1000.0,
                bytes_per_second=8 << 20,
            )
            with trio.move_on_after(paced_seconds):
                await sc.run_pass()
            return sc

        t, cpu = time.perf_counter(), time.process_time()
        sc = trio.run(paced)
        el, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(
            f"default pace (1000 records/s, 8 MiB/s): {sc.records} records in {el:.1f} s: "
            f"{sc.records / el:,.0f} records/s (CPU {cpu / el:.1%})"
        )
    finally:
        s.close()
        shutil.rmtree(d)


def commit_cost(
    per: int, puts: int, watch: bool, where: str | None, *, history: bool = True, cpu: bool = False
) -> float:
    clock = time.process_time if cpu else time.perf_counter
    d = tempfile.mkdtemp(prefix="rkv-bench-commit-", dir=where)
    s = _store(d)
    s.record_changes = watch
    stubbed = not history and hasattr(env_module, "watchdb")  # a tree before the history: none
    if stubbed:  # the A of the A/B: the apply without its history record
        real_append = env_module.watchdb.append
        env_module.watchdb.append = lambda txn, db, meta_db, meta, changes, bounds: meta
    try:
        batches = []
        for b in range(puts // per):
            batch = []
            for j in range(per):
                i = b * per + j + 1
                key = b"key%08d" % ((i * 7919) % 50000)  # overwrites: each put has a prev
                data = encode_request(Request(b"", 0, Put(key, os.urandom(100))))
                batch.append(Entry(1, i, data))
            batches.append(batch)
        t = clock()
        for batch in batches:
            s.save_and_apply(HardState(1, "n", batch[-1].index), batch, batch)
            if watch:
                s.take_changes()  # as the node's watch hub does after each turn
        return (clock() - t) / (len(batches) * per) * 1e6
    finally:
        if stubbed:
            env_module.watchdb.append = real_append
        s.close()
        shutil.rmtree(d)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.store_costs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("apply").add_argument("--tracking", action="store_true")
    cm = sub.add_parser("commit")
    cm.add_argument("--per", type=int, default=1, help="puts per transaction")
    cm.add_argument("--puts", type=int, default=4000)
    cm.add_argument("--runs", type=int, default=5)
    cm.add_argument("--no-watch", dest="watch", action="store_false")
    cm.add_argument("--dir", default=None, help="where the store goes (default: $TMPDIR)")
    cm.add_argument("--ab", action="store_true", help="with and without the history, interleaved")
    cm.add_argument("--cpu", action="store_true", help="process CPU time, not wall time")
    sc = sub.add_parser("scrub")
    sc.add_argument("--keys", type=int, default=100_000)
    sc.add_argument("--sessions", type=int, default=1000)
    sc.add_argument("--file-mib", type=int, default=64)
    sc.add_argument("--paced-seconds", type=float, default=10.0)
    a = ap.parse_args()
    if a.cmd == "apply":
        for ws in (False, True):
            r = sorted(apply_cost(ws, tracking=a.tracking) for _ in range(5))
            print(f"apply, sessions={ws}: us/put best {r[0]:.2f} median {r[2]:.2f}")
    elif a.cmd == "commit":
        if a.per < 1 or a.puts < a.per or a.runs < 1:
            ap.error("need --per >= 1, --puts >= --per, --runs >= 1")
        modes = (False, True) if a.ab else (True,)
        got: dict[bool, list[float]] = {m: [] for m in modes}
        for _ in range(a.runs):
            for m in modes:
                got[m].append(commit_cost(a.per, a.puts, a.watch, a.dir, history=m, cpu=a.cpu))
        what = "cpu" if a.cpu else "wall"
        for m, r in got.items():
            r.sort()
            print(
                f"commit, {a.per} put(s)/txn, watch={a.watch}, history={m}: {what} us/put "
                f"best {r[0]:.2f} median {r[len(r) // 2]:.2f}"
            )
        if a.ab:
            off, on = (statistics.median(got[m]) for m in modes)
            print(f"history adds {on - off:+.2f} us/put ({(on - off) / off:+.1%}) (medians)")
    else:
        scrub_rates(a.keys, a.sessions, a.file_mib, a.paced_seconds)


if __name__ == "__main__":
    main()
