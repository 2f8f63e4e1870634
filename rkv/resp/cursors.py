"""SCAN's cursors: a bounded table from a cursor (a 64-bit unsigned integer, as clients parse
it: go-redis reads a uint64) to where its scan stands (the last key it returned).

Owns: issuing cursors (random, never 0: 0 starts and ends a scan), looking them up, and the
bounds: at most `most` cursors in all and `per_conn` issued by one connection, the least
recently used evicted first (a connection's own oldest before anybody else's). The table is
the server's, not a connection's: a pooled client (go-redis, redis-py) may send the next
SCAN on another connection. Each page gets a new cursor and the old one stays valid until
evicted, so a client that retries a page gets the same keys again. Pure (no I/O, no trio).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Position:
    """Where a scan stands: the last key it returned."""

    last: bytes


@dataclass(slots=True)
class ScanCursors:
    most: int = 1024
    per_conn: int = 16
    _table: OrderedDict[int, tuple[int, Position]] = field(default_factory=OrderedDict)

    def issue(self, conn_id: int, pos: Position) -> int:
        """A new cursor for `pos`, issued by connection `conn_id`."""
        mine = [c for c, (owner, _) in self._table.items() if owner == conn_id]
        if len(mine) >= self.per_conn:
            del self._table[mine[0]]
        while len(self._table) >= self.most:
            self._table.popitem(last=False)
        cursor = 0
        while cursor == 0 or cursor in self._table:
            cursor = int.from_bytes(os.urandom(8), "big")
        self._table[cursor] = (conn_id, pos)
        return cursor

    def get(self, cursor: int) -> Position | None:
        """The position of `cursor` (None: never issued, or evicted)."""
        entry = self._table.get(cursor)
        if entry is None:
            return None
        self._table.move_to_end(cursor)
        return entry[1]

    def __len__(self) -> int:
        return len(self._table)
