"""The changes the LMDB store's apply records for watchers (LmdbStore.record_changes,
take_changes): one Change per key or file an entry changed, dated with the entry's index,
with the key's value before it; a txn's changes are the keys it actually changed (its branch,
its deletes by prefix); nothing for a failed cas or a delete of nothing; nothing at all when
recording is off."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rkv.codec import Cas, Delete, FileChunk, FileCommit, FileDelete, Put
from rkv.store import open_store
from rkv.store.commands import Change
from rkv.store.env import LmdbStore
from rkv.txn import Compare, OpDeletePrefix, OpGet, OpIncr, OpPut, Txn

from .test_store_conformance import one


def by_key(c: Change) -> tuple[int, bytes]:
    return c.revision, c.key


@pytest.fixture
def store(tmp_path: Path) -> LmdbStore:
    s = open_store(tmp_path / "d", cluster_id="c", node_id="n1", voters=("n1",))
    s.record_changes = True
    return s


def test_each_command_records_what_it_changed(store: LmdbStore) -> None:
    data = b"file bytes"
    sha = hashlib.sha256(data).digest()
    steps: list[tuple[object, list[Change]]] = [
        (Put(b"a", b"1"), [Change(1, "put", b"a", b"1", None)]),
        (Put(b"a", b"2"), [Change(2, "put", b"a", b"2", b"1")]),
        (Cas(b"a", b"nope", b"3"), []),  # failed: nothing changed
        (Cas(b"a", b"2", b"3"), [Change(4, "put", b"a", b"3", b"2")]),
        (Delete(b"zz"), []),  # nothing to delete
        (Delete(b"a"), [Change(6, "delete", b"a", None, b"3")]),
        (Put(b"p/1", b"x"), [Change(7, "put", b"p/1", b"x", None)]),
        (Put(b"p/2", b"y"), [Change(8, "put", b"p/2", b"y", None)]),
        (
            Txn(
                (Compare(b"p/1", "value", "==", b"x"),),
                (OpDeletePrefix(b"p/"), OpIncr(b"n", 5), OpGet(b"n")),
                (OpPut(b"else", b"ran"),),
            ),
            [
                Change(9, "delete", b"p/1", None, b"x"),
                Change(9, "delete", b"p/2", None, b"y"),
                Change(9, "put", b"n", b"5", None),
            ],
        ),
        (Txn((Compare(b"n", "value", "==", b"0"),), (), (OpPut(b"n", b"6"),)),
         [Change(10, "put", b"n", b"6", b"5")]),
        (FileChunk(b"f", b"u1", 0, data), []),  # staged, not visible: no event
        (FileCommit(b"f", b"u1", len(data), 1, sha), [Change(12, "file_commit", b"f")]),
        (FileDelete(b"f"), [Change(13, "file_delete", b"f")]),
    ]  # fmt: skip
    for cmd, want in steps:
        r = one(store, cmd)  # type: ignore[arg-type]
        assert r.ok, (cmd, r.error)
        # within one revision (a txn) the order is the store's; compared by key
        assert sorted(store.take_changes(), key=by_key) == sorted(want, key=by_key), cmd
    assert store.take_changes() == []


def test_off_by_default(tmp_path: Path) -> None:
    s = open_store(tmp_path / "d", cluster_id="c", node_id="n1", voters=("n1",))
    one(s, Put(b"a", b"1"))
    assert s.take_changes() == []
