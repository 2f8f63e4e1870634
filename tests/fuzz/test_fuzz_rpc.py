"""Fuzz every request handler of a live in-process node with hypothesis.

Frames carry random, wrong-typed, missing and oversized fields (and sometimes a wrong
protocol version or an unknown type). Every frame must get a valid answer or an error frame
with a known code (never "internal"); the server must not crash; afterwards a well-formed
put/get on a fresh connection works and the keys written before the fuzzing are intact.

Hypothesis is synchronous, so it runs in a worker thread with a blocking client while the
node runs on the test's trio loop.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.node import Node

from .harness import KNOWN_CODES, SyncConn, configs, running, wait_leader

MAX_FRAME = 1 << 20
SMALL_FRAMES: dict[str, Any] = {
    "max_frame": MAX_FRAME,
    "chunk_size": MAX_FRAME // 4,
    "snapshot_chunk_bytes": MAX_FRAME // 4,
}

# msgpack-able values of every kind, nested
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**64 - 1, -(2**63)]),
    st.floats(allow_nan=True),
    st.text(max_size=24),
    st.binary(max_size=48),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
# big but inside the frame cap (MAX_FRAME): oversized keys, values, ids
big = st.sampled_from([401, 4097, 70_000, 600_000]).flatmap(
    lambda n: st.sampled_from([b"x" * n, "y" * n, [0] * min(n, 50_000)])
)

# plausible values per field name (the contract's types), so that handlers get past their
# first check and fuzz the later ones too
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "c": st.binary(min_size=1, max_size=16),
    "s": st.integers(min_value=1, max_value=1 << 40),
    "k": st.binary(min_size=1, max_size=16).map(lambda b: b"fuzz/" + b),
    "val": st.binary(max_size=64),
    "exp": st.none() | st.binary(max_size=8),
    "u": st.binary(min_size=1, max_size=16),
    "n": st.integers(min_value=0, max_value=4),
    "data": st.binary(max_size=64),
    "size": st.integers(min_value=0, max_value=1 << 20),
    "chunks": st.integers(min_value=0, max_value=4),
    "sha": st.binary(min_size=32, max_size=32),
    "stale": st.booleans(),
    "p": st.none() | st.binary(max_size=6),
    "limit": st.integers(min_value=-2, max_value=20_000),
    "drop_to": st.lists(st.text(max_size=20), max_size=2),
    "drop_from": st.lists(st.text(max_size=20), max_size=2),
    "to": st.none() | st.text(max_size=20),
    "b": st.binary(max_size=16),
    "off": st.integers(min_value=0, max_value=1 << 20),
    "len": st.integers(min_value=0, max_value=1 << 20),
    "x": st.binary(max_size=8),
    "seq": st.integers(min_value=0, max_value=3),
    "term": st.integers(min_value=0, max_value=3),
    # a snapshot chunk's meta (a list), a get's or scan's meta (a bool: records too)
    "meta": st.booleans() | st.lists(scalars, max_size=3),
    "after": st.none() | st.binary(min_size=1, max_size=8).map(lambda b: b"fuzz/" + b),
    "done": st.booleans(),
    "records": st.integers(min_value=0, max_value=3),
}
FIELDS: dict[str, list[str]] = {
    "put": ["c", "s", "k", "val"],
    "delete": ["c", "s", "k"],
    "cas": ["c", "s", "k", "exp", "val"],
    "file_chunk": ["c", "s", "k", "u", "n", "data"],
    "file_commit": ["c", "s", "k", "u", "size", "chunks", "sha"],
    "file_delete": ["c", "s", "k"],
    "file_abort": ["c", "s", "u"],
    "get": ["k", "stale", "meta"],
    "scan": ["p", "limit", "stale", "after", "meta"],
    "file_meta": ["k", "stale"],
    "file_read": ["k", "n", "sha"],
    "status": [],
    "fault": ["drop_to", "drop_from"],
    "transfer": ["to"],
    "backup_begin": [],
    "backup_read": ["b", "off", "len"],
    "backup_end": ["b"],
    "snap": ["x", "seq", "term", "meta", "done", "data", "chunks", "records"],
    "hello": ["cluster", "node"],
}


def norev(reply: dict[str, object]) -> dict[str, object]:
    """The reply without its revision (get, put and delete answer with `rev`, an int >= 1)."""
    rest = dict(reply)
    rev = rest.pop("rev", None)
    assert rev is None or (type(rev) is int and rev >= 1), reply
    return rest


@st.composite
def frames(draw: st.DrawFn) -> dict[str, Any]:
    pick = draw(st.integers(0, 9))
    t = draw(
        st.sampled_from(sorted(FIELDS))
        if pick < 8
        else st.text(max_size=12)
        if pick < 9
        else scalars
    )
    names = FIELDS.get(t, []) if isinstance(t, str) else []
    extra = draw(st.lists(st.sampled_from(sorted(GOOD)) | st.text(max_size=4), max_size=2))
    extra = [e for e in extra if e not in names and e not in ("v", "t", "id")]
    frame: dict[str, Any] = {"v": 1, "t": t}
    for name in [*names, *extra]:
        choice = draw(st.sampled_from(["good"] * 6 + ["missing", "random", "big"]))
        if choice == "missing":
            continue
        if choice == "good" and name in GOOD:
            frame[name] = draw(GOOD[name])
        elif choice == "big":
            frame[name] = draw(big)
        else:
            frame[name] = draw(values)
    if draw(st.integers(0, 15)) == 0:
        frame["v"] = draw(values)
    return frame


def check_answer(sent: dict[str, Any], answer: dict[str, Any] | None) -> bool:
    """Assert the answer is acceptable; True if the connection is still usable."""
    assert answer is not None, f"connection closed without an answer to {sent!r:.300}"
    t = answer.get("t")
    assert t in ("ok", "error"), answer
    if t == "error":
        assert answer.get("code") in KNOWN_CODES, (sent, answer)
        assert isinstance(answer.get("msg"), str) and "\n" not in answer["msg"]
    return "id" in answer  # an error without id is the server's last word


def baseline(port: int) -> dict[bytes, bytes]:
    data = {b"base/%d" % i: b"value-%d" % i for i in range(20)}
    with SyncConn(port) as c:
        for seq, (k, v) in enumerate(data.items(), 1):
            assert norev(
                c.call(
                    {
                        "v": 1,
                        "t": "put",
                        "id": seq,
                        "c": b"baseline-client1",
                        "s": seq,
                        "k": k,
                        "val": v,
                    }
                )
            ) == {"t": "ok", "id": seq}
    return data


def still_works(port: int, write_port: int, data: dict[bytes, bytes]) -> None:
    with SyncConn(write_port) as c:
        put = {
            "v": 1,
            "t": "put",
            "id": 1,
            "c": b"after-fuzz-cli01",
            "s": 1,
            "k": b"after",
            "val": b"ok",
        }
        assert norev(c.call(put)) == {"t": "ok", "id": 1}
    with SyncConn(port) as c:
        assert norev(c.call({"v": 1, "t": "get", "id": 2, "k": b"after"})) == {
            "t": "ok",
            "id": 2,
            "val": b"ok",
        }
        for i, (k, v) in enumerate(data.items(), 3):
            assert norev(c.call({"v": 1, "t": "get", "id": i, "k": k})) == {
                "t": "ok",
                "id": i,
                "val": v,
            }


async def fuzz_node(node: Node, nodes: list[Node], examples: int, min_ok: int) -> None:
    leader = await wait_leader(nodes)
    data = await trio.to_thread.run_sync(baseline, leader.port)
    conn: list[SyncConn] = []
    seen: Counter[tuple[str, str | None]] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(frames(), min_size=1, max_size=4))
    def run(batch: list[dict[str, Any]]) -> None:
        for rid, frame in enumerate(batch, 1):
            if not conn:
                conn.append(SyncConn(node.port))
            frame = {**frame, "id": rid}
            answer = conn[0].call(frame)
            seen[(str(frame["t"])[:12], answer.get("code", "ok") if answer else None)] += 1
            if not check_answer(frame, answer):
                conn.pop().close()

    try:
        await trio.to_thread.run_sync(run)
    finally:
        for c in conn:
            c.close()
    # the fuzzing reached the handlers, not only the framing checks
    assert sum(n for (_, code), n in seen.items() if code == "ok") >= min_ok, seen
    assert node.server_stats.handler_errors == 0
    leader = await wait_leader(nodes)  # a fuzzed transfer may have moved leadership
    await trio.to_thread.run_sync(still_works, node.port, leader.port, data)


async def test_fuzz_every_handler_single_node(tmp_path: Path) -> None:
    async with running(configs(tmp_path, 1, **SMALL_FRAMES)) as nodes:
        leader = await wait_leader(nodes)
        await fuzz_node(leader, nodes, examples=150, min_ok=15)


async def test_fuzz_every_handler_on_a_follower(tmp_path: Path) -> None:
    """A follower answers writes with not_leader and forwards reads: fuzz that path too."""
    async with running(configs(tmp_path, 3, **SMALL_FRAMES)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        await fuzz_node(follower, nodes, examples=60, min_ok=3)
