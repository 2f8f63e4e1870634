"""Errors raised by rkv.store (both the LMDB store and the in-memory twin).

Owns: the exception hierarchy callers of the store catch. Must not: import anything.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store error. Also raised for misuse (out-of-order apply, log gaps)."""


class StoreFullError(StoreError):
    """The disk (or the configured maximum map size) is full: the write was refused and rolled
    back; the store is unchanged and stays usable."""


class CorruptionError(StoreError):
    """Stored data failed its checksum or does not decode: the data dir is damaged."""


class IntegrityError(StoreError):
    """A stored record failed its checksum: its bytes are not the ones written. It is never
    returned; the rest of the store stays usable. `db` names the database ("kv", "files",
    "sessions", "log"), `key` the record's key there, `what` the record for people."""

    def __init__(self, db: str, key: bytes, what: str) -> None:
        super().__init__(f"{what} failed its checksum (database {db}): the stored data is damaged")
        self.db = db
        self.key = key
        self.what = what

    def __reduce__(self) -> tuple[type[IntegrityError], tuple[str, bytes, str]]:
        return (IntegrityError, (self.db, self.key, self.what))


class NewerCommandError(StoreError):
    """A committed log entry holds a command of a newer rkv (a command tag or request format
    this one does not know). Applying it as a no-op would make this replica's state differ
    from the others' for good, so the node stops until it is upgraded."""


class StoreIdentityError(StoreError):
    """The data dir belongs to another cluster or node (or has an unknown schema version)."""


class NotFoundError(StoreError, KeyError):
    """A file chunk that does not exist was read."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SnapshotError(StoreError):
    """A snapshot transfer cannot go on: a chunk out of order or for no staged snapshot, a
    count mismatch at the end, an install without a complete staged state, or a snapshot
    stream aborted so the map could be resized. The transfer restarts from the beginning;
    the live state is untouched."""
