"""Repair of a node whose stored state is damaged: rebuild it from the cluster.

Owns: what a repaired data dir becomes. The damaged one is moved aside, never deleted or
patched (`<data dir>.damaged-<UTC time>`), and a new store takes its place with the node's
identity and the configuration in force when the repair was asked. Being a new store of a
member, it is created recovering (rkv.raft.recovery): started again with its usual flags,
the node neither votes nor acknowledges anything before it has caught up with a leader, and
the leader sends it the log or a snapshot of its state. No guessing: nothing of the damaged
state is kept.
Must not: run while the store is open (the node has stopped and closed it), or decide
when to repair (an operator does: `rkv repair NODE`).
"""

from __future__ import annotations

import time
from pathlib import Path

from rkv.raft.types import ConfState
from rkv.store import open_store


def damaged_path(data_dir: Path, now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return data_dir.with_name(f"{data_dir.name}.damaged-{stamp}")


def rebuild(data_dir: Path, aside: Path, *, cluster_id: str, node_id: str, conf: ConfState) -> None:
    """Move `data_dir` to `aside` and put a new store in its place for `node_id` of
    `cluster_id`, with `conf`'s voters (a learner's own entry is not needed: it is not a
    voter, so it has nothing to recover before it may vote)."""
    if aside.exists():
        raise FileExistsError(f"{aside} exists already")
    data_dir.rename(aside)
    with open_store(data_dir, cluster_id=cluster_id, node_id=node_id, voters=conf.voters):
        pass
