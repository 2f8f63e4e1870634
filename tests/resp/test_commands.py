"""The RESP command table against a fake node (tests/resp/fakes.py): each command's reply
and the requests it hands the node, Redis' error texts, authentication, the exactly-once
session of each connection and the retries of "try again" answers."""

from __future__ import annotations

from typing import Any

import pytest

from rkv.resp import COMMANDS, UNSUPPORTED, Session, Settings, execute, keyscan
from rkv.resp.context import Context
from rkv.resp.wire import OK, Err, RSet, Simple

from .fakes import FakeBackend

TOKEN = "a-cluster-token-of-16+"


def make(token: str | None = None, **kv: bytes) -> tuple[Context, FakeBackend]:
    backend = FakeBackend()
    backend.kv.update({k.encode(): v for k, v in kv.items()})
    return Context(
        Session(conn_id=7, settings=Settings(token=token, retry_seconds=1.0)), backend
    ), backend


async def run(ctx: Context, *args: str | bytes) -> Any:
    return await execute(ctx, [a.encode() if isinstance(a, str) else a for a in args])


CASES: list[tuple[dict[str, bytes], list[str], Any]] = [
    ({}, ["PING"], Simple("PONG")),
    ({}, ["ping", "hi"], b"hi"),
    ({}, ["ECHO", "x"], b"x"),
    ({"a": b"1"}, ["GET", "a"], b"1"),
    ({}, ["GET", "a"], None),
    ({}, ["SET", "a", "1"], OK),
    ({}, ["SET", "a", "1", "NX"], OK),
    ({"a": b"0"}, ["SET", "a", "1", "nx"], None),
    ({}, ["SETNX", "a", "1"], 1),
    ({"a": b"0"}, ["SETNX", "a", "1"], 0),
    ({"a": b"1", "c": b"3"}, ["MGET", "a", "b", "c"], [b"1", None, b"3"]),
    ({"a": b"1", "c": b"3"}, ["DEL", "a", "b", "c"], 2),
    ({"a": b"1"}, ["UNLINK", "a"], 1),
    ({"a": b"1"}, ["EXISTS", "a", "a", "b"], 2),
    ({"a": b"1"}, ["TYPE", "a"], Simple("string")),
    ({}, ["TYPE", "a"], Simple("none")),
    ({"a": b"123"}, ["STRLEN", "a"], 3),
    ({}, ["STRLEN", "a"], 0),
    ({"a": b"", "b": b""}, ["DBSIZE"], 2),
    ({"user:1": b"", "user:2": b"", "x": b""}, ["KEYS", "user:*"], [b"user:1", b"user:2"]),
    ({"user:1": b"", "user:22": b"", "x": b""}, ["KEYS", "user:?"], [b"user:1"]),
    ({"ab": b"", "xb": b"", "x": b""}, ["KEYS", "*b"], [b"ab", b"xb"]),
    (
        {"k1": b"", "k2": b"", "j": b""},
        ["SCAN", "0", "MATCH", "k*", "COUNT", "10"],
        [b"0", [b"k1", b"k2"]],
    ),
    ({"k1": b""}, ["SCAN", "0"], [b"0", [b"k1"]]),
    ({"k1": b""}, ["SCAN", "0", "TYPE", "hash"], [b"0", []]),
    ({}, ["SELECT", "0"], OK),
    ({}, ["SELECT", "1"], Err("ERR DB index is out of range")),
    ({}, ["SELECT", "x"], Err("ERR value is not an integer or out of range")),
    ({}, ["CLIENT", "SETNAME", "me"], OK),
    ({}, ["CLIENT", "GETNAME"], None),
    ({}, ["CLIENT", "ID"], 7),
    ({}, ["CLIENT", "SETINFO", "LIB-NAME", "redis-py"], OK),
    ({}, ["CLIENT", "SETINFO", "LIB-VER", "5.0"], OK),
    ({}, ["CLIENT", "KILL"], Err("ERR unknown subcommand 'KILL'. Try CLIENT HELP.")),
    ({}, ["CONFIG", "GET", "save"], {b"save": b""}),
    ({}, ["config", "get", "appendonly"], {b"appendonly": b"yes"}),
    ({}, ["CONFIG", "GET", "databases"], {b"databases": b"1"}),
    ({}, ["CONFIG", "GET", "nothing*"], {}),
    ({}, ["COMMAND", "COUNT"], len(COMMANDS)),
    ({}, ["QUIT"], OK),
    # Redis' error texts
    ({}, ["GET"], Err("ERR wrong number of arguments for 'get' command")),
    ({}, ["SET", "a"], Err("ERR wrong number of arguments for 'set' command")),
    ({}, ["ECHO", "a", "b"], Err("ERR wrong number of arguments for 'echo' command")),
    ({}, ["foo", "a", "b"], Err("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")),
    ({}, ["foo"], Err("ERR unknown command 'foo', with args beginning with: ")),
    ({}, ["SET", "a", "b", "XYZ"], Err("ERR syntax error")),
    (
        {},
        ["AUTH", "pw"],
        Err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
        ),
    ),
    ({}, ["HELLO", "4"], Err("NOPROTO unsupported protocol version")),
    ({}, ["AUTH", "default", "anything"], OK),  # without a token: as Redis' nopass user
    # read-modify-write and multi-key commands: one txn each, applied in the state machine
    ({}, ["INCR", "n"], 1),
    ({"n": b"41"}, ["INCR", "n"], 42),
    ({"n": b"41"}, ["DECR", "n"], 40),
    ({"n": b"10"}, ["INCRBY", "n", "-15"], -5),
    ({"n": b"10"}, ["DECRBY", "n", "3"], 7),
    ({"n": b"x"}, ["INCR", "n"], Err("ERR value is not an integer or out of range")),
    ({"n": b"1.5"}, ["INCRBY", "n", "1"], Err("ERR value is not an integer or out of range")),
    ({}, ["INCRBY", "n", "x"], Err("ERR value is not an integer or out of range")),
    (
        {"n": b"9223372036854775807"},
        ["INCR", "n"],
        Err("ERR increment or decrement would overflow"),
    ),
    ({}, ["DECRBY", "n", "-9223372036854775808"], Err("ERR decrement would overflow")),
    ({"f": b"10.50"}, ["INCRBYFLOAT", "f", "0.1"], b"10.6"),
    ({"f": b"5.0e3"}, ["INCRBYFLOAT", "f", "2.0e2"], b"5200"),
    ({"f": b"0.2"}, ["INCRBYFLOAT", "f", "0.1"], b"0.3"),
    ({}, ["INCRBYFLOAT", "f", "x"], Err("ERR value is not a valid float")),
    ({"f": b"abc"}, ["INCRBYFLOAT", "f", "1"], Err("ERR value is not a valid float")),
    ({"s": b"Hello"}, ["APPEND", "s", " World"], 11),
    ({}, ["APPEND", "s", "x"], 1),
    ({"a": b"1"}, ["GETDEL", "a"], b"1"),
    ({}, ["GETDEL", "a"], None),
    ({"a": b"1"}, ["GETSET", "a", "2"], b"1"),
    ({"a": b"1"}, ["SET", "a", "2", "GET"], b"1"),
    ({}, ["SET", "a", "2", "GET"], None),
    ({"a": b"1"}, ["SET", "a", "2", "XX"], OK),
    ({}, ["SET", "a", "2", "XX"], None),
    ({}, ["SET", "a", "2", "NX", "GET"], None),
    ({"a": b"1"}, ["SET", "a", "2", "NX", "GET"], b"1"),
    ({"a": b"1"}, ["SET", "a", "2", "XX", "GET"], b"1"),
    ({}, ["SET", "a", "2", "NX", "XX"], Err("ERR syntax error")),
    ({}, ["MSET", "a", "1", "b", "2", "a", "3"], OK),
    ({}, ["MSET", "a", "1", "b"], Err("ERR wrong number of arguments for 'mset' command")),
    ({}, ["MSETNX", "a", "1", "b", "2"], 1),
    ({"b": b"0"}, ["MSETNX", "a", "1", "b", "2"], 0),
    # rkv's limits
    ({}, ["GET", "k" * 401], Err("ERR rkv keys must be 1..400 bytes, got 401")),
    ({}, ["SET", "", "v"], Err("ERR rkv keys must be 1..400 bytes, got 0")),
    # not supported yet: a clear reason, nothing sent to the node
    (
        {},
        ["MULTI"],
        OK,
    ),
    (
        {},
        ["EVAL", "return 1", "0"],
        Err(
            "ERR rkv does not support 'eval' yet: it needs scripts run deterministically inside the state machine"
        ),
    ),
    (
        {},
        ["GETRANGE", "a", "0", "1"],
        Err("ERR rkv does not support 'getrange' yet: it is not implemented yet"),
    ),
]


@pytest.mark.parametrize(("kv", "args", "reply"), CASES, ids=[" ".join(c[1])[:40] for c in CASES])
async def test_command(kv: dict[str, bytes], args: list[str], reply: Any) -> None:
    ctx, backend = make(**kv)
    assert await run(ctx, *args) == reply
    if args[0].lower() in UNSUPPORTED or reply in (Err("ERR syntax error"),):
        assert backend.requests == []


@pytest.mark.parametrize(
    ("cmd", "sent"),
    [
        (["DEL", "a"], ["delete"]),
        (["DEL", "a", "b", "a"], ["txn"]),
        (["UNLINK", "a", "b"], ["txn"]),
        (["EXISTS", "a"], ["get"]),
        (["EXISTS", "a", "b"], ["txn"]),
    ],
)
async def test_several_keys_are_one_txn(cmd: list[str], sent: list[str]) -> None:
    ctx, backend = make(a=b"1", b=b"2")
    await run(ctx, *cmd)
    assert [f["t"] for f in backend.requests] == sent


@pytest.mark.parametrize("name", ["DEL", "UNLINK", "EXISTS"])
async def test_several_keys_are_bounded_by_a_txn(name: str) -> None:
    ctx, backend = make()
    reply = await run(ctx, name, *(f"k{i}" for i in range(129)))
    assert reply == Err(f"ERR rkv {name.lower()}: at most 128 keys in one call (one txn)")
    assert backend.requests == []
    assert await run(ctx, name, *(f"k{i}" for i in range(128))) == 0


async def test_unknown_command_text_is_bounded_as_redis_does() -> None:
    ctx, _ = make()
    reply = await run(ctx, "nosuch", *(["x" * 50] * 1000))
    assert isinstance(reply, Err) and len(reply.text) < 300
    assert reply.text.endswith("'" + "x" * 22 + "' ")


async def test_writes_change_the_store_and_carry_the_connections_session() -> None:
    ctx, backend = make()
    await run(ctx, "SET", "a", "1")
    await run(ctx, "SETNX", "b", "2")
    await run(ctx, "DEL", "a", "b")  # several keys: one txn, one write
    assert backend.kv == {}
    cid = ctx.session.client_id
    assert len(cid) == 16
    assert backend.applied == [(cid, 1), (cid, 2), (cid, 3)]
    other, _ = make()
    assert other.session.client_id != cid


async def test_a_write_retried_after_try_again_keeps_its_seq() -> None:
    ctx, backend = make()
    backend.fail_next = [
        {"t": "error", "code": "unavailable", "msg": "no leader known; retry"},
        {"t": "error", "code": "not_leader", "msg": "not the leader"},
    ]
    assert await run(ctx, "SET", "a", "1") == OK
    assert [f["s"] for f in backend.requests] == [1, 1, 1]
    assert backend.kv == {b"a": b"1"}


async def test_try_again_until_the_deadline_then_an_error() -> None:
    ctx, backend = make()
    backend.fail_next = [{"t": "error", "code": "unavailable", "msg": "no leader"}] * 1000
    reply = await run(ctx, "GET", "a")
    assert reply == Err("TRYAGAIN rkv: no leader (not applied; retry)")


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("timeout", "TIMEOUT rkv: m (a write may or may not have been applied)"),
        ("bad_request", "ERR m"),
        ("store_full", "OOM rkv: the store is full: m"),
        ("integrity", "ERR rkv integrity error: m"),
        ("internal", "ERR rkv internal: m"),
    ],
)
async def test_error_codes_map_to_resp_errors(code: str, text: str) -> None:
    ctx, backend = make()
    ctx.session.settings.retry_seconds = 0.0
    backend.fail_next = [{"t": "error", "code": code, "msg": "m"}]
    assert await run(ctx, "GET", "a") == Err(text)


async def test_mget_reads_the_first_key_linearizably_and_the_rest_after_it() -> None:
    ctx, backend = make(a=b"1")
    await run(ctx, "MGET", "a", "b", "c")
    assert [f.get("stale", False) for f in backend.requests] == [False, True, True]


async def test_keys_refuses_rather_than_truncates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyscan, "MAX_KEYS", 9_999)
    ctx, backend = make()
    backend.kv.update({b"k%05d" % i: b"" for i in range(10_000)})
    reply = await run(ctx, "KEYS", "k*")
    assert isinstance(reply, Err) and "more than 9999 keys" in reply.text
    assert len(await run(ctx, "KEYS", "k0000*")) == 10
    assert backend.requests[-1]["p"] == b"k0000"  # the literal prefix narrows the scan


async def test_with_a_token_everything_but_auth_hello_quit_needs_it() -> None:
    ctx, backend = make(TOKEN)
    for args in (["PING"], ["GET", "a"], ["foo"], ["CLIENT", "ID"], ["INCR", "a"]):
        assert await run(ctx, *args) == Err("NOAUTH Authentication required.")
    assert backend.requests == []
    wrong = Err("WRONGPASS invalid username-password pair or user is disabled.")
    assert await run(ctx, "AUTH", "nope") == wrong
    assert await run(ctx, "AUTH", "default", "nope") == wrong
    assert isinstance(await run(ctx, "HELLO", "3"), Err)
    assert await run(ctx, "HELLO", "3", "AUTH", "default", "nope") == wrong
    assert await run(ctx, "AUTH", "someone", TOKEN) == OK
    assert await run(ctx, "PING") == Simple("PONG")
    ctx2, _ = make(TOKEN)
    hello = await run(ctx2, "HELLO", "3", "AUTH", "default", TOKEN, "SETNAME", "app")
    assert hello[b"proto" if b"proto" in hello else "proto"] == 3
    assert ctx2.session.proto == 3 and ctx2.session.name == b"app"
    assert await run(ctx2, "QUIT") == OK


async def test_hello_switches_the_protocol_and_describes_the_server() -> None:
    ctx, _ = make()
    reply = await run(ctx, "HELLO", "3")
    assert reply["server"] == "redis" and reply["proto"] == 3 and reply["id"] == 7
    assert reply["role"] == "master" and ctx.session.proto == 3
    await run(ctx, "HELLO", "2")
    assert ctx.session.proto == 2


async def test_info_has_the_replication_section_from_the_nodes_status() -> None:
    ctx, _ = make()
    text = (await run(ctx, "INFO", "replication")).decode()
    assert "# Replication\r\n" in text and "role:master\r\n" in text
    assert "rkv_term:3\r\n" in text and "rkv_commit_index:7\r\n" in text
    assert "rkv_leader:127.0.0.1:1\r\n" in text
    everything = (await run(ctx, "INFO")).decode()
    assert "redis_version:" in everything and "# Server" in everything


async def test_command_info_and_docs() -> None:
    ctx, _ = make()
    (info,) = await run(ctx, "COMMAND", "INFO", "get")
    assert info[:2] == ["get", 2] and isinstance(info[2], RSet)
    assert await run(ctx, "COMMAND", "INFO", "nosuch") == [None]
    docs = await run(ctx, "COMMAND", "DOCS", "set")
    assert set(docs) == {"set"} and "summary" in docs["set"]
    assert len(await run(ctx, "COMMAND")) == len(COMMANDS)
