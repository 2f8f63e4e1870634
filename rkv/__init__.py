"""rkv: a fault-tolerant distributed key-value store (Raft over Trio, msgpack and LMDB).

The public client API, re-exported: `connect` (async, trio) and `connect_sync` (blocking),
the client classes, the txn builders (`Cmp`, `TxnOp`) and results (`TxnResult`, `KeyValue`), `KeyRecord` (get_record, scan_records),
leases (`Lease`, `LeaseInfo`),
the recipes (`Lock`, `Election`, and `SyncLock`, `SyncElection` for blocking code:
rkv.recipes) and the error hierarchy. The client names are loaded on first use
(module `__getattr__`): every `rkv.*` submodule imports this package first, so loading the
client here would put it on the start-up path of `rkv serve`, which never uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rkv.errors import (
    AuthError,
    BadRequest,
    Changed,
    Compacted,
    CorruptData,
    IntegrityError,
    InternalError,
    LeaseNotFound,
    LockLost,
    NoLeader,
    NotFound,
    NotLeader,
    RkvError,
    StoreFull,
    Timeout,
    TooManyWatchers,
    Unavailable,
)

if TYPE_CHECKING:
    from rkv.client import (
        Client,
        Cmp,
        KeyRecord,
        KeyValue,
        Lease,
        LeaseInfo,
        SyncClient,
        TxnOp,
        TxnResult,
        WatchEvent,
        connect,
        connect_sync,
    )
    from rkv.recipes import Election, Lock, SyncElection, SyncLock

__version__ = "0.1.0"

_CLIENT_NAMES = frozenset(
    {
        "Client",
        "SyncClient",
        "connect",
        "connect_sync",
        "Cmp",
        "TxnOp",
        "TxnResult",
        "KeyValue",
        "KeyRecord",
        "WatchEvent",
        "Lease",
        "LeaseInfo",
    }
)


_RECIPE_NAMES = frozenset({"Lock", "Election", "SyncLock", "SyncElection"})


def __getattr__(name: str) -> Any:
    if name in _RECIPE_NAMES:
        from rkv import recipes

        value = getattr(recipes, name)
        globals()[name] = value
        return value
    if name in _CLIENT_NAMES:
        from rkv import client

        value = getattr(client, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'rkv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CLIENT_NAMES | _RECIPE_NAMES)


__all__ = [
    "AuthError",
    "BadRequest",
    "Changed",
    "Client",
    "Cmp",
    "Compacted",
    "CorruptData",
    "Election",
    "IntegrityError",
    "InternalError",
    "KeyRecord",
    "KeyValue",
    "Lease",
    "LeaseInfo",
    "LeaseNotFound",
    "Lock",
    "LockLost",
    "NoLeader",
    "NotFound",
    "NotLeader",
    "RkvError",
    "StoreFull",
    "SyncClient",
    "SyncElection",
    "SyncLock",
    "Timeout",
    "TooManyWatchers",
    "TxnOp",
    "TxnResult",
    "Unavailable",
    "WatchEvent",
    "__version__",
    "connect",
    "connect_sync",
]
