"""The client's reads by prefix and with records: scan (from a key: `after`), scan_revision,
scan_records, scan_all (pages with `after`), get_record; and the checks of the key and
prefix arguments every client call shares (`as_bytes`, `as_key`).

Paging: a page is one linearizable scan at its own revision (the store keeps no older
revisions to read a later page at the first one's), so `scan_all` returns every key that
is present and unchanged for the whole iteration exactly once, in key order; a key written
meanwhile is returned with its value at its page's revision, or (created or deleted
meanwhile) returned or not. A node that ignores `after` or `meta` (older than them) makes
these calls raise BadReply rather than loop or answer without records.

Owns: ReadCalls (the async methods rkv.client.Client has through it), SyncReadCalls (their
blocking forms for SyncClient). Must not: import the node runtime or the store (client
layering), or print.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from rkv.codec import MAX_KEY_LEN
from rkv.protocol import (
    MAX_SCAN_LIMIT,
    BadReply,
    GetRequest,
    KeyRecord,
    ScanReply,
    ScanRequest,
    ValueReply,
)


def as_bytes(value: bytes | bytearray | memoryview | str, what: str) -> bytes:
    """`value` as bytes (a str as UTF-8); TypeError for anything else."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def as_key(key: bytes | str, what: str = "key") -> bytes:
    """`key` as bytes; ValueError if it is empty or longer than MAX_KEY_LEN."""
    k = as_bytes(key, what)
    if not k:
        raise ValueError(f"{what} must not be empty")
    if len(k) > MAX_KEY_LEN:
        raise ValueError(f"{what} is {len(k)} bytes, the limit is {MAX_KEY_LEN}")
    return k


def _limit(limit: int, what: str = "limit") -> int:
    """`limit`, if it is a positive integer (ScanRequest refuses one past MAX_SCAN_LIMIT)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{what} must be a positive integer, got {limit!r}")
    return limit


def _request(
    prefix: bytes | str, limit: int, after: bytes | str | None, stale: bool, meta: bool
) -> ScanRequest:
    return ScanRequest(
        as_bytes(prefix, "prefix"),
        limit=_limit(limit),
        stale=bool(stale),
        after=None if after is None else as_key(after, "after"),
        meta=meta,
    )


def _checked(req: ScanRequest, reply: ScanReply) -> ScanReply:
    """`reply`, after checking it honours `req`'s `after` and `meta`."""
    if req.after is not None and reply.items and reply.items[0][0] <= req.after:
        raise BadReply("scan reply: a key not after 'after' (the node predates 'after')")
    if req.meta and reply.items and reply.records is None:
        raise BadReply("scan reply: items without records (the node predates 'meta')")
    return reply


def next_after(keys_read: int, page: int, last: bytes | None) -> bytes | None:
    """The `after` of the page following one that returned `keys_read` keys of the `page`
    asked for, ending at key `last`; None when that page was the last."""
    return last if keys_read >= page else None


class ReadCalls:
    """The read methods of rkv.client.Client (which provides `_call`)."""

    _call: Callable[..., Awaitable[dict[str, Any]]]

    async def _scan(self, req: ScanRequest) -> ScanReply:
        return _checked(req, ScanReply.from_frame(await self._call(req)))

    async def scan(
        self,
        prefix: bytes | str = b"",
        limit: int = 1000,
        *,
        after: bytes | str | None = None,
        stale: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, value) pairs whose key starts with `prefix` and, given
        `after`, is greater than it (the last key of the previous page), in key order."""
        return list((await self._scan(_request(prefix, limit, after, stale, False))).items)

    async def scan_revision(
        self,
        prefix: bytes | str = b"",
        limit: int = 1000,
        *,
        after: bytes | str | None = None,
        stale: bool = False,
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        """`scan`, and the revision it was taken at (the store's applied index: every write
        up to it is in the pairs, none after it; None from a node that predates revisions)."""
        reply = await self._scan(_request(prefix, limit, after, stale, False))
        return list(reply.items), reply.rev

    async def scan_records(
        self,
        prefix: bytes | str = b"",
        limit: int = 1000,
        *,
        after: bytes | str | None = None,
        stale: bool = False,
    ) -> tuple[list[tuple[bytes, KeyRecord]], int | None]:
        """`scan_revision` with each key's record (KeyRecord: value, create_revision,
        mod_revision, version, lease) instead of its value; one read, no log entry."""
        reply = await self._scan(_request(prefix, limit, after, stale, True))
        records = reply.records or ()
        return [(k, r) for (k, _), r in zip(reply.items, records, strict=True)], reply.rev

    async def scan_all(
        self, prefix: bytes | str = b"", page: int = 1000, *, stale: bool = False
    ) -> AsyncIterator[tuple[bytes, bytes]]:
        """Every (key, value) pair whose key starts with `prefix`, in key order, read `page`
        keys per scan, each page after the last key of the one before (see the module
        docstring: pages are at their own revisions)."""
        if _limit(page, "page") > MAX_SCAN_LIMIT:
            raise ValueError(f"page must be at most {MAX_SCAN_LIMIT}, got {page}")
        after: bytes | None = None
        while True:
            items = await self.scan(prefix, page, after=after, stale=stale)
            for item in items:
                yield item
            after = next_after(len(items), page, items[-1][0] if items else None)
            if after is None:
                return

    async def get_record(self, key: bytes | str, *, stale: bool = False) -> KeyRecord | None:
        """`key`'s record (KeyRecord: value, create_revision, mod_revision, version, lease),
        None if it is absent; linearizable unless `stale`, with no log entry."""
        reply = ValueReply.from_frame(
            await self._call(GetRequest(as_key(key), stale=bool(stale), meta=True))
        )
        if not reply.meta:
            raise BadReply("get reply: no record (the node predates 'meta')")
        return reply.record


class SyncReadCalls:
    """The blocking forms of ReadCalls, for rkv.client.SyncClient (`_run` runs a coroutine
    on its loop; `_client` is the async Client)."""

    _run: Callable[..., Any]
    _client: ReadCalls

    def scan(
        self,
        prefix: bytes | str = b"",
        limit: int = 1000,
        *,
        after: bytes | str | None = None,
        stale: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        r: list[tuple[bytes, bytes]] = self._run(
            self._client.scan, prefix, limit, after=after, stale=stale
        )
        return r

    def scan_revision(
        self,
        prefix: bytes | str = b"",
        limit: int = 1000,
        *,
        after: bytes | str | None = None,
        stale: bool = False,
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        r: tuple[list[tuple[bytes, bytes]], int | None] = self._run(
            self._client.scan_revision, prefix, limit, after=after, stale=stale
        )
        return r

    def scan_records(
        self,
        prefix: bytes | str = b"",
        limit: int = 1000,
        *,
        after: bytes | str | None = None,
        stale: bool = False,
    ) -> tuple[list[tuple[bytes, KeyRecord]], int | None]:
        r: tuple[list[tuple[bytes, KeyRecord]], int | None] = self._run(
            self._client.scan_records, prefix, limit, after=after, stale=stale
        )
        return r

    def scan_all(
        self, prefix: bytes | str = b"", page: int = 1000, *, stale: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Client.scan_all's pages, each read by a blocking `scan`."""
        if _limit(page, "page") > MAX_SCAN_LIMIT:
            raise ValueError(f"page must be at most {MAX_SCAN_LIMIT}, got {page}")
        after: bytes | None = None
        while True:
            items = self.scan(prefix, page, after=after, stale=stale)
            yield from items
            after = next_after(len(items), page, items[-1][0] if items else None)
            if after is None:
                return

    def get_record(self, key: bytes | str, *, stale: bool = False) -> KeyRecord | None:
        r: KeyRecord | None = self._run(self._client.get_record, key, stale=stale)
        return r
