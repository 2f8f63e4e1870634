"""Coordination recipes on leases, transactions and watch, as etcd's concurrency package.

- queue.py: the waiting queue (keys `NAME/<lease id hex>` ordered by create revision; each
  waiter watches only its predecessor's deletion)
- session.py: the lease a lock or a candidacy lives on (kept alive in a nursery of its own;
  LockLost cancels the block when it is lost)
- lock.py: `Lock` (async context manager; `revision` is a fencing token)
- election.py: `Election` (campaign, proclaim, leader, observe, resign)
- sync.py: `SyncLock`, `SyncElection`: the same for blocking code, over a SyncClient (the
  async recipe runs on the SyncClient's trio thread)

This package owns nothing else; it is client-side only. Must not: import the node runtime,
the store or the CLI (it sits above rkv.client).
"""

from __future__ import annotations

from rkv.errors import LockLost
from rkv.recipes.election import Election
from rkv.recipes.lock import Lock
from rkv.recipes.sync import SyncElection, SyncLock

__all__ = ["Election", "Lock", "LockLost", "SyncElection", "SyncLock"]
