"""Leases in the simulator (SimParams.lease_fraction, `rkv sim --lease-fraction`): every node
drives its Lessor through rkv.lease.LeaseDriver, clients grant, keep alive, let lapse and
revoke leases and put keys attached to them, and the lease checks (rkv.sim.leases: promise,
attachments, liveness at the end) pass on the real code and catch broken variants of it,
each in a small seed range, with a replayable failure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from rkv import codec
from rkv.lease import Lessor
from rkv.sim.cluster import Cluster, SimParams
from rkv.sim.runner import Failure, replay_command, run_seed
from rkv.store import lease_apply
from rkv.store.commands import ApplyResult
from rkv.store.leases import LeaseEvent

PARAMS = replace(SimParams(), ticks=300, lease_fraction=0.3)
SEEDS = range(1, 60)


def test_leases_run_and_pass() -> None:
    expired = revoked = checked = renewed = lapsed_renewals = 0
    for seed in range(1, 9):
        c = Cluster(seed, PARAMS)
        c.run()  # raises InvariantViolation on any failure
        expired += c.stats.leases_expired
        revoked += c.stats.leases_revoked
        checked += c.stats.lease_liveness_checked
        for op in c.history.ops:
            if op.kind == "renew" and op.completed:
                renewed += bool(op.result)
                lapsed_renewals += op.result is False
    # the workload does what it says: leases expire (at the end, all of them), some are
    # revoked, keep-alives succeed and some come too late
    assert expired > 30 and revoked > 0, (expired, revoked)
    assert renewed > 5 and lapsed_renewals > 0, (renewed, lapsed_renewals)
    assert checked == 8


def test_the_checks_see_expiries_with_attached_keys() -> None:
    """Expiries delete attached keys: the attachment check has something to look at."""
    c = Cluster(2, PARAMS)
    c.run()
    deleted = 0
    for e in c.applied_log:
        req = codec.decode_request(e.data) if e.data else None
        if req is not None and isinstance(req.command, codec.LeaseExpire):
            deleted += 1
    assert deleted > 0
    puts = [op for op in c.history.ops if op.kind == "lput" and op.result]
    assert puts, "no key was attached to a lease"


def test_default_workload_has_no_leases() -> None:
    c = Cluster(3, replace(SimParams(), ticks=200))
    c.run()
    assert all(op.kind not in ("grant", "renew", "revoke", "lput") for op in c.history.ops)
    assert c.stats.lease_liveness_checked == 0


def test_replay_command_carries_the_fraction() -> None:
    assert "--ticks 300 --lease-fraction 0.3" in replay_command(5, PARAMS)
    assert "not exact" not in replay_command(5, PARAMS)


def first_failure(seeds: Iterable[int], params: SimParams, nodes: int = 3) -> Failure:
    for seed in seeds:
        res = run_seed(seed, nodes, params=params)
        if res.failure is not None:
            return res.failure
    pytest.fail(f"no seed failed in {seeds}: the lease checks missed the injected bug")


def assert_caught(f: Failure, expected: set[str], params: SimParams = PARAMS) -> None:
    assert f.invariant in expected, f.report()
    again = run_seed(f.seed, f.nodes, params=params).failure
    assert again is not None and again.report() == f.report()


# -- broken variants ---------------------------------------------------------------------------


def expire_ignoring_the_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apply deletes a lease an expiry names whatever its generation (a renewal in between
    no longer wins)."""
    real = lease_apply.execute_lease

    def patched(txn: Any, cmd: Any, index: int, term: int) -> ApplyResult:
        if isinstance(cmd, codec.LeaseExpire) and cmd.term == term:
            n = sum(lease_apply.revoke(txn, lid, "expired") for lid, _ in cmd.items)
            return ApplyResult(value=n)
        return real(txn, cmd, index, term)

    monkeypatch.setattr(lease_apply, "execute_lease", patched)


def renewal_keeps_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lessor takes a renewal's generation but keeps the lease's old deadline."""
    real = Lessor.on_applied

    def patched(self: Lessor, events: Iterable[LeaseEvent], now: int) -> None:
        for ev in events:
            cur = self._leases.get(ev.id)
            if ev.kind == "set" and cur is not None:
                cur.gen = ev.gen
            else:
                real(self, [ev], now)

    monkeypatch.setattr(Lessor, "on_applied", patched)


def checkpoint_halves_the_remaining(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader checkpoints half the remaining TTL it measured."""
    real = Lessor.due

    def patched(self: Lessor, now: int, term: int, checkpoints: bool = True) -> list[Any]:
        out = []
        for c in real(self, now, term, checkpoints):
            if isinstance(c, codec.LeaseCheckpoint):
                c = codec.LeaseCheckpoint(tuple((i, g, r // 2) for i, g, r in c.items))
            out.append(c)
        return out

    monkeypatch.setattr(Lessor, "due", patched)


def restart_spends_the_remaining(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted node (or one that installed a snapshot) counts the stored remaining TTL
    as spent since the grant instead of starting it now."""
    real = Lessor.reset

    def patched(self: Lessor, leases: Iterable[Any], now: int) -> None:
        real(self, leases, now)
        for x in self._leases.values():
            x.deadline = now + x.stored_ms - x.ttl_ms
        self._rebuild()

    monkeypatch.setattr(Lessor, "reset", patched)


def revoke_leaves_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Revoke and expiry delete the lease but not the keys attached to it."""

    def patched(txn: Any, lease_id: int, why: str = "gone") -> bool:
        if txn.lease(lease_id) is None:
            return False
        txn.delete_lease(lease_id)
        txn.lease_event(LeaseEvent(why, lease_id))
        return True

    monkeypatch.setattr(lease_apply, "revoke", patched)


def never_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader proposes checkpoints but never an expiry."""
    real = Lessor.due
    monkeypatch.setattr(
        Lessor,
        "due",
        lambda self, now, term, checkpoints=True: [
            c for c in real(self, now, term, checkpoints) if not isinstance(c, codec.LeaseExpire)
        ],
    )


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        (expire_ignoring_the_generation, {"lease-promise", "lease-vanished"}),
        (renewal_keeps_the_deadline, {"lease-promise"}),
        (checkpoint_halves_the_remaining, {"lease-promise"}),
        (restart_spends_the_remaining, {"lease-promise"}),
        (revoke_leaves_the_keys, {"lease-keys"}),
        (never_expire, {"lease-liveness"}),
    ],
)
def test_broken_leases_are_caught(
    monkeypatch: pytest.MonkeyPatch, variant: Any, expected: set[str]
) -> None:
    variant(monkeypatch)
    assert_caught(first_failure(SEEDS, PARAMS), expected)


def restart_at_full_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted node counts every lease from its full TTL (etcd#9395's cousin)."""
    real = Lessor.reset

    def patched(self: Lessor, leases: Iterable[Any], now: int) -> None:
        real(self, leases, now)
        for x in self._leases.values():
            x.deadline = now + x.ttl_ms
        self._rebuild()

    monkeypatch.setattr(Lessor, "reset", patched)


def test_restart_at_full_ttl_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    restart_at_full_ttl(monkeypatch)
    params = replace(PARAMS, leases=replace(PARAMS.leases, ttl=(2000, 4000)))
    assert_caught(first_failure(range(1, 100), params), {"lease-liveness"}, params)


def test_the_real_code_passes_with_long_leases() -> None:
    """The control of the variant above: the same long TTLs, the real Lessor."""
    params = replace(PARAMS, leases=replace(PARAMS.leases, ttl=(2000, 4000)))
    for seed in range(1, 13):
        res = run_seed(seed, 3, params=params)
        assert res.ok, res.failure.report() if res.failure else ""
