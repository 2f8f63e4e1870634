"""The core under the runtime's way of sending snapshots: the leader's SNAPSHOT messages never
travel; the runtime streams the leader's *current* applied state (at an index at or past the
snapshot marker) and the follower steps a SNAPSHOT message for that index once it is staged.
The core needs no new API for this: these tests pin the behaviour the runtime relies on."""

from __future__ import annotations

from rkv.raft.progress import ProgressState
from rkv.raft.types import Message, Snapshot, SnapshotMeta
from rkv.raft.types import MessageType as MT

from .cluster import Cluster


def behind_cluster() -> Cluster:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    for k in range(10):
        c.propose("n1", b"%d" % k)
    st = c.boxes["n1"].storage
    st.create_snapshot(8, b"")
    st.compact(8)
    c.heal()
    c.filter = lambda m: m.type != MT.SNAPSHOT  # the runtime diverts them
    return c


def streamed(c: Cluster, to: str = "n3", at: tuple[int, int] | None = None) -> None:
    """What the follower's runtime steps once the leader's state at its applied index (or
    `at` = (index, term)) is staged (with the leader's term)."""
    leader = c["n1"]
    index = leader.status().applied
    if at is None:
        at = (index, c.boxes["n1"].storage.term(index))
    index = at[0]
    meta = SnapshotMeta(index, at[1], c.ids)
    c[to].step(
        Message(
            MT.SNAPSHOT,
            to=to,
            frm="n1",
            term=leader.status().term,
            index=index,
            log_term=meta.term,
            snapshot=Snapshot(meta),
        )
    )


def test_snapshot_repeats_while_a_long_transfer_runs_then_a_newer_index_is_accepted() -> None:
    c = behind_cluster()
    c.tick_all(35)  # a long transfer: more than three election timeouts
    asked = [m for m in c.delivered if m.type == MT.SNAPSHOT]
    assert asked == []  # diverted, never delivered
    pr = c["n1"].raft.prs["n3"]
    assert pr.state in (ProgressState.SNAPSHOT, ProgressState.PROBE)
    assert c.boxes["n3"].storage.last_index() < 8
    c.propose("n1", b"during")  # the leader moves past the marker meanwhile
    streamed(c)  # at the leader's applied index (12), not the marker (8)
    c.stabilize()
    b3 = c.boxes["n3"]
    assert [s.meta.index for s in b3.snapshots] == [12]
    pr = c["n1"].raft.prs["n3"]
    assert pr.state == ProgressState.REPLICATE and pr.match == 12
    c.filter = None
    c.propose("n1", b"after")
    c.tick_all(2)
    assert c.applied_data("n3")[-1] == b"after"
    assert b3.storage.last_index() == c.boxes["n1"].storage.last_index()


def test_follower_still_behind_after_install_gets_asked_again() -> None:
    c = behind_cluster()
    c.tick_all(3)
    st = c.boxes["n1"].storage
    at = (c["n1"].status().applied, st.term(c["n1"].status().applied))  # the state at 11 ...
    for k in range(5):
        c.propose("n1", b"x%d" % k)
    st.create_snapshot(15, b"")
    st.compact(15)  # ... but the leader compacted past it before the follower installed it
    streamed(c, at=at)
    c.stabilize()
    assert c.boxes["n3"].snapshots[-1].meta.index == at[0] == 11
    c.tick_all(12)
    assert c["n1"].raft.prs["n3"].state == ProgressState.SNAPSHOT
    streamed(c)
    c.stabilize()
    assert c["n1"].raft.prs["n3"].state == ProgressState.REPLICATE
    assert c.boxes["n3"].storage.last_index() == st.last_index()
