"""Opening a data dir of store schema 1 (records without checksums) upgrades it to the current
schema in the opening transaction: every record of both state-machine generations sealed
(schema 2), the live state's hash stored and its upload sums written (schema 3), nothing else
changed, all or nothing. The schema-1 data dir is a fixture written by the rkv of that schema
(tests/store/data/make_v1_datadir.py, with what its reads returned then)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import lmdb
import pytest

from rkv.codec import FileCommit, Put, Request, encode_request
from rkv.raft.types import Entry, HardState
from rkv.store import LmdbStore, StoreIdentityError, adopt_backup_copy, migrate, open_store
from rkv.store import kv as kvdb
from rkv.store.seal import unseal

DATA = Path(__file__).resolve().parent / "data"
EXPECTED: dict[str, Any] = json.loads((DATA / "v1-datadir.json").read_text())
CLUSTER, NODE = "fixture", "n1"
DBS = ("kv", "files", "sessions", "kv.1", "files.1", "sessions.1")


def unpack_v1(dest: Path) -> Path:
    dest.mkdir(parents=True)
    with tarfile.open(DATA / "v1-datadir.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


def records(path: Path) -> dict[str, dict[bytes, bytes]]:
    """Every record of the six state-machine databases, and the schema and meta records."""
    env = lmdb.open(str(path), max_dbs=12, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            out = {
                name: dict(txn.cursor(db=env.open_db(name.encode(), txn=txn, create=False)))
                for name in (*DBS, "meta", "log")
            }
    finally:
        env.close()
    return out


def open_fixture(path: Path) -> LmdbStore:
    return open_store(path, cluster_id=CLUSTER, node_id=NODE, voters=())


def check_reads(s: LmdbStore) -> None:
    """What the public reads return: exactly what they returned under schema 1."""
    e = EXPECTED
    assert [[k.hex(), v.hex()] for k, v in s.scan(b"", 1000)] == e["kv"]
    for key_hex, (create, mod, version) in e["records_kv"].items():
        r = s.get_record(bytes.fromhex(key_hex))
        assert r is not None and (r.create_index, r.mod_index, r.version) == (create, mod, version)
    for name, f in e["files"].items():
        m = s.file_manifest(name.encode())
        assert m is not None
        got = {
            "size": m.size,
            "chunks": m.chunks,
            "sha256": m.sha256.hex(),
            "mod_index": m.mod_index,
            "version": m.version,
            "upload_id": m.upload_id.hex(),
        }
        assert got == f
        blob = b"".join(s.read_chunk(name.encode(), n) for n in range(m.chunks))
        assert hashlib.sha256(blob).hexdigest() == f["sha256"] and len(blob) == f["size"]
    for client_hex, fields in e["sessions"].items():
        sess = s.session(bytes.fromhex(client_hex))
        assert sess is not None
        r = sess.result
        assert [sess.seq, sess.index, r.ok, r.value, r.error] == fields
    assert [[u.hex(), i] for u, i in s.uploads_in_progress()] == e["uploads_in_progress"]
    conf = s.applied_conf()
    assert [list(conf.voters), list(conf.learners)] == e["conf"]
    assert (s.applied_index(), s.first_index(), s.last_index()) == (
        e["applied"],
        e["first_index"],
        e["last_index"],
    )
    assert (s.staged_snapshot() is not None) == e["staged_snapshot"]


def test_the_fixture_is_schema_1(tmp_path: Path) -> None:
    before = records(unpack_v1(tmp_path / "d"))
    assert before["meta"][b"schema"] == struct.pack(">I", 1)
    for name in DBS:
        got = {k.hex(): hashlib.sha256(v).hexdigest() for k, v in before[name].items()}
        assert got == EXPECTED["records"][name], name


def test_a_schema_1_data_dir_is_upgraded_and_reads_back(tmp_path: Path) -> None:
    path = unpack_v1(tmp_path / "d")
    before = records(path)
    s = open_fixture(path)
    try:
        assert s.upgraded_records == sum(len(before[n]) for n in DBS)
        check_reads(s)
    finally:
        s.close()
    after = records(path)
    state_hash = after["meta"].pop(b"state_hash")
    assert after["meta"] == {**before["meta"], b"schema": struct.pack(">I", 3)}
    assert state_hash[:8] == struct.pack(">Q", EXPECTED["applied"])
    assert after["log"] == before["log"]
    for name in DBS:  # the same records, each sealed under its key (both generations)
        new = after[name].keys() - before[name].keys()
        # and the live state's upload sums (kv.py), each sealed
        assert all(k[:1] == b"h" and name.startswith("files") for k in new), (name, new)
        db = name.split(".")[0]
        for k, raw in after[name].items():
            assert unseal(db, k, raw) == before[name][k] if k not in new else len(raw) == 20
    s = open_fixture(path)  # opened again: nothing left to upgrade
    try:
        assert s.upgraded_records is None
        check_reads(s)
        # and it goes on: a write over an upgraded key, the upload in progress committed
        index = s.last_index()
        pending = bytes.fromhex(EXPECTED["uploads_in_progress"][0][0])
        data = b"S" * 5000
        sha = hashlib.sha256(data).digest()
        cmds = [
            Put(b"key01", b"after the upgrade"),
            FileCommit(b"pending", pending, len(data), 1, sha),
        ]
        es = [
            Entry(3, index + 1 + i, encode_request(Request(b"", 0, c))) for i, c in enumerate(cmds)
        ]
        s.save(HardState(3, "", es[-1].index), es)
        assert all(r.ok for r in s.apply(es))
        r = s.get_record(b"key01")
        assert r is not None and r.value == b"after the upgrade"
        assert r.version == EXPECTED["records_kv"][b"key01".hex()][2] + 1
        assert s.read_chunk(b"pending", 0) == data
    finally:
        s.close()


def test_the_staged_generation_is_upgraded_too(tmp_path: Path) -> None:
    """The snapshot being received (first generation) is sealed like the live state: every
    record verifies once the upgrade committed."""
    path = unpack_v1(tmp_path / "d")
    open_fixture(path).close()
    env = lmdb.open(str(path), max_dbs=12, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            meta, log = (env.open_db(n, txn=txn, create=False) for n in (b"meta", b"log"))
            assert txn.get(kvdb.STAGING_KEY, db=meta) is not None
            for suffix in (b"", b".1"):
                dbs = kvdb.Dbs(
                    log=log,
                    meta=meta,
                    kv=env.open_db(b"kv" + suffix, txn=txn, create=False),
                    files=env.open_db(b"files" + suffix, txn=txn, create=False),
                    sessions=env.open_db(b"sessions" + suffix, txn=txn, create=False),
                )
                n = kvdb.verify_state(txn, dbs) - kvdb.count_prefix(txn, dbs.files, b"h")
                bases = ("kv", "files", "sessions")
                assert n == sum(len(EXPECTED["records"][b + suffix.decode()]) for b in bases)
    finally:
        env.close()


class Interrupted(Exception):
    pass


def test_an_interrupted_upgrade_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure in the middle (here after 20 records) leaves the data dir at schema 1 with
    every record as it was; the next open upgrades it whole."""
    path = unpack_v1(tmp_path / "d")
    before = records(path)
    real = migrate.seal
    calls = 0

    def failing(key: bytes, payload: bytes) -> bytes:
        nonlocal calls
        calls += 1
        if calls > 20:
            raise Interrupted
        return real(key, payload)

    monkeypatch.setattr(migrate, "seal", failing)
    with pytest.raises(Interrupted):
        open_fixture(path)
    assert calls > 20
    assert records(path) == before
    monkeypatch.setattr(migrate, "seal", real)
    s = open_fixture(path)
    try:
        check_reads(s)
    finally:
        s.close()


KILLER = """
import os, signal, sys
from rkv.store import migrate, open_store
real, n = migrate.seal, [0]
def seal(key, payload):
    n[0] += 1
    if n[0] == 30:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(key, payload)
migrate.seal = seal
open_store(sys.argv[1], cluster_id="fixture", node_id="n1", voters=())
"""


def test_a_crash_during_the_upgrade_changes_nothing(tmp_path: Path) -> None:
    """SIGKILL in the middle of the upgrade (a real process): schema 1, records untouched."""
    path = unpack_v1(tmp_path / "d")
    before = records(path)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.run([sys.executable, "-c", KILLER, str(path)], env=env, timeout=60)
    assert p.returncode == -9
    assert records(path) == before
    s = open_fixture(path)
    try:
        check_reads(s)
    finally:
        s.close()


def test_a_schema_1_backup_copy_restores(tmp_path: Path) -> None:
    """A backup made by the rkv of schema 1 (its data.mdb) is adopted, then upgraded when
    the restored store opens."""
    path = unpack_v1(tmp_path / "d")
    index = EXPECTED["applied"]
    adopt_backup_copy(path, index=index, term=2, cluster_id="restored", node_id="r1")
    s = open_store(path, cluster_id="restored", node_id="r1", voters=["r1"])
    try:
        assert s.upgraded_records is not None and s.upgraded_records > 0
        assert [[k.hex(), v.hex()] for k, v in s.scan(b"", 1000)] == EXPECTED["kv"]
        assert s.read_chunk(b"big", 1) == b"C" * 5000
    finally:
        s.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = unpack_v1(tmp_path / "d")
    env = lmdb.open(str(path), max_dbs=12)
    with env.begin(write=True) as txn:
        txn.put(b"schema", struct.pack(">I", 4), db=env.open_db(b"meta", txn=txn))
    env.close()
    before = records(path)
    with pytest.raises(StoreIdentityError, match="schema version 4"):
        open_fixture(path)
    assert records(path) == before
