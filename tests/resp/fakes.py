"""A fake node for the RESP room: a dict store answering the client requests the RESP
commands build (get, with records too; put, cas, delete, scan from a key; txn with the state machine's own code), with
the exactly-once session rule, each key's mod revision (the request's number: WATCH sees
writes) and lease (lease_grant, lease_revoke, lease_ttl: no clock, a lease's remaining is
its TTL unless `left` says otherwise), watch polls answering `watch_events`, and a status. Answers can be scripted to fail first (`fail_next`)."""

from __future__ import annotations

from typing import Any

import trio

from rkv.codec import unpack
from rkv.protocol import KeyRecord, TxnReply, TxnRequest, ValueReply, decode_request
from rkv.store import Record
from rkv.store.leases import Lease
from rkv.store.txn_apply import execute_txn
from rkv.testing import DictTxn
from rkv.txn import TxnResult


class RevTxn(DictTxn):
    """DictTxn keeping each key's mod revision (a key the test put in `kv` directly: 1) and
    its lease (`attached`; `leases`: id -> TTL ms)."""

    def __init__(self, b: FakeBackend) -> None:
        super().__init__(b.kv)
        self.mods = b.mods
        self.leases = b.leases
        self.attached = b.attached

    def get(self, key: bytes) -> Record | None:
        v = self.kv.get(key)
        lease = self.attached.get(key, 0)
        return None if v is None else Record(v, 1, self.mods.get(key, 1), 1, lease)

    def put(self, key: bytes, rec: Record) -> None:
        super().put(key, rec)
        self.mods[key] = rec.mod_index

    def delete(self, key: bytes) -> None:
        super().delete(key)
        self.mods.pop(key, None)

    def lease(self, lease_id: int) -> Lease | None:
        ttl = self.leases.get(lease_id)
        return None if ttl is None else Lease(ttl, 1, ttl)

    def attach(self, lease_id: int, key: bytes) -> None:
        self.attached[key] = lease_id

    def detach(self, lease_id: int, key: bytes) -> None:
        assert self.attached.pop(key) == lease_id


MIN_TTL_MS = 1000
"""The fake's minimum lease TTL (a node's: max(1 s, 3 election timeouts))."""


def key_record(r: Record) -> KeyRecord:
    return KeyRecord(r.value, r.create_index, r.mod_index, r.version, r.lease)


class FakeBackend:
    def __init__(self, role: str = "leader") -> None:
        self.kv: dict[bytes, bytes] = {}
        self.mods: dict[bytes, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[dict[str, Any]] = []
        self.sessions: dict[bytes, int] = {}
        self.applied: list[tuple[bytes, int]] = []
        self.role = role
        self.delay = 0.0
        """Seconds each request takes."""
        self.leases: dict[int, int] = {}
        """Lease id -> TTL ms (at least MIN_TTL_MS, as a node grants)."""
        self.attached: dict[bytes, int] = {}
        self.max_leases = 1000
        self.watch_events: list[tuple[str, bytes]] = []
        """What watch polls answer (consumed, unless `watch_repeat`)."""
        self.watch_repeat = False
        self.left: dict[int, int] = {}
        """What lease_ttl answers as a lease's remaining ms (default: its TTL)."""

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        decode_request(frame)  # the RESP room builds only valid requests
        await trio.sleep(self.delay)
        self.requests.append(frame)
        if self.fail_next:
            return self.fail_next.pop(0)
        t = frame["t"]
        if "c" in frame:  # a write: its session
            last = self.sessions.get(frame["c"], 0)
            assert frame["s"] > last, "a write's seq must grow within a session"
            self.sessions[frame["c"]] = frame["s"]
            self.applied.append((frame["c"], frame["s"]))
        k = frame.get("k")
        if t == "get":
            v = self.kv.get(k)
            if not frame.get("meta"):
                return {"t": "ok", "val": v}
            rec = None if v is None else RevTxn(self).get(k)
            return ValueReply(v, None, None if rec is None else key_record(rec), True).to_frame()
        if t in ("put", "cas", "delete"):
            self.attached.pop(k, None)  # a plain write detaches the key
        if t.startswith("lease_"):
            return self._lease(t, frame)
        if t == "watch":
            return await self._watch(frame)
        if t == "put":
            self.kv[k] = frame["val"]
            self.mods[k] = len(self.requests)
            return {"t": "ok"}
        if t == "cas":
            if self.kv.get(k) != frame.get("exp"):
                return {"t": "ok", "swapped": False}
            self.kv[k] = frame["val"]
            self.mods[k] = len(self.requests)
            return {"t": "ok", "swapped": True}
        if t == "txn":
            req = decode_request(frame)
            assert isinstance(req, TxnRequest)
            res = execute_txn(RevTxn(self), req.command(), len(self.requests))
            if not res.ok:
                return {"t": "error", "code": "bad_request", "msg": res.error}
            assert isinstance(res.value, bytes)
            r = TxnResult.from_wire(unpack(res.value))
            return TxnReply(r.succeeded, r.revision, r.results).to_frame()
        if t == "delete":
            self.mods.pop(k, None)
            return {"t": "ok", "existed": self.kv.pop(k, None) is not None}
        if t == "scan":
            p, after = frame.get("p", b""), frame.get("after")
            items = sorted(
                (key, v)
                for key, v in self.kv.items()
                if key.startswith(p) and (after is None or key > after)
            )
            return {"t": "ok", "items": [[key, v] for key, v in items[: frame["limit"]]]}
        return {"t": "error", "code": "bad_request", "msg": f"unknown request type {t!r}"}

    async def _watch(self, frame: dict[str, Any]) -> dict[str, Any]:
        """`watch_events` events per poll ((type, key) each, revisions counting up), or
        none after a short wait."""
        after = frame.get("after") or 0
        if not self.watch_events:
            await trio.sleep(0.01)
            return {"t": "ok", "events": [], "rev": after, "progress": True}
        events = [
            {"rev": after + i + 1, "type": kind, "k": key}
            for i, (kind, key) in enumerate(self.watch_events[: frame.get("limit", 1000)])
        ]
        if not self.watch_repeat:
            del self.watch_events[: len(events)]
        return {"t": "ok", "events": events, "rev": after + len(events), "progress": False}

    def _lease(self, t: str, frame: dict[str, Any]) -> dict[str, Any]:
        lid = frame.get("lease", 0)
        if t == "lease_grant":
            if lid in self.leases:
                return {"t": "error", "code": "bad_request", "msg": "lease already exists"}
            if len(self.leases) >= self.max_leases:
                return {"t": "error", "code": "bad_request", "msg": "too many leases"}
            self.leases[lid] = ttl = max(frame["ttl"], MIN_TTL_MS)
            return {"t": "ok", "lease": lid, "ttl": ttl, "rev": len(self.requests)}
        if lid not in self.leases:
            return {"t": "error", "code": "lease_not_found", "msg": f"no lease {lid}"}
        if t == "lease_revoke":
            del self.leases[lid]
            for key in [key for key, x in self.attached.items() if x == lid]:
                del self.attached[key]
                del self.kv[key]
            return {"t": "ok", "existed": True, "rev": len(self.requests)}
        if t == "lease_ttl":
            ttl = self.leases[lid]
            left = self.left.get(lid, ttl)
            return {"t": "ok", "lease": lid, "ttl": ttl, "left": left, "keys": None, "rev": 1}
        return {"t": "error", "code": "bad_request", "msg": f"unknown request type {t!r}"}

    def status(self) -> dict[str, Any]:
        return {
            "node": "127.0.0.1:1",
            "addr": "127.0.0.1:1",
            "cluster": "rkv-test",
            "role": self.role,
            "term": 3,
            "leader": "127.0.0.1:1",
            "leader_addr": "127.0.0.1:1",
            "commit": 7,
            "applied": 7,
            "voters": ["127.0.0.1:1"],
            "learners": [],
        }

    def key_count(self) -> int:
        return len(self.kv)
