"""Config validation, MemoryStorage, RaftLog slicing across the snapshot boundary, RawNode
misuse, and describe() of every type."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rkv.raft.config import Config
from rkv.raft.errors import LogSafetyError, ProposalDropped
from rkv.raft.log import RaftLog
from rkv.raft.progress import Inflights, Progress, ProgressState
from rkv.raft.rawnode import RawNode
from rkv.raft.storage import Compacted, MemoryStorage, SnapshotOutOfDate, Unavailable
from rkv.raft.types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

from .cluster import Cluster, drain, node, terms_log

V = ("a", "b", "c")


@pytest.mark.parametrize(
    "kw",
    [
        {"id": ""},
        {"voters": ("a", "")},
        {"voters": ("a", "a")},
        {"heartbeat_tick": 0},
        {"election_tick": 1, "heartbeat_tick": 1},
        {"max_size_per_msg": 0},
        {"max_inflight_msgs": 0},
        {"max_committed_size_per_ready": 0},
        {"applied": -1},
    ],
)
def test_config_validate_rejects_nonsense(kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"id": "a", "voters": V, **kw}
    with pytest.raises(ValueError):
        Config(**args).validate()


def test_config_without_voters_is_a_joining_node() -> None:
    # no bootstrap configuration: the node waits to learn one from a leader
    Config(id="a", voters=()).validate()


def test_config_defaults_validate() -> None:
    c = Config(id="a", voters=V)
    c.validate()
    assert (c.election_tick, c.heartbeat_tick, c.max_size_per_msg) == (10, 1, 1 << 20)
    assert c.pre_vote and c.check_quorum and c.max_inflight_msgs == 256


# -- MemoryStorage -------------------------------------------------------------------------


def test_memory_storage_append_replaces_suffix_and_bounds() -> None:
    s = MemoryStorage()
    assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)
    s.append(terms_log([1, 1, 2]))
    s.append([Entry(3, 2), Entry(3, 3), Entry(3, 4)])
    assert [e.term for e in s.entries(1, 5)] == [1, 3, 3, 3]
    with pytest.raises(ValueError):
        s.append([Entry(3, 9)])
    with pytest.raises(Unavailable):
        s.entries(1, 9)
    with pytest.raises(Unavailable):
        s.term(9)
    assert s.entries(2, 2) == []


def test_memory_storage_byte_limit_returns_at_least_one() -> None:
    s = MemoryStorage()
    s.append([Entry(1, k, b"x" * 100) for k in range(1, 5)])
    assert len(s.entries(1, 5, max_bytes=10)) == 1
    assert len(s.entries(1, 5, max_bytes=250)) == 2
    assert len(s.entries(1, 5, max_bytes=None)) == 4


def test_memory_storage_snapshot_and_compact() -> None:
    s = MemoryStorage(voters=V)
    s.append(terms_log([1, 1, 2, 2, 3]))
    snap = s.create_snapshot(3, b"sm")
    assert snap.meta == SnapshotMeta(index=3, term=2, voters=V)
    s.compact(3)
    assert (s.first_index(), s.last_index(), s.term(3)) == (4, 5, 2)
    with pytest.raises(Compacted):
        s.term(2)
    with pytest.raises(Compacted):
        s.entries(3, 5)
    with pytest.raises(Compacted):
        s.compact(3)
    with pytest.raises(Unavailable):
        s.compact(9)
    with pytest.raises(SnapshotOutOfDate):
        s.create_snapshot(2, b"")
    with pytest.raises(Unavailable):
        s.create_snapshot(9, b"")
    s.append([Entry(1, 2), Entry(2, 3)])  # wholly below the snapshot: ignored
    s.append([Entry(2, 3), Entry(4, 4)])  # straddles it: only index 4 lands
    assert [e.term for e in s.entries(4, 5)] == [4] and s.last_index() == 4
    with pytest.raises(SnapshotOutOfDate):
        s.apply_snapshot(snap)
    s.apply_snapshot(Snapshot(SnapshotMeta(10, 5, ("x",)), b"new"))
    assert (s.first_index(), s.last_index(), s.term(10)) == (11, 10, 5)
    assert s.initial_state()[1].voters == ("x",)
    s.set_hard_state(HardState(5, "x", 10))
    assert s.initial_state()[0] == HardState(5, "x", 10)


# -- RaftLog -------------------------------------------------------------------------------


def test_log_slice_spans_storage_and_unstable_with_byte_limit() -> None:
    s = MemoryStorage()
    s.append([Entry(1, k, b"x" * 34) for k in range(1, 4)])  # 50 bytes each
    log = RaftLog(s)
    log.append([Entry(2, k, b"y" * 34) for k in range(4, 7)])
    assert [e.index for e in log.slice(2, 7)] == [2, 3, 4, 5, 6]
    assert [e.index for e in log.slice(2, 7, 120)] == [2, 3]
    assert [e.index for e in log.slice(3, 7, 120)] == [3, 4]
    assert [e.index for e in log.slice(4, 7, 120)] == [4, 5]
    assert [e.index for e in log.slice(4, 7, 1)] == [4]
    with pytest.raises(Unavailable):
        log.slice(1, 9)
    assert log.slice(3, 3) == []


def test_log_term_across_snapshot_boundary() -> None:
    s = MemoryStorage()
    s.append(terms_log([1, 1, 2, 2]))
    s.create_snapshot(2, b"")
    s.compact(2)
    log = RaftLog(s)
    assert (log.first_index(), log.term(2), log.term(1), log.term(5)) == (3, 1, None, None)
    with pytest.raises(Compacted):
        log.slice(2, 4)
    assert log.committed == 2 and log.applied == 2
    log.restore(Snapshot(SnapshotMeta(9, 3), b""))
    assert (log.first_index(), log.last_index(), log.term(9), log.term(4)) == (10, 9, 3, None)
    assert log.snapshot().meta.index == 9 and log.persisted_last() == 0
    assert not log.has_next_committed_entries()
    with pytest.raises(LogSafetyError):
        log.restore(Snapshot(SnapshotMeta(5, 3), b""))


def test_log_truncation_of_unstable_tail_rehands_entries() -> None:
    log = RaftLog(MemoryStorage())
    log.append(terms_log([1, 1, 1, 1]))
    assert [e.index for e in log.unstable.next_entries()] == [1, 2, 3, 4]
    log.unstable.accept_in_progress()
    log.append([Entry(2, 3)])  # replaces 3..4 while 1..4 are being persisted
    assert [e.index for e in log.unstable.next_entries()] == [3]
    log.stable_to(4, 1)  # the old 4 is gone: ignored
    assert log.unstable.offset == 1
    log.stable_to(2, 1)
    assert log.unstable.offset == 3
    with pytest.raises(LogSafetyError):
        log.append([Entry(3, 9)])  # gap
    log.commit_to(2)
    with pytest.raises(LogSafetyError):
        log.append([Entry(3, 2)])  # at/below commit
    with pytest.raises(LogSafetyError):
        log.commit_to(99)
    with pytest.raises(LogSafetyError):
        log.applied_to(3)
    assert log.append([]) == 3


def test_log_replacing_whole_unstable_tail_and_stored_suffix() -> None:
    s = MemoryStorage()
    s.append(terms_log([1, 1, 1]))
    log = RaftLog(s)
    log.append([Entry(1, 4)])
    log.append([Entry(2, 2)])  # below the unstable offset: stored 2..3 become stale
    assert log.last_index() == 2 and log.term(2) == 2 and log.term(3) is None
    assert [e.index for e in log.unstable.next_entries()] == [2]
    assert log.persisted_last() == 1


def test_find_conflict_table() -> None:
    log = RaftLog(MemoryStorage())
    log.append(terms_log([1, 2, 3]))
    assert log.find_conflict([]) == 0
    assert log.find_conflict(terms_log([1, 2, 3])) == 0
    assert log.find_conflict([Entry(2, 2), Entry(3, 3), Entry(4, 4)]) == 4
    assert log.find_conflict([Entry(4, 2), Entry(4, 3)]) == 2
    assert log.find_conflict([Entry(4, 5)]) == 5
    assert log.last_index_with_term_at_most(0, 3) == (0, 0)
    assert log.last_index_with_term_at_most(2, 3) == (2, 2)


# -- progress ------------------------------------------------------------------------------


def test_inflights_and_progress_transitions() -> None:
    f = Inflights(2)
    f.add(3)
    f.add(5)
    assert f.full()
    with pytest.raises(OverflowError):
        f.add(7)
    f.free_le(4)
    assert len(f) == 1
    f.free_first_one()
    f.free_first_one()
    assert len(f) == 0
    p = Progress(next_index=5, max_inflight=4)
    assert "PROBE" in repr(p)
    p.become_snapshot(10)
    assert p.is_paused() and not p.maybe_decr_to(4, 1)
    p.become_probe()
    assert p.state == ProgressState.PROBE and p.next == 11
    assert not p.maybe_decr_to(3, 1)  # stale: not the probe in flight


# -- RawNode misuse and observation ----------------------------------------------------------


def test_ready_twice_and_wrong_advance_raise() -> None:
    n, _st = node(pre_vote=False)
    n.campaign()
    rd = n.ready()
    assert not n.has_ready()
    with pytest.raises(RuntimeError):
        n.ready()
    with pytest.raises(RuntimeError):
        n.advance(Ready())
    n.advance(rd)


def test_steps_between_ready_and_advance_show_in_next_ready() -> None:
    c = Cluster(3)
    c.elect("n1")
    n = c["n1"]
    n.propose(b"a")
    rd1 = n.ready()
    n.propose(b"b")
    c.boxes["n1"].storage.append(rd1.entries)
    n.advance(rd1)
    rd2 = n.ready()
    assert [e.data for e in rd2.entries] == [b"b"]
    n.advance(rd2)
    n.flush()


def test_restart_with_applied_below_snapshot_raises() -> None:
    s = MemoryStorage(voters=V, hard_state=HardState(1, "", 4))
    s.append(terms_log([1, 1, 1, 1]))
    s.create_snapshot(3, b"")
    s.compact(3)
    with pytest.raises(ValueError):
        RawNode(Config(id="a", voters=V, applied=2), s, random.Random(0))
    bad = MemoryStorage(voters=V, hard_state=HardState(1, "", 9))
    with pytest.raises(ValueError):
        RawNode(Config(id="a", voters=V), bad, random.Random(0))


def test_status_and_describe_everything() -> None:
    c = Cluster(3)
    c.elect("n1")
    s = c["n1"].status()
    text = s.describe()
    assert "n1 leader t1" in text and "n2:replicate" in text
    c.isolate("n3")
    c["n1"].transfer_leader("n3")
    assert "transferring-to=n3" in c["n1"].status().describe()
    assert c["n2"].status().progress == ()
    things: list[Any] = [
        Entry(1, 2, b"xy"),
        Entry(1, 3),
        Entry(1, 4, b"c", EntryType.CONF_CHANGE),
        HardState(1, "a", 2),
        SoftState(),
        ReadState(3, b"\x01"),
        Message(
            MessageType.APPEND,
            to="a",
            frm="b",
            term=2,
            entries=(Entry(1, 1),),
            commit=1,
            reject=True,
            context=b"c",
            snapshot=Snapshot(SnapshotMeta(1, 1)),
        ),
        Message(MessageType.APPEND_RESP, to="a", frm="b", index=4),
        Ready(
            soft_state=SoftState(),
            hard_state=HardState(),
            entries=(Entry(1, 1),),
            snapshot=Snapshot(SnapshotMeta(1, 1)),
            messages=(Message(MessageType.HEARTBEAT, to="a", frm="b"),),
            persisted_messages=(Message(MessageType.HEARTBEAT, to="a", frm="b"),),
            committed_entries=(Entry(1, 1),),
            read_states=(ReadState(1, b""),),
        ),
    ]
    for t in things:
        assert isinstance(t.describe(), str) and t.describe()


def test_proposal_dropped_carries_reason_and_leader() -> None:
    e = ProposalDropped("not the leader", "n2")
    assert e.reason == "not the leader" and e.leader == "n2" and "n2" in str(e)


def test_snapshot_message_without_snapshot_is_ignored() -> None:
    n, st = node(hs=HardState(term=1))
    n.step(Message(MessageType.SNAPSHOT, to="n1", frm="n2", term=1))
    assert [m.type for m in drain(n, st)] == []
