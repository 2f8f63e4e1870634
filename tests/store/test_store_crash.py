"""Crash safety: a child process writing batches (save + apply, each one transaction, or both
in one save_and_apply transaction) is killed with SIGKILL at random moments, several times over. After every kill
the reopened store holds exactly a prefix of the batches: at least every batch the child
reported durable, at most one more, and the kv contents (and the durable watch history) match
the applied index exactly.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rkv.store import open_store

from .crash_writer import BATCH, batch_entries, value

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6


def run_and_kill(path: Path, rng: random.Random, mode: str) -> tuple[int, int]:
    """Start the writer, kill it after a random number of batches plus a random delay.
    Returns (batch it resumed at, last batch it reported durable; start - 1 if none)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("crash_writer.py")), str(path), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stdout is not None
    try:
        first = p.stdout.readline().split()
        assert first[0] == "start", first
        start = int(first[1])
        last = start - 1
        for _ in range(rng.randint(1, 8)):
            line = p.stdout.readline()
            assert line, "writer died"
            last = int(line)
        time.sleep(rng.uniform(0, 0.02))  # land anywhere, often inside a transaction
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        # lines already written before the kill are durable batches too
        for line in p.stdout:
            last = int(line)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
    assert p.returncode == -signal.SIGKILL
    return start, last


def check(path: Path, reported: int) -> int:
    s = open_store(path, cluster_id="crash", node_id="n1", voters=("n1",))
    try:
        applied = s.applied_index()
        last = s.last_index()
        assert applied % BATCH == 0, "apply is one transaction per batch"
        batches = applied // BATCH
        # every reported batch is there; at most the one in flight beyond it
        assert reported + 1 <= batches <= reported + 2, (reported, batches)
        # the log holds every applied entry, possibly one more saved-but-unapplied batch
        assert last in (applied, applied + BATCH), (applied, last)
        log = s.entries(1, last + 1)
        expected = [e for b in range(last // BATCH) for e in batch_entries(b)]
        assert log == expected
        # kv contents are exactly those of the applied entries
        items = s.scan(b"k", 100_000)
        assert [k for k, _ in items] == [b"k%08d" % i for i in range(1, applied + 1)]
        assert all(v == value(i + 1) for i, (_, v) in enumerate(items))
        # the durable watch history holds each applied change once, whole from its first
        held = s.read_history(0, applied, 1 << 62)
        assert [c.revision for c in held.changes] == list(range(held.first, applied + 1))
        session = s.session(b"writer")
        if applied:
            assert session is not None and (session.seq, session.index) == (applied, applied)
        return batches
    finally:
        s.close()


@pytest.mark.parametrize("mode", ["separate", "group"])
def test_sigkill_leaves_a_committed_prefix(tmp_path: Path, mode: str) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "node"
    batches = 0
    for round_ in range(ROUNDS):
        start, reported = run_and_kill(path, rng, mode)
        assert start == batches, f"seed {seed} round {round_}: resumed at {start}, not {batches}"
        batches = check(path, reported)
    assert batches >= ROUNDS
