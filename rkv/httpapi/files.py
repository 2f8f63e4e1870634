"""Files over HTTP, streamed: an upload's body into file_chunk proposals and a commit with its
size, chunk count and SHA-256 (as rkv.client uploads), a download chunk by chunk.

Owns: the streaming of one upload (one chunk buffered at a time: memory stays bounded
whatever the file's size; the upload aborted if the body or a chunk fails) and of one
download (its size and SHA-256 from the file's meta; each chunk checked by the node's store
before it is returned; the running SHA-256 checked before the last chunk is sent, so a
client that got the whole body got the right bytes, and one whose file changed or failed its
check gets a short body it can tell from a complete one). Must not: know HTTP beyond the
Request it is given, or the node beyond rkv.protocol requests and the Caller.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from rkv.errors import RkvError
from rkv.httpapi.calls import Caller
from rkv.httpapi.errors import bad_request
from rkv.httpapi.exchange import Abort, Conn, HttpError, Request
from rkv.protocol import (
    MAX_CHUNKS,
    AbortedReply,
    DataReply,
    FileAbortRequest,
    FileChunkRequest,
    FileCommitRequest,
    FileMetaReply,
    FileMetaRequest,
    FileReadRequest,
    WriteRequest,
)

ABORT_TIMEOUT = 5.0
SHA_HEADER = "x-rkv-sha256"
"""An upload may name its SHA-256 (hex): the commit is refused (400) if the body's differs.
A download always carries it."""


class FileStats:
    def __init__(self) -> None:
        self.uploads = 0
        self.downloads = 0
        self.aborted_downloads = 0


async def upload(
    caller: Caller, req: Request, key: bytes, chunk_size: int
) -> tuple[int, int, bytes]:
    """Stream `req`'s body into the file `key`; (size, chunks, sha256) once committed."""
    want = req.headers.get(SHA_HEADER)
    expected: bytes | None = None
    if want is not None:
        try:
            expected = bytes.fromhex(want.strip())
        except ValueError:
            expected = None
        if expected is None or len(expected) != 32:
            raise bad_request(f"{SHA_HEADER} must be 64 hex digits")
    conn = req.conn
    upload_id = os.urandom(16)
    sha = hashlib.sha256()
    size = chunks = 0
    buf = bytearray()

    async def flush() -> None:
        nonlocal chunks
        if chunks >= MAX_CHUNKS:
            raise HttpError(413, "too_large", f"a file has at most {MAX_CHUNKS} chunks")
        data = bytes(buf)
        buf.clear()
        await write(
            caller,
            conn,
            lambda s: FileChunkRequest(
                key, upload_id, chunks, data, client_id=conn.client_id, seq=s
            ),
        )
        chunks += 1

    try:
        async for piece in req.body(None):
            sha.update(piece)
            size += len(piece)
            view = memoryview(piece)
            while view:
                take = min(len(view), chunk_size - len(buf))
                buf += view[:take]
                view = view[take:]
                if len(buf) == chunk_size:
                    await flush()
        if buf:
            await flush()
        digest = sha.digest()
        if expected is not None and digest != expected:
            raise bad_request(
                f"the body's SHA-256 is {digest.hex()}, not {expected.hex()} ({SHA_HEADER})"
            )
        await write(
            caller,
            conn,
            lambda s: FileCommitRequest(
                key, upload_id, size, chunks, digest, client_id=conn.client_id, seq=s
            ),
        )
    except BaseException:
        # Drop what was staged now rather than when the leader finds the upload idle.
        with trio.CancelScope(shield=True), trio.move_on_after(ABORT_TIMEOUT):
            try:
                reply = await write(
                    caller,
                    conn,
                    lambda s: FileAbortRequest(upload_id, client_id=conn.client_id, seq=s),
                )
                AbortedReply.from_frame(reply)
            except RkvError:
                pass
        raise
    return size, chunks, digest


async def write(caller: Caller, conn: Conn, build: Callable[[int], WriteRequest]) -> dict[str, Any]:
    """One write of the connection's session: the next sequence number, kept across the
    Caller's retries (exactly once)."""
    return await caller.call(build(conn.next_seq()))


async def meta(caller: Caller, key: bytes, stale: bool) -> FileMetaReply:
    return FileMetaReply.from_frame(await caller.call(FileMetaRequest(key, stale=stale)))


async def chunks_of(
    caller: Caller, key: bytes, m: FileMetaReply, stats: FileStats
) -> AsyncIterator[bytes]:
    """The file's chunks in order, each read (and checked by the node's store) before any
    byte of it is sent; Abort before the last one unless the size and SHA-256 of the whole
    matched the meta."""
    h = hashlib.sha256()
    sent = 0

    async def read(n: int) -> bytes:
        try:
            return DataReply.from_frame(await caller.call(FileReadRequest(key, n, m.sha))).data
        except RkvError:  # changed, not found, integrity: the headers are out already
            stats.aborted_downloads += 1
            raise Abort from None

    if m.chunks == 0 and (m.size != 0 or m.sha != hashlib.sha256().digest()):
        stats.aborted_downloads += 1
        raise Abort
    for n in range(m.chunks):
        data = await read(n)
        h.update(data)
        sent += len(data)
        last = n + 1 == m.chunks
        if sent > m.size or (last and (sent != m.size or h.digest() != m.sha)):
            stats.aborted_downloads += 1
            raise Abort
        yield data
