"""What a committed entry's changes are, as recorded for watchers (rkv.node.watch).

Owns: `ChangeRecorder`, which the shared apply logic (commands.set_key, the file commands in
commands.py) calls for every write of a key or a file, so that both stores (kv.py's
LmdbStateTxn and memory.py's twin) record the same `Change`s: same kinds, revisions, values
and previous values. A store's transaction holds one (its `recorder`) while recording is on.
Must not: read or write the store (the caller passes the values), do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rkv.store.commands import Change, Record


@dataclass(slots=True)
class ChangeRecorder:
    """Collects the changes of the entries being applied, in order, into `out`, each dated
    with the entry `begin` named last."""

    out: list[Change] = field(default_factory=list)
    index: int = 0

    def begin(self, index: int) -> None:
        self.index = index

    def key(self, key: bytes, rec: Record | None, old: Record | None) -> None:
        """Key `key` was written (`rec`) or deleted (None); `old`: its record before."""
        prev = None if old is None else old.value
        if rec is not None:
            self.out.append(Change(self.index, "put", key, rec.value, prev))
        elif old is not None:
            self.out.append(Change(self.index, "delete", key, None, prev))

    def file_commit(self, key: bytes) -> None:
        out = self.out
        if out and out[-1] == Change(self.index, "file_delete", key):
            out.pop()  # a commit replacing the file: one event
        out.append(Change(self.index, "file_commit", key))

    def file_delete(self, key: bytes) -> None:
        self.out.append(Change(self.index, "file_delete", key))
