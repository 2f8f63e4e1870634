"""What an rkv answer means in HTTP: the status for each error code of the client protocol,
the JSON error body, and the answer for what needs the coordination issue (501).

Owns: the table below and the JSON encoding of errors. Must not: decide when an error
happens (the node's handlers and rkv.httpapi.api do) or do I/O.
"""

from __future__ import annotations

import json
from typing import Any

from rkv.errors import Compacted, RkvError
from rkv.httpapi.exchange import HttpError

STATUS_OF_CODE: dict[str, int] = {
    "bad_request": 400,
    "auth_failed": 401,
    "not_found": 404,
    "lease_not_found": 404,
    "changed": 409,
    "compacted": 410,
    "precondition_failed": 412,
    "too_large": 413,
    "integrity": 500,
    "internal": 500,
    "not_implemented": 501,
    "unavailable": 503,
    "not_leader": 503,
    "too_many_connections": 503,
    "no_leader": 503,
    "too_many_watchers": 429,
    "timeout": 504,
    "store_full": 507,
}
"""HTTP status of each rkv error code (docs/contracts.md, "HTTP API"). `not_leader` reaches a
client only when this node could not forward (it is told like `unavailable`: retry)."""

RETRY_AFTER = {
    "unavailable",
    "not_leader",
    "too_many_connections",
    "timeout",
    "no_leader",
    "too_many_watchers",
}
"""Codes answered with `Retry-After: 1`: trying again is safe (writes are exactly-once per
connection session) and likely to succeed."""

COORDINATION = "needs the rest of the coordination issue (16), which rkv does not have yet"


def error_body(code: str, message: str, **extra: Any) -> bytes:
    return json.dumps({"error": code, "message": message, **extra}).encode() + b"\n"


def from_rkv(e: RkvError) -> HttpError:
    """The HTTP answer for an rkv error (as a native client would have raised it)."""
    status = STATUS_OF_CODE.get(e.code, 500)
    headers = [("Retry-After", "1")] if e.code in RETRY_AFTER else []
    if isinstance(e, Compacted):
        headers.append(("X-Rkv-First-Revision", str(e.first_revision)))
    return HttpError(status, e.code, e.msg, headers)


def not_implemented(what: str) -> HttpError:
    return HttpError(501, "not_implemented", f"{what} {COORDINATION}")


def bad_request(message: str) -> HttpError:
    return HttpError(400, "bad_request", message)
