"""The simulator has teeth: deliberately broken variants of the real core (monkeypatched for
one test) make some seed in a small range fail, with the invariant that names the bug, and
the failure replays exactly.

Each variant breaks one rule of ../../shared/RAFT-CHECKLIST.md at the place rkv/raft/core.py,
log.py and rawnode.py implement it. Variants too rare for a seed range are scripted in files
of their own (test_figure8.py, test_stale_acks.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest

from rkv import codec
from rkv.raft import quorum
from rkv.raft import rawnode as rawnode_mod
from rkv.raft import recovery as recovery_mod
from rkv.raft.core import Raft
from rkv.raft.log import RaftLog
from rkv.raft.rawnode import RawNode
from rkv.raft.types import Entry, MessageType, ReadState
from rkv.sim import cluster as cluster_mod
from rkv.sim.cluster import SimParams
from rkv.sim.disk import DiskParams
from rkv.sim.network import NetworkParams
from rkv.sim.runner import Failure, run_seed
from rkv.store import memory as memory_mod

FAST = replace(SimParams(), ticks=150)
# Quick restarts, slow disks, many crashes during writes and late messages: the conditions under
# which persist-before-send bugs turn into double votes.
HOSTILE = replace(
    FAST,
    restart_after=(1, 3),
    crash_in_write=0.1,
    disk=DiskParams(0, 10, 20, 120),
    chaos_network=NetworkParams(drop=0.05, duplicate=0.05, long_delay=0.2, long_delay_max=150),
)


def first_failure(nodes: int, seeds: Iterable[int], params: SimParams, **kw: object) -> Failure:
    for seed in seeds:
        res = run_seed(seed, nodes, params=params, **kw)  # type: ignore[arg-type]
        if res.failure is not None:
            return res.failure
    pytest.fail(f"no seed failed in {seeds}: the simulator missed the injected bug")


def assert_caught(
    f: Failure, expected: set[str], nodes: int, params: SimParams, **kw: object
) -> None:
    assert f.invariant in expected, f.report()
    assert f"--first-seed {f.seed} --nodes {nodes}" in f.replay
    assert 0 < len(f.trace) <= params.trace_len
    again = run_seed(f.seed, nodes, params=params, **kw).failure  # type: ignore[arg-type]
    assert again is not None and again.report() == f.report()


# -- the broken variants ----------------------------------------------------------------------


def grant_any_vote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Voters skip the up-to-date check (§5.4.1)."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)


def commit_by_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader commits any index a majority holds, of any term (Figure 8)."""

    def _maybe_commit(self: Raft) -> bool:
        match = {v: pr.match for v, pr in self.prs.items()}
        mci = quorum.committed_index(self.voters, match)
        if mci <= self.log.committed:
            return False
        self.log.commit_to(mci)
        self.need_flush = True
        return True

    monkeypatch.setattr(Raft, "_maybe_commit", _maybe_commit)


def send_early(monkeypatch: pytest.MonkeyPatch, kind: MessageType) -> None:
    """Messages of `kind` leave with Ready.messages, before the write they depend on."""
    monkeypatch.setattr(rawnode_mod, "IMMEDIATE_TYPES", rawnode_mod.IMMEDIATE_TYPES | {kind})


def truncate_on_stale_append(monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower rewrites its log from a (possibly stale) APPEND's entries even when they all
    match, dropping whatever followed them."""

    def maybe_append(
        self: RaftLog, prev_index: int, prev_term: int, commit: int, entries: list[Entry]
    ) -> int | None:
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        if entries and entries[0].index > self.committed:
            self.append(entries)
        else:
            ci = self.find_conflict(entries)
            if ci:
                self.append(entries[ci - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    monkeypatch.setattr(RaftLog, "maybe_append", maybe_append)


def local_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any node answers a read at its own commit index, without asking the leader."""

    def read_index(self: RawNode, ctx: bytes) -> None:
        self.raft.read_states.append(ReadState(index=self.raft.log.committed, context=ctx))

    monkeypatch.setattr(RawNode, "read_index", read_index)


def no_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real store's apply transaction never finds a client's session, so a retried write
    executes again (its session is still recorded, with the new index)."""
    monkeypatch.setattr(memory_mod._MemTxn, "session", lambda self, client_id: None)


def trust_new_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose storage is new votes at once, as if it had never run (rkv.raft.recovery)."""
    init = Raft.__init__

    def patched(self: Raft, *a: object, **kw: object) -> None:
        init(self, *a, **kw)  # type: ignore[arg-type]
        self.recovery = None

    monkeypatch.setattr(Raft, "__init__", patched)


def skip_the_catch_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recovering node is a voter like any other as soon as every voter answered, before
    its log is as up to date as the best log they answered with."""
    monkeypatch.setattr(
        recovery_mod.Recovery, "caught_up", lambda self, own_last: self.term is not None
    )


DISKS = replace(FAST, disk_replace=True)


def snapshots_without_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader's snapshot stream leaves out the client sessions: a follower restored from it
    applies the same entries as everyone and still holds another state."""
    init = memory_mod._MemorySnapshotSource.__init__

    def patched(self: Any, meta: Any, records: list[Any], max_chunk: int) -> None:
        init(self, meta, [r for r in records if r[0] != codec.SNAP_SESSIONS], max_chunk)

    monkeypatch.setattr(memory_mod._MemorySnapshotSource, "__init__", patched)


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [trust_new_storage, skip_the_catch_up])
def test_forgetting_a_replaced_disk_is_caught(
    monkeypatch: pytest.MonkeyPatch, variant: Callable[[pytest.MonkeyPatch], None]
) -> None:
    variant(monkeypatch)
    f = first_failure(3, range(1, 100), DISKS)
    assert_caught(
        f,
        {
            "leader-completeness",
            "election-safety",
            "log-matching",
            "state-machine-safety",
            "truncate-committed",
            "linearizability",
            "vote-changed",
        },
        3,
        DISKS,
    )


def test_replicas_that_hold_another_state_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots_without_sessions(monkeypatch)
    params = replace(FAST, compact_every=5)
    f = first_failure(3, range(1, 100), params)
    assert_caught(f, {"state-hash"}, 3, params)


def test_the_real_core_recovers_replaced_disks() -> None:
    """The control: the same fault, the real core."""
    replaced = 0
    for nodes in (3, 5):
        for seed in range(1, 25):
            res = run_seed(seed, nodes, params=DISKS)
            assert res.ok, res.failure.report() if res.failure else ""
            replaced += res.stats.disks_replaced
    assert replaced >= 10, "the control must exercise the fault"


def test_granting_votes_without_the_log_check_loses_committed_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grant_any_vote(monkeypatch)
    f = first_failure(3, range(1, 100), FAST)
    assert_caught(
        f, {"leader-completeness", "truncate-committed", "committed-entry-changed"}, 3, FAST
    )


def test_vote_response_before_persisting_is_caught_at_send(monkeypatch: pytest.MonkeyPatch) -> None:
    send_early(monkeypatch, MessageType.VOTE_RESP)
    f = first_failure(3, range(1, 20), FAST)
    assert_caught(f, {"vote-not-durable"}, 3, FAST)


def test_vote_response_before_persisting_then_crash_elects_two_leaders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the send-time check, the consequence: a node grants a vote, crashes before the
    vote is durable, comes back and votes again in the same term."""
    send_early(monkeypatch, MessageType.VOTE_RESP)
    params = replace(HOSTILE, check_durable_sends=False)
    f = first_failure(3, range(1, 600), params)
    assert_caught(f, {"election-safety"}, 3, params)


def test_append_ack_before_persisting_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    send_early(monkeypatch, MessageType.APPEND_RESP)
    f = first_failure(3, range(1, 20), FAST)
    assert_caught(f, {"ack-not-durable"}, 3, FAST)


def test_truncating_on_a_stale_append_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    truncate_on_stale_append(monkeypatch)
    f = first_failure(3, range(1, 200), FAST)
    # or, when the truncated entries were not committed yet when they went: the leader
    # counted the follower's ack, can never send below its match again, and the follower
    # never catches up (liveness)
    assert_caught(f, {"truncate-committed", "ack-not-durable", "liveness"}, 3, FAST)


def test_reads_served_from_a_local_commit_index_are_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    local_reads(monkeypatch)
    f = first_failure(3, range(1, 200), FAST)
    assert_caught(f, {"client-stale-read", "client-read-value"}, 3, FAST)


def test_stale_local_reads_are_not_linearizable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bug seen by the log-blind linearizability checker alone (the model check,
    which would report it first, is switched off)."""
    local_reads(monkeypatch)
    monkeypatch.setattr(cluster_mod, "check_history", lambda *args: None)
    f = first_failure(3, range(1, 200), FAST)
    assert_caught(f, {"linearizability"}, 3, FAST)
    assert "not linearizable" in f.detail


def test_a_store_without_sessions_applies_retries_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    no_sessions(monkeypatch)
    f = first_failure(3, range(1, 200), FAST)
    assert_caught(f, {"applied-twice"}, 3, FAST)


def test_a_core_that_never_campaigns_fails_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Raft, "hup", lambda self, kind=None: None)
    f = first_failure(3, range(1, 5), FAST)
    assert_caught(f, {"liveness"}, 3, FAST)
    assert "no leader" in f.detail


def test_the_real_core_passes_the_hostile_profile() -> None:
    """The control for the variants above: the same hostile conditions, the real core."""
    for seed in range(1, 30):
        res = run_seed(seed, 3, params=HOSTILE)
        assert res.ok, res.failure.report() if res.failure else ""
