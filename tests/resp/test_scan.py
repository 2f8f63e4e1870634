"""SCAN with real cursors and KEYS against a fake node (tests/resp/fakes.py): pages in key
order, COUNT, MATCH with the same matcher as KEYS, the cursor table's bounds, invalid
cursors, retried pages, one read per page from the cursor's key (`after`), KEYS paging
up to its bound, and (hypothesis) every key present for the
whole scan is returned while other keys come and go between pages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkv.resp import Session, Settings, execute, keyscan
from rkv.resp.context import Context
from rkv.resp.cursors import Position, ScanCursors
from rkv.resp.wire import Err

from .fakes import FakeBackend


def make(keys: list[bytes] | None = None) -> tuple[Context, FakeBackend]:
    backend = FakeBackend()
    backend.kv.update(dict.fromkeys(keys or [], b"v"))
    return Context(Session(conn_id=1, settings=Settings(retry_seconds=1.0)), backend), backend


async def run(ctx: Context, *args: str | bytes) -> Any:
    return await execute(ctx, [a.encode() if isinstance(a, str) else a for a in args])


async def scan_all(ctx: Context, *opts: str) -> tuple[list[bytes], list[list[bytes]]]:
    cursor, out, pages = b"0", [], []
    while True:
        reply = await run(ctx, "SCAN", cursor, *opts)
        assert not isinstance(reply, Err), reply
        cursor, page = reply
        out += page
        pages.append(page)
        if cursor == b"0":
            return out, pages
        assert 0 < int(cursor) < 1 << 64


KEYS = [b"k%02d" % i for i in range(25)]


async def test_pages_in_key_order_count_keys_each() -> None:
    ctx, _ = make(list(reversed(KEYS)))
    got, pages = await scan_all(ctx, "COUNT", "10")
    assert got == KEYS
    assert [len(p) for p in pages] == [10, 10, 5]
    got, pages = await scan_all(ctx)  # COUNT 10 by default
    assert [len(p) for p in pages] == [10, 10, 5]
    got, pages = await scan_all(ctx, "COUNT", "25")
    assert pages == [KEYS]  # the last page ends with cursor 0, not an empty page after it


async def test_match_filters_the_examined_keys() -> None:
    ctx, _ = make([*KEYS, b"j1", b"z"])
    got, pages = await scan_all(ctx, "MATCH", "k1*", "COUNT", "4")
    assert got == [b"k%02d" % i for i in range(10, 20)]
    assert [len(p) for p in pages] == [4, 4, 2]  # only the prefix k1 is read
    got, pages = await scan_all(ctx, "MATCH", "*5", "COUNT", "10")
    assert got == [b"k05", b"k15"]  # COUNT keys examined per page; a page may hold none
    assert len(pages) == 3


@pytest.mark.parametrize("pattern", ["*", "k*", "k?5", "*[0-1]", "k\\*", "[^k]*", "nothing"])
async def test_keys_and_scan_match_alike(pattern: str) -> None:
    ctx, _ = make([*KEYS, b"k*", b"j1"])
    got, _ = await scan_all(ctx, "MATCH", pattern, "COUNT", "3")
    assert got == await run(ctx, "KEYS", pattern)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["SCAN", "123"], "ERR invalid cursor"),  # never issued
        (["SCAN", "x"], "ERR invalid cursor"),
        (["SCAN", "-1"], "ERR invalid cursor"),
        (["SCAN", "18446744073709551616"], "ERR invalid cursor"),  # 2**64
        (["SCAN", "0", "COUNT", "0"], "ERR syntax error"),
        (["SCAN", "0", "COUNT", "x"], "ERR value is not an integer or out of range"),
        (["SCAN", "0", "MATCH"], "ERR syntax error"),
        (["SCAN", "0", "FOO", "bar"], "ERR syntax error"),
        (["SCAN"], "ERR wrong number of arguments for 'scan' command"),
    ],
)
async def test_errors(args: list[str], error: str) -> None:
    ctx, backend = make(KEYS)
    assert await run(ctx, *args) == Err(error)
    assert backend.requests == []


async def test_type_other_than_string_is_empty() -> None:
    ctx, _ = make(KEYS)
    assert await run(ctx, "SCAN", "0", "TYPE", "hash") == [b"0", []]
    got, _ = await scan_all(ctx, "TYPE", "string", "COUNT", "100")
    assert got == KEYS


async def test_a_retried_page_gives_the_same_keys_on_any_connection() -> None:
    ctx, backend = make(KEYS)
    cursor, first = await run(ctx, "SCAN", "0", "COUNT", "5")
    assert first == KEYS[:5]
    page = await run(ctx, "SCAN", cursor, "COUNT", "5")
    again = await run(ctx, "SCAN", cursor, "COUNT", "5")
    other = Context(Session(conn_id=2, settings=ctx.session.settings), backend)
    elsewhere = await run(other, "SCAN", cursor, "COUNT", "5")  # a pooled client's next call
    assert page[1] == again[1] == elsewhere[1] == KEYS[5:10]
    assert len({page[0], again[0], elsewhere[0]}) == 3  # each page a new cursor


async def test_a_page_is_one_read_after_the_cursor_so_scans_go_past_10000_keys() -> None:
    keys = [b"k%05d" % i for i in range(12_000)]
    ctx, backend = make(keys)
    got, pages = await scan_all(ctx, "COUNT", "1000")
    assert got == keys and len(pages) == 12
    assert len(backend.requests) == 12  # one read per page
    cursor, _ = await run(ctx, "SCAN", "0", "COUNT", "10")
    before = len(backend.requests)
    await run(ctx, "SCAN", cursor, "COUNT", "10")
    assert [(f["p"], f.get("after"), f["limit"]) for f in backend.requests[before:]] == [
        (b"", b"k00009", 11)
    ]


@pytest.mark.parametrize(
    ("pattern", "last", "want"),
    [
        ("*", b"a049", [b"a049x", b"a050", b"a051"]),  # right after the cursor's key
        ("a*", b"a098", [b"a099"]),
        ("b*", b"a050", [b"b"]),  # MATCH changed: the prefix's keys after the cursor
        ("a*", b"b", []),  # the cursor is past the prefix: the scan ends
    ],
)
async def test_a_page_starts_right_after_the_cursor(
    pattern: str, last: bytes, want: list[bytes]
) -> None:
    ctx, _ = make([b"a%03d" % i for i in range(100)] + [b"a049x", b"b"])
    cursor = ctx.session.settings.cursors.issue(1, Position(last))
    reply = await run(ctx, "SCAN", str(cursor), "MATCH", pattern, "COUNT", "3")
    assert reply[1] == want and (reply[0] != b"0") == (len(want) == 3)


async def test_keys_pages_past_10000_keys_up_to_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, backend = make([b"k%05d" % i for i in range(25_000)] + [b"z"])
    got = await run(ctx, "KEYS", "k*")
    assert got == [b"k%05d" % i for i in range(25_000)]
    assert [f.get("after") for f in backend.requests] == [None, b"k09999", b"k19999"]
    monkeypatch.setattr(keyscan, "MAX_KEYS", 20_000)
    reply = await run(ctx, "KEYS", "k*")
    assert isinstance(reply, Err) and "more than 20000 keys start with b'k'" in reply.text
    assert await run(ctx, "KEYS", "k2*") == [b"k%05d" % i for i in range(20_000, 25_000)]


def test_the_cursor_table_is_bounded_and_evicts_the_oldest() -> None:
    t = ScanCursors(most=4, per_conn=2)
    a1, a2 = t.issue(1, Position(b"a1")), t.issue(1, Position(b"a2"))
    a3 = t.issue(1, Position(b"a3"))  # connection 1's oldest goes
    assert t.get(a1) is None and t.get(a2) == Position(b"a2") and len(t) == 2
    b1, b2 = t.issue(2, Position(b"b1")), t.issue(2, Position(b"b2"))
    assert t.get(a2) is not None  # used: now the most recent
    t.issue(3, Position(b"c1"))  # the table is full: the least recently used goes
    assert t.get(a3) is None and all(t.get(c) is not None for c in (a2, b1, b2))
    assert 0 not in t._table and len(t) == 4


# keys present throughout (`stable`), and between pages keys that come and go
@settings(max_examples=60, deadline=None)
@given(
    stable=st.sets(st.binary(min_size=1, max_size=3), max_size=40),
    churn=st.lists(
        st.tuples(st.booleans(), st.binary(min_size=1, max_size=3)), min_size=1, max_size=60
    ),
    count=st.integers(1, 7),
)
async def test_every_key_present_throughout_is_returned(
    stable: set[bytes], churn: list[tuple[bool, bytes]], count: int
) -> None:
    ctx, backend = make(sorted(stable))
    cursor, got, step = b"0", [], 0
    while True:
        cursor, page = await run(ctx, "SCAN", cursor, "COUNT", str(count))
        got += page
        if cursor == b"0":
            break
        for add, k in churn[step : step + 3]:  # other clients write between pages
            if k in stable:
                continue
            if add:
                backend.kv[k] = b"x"
            else:
                backend.kv.pop(k, None)
        step += 3
    assert stable <= set(got)
    assert got == sorted(set(got))  # in key order, each once
