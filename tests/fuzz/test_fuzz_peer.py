"""Peer traffic from strangers and garbage: hello frames with random fields and one-way
"raft" frames with random message lists. The node must not crash, must not count a handler
failure, and garbage from a non-member must not move its term.

Only one node of a three-node cluster runs, so nothing else changes its term (PreVote: a
lone node campaigns without raising it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.node import Node

from .harness import KNOWN_CODES, SyncConn, configs, running
from .test_fuzz_rpc import scalars, values

# message-shaped maps: the wire keys of rkv.codec with random values
MSG_KEYS = ["y", "to", "fr", "tm", "lt", "i", "e", "c", "r", "h", "x", "s"]
messages = st.dictionaries(st.sampled_from(MSG_KEYS), values, max_size=8) | values
raft_frames = st.fixed_dictionaries(
    {"v": st.just(1), "t": st.just("raft"), "m": st.lists(messages, max_size=4) | values}
)


def term_of(node: Node) -> int:
    return node.replica.raw.status().term


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, 7, b"bytes", 1.5, True])
async def test_hello_with_wrong_typed_fields_is_refused_not_fatal(tmp_path: Path, bad: Any) -> None:
    """Regression: a hello whose node was a list raised TypeError (unhashable) in the hello
    hook, which ended the whole server."""
    async with running(configs(tmp_path, 3)[:1]) as (node,):

        def go() -> None:
            for field in ("node", "cluster"):
                with SyncConn(node.port) as c:
                    answer = c.call({"v": 1, "t": "hello", "id": 1, field: bad})
                    assert answer is not None and answer["code"] == "bad_hello", answer
            with SyncConn(node.port) as c:
                assert c.call({"v": 1, "t": "status", "id": 2})["t"] == "ok"  # type: ignore[index]

        await trio.to_thread.run_sync(go)
        assert node.server_stats.handler_errors == 0


async def test_garbage_peer_traffic(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, 3)
    member = cfgs[1].id
    async with running(cfgs[:1]) as (node,):
        await trio.sleep(0.3)
        term = term_of(node)

        @settings(
            max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(
            hello=st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"v": st.just(1), "t": st.just("hello")},
                    optional={
                        "node": scalars | st.just(member),
                        "cluster": scalars | st.just(cfgs[0].cluster_id),
                    },
                ),
            ),
            frames=st.lists(raft_frames, min_size=1, max_size=4),
        )
        def run(hello: dict[str, Any] | None, frames: list[dict[str, Any]]) -> None:
            with SyncConn(node.port) as c:
                if hello is not None:
                    answer = c.call({**hello, "id": 1})
                    assert answer is not None
                    if answer["t"] == "error":
                        assert answer["code"] in KNOWN_CODES, answer
                        return  # refused and closed
                for f in frames:
                    c.send(f)  # one-way: no answer
                # a request after them: answered, so the connection survived the garbage
                answer = c.call({"v": 1, "t": "status", "id": 2})
                assert answer is not None and answer["t"] == "ok", answer
                from_member = hello is not None and hello.get("node") == member
                if not from_member:
                    assert answer["term"] == term, "garbage from a non-member moved the term"

        await trio.to_thread.run_sync(run)
        await trio.sleep(0.2)
        assert node.server_stats.handler_errors == 0
        assert node.loop_running
        with SyncConn(node.port) as c:
            assert (await trio.to_thread.run_sync(c.call, {"v": 1, "t": "status", "id": 1}))[
                "t"
            ] == "ok"  # type: ignore[index]
