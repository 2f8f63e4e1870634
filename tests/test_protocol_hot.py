"""rkv.protocol.hot: the client's put and get frames are exactly what the request classes send
(key order included), and anything the classes refuse is refused the same way."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rkv.codec import MAX_ID_LEN, MAX_KEY_LEN, MAX_LEASE_ID, MAX_U64, MAX_VALUE_LEN
from rkv.protocol import GetRequest, PutRequest
from rkv.protocol.fields import ProtocolError
from rkv.protocol.hot import get_frame, put_frame

C = b"c" * 16


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a == b
    assert list(a) == list(b)  # the same bytes on the wire
    assert msgpack.packb(a) == msgpack.packb(b)


@given(
    key=st.binary(min_size=1, max_size=64),
    value=st.binary(max_size=64),
    client_id=st.binary(max_size=MAX_ID_LEN),
    seq=st.integers(1, MAX_U64),
    lease=st.integers(0, MAX_LEASE_ID),
)
def test_put_frame_is_the_request_frame(
    key: bytes, value: bytes, client_id: bytes, seq: int, lease: int
) -> None:
    want = PutRequest(key, value, client_id=client_id, seq=seq, lease=lease).to_frame()
    _same(put_frame(key, value, client_id, seq, lease), want)


@given(key=st.binary(min_size=1, max_size=64), stale=st.booleans())
def test_get_frame_is_the_request_frame(key: bytes, stale: bool) -> None:
    _same(get_frame(key, stale), GetRequest(key, stale=stale).to_frame())


LIMITS: list[tuple[str, tuple[Any, ...]]] = [
    ("longest key", (b"k" * MAX_KEY_LEN, b"v", C, 1, 0)),
    ("empty value", (b"k", b"", C, 1, 0)),
    ("largest seq and lease", (b"k", b"v", C, MAX_U64, MAX_LEASE_ID)),
    ("longest client id", (b"k", b"v", b"i" * MAX_ID_LEN, 1, 0)),
]


@pytest.mark.parametrize(("name", "args"), LIMITS, ids=[n for n, _ in LIMITS])
def test_put_frame_at_the_limits(name: str, args: tuple[Any, ...]) -> None:
    k, v, c, s, lease = args
    _same(put_frame(*args), PutRequest(k, v, client_id=c, seq=s, lease=lease).to_frame())


BAD_PUTS: list[tuple[str, tuple[Any, ...]]] = [
    ("empty key", (b"", b"v", C, 1, 0)),
    ("key too long", (b"k" * (MAX_KEY_LEN + 1), b"v", C, 1, 0)),
    ("str key", ("k", b"v", C, 1, 0)),
    ("value too long", (b"k", b"v" * (MAX_VALUE_LEN + 1), C, 1, 0)),
    ("bytearray value", (b"k", bytearray(b"v"), C, 1, 0)),
    ("client id too long", (b"k", b"v", b"i" * (MAX_ID_LEN + 1), 1, 0)),
    ("seq 0", (b"k", b"v", C, 0, 0)),
    ("seq past u64", (b"k", b"v", C, MAX_U64 + 1, 0)),
    ("bool seq", (b"k", b"v", C, True, 0)),
    ("negative lease", (b"k", b"v", C, 1, -1)),
    ("lease too large", (b"k", b"v", C, 1, MAX_LEASE_ID + 1)),
    ("bool lease", (b"k", b"v", C, 1, True)),
]


@pytest.mark.parametrize(("name", "args"), BAD_PUTS, ids=[n for n, _ in BAD_PUTS])
def test_put_frame_refuses_what_the_request_refuses(name: str, args: tuple[Any, ...]) -> None:
    k, v, c, s, lease = args
    with pytest.raises(ProtocolError) as want:
        PutRequest(k, v, client_id=c, seq=s, lease=lease)
    with pytest.raises(ProtocolError) as got:
        put_frame(*args)
    assert str(got.value) == str(want.value)


BAD_GETS: list[tuple[str, Any, Any]] = [
    ("empty key", b"", False),
    ("key too long", b"k" * (MAX_KEY_LEN + 1), False),
    ("int stale", b"k", 1),
    ("memoryview key", memoryview(b"k"), False),
]


@pytest.mark.parametrize(("name", "key", "stale"), BAD_GETS, ids=[n for n, _, _ in BAD_GETS])
def test_get_frame_refuses_what_the_request_refuses(name: str, key: Any, stale: Any) -> None:
    with pytest.raises(ProtocolError) as want:
        GetRequest(key, stale=stale)
    with pytest.raises(ProtocolError) as got:
        get_frame(key, stale)
    assert str(got.value) == str(want.value)
