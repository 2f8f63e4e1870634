"""The stores' scan from a key (`after`, exclusive) and their record reads (scan_records,
get_record_revision), on the LMDB store and the MemoryStore twin."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.codec import LeaseGrant, Put, PutLease
from rkv.store import Record

from .harness import Store
from .test_store_conformance import apply, one, req

KEYS = [b"a", b"a\x00", b"ab", b"abc", b"ac", b"a\xff", b"b", b"b\x00", b"\xff"]


@pytest.mark.parametrize(
    ("prefix", "after", "limit", "want"),
    [
        (b"", None, 100, KEYS),  # no after: from the start, as before
        (b"a", b"ab", 100, [b"abc", b"ac", b"a\xff"]),  # exclusive
        (b"a", b"ab", 2, [b"abc", b"ac"]),  # limit after the start key
        (b"a", b"aa", 100, [b"ab", b"abc", b"ac", b"a\xff"]),  # after: not a stored key
        (b"a", b"a", 100, [b"a\x00", b"ab", b"abc", b"ac", b"a\xff"]),  # after = the prefix
        (b"a", b"\x00", 100, [b"a", b"a\x00", b"ab", b"abc", b"ac", b"a\xff"]),  # before it
        (b"a", b"a\xff", 100, []),  # the prefix's last key
        (b"a", b"b", 100, []),  # after the whole prefix
        (b"ab", b"a", 100, [b"ab", b"abc"]),  # before the prefix, a prefix of it
        (b"", b"b", 100, [b"b\x00", b"\xff"]),
        (b"", b"\xff", 100, []),
        (b"", b"\xff\xff", 100, []),
        # longer than any key can be (and than LMDB takes): the keys after it all the same
        (b"", b"a" + b"\x00" * 600, 100, [b"ab", b"abc", b"ac", b"a\xff", b"b", b"b\x00", b"\xff"]),
        (b"a", b"a\xff" * 300, 100, []),
    ],
)
def test_scan_after(
    store: Store, prefix: bytes, after: bytes, limit: int, want: list[bytes]
) -> None:
    apply(store, *(req(Put(k, b"v" + k)) for k in KEYS))
    assert store.scan(prefix, limit, after) == [(k, b"v" + k) for k in want]
    items, rev = store.scan_revision(prefix, limit, after)
    assert [k for k, _ in items] == want
    assert rev == len(KEYS)
    records, rev = store.scan_records(prefix, limit, after)
    assert [k for k, _ in records] == want
    assert rev == len(KEYS)


def test_records_carry_revisions_version_and_lease(store: Store) -> None:
    apply(store, req(Put(b"k/a", b"1")), req(Put(b"k/b", b"1")))  # indexes 1, 2
    one(store, Put(b"k/a", b"2"))  # 3
    one(store, LeaseGrant(9, 5000))  # 4
    one(store, PutLease(b"k/c", b"3", 9))  # 5
    records, rev = store.scan_records(b"k/", 10)
    assert rev == 5
    assert records == [
        (b"k/a", Record(b"2", 1, 3, 2, 0)),
        (b"k/b", Record(b"1", 2, 2, 1, 0)),
        (b"k/c", Record(b"3", 5, 5, 1, 9)),
    ]
    assert store.scan_records(b"k/", 10, b"k/a")[0] == records[1:]
    assert store.get_record_revision(b"k/c") == (Record(b"3", 5, 5, 1, 9), 5)
    assert store.get_record_revision(b"k/zz") == (None, 5)
    assert store.get_record_revision(b"") == (None, 5)  # no such key can exist


_namespaces = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.sets(st.binary(min_size=0, max_size=4), max_size=30),
    sub=st.binary(max_size=2),
    page=st.integers(1, 7),
)
def test_paging_with_after_returns_every_key_once(
    store: Store, keys: set[bytes], sub: bytes, page: int
) -> None:
    """Pages of `page` keys, each after the last key of the one before, return every key
    under the prefix exactly once, in order, when nothing changes meanwhile."""
    ns = b"%d/" % next(_namespaces)  # each example its own keys in the one store
    apply(store, *(req(Put(ns + k, k)) for k in keys))
    prefix = ns + sub
    got: list[bytes] = []
    after: bytes | None = None
    for _ in range(len(keys) + 2):
        items = store.scan(prefix, page, after)
        got += [k for k, _ in items]
        if len(items) < page:
            break
        after = items[-1][0]
    assert got == sorted(ns + k for k in keys if (ns + k).startswith(prefix))
