"""MULTI/EXEC/DISCARD/WATCH/UNWATCH against a fake node (tests/resp/fakes.py, which runs txns
with the state machine's own code and keeps each key's mod revision): what is queued, that
EXEC is one txn whose replies have each command's own type, the errors that make EXEC reply
EXECABORT, the ones that do not, and WATCH's revisions (a second connection writes)."""

from __future__ import annotations

from typing import Any

import pytest

from rkv.resp import Session, Settings, execute
from rkv.resp.context import Context
from rkv.resp.multi import MAX_QUEUED
from rkv.resp.wire import NULL_ARRAY, OK, Err, Simple, encode

from .fakes import FakeBackend

Q = Simple("QUEUED")
ABORT = Err("EXECABORT Transaction discarded because of previous errors.")


def connections(how_many: int = 2, **kv: bytes) -> tuple[list[Context], FakeBackend]:
    backend = FakeBackend()
    backend.kv.update({k.encode(): v for k, v in kv.items()})
    settings = Settings(retry_seconds=1.0)
    return [
        Context(Session(conn_id=i + 1, settings=settings), backend) for i in range(how_many)
    ], backend


async def run(ctx: Context, *args: str | bytes) -> Any:
    return await execute(ctx, [a.encode() if isinstance(a, str) else a for a in args])


async def test_exec_runs_every_queued_command_as_one_txn_with_its_own_reply() -> None:
    (c, _), backend = connections(g=b"old", h=b"hv", d1=b"x", z=b"zz")
    steps: list[tuple[list[str], Any]] = [
        (["SET", "a", "1"], OK),
        (["GET", "a"], b"1"),  # a get sees the writes queued before it
        (["INCR", "n"], 1),
        (["MGET", "a", "b"], [b"1", None]),
        (["EXISTS", "a", "b", "a"], 2),
        (["APPEND", "s", "xy"], 2),
        (["STRLEN", "s"], 2),
        (["TYPE", "s"], Simple("string")),
        (["TYPE", "nothing"], Simple("none")),
        (["GETSET", "g", "new"], b"old"),
        (["GETDEL", "h"], b"hv"),
        (["DEL", "d1", "d2", "d1"], 1),
        (["UNLINK", "u"], 0),
        (["INCRBYFLOAT", "f", "1.5"], b"1.5"),
        (["DECR", "c"], -1),
        (["INCRBY", "i", "5"], 5),
        (["DECRBY", "j", "2"], -2),
        (["MSET", "x", "1", "y", "2"], OK),
        (["SET", "z", "v", "GET"], b"zz"),
        (["PING"], Simple("PONG")),
        (["PING", "hi"], b"hi"),
        (["ECHO", "e"], b"e"),
        (["UNWATCH"], OK),
    ]
    assert await run(c, "MULTI") == OK
    for args, _ in steps:
        assert await run(c, *args) == Q, args
    before = len(backend.requests)
    assert await run(c, "EXEC") == [reply for _, reply in steps]
    assert [f["t"] for f in backend.requests[before:]] == ["txn"]  # one txn, one revision
    assert backend.kv[b"a"] == b"1" and backend.kv[b"z"] == b"v" and b"h" not in backend.kv
    assert await run(c, "EXEC") == Err("ERR EXEC without MULTI")


# (preloaded keys, commands after MULTI with their replies, EXEC's reply, keys after)
ERROR_CASES: list[tuple[dict[str, bytes], list[tuple[list[str], Any]], Any, dict[str, Any]]] = [
    ({}, [], [], {}),
    # errors while queueing: EXEC replies EXECABORT, nothing is applied
    (
        {},
        [
            (["SET", "a", "1"], Q),
            (["foo", "x"], Err("ERR unknown command 'foo', with args beginning with: 'x' ")),
        ],
        ABORT,
        {"a": None},
    ),
    ({}, [(["GET"], Err("ERR wrong number of arguments for 'get' command"))], ABORT, {}),
    ({}, [(["SET", "a", "1", "XYZ"], Err("ERR syntax error"))], ABORT, {"a": None}),
    ({}, [(["INCRBY", "n", "x"], Err("ERR value is not an integer or out of range"))], ABORT, {}),
    (
        {},
        [(["SET", "a", "1", "NX"], Err("ERR rkv cannot queue '"))],
        ABORT,
        {"a": None},
    ),
    ({}, [(["SETNX", "a", "1"], Err("ERR rkv cannot queue '"))], ABORT, {"a": None}),
    ({}, [(["MSETNX", "a", "1"], Err("ERR rkv cannot queue '"))], ABORT, {"a": None}),
    ({}, [(["KEYS", "*"], Err("ERR rkv cannot queue '"))], ABORT, {}),
    ({}, [(["SCAN", "0"], Err("ERR rkv cannot queue '"))], ABORT, {}),
    ({}, [(["INFO"], Err("ERR rkv cannot queue '"))], ABORT, {}),
    ({}, [(["SELECT", "0"], Err("ERR rkv cannot queue '"))], ABORT, {}),
    (
        {},
        [
            (
                ["EXPIRE", "a", "1"],
                Err("ERR rkv cannot queue 'expire' inside MULTI: a TTL is a lease"),
            )
        ],
        ABORT,
        {},
    ),
    (
        {},
        [(["SET", "a", "1"], Q), (["INCR", "a"], Err("ERR rkv cannot queue 'incr': key b'a'"))],
        ABORT,
        {"a": None},
    ),
    # errors that do not abort (as Redis)
    ({}, [(["MULTI"], Err("ERR MULTI calls can not be nested"))], [], {}),
    ({}, [(["WATCH", "a"], Err("ERR WATCH inside MULTI is not allowed"))], [], {}),
    # an op that fails when EXEC runs: the whole EXEC fails, nothing applied
    (
        {"n": b"x"},
        [(["SET", "a", "1"], Q), (["INCR", "n"], Q)],
        Err("ERR rkv EXEC failed, nothing was applied: value is not an integer or out of range"),
        {"a": None, "n": b"x"},
    ),
    # more than one txn holds: an error, nothing applied
    (
        {},
        [
            (["MSET", *[f"k{i}" if j % 2 == 0 else "v" for i in range(100) for j in (0, 1)]], Q),
            (["MSET", *[f"m{i}" if j % 2 == 0 else "v" for i in range(100) for j in (0, 1)]], Q),
        ],
        Err("ERR rkv EXEC: the queued commands do not fit in one rkv transaction"),
        {"k0": None, "m0": None},
    ),
]


def _same(got: Any, want: Any) -> bool:
    """An expected error matches an error that starts with its text."""
    if isinstance(want, Err) and isinstance(got, Err):
        return got.text.startswith(want.text)
    return bool(got == want)


@pytest.mark.parametrize(
    ("kv", "queued", "exec_reply", "after"),
    ERROR_CASES,
    ids=[" / ".join(" ".join(a)[:20] for a, _ in c[1]) or "empty" for c in ERROR_CASES],
)
async def test_queueing_and_exec_errors(
    kv: dict[str, bytes],
    queued: list[tuple[list[str], Any]],
    exec_reply: Any,
    after: dict[str, Any],
) -> None:
    (c, _), backend = connections(**kv)
    assert await run(c, "MULTI") == OK
    for args, reply in queued:
        got = await run(c, *args)
        assert _same(got, reply), (args, got)
    got = await run(c, "EXEC")
    assert _same(got, exec_reply), got
    for k, v in after.items():
        assert backend.kv.get(k.encode()) == v
    assert await run(c, "EXEC") == Err("ERR EXEC without MULTI")  # EXEC ended the MULTI


async def test_refusals_name_the_command_and_why() -> None:
    (c, _), _ = connections()
    await run(c, "MULTI")
    text = (await run(c, "SETNX", "a", "1")).text
    assert text.startswith("ERR rkv cannot queue 'setnx' inside MULTI: its condition")
    text = (await run(c, "CLIENT", "ID")).text
    assert text == (
        "ERR rkv cannot queue 'client' inside MULTI: it is a connection or server command, "
        "not a transaction op"
    )


async def test_discard_and_the_errors_without_multi() -> None:
    (c, _), backend = connections()
    assert await run(c, "DISCARD") == Err("ERR DISCARD without MULTI")
    assert await run(c, "EXEC") == Err("ERR EXEC without MULTI")
    assert await run(c, "MULTI") == OK
    assert await run(c, "SET", "a", "1") == Q
    assert await run(c, "DISCARD") == OK
    assert backend.requests == []  # nothing was sent
    assert await run(c, "GET", "a") is None  # not queued any more: run at once


async def test_at_most_max_queued_commands() -> None:
    (c, _), _ = connections()
    await run(c, "MULTI")
    for _ in range(MAX_QUEUED):
        assert await run(c, "PING") == Q
    assert await run(c, "PING") == Err(f"ERR rkv MULTI queues at most {MAX_QUEUED} commands")
    assert await run(c, "EXEC") == ABORT


# WATCH: (commands of connection 0 or 1 after `WATCH a` on connection 0, and EXEC's reply)
WATCH_CASES: list[tuple[str, dict[str, bytes], list[tuple[int, list[str]]], Any]] = [
    ("unchanged", {"a": b"1"}, [], [OK]),
    ("written by another", {"a": b"1"}, [(1, ["SET", "a", "2"])], NULL_ARRAY),
    ("same value written", {"a": b"1"}, [(1, ["SET", "a", "1"])], NULL_ARRAY),
    ("created", {}, [(1, ["SET", "a", "2"])], NULL_ARRAY),
    ("deleted", {"a": b"1"}, [(1, ["DEL", "a"])], NULL_ARRAY),
    ("incremented", {"a": b"1"}, [(1, ["INCR", "a"])], NULL_ARRAY),
    ("written by itself", {"a": b"1"}, [(0, ["SET", "a", "3"])], NULL_ARRAY),
    ("absent, stays absent", {}, [(1, ["DEL", "a"])], [OK]),
    ("other key written", {"a": b"1"}, [(1, ["SET", "c", "2"])], [OK]),
    ("unwatched", {"a": b"1"}, [(0, ["UNWATCH"]), (1, ["SET", "a", "2"])], [OK]),
    (
        "cleared by an EXEC",
        {"a": b"1"},
        [(0, ["MULTI"]), (0, ["EXEC"]), (1, ["SET", "a", "2"])],
        [OK],
    ),
    (
        "cleared by a DISCARD",
        {"a": b"1"},
        [(0, ["MULTI"]), (0, ["DISCARD"]), (1, ["SET", "a", "2"])],
        [OK],
    ),
    (
        "watched twice: the first revision",
        {"a": b"1"},
        [(1, ["SET", "a", "2"]), (0, ["WATCH", "a"])],
        NULL_ARRAY,
    ),
]


@pytest.mark.parametrize(
    ("kv", "between", "exec_reply"), [c[1:] for c in WATCH_CASES], ids=[c[0] for c in WATCH_CASES]
)
async def test_watch(
    kv: dict[str, bytes], between: list[tuple[int, list[str]]], exec_reply: Any
) -> None:
    conns, backend = connections(**kv)
    assert await run(conns[0], "WATCH", "a") == OK
    for i, args in between:
        assert not isinstance(await run(conns[i], *args), Err)
    assert await run(conns[0], "MULTI") == OK
    assert await run(conns[0], "SET", "b", "1") == Q
    assert await run(conns[0], "EXEC") == exec_reply
    assert backend.kv.get(b"b") == (None if exec_reply is NULL_ARRAY else b"1")
    # EXEC cleared the watches: the next transaction runs whatever changed
    await run(conns[1], "SET", "a", "9")
    await run(conns[0], "MULTI")
    await run(conns[0], "SET", "b", "2")
    assert await run(conns[0], "EXEC") == [OK]


async def test_an_empty_exec_still_checks_the_watches() -> None:
    conns, _ = connections(a=b"1")
    await run(conns[0], "WATCH", "a", "b")
    await run(conns[1], "SET", "b", "x")
    await run(conns[0], "MULTI")
    assert await run(conns[0], "EXEC") == NULL_ARRAY


async def test_watch_is_bounded_and_reads_records_not_the_log() -> None:
    (c, _), backend = connections()
    assert await run(c, "WATCH", *[f"k{i}" for i in range(100)]) == OK
    # one linearizable get with its record per key: reads, no txn (no log entry)
    assert [(f["t"], f["meta"], f["stale"]) for f in backend.requests] == [
        ("get", True, False)
    ] * 100
    assert await run(c, "WATCH", *[f"k{i}" for i in range(50)]) == OK  # already watched
    assert len(backend.requests) == 100
    reply = await run(c, "WATCH", *[f"j{i}" for i in range(29)])
    assert reply == Err("ERR rkv watches at most 128 keys per connection (one txn's compares)")
    assert await run(c, "UNWATCH") == OK
    assert await run(c, "WATCH", *[f"j{i}" for i in range(128)]) == OK


async def test_watch_of_big_values() -> None:
    big = b"x" * (9 << 20)
    conns, backend = connections(a=big, b=big)
    assert await run(conns[0], "WATCH", "a", "b") == OK
    assert [f["t"] for f in backend.requests] == ["get", "get"]
    await run(conns[1], "SET", "b", "small")
    await run(conns[0], "MULTI")
    assert await run(conns[0], "EXEC") == NULL_ARRAY


async def test_watch_refuses_a_node_without_records() -> None:
    (c, _), backend = connections(a=b"1")
    backend.fail_next.append({"t": "ok", "val": b"1"})  # an older node: no `rec`
    reply = await run(c, "WATCH", "a")
    assert isinstance(reply, Err) and "predates 'meta'" in reply.text


@pytest.mark.parametrize(("proto", "wire"), [(2, b"*-1\r\n"), (3, b"_\r\n")])
def test_the_null_array_on_the_wire(proto: int, wire: bytes) -> None:
    assert encode(NULL_ARRAY, proto) == wire
