"""Every stored state-machine record carries a checksum (rkv/store/seal.py): a flipped bit in
any kind of record, or a record moved under another key, is found by every read path of the
LMDB store (get, scan, file reads, snapshot streams, backups) and raised as IntegrityError
naming the database and the record; nothing damaged is ever returned, and the rest of the
store keeps serving. (The node's side: tests/node/test_integrity_node.py.)"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rkv.codec import (
    Command,
    FileChunk,
    FileCommit,
    Put,
    Request,
    decode_snapshot_chunk,
    encode_request,
)
from rkv.raft.types import Entry, HardState
from rkv.store import IntegrityError, LmdbStore, StoreError
from rkv.store import kv as kvdb
from rkv.store.seal import seal, unseal

from .harness import Harness, flip_bit, get_raw, put_raw

CLIENT = b"client-integrity"
VICTIM = b"V" * 100
PHOTO = [b"A" * 5000, b"B" * 5000]  # pinned in their log records
NOTE = [b"n" * 100, b"o" * 50]  # copied into the staging table


def entries_of(store: LmdbStore, cmds: list[tuple[bytes, int, Command]]) -> list[Entry]:
    start = store.last_index() + 1
    return [
        Entry(1, start + i, encode_request(Request(c, seq, cmd)))
        for i, (c, seq, cmd) in enumerate(cmds)
    ]


def run(store: LmdbStore, cmds: list[tuple[bytes, int, Command]]) -> None:
    es = entries_of(store, cmds)
    store.save(HardState(1, "", es[-1].index), es)
    assert all(r.ok for r in store.apply(es))


def file_cmds(key: bytes, upload: bytes, parts: list[bytes]) -> list[tuple[bytes, int, Command]]:
    blob = b"".join(parts)
    out: list[tuple[bytes, int, Command]] = [
        (b"", 0, FileChunk(key, upload, n, p)) for n, p in enumerate(parts)
    ]
    sha = hashlib.sha256(blob).digest()
    out.append((b"", 0, FileCommit(key, upload, len(blob), len(parts), sha)))
    return out


def fill(store: LmdbStore) -> dict[str, int]:
    """Keys, a pinned file, a copied file, a session; returns the log index of each chunk."""
    run(store, [(CLIENT, 1, Put(b"victim", VICTIM)), (b"", 0, Put(b"other", b"fine"))])
    first = store.last_index() + 1
    run(store, file_cmds(b"photo", b"up-photo", PHOTO))
    run(store, file_cmds(b"note", b"up-note", NOTE))
    run(store, [(CLIENT, 2, Put(b"last", b"by the client"))])
    return {"photo/1": first + 1}


@dataclass(frozen=True)
class Kind:
    """A kind of record, where to flip a bit in it, and the read that must notice."""

    name: str
    db: bytes
    key: Callable[[dict[str, int]], bytes]
    at: bytes | int
    read: Callable[[LmdbStore], Any]
    err_db: str
    err_names: str
    """What the error message must name (the record, in words)."""


KINDS = [
    Kind(
        "value", b"kv", lambda _: b"victim", b"VVVV", lambda s: s.get(b"victim"), "kv", "b'victim'"
    ),
    Kind(
        "key metadata (version)",
        b"kv",
        lambda _: b"victim",
        -1,
        lambda s: s.get_record(b"victim"),
        "kv",
        "key b'victim'",
    ),
    Kind(
        "file chunk kept in its log record",
        b"log",
        lambda ix: struct.pack(">Q", ix["photo/1"]),
        b"BBBB",
        lambda s: s.read_chunk(b"photo", 1),
        "log",
        "chunk 1 of file b'photo'",
    ),
    Kind(
        "file chunk copied",
        b"files",
        lambda _: kvdb.staged_key(b"up-note", 1),
        b"oooo",
        lambda s: s.read_chunk(b"note", 1),
        "files",
        "chunk 1 of file b'note'",
    ),
    Kind(
        "manifest",
        b"files",
        lambda _: kvdb.manifest_key(b"photo"),
        -1,
        lambda s: s.file_manifest(b"photo"),
        "files",
        "manifest of file b'photo'",
    ),
    Kind(
        "session",
        b"sessions",
        lambda _: kvdb.session_key(CLIENT),
        -1,
        lambda s: s.session(CLIENT),
        "sessions",
        f"session of client {CLIENT!r}",
    ),
]


@pytest.fixture
def h(tmp_path: Path) -> Any:
    harness = Harness("lmdb", tmp_path / "node")
    yield harness
    harness.close_all()


def damaged(h: Harness, kind: Kind) -> tuple[LmdbStore, bytes]:
    """A filled store, closed, one bit of `kind` flipped, opened again; and the record key."""
    s = h.open()
    assert isinstance(s, LmdbStore)
    ix = fill(s)
    kind.read(s)  # readable before the damage
    s.close()
    key = kind.key(ix)
    flip_bit(h.path, kind.db, key, kind.at)
    s2 = h.reopen(s)
    assert isinstance(s2, LmdbStore)
    return s2, key


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_a_flipped_bit_is_found_by_the_read(h: Harness, kind: Kind) -> None:
    s, key = damaged(h, kind)
    with pytest.raises(IntegrityError) as ei:
        kind.read(s)
    assert (ei.value.db, ei.value.key) == (kind.err_db, key)
    assert kind.err_names in str(ei.value) and "checksum" in str(ei.value)
    # the rest of the store serves
    assert s.get(b"other") == b"fine" and s.get(b"last") == b"by the client"
    assert s.read_chunk(b"note", 0) == NOTE[0]
    if kind.name != "manifest":  # the photo's other chunk, through its intact manifest
        assert s.read_chunk(b"photo", 0) == PHOTO[0]


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_a_snapshot_stream_stops_at_the_damaged_record(h: Harness, kind: Kind) -> None:
    """The stream raises before the chunk that would hold the record: the receiver never
    gets its end (and installs nothing); no chunk sent before carries the record."""
    s, key = damaged(h, kind)
    sent: list[bytes] = []
    with s.open_snapshot(256) as source, pytest.raises(IntegrityError) as ei:
        for chunk in source.chunks():
            sent.append(chunk)
    assert ei.value.db == kind.err_db
    shipped = {k for c in sent for _, k, _ in decode_snapshot_chunk(c)}
    # a chunk in its log record travels as its staged record
    record = kvdb.staged_key(b"up-photo", 1) if kind.db == b"log" else key
    assert record not in shipped


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_no_backup_of_damaged_data(h: Harness, kind: Kind) -> None:
    s, _ = damaged(h, kind)
    with pytest.raises(IntegrityError):
        s.write_backup(io.BytesIO())


def test_a_scan_over_a_damaged_value_fails_and_one_past_it_serves(h: Harness) -> None:
    s, _ = damaged(h, KINDS[0])
    with pytest.raises(IntegrityError, match="b'victim'"):
        s.scan(b"", 100)
    assert s.scan(b"o", 100) == [(b"other", b"fine")]


def test_a_record_moved_under_another_key_is_found(h: Harness) -> None:
    """The checksum covers the key: the intact record of one key is no record of another."""
    s = h.open()
    assert isinstance(s, LmdbStore)
    fill(s)
    s.close()
    victim = get_raw(h.path, b"kv", b"victim")
    assert victim is not None
    put_raw(h.path, b"kv", b"other", victim)
    s2 = h.reopen(s)
    assert s2.get(b"victim") == VICTIM
    with pytest.raises(IntegrityError, match="b'other'"):
        s2.get(b"other")


@pytest.mark.parametrize(
    ("kind", "cmd"),
    [
        (KINDS[1], (b"", 0, Put(b"victim", b"new"))),  # needs the key's version
        (KINDS[5], (CLIENT, 3, Put(b"fresh", b"x"))),  # needs the client's last seq
    ],
    ids=["key metadata", "session"],
)
def test_a_write_over_a_damaged_record_is_refused_and_changes_nothing(
    h: Harness, kind: Kind, cmd: tuple[bytes, int, Command]
) -> None:
    """Applying over a damaged record cannot be done the way the other replicas did it: the
    apply fails whole (the node stops on it: ExitCode.INTEGRITY)."""
    s, _ = damaged(h, kind)
    applied = s.applied_index()
    es = entries_of(s, [cmd])
    s.save(None, es)
    with pytest.raises(IntegrityError):
        s.apply(es)
    assert s.applied_index() == applied
    s2 = h.reopen(s)
    assert s2.applied_index() == applied and s2.get(b"fresh") is None


def test_every_single_bit_flip_of_a_sealed_record_is_found() -> None:
    key, payload = b"k", b"\x94\xc4\x05hello\x01\x02\x03"
    raw = seal(key, payload)
    assert unseal("kv", key, raw) == payload
    assert struct.unpack(">I", raw[:4])[0] == zlib.crc32(payload, zlib.crc32(key))
    for i in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(IntegrityError):
            unseal("kv", key, bytes(bad))
    for short in (b"", raw[:3]):
        with pytest.raises(IntegrityError):
            unseal("kv", key, short)


def test_integrity_error_is_a_store_error_that_pickles() -> None:
    import pickle

    e = IntegrityError("files", b"mphoto", "manifest of file b'photo'")
    assert isinstance(e, StoreError)
    back = pickle.loads(pickle.dumps(e))
    assert (back.db, back.key, back.what, str(back)) == (e.db, e.key, e.what, str(e))
