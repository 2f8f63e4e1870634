"""rkv.codec: round trips for every encode/decode pair, and CodecError (only) for bad input."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkv import codec
from rkv.codec import (
    Cas,
    ChecksumError,
    CodecError,
    Delete,
    FileAbort,
    FileChunk,
    FileCommit,
    FileDelete,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseRenew,
    LeaseRevoke,
    Put,
    PutLease,
    Request,
    UnknownCommand,
)
from rkv.raft.types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

u64 = st.integers(0, (1 << 64) - 1)
small = st.integers(0, 1000)
node_ids = st.text(max_size=20)
keys = st.binary(min_size=1, max_size=40)
vals = st.binary(max_size=200)
ids = st.binary(max_size=codec.MAX_ID_LEN)
lease_ids = st.integers(1, codec.MAX_LEASE_ID)

entries = st.builds(Entry, term=u64, index=u64, data=vals, type=st.sampled_from(EntryType))
snapshots = st.builds(
    Snapshot,
    meta=st.builds(SnapshotMeta, index=u64, term=u64, voters=st.lists(node_ids).map(tuple)),
    data=vals,
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=node_ids,
    frm=node_ids,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=5).map(tuple),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    context=st.binary(max_size=30),
    snapshot=st.none() | snapshots,
)
commands = st.one_of(
    st.builds(Put, keys, vals),
    st.builds(Delete, keys),
    st.builds(Cas, keys, st.none() | vals, vals),
    st.builds(FileChunk, keys, ids, st.integers(0, (1 << 32) - 1), vals),
    st.builds(
        FileCommit, keys, ids, u64, st.integers(0, 1 << 32), st.binary(min_size=32, max_size=32)
    ),
    st.builds(FileDelete, keys),
    st.builds(FileAbort, ids, u64),
    st.builds(
        LeaseGrant, st.integers(0, codec.MAX_LEASE_ID), st.integers(1, codec.MAX_LEASE_TTL_MS)
    ),
    st.builds(LeaseRenew, lease_ids),
    st.builds(LeaseRevoke, lease_ids),
    st.builds(LeaseCheckpoint, st.lists(st.tuples(lease_ids, u64, u64), max_size=4).map(tuple)),
    st.builds(LeaseExpire, u64, st.lists(st.tuples(lease_ids, u64), max_size=4).map(tuple)),
    st.builds(PutLease, keys, vals, lease_ids),
)
requests = st.builds(Request, client_id=ids, seq=u64, command=commands)

# Arbitrary msgpack-representable structures, for "any decoded object" robustness tests.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=3), children, max_size=5)
    ),
    max_leaves=20,
)


# --- round trips -------------------------------------------------------------------------------


@given(entries)
def test_entry_round_trip(e: Entry) -> None:
    assert codec.decode_entry(codec.encode_entry(e)) == e


@given(st.builds(HardState, term=u64, vote=node_ids, commit=u64))
def test_hard_state_round_trip(hs: HardState) -> None:
    assert codec.decode_hard_state(codec.encode_hard_state(hs)) == hs


@given(messages)
def test_message_round_trip_through_bytes(m: Message) -> None:
    wire = codec.unpack(codec.pack(codec.message_to_wire(m)))
    assert codec.message_from_wire(wire) == m


@given(requests)
def test_request_round_trip(r: Request) -> None:
    assert codec.decode_request(codec.encode_request(r)) == r


@given(msgpack_values)
def test_pack_unpack_round_trip(v: Any) -> None:
    assert codec.unpack(codec.pack(v)) == v


def test_message_wire_is_compact_and_leaves_envelope_keys_free() -> None:
    m = Message(MessageType.HEARTBEAT, to="b", frm="a", term=3)
    d = codec.message_to_wire(m)
    assert d == {"y": 7, "to": "b", "fr": "a", "tm": 3}
    assert not {"v", "t", "id"} & set(d)
    # an envelope merged into the same map is ignored by the decoder
    assert codec.message_from_wire({**d, "v": 1, "t": "raft", "id": 9}) == m


def test_append_entries_encode_small() -> None:
    es = tuple(Entry(term=5, index=100 + i, data=b"x" * 10) for i in range(100))
    m = Message(MessageType.APPEND, to="b", frm="a", term=5, index=99, log_term=5, entries=es)
    size = len(codec.pack(codec.message_to_wire(m)))
    # 10 bytes of data + a few bytes of framing per entry
    assert size < 100 * 20


# --- bad input: CodecError only ------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_garbage_bytes_raise_codec_error_only(data: bytes) -> None:
    for decode in (codec.decode_entry, codec.decode_hard_state, codec.decode_request):
        with contextlib.suppress(CodecError):
            decode(data)
    with contextlib.suppress(CodecError):
        codec.message_from_wire(codec.unpack(data))


@given(msgpack_values)
def test_any_structure_is_validated(v: Any) -> None:
    """Valid msgpack of the wrong shape: CodecError, never TypeError/KeyError/... ."""
    packed = msgpack.packb(v, use_bin_type=True)
    for decode in (codec.decode_hard_state, codec.decode_request):
        with contextlib.suppress(CodecError):
            decode(packed)
    with contextlib.suppress(CodecError):
        codec.message_from_wire(v)


@settings(max_examples=50)
@given(requests, st.data())
def test_truncated_request_raises(r: Request, data: st.DataObject) -> None:
    b = codec.encode_request(r)
    cut = data.draw(st.integers(0, len(b) - 1))
    with pytest.raises(CodecError):
        codec.decode_request(b[:cut])


@settings(max_examples=50)
@given(entries, st.data())
def test_entry_corruption_detected(e: Entry, data: st.DataObject) -> None:
    b = bytearray(codec.encode_entry(e))
    pos = data.draw(st.integers(5, len(b) - 1))  # inside the payload
    b[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ChecksumError):
        codec.decode_entry(bytes(b))


@settings(max_examples=50)
@given(entries, st.data())
def test_truncated_entry_raises(e: Entry, data: st.DataObject) -> None:
    b = codec.encode_entry(e)
    with pytest.raises(CodecError):
        codec.decode_entry(b[: data.draw(st.integers(0, len(b) - 1))])


def test_checksum_error_is_codec_error() -> None:
    assert issubclass(ChecksumError, CodecError)
    assert issubclass(CodecError, ValueError)


def test_entry_with_valid_crc_but_bad_payload() -> None:
    payload = msgpack.packb([1, 2, 99, b""])  # unknown entry type
    import zlib

    with pytest.raises(CodecError):
        codec.decode_entry(struct.pack(">BI", 1, zlib.crc32(payload)) + payload)
    with pytest.raises(CodecError):
        codec.decode_entry(struct.pack(">BI", 2, zlib.crc32(payload)) + payload)


HOSTILE = [
    pytest.param(b"\xdd\xff\xff\xff\xff", id="array32 of 4G items"),
    pytest.param(b"\xdf\xff\xff\xff\xff", id="map32 of 4G items"),
    pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32 of 4GB"),
    pytest.param(b"\xdb\xff\xff\xff\xff", id="str32 of 4GB"),
    pytest.param(b"\xd4\x01\x00", id="fixext1"),
    pytest.param(b"\xd6\xff\x00\x00\x00\x01", id="timestamp ext"),
    pytest.param(b"\x91" * 5000 + b"\xc0", id="deep nesting"),
    pytest.param(b"\xc1", id="never-used byte"),
    pytest.param(b"\x81\x01\x02", id="int map key"),
    pytest.param(b"\xa2\xff\xfe", id="invalid utf-8 str"),
    pytest.param(b"\x01\x02", id="trailing data"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_msgpack(data: bytes) -> None:
    with pytest.raises(CodecError):
        codec.unpack(data)


def test_unpack_limits_are_enforced() -> None:
    with pytest.raises(CodecError):
        codec.unpack(codec.pack(b"x" * 100), max_bin_len=99)
    assert codec.unpack(codec.pack(b"x" * 100), max_bin_len=100) == b"x" * 100
    with pytest.raises(CodecError):
        codec.unpack(codec.pack(list(range(10))), max_array_len=9)
    with pytest.raises(CodecError):
        codec.unpack(codec.pack({"a": 1, "b": 2}), max_map_len=1)
    with pytest.raises(CodecError):
        codec.unpack(codec.pack("abc"), max_str_len=2)


def _spelled_out(data: bytes) -> Any:
    """msgpack with every option unpack() relies on named (what its fast path leaves to the
    defaults): the reference the fast path must agree with."""
    n = len(data)
    return msgpack.unpackb(
        data,
        raw=False,
        use_list=True,
        strict_map_key=True,
        max_bin_len=n,
        max_str_len=n,
        max_array_len=n,
        max_map_len=n,
        max_ext_len=0,
    )


@settings(max_examples=300)
@given(st.one_of(msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)), st.binary()))
def test_unpack_fast_path_agrees_with_every_option_spelled_out(data: bytes) -> None:
    try:
        expected = _spelled_out(data)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
        with pytest.raises(CodecError):
            codec.unpack(data)
    else:
        assert codec.unpack(data) == expected


@given(msgpack_values)
def test_packb_matches_msgpack(v: Any) -> None:
    assert codec.packb(v) == msgpack.packb(v, use_bin_type=True)


def test_packb_recovers_from_an_error_and_drops_a_large_buffer() -> None:
    with pytest.raises(TypeError):
        codec.packb([1, object()])
    # the failed call left nothing behind in the thread's packer
    assert codec.packb([1, 2]) == msgpack.packb([1, 2], use_bin_type=True)
    big = b"x" * (codec._PACKER_KEEP + 1)
    assert codec.packb(big) == msgpack.packb(big, use_bin_type=True)
    assert codec._packers.p is None  # not kept: its buffer is as large as the value
    assert codec.packb(b"y") == msgpack.packb(b"y", use_bin_type=True)


def test_pack_refuses_unpackable() -> None:
    with pytest.raises(CodecError):
        codec.pack(object())
    with pytest.raises(CodecError):
        codec.pack(1 << 70)


BASE: dict[str, Any] = {"y": 5, "to": "b", "fr": "a"}
BAD_MESSAGES = [
    pytest.param([], id="not a map"),
    pytest.param({"to": "b", "fr": "a"}, id="no type"),
    pytest.param({**BASE, "y": 99}, id="unknown type"),
    pytest.param({**BASE, "y": True}, id="bool type"),
    pytest.param({**BASE, "y": 5.0}, id="float type"),
    pytest.param({"y": 5, "fr": "a"}, id="no to"),
    pytest.param({**BASE, "to": b"b"}, id="bytes to"),
    pytest.param({**BASE, "tm": -1}, id="negative term"),
    pytest.param({**BASE, "tm": "1"}, id="str term"),
    pytest.param({**BASE, "tm": True}, id="bool term"),
    pytest.param({**BASE, "r": 1}, id="int reject"),
    pytest.param({**BASE, "x": "ctx"}, id="str context"),
    pytest.param({**BASE, "e": {}}, id="entries map"),
    pytest.param({**BASE, "e": [[1, 2]]}, id="short entry"),
    pytest.param({**BASE, "e": [[1, 2, "d"]]}, id="str entry data"),
    pytest.param({**BASE, "e": [[1, 2, b"", 7]]}, id="bad entry type"),
    pytest.param({**BASE, "s": [[1, 2], b""]}, id="short snapshot meta"),
    pytest.param({**BASE, "s": [[1, 2, "a"], b""]}, id="voters not a list"),
    pytest.param({**BASE, "s": [[1, 2, [1]], b""]}, id="int voter"),
    pytest.param({**BASE, "s": [[1, 2, []], "x"]}, id="str snapshot data"),
    pytest.param({**BASE, "x": b"x" * (codec.MAX_CONTEXT_LEN + 1)}, id="huge context"),
]


@pytest.mark.parametrize("wire", BAD_MESSAGES)
def test_bad_messages(wire: Any) -> None:
    with pytest.raises(CodecError):
        codec.message_from_wire(wire)


BAD_REQUESTS = [
    pytest.param([1, b"c", 1], id="too short"),
    pytest.param([2, b"c", 1, 1, b"k", b"v"], id="unknown format"),
    pytest.param([True, b"c", 1, 1, b"k", b"v"], id="bool format"),
    pytest.param([1, "c", 1, 1, b"k", b"v"], id="str client id"),
    pytest.param([1, b"c" * 65, 1, 1, b"k", b"v"], id="long client id"),
    pytest.param([1, b"c", -1, 1, b"k", b"v"], id="negative seq"),
    pytest.param([1, b"c", 1, 9, b"k"], id="unknown tag"),
    pytest.param([1, b"c", 1, 1, b"k"], id="put missing value"),
    pytest.param([1, b"c", 1, 1, b"k", b"v", b"x"], id="put extra field"),
    pytest.param([1, b"c", 1, 1, "k", b"v"], id="str key"),
    pytest.param([1, b"c", 1, 1, b"k" * 401, b"v"], id="long key"),
    pytest.param([1, b"c", 1, 1, b"", b"v"], id="empty key"),
    pytest.param([1, b"c", 1, 3, b"k", "e", b"n"], id="str expected"),
    pytest.param([1, b"c", 1, 4, b"k", b"u", -1, b"d"], id="negative chunk seq"),
    pytest.param([1, b"c", 1, 4, b"k", b"u", 1 << 32, b"d"], id="huge chunk seq"),
    pytest.param([1, b"c", 1, 5, b"k", b"u", 1, 1, b"short"], id="short sha256"),
    pytest.param([1, b"c", 1, 5, b"k", b"u", 1, None, b"h" * 32], id="nil chunks"),
    pytest.param({"a": 1}, id="map"),
    pytest.param([1, b"c", 1, 9, 1, 0], id="lease grant ttl 0"),
    pytest.param([1, b"c", 1, 9, -1, 10], id="lease grant negative id"),
    pytest.param([1, b"c", 1, 10, 0], id="lease renew id 0"),
    pytest.param([1, b"c", 1, 11, 1 << 63], id="lease revoke id past int64"),
    pytest.param([1, b"c", 0, 12, [[1, 2]]], id="lease checkpoint short item"),
    pytest.param([1, b"c", 0, 12, [[1, 2, 3]] * 1025], id="lease checkpoint too many"),
    pytest.param([1, b"c", 0, 13, 1, [[1, 2, 3]]], id="lease expire long item"),
    pytest.param([1, b"c", 0, 13, -1, []], id="lease expire negative term"),
    pytest.param([1, b"c", 1, 14, b"k", b"v", 0], id="put lease id 0"),
    pytest.param([1, b"c", 1, 14, b"k", b"v"], id="put lease missing id"),
    pytest.param([1, b"c", 1, 8, [], [[0, b"k"]], []], id="txn put missing value"),
]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([1, b"c", 1, 99, b"k"], id="newer command tag"),
        pytest.param([1, b"c", 1, 8, [], [[7, b"k"]], []], id="newer txn op kind"),
        pytest.param([1, b"c", 1, 8, [], [], [[0, b"k", b"v", 1, 2]]], id="newer put field"),
        pytest.param([1, b"c", 1, 8, [], [[1, b"k", 5]], []], id="newer delete field"),
    ],
)
def test_commands_of_a_newer_rkv_are_unknown_not_malformed(fields: Any) -> None:
    """A replica that took them as malformed would apply a no-op where upgraded ones apply
    the command: it must fail-stop instead (rkv.store raises NewerCommandError)."""
    with pytest.raises(UnknownCommand):
        codec.decode_request(msgpack.packb(fields, use_bin_type=True))


def test_lease_command_layouts() -> None:
    """The wire forms docs/contracts.md names (tags 9..14, txn put's optional lease)."""
    from rkv.txn import OpPut, Txn

    for cmd, fields in [
        (LeaseGrant(0, 5000), [9, 0, 5000]),
        (LeaseRenew(7), [10, 7]),
        (LeaseRevoke(7), [11, 7]),
        (LeaseCheckpoint(((7, 3, 900),)), [12, [[7, 3, 900]]]),
        (LeaseExpire(4, ((7, 3),)), [13, 4, [[7, 3]]]),
        (PutLease(b"k", b"v", 7), [14, b"k", b"v", 7]),
        (Txn((), (OpPut(b"k", b"v"),)), [8, [], [[0, b"k", b"v"]], []]),
        (Txn((), (OpPut(b"k", b"v", 7),)), [8, [], [[0, b"k", b"v", 7]], []]),
    ]:
        raw = codec.encode_request(Request(b"c", 1, cmd))
        assert msgpack.unpackb(raw) == [1, b"c", 1, *fields]
        assert codec.decode_request(raw) == Request(b"c", 1, cmd)


@pytest.mark.parametrize("fields", BAD_REQUESTS)
def test_bad_requests(fields: Any) -> None:
    with pytest.raises(CodecError):
        codec.decode_request(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Put("k", b"v"), id="put str key"),  # type: ignore[arg-type]
        pytest.param(lambda: Put(b"k", None), id="put None value"),  # type: ignore[arg-type]
        pytest.param(lambda: Cas(b"k", b"e", 3), id="cas int new"),  # type: ignore[arg-type]
        pytest.param(lambda: FileChunk(b"k", b"u", True, b""), id="bool seq"),
        pytest.param(lambda: Request(b"c", 1, "put"), id="str command"),  # type: ignore[arg-type]
        pytest.param(lambda: Request(b"c", -1, Delete(b"k")), id="negative seq"),
    ],
)
def test_constructors_validate(make: Any) -> None:
    with pytest.raises(CodecError):
        make()


def test_hard_state_wrong_shapes() -> None:
    for bad in ([1, "a"], [1, 2, 3], ["1", "a", 3], {"t": 1}):
        with pytest.raises(CodecError):
            codec.decode_hard_state(msgpack.packb(bad))
