"""Hot backups of a node's store and restoring them into a new single-node data dir.

Owns: the node side of a backup (`BackupSource`: a consistent compacted copy, made by the
store's public `write_backup` from one read transaction into an anonymous temporary file,
served in bounded chunks, with the manifest around it) and `restore` (seed a fresh data dir
from a verified backup through `rkv.store.adopt_backup_copy`). The file format, the writer
and `verify` are rkv.backup_file's (re-exported here).
Must not: talk to the network (rkv.node serves the chunks, rkv.client fetches them), touch
the store's private state or its record layouts (only its public API: the store owns its
meta records), or be used on a data dir a running node holds.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import trio

# The file format is rkv.backup_file's; the names callers knew from here are re-exported.
from rkv.backup_file import CHUNK, FORMAT, MAX_CHUNK, hash_fd
from rkv.backup_file import MAGIC as MAGIC
from rkv.backup_file import BackupCorrupt as BackupCorrupt
from rkv.backup_file import BackupWriter as BackupWriter
from rkv.backup_file import check_manifest as check_manifest
from rkv.backup_file import encode_header as encode_header
from rkv.backup_file import read_header as read_header
from rkv.backup_file import verify as verify
from rkv.errors import BadRequest, NotFound, Unavailable
from rkv.store import SCHEMA_VERSION, BackupCopy, StoreError, adopt_backup_copy, open_store

MAX_OPEN = 2
"""Backups a node serves at once (each holds one temporary copy on its disk)."""
IDLE_EXPIRY = 300.0
"""Seconds after the last chunk read that an unfinished backup's copy is dropped."""


class BackupStore(Protocol):
    """What a backup needs of a store (LmdbStore and MemoryStore both offer it)."""

    def write_backup(self, f: IO[bytes]) -> BackupCopy: ...


class RestoreError(ValueError):
    """The restore target cannot be used (e.g. it already holds data): a usage error."""


# --- the node side -----------------------------------------------------------------------


def _copy_consistent(store: BackupStore, f: IO[bytes], source: dict[str, str]) -> dict[str, Any]:
    """Blocking: copy the store into `f` from one read transaction; return the manifest."""
    facts = store.write_backup(f)
    size, digest = hash_fd(f.fileno(), 0, None)
    return {
        "format": FORMAT,
        **source,
        **asdict(facts),
        "data_size": size,
        "data_sha256": digest,
        "created": round(time.time(), 3),
        "schema": SCHEMA_VERSION,
    }


@dataclass(slots=True)
class _Open:
    file: IO[bytes]
    manifest: dict[str, Any]
    last_used: float


class BackupSource:
    """The backups one node is serving: begin (make the copy), read chunks, end.

    Each copy lives in an anonymous temporary file in `tmp_dir` (the data dir: same disk,
    nothing left behind after a crash). At most `max_open` at once; a copy unread for
    `idle` seconds is dropped at the next begin.
    """

    def __init__(
        self,
        store: BackupStore,
        tmp_dir: Path,
        source: dict[str, str],
        *,
        max_open: int = MAX_OPEN,
        idle: float = IDLE_EXPIRY,
    ) -> None:
        self.store = store
        self.tmp_dir = tmp_dir
        self.source = source
        self.max_open = max_open
        self.idle = idle
        self._open: dict[bytes, _Open] = {}
        self._lock = trio.Lock()
        self.started = 0

    async def begin(self) -> tuple[bytes, dict[str, Any]]:
        """Make a consistent copy; returns (token, manifest)."""
        now = trio.current_time()
        for tok, o in list(self._open.items()):
            if now - o.last_used > self.idle:
                self.end(tok)
        if len(self._open) >= self.max_open:
            raise Unavailable(f"{self.max_open} backups already in progress on this node")
        # One copy at a time: two would only compete for the same disk.
        async with self._lock:
            f = tempfile.TemporaryFile(dir=self.tmp_dir, prefix=".rkv-backup-")  # noqa: SIM115 (kept open until end())
            try:
                manifest = await trio.to_thread.run_sync(
                    _copy_consistent, self.store, f, self.source
                )
            except BaseException:
                f.close()
                raise
        token = os.urandom(16)
        self._open[token] = _Open(f, manifest, trio.current_time())
        self.started += 1
        return token, manifest

    async def read(self, token: bytes, offset: int, length: int) -> bytes:
        o = self._open.get(token)
        if o is None:
            raise NotFound("no such backup in progress (finished or expired); start again")
        if not 1 <= length <= MAX_CHUNK:
            raise BadRequest(f"length must be in 1..{MAX_CHUNK}")
        if offset < 0 or offset > o.manifest["data_size"]:
            raise BadRequest("offset out of range")
        o.last_used = trio.current_time()
        data = await trio.to_thread.run_sync(os.pread, o.file.fileno(), length, offset)
        o.last_used = trio.current_time()
        return data

    def end(self, token: bytes) -> bool:
        o = self._open.pop(token, None)
        if o is None:
            return False
        o.file.close()
        return True

    def close(self) -> None:
        for tok in list(self._open):
            self.end(tok)

    @property
    def in_progress(self) -> int:
        return len(self._open)


# --- restore -------------------------------------------------------------------------------


def restore(
    path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    node_id: str,
    cluster_id: str,
    log: Callable[[str], None] = lambda _s: None,
) -> dict[str, Any]:
    """Verify the backup at `path`, then seed `data_dir` as the store of a new single-node
    cluster (`node_id` its only voter) holding the backup's applied state.

    The Raft log is not restored: the state is installed as a snapshot at the backup's
    index (term from the manifest), so the node starts with applied = commit = that index.
    Client sessions are kept, so a client retrying a write that the backup contains is
    still answered once. Raises BackupCorrupt, RestoreError (target not empty) or OSError.
    """
    manifest = verify(path)
    log(f"verified {path}: index {manifest['index']}, {manifest['keys']} keys")
    d = Path(data_dir)
    if d.exists() and any(d.iterdir()):
        raise RestoreError(f"data dir {d} is not empty; restore needs a new or empty directory")
    d.mkdir(parents=True, exist_ok=True)
    target = d / "data.mdb"
    part = d / "data.mdb.restoring"
    with Path(path).open("rb") as src, part.open("wb") as out:
        _, offset = read_header(src, str(path))
        src.seek(offset)
        while True:
            data = src.read(CHUNK)
            if not data:
                break
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, target)
    try:
        adopt_backup_copy(
            d,
            index=manifest["index"],
            term=manifest["term"],
            cluster_id=cluster_id,
            node_id=node_id,
        )
    except StoreError as e:
        raise BackupCorrupt(f"the backup's data is not a usable rkv store: {e}") from None
    store = open_store(str(d), cluster_id=cluster_id, node_id=node_id, voters=[node_id])
    try:
        if store.applied_index() != manifest["index"]:
            raise BackupCorrupt(
                f"restored store has applied index {store.applied_index()}, "
                f"the manifest says {manifest['index']}"
            )
    finally:
        store.close()
    return manifest


__all__ = ["BackupSource", "BackupStore", "RestoreError", "restore"]
