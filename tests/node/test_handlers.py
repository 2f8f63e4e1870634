"""The client request handlers (rkv.node.handlers) against a fake raft loop and a fake store,
through the inbound dispatch (rkv.node.dispatch) so that each scenario ends in the frame the
client would get: no sockets, no Raft, no LMDB.

Table-driven: a scenario is the raft loop's view (leader, follower knowing a leader, no
leader), the request frame, and what happens to a proposal (its apply result); the check is
the reply frame (or error code and message) and what reached the raft loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from rkv.codec import Cas, Delete, FileAbort, Put, Request, Txn, encode_request, pack
from rkv.config import NodeConfig
from rkv.errors import Unavailable
from rkv.integrity import IntegrityWatch
from rkv.metrics import NodeMetrics
from rkv.node.dispatch import Dispatcher
from rkv.node.handlers import ClientHandlers
from rkv.node.inbox import Frame, Input, Propose, RaftView, Read, Waiter, log
from rkv.raft.types import ConfState, Entry, Role
from rkv.txn import Compare, OpGet, OpIncr

ME, OTHER = "127.0.0.1:7001", "127.0.0.1:7002"
C = b"client-1"


def view(role: Role, leader: str) -> RaftView:
    return RaftView(
        role=role,
        leader=leader,
        leader_addr=leader or None,
        term=3,
        commit=10,
        applied=10,
        last_index=10,
        recovering=False,
        conf=ConfState((ME, OTHER), ()),
    )


LEADER = view(Role.LEADER, ME)
FOLLOWER = view(Role.FOLLOWER, OTHER)
NO_LEADER = view(Role.CANDIDATE, "")


@dataclass
class Result:
    """An apply result as the store gives it (rkv.store: ok, value, error)."""

    ok: bool = True
    value: Any = None
    error: str = ""


@dataclass
class FakeRaft:
    """The raft loop as the handlers see it: a view, and inputs that complete at once."""

    view: RaftView
    result: Any = None
    error: Exception | None = None
    inbox_full: bool = False
    inputs: list[Input] = field(default_factory=list)
    barriers: int = 0

    def offer(self, item: Input) -> bool:
        if self.inbox_full:
            return False
        self.inputs.append(item)
        return True

    async def submit(self, item: Input, w: Waiter, what: str) -> None:
        self.inputs.append(item)
        await trio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        w.entry = Entry(term=2, index=11, data=item.data if isinstance(item, Propose) else b"")
        w.result = self.result

    async def read_barrier(self) -> None:
        self.barriers += 1
        self.inputs.append(Read(Waiter()))
        await trio.lowlevel.checkpoint()


SHA = b"s" * 32


@dataclass
class Manifest:
    size: int
    chunks: int
    sha256: bytes


class FakeStore:
    def __init__(self) -> None:
        self.kv = {b"k": b"v", b"k2": b"v2", b"x": b"y"}
        self.files = {b"f": Manifest(size=5, chunks=1, sha256=SHA)}

    def get(self, key: bytes) -> bytes | None:
        return self.kv.get(key)

    def scan(self, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        return sorted((k, v) for k, v in self.kv.items() if k.startswith(prefix))[:limit]

    def get_revision(self, key: bytes) -> tuple[bytes | None, int]:
        return self.get(key), 10

    def scan_revision(
        self, prefix: bytes, limit: int, after: bytes | None = None
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        items = [(k, v) for k, v in self.scan(prefix, 10_000) if after is None or k > after]
        return items[:limit], 10

    def file_manifest(self, key: bytes) -> Manifest | None:
        return self.files.get(key)

    def read_chunk(self, key: bytes, n: int) -> bytes:
        return b"hello"


class FakeForwarder:
    def __init__(self) -> None:
        self.forwarded: list[Frame] = []

    async def forward(self, frame: Frame, deadline: float) -> Frame:
        self.forwarded.append(frame)
        return {"t": "ok", "forwarded_to": OTHER}


def build(raft: FakeRaft, tmp: Path) -> tuple[Dispatcher, ClientHandlers, FakeForwarder]:
    cfg = NodeConfig.create(ME, [ME, OTHER], data_dir=tmp)
    metrics = NodeMetrics(dict, dict, dict)
    handlers = ClientHandlers(cfg, FakeStore(), raft, metrics)
    forwarder = FakeForwarder()
    dispatch = Dispatcher(
        handlers.routes(),
        None,  # type: ignore[arg-type]  # peers: no raft or snap frames here
        None,  # type: ignore[arg-type]
        forwarder,  # type: ignore[arg-type]
        IntegrityWatch(ME, log),
        forward_to=handlers.forward_to,
        request_timeout=cfg.request_timeout,
    )
    return dispatch, handlers, forwarder


def write(t: str, **fields: Any) -> Frame:
    return {"t": t, "c": C, "s": 1, **fields}


@dataclass
class Case:
    view: RaftView
    frame: Frame
    reply: Frame | None = None
    """The reply frame, exactly; or, for an error:"""
    error: tuple[str, str] | None = None
    """(code, message) of the error frame."""
    result: Any = None
    """The apply result of the proposal (FakeRaft.result)."""
    proposed: bytes | None = None
    """The data of the one proposal that must reach the raft loop."""
    early: bool = False
    barriers: int = 0
    forwarded: bool = False


CASES: dict[str, Case] = {
    "put while leader: proposed, answered at commit": Case(
        LEADER,
        write("put", k=b"k", val=b"v"),
        reply={"t": "ok", "rev": 11},
        proposed=encode_request(Request(C, 1, Put(b"k", b"v"))),
        early=True,
    ),
    "delete while leader: existed from the apply result": Case(
        LEADER,
        write("delete", k=b"k"),
        reply={"t": "ok", "existed": True, "rev": 11},
        result=Result(value=True),
        proposed=encode_request(Request(C, 1, Delete(b"k"))),
    ),
    "cas while leader": Case(
        LEADER,
        write("cas", k=b"k", exp=None, val=b"w"),
        reply={"t": "ok", "swapped": False, "rev": 11},
        result=Result(value=False),
        proposed=encode_request(Request(C, 1, Cas(b"k", None, b"w"))),
    ),
    "file abort names upload u, chunk 0": Case(
        LEADER,
        write("file_abort", u=b"up"),
        reply={"t": "ok", "aborted": True, "rev": 11},
        result=Result(value=True),
        proposed=encode_request(Request(C, 1, FileAbort(b"up", 0))),
    ),
    "txn: the result the state machine kept (its own revision)": Case(
        LEADER,
        write("txn", cmp=[[b"k", 1, 3, 0]], then=[[3, b"k"], [4, b"n", 2]], s=3),
        reply={"t": "ok", "ok": True, "rev": 7, "results": [[b"v", 5, 7, 2], 2]},
        result=Result(value=pack([True, 7, [[b"v", 5, 7, 2], 2]])),
        proposed=encode_request(
            Request(
                C,
                3,
                Txn((Compare(b"k", "version", ">", 0),), (OpGet(b"k"), OpIncr(b"n", 2))),
            )
        ),
    ),
    "txn: an op failed, nothing applied": Case(
        LEADER,
        write("txn", then=[[4, b"k", 1]]),
        error=("bad_request", "value is not an integer or out of range"),
        result=Result(ok=False, error="value is not an integer or out of range"),
    ),
    "txn: a key written twice": Case(
        LEADER,
        write("txn", then=[[0, b"k", b""], [1, b"k"]]),
        error=("bad_request", "txn: key b'k' is written twice in the success ops"),
    ),
    "file delete: existed and its revision": Case(
        LEADER,
        write("file_delete", k=b"f"),
        reply={"t": "ok", "existed": False, "rev": 11},
        result=Result(value=False),
    ),
    "a write the state machine refused": Case(
        LEADER,
        write("file_commit", k=b"f", u=b"up", size=5, chunks=1, sha=SHA),
        error=("bad_request", "missing chunk 0"),
        result=Result(ok=False, error="missing  chunk\n0"),
    ),
    "key not bytes": Case(
        LEADER,
        write("put", k="k", val=b"v"),
        error=("bad_request", "field 'k' must be bytes of 1..400 bytes, got str"),
    ),
    "value missing": Case(
        LEADER,
        write("put", k=b"k"),
        error=("bad_request", "field 'val' is missing from a put request"),
    ),
    "seq zero": Case(
        LEADER,
        write("put", k=b"k", val=b"v", s=0),
        error=("bad_request", "field 's' must be an integer in 1..18446744073709551615, got 0"),
    ),
    "seq a bool": Case(
        LEADER,
        write("delete", k=b"k", s=True),
        error=("bad_request", "field 's' must be an integer in 1..18446744073709551615, got bool"),
    ),
    "client id too long": Case(
        LEADER,
        write("put", k=b"k", val=b"v", c=b"c" * 1000),
        error=("bad_request", "field 'c' must be bytes of at most 64 bytes, got 1000 bytes"),
    ),
    "cas exp of the wrong type": Case(
        LEADER,
        write("cas", k=b"k", exp=1, val=b"w"),
        error=(
            "bad_request",
            "field 'exp' must be nil or bytes of at most 16777216 bytes, got int",
        ),
    ),
    "chunk number negative": Case(
        LEADER,
        write("file_chunk", k=b"f", u=b"up", n=-1, data=b"x"),
        error=("bad_request", "field 'n' must be an integer in 0..4294967295, got -1"),
    ),
    "get, stale: served locally, no read barrier": Case(
        FOLLOWER,
        {"t": "get", "k": b"k", "stale": True},
        reply={"t": "ok", "val": b"v", "rev": 10},
    ),
    "get: read barrier first": Case(
        LEADER, {"t": "get", "k": b"k"}, reply={"t": "ok", "val": b"v", "rev": 10}, barriers=1
    ),
    "get of a missing key": Case(
        LEADER,
        {"t": "get", "k": b"nope", "stale": True},
        reply={"t": "ok", "val": None, "rev": 10},
    ),
    "get, stale not a bool": Case(
        LEADER,
        {"t": "get", "k": b"k", "stale": 1},
        error=("bad_request", "field 'stale' must be a bool, got int"),
    ),
    "scan with a prefix and a limit": Case(
        LEADER,
        {"t": "scan", "p": b"k", "limit": 1},
        reply={"t": "ok", "items": [[b"k", b"v"]], "rev": 10},
        barriers=1,
    ),
    "scan limit out of range": Case(
        LEADER,
        {"t": "scan", "limit": 0},
        error=("bad_request", "field 'limit' must be an integer in 1..10000, got 0"),
    ),
    "file meta": Case(
        LEADER,
        {"t": "file_meta", "k": b"f", "stale": True},
        reply={"t": "ok", "size": 5, "chunks": 1, "sha": SHA},
    ),
    "file meta of a missing file": Case(
        LEADER, {"t": "file_meta", "k": b"g", "stale": True}, error=("not_found", "no file b'g'")
    ),
    "file read": Case(
        FOLLOWER,
        {"t": "file_read", "k": b"f", "n": 0, "sha": SHA},
        reply={"t": "ok", "data": b"hello"},
    ),
    "file read of an overwritten file": Case(
        LEADER,
        {"t": "file_read", "k": b"f", "n": 0, "sha": b"o" * 32},
        error=("changed", "file b'f' was overwritten"),
    ),
    "file read past the last chunk": Case(
        LEADER,
        {"t": "file_read", "k": b"f", "n": 1, "sha": SHA},
        error=("not_found", "file b'f' has 1 chunks, no chunk 1"),
    ),
    "follower: a write goes to the leader": Case(
        FOLLOWER,
        write("put", k=b"k", val=b"v"),
        reply={"t": "ok", "forwarded_to": OTHER},
        forwarded=True,
    ),
    "follower: a forwarded write is not forwarded again": Case(
        FOLLOWER,
        write("put", k=b"k", val=b"v", fwd=True),
        error=("not_leader", f"not the leader (leader: {OTHER})"),
    ),
    "no leader known": Case(
        NO_LEADER,
        write("delete", k=b"k"),
        error=("unavailable", "no leader known; retry"),
    ),
    "bad fields are reported before the leader check": Case(
        NO_LEADER,
        write("put", k=b"k", val=3, fwd=True),
        error=("bad_request", "field 'val' must be bytes of at most 16777216 bytes, got int"),
    ),
    "unknown request type": Case(
        LEADER, {"t": "nope"}, error=("bad_request", "unknown request type 'nope'")
    ),
    "follower: a malformed write is refused here, not forwarded": Case(
        FOLLOWER,
        write("cas", k=b"k", exp=1, val=b"v"),
        error=(
            "bad_request",
            "field 'exp' must be nil or bytes of at most 16777216 bytes, got int",
        ),
    ),
    "a kind this dispatcher has no handler for (built from parts)": Case(
        LEADER, {"t": "repair"}, error=("bad_request", "this node does not serve repair requests")
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_client_request(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    raft = FakeRaft(case.view, result=case.result)
    dispatch, _, forwarder = build(raft, tmp_path)
    reply = await dispatch.handle(dict(case.frame), None)  # type: ignore[arg-type]
    if case.error is not None:
        assert reply is not None
        assert (reply["t"], reply["code"], reply["msg"]) == ("error", *case.error)
        if case.error[0] == "not_leader":
            assert reply["leader_addr"] == OTHER
    else:
        assert reply == case.reply
    proposals = [i for i in raft.inputs if isinstance(i, Propose)]
    if case.proposed is not None:
        assert [(p.data, p.early) for p in proposals] == [(case.proposed, case.early)]
    if case.error is not None and case.result is None:
        assert proposals == []  # a bad or misdirected request never reaches the log
    assert raft.barriers == case.barriers
    assert bool(forwarder.forwarded) == case.forwarded


async def test_a_failed_proposal_is_the_error_of_the_request(tmp_path: Path) -> None:
    raft = FakeRaft(LEADER, error=Unavailable("proposal lost to a leader change; retry"))
    dispatch, _, _ = build(raft, tmp_path)
    reply = await dispatch.handle(write("put", k=b"k", val=b"v"), None)  # type: ignore[arg-type]
    assert reply is not None and reply["code"] == "unavailable"


@dataclass
class Answers:
    got: list[Any] = field(default_factory=list)

    def __call__(self, answer: Any) -> None:
        self.got.append(answer)


FRONT_DOOR: dict[str, tuple[Any, Frame, bool, list[str]]] = {
    # name: (the view, or "full" for a leader whose inbox is full; the frame; taken by the
    # front door; the error codes answered at once)
    "put while leader: queued": (LEADER, write("put", k=b"k", val=b"v"), True, []),
    "follower: the usual way (forwarding)": (FOLLOWER, write("put", k=b"k", val=b"v"), False, []),
    "not a put: the usual way": (LEADER, {"t": "get", "k": b"k"}, False, []),
    "inbox full: the usual way": ("full", write("put", k=b"k", val=b"v"), False, []),
    "bad field: answered at once": (LEADER, write("put", k=1, val=b"v"), True, ["bad_request"]),
}


@pytest.mark.parametrize("name", list(FRONT_DOOR))
async def test_front_door(name: str, tmp_path: Path) -> None:
    """Puts on the hot path: queued to the raft loop without a task, or left to the usual way."""
    state, frame, taken, answered = FRONT_DOOR[name]
    raft = FakeRaft(LEADER if state == "full" else state, inbox_full=state == "full")
    _, handlers, _ = build(raft, tmp_path)
    answer = Answers()
    assert handlers.front_door(frame, None, answer) is taken  # type: ignore[arg-type]
    assert [a.code for a in answer.got] == answered
    queued = [i for i in raft.inputs if isinstance(i, Propose)]
    assert len(queued) == (1 if taken and not answered else 0)
    if queued:
        # answered by the raft loop once committed
        w = queued[0].waiter
        assert queued[0].early and w.on_done is not None and w.deadline < float("inf")
        w.result = None
        w.finish()
        assert answer.got == [{"t": "ok"}]


def test_a_node_serves_every_request_kind(tmp_path: Path) -> None:
    """The node's dispatcher has a handler for every kind of rkv.protocol, and no other."""
    from rkv.node import Node
    from rkv.node.entry import _open
    from rkv.protocol import REQUEST_TYPES

    cfg = NodeConfig.create(ME, [ME, OTHER], data_dir=tmp_path)
    store = _open(cfg)
    try:
        assert set(Node(cfg, store).dispatch.routes) == set(REQUEST_TYPES)
    finally:
        store.close()
