"""The HTTP API's routes (rkv.httpapi.api) against a fake node behind the dispatcher: each
row is a request and, optionally, error frames the node answers first; the check is the
status, the body and the rkv.protocol frames that reached the node."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from .conftest import TOKEN, Client, FakeNode, api_server, request

UNAVAILABLE = {"t": "error", "code": "unavailable", "msg": "no leader known; retry"}


@dataclass
class Row:
    method: str
    path: str
    status: int
    body: bytes | None = None
    error: str | None = None
    send: bytes = b""
    kv: dict[bytes, bytes] = field(default_factory=dict)
    node_errors: list[dict[str, Any]] = field(default_factory=list)
    sent: list[str] | None = None
    """The `t` of each frame that reached the node."""
    headers: dict[str, str] = field(default_factory=dict)


ROWS = {
    "get": Row(
        "GET",
        "/v1/kv/a",
        200,
        b"1",
        kv={b"a": b"1"},
        sent=["get"],
        headers={"x-rkv-revision": "1"},
    ),
    "get missing": Row("GET", "/v1/kv/zz", 404, error="not_found", headers={"x-rkv-revision": "1"}),
    "get percent-decoded": Row("GET", "/v1/kv/a%2Fb%00", 200, b"x", kv={b"a/b\0": b"x"}),
    "get stale": Row("GET", "/v1/kv/a?consistency=stale", 200, b"1", kv={b"a": b"1"}),
    "get bad consistency": Row("GET", "/v1/kv/a?consistency=eventual", 400, error="bad_request"),
    "head": Row("HEAD", "/v1/kv/a", 200, b"", kv={b"a": b"123"}),
    "put": Row(
        "PUT",
        "/v1/kv/k",
        204,
        b"",
        send=b"v\x00\xff",
        sent=["put"],
        headers={"x-rkv-revision": "1"},
    ),
    "put empty value": Row("PUT", "/v1/kv/k", 204, b"", send=b""),
    "put key too long": Row("PUT", "/v1/kv/" + "k" * 401, 400, error="bad_request"),
    "put empty key": Row("PUT", "/v1/kv/", 405, error="bad_request"),
    "delete": Row(
        "DELETE",
        "/v1/kv/a",
        204,
        b"",
        kv={b"a": b"1"},
        sent=["delete"],
        headers={"x-rkv-revision": "1"},
    ),
    "delete missing": Row("DELETE", "/v1/kv/a", 404, error="not_found"),
    "cas swapped": Row("PUT", "/v1/kv/a?if_value=1", 204, kv={b"a": b"1"}, send=b"2"),
    "cas failed": Row(
        "PUT", "/v1/kv/a?if_value=9", 412, error="precondition_failed", kv={b"a": b"1"}, send=b"2"
    ),
    "cas absent": Row("PUT", "/v1/kv/new?if_absent=true", 204, send=b"2", sent=["cas"]),
    "cas both": Row("PUT", "/v1/kv/a?if_absent=true&if_value=1", 400, error="bad_request"),
    "ttl": Row(
        "PUT",
        "/v1/kv/a?ttl=0.5",
        204,
        send=b"v",
        sent=["lease_grant", "put"],
        headers={"x-rkv-lease": "100", "x-rkv-lease-ttl": "1", "x-rkv-revision": "2"},
    ),
    "lease missing": Row(
        "PUT", "/v1/kv/a?lease=7", 404, error="lease_not_found", send=b"v", sent=["put"]
    ),
    "lease on get": Row("GET", "/v1/kv/a?lease=1", 400, error="bad_request", sent=[]),
    "lease and ttl": Row("PUT", "/v1/kv/a?lease=1&ttl=3", 400, error="bad_request", sent=[]),
    "lease bad id": Row("PUT", "/v1/kv/a?lease=0", 400, error="bad_request", sent=[]),
    "ttl bad": Row("PUT", "/v1/kv/a?ttl=nan", 400, error="bad_request", sent=[]),
    "ttl with cas": Row("PUT", "/v1/kv/a?ttl=3&if_absent=true", 400, error="bad_request", sent=[]),
    # the fake's records all have mod revision 1 (rkv.testing.DictTxn)
    "put if_mod_revision holds": Row(
        "PUT", "/v1/kv/a?if_mod_revision=1", 204, kv={b"a": b"1"}, send=b"2", sent=["txn"]
    ),
    "put if_mod_revision differs": Row(
        "PUT",
        "/v1/kv/a?if_mod_revision=3",
        412,
        error="precondition_failed",
        kv={b"a": b"1"},
        send=b"2",
        sent=["txn"],
        headers={"x-rkv-revision": "1"},
    ),
    "put if_mod_revision 0 absent": Row(
        "PUT", "/v1/kv/new?if_mod_revision=0", 204, send=b"2", sent=["txn"]
    ),
    "put if_mod_revision 0 present": Row(
        "PUT", "/v1/kv/a?if_mod_revision=0", 412, error="precondition_failed", kv={b"a": b"1"}
    ),
    "put if_mod_revision bad": Row(
        "PUT", "/v1/kv/a?if_mod_revision=-1", 400, error="bad_request", sent=[]
    ),
    "put if_mod_revision with cas": Row(
        "PUT", "/v1/kv/a?if_mod_revision=1&if_absent=true", 400, error="bad_request", sent=[]
    ),
    "delete if_mod_revision holds": Row(
        "DELETE", "/v1/kv/a?if_mod_revision=1", 204, kv={b"a": b"1"}, sent=["txn"]
    ),
    "delete if_mod_revision differs": Row(
        "DELETE", "/v1/kv/a?if_mod_revision=2", 412, error="precondition_failed", kv={b"a": b"1"}
    ),
    "delete if_mod_revision 0 absent": Row(
        "DELETE", "/v1/kv/a?if_mod_revision=0", 404, error="not_found", sent=["txn"]
    ),
    "txn GET": Row("GET", "/v1/txn", 405, error="bad_request"),
    "txn not JSON": Row("POST", "/v1/txn", 400, error="bad_request", send=b"{", sent=[]),
    "txn bad op": Row(
        "POST", "/v1/txn", 400, error="bad_request", send=b'{"success": [{"op": "x"}]}', sent=[]
    ),
    "txn op refused": Row(
        "POST",
        "/v1/txn",
        400,
        error="bad_request",
        kv={b"n": b"x"},
        send=b'{"success": [{"op": "incr", "key": "n"}]}',
        sent=["txn"],
    ),
    "watch compacted": Row(
        "GET",
        "/v1/watch?prefix=a&start_revision=1",
        410,
        error="compacted",
        node_errors=[{"t": "error", "code": "compacted", "msg": "gone", "first_revision": 7}],
        sent=["watch"],
        headers={"x-rkv-first-revision": "7"},
    ),
    "watch bad start": Row("GET", "/v1/watch?start_revision=0", 400, error="bad_request"),
    "watch bad prev": Row("GET", "/v1/watch?prev=yes", 400, error="bad_request", sent=[]),
    "watch POST": Row("POST", "/v1/watch", 405, error="bad_request"),
    "watch key and prefix": Row("GET", "/v1/watch?key=a&prefix=a", 400, error="bad_request"),
    "watch empty key": Row("GET", "/v1/watch?key=", 400, error="bad_request", sent=[]),
    "unknown param": Row("GET", "/v1/kv/a?consistncy=stale", 400, error="bad_request"),
    "param of another method": Row("DELETE", "/v1/kv/a?if_value=1", 400, error="bad_request"),
    "post kv": Row("POST", "/v1/kv/a", 405, error="bad_request"),
    "unknown path": Row("GET", "/v2/kv/a", 404, error="not_found"),
    "status": Row("GET", "/v1/status", 200, sent=["status"]),
    "unavailable retried": Row(
        "GET",
        "/v1/kv/a",
        200,
        b"1",
        kv={b"a": b"1"},
        node_errors=[UNAVAILABLE],
        sent=["get", "get"],
    ),
    "unavailable to the end": Row(
        "PUT",
        "/v1/kv/a",
        503,
        error="unavailable",
        node_errors=[UNAVAILABLE] * 200,
        headers={"retry-after": "1"},
    ),
    "integrity": Row(
        "GET",
        "/v1/kv/a",
        500,
        error="integrity",
        node_errors=[{"t": "error", "code": "integrity", "msg": "damaged"}],
    ),
    "store full": Row(
        "PUT",
        "/v1/kv/a",
        507,
        error="store_full",
        node_errors=[{"t": "error", "code": "store_full", "msg": "full"}],
    ),
    "bad request": Row(
        "PUT",
        "/v1/kv/a",
        400,
        error="bad_request",
        node_errors=[{"t": "error", "code": "bad_request", "msg": "no"}],
    ),
    "livez": Row("GET", "/livez", 200, b"ok\n", sent=[]),
    "readyz": Row("GET", "/readyz", 503, b"no leader known\n"),
    "metrics": Row("GET", "/metrics", 200, b"rkv_term 2\n"),
    "health POST": Row("POST", "/livez", 405, error="bad_request"),
}


@pytest.mark.parametrize("name", list(ROWS))
async def test_route(name: str) -> None:
    row = ROWS[name]
    fake = FakeNode(kv=dict(row.kv), errors=list(row.node_errors))
    async with api_server(fake) as (port, _):
        a = await request(port, row.method, row.path, row.send)
    assert a.status == row.status, (a.status, a.body)
    if row.body is not None:
        assert a.body == row.body
    if row.error is not None:
        doc = a.json()
        assert doc["error"] == row.error and doc["message"], doc
        assert a.headers["content-type"] == "application/json"
    if row.sent is not None:
        assert [f["t"] for f in fake.frames] == row.sent
    for k, v in row.headers.items():
        assert a.headers.get(k) == v, a.headers


async def test_writes_carry_one_session_per_connection() -> None:
    fake = FakeNode()
    async with api_server(fake) as (port, _):
        c = await Client.open(port)
        for i in range(3):
            assert (await c.request("PUT", f"/v1/kv/k{i}", b"v")).status == 204
        assert (await c.request("DELETE", "/v1/kv/k0")).status == 204
        await c.aclose()
        other = await request(port, "PUT", "/v1/kv/x", b"y")
        assert other.status == 204
    sessions = [(f["c"], f["s"]) for f in fake.frames]
    assert len({c for c, _ in sessions[:4]}) == 1 and len(sessions[0][0]) == 16
    assert [s for _, s in sessions[:4]] == [1, 2, 3, 4]
    assert sessions[4][0] != sessions[0][0] and sessions[4][1] == 1


async def test_a_retried_write_keeps_its_session() -> None:
    fake = FakeNode(errors=[UNAVAILABLE, UNAVAILABLE])
    async with api_server(fake) as (port, _):
        assert (await request(port, "PUT", "/v1/kv/k", b"v")).status == 204
    assert len(fake.frames) == 3
    assert len({(f["c"], f["s"]) for f in fake.frames}) == 1
    assert fake.kv == {b"k": b"v"}


async def test_scan_pages_with_base64_and_more() -> None:
    kv = {f"p{i}".encode(): bytes([i]) for i in range(5)} | {b"q": b"x"}
    fake = FakeNode(kv=kv)
    async with api_server(fake) as (port, _):
        a = await request(port, "GET", "/v1/kv?prefix=p&limit=3")
        b = await request(port, "GET", "/v1/kv?prefix=p&limit=5&consistency=stale")
        bad = await request(port, "GET", "/v1/kv?limit=10000")
    doc = a.json()
    assert [base64.b64decode(i["key"]) for i in doc["items"]] == [b"p0", b"p1", b"p2"]
    assert base64.b64decode(doc["items"][2]["value"]) == b"\x02"
    assert doc["more"] is True and doc["revision"] == 1  # the revision the scan read at
    assert b.json()["more"] is False and len(b.json()["items"]) == 5
    assert fake.frames[1]["stale"] is True and fake.frames[0]["limit"] == 4
    assert bad.status == 400


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8])
async def test_scan_follows_next_through_every_key_once(limit: int) -> None:
    keys = sorted([b"p/", b"p/ a", b"p/%", b"p/&x=1", b"p/\x00", b"p/\xff", b"p/\xff\xff"])
    fake = FakeNode(kv={k: b"v" for k in keys} | {b"q": b"x"})
    got: list[bytes] = []
    pages = 0
    async with api_server(fake) as (port, _):
        path = f"/v1/kv?prefix=p%2F&limit={limit}"
        while True:
            r = await request(port, "GET", path)
            assert r.status == 200
            doc = r.json()
            got += [base64.b64decode(i["key"]) for i in doc["items"]]
            pages += 1
            if not doc["more"]:
                assert "next" not in doc
                break
            path = f"/v1/kv?prefix=p%2F&limit={limit}&after={doc['next']}"
    assert got == keys
    assert pages == -(-len(keys) // limit)  # the last page says no more: no empty page
    assert "after" not in fake.frames[0]
    if pages > 1:  # the second page starts after the first one's last key
        assert fake.frames[1]["after"] == keys[limit - 1]


@pytest.mark.parametrize(
    ("query", "status", "items"),
    [
        ("prefix=p&after=p1", 200, [b"p2", b"p3"]),
        ("prefix=p&after=p%31", 200, [b"p2", b"p3"]),  # percent-encoded like prefix
        ("after=p3", 200, [b"q"]),
        ("prefix=p&after=z", 200, []),
        ("prefix=p&after=", 400, None),  # an empty key
        ("prefix=p&after=" + "k" * 401, 400, None),
        ("prefix=p&after=p1&after=p2", 400, None),
    ],
)
async def test_scan_after(query: str, status: int, items: list[bytes] | None) -> None:
    fake = FakeNode(kv={b"p1": b"1", b"p2": b"2", b"p3": b"3", b"q": b"4"})
    async with api_server(fake) as (port, _):
        r = await request(port, "GET", "/v1/kv?" + query)
    assert r.status == status
    if items is not None:
        assert [base64.b64decode(i["key"]) for i in r.json()["items"]] == items
    else:
        assert r.json()["error"] == "bad_request" and fake.frames == []


async def test_txn() -> None:
    fake = FakeNode(kv={b"a": b"1", b"bin": b"\xff"})
    doc = (
        b'{"compare": [{"key": "a", "target": "value", "op": "==", "value": "1"},'
        b' {"key": "b", "target": "absent"}],'
        b' "success": [{"op": "put", "key": "b", "value": "2"}, {"op": "get", "key": "bin"},'
        b' {"op": "incr", "key": "a", "by": 4}, {"op": "delete_prefix", "prefix": "zz"}],'
        b' "failure": [{"op": "get", "key": "b"}]}'
    )
    async with api_server(fake) as (port, _):
        a = await request(port, "POST", "/v1/txn", doc)
        assert a.status == 200, a.body
        r = a.json()
        assert r["succeeded"] is True and type(r["revision"]) is int
        assert r["results"] == [
            {"op": "put"},
            {
                "op": "get",
                "key": "bin",
                "found": True,
                "value_b64": "/w==",
                "create_revision": 1,
                "mod_revision": 1,
                "version": 1,
            },
            {"op": "incr", "value": 5},
            {"op": "delete_prefix", "deleted": 0},
        ]
        assert fake.kv[b"b"] == b"2" and fake.kv[b"a"] == b"5"
        # again: b exists now, the compares fail, the failure ops ran (still 200)
        a = await request(port, "POST", "/v1/txn", doc)
        r = a.json()
        assert a.status == 200 and r["succeeded"] is False
        assert r["results"][0]["value"] == "2" and r["results"][0]["found"] is True
    writes = [f for f in fake.frames if f["t"] == "txn"]
    assert len(writes) == 2 and all(
        len(f["c"]) == 16 and f["s"] == 1 for f in writes
    )  # a session each


async def test_token_guards_everything_but_probes() -> None:
    fake = FakeNode(kv={b"a": b"1"})
    auth = [("Authorization", f"Bearer {TOKEN}")]
    async with api_server(fake, token=TOKEN) as (port, _):
        assert (await request(port, "GET", "/livez")).status == 200
        assert (await request(port, "GET", "/readyz")).status == 503  # open, just not ready
        for path in ("/metrics", "/v1/kv/a", "/v1/status", "/v1/kv", "/v1/txn"):
            a = await request(port, "GET", path)
            assert a.status == 401, path
            assert a.json()["error"] == "auth_failed"
            assert a.headers["www-authenticate"].startswith("Bearer")
        wrong = [("Authorization", f"Bearer {TOKEN}x")]
        assert (await request(port, "GET", "/v1/kv/a", headers=wrong)).status == 401
        basic = [("Authorization", f"Basic {TOKEN}")]
        assert (await request(port, "GET", "/v1/kv/a", headers=basic)).status == 401
        assert (await request(port, "PUT", "/v1/kv/b", b"2")).status == 401
        assert (await request(port, "GET", "/v1/kv/a", headers=auth)).body == b"1"
        assert (await request(port, "GET", "/metrics", headers=auth)).status == 200
    assert [f["t"] for f in fake.frames] == ["get"]
    assert b"b" not in fake.kv
    async with api_server(fake, token=TOKEN, open_metrics=True) as (port, _):
        assert (await request(port, "GET", "/metrics")).status == 200
        assert (await request(port, "GET", "/v1/status")).status == 401


async def test_file_up_and_down_in_chunks() -> None:
    fake = FakeNode()
    data = bytes(range(256)) * 100  # 25,600 bytes: 7 chunks of 4,000
    sha = hashlib.sha256(data).hexdigest()
    async with api_server(fake, chunk_size=4000) as (port, _):
        c = await Client.open(port)
        pieces = [data[i : i + 3333] for i in range(0, len(data), 3333)]  # chunked body
        up = await c.request("PUT", "/v1/files/f", pieces)
        assert up.status == 201, up.body
        assert up.json() == {"size": len(data), "chunks": 7, "sha256": sha}
        down = await c.request("GET", "/v1/files/f")
        assert down.status == 200 and down.body == data
        assert down.headers["content-length"] == str(len(data))
        assert down.headers["x-rkv-sha256"] == sha
        head = await c.request("HEAD", "/v1/files/f")
        assert head.status == 200 and head.body == b""
        assert head.headers["content-length"] == str(len(data))
        assert (await c.request("DELETE", "/v1/files/f")).status == 204
        assert (await c.request("GET", "/v1/files/f")).status == 404
        assert (await c.request("DELETE", "/v1/files/f")).status == 404
        await c.aclose()
    assert [len(x) for x in fake.files.get(b"f", [])] == []
    kinds = [f["t"] for f in fake.frames]
    assert kinds[:8] == ["file_chunk"] * 7 + ["file_commit"]
    seqs = [f["s"] for f in fake.frames if "s" in f]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_upload_with_a_wrong_sha_is_aborted() -> None:
    fake = FakeNode()
    async with api_server(fake, chunk_size=10) as (port, _):
        a = await request(
            port, "PUT", "/v1/files/f", b"x" * 25, headers=[("X-Rkv-Sha256", "00" * 32)]
        )
        bad_hex = await request(port, "PUT", "/v1/files/f", b"x", headers=[("X-Rkv-Sha256", "zz")])
    assert a.status == 400 and "SHA-256" in a.json()["message"]
    assert [f["t"] for f in fake.frames] == ["file_chunk"] * 3 + ["file_abort"]
    assert b"f" not in fake.files and not fake.staged
    assert bad_hex.status == 400


async def test_a_download_that_fails_its_check_is_cut_short() -> None:
    data = b"a" * 1000 + b"b" * 1000
    fake = FakeNode(files={b"f": [data[:1000], data[1000:]]}, corrupt_chunk=1)
    async with api_server(fake) as (port, api):
        a = await request(port, "GET", "/v1/files/f")
        assert api.files.aborted_downloads == 1
    assert a.status == 200 and not a.complete and len(a.body) < len(data)


async def test_put_body_bounded_by_the_max_value() -> None:
    fake = FakeNode()
    async with api_server(fake, max_value=1000) as (port, _):
        a = await request(port, "PUT", "/v1/kv/a", b"x" * 1001)
        c = await Client.open(port)
        b = await c.request("PUT", "/v1/kv/a", [b"x" * 600, b"x" * 600])  # chunked
        await c.aclose()
        ok = await request(port, "PUT", "/v1/kv/a", b"x" * 1000)
    assert a.status == 413 and a.json()["error"] == "too_large"
    assert b.status == 413
    assert ok.status == 204 and fake.kv[b"a"] == b"x" * 1000


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    fake = FakeNode(kv={b"a": b"1"})
    async with api_server(fake) as (port, _):
        c = await Client.open(port)
        with trio.fail_after(10):
            for _ in range(20):
                assert (await c.request("GET", "/v1/kv/a")).body == b"1"
        await c.aclose()


async def test_put_bodies_in_memory_are_bounded_across_connections() -> None:
    fake = FakeNode()
    async with api_server(fake, max_value=1000, max_buffered=1500) as (port, api):
        slow = await trio.open_tcp_stream("127.0.0.1", port)
        await slow.send_all(b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        with trio.fail_after(5):
            while api.buffered != 1000:
                await trio.sleep(0.01)
        full = await request(port, "PUT", "/v1/kv/b", b"x" * 600)
        fits = await request(port, "PUT", "/v1/kv/c", b"x" * 500)
        await slow.aclose()
    assert full.status == 503 and full.headers["retry-after"] == "1"
    assert fits.status == 204


async def test_a_bug_is_a_500_and_the_server_goes_on() -> None:
    fake = FakeNode(kv={b"a": b"1"})
    fake.errors = [{"t": "ok"}]  # a get answered without "val": a reply that does not fit
    async with api_server(fake) as (port, api):
        assert (await request(port, "GET", "/v1/kv/a")).status == 500
        status = await request(port, "GET", "/v1/status")
        assert status.status == 200 and status.json()["role"] == "leader"
        api.caller.call = None  # type: ignore[method-assign,assignment]
        broken = await request(port, "GET", "/v1/kv/a")
    assert broken.status == 500 and broken.json()["error"] == "internal"
