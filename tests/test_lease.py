"""rkv.lease.Lessor with a fake `now` (ms): the deadline rules of its docstring (grant and
renewal set now + ttl, a checkpoint only lowers to now + r, a reset takes the stored
remaining), what `due` proposes and when (expiry at the deadline, not before; checkpoints
once the stored remaining is an interval too high; bounded batches; retries), `sync` from a
store, and the promise end to end over two nodes' clocks with a leader change."""

from __future__ import annotations

import pytest

from rkv.codec import LeaseCheckpoint, LeaseExpire, LeaseGrant, LeaseRenew, Request, encode_request
from rkv.lease import Lessor, min_ttl_ms, sync
from rkv.raft.types import Entry
from rkv.store import MemoryStore
from rkv.store.leases import LeaseEvent, LeaseState


def test_min_ttl() -> None:
    assert [min_ttl_ms(e) for e in (0, 200, 333, 1000)] == [1000, 1000, 1000, 3000]


def test_grant_and_renew_set_the_deadline() -> None:
    ls = Lessor(checkpoint_ms=500)
    ls.on_applied([LeaseEvent("set", 7, 1, 1000)], now=100)
    assert ls.remaining_ms(7, 100) == 1000
    assert ls.remaining_ms(7, 1099) == 1
    assert ls.remaining_ms(7, 5000) == 0
    ls.on_applied([LeaseEvent("set", 7, 9, 1000)], now=800)  # a renewal
    assert ls.remaining_ms(7, 800) == 1000
    assert ls.remaining_ms(8, 0) is None


@pytest.mark.parametrize(
    ("remaining", "at", "want"),
    [
        (300, 500, 300),  # lower than the deadline: taken (this node was behind)
        (900, 500, 600),  # would raise it: the deadline stays (1100 - 500)
        (0, 500, 0),
    ],
)
def test_a_checkpoint_only_lowers_the_deadline(remaining: int, at: int, want: int) -> None:
    ls = Lessor()
    ls.on_applied([LeaseEvent("set", 1, 1, 1000)], now=100)  # deadline 1100
    ls.on_applied([LeaseEvent("checkpoint", 1, 1, remaining)], now=at)
    assert ls.remaining_ms(1, at) == want


def test_a_checkpoint_of_another_gen_is_ignored() -> None:
    ls = Lessor()
    ls.on_applied([LeaseEvent("set", 1, 5, 1000)], now=0)
    ls.on_applied([LeaseEvent("checkpoint", 1, 4, 10)], now=0)
    assert ls.remaining_ms(1, 0) == 1000


def test_reset_takes_the_stored_remaining_from_now() -> None:
    ls = Lessor()
    ls.on_applied([LeaseEvent("set", 9, 1, 1000)], now=0)
    ls.reset([LeaseState(1, 5000, 3, 1200, 2)], now=10_000)
    assert ls.remaining_ms(1, 10_000) == 1200
    assert ls.remaining_ms(9, 10_000) is None  # not in the store: gone


def test_expiry_is_due_at_the_deadline_not_before_and_retried() -> None:
    ls = Lessor(checkpoint_ms=10_000, retry_ms=300)
    ls.on_applied([LeaseEvent("set", 1, 4, 1000), LeaseEvent("set", 2, 6, 2000)], now=0)
    assert ls.due(999, term=3) == []
    assert ls.due(1000, term=3) == [LeaseExpire(3, ((1, 4),))]
    assert ls.due(1100, term=3) == []  # proposed: not again before retry_ms
    assert ls.due(1300, term=3) == [LeaseExpire(3, ((1, 4),))]  # not applied: again
    assert ls.due(2500, term=4) == [LeaseExpire(4, ((1, 4), (2, 6)))]  # earliest first
    ls.on_applied([LeaseEvent("gone", 1), LeaseEvent("gone", 2)], now=2600)
    assert ls.due(10_000, term=4) == [] and len(ls) == 0


def test_checkpoints_once_the_stored_remaining_is_an_interval_too_high() -> None:
    ls = Lessor(checkpoint_ms=500, retry_ms=1000)
    ls.on_applied([LeaseEvent("set", 1, 2, 3000)], now=0)
    assert ls.due(499, term=1) == []
    assert ls.due(500, term=1) == [LeaseCheckpoint(((1, 2, 2500),))]
    assert ls.due(700, term=1) == []  # sent, not applied yet
    ls.on_applied([LeaseEvent("checkpoint", 1, 2, 2500)], now=800)
    assert ls.remaining_ms(1, 800) == 2200  # min(deadline 3000, 800 + 2500)
    assert ls.due(999, term=1) == []  # stored 2500, real 2001: < 500 apart
    assert ls.due(1000, term=1) == [LeaseCheckpoint(((1, 2, 2000),))]


def test_batches_are_bounded() -> None:
    ls = Lessor(checkpoint_ms=100, max_batch=3)
    ls.on_applied([LeaseEvent("set", i, i, 100 + i) for i in range(1, 8)], now=0)
    (first,) = ls.due(1000, term=1)
    assert isinstance(first, LeaseExpire) and [i for i, _ in first.items] == [1, 2, 3]
    (second,) = ls.due(1000, term=1)
    assert isinstance(second, LeaseExpire) and [i for i, _ in second.items] == [4, 5, 6]


def test_bad_settings_are_refused() -> None:
    for kw in ({"checkpoint_ms": 0}, {"retry_ms": 0}, {"max_batch": 0}, {"max_batch": 5000}):
        with pytest.raises(ValueError):
            Lessor(**kw)  # type: ignore[arg-type]


def _apply(s: MemoryStore, cmd: object, term: int = 1) -> None:
    e = Entry(term, s.applied_index() + 1, encode_request(Request(b"", 0, cmd)))  # type: ignore[arg-type]
    assert s.apply([e])[0].ok


def test_sync_feeds_events_and_resets_from_the_store() -> None:
    s = MemoryStore("c", "n1", ("n1",))
    ls = Lessor()
    _apply(s, LeaseGrant(0, 4000))
    sync(ls, s, now=100)
    assert ls.remaining_ms(1, 100) == 4000
    _apply(s, LeaseCheckpoint(((1, 1, 1000),)))
    sync(ls, s, now=200)
    assert ls.remaining_ms(1, 200) == 1000
    s = s.reopen()  # a restart: a new Lessor resets from the store
    ls2 = Lessor()
    ls2.reset(s.leases(), now=50_000)
    assert ls2.remaining_ms(1, 50_000) == 1000
    _apply(s, LeaseRenew(1))
    sync(ls2, s, now=50_100)
    assert ls2.remaining_ms(1, 50_100) == 4000


def test_a_leader_change_neither_restarts_nor_cuts_short() -> None:
    """Two nodes whose clocks are 1e6 ms apart. The client sends a renewal at t=0 (node A's
    clock); A (leader) applies it at 10, B at 30. A checkpoints at 5010, B applies that at
    5040. A dies at 6000; B leads from 7000 on: it proposes expiry at its own deadline, which
    is never before t_send + ttl and not later than the checkpointed remaining allows."""
    ttl, skew = 8000, 1_000_000
    a, b = Lessor(checkpoint_ms=5000), Lessor(checkpoint_ms=5000)
    a.on_applied([LeaseEvent("set", 1, 10, ttl)], now=10)
    b.on_applied([LeaseEvent("set", 1, 10, ttl)], now=30 + skew)
    (cp,) = a.due(5010, term=2)
    assert isinstance(cp, LeaseCheckpoint) and cp.items == ((1, 10, 3000),)
    a.on_applied([LeaseEvent("checkpoint", 1, 10, 3000)], now=5020)
    b.on_applied([LeaseEvent("checkpoint", 1, 10, 3000)], now=5040 + skew)
    # B leads from 7000: due only from its deadline on
    assert b.due(7000 + skew, term=3) == []
    assert b.due(8029 + skew, term=3) == []  # t_send + ttl = 8000: not yet, and not before
    assert b.due(8030 + skew, term=3) == [LeaseExpire(3, ((1, 10),))]


def test_the_driver_resets_syncs_and_proposes_only_as_leader_and_not_too_often() -> None:
    from rkv.lease import LeaseDriver

    s = MemoryStore("c", "n1", ("n1",))
    _apply(s, LeaseGrant(0, 1000))  # before the driver's first step: found by its reset
    d = LeaseDriver(Lessor(checkpoint_ms=10_000), due_every_ms=100)
    assert d.step(s, now=0, leads=True, term=1) == []
    assert d.lessor.remaining_ms(1, 0) == 1000
    assert d.step(s, now=1000, leads=False, term=1) == []  # a follower proposes nothing
    assert d.step(s, now=1000, leads=True, term=1) == [LeaseExpire(1, ((1, 1),))]
    assert d.expiries_proposed == 1
    _apply(s, LeaseGrant(0, 1000))  # index 2: another lease, due at 2000
    assert d.step(s, now=1050, leads=True, term=1) == []  # asked 50 ms ago
    (again,) = d.step(s, now=3100, leads=True, term=1)  # 2 is due, 1 is retried
    assert isinstance(again, LeaseExpire) and sorted(again.items) == [(1, 1), (2, 2)]
    _apply(s, LeaseExpire(1, ((1, 1), (2, 2))))
    d.step(s, now=3200, leads=True, term=1)
    assert (d.expiries_applied, len(d.lessor)) == (2, 0)


def test_the_driver_counts_the_checkpoints_it_proposes() -> None:
    from rkv.lease import LeaseDriver

    s = MemoryStore("c", "n1", ("n1",))
    _apply(s, LeaseGrant(0, 10_000))
    _apply(s, LeaseGrant(0, 10_000))
    d = LeaseDriver(Lessor(checkpoint_ms=1000), due_every_ms=100)
    assert d.step(s, now=0, leads=True, term=1) == []
    assert (d.checkpoints_proposed, d.checkpoint_commands) == (0, 0)
    (cp,) = d.step(s, now=1000, leads=True, term=1)  # both stored remainings 1 s too high
    assert isinstance(cp, LeaseCheckpoint) and len(cp.items) == 2
    assert (d.checkpoints_proposed, d.checkpoint_commands, d.expiries_proposed) == (2, 1, 0)


def test_the_driver_asks_for_expiries_more_often_than_for_checkpoints() -> None:
    from rkv.lease import LeaseDriver

    s = MemoryStore("c", "n1", ("n1",))
    _apply(s, LeaseGrant(0, 1000))  # lease 1: deadline 1000
    _apply(s, LeaseGrant(0, 10_000))  # lease 2: 500 ms too high from 500 on
    d = LeaseDriver(Lessor(checkpoint_ms=500), due_every_ms=20, checkpoint_every_ms=600)
    assert d.step(s, now=0, leads=True, term=1) == []  # checkpoints next at 600
    assert d.step(s, now=520, leads=True, term=1) == []  # lease 2 waits for 600
    assert d.step(s, now=1000, leads=True, term=1) == [  # 1000 >= 600: both kinds
        LeaseExpire(1, ((1, 1),)),
        LeaseCheckpoint(((2, 2, 9000),)),
    ]
    _apply(s, LeaseGrant(0, 100))  # lease 3 (index 3), seen at 1100: deadline 1200
    assert d.step(s, now=1100, leads=True, term=1) == []
    assert d.step(s, now=1190, leads=True, term=1) == []
    # asked again 20 ms later (not 100), before the next checkpoint time (1600): the expiry
    assert d.step(s, now=1210, leads=True, term=1) == [LeaseExpire(1, ((3, 3),))]
