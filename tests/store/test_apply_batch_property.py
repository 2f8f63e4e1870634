"""Property test of the apply path: a random program of kv and lease commands applied to the LMDB store
in random batches (the store holds a batch's kv writes back and writes them in key order)
gives the same results, records, scans and state hash (with its checkpoints) as the
in-memory twin applying one entry at a time."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.codec import (
    Cas,
    Command,
    Delete,
    LeaseGrant,
    LeaseRevoke,
    Put,
    PutLease,
    Request,
    encode_request,
)
from rkv.raft.types import Entry

from .harness import Harness, Store

KEYS = [b"a", b"ab", b"b", b"k1", b"k10", b"k2", b"z" * 40]
values = st.binary(max_size=3)
keys = st.sampled_from(KEYS)
commands = st.one_of(
    st.builds(Put, keys, values),
    st.builds(Delete, keys),
    st.builds(Cas, keys, st.none() | values, values),
    st.builds(LeaseGrant, st.integers(1, 3), st.integers(1, 10_000)),
    st.builds(PutLease, keys, values, st.integers(1, 3)),
    st.builds(LeaseRevoke, st.integers(1, 3)),  # deletes its keys, held back in the batch
)
# each command with the batch it ends (True: the LMDB store commits the batch after it)
programs = st.lists(st.tuples(commands, st.booleans()), min_size=1, max_size=80)


def state(s: Store) -> list[tuple[bytes, object]]:
    recs = [(k, s.get_record(k)) for k in KEYS]
    return [
        (k, None if r is None else (r.value, r.create_index, r.mod_index, r.version, r.lease))
        for k, r in recs
    ] + [(b"lease %d" % x.id, x) for x in s.leases()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.booleans())
def test_batched_apply_matches_one_at_a_time(
    program: list[tuple[Command, bool]], with_sessions: bool
) -> None:
    d = tempfile.mkdtemp(prefix="rkv-applyprop-")
    lmdb_h = Harness("lmdb", Path(d) / "node")
    mem_h = Harness("memory", Path("/nonexistent"))
    try:
        batched, single = lmdb_h.open(), mem_h.open()
        got, want = [], []
        batch: list[Entry] = []
        for i, (cmd, ends) in enumerate(program, start=1):
            seq = i if with_sessions else 0
            data = encode_request(Request(client_id=b"c" * 8 if seq else b"", seq=seq, command=cmd))
            e = Entry(term=1, index=i, data=data)
            want += single.apply([e])
            batch.append(e)
            if ends or i == len(program):
                got += batched.apply(batch)
                batch = []
                assert state(batched) == state(single), i
                assert batched.state_hash() == single.state_hash(), i
        assert got == want
        assert batched.scan(b"", 100) == single.scan(b"", 100)
        assert batched.applied_index() == single.applied_index() == len(program)
        assert batched.state_hashes() == single.state_hashes()
        batched = lmdb_h.reopen(batched)
        assert state(batched) == state(single)
        assert batched.state_hash() == single.state_hash()
    finally:
        lmdb_h.close_all()
        mem_h.close_all()
        shutil.rmtree(d)
