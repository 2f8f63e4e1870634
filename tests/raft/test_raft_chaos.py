"""Seeded random runs (drop, duplicate, reorder, partitions, restarts) checking safety:
at most one leader per term, and applied sequences are prefixes of one another."""

from __future__ import annotations

import contextlib
import random

import pytest

from rkv.raft.errors import ProposalDropped
from rkv.raft.types import Role

from .cluster import Cluster


@pytest.mark.parametrize("seed", range(12))
def test_random_faults_keep_safety(seed: int) -> None:
    rng = random.Random(seed)
    c = Cluster(5 if seed % 2 else 3, seed=seed, max_size_per_msg=64, max_inflight_msgs=4)
    leaders: dict[int, str] = {}
    proposed = 0
    for step in range(400):
        i = rng.choice(c.ids)
        r = rng.random()
        if r < 0.5:
            c.tick(i)
        elif r < 0.7:
            try:
                c[i].propose(b"v%d" % proposed)
                proposed += 1
            except ProposalDropped:
                pass
        elif r < 0.72:
            c.heal()
            c.partition(rng.sample(c.ids, len(c.ids) // 2 + rng.randint(0, 1)))
        elif r < 0.75:
            c.heal()
        elif r < 0.76:
            c.restart(i)
        elif r < 0.78:
            with contextlib.suppress(ProposalDropped):
                c[i].read_index(b"r%d" % step)
        for j in c.ids:
            c.process(j)
        # deliver a random subset in random order, sometimes twice, sometimes never
        batch = list(c.queue)
        c.queue.clear()
        rng.shuffle(batch)
        for m in batch:
            x = rng.random()
            if x < 0.1:
                continue
            c.queue.append(m)
            if x > 0.95:
                c.queue.append(m)
        while c.queue:
            c.deliver_one()
        for j in c.ids:
            s = c[j].status()
            if s.role == Role.LEADER:
                assert leaders.setdefault(s.term, j) == j, f"two leaders in term {s.term}"
        applied = [[(e.index, e.term, e.data) for e in c.boxes[j].applied] for j in c.ids]
        longest = max(applied, key=len)
        for a in applied:
            # restarts re-deliver from `applied`, so compare by index
            by_index = dict((k, (t, d)) for k, t, d in a)
            for k, t, d in longest:
                if k in by_index:
                    assert by_index[k] == (t, d), f"divergent apply at {k}"
    # heal and let it settle: everyone converges on one log
    c.heal()
    for _ in range(60):
        c.tick_all(1)
    lead = c.leader()
    assert lead is not None
    c.propose(lead, b"final")
    c.tick_all(3)
    want = c[lead].status().commit
    for j in c.ids:
        assert c[j].status().commit == want
