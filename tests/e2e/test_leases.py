"""Leases on a real 3-node cluster (separate processes), timed from the test's clock:
a lease's keys vanish after its TTL and not before, keep-alives keep them, a leader kill
neither restarts the lease at full TTL nor cuts it short; and the CLI's lease commands with
their outputs and exit codes. Bounds are generous (a loaded 2-core machine): what they rule
out is a lease gone before TTL after the grant was sent, or one alive a full TTL after a
leader change."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import rkv

if TYPE_CHECKING:  # tests/e2e is not a package; these come from its conftest
    from conftest import ProcCluster, RunCli

pytestmark = pytest.mark.e2e

SLACK = 3.0
"""Beyond TTL + election timeout (0.2-0.4 s here) a lease may take to vanish: the expiry's
commit, the poll's period, a busy machine."""


def gone_at(c: rkv.SyncClient, key: str, since: float, limit: float) -> float:
    """Poll linearizable reads of `key` until it is absent: the time (after `since`) the
    first read that found it absent was *answered* (the delete happened before that)."""
    while True:
        v = c.get(key)
        t = time.monotonic() - since
        if v is None:
            return t
        if t > limit:
            pytest.fail(f"{key} still there {t:.1f} s after the grant")
        time.sleep(0.05)


def present_until(c: rkv.SyncClient, keys: list[str], since: float, until: float) -> None:
    """Every read of `keys` started before `until` (s after `since`) finds them."""
    while (t := time.monotonic() - since) < until:
        for k in keys:
            assert c.get(k) is not None, f"{k} gone {t:.2f} s after the grant"
        time.sleep(0.1)


@pytest.fixture
def three(cluster_factory: Callable[[int], ProcCluster]) -> ProcCluster:
    c = cluster_factory(3)
    c.wait_leader()
    return c


def test_keys_vanish_after_the_ttl_and_not_before(three: ProcCluster) -> None:
    ttl = 3.0
    with rkv.connect_sync(three.addrs, timeout=10) as c:
        t0 = time.monotonic()  # before the grant is sent
        lease = c.lease_grant(ttl)
        assert lease.ttl == ttl and lease.id > 0
        c.put("l/a", "1", lease=lease.id)
        c.put("l/b", "2", lease=lease.id)
        c.put("l/c", "3", lease=lease.id)
        c.put("l/c", "plain")  # detached: outlives the lease
        info = c.lease_time_to_live(lease.id, keys=True)
        assert info is not None and info.key_names == (b"l/a", b"l/b") and info.keys == 2
        assert 0 < info.remaining <= ttl
        assert [x.id for x in c.lease_list()] == [lease.id]
        present_until(c, ["l/a", "l/b"], t0, ttl - 0.5)
        t = gone_at(c, "l/a", t0, ttl + 0.4 + SLACK)
        assert t >= ttl
        assert c.get("l/b") is None  # in the same revision
        assert c.get("l/c") == b"plain"
        assert c.lease_time_to_live(lease.id) is None
        assert c.lease_list() == []
        with pytest.raises(rkv.LeaseNotFound):
            c.lease_keepalive(lease.id)
        with pytest.raises(rkv.LeaseNotFound):
            c.put("l/d", "x", lease=lease.id)
        assert c.get("l/d") is None


def test_keepalive_keeps_it_and_the_leader_kill_neither_resets_nor_cuts_it(
    three: ProcCluster,
) -> None:
    ttl = 6.0
    with rkv.connect_sync(three.addrs, timeout=15) as c:
        lease = c.lease_grant(ttl)
        c.put("k/held", "1", lease=lease.id)
        start = time.monotonic()
        last_sent = start
        while time.monotonic() - start < 2 * ttl:  # alive for two TTLs by keep-alives
            last_sent = time.monotonic()
            assert c.lease_keepalive(lease.id) == ttl
            assert c.get("k/held") == b"1"
            time.sleep(1.0)
        leader = three.wait_leader()
        time.sleep(3.0)  # half the TTL since the last keep-alive
        t_kill = time.monotonic()
        three.node(leader).kill()
        three.wait_leader(exclude=leader)
        assert time.monotonic() - t_kill < ttl - 3.0  # the test measures what it claims
        t = gone_at(c, "k/held", last_sent, ttl + 0.4 + SLACK)
        assert t >= ttl  # not cut short by the leader change
        # a new leader that restarted the lease at full TTL would hold it until
        # t_kill + ttl = last_sent + 3 + ttl: it went well before
        assert t < (t_kill - last_sent) + ttl - 0.5


def test_cli_lease_commands(three: ProcCluster, run_cli: RunCli) -> None:
    addr = three.addr

    def ok(*args: str) -> list[str]:
        r = run_cli(*args, addr=addr)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout.decode().splitlines()

    (line,) = ok("lease", "grant", "30", "--id", "4242")
    assert line == "4242\t30"
    assert ok("lease", "keepalive", "4242", "--once") == ["4242\t30"]
    assert ok("set", "c/a", "1", "--lease", "4242") == ["OK"]
    out = ok("set", "c/b", "2", "--ttl", "120")
    assert out[0] == "OK"
    own_id, own_ttl = out[1].split("\t")
    assert int(own_id) > 0 and own_ttl == "120"
    ttl_line, *keys = ok("lease", "ttl", "4242", "--keys")
    lid, ttl, left, n = ttl_line.split("\t")
    assert (lid, ttl, n) == ("4242", "30", "1") and 0 < float(left) <= 30
    assert keys == ["c/a"]
    listed = [row.split("\t") for row in ok("lease", "list")]
    assert sorted(int(r[0]) for r in listed) == sorted([4242, int(own_id)])
    assert ok("lease", "revoke", "4242") == ["OK"]
    assert run_cli("get", "c/a", addr=addr).returncode == 1  # deleted with the lease
    for args in (
        ["lease", "revoke", "4242"],
        ["lease", "ttl", "4242"],
        ["lease", "keepalive", "4242", "--once"],
        ["set", "c/x", "1", "--lease", "4242"],
    ):
        r = run_cli(*args, addr=addr)
        assert r.returncode == 7, (args, r.returncode, r.stderr)
        assert b"lease not found" in r.stderr, args
    r = run_cli("lease", "grant", "30", "--id", str(int(own_id)), addr=addr)
    assert r.returncode == 2 and b"lease already exists" in r.stderr
    r = run_cli("set", "c/y", "1", "--lease", "1", "--ttl", "3", addr=addr)
    assert r.returncode == 2
    r = run_cli("lease", "grant", "0", addr=addr)
    assert r.returncode == 2 and b"TTL" in r.stderr


def test_a_short_ttl_is_raised_to_the_minimum(three: ProcCluster) -> None:
    with rkv.connect_sync(three.addrs, timeout=10) as c:
        lease = c.lease_grant(0.05)
        assert lease.ttl == 1.0  # max(1 s, 3 x the 0.2 s election timeout)
        info: Any = c.lease_time_to_live(lease.id)
        assert info.ttl == 1.0
