"""rkv.SyncLock and rkv.SyncElection against a real 3-node cluster running in another
thread, through SyncClients used from plain threads: mutual exclusion across two clients
with strictly increasing fencing tokens, release on an exception, a timed-out waiter leaving
no key, LockLost surfaced (`lost`, `check()`, the `with`'s end) when the lease is revoked
under the holder, and an election's leader changing on resign (campaign, leader, observe,
a campaign timing out, proclaim refused once the candidacy is lost)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rkv
from rkv.testing import local_configs, threaded_cluster

TTL = 2.0


@pytest.fixture
def addrs(tmp_path: Path) -> Iterator[list[str]]:
    cfgs = local_configs(tmp_path, 3)
    with threaded_cluster(cfgs):
        yield [c.advertise for c in cfgs]


def keys(db: rkv.SyncClient, name: str) -> list[bytes]:
    return [k for k, _ in db.scan(name + "/")]


def wait_until(what: str, cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_mutual_exclusion_across_two_sync_clients(addrs: list[str]) -> None:
    """2 threads per SyncClient, 2 clients, 3 rounds each: a read, a pause and a write of a
    counter under the lock lose no update, no two bodies overlap, tokens strictly increase
    in the order the lock was taken, and every release deleted its key and lease."""
    with rkv.connect_sync(addrs, timeout=10) as a, rkv.connect_sync(addrs, timeout=10) as b:
        a.put("counter", "0")
        inside = 0
        tokens: list[int] = []
        errors: list[BaseException] = []
        guard = threading.Lock()

        def worker(db: rkv.SyncClient) -> None:
            nonlocal inside
            try:
                for _ in range(3):
                    with rkv.SyncLock(db, "mx", ttl=TTL, timeout=60) as lock:
                        with guard:
                            inside += 1
                            assert inside == 1, "two holders at once"
                            assert lock.revision is not None
                            tokens.append(lock.revision)
                        v = int(db.get("counter") or b"0")
                        time.sleep(0.01)
                        db.put("counter", str(v + 1))
                        with guard:
                            inside -= 1
                        lock.check()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(db,)) for db in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert a.get("counter") == b"12"
        assert len(tokens) == 12 and tokens == sorted(set(tokens))
        assert keys(a, "mx") == []
        assert a.lease_list() == []


def test_released_on_an_exception_and_a_timed_out_waiter_leaves_no_key(
    addrs: list[str],
) -> None:
    with rkv.connect_sync(addrs, timeout=10) as db:
        lock = rkv.SyncLock(db, "ex", ttl=TTL)
        with pytest.raises(ValueError, match="boom"), lock:
            assert lock.revision is not None and lock.lease_id is not None
            first = lock.revision
            raise ValueError("boom")
        assert lock.revision is None and lock.key is None
        assert keys(db, "ex") == [] and db.lease_list() == []
        with lock as again:  # the same object may be entered again; the token went up
            assert again.revision is not None and again.revision > first
            assert db.txn([again.is_owner()]).succeeded
            t0 = time.monotonic()
            waiter = rkv.SyncLock(db, "ex", ttl=TTL, timeout=0.5)
            with pytest.raises(rkv.Timeout, match=r"not acquired within 0\.5 s"), waiter:
                pytest.fail("acquired a held lock")
            assert time.monotonic() - t0 < 5
            assert keys(db, "ex") == [again.key]
            with pytest.raises(RuntimeError, match="already entered"), lock:
                pass


def test_a_revoked_lease_is_lock_lost(addrs: list[str]) -> None:
    """The holder's thread cannot be cancelled: `lost` turns LockLost, `check()` raises it,
    the lock's compare fails, and the `with` raises it at its end."""
    with rkv.connect_sync(addrs, timeout=10) as db, rkv.connect_sync(addrs) as other:
        lost = pytest.raises(rkv.LockLost, match=r"deleted|gone")
        with lost, rkv.SyncLock(db, "rv", ttl=30) as lock:
            assert lock.lost is None
            lock.check()
            assert lock.lease_id is not None
            assert other.lease_revoke(lock.lease_id) is True
            wait_until("LockLost", lambda: lock.lost is not None)
            with pytest.raises(rkv.LockLost):
                lock.check()
            assert not db.txn([lock.is_owner()]).succeeded
        with rkv.SyncLock(db, "rv", ttl=TTL, timeout=10) as free:  # free again
            assert free.revision is not None


def test_election_leader_changes_on_resign(addrs: list[str]) -> None:
    with rkv.connect_sync(addrs, timeout=10) as a, rkv.connect_sync(addrs, timeout=10) as b:
        watcher = rkv.SyncElection(a, "sched")
        assert watcher.leader() is None
        seen: list[tuple[bytes, int]] = []
        observed = threading.Event()

        def observe() -> None:
            for x in watcher.observe():
                seen.append(x)
                if len(seen) == 2:
                    observed.set()
                    return

        obs = threading.Thread(target=observe)
        with rkv.SyncElection(a, "sched", ttl=TTL) as first:
            rev1 = first.campaign("first")
            assert first.revision == rev1 and first.key is not None
            assert watcher.leader() == (b"first", rev1)
            obs.start()
            second_leads: list[int] = []
            with rkv.SyncElection(b, "sched", ttl=TTL) as second:
                with pytest.raises(rkv.Timeout, match=r"not leader within 0\.3 s"):
                    second.campaign("second", timeout=0.3)
                assert keys(a, "sched") == [first.key]  # the timed-out candidacy withdrawn
                t = threading.Thread(target=lambda: second_leads.append(second.campaign("second")))
                t.start()
                wait_until("two candidates", lambda: len(keys(a, "sched")) == 2)
                assert not second_leads
                first.resign()
                assert first.revision is None
                t.join(10)
                assert len(second_leads) == 1 and second_leads[0] > rev1
                assert watcher.leader() == (b"second", second_leads[0])
                assert observed.wait(10)  # before the proclaim: it would show its value
                assert seen == [(b"first", rev1), (b"second", second_leads[0])]
                second.proclaim("second-v2")
                assert watcher.leader() == (b"second-v2", second_leads[0])
                second.resign()
            obs.join(10)
        assert watcher.leader() is None
        with pytest.raises(RuntimeError, match="inside `with`"):
            watcher.campaign("x")


def test_a_lost_candidacy_refuses_proclaim(addrs: list[str]) -> None:
    with rkv.connect_sync(addrs, timeout=10) as db:
        with pytest.raises(rkv.LockLost), rkv.SyncElection(db, "l", ttl=30) as e:
            e.campaign("me")
            assert e.key is not None
            lease = next(x.id for x in db.lease_list() if e.key.endswith(b"%016x" % x.id))
            db.lease_revoke(lease)
            wait_until("LockLost", lambda: e.lost is not None)
            with pytest.raises(rkv.LockLost):
                e.proclaim("stale")
        assert rkv.SyncElection(db, "l").leader() is None


def test_an_interrupted_wait_leaves_no_key_nor_holder(addrs: list[str]) -> None:
    """Ctrl+C (here a SIGINT) while `with` waits: KeyboardInterrupt comes out, and the
    wait on the client's loop is given up, not left to take the lock later."""
    with rkv.connect_sync(addrs, timeout=10) as db:
        with rkv.SyncLock(db, "ki", ttl=TTL) as holder:
            timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            with pytest.raises(KeyboardInterrupt), rkv.SyncLock(db, "ki", ttl=TTL):
                pytest.fail("acquired a held lock")
            timer.join()
            wait_until("the waiter's key gone", lambda: keys(db, "ki") == [holder.key])
        time.sleep(0.5)  # a waiter left behind would have taken it by now
        assert keys(db, "ki") == [] and db.lease_list() == []
