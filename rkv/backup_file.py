"""The backup file format: header and manifest, the streaming writer, verification.

Owns: the layout of an rkv backup file, the manifest checks, `BackupWriter` (writes a backup
from streamed chunks, hashing as it goes, never holding the whole copy in memory) and
`verify`. The client imports this module to write `rkv backup` files.
Must not: import the store, lmdb, the node or the network (the client imports this module,
and `import rkv.client` must not load lmdb; rkv.backup holds the node side and restore).

File format (all integers big-endian)::

    b"RKVBAK01"                 8 bytes magic + format version
    u32 n                       length of the manifest
    manifest                    n bytes of UTF-8 JSON (see `Manifest fields` below)
    sha256(manifest)            32 bytes
    data                        manifest["data_size"] bytes: a compacted LMDB data.mdb

Manifest fields: format, cluster_id and node_id (of the source), index (the applied index
the copy contains, every acknowledged write up to it), term (of the entry at `index`), keys,
files, data_size, data_sha256 (hex), created (Unix time), schema (the store schema version).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import IO, Any

from rkv.errors import IntegrityError

MAGIC = b"RKVBAK01"
FORMAT = 1
CHUNK = 1 << 20
"""Bytes per read of a backup's data (what the client asks a node for, and local hashing)."""
MAX_CHUNK = 4 << 20
"""The most a node serves in one `backup_read`."""
MAX_MANIFEST = 64 << 10
_U32 = struct.Struct(">I")


class BackupCorrupt(IntegrityError):
    """The backup file is damaged or not a backup (the CLI exits with the integrity code)."""


def hash_fd(fd: int, offset: int, length: int | None) -> tuple[int, str]:
    """(bytes read, SHA-256 hex) of `length` bytes of `fd` from `offset` (None: to the end)."""
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
        _, digest = hash_fd(f.fileno(), offset, size)
    if digest != manifest["data_sha256"]:
        raise BackupCorrupt(f"{p}: data checksum mismatch (SHA-256 {digest[:16]}...)")
    return manifest


__all__ = [
    "CHUNK",
    "FORMAT",
    "MAGIC",
    "MAX_CHUNK",
    "BackupCorrupt",
    "BackupWriter",
    "check_manifest",
    "encode_header",
    "hash_fd",
    "read_header",
    "verify",
]
