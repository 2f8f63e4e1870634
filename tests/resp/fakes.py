"""A fake node for the RESP room: a dict store answering the client requests the RESP
commands build (get, with records too; put, cas, delete, scan from a key; txn with the state machine's own code), with
the exactly-once session rule, each key's mod revision (the request's number: WATCH sees
writes), and a status. Answers can be scripted to fail first (`fail_next`)."""

from __future__ import annotations

from typing import Any

import trio

from rkv.codec import unpack
from rkv.protocol import KeyRecord, TxnReply, TxnRequest, ValueReply, decode_request
from rkv.store import Record
from rkv.store.txn_apply import execute_txn
from rkv.testing import DictTxn
from rkv.txn import TxnResult


class RevTxn(DictTxn):
    """DictTxn keeping each key's mod revision (a key the test put in `kv` directly: 1)."""

    def __init__(self, kv: dict[bytes, bytes], mods: dict[bytes, int]) -> None:
        super().__init__(kv)
        self.mods = mods

    def get(self, key: bytes) -> Record | None:
        v = self.kv.get(key)
        return None if v is None else Record(v, 1, self.mods.get(key, 1), 1)

    def put(self, key: bytes, rec: Record) -> None:
        super().put(key, rec)
        self.mods[key] = rec.mod_index


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
            rec = None if v is None else RevTxn(self.kv, self.mods).get(k)
            return ValueReply(v, None, None if rec is None else key_record(rec), True).to_frame()
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
            res = execute_txn(RevTxn(self.kv, self.mods), req.command(), len(self.requests))
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
