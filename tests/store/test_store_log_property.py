"""Property test of the Raft log side: random save / snapshot / restart sequences against a
plain list model, for both stores."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.raft.storage import Compacted, Unavailable
from rkv.raft.types import Entry, HardState, Snapshot, SnapshotMeta

from .harness import Harness, Store

# An op is ("save", offset from first index, terms, with_hard_state) / ("snap", offset) /
# ("reopen",). Offsets are reduced modulo the valid range when the op runs.
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("save"),
            st.integers(0, 1000),
            st.lists(st.integers(1, 5), min_size=1, max_size=6),
            st.booleans(),
        ),
        st.tuples(st.just("snap"), st.integers(0, 1000), st.booleans()),
        st.tuples(st.just("reopen")),
    ),
    max_size=25,
)


class Model:
    def __init__(self) -> None:
        self.snap_index = 0
        self.snap_term = 0
        self.terms: list[int] = []  # terms[i] is the term of index snap_index + 1 + i
        self.hs = HardState(recovering=True)  # a bootstrap member's new store

    @property
    def last(self) -> int:
        return self.snap_index + len(self.terms)

    def term(self, i: int) -> int:
        return self.snap_term if i == self.snap_index else self.terms[i - self.snap_index - 1]


def check(s: Store, m: Model) -> None:
    assert s.first_index() == m.snap_index + 1
    assert s.last_index() == m.last
    assert s.initial_state()[0] == m.hs
    got = s.entries(m.snap_index + 1, m.last + 1)
    assert [(e.index, e.term) for e in got] == [
        (m.snap_index + 1 + i, t) for i, t in enumerate(m.terms)
    ]
    for i in range(m.snap_index, m.last + 1):
        assert s.term(i) == m.term(i)
    with pytest.raises(Unavailable):
        s.term(m.last + 1)
    if m.snap_index > 0:
        with pytest.raises(Compacted):
            s.term(m.snap_index - 1)
        with pytest.raises(Compacted):
            s.entries(m.snap_index, m.last + 1)


def run(h: Harness, program: list[tuple[object, ...]]) -> None:
    s = h.open()
    m = Model()
    try:
        for op in program:
            if op[0] == "save":
                _, off, terms, with_hs = op
                assert isinstance(off, int) and isinstance(terms, list)
                start = m.snap_index + 1 + off % (len(m.terms) + 1)
                es = [Entry(term=t, index=start + i) for i, t in enumerate(terms)]
                hs = HardState(term=max(terms), vote="n1", commit=m.snap_index) if with_hs else None
                s.save(hs, es)
                m.terms = m.terms[: start - m.snap_index - 1] + list(terms)
                if hs is not None:
                    m.hs = hs
            elif op[0] == "snap":
                _, off, matching = op
                assert isinstance(off, int)
                # a snapshot inside the log (matching term: the suffix stays) or past it
                index = max(1, m.snap_index + off % (len(m.terms) + 3))  # 0 = no snapshot
                term = m.term(index) if index <= m.last and matching else 99
                s.save(None, [], Snapshot(SnapshotMeta(index, term)))
                if index <= m.last and term == m.term(index):
                    m.terms = m.terms[index - m.snap_index :]
                else:
                    m.terms = []
                m.snap_index, m.snap_term = index, term
            else:
                s = h.reopen(s)
            check(s, m)
    finally:
        h.close_all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_log_matches_model_memory(program: list[tuple[object, ...]]) -> None:
    run(Harness("memory", Path("/nonexistent")), program)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_log_matches_model_lmdb(program: list[tuple[object, ...]]) -> None:
    d = tempfile.mkdtemp(prefix="rkv-logprop-")
    try:
        run(Harness("lmdb", Path(d) / "node"), program)
    finally:
        shutil.rmtree(d)
