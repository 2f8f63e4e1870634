"""Housekeeping between the raft loop's turns: log compaction and the stale-upload sweep.

Owns: the compaction policy and when it is next checked, and the uploads in progress as this
node last saw them leading. Must not: touch the RawNode (it asks the raft loop for the
compaction index and the configuration there), or block the loop on a long store call
(compaction runs in a worker thread). Called by the raft loop only, once per turn.
"""

from __future__ import annotations

from typing import Any

import trio

from rkv.codec import FileAbort, Request, encode_request
from rkv.config import NodeConfig
from rkv.integrity import IntegrityWatch
from rkv.node.inbox import Propose, Waiter, log
from rkv.node.raft_loop import RaftLoop
from rkv.replica import CompactionPolicy
from rkv.store.errors import IntegrityError as StoreIntegrityError
from rkv.store.errors import StoreError


class Housekeeping:
    def __init__(
        self,
        cfg: NodeConfig,
        store: Any,
        raft: RaftLoop,
        integrity: IntegrityWatch,
        stats: dict[str, int],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.raft = raft
        self.integrity = integrity
        self._stats = stats
        """The snapshot counters (rkv.node.snapshots): this counts "compactions"."""
        self.policy = CompactionPolicy(
            max_entries=cfg.snapshot_entries,
            max_bytes=cfg.snapshot_bytes,
            keep_entries=cfg.snapshot_keep_entries,
            keep_bytes=cfg.snapshot_keep_bytes,
        )
        self._next_compaction_check = 0.0
        self._next_upload_sweep = 0.0
        self._uploads_seen: dict[bytes, tuple[int, float]] = {}
        """Uploads in progress, as this node last saw them leading: id -> (index of the last
        chunk staged, when that was first seen)."""
        self._compaction_floor = 0
        """Snapshot index at the last compaction check."""

    async def after_turn(self) -> None:
        """Raft loop, between Readies: sweep stale uploads, compact the log."""
        now = trio.current_time()
        self._sweep_uploads(now)
        # Checked every 0.1 s, and at once when the entry bound is crossed (a fast writer
        # can add many entries in 0.1 s).
        if now < self._next_compaction_check and (
            self.raft.view.applied - self._compaction_floor <= self.policy.max_entries
        ):
            return
        self._next_compaction_check = now + 0.1
        self._compaction_floor = self.store.first_index() - 1
        index = self.raft.compaction_index(self.policy)
        if index is None:
            return
        conf = self.raft.conf_at(index)  # the marker's configuration is the one at index
        try:
            await trio.to_thread.run_sync(self.store.compact, index, conf)
        except StoreError as e:
            log.warning("%s: log compaction to %d failed: %s", self.cfg.id, index, e)
            return
        self._compaction_floor = index
        self._stats["compactions"] += 1

    def _sweep_uploads(self, now: float) -> None:
        """Leader, every min(upload_ttl_seconds / 4, 60 s): propose a FileAbort for each
        upload whose last staged chunk has not changed for upload_ttl_seconds. The abort
        names that chunk's index, so an upload that moves on meanwhile is kept (replicas
        decide from the log alone; only the leader looks at a clock)."""
        ttl = self.cfg.upload_ttl_seconds
        if not ttl or now < self._next_upload_sweep or not self.raft.view.leads:
            return
        self._next_upload_sweep = now + min(ttl / 4, 60.0)
        seen: dict[bytes, tuple[int, float]] = {}
        try:
            uploads = self.store.uploads_in_progress()
        except StoreIntegrityError as e:
            self.integrity.failed(e, "the upload sweep")
            return
        for upload_id, last in uploads:
            prev = self._uploads_seen.get(upload_id)
            since = prev[1] if prev is not None and prev[0] == last else now
            seen[upload_id] = (last, since)
            if now - since < ttl:
                continue
            w = Waiter(deadline=now + self.cfg.request_timeout)
            data = encode_request(Request(b"", 0, FileAbort(upload_id, last)))
            # to our own inbox, taken next turn; if it is full, the next sweep retries
            if not self.raft.offer(Propose(data, w)):
                break
            log.info("%s: aborting upload %r, idle for %.0f s", self.cfg.id, upload_id, now - since)
        self._uploads_seen = seen
