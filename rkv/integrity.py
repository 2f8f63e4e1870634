"""A node's record of the stored data it found damaged (records that failed their checksum).

Owns: the degraded flag and its reason (what /readyz, `status` and the metrics show), the
count of integrity errors, the warning logged once per damaged record, and the client error
(`rkv.errors.CorruptData`, wire code "integrity") that a read of a damaged record becomes;
also the other reasons to be degraded that checks rather than reads find (`condition`: a
scrub whose stored records do not hash to the running state hash, a replica comparison
that found members differing).
Must not: read or repair the store: the read paths that caught `rkv.store.IntegrityError`
report it here. The flag lasts until the process stops (nothing here is persisted; the next
read of the record after a restart finds the damage again), except a condition its check
clears (`condition(kind, None)`: a later comparison where every member agrees).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rkv.errors import CorruptData
from rkv.store.errors import IntegrityError

MAX_LOGGED = 1000
"""Damaged records logged one by one; past this many the rest are only counted."""


class IntegrityWatch:
    """What one node knows about damage to its stored data."""

    def __init__(
        self,
        node_id: str,
        log: logging.Logger,
        on_damage: Callable[[str], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self._on_damage = on_damage
        """Called (with the reason) when this node's own stored data is found damaged."""
        self.errors = 0
        """Reads (requests, snapshot or backup streams) that hit a damaged record."""
        self._log = log
        self._first: IntegrityError | None = None
        self._seen: set[tuple[str, bytes]] = set()
        self._conditions: dict[str, str] = {}

    def failed(self, e: IntegrityError, during: str) -> CorruptData:
        """Count a read (`during`: what was being read) that hit the damaged record `e`, log
        the record the first time, mark the node degraded; returns the error for a client."""
        self.errors += 1
        if self._first is None:
            self._first = e
        where = (e.db, e.key)
        if where not in self._seen and len(self._seen) < MAX_LOGGED:
            self._seen.add(where)
            self._log.warning(
                "%s: integrity error during %s: %s (database %s, key %r); the record is not "
                "served and the node is degraded",
                self.node_id,
                during,
                e.what,
                e.db,
                e.key,
            )
        if self._on_damage is not None:
            self._on_damage(f"{e.what} failed its checksum")
        return CorruptData(f"node {self.node_id}: {e}")

    def condition(self, kind: str, reason: str | None) -> None:
        """Set (a reason) or clear (None) the degraded condition `kind` ("scrub",
        "replicas"), found by a check rather than by a read of a damaged record. Logs it when
        it is set or changes."""
        if reason is None:
            if self._conditions.pop(kind, None) is not None:
                self._log.info("%s: %s: cleared", self.node_id, kind)
            return
        if self._conditions.get(kind) != reason:
            self._log.warning("%s: degraded: %s", self.node_id, reason)
        self._conditions[kind] = reason
        if kind == "scrub" and self._on_damage is not None:
            self._on_damage(reason)

    @property
    def degraded(self) -> str | None:
        """Why the node is degraded (None: it is not)."""
        if self._first is None:
            return next(iter(self._conditions.values()), None)
        n = len(self._seen)
        more = f"{n} damaged records found" if n > 1 else "1 damaged record found"
        return f"integrity error: {self._first.what} failed its checksum; {more}"
