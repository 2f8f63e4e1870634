"""The node's partition hooks: off by default (bad_request), opt-in via NodeConfig or
RKV_FAULT_INJECTION=1, and when on they really drop Raft traffic (a leader cut off from its
peers, in either direction, loses leadership; healing brings it back as a follower)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from rkv.config import NodeConfig
from rkv.nemesis.cluster import RPC_ERRORS, rpc_call
from rkv.net.rpc import RemoteError
from rkv.node import FAULT_INJECTION_ENV, Node
from rkv.raft.types import Role
from rkv.testing import free_ports, local_configs, wait_leader
from rkv.testing import running_cluster as cluster

ROOT = Path(__file__).resolve().parents[2]
CID = b"nemesis-hooks-01"


def configs(tmp: Path, n: int, **kw: Any) -> list[NodeConfig]:
    return local_configs(tmp, n, **kw)


async def fault(node: Node, drop_to: Any = (), drop_from: Any = ()) -> dict[str, Any]:
    frame = {"t": "fault", "drop_to": list(drop_to), "drop_from": list(drop_from)}
    return await rpc_call(node.cfg.advertise, frame, timeout=5.0)


def test_fault_injection_is_off_by_default(tmp_path: Path) -> None:
    cfg = NodeConfig.create("127.0.0.1:7001", [], data_dir=tmp_path)
    assert cfg.fault_injection is False
    with pytest.raises(ValueError, match="fault_injection"):
        NodeConfig.create("127.0.0.1:7001", [], data_dir=tmp_path, fault_injection="yes")


async def test_disabled_node_refuses_fault_requests(tmp_path: Path) -> None:
    async with cluster(configs(tmp_path, 3)) as nodes:
        leader = await wait_leader(nodes)
        others = [n.cfg.id for n in nodes if n is not leader]
        with pytest.raises(RemoteError) as info:
            await fault(leader, others, others)
        assert info.value.code == "bad_request"
        assert "disabled" in info.value.msg
        # and nothing was dropped: the leader keeps leading
        await trio.sleep(1.0)
        assert leader.replica.role == Role.LEADER
        assert leader.statistics()["fault_dropped_out"] == 0


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ({"drop_to": "127.0.0.1:1"}, "list"),
        ({"drop_to": [1]}, "list"),
        ({"drop_from": ["127.0.0.1:1"]}, "not peers"),
    ],
)
async def test_fault_request_validation(tmp_path: Path, frame: dict[str, Any], why: str) -> None:
    async with cluster(configs(tmp_path, 3, fault_injection=True)) as nodes:
        n = nodes[0]
        with pytest.raises(RemoteError) as info:
            await rpc_call(n.cfg.advertise, {"t": "fault", **frame}, timeout=5.0)
        assert info.value.code == "bad_request"
        assert why in info.value.msg
        self_drop = {"t": "fault", "drop_to": [n.cfg.id], "drop_from": []}
        with pytest.raises(RemoteError):
            await rpc_call(n.cfg.advertise, self_drop, timeout=5.0)


@pytest.mark.parametrize("direction", ["both", "to", "from"])
async def test_partitioned_leader_loses_leadership_and_rejoins(
    tmp_path: Path, direction: str
) -> None:
    async with cluster(configs(tmp_path, 3, fault_injection=True)) as nodes:
        old = await wait_leader(nodes)
        term0 = old.replica.raw.status().term
        others = [n.cfg.id for n in nodes if n is not old]
        drop_to = others if direction in ("both", "to") else []
        drop_from = others if direction in ("both", "from") else []
        reply = await fault(old, drop_to, drop_from)
        assert reply["drop_to"] == sorted(drop_to) and reply["drop_from"] == sorted(drop_from)
        with trio.fail_after(15):
            while old.replica.role == Role.LEADER:
                await trio.sleep(0.05)
        rest = [n for n in nodes if n is not old]
        with trio.fail_after(15):
            while not any(n.replica.role == Role.LEADER for n in rest):
                await trio.sleep(0.05)
        new = next(n for n in rest if n.replica.role == Role.LEADER)
        assert new.replica.raw.status().term > term0
        stats = old.statistics()
        if drop_to:
            assert stats["fault_dropped_out"] > 0
        if drop_from:
            assert stats["fault_dropped_in"] > 0
        # While cut off, the old leader cannot get a write committed itself: a write through
        # it fails, or (once it follows the new leader: it still hears it when only its
        # outbound traffic is cut) is forwarded there over a client connection, which the
        # Raft-only fault hooks leave up, and committed by the new leader.
        put = {"t": "put", "c": CID, "s": 1, "k": b"k", "val": b"v"}
        try:
            reply = await rpc_call(old.cfg.advertise, put, timeout=5.0)
        except RemoteError as e:
            assert e.code in ("not_leader", "unavailable", "timeout")
        else:
            assert reply["leader_addr"] != old.cfg.advertise, reply

        healed = await fault(old)
        assert healed["drop_to"] == [] and healed["drop_from"] == []
        leader = await wait_leader(nodes)
        await rpc_call(leader.cfg.advertise, {**put, "s": 2}, timeout=5.0)
        with trio.fail_after(10):
            while old.store.get(b"k") != b"v":
                await trio.sleep(0.05)


def _serve(port: int, data: Path, env_value: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_INJECTION_ENV}
    env["PYTHONPATH"] = str(ROOT)
    if env_value is not None:
        env[FAULT_INJECTION_ENV] = env_value
    args = [sys.executable, "-m", "rkv", "serve", "--port", str(port), "--data-dir", str(data)]
    return subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.e2e
async def test_serve_reads_the_environment_variable_once(tmp_path: Path) -> None:
    """Only RKV_FAULT_INJECTION=1 enables the hooks of a `python -m rkv serve` process."""
    table = {None: False, "0": False, "true": False, "1": True}
    ports = free_ports(len(table))
    procs = [_serve(p, tmp_path / str(p), v) for p, v in zip(ports, table, strict=True)]
    try:
        for port, (value, enabled) in zip(ports, table.items(), strict=True):
            addr = f"127.0.0.1:{port}"
            with trio.fail_after(30):
                while True:
                    try:
                        await rpc_call(addr, {"t": "status"}, timeout=1.0)
                        break
                    except RPC_ERRORS:
                        await trio.sleep(0.1)
            frame = {"t": "fault", "drop_to": [], "drop_from": []}
            if enabled:
                assert (await rpc_call(addr, frame))["t"] == "ok"
            else:
                with pytest.raises(RemoteError) as info:
                    await rpc_call(addr, frame)
                assert info.value.code == "bad_request", value
    finally:
        for p in procs:
            p.kill()
            p.wait()
