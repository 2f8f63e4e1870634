"""The routes of the HTTP port: the health and metrics paths, and the JSON API `/v1/...`
(docs/contracts.md, "HTTP API").

Owns: which path and method is which request, the query parameters, the bearer token check,
the JSON and raw-bytes bodies, and the error answers (rkv.httpapi.errors maps the codes).
Every request is an rkv.protocol request handed to the node's dispatcher through the Caller,
the way a native client's request arrives. Must not: parse HTTP (rkv.httpapi.server), touch
the node's insides (it gets the dispatch callable and the health routes), or hold more than
one value (at most the max value size) or one file chunk of a body.

Built from what it talks to, so tests build it from fakes (tests/httpapi/test_routes.py).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import quote, unquote_to_bytes

from rkv.codec import MAX_KEY_LEN, MAX_LEASE_ID, MAX_LEASE_TTL_MS, MAX_VALUE_LEN
from rkv.errors import RkvError
from rkv.httpapi import files
from rkv.httpapi.calls import Caller, Dispatch
from rkv.httpapi.errors import bad_request, error_body, from_rkv
from rkv.httpapi.exchange import HttpError, Request
from rkv.protocol import (
    MAX_SCAN_LIMIT,
    CasRequest,
    DeleteRequest,
    ExistedReply,
    FileDeleteRequest,
    GetRequest,
    LeaseGrantReply,
    LeaseGrantRequest,
    OkReply,
    PutRequest,
    ScanReply,
    ScanRequest,
    StatusRequest,
    SwappedReply,
    TxnReply,
    TxnRequest,
    ValueReply,
    WatchEvent,
    WatchReply,
    WatchRequest,
)
from rkv.txn import Compare, OpDelete, OpPut
from rkv.txnjson import TxnJsonError, result_to_json, txn_from_text

log = logging.getLogger("rkv.httpapi")

OPEN_PATHS = frozenset({"/livez", "/readyz"})
"""Served without the token (probes must work without a secret); /metrics needs it unless
the node opens it (`--http-open-metrics`)."""
HEALTH_METHODS = ("GET", "HEAD")
MAX_HTTP_SCAN_LIMIT = MAX_SCAN_LIMIT - 1
"""One less than a scan's limit: the API asks for one more item to tell whether more remain."""
DEFAULT_SCAN = 1000
WATCH_WAIT_MS = 5000
"""How long a watch stream's poll waits for events before a progress line."""
NDJSON = "application/x-ndjson"
MAX_BUFFERED = 64 << 20
"""Bytes of put bodies all connections may hold in memory at once (a chunked body counts as
the max value size): beyond, 503 and Retry-After."""
LEASE_HEADER = "X-Rkv-Lease"
"""A PUT with ?ttl= answers the lease it granted for the key: ID (and its TTL, seconds, in
X-Rkv-Lease-TTL)."""
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


class HealthResponse(Protocol):
    """What a health route returns (rkv.http.Response, from rkv.node.health's routes)."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...


HealthRoute = Callable[[], HealthResponse]


class HttpApi:
    def __init__(
        self,
        dispatch: Dispatch,
        *,
        health: Mapping[str, HealthRoute],
        token: str | None = None,
        open_metrics: bool = False,
        timeout: float = 10.0,
        chunk_size: int = 1 << 20,
        max_value: int = MAX_VALUE_LEN,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.caller = Caller(dispatch, timeout=timeout)
        self.health = health
        self._token = token.encode() if token else None
        self.open_metrics = open_metrics
        self.chunk_size = chunk_size
        self.max_value = max_value
        self.max_buffered = max_buffered
        self.buffered = 0
        """Bytes of put bodies held in memory right now (all connections)."""
        self.files = files.FileStats()
        self.unauthorized = 0

    # -- entry points (rkv.httpapi.server) ----------------------------------------------------

    async def handle(self, req: Request) -> None:
        try:
            await self._route(req)
        except RkvError as e:  # as a native client would have got it
            raise from_rkv(e) from None

    async def _route(self, req: Request) -> None:
        path = req.path
        if path in self.health:
            if path not in OPEN_PATHS and not (path == "/metrics" and self.open_metrics):
                self._authorize(req)
            await self._health(req, path)
            return
        self._authorize(req)
        if path == "/v1/kv" or path == "/v1/kv/":
            self._methods(req, "GET", "HEAD")
            await self._scan(req)
        elif path.startswith("/v1/kv/"):
            await self._kv(req, _key(path[len("/v1/kv/") :]))
        elif path.startswith("/v1/files/"):
            await self._file(req, _key(path[len("/v1/files/") :]))
        elif path == "/v1/status":
            self._methods(req, "GET", "HEAD")
            status = await self.caller.call(StatusRequest())
            status.pop("t", None)
            status.pop("id", None)
            await _json(req, 200, status)
        elif path == "/v1/txn":
            self._methods(req, "POST")
            await self._txn(req)
        elif path == "/v1/watch":
            self._methods(req, "GET")
            await self._watch(req)
        else:
            raise HttpError(404, "not_found", f"no such path {path[:200]}")

    async def on_error(self, req: Request, e: HttpError) -> None:
        await req.respond(e.status, error_body(e.code, e.message), JSON, e.headers)

    # -- auth and health ----------------------------------------------------------------------

    def _authorize(self, req: Request) -> None:
        if self._token is None:
            return
        given = req.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("latin-1"), self._token
        )
        if not ok:
            self.unauthorized += 1
            raise HttpError(
                401,
                "auth_failed",
                "this node needs the cluster token: Authorization: Bearer TOKEN",
                [("WWW-Authenticate", 'Bearer realm="rkv"')],
            )

    async def _health(self, req: Request, path: str) -> None:
        if req.method not in HEALTH_METHODS:
            raise HttpError(
                405, "bad_request", f"method {req.method} not allowed", [("Allow", "GET, HEAD")]
            )
        try:
            resp = self.health[path]()
        except Exception as e:  # a bug in a route must not kill the node
            log.exception("http route %s failed", path)
            await req.respond(500, f"internal error: {type(e).__name__}\n".encode(), TEXT)
            return
        await req.respond(resp.status, resp.body, resp.content_type)

    @staticmethod
    def _methods(req: Request, *allowed: str) -> None:
        if req.method not in allowed:
            raise HttpError(
                405,
                "bad_request",
                f"method {req.method} not allowed here",
                [("Allow", ", ".join(allowed))],
            )

    # -- keys ---------------------------------------------------------------------------------

    async def _kv(self, req: Request, key: bytes) -> None:
        q = _query(req, "consistency", "if_value", "if_absent", "lease", "ttl", "if_mod_revision")
        conn = req.conn
        try:
            if req.method in ("GET", "HEAD"):
                _only(q, "consistency")
                reply = await self.caller.call(GetRequest(key, stale=_stale(q)))
                got = ValueReply.from_frame(reply)
                if got.value is None:
                    raise HttpError(404, "not_found", f"no key {_shown(key)}", _revision(got.rev))
                await req.respond(200, got.value, "application/octet-stream", _revision(got.rev))
            elif req.method == "PUT":
                _only(q, "if_value", "if_absent", "lease", "ttl", "if_mod_revision")
                lease, ttl_ms = _lease_params(q)
                mod = _mod_revision(q)
                if mod is not None and ("if_value" in q or "if_absent" in q):
                    raise bad_request("if_mod_revision does not go with if_value/if_absent")
                with self._buffer(req):
                    value = await req.read_body(self.max_value)
                    if "if_value" in q or "if_absent" in q:
                        if lease or ttl_ms:
                            raise bad_request("lease and ttl do not go with if_value/if_absent")
                        await self._cas(req, key, q, value)
                        return
                    granted: list[tuple[str, str]] = []
                    if ttl_ms:
                        g = LeaseGrantReply.from_frame(
                            await self.caller.call(
                                LeaseGrantRequest(
                                    ttl_ms, client_id=conn.client_id, seq=conn.next_seq()
                                )
                            )
                        )
                        lease = g.lease_id
                        granted = [
                            (LEASE_HEADER, str(lease)),
                            (f"{LEASE_HEADER}-TTL", f"{g.ttl_ms / 1000:g}"),
                        ]
                    rev: int | None
                    if mod is not None:
                        rev = await self._if_mod(req, key, mod, OpPut(key, value, lease))
                    else:
                        reply = await self.caller.call(
                            PutRequest(
                                key,
                                value,
                                client_id=conn.client_id,
                                seq=conn.next_seq(),
                                lease=lease,
                            )
                        )
                        rev = OkReply.from_frame(reply).rev
                await req.respond(204, headers=_revision(rev) + granted)
            elif req.method == "DELETE":
                _only(q, "if_mod_revision")
                mod = _mod_revision(q)
                if mod is not None:
                    rev = await self._if_mod(req, key, mod, OpDelete(key))
                    await req.respond(204, headers=_revision(rev))
                    return
                reply = await self.caller.call(
                    DeleteRequest(key, client_id=conn.client_id, seq=conn.next_seq())
                )
                deleted = ExistedReply.from_frame(reply)
                if not deleted.existed:
                    raise HttpError(
                        404, "not_found", f"no key {_shown(key)}", _revision(deleted.rev)
                    )
                await req.respond(204, headers=_revision(deleted.rev))
            else:
                self._methods(req, "GET", "HEAD", "PUT", "DELETE")
        except RkvError as e:
            raise from_rkv(e) from None

    @contextmanager
    def _buffer(self, req: Request) -> Iterator[None]:
        """Room for a put's body among all connections' (`max_buffered`): 503 if there is
        none now. A body longer than the max value is refused (413) before any is taken."""
        n = req.content_length
        if n is not None and n > self.max_value:
            raise HttpError(413, "too_large", f"the body has {n} bytes, at most {self.max_value}")
        need = self.max_value if n is None else n
        if self.buffered + need > self.max_buffered:
            raise HttpError(
                503,
                "unavailable",
                "too many request bodies in memory on this node; retry",
                [("Retry-After", "1")],
            )
        self.buffered += need
        try:
            yield
        finally:
            self.buffered -= need

    async def _if_mod(self, req: Request, key: bytes, mod: int, op: OpPut | OpDelete) -> int:
        """`op` in a txn that holds only if the key's mod revision is `mod` (0: absent): its
        revision; 412 if the key's mod revision differs, 404 for a delete of an absent key."""
        conn = req.conn
        reply = await self.caller.call(
            TxnRequest(
                (Compare(key, "mod", "==", mod),),
                (op,),
                (),
                client_id=conn.client_id,
                seq=conn.next_seq(),
            )
        )
        done = TxnReply.from_frame(reply)
        if not done.succeeded:
            raise _failed(f"key {_shown(key)} has not mod revision {mod}", done.rev)
        if isinstance(op, OpDelete) and done.results[0] == 0:
            raise HttpError(404, "not_found", f"no key {_shown(key)}", _revision(done.rev))
        return done.rev

    async def _cas(self, req: Request, key: bytes, q: dict[str, str], value: bytes) -> None:
        if ("if_value" in q) == ("if_absent" in q):
            raise bad_request("give one of if_value (the expected value) and if_absent=true")
        if "if_absent" in q and q["if_absent"] != "true":
            raise bad_request("if_absent must be true")
        expected = unquote_to_bytes(q["if_value"]) if "if_value" in q else None
        conn = req.conn
        reply = await self.caller.call(
            CasRequest(key, expected, value, client_id=conn.client_id, seq=conn.next_seq())
        )
        swapped = SwappedReply.from_frame(reply)
        if not swapped.swapped:
            raise _failed(f"key {_shown(key)} did not match", swapped.rev)
        await req.respond(204, headers=_revision(swapped.rev))

    async def _scan(self, req: Request) -> None:
        """GET /v1/kv?prefix=&limit=&after=: the pairs under the prefix (after the key
        `after`, exclusive; all percent-encoded), "more", and with more a "next" cursor: the
        last key returned, percent-encoded, the `after` of the next page."""
        q = _query(req, "prefix", "limit", "consistency", "after")
        prefix = unquote_to_bytes(q.get("prefix", ""))
        if len(prefix) > MAX_KEY_LEN:
            raise bad_request(f"prefix must be at most {MAX_KEY_LEN} bytes")
        after = unquote_to_bytes(q["after"]) if "after" in q else None
        if after is not None and not 0 < len(after) <= MAX_KEY_LEN:
            raise bad_request(f"after must be a key of 1..{MAX_KEY_LEN} bytes")
        try:
            limit = int(q.get("limit", DEFAULT_SCAN))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_HTTP_SCAN_LIMIT:
            raise bad_request(f"limit must be an integer in 1..{MAX_HTTP_SCAN_LIMIT}")
        try:
            request = ScanRequest(prefix, limit + 1, stale=_stale(q), after=after)
            scanned = ScanReply.from_frame(await self.caller.call(request))
        except RkvError as e:
            raise from_rkv(e) from None
        items = scanned.items
        more = len(items) > limit
        doc: dict[str, Any] = {
            "items": [{"key": _b64(k), "value": _b64(v)} for k, v in items[:limit]],
            "more": more,
        }
        if more:
            doc["next"] = quote(items[limit - 1][0], safe="")
        if scanned.rev is not None:
            doc["revision"] = scanned.rev
        await _json(req, 200, doc)

    async def _watch(self, req: Request) -> None:
        """GET /v1/watch?prefix=&start_revision=&prev=true (or key= for one key's changes):
        newline-delimited JSON, one line
        per event ({"revision", "type", "key", "value", "prev_value"}; key and values
        base64), a {"type": "progress", "revision"} line when the node proved a revision
        current and had nothing to send (about every WATCH_WAIT_MS), until the client closes.
        An error before the stream starts (compacted: 410 with X-Rkv-First-Revision, a bad
        parameter) is an HTTP error; one during it is a last {"type": "error", "error",
        "message"} line (no_leader: this node has had no leader for an election timeout)
        and the end of the stream: go on from the last revision + 1 (through another node)."""
        q = _query(req, "prefix", "start_revision", "prev", "key")
        if "key" in q:  # one key's changes
            if "prefix" in q:
                raise bad_request("give prefix or key, not both")
            q["prefix"] = q["key"]
        prefix = unquote_to_bytes(q.get("prefix", ""))
        if len(prefix) > MAX_KEY_LEN:
            raise bad_request(f"prefix must be at most {MAX_KEY_LEN} bytes")
        after: int | None = None
        if "start_revision" in q:
            try:
                after = int(q["start_revision"]) - 1
            except ValueError:
                after = -1
            if after < 0:
                raise bad_request("start_revision must be a positive integer")
        prev = q.get("prev", "false")
        if prev not in ("true", "false"):
            raise bad_request("prev must be true or false")
        with_prev = prev == "true"

        exact = "key" in q
        if exact and not prefix:
            raise bad_request("key must not be empty")

        def poll(after: int | None) -> WatchRequest:
            return WatchRequest(prefix, after, with_prev, wait_ms=WATCH_WAIT_MS, exact=exact)

        try:  # the first poll before the stream starts: its error is an HTTP status
            first = WatchReply.from_frame(await self.caller.call(poll(after)))
        except RkvError as e:
            raise from_rkv(e) from None

        async def lines() -> AsyncIterator[bytes]:
            reply = first
            while True:
                out = [_event_json(ev, with_prev) for ev in reply.events]
                if reply.progress and not reply.events:
                    out.append({"type": "progress", "revision": reply.rev})
                if out:
                    yield b"".join(json.dumps(d).encode() + b"\n" for d in out)
                try:
                    reply = WatchReply.from_frame(await self.caller.call(poll(reply.rev)))
                except RkvError as e:
                    last = {"type": "error", "error": e.code, "message": e.msg}
                    yield json.dumps(last).encode() + b"\n"
                    return

        await req.respond_stream(200, lines(), None, NDJSON)

    async def _txn(self, req: Request) -> None:
        """POST /v1/txn: the body is a txn in the JSON form of rkv.txnjson (as `rkv txn`
        reads it); 200 with {"succeeded", "revision", "results"} whether or not the compares
        held; 400 for a body that does not fit or an op the state machine refused (nothing
        applied)."""
        _query(req)
        with self._buffer(req):
            body = await req.read_body(self.max_value)
        try:
            t = txn_from_text(body)
        except TxnJsonError as e:
            raise bad_request(f"bad txn: {e}") from None
        conn = req.conn
        try:
            reply = await self.caller.call(
                TxnRequest(
                    t.compares, t.success, t.failure, client_id=conn.client_id, seq=conn.next_seq()
                )
            )
            result = TxnReply.from_frame(reply).result()
        except RkvError as e:
            raise from_rkv(e) from None
        branch = t.success if result.succeeded else t.failure
        await _json(req, 200, result_to_json(branch, result))

    # -- files --------------------------------------------------------------------------------

    async def _file(self, req: Request, key: bytes) -> None:
        q = _query(req, "consistency")
        conn = req.conn
        try:
            if req.method in ("GET", "HEAD"):
                _only(q, "consistency")
                m = await files.meta(self.caller, key, _stale(q))
                self.files.downloads += 1
                await req.respond_stream(
                    200,
                    files.chunks_of(self.caller, key, m, self.files),
                    m.size,
                    headers=[("X-Rkv-Sha256", m.sha.hex()), ("ETag", f'"{m.sha.hex()}"')],
                )
            elif req.method == "PUT":
                _only(q)
                size, chunks, sha = await files.upload(self.caller, req, key, self.chunk_size)
                self.files.uploads += 1
                await _json(req, 201, {"size": size, "chunks": chunks, "sha256": sha.hex()})
            elif req.method == "DELETE":
                _only(q)
                reply = await self.caller.call(
                    FileDeleteRequest(key, client_id=conn.client_id, seq=conn.next_seq())
                )
                if not ExistedReply.from_frame(reply).existed:
                    raise HttpError(404, "not_found", f"no file {_shown(key)}")
                await req.respond(204)
            else:
                self._methods(req, "GET", "HEAD", "PUT", "DELETE")
        except RkvError as e:
            raise from_rkv(e) from None


# -- helpers ----------------------------------------------------------------------------------


def _key(segment: str) -> bytes:
    key = unquote_to_bytes(segment)
    if not 1 <= len(key) <= MAX_KEY_LEN:
        raise bad_request(f"a key must be 1..{MAX_KEY_LEN} bytes (percent-encoded in the path)")
    return key


def _query(req: Request, *known: str) -> dict[str, str]:
    """The query parameters (values still percent-encoded: a value may be any bytes);
    400 for one this route does not know or given twice."""
    out: dict[str, str] = {}
    for part in req.query.split("&") if req.query else ():
        name, _, value = part.partition("=")
        name = unquote_to_bytes(name).decode("utf-8", "replace")
        if name not in known:
            raise bad_request(f"unknown query parameter {name[:40]!r} (known: {', '.join(known)})")
        if name in out:
            raise bad_request(f"query parameter {name!r} given twice")
        out[name] = value
    return out


def _only(q: dict[str, str], *allowed: str) -> None:
    for name in q:
        if name not in allowed:
            raise bad_request(f"query parameter {name!r} does not apply to this method")


def _stale(q: dict[str, str]) -> bool:
    c = (
        unquote_to_bytes(q["consistency"]).decode("utf-8", "replace")
        if "consistency" in q
        else None
    )
    if c in (None, "linearizable"):
        return False
    if c == "stale":
        return True
    raise bad_request("consistency must be linearizable or stale")


REVISION_HEADER = "X-Rkv-Revision"


def _lease_params(q: dict[str, str]) -> tuple[int, int]:
    """(lease id, ttl in ms) of a PUT's ?lease=ID or ?ttl=SECONDS (0: not given)."""
    if "lease" in q and "ttl" in q:
        raise bad_request("give one of lease (an existing lease) and ttl (a lease of its own)")
    lease = ttl = 0
    try:
        if "lease" in q:
            lease = int(q["lease"])
            if not 1 <= lease <= MAX_LEASE_ID:
                raise ValueError
        if "ttl" in q:
            secs = float(q["ttl"])
            if not math.isfinite(secs) or not 0.001 <= secs <= MAX_LEASE_TTL_MS / 1000:
                raise ValueError
            ttl = math.ceil(secs * 1000)
    except ValueError:
        raise bad_request(
            "lease must be a lease id (1..2^63-1), ttl a number of seconds (>= 0.001)"
        ) from None
    return lease, ttl


def _failed(why: str, rev: int | None) -> HttpError:
    """412 precondition_failed, with the revision the write's condition was checked at."""
    return HttpError(412, "precondition_failed", why, _revision(rev))


def _mod_revision(q: dict[str, str]) -> int | None:
    """?if_mod_revision=N (N >= 0; 0: the key must be absent), or None."""
    if "if_mod_revision" not in q:
        return None
    v = q["if_mod_revision"]
    if not v.isascii() or not v.isdigit() or len(v) > 20 or int(v) >= 1 << 64:
        raise bad_request("if_mod_revision must be a revision (an integer >= 0; 0: absent)")
    return int(v)


def _revision(rev: int | None) -> list[tuple[str, str]]:
    """The header that carries the revision a read saw or a write made (none if unknown)."""
    return [] if rev is None else [(REVISION_HEADER, str(rev))]


def _event_json(ev: WatchEvent, with_prev: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "revision": ev.rev,
        "type": ev.type,
        "key": _b64(ev.key),
        "value": None if ev.value is None else _b64(ev.value),
    }
    if with_prev:
        d["prev_value"] = None if ev.prev is None else _b64(ev.prev)
    return d


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _shown(key: bytes) -> str:
    return repr(key[:100])


async def _json(req: Request, status: int, doc: Any) -> None:
    await req.respond(status, json.dumps(doc).encode() + b"\n", JSON)
