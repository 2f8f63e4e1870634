"""/livez, /readyz and /metrics over real HTTP on an in-process cluster, and the tiny HTTP
server's own behaviour (bad requests, limits)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import rkv
from rkv.config import NodeConfig
from rkv.errors import ExitCode
from rkv.http import http_get as get
from rkv.node import NodeStartError, run_node

from .conftest import addrs_of, cluster, configs, free_ports, wait_leader


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return page[(name, tuple(sorted(labels.items())))]


async def test_health_and_metrics_move_after_writes(tmp_path: Path) -> None:
    async with cluster(configs(tmp_path)) as nodes:
        leader = await wait_leader(nodes)
        for n in nodes:
            assert n.http_port
            assert await get("127.0.0.1", n.http_port, "/livez") == (200, b"ok\n")
        # readiness needs applied >= commit on each node: followers may lag a moment
        with trio.fail_after(5):
            while True:
                codes = [(await get("127.0.0.1", n.http_port or 0, "/readyz"))[0] for n in nodes]
                if codes == [200, 200, 200]:
                    break
                await trio.sleep(0.05)
        port = leader.http_port or 0
        status, body = await get("127.0.0.1", port, "/metrics")
        assert status == 200
        before = samples(body)
        assert value(before, "rkv_role", role="leader") == 1.0
        assert value(before, "rkv_role", role="follower") == 0.0
        assert value(before, "rkv_is_leader") == 1.0
        assert value(before, "rkv_term") >= 1
        assert value(before, "rkv_voters") == 3.0 and value(before, "rkv_learners") == 0.0

        async with rkv.connect(addrs_of(nodes)) as c:
            for i in range(20):
                await c.put(f"k{i}", f"v{i}")
            # a put is answered once committed: a linearizable read waits for the apply
            assert await c.get("k19") == b"v19"
        status, body = await get("127.0.0.1", port, "/metrics")
        after = samples(body)
        assert value(after, "rkv_proposals_total") - value(before, "rkv_proposals_total") >= 20
        assert (
            value(after, "rkv_commit_latency_seconds_count")
            - value(before, "rkv_commit_latency_seconds_count")
            == 20
        )
        assert value(after, "rkv_applied_index") >= value(before, "rkv_applied_index") + 20
        assert value(after, "rkv_commit_index") >= value(after, "rkv_applied_index")
        assert value(after, "rkv_last_index") >= value(after, "rkv_commit_index")
        assert value(after, "rkv_log_entries") >= 20
        assert value(after, "rkv_kv_keys") == 20
        assert value(after, "rkv_snapshot_index") == 0
        assert value(after, "rkv_save_latency_seconds_count") > value(
            before, "rkv_save_latency_seconds_count"
        )
        assert (
            value(after, "rkv_apply_batch_entries_sum")
            - value(before, "rkv_apply_batch_entries_sum")
            >= 20
        )
        for f in nodes:
            if f is leader:
                continue
            sent = value(after, "rkv_peer_sent_bytes_total", peer=f.cfg.id)
            assert sent > value(before, "rkv_peer_sent_bytes_total", peer=f.cfg.id)
            assert value(after, "rkv_peer_received_messages_total", peer=f.cfg.id) > 0
            assert value(after, "rkv_peer_dropped_frames_total", peer=f.cfg.id) >= 0
            assert value(after, "rkv_peer_connected", peer=f.cfg.id) == 1.0
        # connections (README "Limits under abuse"): both followers' links are peers
        assert value(after, "rkv_connections", state="peer") >= 2
        assert value(after, "rkv_connections_accepted_total") >= 3
        for limit in ("max_connections", "per_source"):
            assert value(after, "rkv_connections_shed_total", reason=limit) == 0
            assert value(after, "rkv_connections_refused_total", reason=limit) == 0
        assert value(after, "rkv_connections_closed_total", reason="handshake_timeout") == 0
        # a follower's view
        f = next(n for n in nodes if n is not leader)
        fpage = samples((await get("127.0.0.1", f.http_port or 0, "/metrics"))[1])
        assert value(fpage, "rkv_role", role="follower") == 1.0
        assert value(fpage, "rkv_leader_known") == 1.0
        assert value(fpage, "rkv_peer_received_bytes_total", peer=leader.cfg.id) > 0


async def test_readyz_is_503_on_a_leaderless_node(tmp_path: Path) -> None:
    # One node of a three-node cluster whose peers never start: no leader, ever.
    cfg = configs(tmp_path)[0]
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_node, cfg)
        await trio.sleep(0.5)  # well past an election timeout
        port = node.http_port or 0
        assert await get("127.0.0.1", port, "/livez") == (200, b"ok\n")
        status, body = await get("127.0.0.1", port, "/readyz")
        assert status == 503
        assert body == b"no leader known\n"
        page = samples((await get("127.0.0.1", port, "/metrics"))[1])
        assert value(page, "rkv_leader_known") == 0.0
        assert value(page, "rkv_is_leader") == 0.0
        nursery.cancel_scope.cancel()


async def test_http_off_by_default(tmp_path: Path) -> None:
    cfg = configs(tmp_path, 1, http_port=None)[0]
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_node, cfg)
        assert node.http_port is None
        nursery.cancel_scope.cancel()


def test_http_port_is_validated() -> None:
    with pytest.raises(ValueError, match="http_port"):
        NodeConfig.create("127.0.0.1:7000", http_port=70000)


async def test_http_port_in_use_fails_the_node(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")  # someone holds it
    try:
        cfg = configs(tmp_path, 1, http_port=port)[0]
        with pytest.raises(NodeStartError) as info:
            await run_node(cfg)
        assert info.value.code == ExitCode.PORT_IN_USE
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_livez_fails_when_the_raft_loop_is_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rkv.node.health

    monkeypatch.setattr(rkv.node.health, "LIVENESS_STALL", 0.3)
    cfg = configs(tmp_path, 1)[0]
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_node, cfg)
        port = node.http_port or 0
        assert (await get("127.0.0.1", port, "/livez"))[0] == 200
        stuck = trio.Event()

        async def hang() -> None:  # a Ready whose fsync never returns
            stuck.set()
            await trio.sleep_forever()

        monkeypatch.setattr(node.raft.ready, "handle", hang)
        monkeypatch.setattr(node.replica, "has_ready", lambda: True)
        with trio.fail_after(5):
            await stuck.wait()
        assert (await get("127.0.0.1", port, "/livez"))[0] == 200  # not yet
        await trio.sleep(0.5)
        status, body = await get("127.0.0.1", port, "/livez")
        assert status == 503 and body.startswith(b"raft loop stalled for "), body
        nursery.cancel_scope.cancel()
