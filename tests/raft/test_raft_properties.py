"""Hypothesis properties: quorum arithmetic against brute force, and the log under random
AppendEntries sequences (log matching holds, committed entries never change)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rkv.raft import quorum
from rkv.raft.log import RaftLog
from rkv.raft.storage import MemoryStorage
from rkv.raft.types import Entry

VOTERS = st.lists(st.sampled_from([f"n{k}" for k in range(1, 8)]), min_size=1, unique=True)


@given(VOTERS, st.data())
def test_committed_index_is_largest_majority_index(voters: list[str], data: st.DataObject) -> None:
    match = {v: data.draw(st.integers(0, 20)) for v in voters if data.draw(st.booleans())}
    got = quorum.committed_index(voters, match)
    need = len(voters) // 2 + 1
    brute = max(
        (n for n in range(0, 21) if sum(1 for v in voters if match.get(v, 0) >= n) >= need),
        default=0,
    )
    assert got == brute


@given(VOTERS, st.data())
def test_vote_result_matches_counting(voters: list[str], data: st.DataObject) -> None:
    votes: dict[str, bool] = {}
    for v in [*voters, "outsider"]:
        choice = data.draw(st.sampled_from([None, True, False]))
        if choice is not None:
            votes[v] = choice
    yes = sum(1 for v in voters if votes.get(v) is True)
    no = sum(1 for v in voters if votes.get(v) is False)
    q = len(voters) // 2 + 1
    want = (
        quorum.VoteResult.WON
        if yes >= q
        else quorum.VoteResult.LOST
        if len(voters) - no < q
        else quorum.VoteResult.PENDING
    )
    assert quorum.vote_result(voters, votes) == want


def test_quorum_edge_cases() -> None:
    assert quorum.committed_index([], {}) == 0
    assert quorum.vote_result([], {}) == quorum.VoteResult.LOST
    assert quorum.majority(4) == 3 and quorum.majority(5) == 3


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[list[Entry]], list[int]]:
    """Leader logs of terms 1..T, each built from the previous leader's log truncated no lower
    than what was committed, plus the commit index known in each term."""
    logs: list[list[Entry]] = []
    commits: list[int] = []
    prev: list[Entry] = []
    commit = 0
    for term in range(1, draw(st.integers(1, 6)) + 1):
        keep = draw(st.integers(commit, len(prev)))
        n = draw(st.integers(0, 6))
        log = prev[:keep] + [Entry(term, keep + 1 + k, b"%d" % term) for k in range(n)]
        commit = draw(st.integers(commit, len(log)))
        logs.append(log)
        commits.append(commit)
        prev = log
    return logs, commits


def follower_entries(log: RaftLog) -> list[Entry]:
    return log.slice(log.first_index(), log.last_index() + 1)


@settings(max_examples=150, deadline=None)
@given(histories(), st.data())
def test_random_appends_keep_log_matching_and_commits(
    hist: tuple[list[list[Entry]], list[int]], data: st.DataObject
) -> None:
    logs, commits = hist
    storage = MemoryStorage()
    log = RaftLog(storage)
    msgs = []
    for s, leader_log in enumerate(logs):
        batch = []
        for _ in range(data.draw(st.integers(0, 6))):
            prev = data.draw(st.integers(0, len(leader_log)))
            n = data.draw(st.integers(0, len(leader_log) - prev))
            batch.append((s, prev, n))
        # within one term messages may be reordered or duplicated (stale appends)
        msgs += data.draw(st.permutations(batch))
    for s, prev, n in msgs:
        leader_log = logs[s]
        prev_term = leader_log[prev - 1].term if prev else 0
        ents = leader_log[prev : prev + n]
        before = follower_entries(log)
        committed_before = log.committed
        last_new = log.maybe_append(prev, prev_term, commits[s], ents)
        after = follower_entries(log)
        if last_new is not None:
            assert last_new == prev + n
            assert after[:last_new] == leader_log[:last_new]
            if all(i < len(before) and before[i] == e for i, e in enumerate(ents, start=prev)):
                assert after == before  # stale/duplicate: nothing truncated
        else:
            assert after == before
        # committed entries never change and the commit index never goes back
        assert log.committed >= committed_before
        assert after[:committed_before] == before[:committed_before]
        # log matching: wherever we agree with a leader log on an entry, all before agrees
        for ll in logs:
            common = [i for i in range(min(len(ll), len(after))) if ll[i] == after[i]]
            if common:
                k = common[-1] + 1
                assert after[:k] == ll[:k]
        # sometimes persist what is unstable, as the runtime would
        if data.draw(st.booleans()):
            u = log.unstable.next_entries()
            log.unstable.accept_in_progress()
            storage.append(u)
            if u:
                log.stable_to(u[-1].index, u[-1].term)
            assert follower_entries(log) == after
