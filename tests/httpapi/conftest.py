"""Helpers for the HTTP port's tests: a fake node behind the dispatcher (a dict store that
answers rkv.protocol frames), the API served from it on a free port, and a small HTTP/1.1
client on h11."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from rkv.codec import unpack
from rkv.http import text
from rkv.httpapi import HttpApi, Limits, serve_api
from rkv.protocol import TxnReply, TxnRequest, decode_request
from rkv.store.txn_apply import execute_txn
from rkv.testing import DictTxn
from rkv.txn import TxnResult

Frame = dict[str, Any]


TOKEN = "s3cret-token-of-16+chars"


@dataclass
class FakeNode:
    """Answers frames as a node's handlers would (no Raft): a dict of keys, a dict of files,
    and `errors`, error frames answered first (to test mapping and retries)."""

    kv: dict[bytes, bytes] = field(default_factory=dict)
    files: dict[bytes, list[bytes]] = field(default_factory=dict)
    staged: dict[bytes, dict[int, bytes]] = field(default_factory=dict)
    frames: list[Frame] = field(default_factory=list)
    errors: list[Frame] = field(default_factory=list)
    sessions: dict[tuple[bytes, int], Frame] = field(default_factory=dict)
    corrupt_chunk: int | None = None
    leases: dict[int, int] = field(default_factory=dict)
    """lease id -> ttl ms (granted ids are 100, 101, ...)."""
    attached: dict[bytes, int] = field(default_factory=dict)

    async def dispatch(self, frame: Frame) -> Frame:
        decode_request(frame)  # every frame the API sends is a valid request
        self.frames.append(frame)
        await trio.sleep(0)
        if self.errors:
            return self.errors.pop(0)
        key = (frame.get("c", b""), frame.get("s", 0))
        if "s" in frame and key in self.sessions:  # a retried write: its first answer
            return self.sessions[key]
        answer = self._answer(frame)
        if "s" in frame:
            self.sessions[key] = answer
        return answer

    def _answer(self, f: Frame) -> Frame:
        t, k = f["t"], f.get("k", b"")
        rev = len(self.frames)  # a revision per request that reached the node
        if t == "put":
            lease = f.get("lease", 0)
            if lease and lease not in self.leases:
                return {"t": "error", "code": "lease_not_found", "msg": "lease not found"}
            self.kv[k] = f["val"]
            self.attached[k] = lease
            return {"t": "ok", "rev": rev}
        if t == "lease_grant":
            lid = f.get("lease") or 100 + len(self.leases)
            self.leases[lid] = max(f["ttl"], 1000)  # a node's minimum TTL
            return {"t": "ok", "lease": lid, "ttl": self.leases[lid], "rev": rev}
        if t == "get":
            return {"t": "ok", "val": self.kv.get(k), "rev": rev}
        if t == "delete":
            return {"t": "ok", "existed": self.kv.pop(k, None) is not None, "rev": rev}
        if t == "cas":
            swapped = self.kv.get(k) == f.get("exp")
            if swapped:
                self.kv[k] = f["val"]
            return {"t": "ok", "swapped": swapped, "rev": rev}
        if t == "scan":
            after = f.get("after")
            items = sorted(
                (a, b)
                for a, b in self.kv.items()
                if a.startswith(f.get("p", b"")) and (after is None or a > after)
            )
            found = [[a, b] for a, b in items[: f.get("limit", 1000)]]
            return {"t": "ok", "items": found, "rev": rev}
        if t == "txn":
            req = decode_request(f)
            assert isinstance(req, TxnRequest)
            res = execute_txn(DictTxn(self.kv), req.command(), len(self.frames))
            if not res.ok:
                return {"t": "error", "code": "bad_request", "msg": res.error}
            assert isinstance(res.value, bytes)
            r = TxnResult.from_wire(unpack(res.value))
            return TxnReply(r.succeeded, r.revision, r.results).to_frame()
        if t == "status":
            return {"t": "ok", "node": "n1", "role": "leader", "term": 2, "leader": "n1"}
        if t == "file_chunk":
            self.staged.setdefault(f["u"], {})[f["n"]] = f["data"]
            return {"t": "ok"}
        if t == "file_commit":
            chunks = self.staged.pop(f["u"], {})
            data = [chunks[i] for i in range(f["chunks"])]
            if hashlib.sha256(b"".join(data)).digest() != f["sha"]:
                return {"t": "error", "code": "bad_request", "msg": "sha256 mismatch"}
            self.files[k] = data
            return {"t": "ok"}
        if t == "file_abort":
            return {"t": "ok", "aborted": self.staged.pop(f["u"], None) is not None}
        if t == "file_delete":
            return {"t": "ok", "existed": self.files.pop(k, None) is not None}
        if t in ("file_meta", "file_read"):
            if k not in self.files:
                return {"t": "error", "code": "not_found", "msg": f"no file {k!r}"}
            data = self.files[k]
            sha = hashlib.sha256(b"".join(data)).digest()
            if t == "file_meta":
                return {"t": "ok", "size": sum(map(len, data)), "chunks": len(data), "sha": sha}
            chunk = data[f["n"]]
            if f["n"] == self.corrupt_chunk:
                chunk = b"X" + chunk[1:]
            return {"t": "ok", "data": chunk}
        return {"t": "error", "code": "bad_request", "msg": f"unknown request type {t!r}"}


def health() -> dict[str, Any]:
    return {
        "/livez": lambda: text(200, "ok"),
        "/readyz": lambda: text(503, "no leader known"),
        "/metrics": lambda: text(200, "rkv_term 2"),
    }


@asynccontextmanager
async def api_server(
    fake: FakeNode, *, token: str | None = None, limits: Limits | None = None, **kw: Any
) -> AsyncIterator[tuple[int, HttpApi]]:
    api = HttpApi(fake.dispatch, health=health(), token=token, timeout=1.0, **kw)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_api(
                api.handle, api.on_error, "127.0.0.1", 0, limits=limits, task_status=task_status
            )
        )
        yield port, api
        nursery.cancel_scope.cancel()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool = True

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class Client:
    """One HTTP/1.1 connection (keep-alive) spoken with h11."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Answer:
        hs = [("Host", "test"), *headers]
        pieces = [body] if isinstance(body, bytes) else list(body)
        if isinstance(body, bytes):
            hs.append(("Content-Length", str(len(body))))
        else:
            hs.append(("Transfer-Encoding", "chunked"))
        await self._send(h11.Request(method=method, target=path, headers=hs))
        for p in pieces:
            if p:
                await self._send(h11.Data(data=p))
        await self._send(h11.EndOfMessage())
        return await self.answer()

    async def answer(self) -> Answer:
        resp: h11.Response | None = None
        body = bytearray()
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data and resp is not None:
                    return Answer(resp.status_code, _hs(resp), bytes(body), False)
                self.conn.receive_data(data)
                continue
            if isinstance(ev, h11.Response):
                resp = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                assert resp is not None
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return Answer(resp.status_code, _hs(resp), bytes(body))
            elif isinstance(ev, h11.ConnectionClosed):
                raise EOFError("closed before an answer")

    async def _send(self, ev: h11.Event) -> None:
        await self.stream.send_all(self.conn.send(ev) or b"")

    async def aclose(self) -> None:
        await self.stream.aclose()


def _hs(resp: h11.Response) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in resp.headers}


async def request(port: int, method: str, path: str, body: bytes = b"", **kw: Any) -> Answer:
    c = await Client.open(port)
    try:
        with trio.fail_after(10):
            return await c.request(method, path, body, **kw)
    finally:
        await c.aclose()
