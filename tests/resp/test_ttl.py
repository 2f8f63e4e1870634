"""TTLs in the Redis door (rkv.resp.ttl, rkv.resp.ttlargs) against the fake node with leases
(tests/resp/fakes.py): each row runs commands on a key set, checks each reply (Redis' texts)
and then the keys, the TTL lease each is attached to and the leases left over (a lease of
the door's is revoked when its key moves to another; one not the door's is never revoked)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from rkv.resp import Session, Settings, execute
from rkv.resp.context import Context
from rkv.resp.ttl import RESP_LEASES
from rkv.resp.wire import OK, Err

from .fakes import FakeBackend

OURS = RESP_LEASES | 7
"""A lease of the door's range, attached to key `t` in the rows' starting state."""
THEIRS = 5
"""A lease a native client granted, attached to key `n`."""
NOT_INT = Err("ERR value is not an integer or out of range")
SYNTAX = Err("ERR syntax error")


@dataclass
class Row:
    steps: list[tuple[list[str], Any]]
    keys: dict[str, tuple[bytes, int | None]]
    """After the steps: each key's value and its lease's TTL (None: no lease)."""
    leases: set[int] = field(default_factory=set)
    """The leases left holding no key (OURS and THEIRS start with one key each)."""
    max_leases: int = 1000


START = {"a": b"0", "t": b"1", "n": b"2"}
"""`a` without a TTL, `t` on OURS (60 s), `n` on THEIRS (30 s)."""
SAME = {"a": (b"0", None), "t": (b"1", 60_000), "n": (b"2", 30_000)}


def future(s: int) -> str:
    """A Unix time `s` seconds after the step runs (the rows are built at import)."""
    return f"now+{s}"


def arg(a: str) -> bytes:
    if a.startswith("now+"):
        return str(int(time.time()) + int(a[4:])).encode()
    return a.encode()


ROWS: dict[str, Row] = {
    "set ex": Row([(["SET", "k", "v", "EX", "10"], OK)], {**SAME, "k": (b"v", 10_000)}),
    "set px below the minimum": Row(
        [(["SET", "k", "v", "PX", "100"], OK), (["PTTL", "k"], 1000), (["TTL", "k"], 1)],
        {**SAME, "k": (b"v", 1000)},
    ),
    "set exat": Row(
        [(["SET", "k", "v", "EXAT", future(100)], OK), (["TTL", "k"], 100)],
        {**SAME, "k": (b"v", None)},  # checked by TTL: the TTL was computed at the door
    ),
    "set exat in the past deletes": Row(
        [(["SET", "a", "v", "EXAT", "1"], OK), (["EXISTS", "a"], 0)],
        {"t": SAME["t"], "n": SAME["n"]},
    ),
    "set ex replaces our lease": Row(
        [(["SET", "t", "v", "EX", "20"], OK)], {**SAME, "t": (b"v", 20_000)}, leases={THEIRS}
    ),
    "set ex leaves theirs": Row(
        [(["SET", "n", "v", "EX", "20"], OK)], {**SAME, "n": (b"v", 20_000)}, leases={THEIRS}
    ),
    "plain set clears the ttl": Row(
        [(["SET", "t", "v"], OK), (["TTL", "t"], -1)],
        {**SAME, "t": (b"v", None)},
        leases={OURS, THEIRS},  # the lease holds no key now: it expires on its own
    ),
    "incr keeps the ttl": Row(
        [(["INCR", "t"], 2), (["TTL", "t"], 60)],
        {**SAME, "t": (b"2", 60_000)},
        leases={OURS, THEIRS},
    ),
    "append keeps the ttl": Row(
        [(["APPEND", "t", "0"], 2), (["TTL", "t"], 60)],
        {**SAME, "t": (b"10", 60_000)},
        leases={OURS, THEIRS},
    ),
    "set keepttl": Row(
        [(["SET", "t", "v", "KEEPTTL"], OK), (["SET", "a", "w", "KEEPTTL"], OK)],
        {**SAME, "t": (b"v", 60_000), "a": (b"w", None)},
    ),
    "set keepttl get nx": Row(
        [(["SET", "t", "v", "KEEPTTL", "GET", "NX"], b"1")],
        SAME,
    ),
    "set nx ex on a present key": Row(
        [(["SET", "a", "v", "NX", "EX", "10"], None), (["TTL", "a"], -1)], SAME
    ),
    "set xx get ex": Row(
        [(["SET", "a", "v", "XX", "GET", "EX", "10"], b"0")], {**SAME, "a": (b"v", 10_000)}
    ),
    "set ex errors": Row(
        [
            (["SET", "k", "v", "EX", "0"], Err("ERR invalid expire time in 'set' command")),
            (["SET", "k", "v", "PX", "-5"], Err("ERR invalid expire time in 'set' command")),
            (["SET", "k", "v", "EX", "x"], NOT_INT),
            (["SET", "k", "v", "EX", "1", "PX", "1"], SYNTAX),
            (["SET", "k", "v", "KEEPTTL", "EX", "1"], SYNTAX),
            (["SET", "k", "v", "EX"], SYNTAX),
            (
                ["SET", "k", "v", "EX", "9223372036854775807"],
                Err("ERR invalid expire time in 'set' command"),
            ),
        ],
        SAME,
    ),
    "expire": Row(
        [
            (["EXPIRE", "a", "10"], 1),
            (["TTL", "a"], 10),
            (["PTTL", "a"], 10_000),
            (["EXPIRE", "missing", "10"], 0),
        ],
        {**SAME, "a": (b"0", 10_000)},
    ),
    "pexpire replaces our lease": Row(
        [(["PEXPIRE", "t", "5000"], 1)], {**SAME, "t": (b"1", 5000)}, leases={THEIRS}
    ),
    "expireat": Row(
        [(["EXPIREAT", "a", future(50)], 1), (["TTL", "a"], 50)], SAME | {"a": (b"0", None)}
    ),
    "expire in the past deletes": Row(
        [(["EXPIRE", "t", "-1"], 1), (["EXISTS", "t"], 0), (["PEXPIREAT", "a", "1"], 1)],
        {"n": SAME["n"]},
        leases={THEIRS},
    ),
    "expire conditions": Row(
        [
            (["EXPIRE", "t", "10", "NX"], 0),
            (["EXPIRE", "a", "10", "XX"], 0),
            (["EXPIRE", "a", "10", "GT"], 0),  # no TTL counts as infinite
            (["EXPIRE", "t", "10", "GT"], 0),  # 60 s now
            (["EXPIRE", "t", "100", "lt"], 0),
            (["EXPIRE", "t", "100", "GT"], 1),
            (["EXPIRE", "a", "10", "LT"], 1),
            (["EXPIRE", "n", "10", "XX", "LT"], 1),
        ],
        {"a": (b"0", 10_000), "t": (b"1", 100_000), "n": (b"2", 10_000)},
        leases={THEIRS},
    ),
    "expire errors": Row(
        [
            (
                ["EXPIRE", "a", "10", "NX", "XX"],
                Err("ERR NX and XX, GT or LT options at the same time are not compatible"),
            ),
            (
                ["EXPIRE", "a", "10", "GT", "LT"],
                Err("ERR GT and LT options at the same time are not compatible"),
            ),
            (["EXPIRE", "a", "10", "SOON"], Err("ERR Unsupported option SOON")),
            (["EXPIRE", "a", "ten"], NOT_INT),
            (["EXPIRE", "a"], Err("ERR wrong number of arguments for 'expire' command")),
            (
                ["PEXPIRE", "a", "9223372036854775807"],
                Err("ERR invalid expire time in 'pexpire' command"),
            ),
        ],
        SAME,
    ),
    "ttl and pttl": Row(
        [
            (["TTL", "missing"], -2),
            (["PTTL", "missing"], -2),
            (["TTL", "a"], -1),
            (["PTTL", "a"], -1),
            (["TTL", "t"], 60),
            (["TTL", "n"], 30),  # a native client's lease shows too
            (["EXPIRETIME", "a"], -1),
            (["PEXPIRETIME", "missing"], -2),
        ],
        SAME,
    ),
    "persist": Row(
        [
            (["PERSIST", "t"], 1),
            (["PERSIST", "t"], 0),
            (["PERSIST", "a"], 0),
            (["PERSIST", "x"], 0),
        ],
        {**SAME, "t": (b"1", None)},
        leases={THEIRS},
    ),
    "persist leaves theirs": Row(
        [(["PERSIST", "n"], 1)], {**SAME, "n": (b"2", None)}, leases={OURS, THEIRS}
    ),
    "getex": Row(
        [
            (["GETEX", "a"], b"0"),
            (["GETEX", "a", "EX", "10"], b"0"),
            (["GETEX", "t", "PERSIST"], b"1"),
            (["GETEX", "missing", "EX", "10"], None),
            (["GETEX", "a", "EX", "0"], Err("ERR invalid expire time in 'getex' command")),
            (["GETEX", "a", "SOON"], SYNTAX),
            (["GETEX", "a", "EX", "1", "PX", "1"], SYNTAX),
        ],
        {**SAME, "a": (b"0", 10_000), "t": (b"1", None)},
        leases={THEIRS},
    ),
    "setex and psetex": Row(
        [
            (["SETEX", "k", "10", "v"], OK),
            (["PSETEX", "t", "2500", "w"], OK),
            (["SETEX", "k", "0", "v"], Err("ERR invalid expire time in 'setex' command")),
            (["PSETEX", "k", "x", "v"], NOT_INT),
        ],
        {**SAME, "k": (b"v", 10_000), "t": (b"w", 2500)},
        leases={THEIRS},
    ),
    "a full lease table": Row(
        [
            (
                ["SET", "k", "v", "EX", "10"],
                Err(
                    "ERR rkv: no room for another key with a TTL: the cluster's lease table is "
                    "full (the store's max_leases)"
                ),
            ),
            (
                ["EXPIRE", "a", "10"],
                Err(
                    "ERR rkv: no room for another key with a TTL: the cluster's lease table is full (the store's max_leases)"
                ),
            ),
        ],
        SAME,
        max_leases=2,
    ),
}


def setup(max_leases: int) -> tuple[Context, FakeBackend]:
    b = FakeBackend()
    b.max_leases = max_leases
    b.kv.update({k.encode(): v for k, v in START.items()})
    b.leases.update({OURS: 60_000, THEIRS: 30_000})
    b.attached.update({b"t": OURS, b"n": THEIRS})
    ctx = Context(Session(conn_id=1, settings=Settings(retry_seconds=1.0)), b)
    return ctx, b


@pytest.mark.parametrize("name", list(ROWS))
async def test_ttl(name: str) -> None:
    row = ROWS[name]
    ctx, b = setup(row.max_leases)
    for args, want in row.steps:
        got = await execute(ctx, [arg(a) for a in args])
        if name in ("set exat", "expireat") and args[0] == "TTL":
            assert got in (want - 1, want), args  # a second may pass between the two
        else:
            assert got == want, args
    keys = {
        k.decode(): (v, b.leases[b.attached[k]] if k in b.attached else None)
        for k, v in b.kv.items()
    }
    if name == "set exat":
        keys["k"] = (keys["k"][0], None)
    if name == "expireat":
        keys["a"] = (keys["a"][0], None)
    assert keys == row.keys
    holding = set(b.attached.values())
    assert set(b.leases) - holding == row.leases - holding, "leases left over"
    new = holding - {OURS, THEIRS}
    assert all(lid >= RESP_LEASES for lid in new), "the door grants leases in its own range"


async def test_expiretime_is_now_plus_the_remaining() -> None:
    ctx, _ = setup(1000)
    before = time.time()
    got = await execute(ctx, [b"PEXPIRETIME", b"t"])
    assert isinstance(got, int)
    assert before * 1000 + 60_000 - 1 <= got <= time.time() * 1000 + 60_000 + 1
    assert await execute(ctx, [b"EXPIRETIME", b"t"]) in range(int(before) + 59, int(before) + 62)


async def test_a_lease_that_expired_before_it_was_read_is_no_ttl_left() -> None:
    ctx, b = setup(1000)
    b.left[OURS] = 0
    assert await execute(ctx, [b"PTTL", b"t"]) == 0
    del b.leases[OURS]  # gone between the key's read and the lease's
    assert await execute(ctx, [b"PTTL", b"t"]) == 0


async def test_a_concurrent_write_is_not_clobbered_and_the_command_starts_over() -> None:
    """A write of the key between EXPIRE's read and its txn: the txn's mod compare fails,
    the lease granted for it is revoked, and EXPIRE starts over on the new value."""
    ctx, b = setup(1000)
    real = b.request
    raced = False

    async def racing(frame: dict[str, Any]) -> dict[str, Any]:
        nonlocal raced
        if frame["t"] == "lease_grant" and not raced:
            raced = True
            b.kv[b"a"] = b"other"
            b.mods[b"a"] = 999
        return await real(frame)

    b.request = racing  # type: ignore[method-assign]
    assert await execute(ctx, [b"EXPIRE", b"a", b"10"]) == 1
    assert b.kv[b"a"] == b"other" and b.leases[b.attached[b"a"]] == 10_000
    assert set(b.leases) == {OURS, THEIRS, b.attached[b"a"]}  # the first grant was revoked
    kinds = [f["t"] for f in b.requests]
    assert kinds == ["get", "lease_grant", "txn", "lease_revoke", "get", "lease_grant", "txn"]
