"""rkv.replica and snapshots, synchronously over MemoryStores: the compaction policy, and a
follower that falls behind a compacted log and is brought back with a staged snapshot the
way the node runtime does it (stream, stage, step SNAPSHOT, install in the persist step)."""

from __future__ import annotations

import random

import pytest

from rkv.raft.config import Config
from rkv.raft.types import Entry, HardState, Message, MessageType, Snapshot
from rkv.replica import CompactionPolicy, Replica
from rkv.store.memory import MemoryStore

from .test_replica import IDS, Harness, put


def replica_with_log(n: int, applied: int, size: int = 10, snap: int = 0) -> Replica[str]:
    store = MemoryStore("c", "n1", IDS)
    es = [Entry(1, i, put(b"k", b"v" * size, seq=i)) for i in range(1, n + 1)]
    store.save(HardState(1, "", applied), es)
    store.apply(es[:applied])
    if snap:
        store.compact(snap)
    return Replica(Config(id="n1", voters=IDS, applied=applied), store, rng=random.Random(1))


@pytest.mark.parametrize(
    ("n", "applied", "snap", "policy", "expect"),
    [
        (100, 100, 0, CompactionPolicy(max_entries=200), None),  # below the threshold
        (100, 100, 0, CompactionPolicy(max_entries=50, keep_entries=10), 90),
        (100, 40, 0, CompactionPolicy(max_entries=50, keep_entries=10), None),  # not applied
        (100, 100, 80, CompactionPolicy(max_entries=50, keep_entries=10), None),  # recent snap
        (100, 100, 0, CompactionPolicy(max_entries=50, keep_entries=0), 100),
        # bytes: over max_bytes although few entries; the margin is capped by keep_bytes
        (100, 100, 0, CompactionPolicy(max_bytes=1000, keep_entries=50, keep_bytes=600), -600),
        (100, 95, 0, CompactionPolicy(max_entries=10, keep_entries=99), None),  # margin too big
    ],
    ids=["few", "entries", "unapplied", "recent-snapshot", "no-margin", "bytes", "big-margin"],
)
def test_compaction_index(
    n: int, applied: int, snap: int, policy: CompactionPolicy, expect: int | None
) -> None:
    r = replica_with_log(n, applied, snap=snap)
    if expect is not None and expect < 0:
        # keep about -expect bytes: as many entries as fit at the log's average entry size
        avg = r.store.log_bytes() / n
        expect = applied - int(-expect / avg)
        assert applied - 50 < expect < applied - 1
    assert r.compaction_index(policy) == expect


def test_follower_behind_a_compacted_log_is_restored_from_a_staged_snapshot() -> None:
    h = Harness()
    leader = h.elect("n1")
    lagging = "n3"
    h.drop = lambda m: lagging in (m.to, m.frm)
    for i in range(30):
        leader.propose(put(b"k%d" % (i % 7), b"v%d" % i, seq=i + 1), f"w{i}")
        h.settle()
    src = h.stores["n1"]
    src.compact(leader.applied - 2)
    snapshots: list[Message] = []

    def drop(m: Message) -> bool:
        if m.type == MessageType.SNAPSHOT:
            snapshots.append(m)  # the runtime streams the state instead of sending this
            return True
        return False

    h.drop = drop
    h.tick_all(5)
    assert snapshots and snapshots[0].to == lagging, "the leader did not ask for a snapshot"
    follower = h.reps[lagging]
    dst = h.stores[lagging]
    with src.open_snapshot(64) as source:
        dst.begin_snapshot_install(source.meta)
        for seq, chunk in enumerate(source.chunks()):
            dst.stage_snapshot_chunk(seq, chunk)
        meta = dst.finish_snapshot_staging(source.chunk_count, source.records)
    # ...then steps a SNAPSHOT message for it; persisting the Ready installs the state
    follower.step(
        Message(
            MessageType.SNAPSHOT,
            to=lagging,
            frm="n1",
            term=snapshots[0].term,
            index=meta.index,
            log_term=meta.term,
            snapshot=Snapshot(meta),
        )
    )
    h.settle()
    assert follower.snapshots_installed == 1
    assert follower.applied >= meta.index
    leader.propose(put(b"after", b"snap", seq=100), "after")
    h.settle()
    h.tick_all(3)
    assert dst.scan(b"", 100) == src.scan(b"", 100)
    assert dst.applied_index() == src.applied_index() == follower.applied


def test_no_compaction_while_a_stepped_snapshot_is_not_installed() -> None:
    """Between stepping a leader's SNAPSHOT and persisting its Ready, the core's log and
    configuration describe the snapshot, not the store: compacting then would write a marker
    with the wrong configuration (sim seed 846944260, 5 nodes, compaction, membership)."""
    h = Harness()
    leader = h.elect("n1")
    lagging = "n3"
    h.drop = lambda m: lagging in (m.to, m.frm)
    for i in range(30):
        leader.propose(put(b"k%d" % (i % 7), b"v%d" % i, seq=i + 1), f"w{i}")
        h.settle()
    # the lagging follower has applied a few entries of its own: enough to compact
    follower, dst = h.reps[lagging], h.stores[lagging]
    src = h.stores["n1"]
    src.compact(leader.applied - 2)
    with src.open_snapshot(64) as source:
        dst.begin_snapshot_install(source.meta)
        for seq, chunk in enumerate(source.chunks()):
            dst.stage_snapshot_chunk(seq, chunk)
        meta = dst.finish_snapshot_staging(source.chunk_count, source.records)
    policy = CompactionPolicy(max_entries=0, keep_entries=0)
    before = follower.compaction_index(policy)
    assert before is not None, "the follower's own applied log is compactable"
    follower.step(
        Message(
            MessageType.SNAPSHOT,
            to=lagging,
            frm="n1",
            term=leader.term,
            index=meta.index,
            log_term=meta.term,
            snapshot=Snapshot(meta),
        )
    )
    assert follower.compaction_index(policy) is None, "stepped, not installed: wait"
    h.drop = lambda m: False
    h.settle()
    assert follower.snapshots_installed == 1
    after = follower.compaction_index(policy)
    assert after == (follower.applied if follower.applied > meta.index else None)
