"""ReadIndex (thesis §6.4), leadership transfer (§3.10) and snapshot send/restore."""

from __future__ import annotations

import pytest

from rkv.raft.errors import ProposalDropped
from rkv.raft.progress import ProgressState
from rkv.raft.types import NONE, Entry, HardState, Message, MessageType, ReadState, Role

from .cluster import Cluster, drain, make_leader, node, terms_log

MT = MessageType

# -- ReadIndex ----------------------------------------------------------------------------


def test_leader_read_needs_heartbeat_quorum() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"a")
    c.isolate("n1")
    c["n1"].read_index(b"r1")
    c.stabilize()
    assert c.boxes["n1"].reads == []  # leadership not confirmed
    c.heal()
    c.tick_all(1)  # heartbeats carry the round again; acks arrive
    assert c.boxes["n1"].reads == [ReadState(index=2, context=b"r1")]


def test_one_heartbeat_round_serves_all_queued_reads() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.delivered.clear()
    for k in range(5):
        c["n1"].read_index(b"r%d" % k)
    c.stabilize()
    hbs = c.sent(MT.HEARTBEAT)
    assert len(hbs) == 2 and len({m.context for m in hbs}) == 1 and hbs[0].context
    assert [r.context for r in c.boxes["n1"].reads] == [b"r%d" % k for k in range(5)]
    assert all(r.index == 1 for r in c.boxes["n1"].reads)


def test_leader_does_not_serve_reads_before_current_term_commit() -> None:
    n, st = make_leader(terms_log([1, 1]), term=1)
    assert n.status().commit == 0  # no-op of term 2 not committed yet
    n.read_index(b"early")
    msgs = drain(n, st)
    assert not [m for m in msgs if m.type == MT.HEARTBEAT and m.context]
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=2, index=3))
    assert n.status().commit == 3
    rd = n.ready()
    hb = [m for m in rd.messages if m.type == MT.HEARTBEAT]
    assert hb and hb[0].context
    n.advance(rd)
    n.step(Message(MT.HEARTBEAT_RESP, to="n1", frm="n3", term=2, context=hb[0].context))
    rd = n.ready()
    assert rd.read_states == (ReadState(index=3, context=b"early"),)
    n.advance(rd)


def test_stale_round_ack_does_not_confirm_newer_reads() -> None:
    n, st = make_leader(voters=("n1", "n2", "n3"))
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=1, index=1))
    drain(n, st)
    n.read_index(b"a")
    first = next(m for m in drain(n, st) if m.type == MT.HEARTBEAT).context
    n.read_index(b"b")
    second = next(m for m in drain(n, st) if m.type == MT.HEARTBEAT).context
    assert first != second
    n.step(Message(MT.HEARTBEAT_RESP, to="n1", frm="n2", term=1, context=first))
    rd = n.ready()
    assert [r.context for r in rd.read_states] == [b"a"]
    n.advance(rd)
    n.step(Message(MT.HEARTBEAT_RESP, to="n1", frm="n2", term=1, context=second))
    rd = n.ready()
    assert [r.context for r in rd.read_states] == [b"b"]
    n.advance(rd)


def test_single_node_read_is_immediate() -> None:
    c = Cluster(1)
    c.elect("n1")
    c["n1"].read_index(b"x")
    c.stabilize()
    assert c.boxes["n1"].reads == [ReadState(index=1, context=b"x")]


def test_follower_read_via_leader() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"a")
    c["n2"].read_index(b"f")
    c.stabilize()
    assert c.boxes["n2"].reads == [ReadState(index=2, context=b"f")]
    assert len(c.sent(MT.READ_INDEX)) == 1 and len(c.sent(MT.READ_INDEX_RESP)) == 1


def test_read_without_leader_raises() -> None:
    n, _ = node()
    with pytest.raises(ProposalDropped) as ei:
        n.read_index(b"x")
    assert ei.value.leader == NONE


def test_follower_ignores_read_index_and_rejected_resp() -> None:
    n, st = node(hs=HardState(term=1))
    n.step(Message(MT.READ_INDEX, to="n1", frm="n2", context=b"x"))
    n.step(Message(MT.READ_INDEX_RESP, to="n1", frm="n2", term=1, reject=True, context=b"x"))
    assert drain(n, st) == [] and n.raft.read_states == []


def test_deposed_leader_never_serves_read() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    c["n1"].read_index(b"stale")
    c.stabilize()
    for _ in range(40):
        c.tick_all(1)
        new = [i for i in ("n2", "n3") if c[i].status().role == Role.LEADER]
        if new:
            break
    (new_leader,) = new
    c.propose(new_leader, b"new")
    c.heal()
    c.tick_all(3)
    assert c.boxes["n1"].reads == []
    assert c["n1"].status().leader == new_leader


# -- leadership transfer -------------------------------------------------------------------


def test_transfer_to_up_to_date_follower() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.delivered.clear()
    c["n1"].transfer_leader("n2")
    c.stabilize()
    assert c.leader() == "n2" and c["n2"].status().term == 2
    votes = c.sent(MT.VOTE)
    assert votes and all(m.context == b"transfer" for m in votes)
    assert not c.sent(MT.PRE_VOTE)  # the target skipped PreVote


def test_transfer_brings_target_up_to_date_first_and_blocks_proposals() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    for k in range(3):
        c.propose("n1", b"%d" % k)
    c.heal()
    c["n1"].transfer_leader("n3")
    with pytest.raises(ProposalDropped) as ei:
        c["n1"].propose(b"blocked")
    assert ei.value.leader == "n1"
    assert c["n1"].status().lead_transferee == "n3"
    c.stabilize()
    c.tick_all(2)
    assert c.leader() == "n3"
    assert c.applied_data("n3")[:3] == [b"0", b"1", b"2"]


def test_transfer_aborts_after_election_timeout() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    c["n1"].transfer_leader("n3")
    c.tick_all(10)
    assert c["n1"].status().lead_transferee == NONE
    assert c.leader() == "n1"
    c.propose("n1", b"ok")  # accepted again


@pytest.mark.parametrize("to", ["n1", "n2"])
def test_transfer_to_self_or_same_target_is_noop(to: str) -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n2")
    c["n1"].transfer_leader("n2")
    c["n1"].transfer_leader(to)
    assert c["n1"].status().lead_transferee == "n2"


def test_transfer_errors() -> None:
    c = Cluster(3)
    c.elect("n1")
    with pytest.raises(ValueError):
        c["n1"].transfer_leader("n9")
    with pytest.raises(ProposalDropped):
        c["n2"].transfer_leader("n3")


# -- snapshots -----------------------------------------------------------------------------


def compacted_cluster() -> Cluster:
    """n3 falls behind while the leader's log is compacted past what n3 has."""
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    for k in range(10):
        c.propose("n1", b"%d" % k)
    st = c.boxes["n1"].storage
    st.create_snapshot(8, b"state@8")
    st.compact(8)
    c.heal()
    return c


def test_leader_sends_snapshot_to_follower_behind_first_index() -> None:
    c = compacted_cluster()
    c.tick_all(3)
    snaps = c.sent(MT.SNAPSHOT)
    assert len(snaps) == 1 and snaps[0].to == "n3"
    assert snaps[0].snapshot is not None and snaps[0].snapshot.data == b"state@8"
    b3 = c.boxes["n3"]
    assert [s.meta.index for s in b3.snapshots] == [8]
    assert [e.index for e in b3.applied if e.index > 8] == [9, 10, 11]
    assert b3.storage.first_index() == 9 and b3.storage.last_index() == 11
    pr = c["n1"].raft.prs["n3"]
    assert pr.state == ProgressState.REPLICATE and pr.match == 11


def test_snapshot_lost_is_retried() -> None:
    c = compacted_cluster()
    c.filter = lambda m: m.type != MT.SNAPSHOT
    c.tick_all(3)
    assert c["n1"].raft.prs["n3"].state == ProgressState.SNAPSHOT
    c.filter = None
    c.tick_all(12)
    assert c.boxes["n3"].storage.last_index() == 11


def test_snapshot_ready_contract() -> None:
    from rkv.raft.types import Snapshot, SnapshotMeta

    n, st = node(entries=terms_log([1, 1]), hs=HardState(term=1, commit=1))
    snap = Snapshot(SnapshotMeta(index=10, term=2, voters=("n1", "n2", "n3")), b"s")
    n.step(Message(MT.SNAPSHOT, to="n1", frm="n2", term=2, snapshot=snap))
    rd = n.ready()
    assert rd.snapshot == snap and rd.entries == () and rd.committed_entries == ()
    assert rd.messages == ()
    (ack,) = rd.persisted_messages
    assert ack.type == MT.APPEND_RESP and ack.index == 10 and not ack.reject
    assert rd.hard_state is not None and rd.hard_state.commit == 10
    st.apply_snapshot(snap)
    st.set_hard_state(rd.hard_state)
    n.advance(rd)
    s = n.status()
    assert (s.first_index, s.last_index, s.commit, s.applied) == (11, 10, 10, 10)
    # entries after the snapshot append normally
    n.step(
        Message(MT.APPEND, to="n1", frm="n2", term=2, index=10, log_term=2, entries=(Entry(2, 11),))
    )
    msgs = drain(n, st)
    assert msgs[-1].index == 11 and not msgs[-1].reject


def test_old_snapshot_is_acked_with_commit_not_restored() -> None:
    from rkv.raft.types import Snapshot, SnapshotMeta

    n, _st = node(entries=terms_log([1, 1, 1]), hs=HardState(term=1, commit=3))
    snap = Snapshot(SnapshotMeta(index=2, term=1), b"old")
    n.step(Message(MT.SNAPSHOT, to="n1", frm="n2", term=1, snapshot=snap))
    rd = n.ready()
    assert rd.snapshot is None and rd.persisted_messages[0].index == 3
    n.advance(rd)


def test_snapshot_matching_our_log_fast_forwards_commit() -> None:
    from rkv.raft.types import Snapshot, SnapshotMeta

    n, _st = node(entries=terms_log([1, 1, 1]), hs=HardState(term=1, commit=1))
    snap = Snapshot(SnapshotMeta(index=2, term=1), b"s")
    n.step(Message(MT.SNAPSHOT, to="n1", frm="n2", term=1, snapshot=snap))
    rd = n.ready()
    assert rd.snapshot is None and n.status().commit == 2 and n.status().last_index == 3
    n.advance(rd)


def test_restart_after_snapshot() -> None:
    c = compacted_cluster()
    c.tick_all(3)
    c.restart("n3")
    s = c["n3"].status()
    assert s.first_index == 9 and s.applied >= 8 and s.role == Role.FOLLOWER
    c.propose("n1", b"after")
    c.tick_all(2)
    assert c.applied_data("n3")[-1] == b"after"
