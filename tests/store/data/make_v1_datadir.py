"""Makes v1-datadir.tar.gz and v1-datadir.json: a small data dir of store schema 1 (records
without checksums), written by rkv at 9f7e624, the last commit before schema 2.

Kept next to its output so the fixture can be understood and, with that commit checked out,
remade: `python tests/store/data/make_v1_datadir.py`. Running it with a later rkv fails
(it checks the schema it wrote), because later code cannot write schema 1 any more.

What the data dir holds (node n1 of cluster "fixture", voters n1, n2, n3):
- the live state machine in the second generation (kv.1, files.1, sessions.1), installed
  from a snapshot streamed out of another store (node n2): keys, a file of 3 chunks (staged
  by copy in a snapshot), an upload in progress, client sessions, a membership change
  (learner n4 added);
- then, applied on top: an overwrite, a delete, a new file of 2 chunks of 5,000 bytes (each
  pinned in its log record; the log compacted past them), a small 2-chunk file (copied),
  another session, and a file in the oldest layout (a 6-field manifest and chunks under the
  file's key, as rkv wrote before manifests named their upload);
- a second snapshot from n2 being received in the first generation (kv, files, sessions):
  every chunk staged, the end of the stream not yet received.
The json file lists, as read by the code that wrote them, every record of the three
state-machine databases of both generations (sha256 of each value) and what the public
reads return, for tests/store/test_schema_migration.py to compare against.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import lmdb

from rkv.codec import (
    Delete,
    FileChunk,
    FileCommit,
    Put,
    Request,
    encode_request,
    pack,
)
from rkv.raft import confchange
from rkv.raft.confchange import ConfChange, ConfChangeEntry, ConfChangeType
from rkv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot
from rkv.store import LmdbStore, open_store
from rkv.store import kv as kvdb

HERE = Path(__file__).resolve().parent
CLUSTER = "fixture"
VOTERS = ("n1", "n2", "n3")
CLIENT_A = b"client-aaaaaaaa1"
CLIENT_B = b"client-bbbbbbbb2"
SEQ: dict[bytes, int] = {}
"""The last seq of each client (its session moves from store to store with the snapshot)."""
DBS = (b"kv", b"files", b"sessions", b"kv.1", b"files.1", b"sessions.1")


class Log:
    """Entries appended to one store's log and applied, one batch per call."""

    def __init__(self, store: LmdbStore, term: int) -> None:
        self.s = store
        self.term = term

    def run(self, *cmds: Any) -> None:
        entries: list[Entry] = []
        index = self.s.last_index()
        for cmd in cmds:
            index += 1
            if isinstance(cmd, Entry):
                entries.append(Entry(self.term, index, cmd.data, cmd.type))
                continue
            client, command = cmd if isinstance(cmd, tuple) else (b"", cmd)
            seq = 0
            if client:
                seq = SEQ[client] = SEQ.get(client, 0) + 1
            data = encode_request(Request(client, seq, command))
            entries.append(Entry(self.term, index, data))
        self.s.save(HardState(self.term, "", index), entries)
        results = self.s.apply(entries)
        assert all(r.ok for r in results), results


def file_cmds(key: bytes, upload: bytes, parts: list[bytes], client: bytes) -> list[Any]:
    blob = b"".join(parts)
    cmds: list[Any] = [(client, FileChunk(key, upload, n, p)) for n, p in enumerate(parts)]
    sha = hashlib.sha256(blob).digest()
    cmds.append((client, FileCommit(key, upload, len(blob), len(parts), sha)))
    return cmds


def conf_change() -> Entry:
    conf = ConfState(VOTERS, ("n4",))
    data = confchange.encode(ConfChangeEntry(ConfChange(ConfChangeType.ADD_LEARNER, "n4"), conf))
    return Entry(0, 0, data, EntryType.CONF_CHANGE)


def source_store(d: Path) -> LmdbStore:
    """Node n2: the leader whose snapshot n1 installs."""
    src = open_store(d / "n2", cluster_id=CLUSTER, node_id="n2", voters=VOTERS)
    log = Log(src, 1)
    log.run(*[(CLIENT_A, Put(b"key%02d" % i, b"value %d" % i)) for i in range(8)])
    log.run(*file_cmds(b"photo", b"up-photo", [b"P" * 700, b"Q" * 6000, b"R" * 10], CLIENT_A))
    log.run(conf_change(), Put(b"after-conf", b"learner n4 added"))
    log.run((CLIENT_B, FileChunk(b"pending", b"up-pending", 0, b"S" * 5000)))
    return src


def write_v1(d: Path) -> Path:
    src = source_store(d)
    node = d / "n1"
    s = open_store(node, cluster_id=CLUSTER, node_id="n1", voters=VOTERS)
    # 1. install n2's state (the live generation becomes the second one)
    with src.open_snapshot(4096) as source:
        meta = source.meta
        s.begin_snapshot_install(meta)
        for seq, chunk in enumerate(source.chunks()):
            s.stage_snapshot_chunk(seq, chunk)
        s.finish_snapshot_staging(source.chunk_count, source.records)
    s.install_snapshot(HardState(1, "", meta.index), [], Snapshot(meta=meta))
    # 2. more writes on top, and a compaction past the pinned chunks
    log = Log(s, 2)
    log.run(Put(b"key01", b"overwritten"), Delete(b"key02"), (CLIENT_A, Put(b"key08", b"x")))
    log.run(*file_cmds(b"big", b"up-big", [b"B" * 5000, b"C" * 5000], CLIENT_B))
    log.run(*file_cmds(b"small", b"up-small", [b"s" * 100, b"t" * 50], b""))
    log.run(Put(b"tail", b"the last key"))
    s.compact(s.applied_index())
    log.run(Put(b"after-compaction", b"in the log"))

    # 3. a file in the oldest layout: chunks under the file's key, a 6-field manifest
    def legacy(txn: lmdb.Transaction[bytes]) -> None:
        live = s._live(txn)
        for n, part in enumerate((b"old-0 ", b"old-1")):
            txn.put(kvdb.chunk_key(b"legacy", n), part, db=live.files)
        blob = b"old-0 old-1"
        m = [len(blob), 2, hashlib.sha256(blob).digest(), 3, 3, 1]
        txn.put(kvdb.manifest_key(b"legacy"), pack(m), db=live.files)

    s._write(legacy)
    # 4. a later snapshot of n2 arriving (first generation): every chunk staged, the
    # sender's end of stream not yet received
    Log(src, 1).run(Put(b"newer", b"only in the second snapshot"))
    with src.open_snapshot(512) as source:
        s.begin_snapshot_install(source.meta)
        for seq, chunk in enumerate(source.chunks()):
            s.stage_snapshot_chunk(seq, chunk)
    src.close()
    s.close()
    return node


def dump(node: Path) -> dict[str, Any]:
    """Every state-machine record (sha256 of its value) and what the public reads return."""
    out: dict[str, Any] = {"records": {}}
    env = lmdb.open(str(node), max_dbs=12, readonly=True, lock=False)
    with env.begin() as txn:
        meta = env.open_db(b"meta", txn=txn, create=False)
        schema = txn.get(b"schema", db=meta)
        assert schema == struct.pack(">I", 1), f"this rkv writes schema {schema!r}, not 1"
        assert txn.get(kvdb.GEN_KEY, db=meta) == b"\x01"
        for name in DBS:
            db = env.open_db(name, txn=txn, create=False)
            recs = {k.hex(): hashlib.sha256(v).hexdigest() for k, v in txn.cursor(db=db)}
            assert recs, f"{name!r} is empty"
            out["records"][name.decode()] = recs
    env.close()
    s = open_store(node, cluster_id=CLUSTER, node_id="n1", voters=())
    try:
        out["kv"] = [[k.hex(), v.hex()] for k, v in s.scan(b"", 1000)]
        out["records_kv"] = {
            k.hex(): [r.create_index, r.mod_index, r.version]
            for k, _ in s.scan(b"", 1000)
            if (r := s.get_record(k)) is not None
        }
        files: dict[str, Any] = {}
        for key in (b"photo", b"big", b"small", b"legacy"):
            m = s.file_manifest(key)
            assert m is not None
            blob = b"".join(s.read_chunk(key, n) for n in range(m.chunks))
            assert hashlib.sha256(blob).digest() == m.sha256
            files[key.decode()] = {
                "size": m.size,
                "chunks": m.chunks,
                "sha256": m.sha256.hex(),
                "mod_index": m.mod_index,
                "version": m.version,
                "upload_id": m.upload_id.hex(),
            }
        out["files"] = files
        sessions = {}
        for c in (CLIENT_A, CLIENT_B):
            sess = s.session(c)
            assert sess is not None
            r = sess.result
            sessions[c.hex()] = [sess.seq, sess.index, r.ok, r.value, r.error]
        out["sessions"] = sessions
        out["uploads_in_progress"] = [[u.hex(), i] for u, i in s.uploads_in_progress()]
        conf = s.applied_conf()
        out["conf"] = [list(conf.voters), list(conf.learners)]
        out["applied"] = s.applied_index()
        out["first_index"] = s.first_index()
        out["last_index"] = s.last_index()
        out["staged_snapshot"] = s.staged_snapshot() is not None
    finally:
        s.close()
    return out


def main() -> None:
    d = Path(tempfile.mkdtemp(prefix="rkv-v1-"))
    try:
        node = write_v1(d)
        facts = dump(node)
        (HERE / "v1-datadir.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tar.gettarinfo(str(node / "data.mdb"), arcname="data.mdb")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with (node / "data.mdb").open("rb") as f:
                tar.addfile(info, f)
        (HERE / "v1-datadir.tar.gz").write_bytes(buf.getvalue())
        print(f"wrote v1-datadir.tar.gz ({len(buf.getvalue())} bytes) and v1-datadir.json")
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    sys.exit(main())
