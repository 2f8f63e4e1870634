"""Hot backups of a node's store and restoring them into a new single-node data dir.

Owns: the backup file format, the node side of a backup (a consistent compacted LMDB copy
made from one read transaction into an anonymous temporary file, served in bounded chunks),
the client side writer (streams chunks to disk, hashing as it goes, never holding the whole
copy in memory), verification, and `restore` (seed a fresh data dir from a verified backup).
Must not: talk to the network (rkv.node serves the chunks, rkv.client fetches them), or be
used on a data dir a running node holds.

File format (all integers big-endian)::

    b"RKVBAK01"                 8 bytes magic + format version
    u32 n                       length of the manifest
    manifest                    n bytes of UTF-8 JSON (see `Manifest fields` below)
    sha256(manifest)            32 bytes
    data                        manifest["data_size"] bytes: a compacted LMDB data.mdb

Manifest fields: format, cluster_id and node_id (of the source), index (the applied index
the copy contains, every acknowledged write up to it), term (of the entry at `index`), keys,
files, data_size, data_sha256 (hex), created (Unix time), schema (the store schema version).

Coupling note: the copy needs one read transaction that covers both the LMDB copy and the
meta records, which rkv.store does not offer publicly, so `_copy_consistent` uses the
store's `_read` / `_env` / `_snapshot_meta` / `_live`, and `restore` rewrites the meta
records named below (and empties the non-live state-machine generation, where a snapshot
from a leader may have been staged). The restore tests open the result with `open_store`
and serve it, which fails if these drift apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import lmdb
import trio

from rkv.codec import (
    CodecError,
    decode_hard_state,
    encode_hard_state,
    pack,
    snapshot_meta_to_list,
)
from rkv.errors import BadRequest, IntegrityError, NotFound, Unavailable
from rkv.raft.types import NONE, HardState, SnapshotMeta
from rkv.store import kv as kvdb
from rkv.store import open_store
from rkv.store import raft_store as logdb
from rkv.store.env import SCHEMA_VERSION

MAGIC = b"RKVBAK01"
FORMAT = 1
CHUNK = 1 << 20
MAX_CHUNK = 4 << 20
MAX_MANIFEST = 64 << 10
MAX_OPEN = 2
"""Backups a node serves at once (each holds one temporary copy on its disk)."""
IDLE_EXPIRY = 300.0
"""Seconds after the last chunk read that an unfinished backup's copy is dropped."""

# Meta records of rkv.store.env (see the coupling note above).
_META_DB = b"meta"
_LOG_DB = b"log"
_KV_DB = b"kv"
_FILES_DB = b"files"
_K_SCHEMA = b"schema"
_K_CLUSTER = b"cluster_id"
_K_NODE = b"node_id"
_K_VOTERS = b"voters"
_K_HARD_STATE = b"hard_state"
_K_SNAPSHOT = b"snapshot"
_K_SNAPSHOT_DATA = b"snapshot_data"
_GEN_SUFFIXES = (b"", b".1")
_SM_DBS = (b"kv", b"files", b"sessions")
_U32 = struct.Struct(">I")


class BackupCorrupt(IntegrityError):
    """The backup file is damaged or not a backup (the CLI exits with the integrity code)."""


class RestoreError(ValueError):
    """The restore target cannot be used (e.g. it already holds data): a usage error."""


# --- the node side -----------------------------------------------------------------------


def _copy_consistent(store: Any, f: IO[bytes], source: dict[str, str]) -> dict[str, Any]:
    """Blocking: copy the store into `f` from one read transaction; return the manifest."""
    env: lmdb.Environment = store._env

    def in_txn(txn: lmdb.Transaction[bytes]) -> dict[str, Any]:
        env.copyfd(f.fileno(), compact=True, txn=txn)
        sm = store._snapshot_meta(txn)  # applied index and its term, as of this txn
        live: kvdb.Dbs = store._live(txn)  # the live state-machine generation
        return {
            "index": sm.index,
            "term": sm.term,
            "keys": txn.stat(live.kv)["entries"],
            "files": kvdb.count_prefix(txn, live.files, b"m"),
        }

    facts = store._read(in_txn)
    f.flush()
    size, digest = _hash_fd(f.fileno(), 0, None)
    return {
        "format": FORMAT,
        **source,
        **facts,
        "data_size": size,
        "data_sha256": digest,
        "created": round(time.time(), 3),
        "schema": SCHEMA_VERSION,
    }


def _need(raw: bytes | None) -> bytes:
    if raw is None:
        raise CodecError("meta record missing")
    return raw


def _hash_fd(fd: int, offset: int, length: int | None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while length is None or n < length:
        want = CHUNK if length is None else min(CHUNK, length - n)
        data = os.pread(fd, want, offset + n)
        if not data:
            break
        h.update(data)
        n += len(data)
    return n, h.hexdigest()


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
        store: Any,
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


# --- the file format -----------------------------------------------------------------------


def encode_header(manifest: dict[str, Any]) -> bytes:
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + _U32.pack(len(body)) + body + hashlib.sha256(body).digest()


def read_header(f: IO[bytes], what: str) -> tuple[dict[str, Any], int]:
    """(manifest, offset of the data) of a backup file; BackupCorrupt if it is not valid."""
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise BackupCorrupt(f"{what} is not an rkv backup (bad magic)")
    raw_len = f.read(4)
    if len(raw_len) != 4:
        raise BackupCorrupt(f"{what}: truncated header")
    n = _U32.unpack(raw_len)[0]
    if n > MAX_MANIFEST:
        raise BackupCorrupt(f"{what}: manifest length {n} is implausible")
    body = f.read(n)
    digest = f.read(32)
    if len(body) != n or len(digest) != 32:
        raise BackupCorrupt(f"{what}: truncated manifest")
    if hashlib.sha256(body).digest() != digest:
        raise BackupCorrupt(f"{what}: manifest checksum mismatch")
    try:
        manifest = json.loads(body)
    except ValueError as e:
        raise BackupCorrupt(f"{what}: manifest is not JSON: {e}") from None
    check_manifest(manifest, what)
    return manifest, len(MAGIC) + 4 + n + 32


def check_manifest(manifest: object, what: str = "backup") -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise BackupCorrupt(f"{what}: manifest is not an object")
    if manifest.get("format") != FORMAT:
        raise BackupCorrupt(f"{what}: unsupported backup format {manifest.get('format')!r}")
    for name in ("index", "term", "keys", "files", "data_size"):
        v = manifest.get(name)
        if type(v) is not int or v < 0:
            raise BackupCorrupt(f"{what}: manifest field {name} is missing or not an integer")
    sha = manifest.get("data_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise BackupCorrupt(f"{what}: manifest field data_sha256 is missing")
    return manifest


class BackupWriter:
    """Writes a backup file from streamed chunks: header first, then data, hashed on the way.

    The file appears at `path` only after `finish()` verified size and SHA-256 and fsynced
    it; until then it is `path` + ".partial" (removed by `abort()`).
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = check_manifest(manifest, "manifest from the node")
        self.part = self.path.with_name(self.path.name + ".partial")
        self._f = self.part.open("wb")
        self._f.write(encode_header(manifest))
        self._h = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> None:
        self._h.update(data)
        self.written += len(data)
        if self.written > self.manifest["data_size"]:
            raise BackupCorrupt("the node sent more data than the manifest announced")
        self._f.write(data)

    def finish(self) -> dict[str, Any]:
        if self.written != self.manifest["data_size"]:
            raise BackupCorrupt(
                f"got {self.written} bytes, the manifest announced {self.manifest['data_size']}"
            )
        if self._h.hexdigest() != self.manifest["data_sha256"]:
            raise BackupCorrupt("SHA-256 of the received data does not match the manifest")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.part, self.path)
        with contextlib.suppress(OSError):
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return self.manifest

    def abort(self) -> None:
        self._f.close()
        with contextlib.suppress(OSError):
            self.part.unlink()


def verify(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a backup file's header, size and SHA-256; returns its manifest.

    Raises BackupCorrupt (one-line message) if anything is off, OSError if unreadable.
    """
    p = Path(path)
    with p.open("rb") as f:
        manifest, offset = read_header(f, str(p))
        size = os.fstat(f.fileno()).st_size - offset
        if size != manifest["data_size"]:
            raise BackupCorrupt(
                f"{p}: data is {size} bytes, the manifest says {manifest['data_size']}"
            )
        _, digest = _hash_fd(f.fileno(), offset, size)
    if digest != manifest["data_sha256"]:
        raise BackupCorrupt(f"{p}: data checksum mismatch (SHA-256 {digest[:16]}...)")
    return manifest


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
    _rewrite_identity(d, manifest, node_id=node_id, cluster_id=cluster_id)
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


def _rewrite_identity(d: Path, manifest: dict[str, Any], *, node_id: str, cluster_id: str) -> None:
    size = (d / "data.mdb").stat().st_size
    try:
        env = lmdb.open(str(d), subdir=True, max_dbs=12, map_size=max(64 << 20, 2 * size))
    except lmdb.Error as e:
        raise BackupCorrupt(f"the backup's data is not a usable LMDB environment: {e}") from None
    try:
        meta = env.open_db(_META_DB, create=False)
        log_db = env.open_db(_LOG_DB, create=False)
        with env.begin(write=True) as txn:
            schema = txn.get(_K_SCHEMA, db=meta)
            if schema is None or _U32.unpack(schema)[0] != SCHEMA_VERSION:
                raise BackupCorrupt(f"backup has store schema {schema!r}, not {SCHEMA_VERSION}")
            applied = kvdb.decode_u64("applied index", txn.get(kvdb.APPLIED_KEY, db=meta))
            if applied != manifest["index"]:
                raise BackupCorrupt(
                    f"backup data has applied index {applied}, manifest says {manifest['index']}"
                )
            old = decode_hard_state(_need(txn.get(_K_HARD_STATE, db=meta)))
            index, term = manifest["index"], manifest["term"]
            voters = [node_id]
            txn.put(_K_CLUSTER, cluster_id.encode(), db=meta)
            txn.put(_K_NODE, node_id.encode(), db=meta)
            txn.put(_K_VOTERS, pack(voters), db=meta)
            txn.put(
                _K_HARD_STATE,
                encode_hard_state(HardState(term=max(old.term, term), vote=NONE, commit=index)),
                db=meta,
            )
            snap = SnapshotMeta(index=index, term=term, voters=tuple(voters))
            txn.put(_K_SNAPSHOT, pack(snapshot_meta_to_list(snap)), db=meta)
            txn.put(_K_SNAPSHOT_DATA, b"", db=meta)
            gen = txn.get(kvdb.GEN_KEY, db=meta) or b"\x00"
            if gen not in (b"\x00", b"\x01"):
                raise BackupCorrupt("backup data has a bad state machine generation")
            live_files = env.open_db(_FILES_DB + _GEN_SUFFIXES[gen[0]], txn=txn)
            # The applied state stands in for the log up to `index`; later entries in the
            # copy were never applied there (maybe never committed) and are dropped. Records
            # that staged chunks pin are file data, not log: they stay (see rkv.store.kv).
            pins = kvdb.pinned_keys(txn, live_files, 0, index)
            logdb.delete_from(txn, log_db, 0, pins)
            # A snapshot staged from a leader (half received) means nothing here.
            txn.delete(kvdb.STAGING_KEY, db=meta)
            other = _GEN_SUFFIXES[1 - gen[0]]
            for name in _SM_DBS:
                txn.drop(env.open_db(name + other, txn=txn), delete=False)
        env.sync(True)
    except (lmdb.Error, CodecError) as e:
        raise BackupCorrupt(f"the backup's data is not a usable rkv store: {e}") from None
    finally:
        env.close()
    with contextlib.suppress(OSError):
        (d / "lock.mdb").unlink()


__all__ = [
    "BackupCorrupt",
    "BackupSource",
    "BackupWriter",
    "RestoreError",
    "check_manifest",
    "encode_header",
    "read_header",
    "restore",
    "verify",
]
