"""Replica comparison and scrub on real nodes (in process: three run_node, real LMDB,
loopback): `rkv check` agrees on a healthy cluster while writes go on; a bit flipped in a
stopped follower's record is found by its scrub (no read needed); a divergence written into a
stopped follower's state with a valid checksum is reported by `rkv check`, naming that
member, and by the leader's periodic comparison (a warning, metrics, the leader degraded),
whether the follower's own scrub or a later write over the record brings it to light.
(The store's side: tests/store/test_state_hash.py, tests/store/test_scrub.py.)"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import pytest
import trio
from typer.testing import CliRunner

import rkv
from rkv.cli import Exit, app
from rkv.http import http_get
from rkv.node import Node
from rkv.store import kv as kvdb
from rkv.store.commands import Record
from rkv.store.seal import seal

from .test_integrity_node import _live, flip, metric
from .test_node_cluster import configs, free_ports
from .test_snapshot_node import Cluster, caught_up

FAST = {
    "http_port": 0,
    "compare_interval_seconds": 0.3,
    "scrub_records_per_second": 5000.0,
}
WRITES = 150  # past two checkpoints (every 64 indexes): comparable while writes go on


async def rkv_cli(*args: str) -> Any:
    """The `rkv` CLI in this process (its own trio loop, in a worker thread)."""
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        lambda: runner.invoke(app, list(args), catch_exceptions=False)
    )


async def page(node: Node) -> bytes:
    _, body = await http_get("127.0.0.1", node.http_port or 0, "/metrics")
    return body


async def fill(addrs: list[str]) -> None:
    async with rkv.connect(addrs) as c:
        await c.put("victim", b"V" * 100)
        await c.upload("photo", io.BytesIO(b"P" * 9000), chunk_size=5000)
        for i in range(WRITES):
            await c.put(f"k{i % 13}", b"%d" % i)


async def settled(nodes: list[Node]) -> None:
    """Every node applied the same index, in its store (applies are batched)."""
    await caught_up(nodes)
    with trio.fail_after(10):
        while len({n.store.state_hash()[0] for n in nodes}) != 1:
            await trio.sleep(0.02)


async def test_check_agrees_on_a_healthy_cluster_while_writes_go_on(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, free_ports(3), **FAST)
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        nodes = [await cl.start(i) for i in range(3)]
        leader = await cl.leader()
        follower = next(n for n in nodes if n is not leader)
        addrs = [n.cfg.id for n in nodes]
        await fill(addrs)
        await settled(nodes)

        r = await rkv_cli("--addr", follower.cfg.id, "check")
        assert r.exit_code == Exit.OK, r.output
        assert r.output.count("agrees") == 3, r.output

        # while writes go on: compared at an index every member has applied
        stop = trio.Event()

        async def writer() -> None:
            async with rkv.connect(addrs) as c:
                i = 0
                while not stop.is_set():
                    await c.put(f"busy{i % 50}", b"x" * 50)
                    i += 1

        nursery.start_soon(writer)
        async with rkv.connect([follower.cfg.id]) as c:
            for _ in range(5):
                result = await c.check()
                assert [m["verdict"] for m in result["members"]] == ["agrees"] * 3, result
                assert result["node"] == follower.cfg.id
                assert len({m["hash"] for m in result["members"]}) == 1
                await trio.sleep(0.2)
        stop.set()

        r = await rkv_cli("--addr", leader.cfg.id, "check", "--json")
        assert r.exit_code == Exit.OK, r.output
        out = json.loads(r.output)
        assert {m["node"] for m in out["members"]} == set(addrs)

        with trio.fail_after(20):  # the leader compared, every node finished a scrub pass
            while True:
                pages = [await page(n) for n in nodes]
                passes = [metric(p, "rkv_scrub_passes_total") for p in pages]
                compared = metric(await page(leader), "rkv_replica_comparisons_total")
                if min(passes) >= 1 and compared >= 2:
                    break
                await trio.sleep(0.1)
        for n in nodes:
            p = await page(n)
            assert metric(p, "rkv_scrub_records_total") > WRITES // 13
            assert metric(p, "rkv_scrub_errors_total") == 0
            assert metric(p, "rkv_scrub_last_pass_seconds") >= 0
            assert metric(p, "rkv_replica_mismatch") == 0
            assert n.integrity.degraded is None
            assert n.scrubber.last_verdict is not None
            assert n.scrubber.last_verdict.status in ("ok", "skipped")
        nursery.cancel_scope.cancel()


async def test_scrub_finds_a_flipped_bit_without_a_read(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, free_ports(3), **FAST)
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        nodes = [await cl.start(i) for i in range(3)]
        leader = await cl.leader()
        await fill([n.cfg.id for n in nodes])
        await settled(nodes)
        f = next(i for i, n in cl.nodes.items() if n is not leader)
        await cl.stop(f)
        flip(cfgs[f].data_dir, b"kv", b"victim", b"VVVV")
        follower = await cl.start(f)
        with trio.fail_after(20):
            while follower.integrity.degraded is None:
                await trio.sleep(0.05)
        assert follower.integrity.degraded.startswith("integrity error: key b'victim'")
        p = await page(follower)
        assert metric(p, "rkv_scrub_errors_total") >= 1
        assert metric(p, "rkv_degraded") == 1
        assert follower.readiness()[0] is False
        for n in cl.nodes.values():
            if n is not follower:
                assert n.integrity.degraded is None
        nursery.cancel_scope.cancel()


def write_record(data_dir: Path, key: bytes, rec: Record) -> None:
    """Store `rec` under `key` in a stopped node's live kv, with a valid checksum: the kind
    of divergence no read can see."""
    env = lmdb.open(str(data_dir), max_dbs=12)
    try:
        with env.begin(write=True) as txn:
            txn.put(key, seal(key, kvdb.encode_record(rec)), db=_live(env, txn, b"kv"))
    finally:
        env.close()


@dataclass(frozen=True)
class Divergence:
    """How the divergent record comes to light on the follower."""

    scrub: bool
    """The follower's scrub runs (it finds its records do not hash to its running hash)."""
    write_over: bool
    """A client writes the key again (the follower's running hash moves off the others')."""


DIVERGENCES = {
    "found by the follower's scrub": Divergence(scrub=True, write_over=False),
    "brought out by a write over it (no scrub)": Divergence(scrub=False, write_over=True),
}


@pytest.mark.parametrize("name", DIVERGENCES)
async def test_a_divergent_follower_is_named_by_check_and_the_leader(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    how = DIVERGENCES[name]
    caplog.set_level(logging.INFO, logger="rkv.node")
    scrub = FAST["scrub_records_per_second"] if how.scrub else 0.0
    cfgs = configs(tmp_path, free_ports(3), **{**FAST, "scrub_records_per_second": scrub})
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        nodes = [await cl.start(i) for i in range(3)]
        leader = await cl.leader()
        addrs = [n.cfg.id for n in nodes]
        await fill(addrs)
        await settled(nodes)
        f = next(i for i, n in cl.nodes.items() if n is not leader)
        real = cl.nodes[f].store.get_record(b"victim")
        assert real is not None
        await cl.stop(f)
        # another value and another version: not what the log says
        write_record(
            cfgs[f].data_dir, b"victim", Record(b"W" * 100, real.create_index, real.mod_index, 7)
        )
        follower = await cl.start(f)
        leader = await cl.leader()
        other = next(n for n in cl.nodes.values() if n not in (leader, follower))
        if how.write_over:
            async with rkv.connect(addrs) as c:
                await c.put("victim", b"again")
            await settled(list(cl.nodes.values()))
        with trio.fail_after(30):  # the leader's periodic comparison raised the alarm
            while leader.integrity.degraded is None:
                await trio.sleep(0.05)
        assert leader.integrity.degraded.startswith("replica mismatch at index")
        assert follower.cfg.id in leader.integrity.degraded
        p = await page(leader)
        assert metric(p, "rkv_replica_mismatch") == 1
        assert metric(p, "rkv_replica_mismatches_total") >= 1
        assert metric(p, "rkv_degraded") == 1
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "replica mismatch: member" in r.getMessage()
        ]
        assert any(follower.cfg.id in w for w in warnings), warnings
        assert (follower.integrity.degraded is not None) == how.scrub  # its scrub noticed

        # rkv check, through the third node: names the follower, exit 17
        r = await rkv_cli("--addr", other.cfg.id, "check")
        assert r.exit_code == Exit.REPLICAS_DIFFER == 17, r.output
        lines = [ln for ln in r.output.splitlines() if follower.cfg.id in ln and "differs" in ln]
        assert lines, r.output
        r = await rkv_cli("--addr", other.cfg.id, "check", "--json")
        verdicts = {m["node"]: m["verdict"] for m in json.loads(r.output)["members"]}
        assert verdicts == {a: "differs" if a == follower.cfg.id else "agrees" for a in addrs}
        nursery.cancel_scope.cancel()
