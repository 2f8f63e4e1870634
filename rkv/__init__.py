"""rkv: a fault-tolerant distributed key-value store (Raft over Trio, msgpack and LMDB).

The public client API, re-exported: `connect` (async, trio) and `connect_sync` (blocking),
the client classes and the error hierarchy. Importing rkv loads only the client side.
"""

from __future__ import annotations

from rkv.client import Client, SyncClient, connect, connect_sync
from rkv.errors import (
    AuthError,
    BadRequest,
    Changed,
    IntegrityError,
    InternalError,
    NotFound,
    NotLeader,
    RkvError,
    StoreFull,
    Timeout,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BadRequest",
    "Changed",
    "Client",
    "IntegrityError",
    "InternalError",
    "NotFound",
    "NotLeader",
    "RkvError",
    "StoreFull",
    "SyncClient",
    "Timeout",
    "Unavailable",
    "__version__",
    "connect",
    "connect_sync",
]
