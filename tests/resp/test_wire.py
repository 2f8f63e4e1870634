"""rkv.resp.wire: the request parser (over hiredis, with its limits) and the reply encoder.

Property tests: any commands, encoded as RESP multibulk and cut into any chunks, come out of
the parser whole and in order (mixed with inline commands too); any reply value encodes to
bytes that hiredis (a client parser nobody here wrote) reads back as the same value, in RESP2
and RESP3. Table tests: Redis' protocol error texts for what is over a limit or garbage.
"""

from __future__ import annotations

import itertools
from typing import Any

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkv.resp.wire import (
    MAX_INLINE,
    OK,
    Err,
    RequestParser,
    RespProtocolError,
    RSet,
    Simple,
    encode,
    split_inline,
)


def multibulk(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def parser(**kw: int) -> RequestParser:
    limits = {"max_args": 1000, "max_bulk": 1 << 16, "max_request": 1 << 20, **kw}
    return RequestParser(**limits)


def feed_in_chunks(p: RequestParser, data: bytes, cuts: list[int]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        out += p.feed(data[a:b])
    return out


commands = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), max_size=8)
inline_word = st.binary(min_size=1, max_size=10).filter(
    lambda b: not any(c in b" \t\r\n\"'\x0b\x0c" for c in b)
)


@settings(max_examples=300, deadline=None)
@given(commands, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_multibulk_commands_in_any_chunks(cmds: list[list[bytes]], cuts: list[int]) -> None:
    data = b"".join(multibulk(c) for c in cmds)
    p = parser()
    assert feed_in_chunks(p, data, cuts) == cmds
    assert not p.pending


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("mb"), st.lists(st.binary(max_size=20), min_size=1, max_size=4)),
            st.tuples(st.just("inline"), st.lists(inline_word, min_size=1, max_size=4)),
        ),
        max_size=8,
    ),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
)
def test_inline_and_multibulk_mixed_keep_their_order(
    cmds: list[tuple[str, list[bytes]]], cuts: list[int]
) -> None:
    data = b"".join(
        multibulk(args) if kind == "mb" else b" ".join(args) + b"\r\n" for kind, args in cmds
    )
    # an inline word may start with '*': then Redis reads a multibulk, and so do we
    cmds = [c for c in cmds if c[0] == "mb" or not c[1][0].startswith(b"*")]
    data = b"".join(
        multibulk(args) if kind == "mb" else b" ".join(args) + b"\r\n" for kind, args in cmds
    )
    assert feed_in_chunks(parser(), data, cuts) == [args for _, args in cmds]


def test_empty_multibulk_and_blank_lines_are_skipped() -> None:
    p = parser()
    assert p.feed(b"*0\r\n\r\n*1\r\n$4\r\nPING\r\n*-1\r\nPING\n") == [[b"PING"], [b"PING"]]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"*1001\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*2147483648\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$65537\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n:5\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*1\r\n$3\r\nabcXY", "ERR Protocol error: bulk string not ended by CRLF"),
        (b"*" + b"1" * (MAX_INLINE + 1), "ERR Protocol error: too big mbulk count string"),
        (b"A" * (MAX_INLINE + 1), "ERR Protocol error: too big inline request"),
        (b'SET "abc\r\n', "ERR Protocol error: unbalanced quotes in request"),
    ],
)
def test_garbage_and_limits(data: bytes, error: str) -> None:
    with pytest.raises(RespProtocolError) as e:
        parser().feed(data)
    assert str(e.value) == error


def test_a_request_over_max_request_bytes_is_refused_before_it_is_buffered() -> None:
    p = parser(max_request=100)
    with pytest.raises(RespProtocolError, match="request larger than 100 bytes"):
        p.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$90\r\n")


@pytest.mark.parametrize(
    ("line", "args"),
    [
        (b"PING", [b"PING"]),
        (b"  set  a   b ", [b"set", b"a", b"b"]),
        (b'set k "a b\\n\\x41"', [b"set", b"k", b"a b\nA"]),
        (b"set k 'it''s'", None),
        (b"set k 'it\\'s'", [b"set", b"k", b"it's"]),
        (b'echo ""', [b"echo", b""]),
    ],
)
def test_inline_splitting_as_redis(line: bytes, args: list[bytes] | None) -> None:
    if args is None:
        with pytest.raises(RespProtocolError):
            split_inline(line)
    else:
        assert split_inline(line) == args


# -- the encoder, read back by hiredis ---------------------------------------------------------

scalars = st.one_of(
    st.binary(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=True),
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
        max_size=10,
    ).map(Simple),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.binary(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)


def expected(v: Any, proto: int) -> Any:
    """What hiredis (bytes mode) reads back for our reply `v`."""
    if isinstance(v, Simple):
        return v.text.encode()
    if isinstance(v, bool):
        return v if proto == 3 else int(v)
    if isinstance(v, float):
        if proto == 3:
            return v
        text = encode(v, 2).split(b"\r\n")[1]  # a bulk string in RESP2
        assert float(text) == v
        return text
    if isinstance(v, list):
        return [expected(x, proto) for x in v]
    if isinstance(v, dict):
        items = {k: expected(x, proto) for k, x in v.items()}
        if proto == 3:
            return items
        return [y for k, x in items.items() for y in (k, x)]
    return v


def read_back(data: bytes) -> Any:
    incomplete = object()
    r = hiredis.Reader(notEnoughData=incomplete)
    r.feed(data)
    out = r.gets()
    assert out is not incomplete, "incomplete reply"
    assert r.gets() is incomplete, "more than one reply"
    return out


@settings(max_examples=300, deadline=None)
@given(values, st.sampled_from([2, 3]))
def test_hiredis_reads_our_replies_back(v: Any, proto: int) -> None:
    got = read_back(encode(v, proto))
    assert got == expected(v, proto)


@pytest.mark.parametrize(
    ("value", "resp2", "resp3"),
    [
        (OK, b"+OK\r\n", b"+OK\r\n"),
        (Err("ERR bad\r\nthing"), b"-ERR bad  thing\r\n", b"-ERR bad  thing\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (float("inf"), b"$3\r\ninf\r\n", b",inf\r\n"),
        ({b"a": 1}, b"*2\r\n$1\r\na\r\n:1\r\n", b"%1\r\n$1\r\na\r\n:1\r\n"),
        (RSet((b"x",)), b"*1\r\n$1\r\nx\r\n", b"~1\r\n$1\r\nx\r\n"),
        ("é", b"$2\r\n\xc3\xa9\r\n", b"$2\r\n\xc3\xa9\r\n"),
        ([], b"*0\r\n", b"*0\r\n"),
    ],
)
def test_encoding_of_each_type(value: Any, resp2: bytes, resp3: bytes) -> None:
    assert encode(value, 2) == resp2
    assert encode(value, 3) == resp3


def test_error_replies_read_as_errors() -> None:
    assert isinstance(read_back(encode(Err("ERR x"), 3)), hiredis.ReplyError)
