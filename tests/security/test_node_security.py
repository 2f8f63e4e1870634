"""A 3-node in-process cluster with a cluster token: clients and peers must prove it.

Also: the hello checks that stay in force behind the token (foreign cluster id, unknown
node, a hello naming another node than the one authenticated), with a positive control
showing that the same forged Raft message is acted on once everything checks out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from rkv.client import Client
from rkv.codec import message_to_wire
from rkv.errors import AuthError
from rkv.net import auth
from rkv.net.stream import open_framed
from rkv.node import Node
from rkv.raft.types import Message, MessageType

from .conftest import TOKEN, WRONG, cluster, configs, wait_leader


async def test_token_cluster_serves_clients_with_the_token_only(tmp_path: Path) -> None:
    async with cluster(configs(tmp_path, cluster_token=TOKEN)) as nodes:
        await wait_leader(nodes)
        addrs = [n.cfg.id for n in nodes]
        with trio.fail_after(15):
            async with Client(addrs, token=TOKEN) as c:
                await c.put(b"k", b"v")
                assert await c.get(b"k") == b"v"
            for token in (WRONG, None):
                # Refused at once (no retrying until the deadline), with the node's reason.
                with trio.fail_after(3), pytest.raises(AuthError) as info:
                    async with Client(addrs, token=token, timeout=30) as c:
                        await c.get(b"k")
                assert "token" in info.value.msg
        # Every node replicated the write made with the token.
        with trio.fail_after(5):
            while any(n.store.get(b"k") != b"v" for n in nodes):
                await trio.sleep(0.02)


def forged_heartbeat(frm: str, to: str, term: int) -> dict[str, Any]:
    msg = Message(type=MessageType.HEARTBEAT, to=to, frm=frm, term=term)
    return {"t": "raft", "m": [message_to_wire(msg)]}


async def forge(
    node: Node, token: str | None, role: str, hello: dict[str, Any], term: int
) -> str | None:
    """Connect to `node` as a would-be peer and send a high-term heartbeat; returns the
    error code the node closed the connection with (None: no error, frame taken)."""
    fs = await open_framed("127.0.0.1", node.port)
    async with fs:
        with trio.fail_after(5):
            if token is not None:
                try:
                    await auth.client_handshake(fs, token, role)
                except auth.AuthFailed:
                    return "auth_failed"
            await fs.send({"t": "hello", **hello})
            await fs.send(forged_heartbeat(hello.get("node") or role, node.cfg.id, term))
            with trio.move_on_after(0.5):
                while (f := await fs.receive()) is not None:
                    if f["t"] == "error":
                        return str(f["code"])
    return None


async def test_forged_peers_are_refused(tmp_path: Path) -> None:
    async with cluster(configs(tmp_path, cluster_token=TOKEN)) as nodes:
        leader = await wait_leader(nodes)
        target, member = [n for n in nodes if n is not leader]
        cid, m = target.cfg.cluster_id, member.cfg.id
        term = target.status()["term"]
        rows = [
            # (what, token, authenticated role, hello, expected refusal)
            ("no token", None, m, {"cluster": cid, "node": m}, "auth_failed"),
            ("wrong token", WRONG, m, {"cluster": cid, "node": m}, "auth_failed"),
            ("foreign cluster", TOKEN, m, {"cluster": "rkv-other", "node": m}, "wrong_cluster"),
            (
                "hello names another node",
                TOKEN,
                leader.cfg.id,
                {"cluster": cid, "node": m},
                "bad_hello",
            ),
        ]
        for what, token, role, hello, expected in rows:
            got = await forge(target, token, role, hello, term + 100)
            assert got == expected, what
            assert target.status()["term"] < term + 100, f"{what}: forged message was stepped"
        # A token holder whose id is outside the configuration is heard (the cluster's
        # configuration may be newer than this node's), but cannot start an election here.
        fs = await open_framed("127.0.0.1", target.port)
        async with fs:
            with trio.fail_after(5):
                await auth.client_handshake(fs, TOKEN, "127.0.0.1:1")
                await fs.send({"t": "hello", "cluster": cid, "node": "127.0.0.1:1"})
                vote = Message(
                    MessageType.VOTE, to=target.cfg.id, frm="127.0.0.1:1", term=term + 100
                )
                await fs.send({"t": "raft", "m": [message_to_wire(vote)]})
            with trio.move_on_after(0.5):
                await fs.receive()
        assert target.status()["term"] < term + 100, "a non-member's vote request was stepped"
        # Positive control: with the token and a consistent hello the same message is stepped
        # (so the refusals above are what kept it out).
        assert await forge(target, TOKEN, m, {"cluster": cid, "node": m}, term + 100) is None
        with trio.fail_after(5):
            while target.status()["term"] < term + 100:
                await trio.sleep(0.02)
