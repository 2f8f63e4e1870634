"""The simulator's building blocks: the network model, the disk model, the log mirror (against
a plain list, with hypothesis) and the KV state machine."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rkv.raft.types import Entry
from rkv.sim.disk import Disk, DiskParams
from rkv.sim.invariants import LogMirror, entry_hash
from rkv.sim.network import Network, NetworkParams
from rkv.sim.statemachine import KVStateMachine, Put


def test_partitions_cut_directed_links_and_heal() -> None:
    net = Network(random.Random(1))
    net.split(["a"], ["b", "c"])
    assert not net.connected("a", "b") and not net.connected("c", "a")
    assert net.connected("b", "c")
    net.restore("a", "b")
    assert net.connected("a", "b") and not net.connected("b", "a")
    assert net.delays("b", "a") == ()
    net.heal()
    assert not net.partitioned and net.connected("b", "a")
    net.cut("a", "b")
    assert net.cut_links() == [("a", "b")] and net.connected("b", "a")
    net.isolate("c", ["a", "b", "c"])
    assert not net.connected("c", "a") and not net.connected("b", "c")


def test_delays_stay_in_range_and_faults_happen_at_their_rates() -> None:
    p = NetworkParams(min_delay=2, max_delay=9, drop=0.2, duplicate=0.1)
    net = Network(random.Random(7), p)
    copies = [net.delays("a", "b") for _ in range(5000)]
    lost = sum(1 for c in copies if not c)
    dup = sum(1 for c in copies if len(c) == 2)
    assert 800 < lost < 1200  # 20% of 5000
    assert 250 < dup < 550  # 10% of the 80% delivered
    assert all(2 <= d <= 9 for c in copies for d in c)
    assert net.dropped == lost and net.duplicated == dup and net.sent == 5000


def test_late_delivery_reorders() -> None:
    net = Network(random.Random(3), NetworkParams(long_delay=0.5, long_delay_max=300))
    delays = [net.delays("a", "b")[0] for _ in range(200)]
    assert max(delays) > 100 and min(delays) <= 15


def test_same_seed_same_draws() -> None:
    a = Network(random.Random(5), NetworkParams(drop=0.3, duplicate=0.3))
    b = Network(random.Random(5), NetworkParams(drop=0.3, duplicate=0.3))
    assert [a.delays("x", "y") for _ in range(100)] == [b.delays("x", "y") for _ in range(100)]


def test_disk_latency_slow_phases_are_slower() -> None:
    d = Disk(random.Random(1), DiskParams(0, 2, 50, 60))
    assert all(0 <= d.latency() <= 2 for _ in range(50))
    d.slow = True
    assert all(50 <= d.latency() <= 60 for _ in range(50))


entries_st = st.lists(
    st.tuples(st.integers(1, 40), st.integers(1, 4), st.binary(max_size=2)), min_size=1, max_size=30
)


@settings(max_examples=200, deadline=None)
@given(entries_st)
def test_log_mirror_matches_a_plain_list(ops: list[tuple[int, int, bytes]]) -> None:
    mirror = LogMirror()
    model: list[Entry] = []
    for at, term, data in ops:
        first = min(at, len(model) + 1)
        new = [Entry(term=term, index=first, data=data), Entry(term=term, index=first + 1)]
        before = list(model)
        removed, old_prefix = mirror.write(new)
        model = model[: first - 1] + new
        # the first index whose entry was lost or changed
        lost = next((i + 1 for i, e in enumerate(before) if i >= len(model) or model[i] != e), 0)
        assert removed == lost
        if removed:
            old = LogMirror()
            old.write(before)
            assert old_prefix == old.prefix[removed]
        assert mirror.last_index == len(model)
        assert mirror.terms[1:] == [e.term for e in model]
        assert mirror.ehash[1:] == [entry_hash(e) for e in model]
    # prefix hashes agree with a log built in one go exactly when the logs agree
    fresh = LogMirror()
    fresh.write(model)
    assert fresh.prefix == mirror.prefix


def test_kv_state_machine_applies_once_per_session_seq() -> None:
    sm = KVStateMachine()
    es = [
        Entry(1, 1),
        Entry(1, 2, Put(0, 1, "k", "a").encode()),
        Entry(1, 3, Put(0, 1, "k", "a").encode()),  # a retry
        Entry(1, 4, Put(1, 1, "k", "b").encode()),
    ]
    results = [sm.apply(e) for e in es]
    assert [r.effective for r in results] == [False, True, False, True]
    assert sm.get("k") == "b" and sm.applied_index == 4
    try:
        sm.apply(Entry(1, 9))
    except ValueError:
        pass
    else:
        raise AssertionError("out-of-order apply accepted")
