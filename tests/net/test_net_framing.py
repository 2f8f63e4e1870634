"""rkv.net.framing: the sans-IO frame codec (round trips, limits, remote vs local errors)."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkv.net.framing import (
    DEFAULT_MAX_FRAME,
    E_BAD_ID,
    E_BAD_MSGPACK,
    E_BAD_TYPE,
    E_BAD_VERSION,
    E_NOT_A_MAP,
    E_TOO_LARGE,
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameError,
    encode_frame,
    encode_frames,
    encode_request,
    error_frame,
)


def raw(body: Any) -> bytes:
    """Frame an arbitrary msgpack object, bypassing encode_frame's local checks."""
    payload = msgpack.packb(body, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def decode_all(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[dict[str, Any]]:
    return FrameDecoder(max_frame).feed(data)


# -- encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"t": "ping"},
        {"t": "get", "id": 1, "k": b"key"},
        {"t": "put", "id": 2**63 - 1, "k": b"\x00\xff", "val": b"x" * 1000},
        {"t": "raft", "m": [{"a": 1, "b": [1, 2, None]}, {"c": {"d": True}}]},
        {"t": "ünïcode ✓", "s": "日本語", "f": 1.5, "n": -(2**63)},
        {"t": "x", "id": 0, "v": PROTOCOL_VERSION},
    ],
)
def test_round_trip_adds_version(body: dict[str, Any]) -> None:
    data = encode_frame(body)
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    (frame,) = decode_all(data)
    assert frame == {**body, "v": PROTOCOL_VERSION}
    assert "v" not in body or body["v"] == PROTOCOL_VERSION  # the caller's dict is untouched


@pytest.mark.parametrize(
    ("body", "exc"),
    [
        (["t", "x"], TypeError),
        ({"id": 1}, TypeError),
        ({"t": 5}, TypeError),
        ({"t": "x", "id": "1"}, TypeError),
        ({"t": "x", "id": True}, TypeError),
        ({"t": "x", "obj": object()}, TypeError),
        ({"t": "x", "big": 2**64}, TypeError),
        ({"t": "x", "blob": b"y" * 200}, ValueError),
    ],
)
def test_encode_local_misuse_raises(body: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        encode_frame(body, max_frame=100)


@pytest.mark.parametrize(
    ("body", "exc"),
    [
        (["t", "x"], TypeError),
        ({"id": 1}, TypeError),
        ({"t": 5}, TypeError),
        ({"t": "x", "obj": object()}, TypeError),
        ({"t": "x", "big": 2**64}, TypeError),
        ({"t": "x", "blob": b"y" * 200}, ValueError),
    ],
)
def test_encode_request_misuse_raises_as_encode_frame(body: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        encode_request(body, 1, max_frame=100)


@given(
    body=st.dictionaries(
        st.sampled_from(["t", "v", "id", "k", "val", "s"]),
        st.one_of(st.integers(0, 2**63), st.binary(max_size=8), st.text(max_size=4)),
    ),
    t=st.text(max_size=8),
    rid=st.integers(0, 2**63),
)
def test_encode_request_is_encode_frame_with_the_id(body: dict[str, Any], t: str, rid: int) -> None:
    body = {**body, "t": t}
    before = dict(body)
    assert encode_request(body, rid) == encode_frame({**body, "id": rid})
    assert body == before  # the caller's frame is untouched (retries resend it)


@pytest.mark.parametrize("max_frame", [0, -1, 2**32, 1.5, True])
def test_encode_request_bad_max_frame_rejected(max_frame: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        encode_request({"t": "x"}, 1, max_frame=max_frame)


def test_max_frame_boundary_is_inclusive() -> None:
    body = {"t": "x", "pad": b""}
    size = len(encode_frame(body)) - 4
    limit = size + 10
    exact = {"t": "x", "pad": b"z" * 10}
    assert len(encode_frame(exact, max_frame=limit)) - 4 == limit
    assert FrameDecoder(limit).feed(encode_frame(exact, max_frame=limit))[0]["pad"] == b"z" * 10
    with pytest.raises(ValueError):
        encode_frame({"t": "x", "pad": b"z" * 11}, max_frame=limit)


@pytest.mark.parametrize("max_frame", [0, -1, 2**32, 1.5, True])
def test_bad_max_frame_rejected(max_frame: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        FrameDecoder(max_frame)
    with pytest.raises((ValueError, TypeError)):
        encode_frame({"t": "x"}, max_frame=max_frame)


def test_error_frame_shape() -> None:
    assert error_frame("bad", "why") == {"t": "error", "code": "bad", "msg": "why"}
    assert error_frame("bad", "why", 7)["id"] == 7


def test_encode_frames_is_concatenation() -> None:
    bodies = [{"t": "a", "id": 1}, {"t": "b"}]
    assert encode_frames(bodies) == encode_frame(bodies[0]) + encode_frame(bodies[1])


# -- decoding: remote errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (struct.pack(">I", 101), E_TOO_LARGE),
        (struct.pack(">I", 0xFFFFFFFF), E_TOO_LARGE),
        (struct.pack(">I", 0), E_BAD_MSGPACK),
        (struct.pack(">I", 1) + b"\xc1", E_BAD_MSGPACK),
        (struct.pack(">I", 2) + b"\x80\x80", E_BAD_MSGPACK),  # two objects in one body
        (struct.pack(">I", 3) + b"\x91\x91\x91", E_BAD_MSGPACK),  # truncated inside the body
        (raw(b"\x91" * 60 + b"\xc0"), E_NOT_A_MAP),
        (raw([1, 2]), E_NOT_A_MAP),
        (raw("just a string"), E_NOT_A_MAP),
        (raw({"v": 1}), E_BAD_TYPE),
        (raw({"v": 1, "t": 3}), E_BAD_TYPE),
        (raw({"v": 1, "t": b"bytes"}), E_BAD_TYPE),
        (raw({"t": "x"}), E_BAD_VERSION),
        (raw({"v": 2, "t": "x"}), E_BAD_VERSION),
        (raw({"v": True, "t": "x"}), E_BAD_VERSION),
        (raw({"v": 1.0, "t": "x"}), E_BAD_VERSION),
        (raw({"v": 1, "t": "x", "id": "7"}), E_BAD_ID),
        (raw({"v": 1, "t": "x", "id": None}), E_BAD_ID),
        (raw({"v": 1, "t": "x", "id": False}), E_BAD_ID),
        (raw({"v": 1, "t": "x", "e": msgpack.ExtType(5, b"abc")}), E_BAD_MSGPACK),
        (struct.pack(">I", 6) + b"\xd6\xff\x00\x00\x00\x01", E_BAD_MSGPACK),  # timestamp ext
        (struct.pack(">I", 4) + b"\x81\x91\x01\x02", E_BAD_MSGPACK),  # list as a map key
        (struct.pack(">I", 5) + b"\xdd\xff\xff\xff\xff", E_BAD_MSGPACK),  # huge array claim
        (struct.pack(">I", 5) + b"\xdb\x7f\xff\xff\xff", E_BAD_MSGPACK),  # huge str claim
        (struct.pack(">I", 2001) + b"\x91" * 2000 + b"\xc0", E_BAD_MSGPACK),  # deep nesting
    ],
)
def test_remote_garbage_is_frame_error(data: bytes, code: str) -> None:
    with pytest.raises(FrameError) as info:
        FrameDecoder(max_frame=4096 if len(data) > 100 else 100).feed(data)
    assert info.value.code == code
    assert info.value.message


def test_oversize_rejected_from_header_alone() -> None:
    dec = FrameDecoder(max_frame=1000)
    assert dec.feed(struct.pack(">I", 1000)[:3]) == []
    with pytest.raises(FrameError) as info:
        dec.feed(struct.pack(">I", 1001)[3:])  # completes a header claiming 1001 bytes
    assert info.value.code == E_TOO_LARGE
    assert dec.buffered == 0  # nothing of the would-be body was kept


@given(n=st.integers(min_value=0, max_value=2**32 - 1), max_frame=st.integers(1, 10**6))
def test_header_alone_decides_oversize(n: int, max_frame: int) -> None:
    dec = FrameDecoder(max_frame)
    header = struct.pack(">I", n)
    if n > max_frame:
        with pytest.raises(FrameError):
            dec.feed(header)
    elif n > 0:
        assert dec.feed(header) == []
        assert dec.in_frame


def test_errors_are_sticky() -> None:
    dec = FrameDecoder(100)
    with pytest.raises(FrameError):
        dec.feed(raw([1]))
    with pytest.raises(FrameError):
        dec.feed(encode_frame({"t": "fine"}))
    with pytest.raises(FrameError):
        dec.feed()


def test_good_frames_before_garbage_are_returned_then_error() -> None:
    dec = FrameDecoder(100)
    good = encode_frame({"t": "a"}) + encode_frame({"t": "b"})
    frames = dec.feed(good + raw([1]))
    assert [f["t"] for f in frames] == ["a", "b"]
    assert dec.error is not None
    with pytest.raises(FrameError) as info:
        dec.feed()
    assert info.value.code == E_NOT_A_MAP


# -- decoding: incremental --------------------------------------------------------------


def test_byte_at_a_time() -> None:
    bodies = [{"t": "a", "id": i, "x": b"y" * i} for i in range(20)]
    data = encode_frames(bodies)
    boundaries, pos = set(), 0
    for b in bodies:
        pos += len(encode_frame(b))
        boundaries.add(pos)
    dec = FrameDecoder()
    out = []
    for i in range(len(data)):
        out.extend(dec.feed(data[i : i + 1]))
        assert dec.in_frame == (i + 1 not in boundaries)
    assert [f["id"] for f in out] == list(range(20))
    assert dec.buffered == 0 and not dec.in_frame


def test_many_frames_with_a_partial_tail_exercise_compaction() -> None:
    # Feed 300 KB of small frames in 7 KB slices: the consumed prefix passes the
    # compaction threshold many times while a partial frame is pending.
    bodies = [{"t": "p", "id": i, "pad": b"q" * (i % 50)} for i in range(6000)]
    data = encode_frames(bodies)
    dec = FrameDecoder()
    ids = []
    for off in range(0, len(data), 7001):
        ids.extend(f["id"] for f in dec.feed(data[off : off + 7001]))
    assert ids == list(range(6000))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=6,
)
frame_bodies = st.builds(
    lambda t, rid, extra: {
        **{k: v for k, v in extra.items() if k not in ("t", "id", "v")},
        "t": t,
        **({} if rid is None else {"id": rid}),
    },
    st.text(max_size=10),
    st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    st.dictionaries(st.text(max_size=8), msgpack_values, max_size=4),
)


@settings(max_examples=100, deadline=None)
@given(
    bodies=st.lists(frame_bodies, max_size=8),
    cuts=st.lists(st.integers(0, 10**6), max_size=12),
)
def test_arbitrary_chunking_decodes_the_same_frames(
    bodies: list[dict[str, Any]], cuts: list[int]
) -> None:
    data = encode_frames(bodies)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    dec = FrameDecoder()
    out: list[dict[str, Any]] = []
    for a, b in itertools.pairwise(points):
        out.extend(dec.feed(data[a:b]))
    assert out == [{**b, "v": PROTOCOL_VERSION} for b in bodies]
    assert dec.buffered == 0


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.lists(frame_bodies, max_size=2),
    garbage=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    max_frame=st.integers(1, 400),
)
def test_garbage_raises_only_frame_error(
    prefix: list[dict[str, Any]], garbage: bytes, cuts: list[int], max_frame: int
) -> None:
    data = b"".join(encode_frame(b) for b in prefix) + garbage
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    dec = FrameDecoder(max_frame)
    try:
        for a, b in itertools.pairwise(points):
            for frame in dec.feed(data[a:b]):
                assert isinstance(frame, dict)
                assert isinstance(frame["t"], str)
                assert frame["v"] == PROTOCOL_VERSION
        dec.feed()
    except FrameError as exc:
        assert exc.code
    assert dec.buffered <= max_frame + 4  # never more than one frame is buffered
