"""The background scrub of one node: every stored record read and checked at a bounded rate.

Owns: the scrub task (started with the node, in its nursery), its pace (at most
`records_per_second` records and `bytes_per_second` bytes, a pass at most once a second),
what it does with a pass's findings and its statistics (rkv_scrub_* metrics).
Must not: read the store other than through `LmdbStore.scrub_pass` (rkv.store.scrub owns
the reading and the consistency of a pass), or repair records.

Each pass reads every record of the live state (the kv, files and sessions databases, file
chunks wherever they are kept) through the store's normal checks, in pieces of at most a
tenth of a second's worth, each in its own short read transaction (rkv.store.scrub says why
and how the pass's hash stays exact). Findings:
- a record that fails its check: logged with its key and counted (once per record, as any
  read that hits it: rkv.integrity), the node is degraded; the pass goes on;
- at the end, the hash of what the pass read differs from the running state hash at the
  same applied index (a record changed other than by applying the log, or the running hash
  went wrong): logged, the node is degraded ("scrub"), and the running hash is corrected to
  the records' (LmdbStore.correct_state_hash) so that replica comparison (rkv.compare) now
  compares what this node holds and names it if it differs from the others.
A store error other than a damaged record ends the pass (logged; the next starts later).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio

from rkv.integrity import IntegrityWatch
from rkv.store import state_hash as sh
from rkv.store.errors import StoreError
from rkv.store.scrub import ScrubPass, Verdict

MIN_PASS_SECONDS = 1.0
"""A pass starts at most this often (a small store is not rescanned in a busy loop)."""
PIECES_PER_SECOND = 10
"""A pass reads a tenth of a second's worth of records per read transaction."""
MAX_PIECE_RECORDS = 1000
MIN_PIECE_BYTES = 1 << 20


class Scrubber:
    """The scrub task of one node (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        store: Any,
        integrity: IntegrityWatch,
        log: logging.Logger,
        *,
        records_per_second: float,
        bytes_per_second: float,
    ) -> None:
        self.node_id = node_id
        self._store = store
        self._integrity = integrity
        self._log = log
        self.records_per_second = records_per_second
        self.bytes_per_second = bytes_per_second
        self.records = 0
        """Records read and checked."""
        self.passes = 0
        """Passes completed."""
        self.damaged = 0
        """Records found failing their check (each time a pass read them)."""
        self.mismatches = 0
        """Passes whose hash differed from the running state hash."""
        self.restarts = 0
        """Passes started over because the state was replaced (a snapshot install)."""
        self.store_errors = 0
        self.last_pass_seconds = math.nan
        self.last_verdict: Verdict | None = None

    @property
    def errors(self) -> int:
        """Everything a pass found wrong: damaged records, hash mismatches, store errors."""
        return self.damaged + self.mismatches + self.store_errors

    async def run(self) -> None:
        """Scrub pass after pass, forever (0 records per second: never)."""
        if not self.records_per_second:
            await trio.sleep_forever()
        while True:
            started = trio.current_time()
            try:
                await self.run_pass()
            except StoreError as e:
                self.store_errors += 1
                self._log.warning("%s: scrub pass ended by a store error: %s", self.node_id, e)
            await trio.sleep_until(started + MIN_PASS_SECONDS)

    async def run_pass(self) -> Verdict:
        """One whole pass at the configured pace; returns its verdict."""
        rate, byte_rate = self.records_per_second, self.bytes_per_second
        max_records = max(1, min(MAX_PIECE_RECORDS, int(rate / PIECES_PER_SECOND)))
        max_bytes = max(MIN_PIECE_BYTES, int(byte_rate / PIECES_PER_SECOND))
        t0 = due = trio.current_time()
        scrub: ScrubPass = await trio.to_thread.run_sync(self._store.scrub_pass)
        try:
            while True:
                chunk, verdict = await trio.to_thread.run_sync(scrub.step, max_records, max_bytes)
                self.records += chunk.records
                for e in chunk.damaged:
                    self.damaged += 1
                    self._integrity.failed(e, "the scrub")
                if verdict is not None:
                    break
                # the pace: this piece's share of a second, by records and by bytes
                due = max(due, trio.current_time() - 1.0) + max(
                    chunk.records / rate, chunk.bytes / byte_rate if byte_rate else 0.0
                )
                await trio.sleep_until(due)
            self.restarts += scrub.restarts
        finally:
            scrub.close()
        self.passes += 1
        self.last_pass_seconds = trio.current_time() - t0
        self.last_verdict = verdict
        if verdict.status == "mismatch":
            await self._mismatch(verdict)
        return verdict

    async def _mismatch(self, v: Verdict) -> None:
        self.mismatches += 1
        self._integrity.condition(
            "scrub",
            f"scrub: the stored records hash to {sh.hex_of(v.computed)} at index {v.index}, "
            f"not to the running state hash {sh.hex_of(v.stored)}",
        )
        index, value = await trio.to_thread.run_sync(
            self._store.correct_state_hash, v.computed - v.stored
        )
        self._log.warning(
            "%s: scrub: the state hash now stands for the stored records (%s at index %d): "
            "replica comparison shows whether they differ from the other members'",
            self.node_id,
            sh.hex_of(value),
            index,
        )

    def statistics(self) -> dict[str, Any]:
        v = self.last_verdict
        return {
            "records": self.records,
            "passes": self.passes,
            "errors": self.errors,
            "damaged": self.damaged,
            "mismatches": self.mismatches,
            "restarts": self.restarts,
            "last_pass_seconds": self.last_pass_seconds,
            "last_status": None if v is None else v.status,
        }
