"""rkv.protocol: the client requests' wire maps, their one decoder, and the typed replies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkv import protocol as p
from rkv.codec import MAX_ID_LEN, MAX_KEY_LEN, MAX_NODE_ID_LEN, MAX_U64, MAX_VALUE_LEN
from rkv.errors import BadRequest, InternalError
from rkv.txn import Compare, KeyValue, OpDeletePrefix, OpGet, OpIncr, OpPut

KR = p.KeyRecord

C = b"c" * 16
SHA = bytes(range(32))

# --- requests: what the client sends, byte for byte -------------------------------------------

# (request, the map the client sent before rkv.protocol existed; key order included)
WIRE: list[tuple[p.ClientRequest, dict[str, Any]]] = [
    (
        p.PutRequest(b"k", b"v", client_id=C, seq=1),
        {"t": "put", "k": b"k", "val": b"v", "c": C, "s": 1},
    ),
    (
        p.DeleteRequest(b"k", client_id=C, seq=2),
        {"t": "delete", "k": b"k", "c": C, "s": 2},
    ),
    (
        p.CasRequest(b"k", None, b"new", client_id=C, seq=3),
        {"t": "cas", "k": b"k", "exp": None, "val": b"new", "c": C, "s": 3},
    ),
    (
        p.CasRequest(b"k", b"old", b"new", client_id=C, seq=3),
        {"t": "cas", "k": b"k", "exp": b"old", "val": b"new", "c": C, "s": 3},
    ),
    (
        p.FileChunkRequest(b"f", b"u" * 16, 7, b"data", client_id=C, seq=4),
        {"t": "file_chunk", "k": b"f", "u": b"u" * 16, "n": 7, "data": b"data", "c": C, "s": 4},
    ),
    (
        p.FileCommitRequest(b"f", b"u" * 16, 10, 2, SHA, client_id=C, seq=5),
        {
            "t": "file_commit",
            "k": b"f",
            "u": b"u" * 16,
            "size": 10,
            "chunks": 2,
            "sha": SHA,
            "c": C,
            "s": 5,
        },
    ),
    (
        p.FileAbortRequest(b"u" * 16, client_id=C, seq=6),
        {"t": "file_abort", "u": b"u" * 16, "c": C, "s": 6},
    ),
    (
        p.FileDeleteRequest(b"f", client_id=C, seq=7),
        {"t": "file_delete", "k": b"f", "c": C, "s": 7},
    ),
    (p.GetRequest(b"k"), {"t": "get", "k": b"k", "stale": False}),
    (p.GetRequest(b"k", stale=True), {"t": "get", "k": b"k", "stale": True}),
    (p.ScanRequest(b"a", limit=5), {"t": "scan", "p": b"a", "limit": 5, "stale": False}),
    (
        p.ScanRequest(b"a", 5, after=b"a1", meta=True),
        {"t": "scan", "p": b"a", "limit": 5, "stale": False, "after": b"a1", "meta": True},
    ),
    (p.GetRequest(b"k", meta=True), {"t": "get", "k": b"k", "stale": False, "meta": True}),
    (p.FileMetaRequest(b"f", stale=True), {"t": "file_meta", "k": b"f", "stale": True}),
    (p.FileReadRequest(b"f", 3, SHA), {"t": "file_read", "k": b"f", "n": 3, "sha": SHA}),
    (p.StatusRequest(), {"t": "status"}),
    (
        p.WatchRequest(b"a/", 41, prev=True, limit=10, wait_ms=500),
        {"t": "watch", "p": b"a/", "after": 41, "prev": True, "limit": 10, "wait_ms": 500},
    ),
    (
        p.WatchRequest(b"k", exact=True),
        {"t": "watch", "p": b"k", "prev": False, "limit": 1000, "wait_ms": 1000, "exact": True},
    ),
    (
        p.WatchRequest(),  # from now: no "after"
        {"t": "watch", "p": b"", "prev": False, "limit": 1000, "wait_ms": 1000},
    ),
    (p.TransferRequest(None), {"t": "transfer", "to": None}),
    (p.TransferRequest("127.0.0.1:2"), {"t": "transfer", "to": "127.0.0.1:2"}),
    (p.MembersRequest(), {"t": "members"}),
    (
        p.MemberRequest("add", "127.0.0.1:4"),
        {"t": "member", "op": "add", "node": "127.0.0.1:4"},
    ),
    (p.BackupBeginRequest(), {"t": "backup_begin"}),
    (
        p.BackupReadRequest(b"tok", 0, 1 << 20),
        {"t": "backup_read", "b": b"tok", "off": 0, "len": 1 << 20},
    ),
    (p.BackupEndRequest(b"tok"), {"t": "backup_end", "b": b"tok"}),
    (p.RepairRequest(), {"t": "repair"}),
    (p.StateHashesRequest(), {"t": "state_hashes"}),
    (p.CheckRequest(), {"t": "check"}),
    (
        p.FaultRequest(("a:1",), ()),
        {"t": "fault", "drop_to": ["a:1"], "drop_from": []},
    ),
    (
        p.TxnRequest(
            (Compare(b"k", "version", "==", 0),),
            (OpPut(b"k", b"v"), OpIncr(b"n", -2)),
            (OpGet(b"k"), OpDeletePrefix(b"p/")),
            client_id=C,
            seq=8,
        ),
        {
            "t": "txn",
            "cmp": [[b"k", 1, 0, 0]],
            "then": [[0, b"k", b"v"], [4, b"n", -2]],
            "else": [[3, b"k"], [2, b"p/"]],
            "c": C,
            "s": 8,
        },
    ),
    # forwarded by a follower (rkv.forward): marked, nothing else changes
    (
        p.PutRequest(b"k", b"v", client_id=C, seq=1, fwd=True),
        {"t": "put", "k": b"k", "val": b"v", "c": C, "s": 1, "fwd": True},
    ),
    (p.MembersRequest(fwd=True), {"t": "members", "fwd": True}),
    (
        p.PutRequest(b"k", b"v", client_id=C, seq=2, lease=7),
        {"t": "put", "k": b"k", "val": b"v", "c": C, "s": 2, "lease": 7},
    ),
    (
        p.LeaseGrantRequest(5000, client_id=C, seq=1),
        {"t": "lease_grant", "ttl": 5000, "c": C, "s": 1},
    ),
    (
        p.LeaseGrantRequest(5000, client_id=C, seq=1, lease_id=9),
        {"t": "lease_grant", "ttl": 5000, "c": C, "s": 1, "lease": 9},
    ),
    (
        p.LeaseKeepaliveRequest(9, client_id=C, seq=3),
        {"t": "lease_keepalive", "lease": 9, "c": C, "s": 3},
    ),
    (
        p.LeaseRevokeRequest(9, client_id=C, seq=4, fwd=True),
        {"t": "lease_revoke", "lease": 9, "c": C, "s": 4, "fwd": True},
    ),
    (p.LeaseTtlRequest(9, keys=True), {"t": "lease_ttl", "lease": 9, "keys": True}),
    (p.LeaseListRequest(), {"t": "lease_list"}),
]


@pytest.mark.parametrize(("request_", "frame"), WIRE, ids=lambda x: getattr(x, "T", ""))
def test_to_frame_is_the_wire_map(request_: p.ClientRequest, frame: dict[str, Any]) -> None:
    got = request_.to_frame()
    assert got == frame
    assert list(got) == list(frame)  # same order too: the same msgpack bytes
    assert p.decode_request(frame) == request_


def test_every_kind_has_a_wire_example() -> None:
    assert {r.T for r, _ in WIRE} == set(p.REQUEST_TYPES)


def test_leader_kinds_are_the_writes_membership_and_transfer() -> None:
    writes = {
        "put",
        "delete",
        "cas",
        "file_chunk",
        "file_commit",
        "file_abort",
        "file_delete",
        "txn",
        "lease_grant",
        "lease_keepalive",
        "lease_revoke",
    }
    assert writes == p.WRITE_KINDS
    assert writes | {"members", "member", "transfer"} == p.LEADER_KINDS


# --- decoding: what a node reads --------------------------------------------------------------

# (frame as received, the request): defaults, the RPC id and unknown fields
DECODED: list[tuple[dict[str, Any], p.ClientRequest]] = [
    ({"t": "get", "id": 9, "k": b"k"}, p.GetRequest(b"k", stale=False)),
    ({"t": "get", "k": b"k", "newer_field": 1}, p.GetRequest(b"k")),
    ({"t": "scan"}, p.ScanRequest(b"", p.DEFAULT_SCAN_LIMIT, False)),
    ({"t": "scan", "p": None, "limit": 10_000}, p.ScanRequest(b"", 10_000)),
    # an older client's scan and get: no after (from the start), no meta
    ({"t": "scan", "p": b"a", "limit": 3}, p.ScanRequest(b"a", 3, after=None, meta=False)),
    ({"t": "scan", "after": None, "meta": False}, p.ScanRequest()),
    ({"t": "scan", "after": b"k"}, p.ScanRequest(after=b"k")),
    ({"t": "get", "k": b"k", "meta": True}, p.GetRequest(b"k", meta=True)),
    ({"t": "file_meta", "k": b"f"}, p.FileMetaRequest(b"f")),
    (
        {"t": "cas", "k": b"k", "val": b"", "c": b"", "s": MAX_U64},
        p.CasRequest(b"k", None, b"", client_id=b"", seq=MAX_U64),
    ),
    ({"t": "transfer"}, p.TransferRequest(None)),
    ({"t": "fault"}, p.FaultRequest((), ())),
    ({"t": "txn", "c": C, "s": 1}, p.TxnRequest((), (), (), client_id=C, seq=1)),  # empty is fine
    ({"t": "fault", "drop_from": ["x:1", "y:2"]}, p.FaultRequest((), ("x:1", "y:2"))),
    ({"t": "members", "fwd": False}, p.MembersRequest()),
    ({"t": "status", "fwd": True}, p.StatusRequest()),  # not forwarded kinds: ignored
    (
        {"t": "member", "op": "remove", "node": "n:1", "fwd": True},
        p.MemberRequest("remove", "n:1", fwd=True),
    ),
    (
        {"t": "file_read", "k": b"f", "n": MAX_U64, "sha": SHA},
        p.FileReadRequest(b"f", MAX_U64, SHA),
    ),
    ({"t": "backup_read", "b": b"", "off": 0, "len": 0}, p.BackupReadRequest(b"", 0, 0)),
]


@pytest.mark.parametrize(("frame", "request_"), DECODED)
def test_decode(frame: dict[str, Any], request_: p.ClientRequest) -> None:
    assert p.decode_request(frame) == request_


PUT = {"t": "put", "k": b"k", "val": b"v", "c": C, "s": 1}

# (frame, the field named, a substring of the message)
BAD: list[tuple[Any, str | None, str]] = [
    ([1, 2], None, "a request must be a map, got list"),
    ({}, "t", "field 't' must be a string naming the request type, got missing"),
    ({"t": 5}, "t", "field 't' must be a string naming the request type, got int"),
    ({"t": "frob"}, "t", "unknown request type 'frob'"),
    ({"t": "raft"}, "t", "unknown request type 'raft'"),  # peer frames are not requests
    ({**PUT, "k": 5}, "k", f"field 'k' must be bytes of 1..{MAX_KEY_LEN} bytes, got int"),
    ({**PUT, "k": "k"}, "k", "got str"),
    ({**PUT, "k": b""}, "k", "got 0 bytes"),
    ({**PUT, "k": b"x" * (MAX_KEY_LEN + 1)}, "k", f"got {MAX_KEY_LEN + 1} bytes"),
    ({k: v for k, v in PUT.items() if k != "val"}, "val", "field 'val' is missing from a put"),
    (
        {**PUT, "val": None},
        "val",
        f"field 'val' must be bytes of at most {MAX_VALUE_LEN} bytes, got nil",
    ),
    ({**PUT, "c": b"x" * (MAX_ID_LEN + 1)}, "c", f"at most {MAX_ID_LEN} bytes, got 65 bytes"),
    ({k: v for k, v in PUT.items() if k != "s"}, "s", "field 's' is missing"),
    ({**PUT, "s": 0}, "s", f"field 's' must be an integer in 1..{MAX_U64}, got 0"),
    ({**PUT, "s": True}, "s", "got bool"),
    ({**PUT, "s": 1.0}, "s", "got float"),
    ({**PUT, "fwd": 1}, "fwd", "field 'fwd' must be a bool, got int"),
    ({"t": "cas", "k": b"k", "exp": 3, "val": b"", "c": C, "s": 1}, "exp", "must be nil or bytes"),
    ({"t": "get", "k": b"k", "stale": None}, "stale", "field 'stale' must be a bool, got nil"),
    ({"t": "get", "k": b"k", "stale": "yes"}, "stale", "got str"),
    ({"t": "scan", "limit": 0}, "limit", "field 'limit' must be an integer in 1..10000, got 0"),
    ({"t": "scan", "limit": 10_001}, "limit", "got 10001"),
    ({"t": "scan", "limit": None}, "limit", "got nil"),
    ({"t": "scan", "p": b"x" * (MAX_KEY_LEN + 1)}, "p", f"at most {MAX_KEY_LEN} bytes"),
    (
        {"t": "file_chunk", "k": b"f", "u": b"u", "n": 1 << 32, "data": b"", "c": C, "s": 1},
        "n",
        "field 'n' must be an integer in 0..4294967295",
    ),
    (
        {
            "t": "file_commit",
            "k": b"f",
            "u": b"u",
            "size": -1,
            "chunks": 1,
            "sha": SHA,
            "c": C,
            "s": 1,
        },
        "size",
        "got -1",
    ),
    (
        {
            "t": "file_commit",
            "k": b"f",
            "u": b"u",
            "size": 1,
            "chunks": 1,
            "sha": SHA[:31],
            "c": C,
            "s": 1,
        },
        "sha",
        "field 'sha' must be bytes of exactly 32 bytes, got 31 bytes",
    ),
    ({"t": "file_read", "k": b"f", "n": -1, "sha": SHA}, "n", "got -1"),
    ({"t": "transfer", "to": 5}, "to", "field 'to' must be nil or a string"),
    ({"t": "transfer", "to": "x" * (MAX_NODE_ID_LEN + 1)}, "to", "got string of 257 characters"),
    (
        {"t": "member", "op": "frob", "node": "n:1"},
        "op",
        "must be one of add, promote, remove, got 'frob'",
    ),
    ({"t": "member", "op": 1, "node": "n:1"}, "op", "got int"),
    ({"t": "member", "op": "add", "node": ""}, "node", "got string of 0 characters"),
    ({"t": "member", "op": "add"}, "node", "field 'node' is missing from a member request"),
    ({"t": "backup_read", "b": b"x" * 65, "off": 0, "len": 1}, "b", "at most 64 bytes"),
    ({"t": "backup_read", "b": b"x", "off": 0}, "len", "field 'len' is missing"),
    ({"t": "backup_end"}, "b", "field 'b' is missing"),
    ({"t": "fault", "drop_to": "a:1"}, "drop_to", "must be a list of node ids"),
    ({"t": "fault", "drop_from": ["a:1", 2]}, "drop_from", "got item 1: int"),
    ({"t": "txn", "cmp": 1, "c": C, "s": 1}, "cmp", "field 'cmp' must be a list of compares"),
    (
        {"t": "txn", "cmp": [[b"k", 9, 0, 0]], "c": C, "s": 1},
        "cmp",
        "field 'cmp' item 0: compare target must be in 0..3, got 9",
    ),
    (
        {"t": "txn", "cmp": [[b"k", 0, 0, 1]], "c": C, "s": 1},
        "cmp",
        "item 0: compare value must be bytes, got int",
    ),
    ({"t": "txn", "then": [[7, b"k"]], "c": C, "s": 1}, "then", "an op must be [kind 0..6"),
    (
        {"t": "put", "k": b"k", "val": b"", "c": C, "s": 1, "lease": -1},
        "lease",
        "0..9223372036854775807",
    ),
    ({"t": "lease_grant", "ttl": 0, "c": C, "s": 1}, "ttl", "must be an integer in 1.."),
    ({"t": "lease_keepalive", "c": C, "s": 1}, "lease", "field 'lease' is missing"),
    ({"t": "lease_revoke", "lease": 0, "c": C, "s": 1}, "lease", "must be an integer in 1.."),
    ({"t": "lease_ttl", "lease": 1, "keys": 1}, "keys", "must be a bool"),
    ({"t": "txn", "else": [[0, b"k"]], "c": C, "s": 1}, "else", "a put op has 2 fields, got 1"),
    ({"t": "scan", "after": b""}, "after", "field 'after' must be nil or bytes of 1..400"),
    ({"t": "scan", "after": "k"}, "after", "field 'after' must be nil or bytes"),
    ({"t": "scan", "meta": 1}, "meta", "field 'meta' must be a bool"),
    ({"t": "get", "k": b"k", "meta": None}, "meta", "field 'meta' must be a bool"),
    (
        {"t": "txn", "then": [[3, b"k"]] * 129, "c": C, "s": 1},
        "then",
        "field 'then' must hold at most 128 ops, got 129",
    ),
    (
        {"t": "txn", "then": [[0, b"k", b""], [1, b"k"]], "c": C, "s": 1},
        None,
        "txn: key b'k' is written twice in the success ops",
    ),
]


@pytest.mark.parametrize(("frame", "field", "msg"), BAD)
def test_decode_refuses(frame: Any, field: str | None, msg: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(frame)
    assert msg in info.value.msg
    assert info.value.field == field
    # what the node answers: a bad_request naming the field
    assert isinstance(info.value, BadRequest)
    assert info.value.code == "bad_request"


def test_constructors_check_like_the_decoder() -> None:
    with pytest.raises(p.ProtocolError, match=r"field .k. must be bytes of 1\.\.400 bytes, got 0"):
        p.GetRequest(b"")
    with pytest.raises(p.ProtocolError, match="field 's'"):
        p.PutRequest(b"k", b"v", client_id=C, seq=0)
    with pytest.raises(p.ProtocolError, match="field 'limit'"):
        p.ScanRequest(b"", limit=MAX_U64)


def test_write_commands() -> None:
    from rkv import codec

    assert p.PutRequest(b"k", b"v", client_id=C, seq=1).command() == codec.Put(b"k", b"v")
    assert p.FileAbortRequest(b"u", client_id=C, seq=1).command() == codec.FileAbort(b"u", 0)
    assert p.CasRequest(b"k", None, b"v", client_id=C, seq=1).command() == codec.Cas(
        b"k", None, b"v"
    )


# --- round trips of every kind ----------------------------------------------------------------

keys = st.binary(min_size=1, max_size=MAX_KEY_LEN)
values = st.binary(max_size=64)
ids = st.binary(max_size=MAX_ID_LEN)
seqs = st.integers(1, MAX_U64)
u64 = st.integers(0, MAX_U64)
shas = st.binary(min_size=32, max_size=32)
node_ids = st.text(min_size=1, max_size=40)
session = {"client_id": ids, "seq": seqs, "fwd": st.booleans()}

STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "put": st.builds(p.PutRequest, keys, values, **session, lease=st.integers(0, (1 << 63) - 1)),
    "lease_grant": st.builds(
        p.LeaseGrantRequest, st.integers(1, 1 << 40), **session, lease_id=st.integers(0, 99)
    ),
    "lease_keepalive": st.builds(p.LeaseKeepaliveRequest, st.integers(1, 99), **session),
    "lease_revoke": st.builds(p.LeaseRevokeRequest, st.integers(1, 99), **session),
    "lease_ttl": st.builds(p.LeaseTtlRequest, st.integers(1, 99), keys=st.booleans()),
    "lease_list": st.builds(p.LeaseListRequest),
    "delete": st.builds(p.DeleteRequest, keys, **session),
    "cas": st.builds(p.CasRequest, keys, st.none() | values, values, **session),
    "file_chunk": st.builds(
        p.FileChunkRequest, keys, ids, st.integers(0, p.MAX_CHUNK_NO), values, **session
    ),
    "file_commit": st.builds(
        p.FileCommitRequest, keys, ids, u64, st.integers(0, p.MAX_CHUNKS), shas, **session
    ),
    "file_abort": st.builds(p.FileAbortRequest, ids, **session),
    "file_delete": st.builds(p.FileDeleteRequest, keys, **session),
    "get": st.builds(p.GetRequest, keys, stale=st.booleans(), meta=st.booleans()),
    "scan": st.builds(
        p.ScanRequest,
        st.binary(max_size=MAX_KEY_LEN),
        limit=st.integers(1, p.MAX_SCAN_LIMIT),
        stale=st.booleans(),
        after=st.none() | keys,
        meta=st.booleans(),
    ),
    "file_meta": st.builds(p.FileMetaRequest, keys, stale=st.booleans()),
    "file_read": st.builds(p.FileReadRequest, keys, u64, shas),
    "status": st.builds(p.StatusRequest),
    "transfer": st.builds(p.TransferRequest, st.none() | node_ids, fwd=st.booleans()),
    "members": st.builds(p.MembersRequest, fwd=st.booleans()),
    "member": st.builds(
        p.MemberRequest, st.sampled_from(p.MEMBER_OPS), node_ids, fwd=st.booleans()
    ),
    "backup_begin": st.builds(p.BackupBeginRequest),
    "backup_read": st.builds(p.BackupReadRequest, st.binary(max_size=64), u64, u64),
    "backup_end": st.builds(p.BackupEndRequest, st.binary(max_size=64)),
    "repair": st.builds(p.RepairRequest),
    "state_hashes": st.builds(p.StateHashesRequest),
    "check": st.builds(p.CheckRequest),
    "txn": st.builds(
        p.TxnRequest,
        st.lists(st.builds(Compare, keys, st.just("mod"), st.sampled_from(["<", ">"]), u64)),
        st.lists(st.builds(OpGet, keys), max_size=4),
        st.lists(st.builds(OpDeletePrefix, keys), max_size=4),
        **session,
    ),
    "fault": st.builds(
        p.FaultRequest,
        st.lists(node_ids, max_size=5).map(tuple),
        st.lists(node_ids, max_size=5).map(tuple),
    ),
    "watch": st.builds(
        p.WatchRequest,
        st.binary(max_size=20),
        st.none() | u64,
        st.booleans(),
        st.integers(1, 10_000),
        st.integers(0, 60_000),
        st.booleans(),
    ),
}


def test_every_kind_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(p.REQUEST_TYPES)


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip(kind: str, data: st.DataObject) -> None:
    r = data.draw(STRATEGIES[kind])
    assert kind == r.T
    frame = r.to_frame()
    assert p.decode_request(frame) == r
    # through msgpack too, as it travels (with the RPC layer's id)
    from rkv.codec import pack, unpack

    assert p.decode_request(unpack(pack({**frame, "id": 1}))) == r


# --- replies ----------------------------------------------------------------------------------

REPLIES: list[tuple[Any, dict[str, Any]]] = [
    (p.OkReply(), {"t": "ok"}),
    (p.ValueReply(b"v"), {"t": "ok", "val": b"v"}),
    (p.ValueReply(None), {"t": "ok", "val": None}),
    (p.ExistedReply(True), {"t": "ok", "existed": True}),
    (p.SwappedReply(False), {"t": "ok", "swapped": False}),
    (p.AbortedReply(True), {"t": "ok", "aborted": True}),
    (p.ScanReply(((b"a", b"1"), (b"b", b""))), {"t": "ok", "items": [[b"a", b"1"], [b"b", b""]]}),
    (p.ScanReply(()), {"t": "ok", "items": []}),
    (p.FileMetaReply(10, 1, SHA), {"t": "ok", "size": 10, "chunks": 1, "sha": SHA}),
    (p.DataReply(b"xyz"), {"t": "ok", "data": b"xyz"}),
    (p.OkReply(7), {"t": "ok", "rev": 7}),
    (p.ValueReply(None, 9), {"t": "ok", "val": None, "rev": 9}),
    (p.ExistedReply(False, 3), {"t": "ok", "existed": False, "rev": 3}),
    (p.SwappedReply(True, 4), {"t": "ok", "swapped": True, "rev": 4}),
    (p.ScanReply((), 5), {"t": "ok", "items": [], "rev": 5}),
    (p.ScanReply(((b"a", b"1"),), 5), {"t": "ok", "items": [[b"a", b"1"]], "rev": 5}),
    (
        p.ScanReply(((b"a", b"1"), (b"b", b"")), 5, (KR(b"1", 2, 4, 3), KR(b"", 5, 5, 1, 9))),
        {"t": "ok", "items": [[b"a", b"1", 2, 4, 3, 0], [b"b", b"", 5, 5, 1, 9]], "rev": 5},
    ),
    (p.ValueReply(b"v", 7), {"t": "ok", "val": b"v", "rev": 7}),
    (
        p.ValueReply(b"v", 7, KR(b"v", 2, 6, 4, 11), meta=True),
        {"t": "ok", "val": b"v", "rev": 7, "rec": [2, 6, 4, 11]},
    ),
    (p.ValueReply(None, 7, None, meta=True), {"t": "ok", "val": None, "rev": 7, "rec": None}),
    (p.AbortedReply(True, 6), {"t": "ok", "aborted": True, "rev": 6}),
    (
        p.TxnReply(True, 12, (None, KeyValue(b"v", 3, 12, 2), 1, b"1.5")),
        {"t": "ok", "ok": True, "rev": 12, "results": [None, [b"v", 3, 12, 2], 1, b"1.5"]},
    ),
    (p.TxnReply(False, 13), {"t": "ok", "ok": False, "rev": 13, "results": []}),
    (
        p.WatchReply(
            (
                p.WatchEvent(7, "put", b"k", b"v"),
                p.WatchEvent(7, "delete", b"j", None, b"old", True),
                p.WatchEvent(8, "put", b"k", b"w", None, True),  # prev nil: it did not exist
                p.WatchEvent(9, "file_commit", b"f"),
            ),
            9,
        ),
        {
            "t": "ok",
            "events": [
                {"rev": 7, "type": "put", "k": b"k", "v": b"v"},
                {"rev": 7, "type": "delete", "k": b"j", "prev": b"old"},
                {"rev": 8, "type": "put", "k": b"k", "v": b"w", "prev": None},
                {"rev": 9, "type": "file_commit", "k": b"f"},
            ],
            "rev": 9,
            "progress": False,
        },
    ),
    (p.WatchReply((), 10, True), {"t": "ok", "events": [], "rev": 10, "progress": True}),
]


@pytest.mark.parametrize(("reply", "frame"), REPLIES)
def test_reply_frames(reply: Any, frame: dict[str, Any]) -> None:
    assert reply.to_frame() == frame
    # as received: with the RPC id, and a forwarded answer's leader_addr
    assert type(reply).from_frame({**frame, "id": 3, "leader_addr": "x:1"}) == reply


def test_status_reply() -> None:
    node_status = {
        "node": "a:1",
        "addr": "a:1",
        "cluster": "c",
        "role": "leader",
        "term": 3,
        "leader": "a:1",
        "leader_addr": "a:1",
        "commit": 10,
        "applied": 10,
        "last_index": 11,
        "peers": ["b:2"],
        "voters": ["a:1", "b:2"],
        "learners": [],
        "recovering": False,
        "degraded": None,
    }
    frame = {"t": "ok", **node_status}
    r = p.StatusReply.from_frame({**frame, "id": 1})
    assert r.node == "a:1" and r.peers == ("b:2",) and r.degraded is None
    assert r.to_frame() == frame
    # every field may be missing (an older node, a test double)
    assert p.StatusReply.from_frame({"t": "ok", "id": None, "addr": "b:2"}) == p.StatusReply(
        addr="b:2"
    )


BAD_REPLIES: list[tuple[type[Any], dict[str, Any], str]] = [
    (p.ValueReply, {"t": "ok"}, "get reply: field 'val' is missing"),
    (p.ValueReply, {"t": "ok", "val": 1}, "field 'val' must be nil or bytes"),
    (p.ValueReply, {"t": "error", "val": b""}, "expected an ok frame, got 'error'"),
    (p.ExistedReply, {"t": "ok", "existed": 1}, "field 'existed' must be a bool, got int"),
    (p.SwappedReply, {"t": "ok"}, "field 'swapped' is missing"),
    (p.ScanReply, {"t": "ok", "items": None}, "field 'items' must be a list, got nil"),
    (p.ScanReply, {"t": "ok", "items": [[b"a"]]}, "item 0 of 'items' must be [key bytes"),
    (p.ScanReply, {"t": "ok", "items": [[b"a", "b"]]}, "item 0"),
    (p.ScanReply, {"t": "ok", "items": [[b"a", b"", 1, 1, 1, 0], [b"b", b""]]}, "item 1"),
    (p.ScanReply, {"t": "ok", "items": [[b"a", b"", 1, 1, 1]]}, "item 0"),
    (p.ScanReply, {"t": "ok", "items": [[b"a", b"", 1, 1, "1", 0]]}, "a record must be"),
    (p.ScanReply, {"t": "ok", "items": [[b"a", b"", 1, 1, 1, -1]]}, "a record must be"),
    (p.ValueReply, {"t": "ok", "val": b"v", "rec": [1, 1, 1]}, "a record must be"),
    (p.ValueReply, {"t": "ok", "val": None, "rec": [1, 1, 1, 0]}, "both be nil or neither"),
    (p.ValueReply, {"t": "ok", "val": b"v", "rec": None}, "both be nil or neither"),
    (p.FileMetaReply, {"t": "ok", "size": 1, "chunks": 1, "sha": b""}, "'sha' must be bytes"),
    (p.FileMetaReply, {"t": "ok", "size": "1", "chunks": 1, "sha": SHA}, "'size'"),
    (p.DataReply, {"t": "ok"}, "field 'data' is missing"),
    (p.StatusReply, {"t": "ok", "term": "x"}, "status reply: field 'term' must be an integer"),
    (p.StatusReply, {"t": "ok", "peers": "b:2"}, "field 'peers' must be a list of node ids"),
    (p.ValueReply, {"t": "ok", "val": b"", "rev": -1}, "field 'rev' must be nil or an integer"),
    (p.TxnReply, {"t": "ok", "rev": 1, "results": []}, "txn reply: a txn result must be"),
    (p.TxnReply, {"t": "ok", "ok": True, "rev": 1, "results": [[b"v"]]}, "a get result must"),
    (p.WatchReply, {"t": "ok", "events": {}, "rev": 1, "progress": False}, "must be a list"),
    (
        p.WatchReply,
        {"t": "ok", "events": [{"rev": 1, "type": "explode", "k": b"k"}], "rev": 1},
        "unknown event type",
    ),
    (p.WatchReply, {"t": "ok", "events": [], "progress": False}, "'rev' is missing"),
]


@pytest.mark.parametrize(("cls", "frame", "msg"), BAD_REPLIES)
def test_bad_replies(cls: type[Any], frame: dict[str, Any], msg: str) -> None:
    with pytest.raises(p.BadReply) as info:
        cls.from_frame(frame)
    assert msg in info.value.msg
    assert isinstance(info.value, InternalError)
