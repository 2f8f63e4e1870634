"""An in-memory fake of an rkv cluster speaking the client protocol over real rkv.net RPC.

A unit-test double for the client's retry, redirect and exactly-once logic: N fake nodes
share one state machine; only the leader accepts writes (the others answer `not_leader`
with the leader's address), replies can be dropped after the write was applied (forcing a
retry with the same seq), nodes can be made unavailable or stopped. It is not a Raft
implementation and says nothing about the real node (tests/e2e covers that).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from rkv.net.rpc import ConnInfo, serve


@dataclass
class FakeState:
    kv: dict[bytes, bytes] = field(default_factory=dict)
    sessions: dict[bytes, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    applied: Counter[tuple[bytes, int]] = field(default_factory=Counter)
    staged: dict[bytes, dict[int, bytes]] = field(default_factory=dict)
    files: dict[bytes, tuple[int, bytes, list[bytes]]] = field(default_factory=dict)
    stale_seqs: int = 0


class FakeCluster:
    """Start with `await nursery.start(cluster.run)`; `addrs` are "127.0.0.1:port"."""

    def __init__(self, n: int = 3) -> None:
        self.n = n
        self.addrs: list[str] = []
        self.leader = 0
        self.state = FakeState()
        self.drop_write_replies = 0
        """The next N write replies are dropped (after applying): the client must retry."""
        self.unavailable: set[int] = set()
        """Nodes answering every request with `unavailable`."""
        self.silent: set[int] = set()
        """Nodes that never answer (requests hang until the client gives up)."""
        self.corrupt_reads = False
        self.hide_leader_hint = False
        """Answer not_leader without leader_addr (the client must ask `status`)."""
        self.requests: Counter[tuple[int, str]] = Counter()
        self.chunk_sizes: list[int] = []
        self.max_chunk_reads_inflight = 0
        self._chunk_reads_inflight = 0
        self._scopes: list[trio.CancelScope] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for i in range(self.n):
                scope = trio.CancelScope()
                self._scopes.append(scope)
                port = await nursery.start(self._serve_node, i, scope)
                self.addrs.append(f"127.0.0.1:{port}")
            task_status.started()

    async def _serve_node(
        self, i: int, scope: trio.CancelScope, task_status: trio.TaskStatus[int]
    ) -> None:
        async def handler(frame: dict[str, Any], info: ConnInfo) -> dict[str, Any] | None:
            return await self.handle(i, frame)

        with scope:
            await serve(handler, "127.0.0.1", 0, task_status=task_status)

    def stop(self, i: int) -> None:
        """Stop node i: its listener and connections close."""
        self._scopes[i].cancel()

    async def handle(self, i: int, frame: dict[str, Any]) -> dict[str, Any]:
        t = frame["t"]
        self.requests[(i, t)] += 1
        if t == "status":
            return self._status(i)
        if i in self.silent:
            await trio.sleep_forever()
        if i in self.unavailable:
            return {"t": "error", "code": "unavailable", "msg": "no leader"}
        if "c" in frame:
            if i != self.leader:
                err = {"t": "error", "code": "not_leader", "msg": "not the leader"}
                if not self.hide_leader_hint:
                    err["leader_addr"] = self.addrs[self.leader]
                return err
            reply = self._write(frame)
            if self.drop_write_replies > 0:
                self.drop_write_replies -= 1
                await trio.sleep_forever()
            return reply
        return await self._read(frame)

    def _status(self, i: int) -> dict[str, Any]:
        return {
            "t": "ok",
            "id": None,
            "addr": self.addrs[i],
            "role": "leader" if i == self.leader else "follower",
            "term": 3,
            "leader": self.addrs[self.leader],
            "leader_addr": self.addrs[self.leader],
            "commit": sum(self.state.applied.values()),
            "applied": sum(self.state.applied.values()),
            "last_index": sum(self.state.applied.values()),
            "peers": [a for j, a in enumerate(self.addrs) if j != i],
        }

    def _write(self, frame: dict[str, Any]) -> dict[str, Any]:
        st = self.state
        client, seq = frame["c"], frame["s"]
        assert isinstance(client, bytes) and len(client) == 16
        assert isinstance(seq, int) and seq >= 1
        last = st.sessions.get(client)
        if last is not None and seq <= last[0]:
            if seq == last[0]:
                return last[1]
            # Only the last result is remembered, like the real state machine.
            st.stale_seqs += 1
            return {"t": "error", "code": "bad_request", "msg": f"stale seq {seq}"}
        st.applied[(client, seq)] += 1
        reply = self._apply(frame)
        st.sessions[client] = (seq, reply)
        return reply

    def _apply(self, frame: dict[str, Any]) -> dict[str, Any]:
        st, t, k = self.state, frame["t"], frame["k"]
        if t == "put":
            st.kv[k] = frame["val"]
            return {"t": "ok"}
        if t == "delete":
            return {"t": "ok", "existed": st.kv.pop(k, None) is not None}
        if t == "cas":
            if st.kv.get(k) == frame["exp"]:
                st.kv[k] = frame["val"]
                return {"t": "ok", "swapped": True}
            return {"t": "ok", "swapped": False}
        if t == "file_chunk":
            self.chunk_sizes.append(len(frame["data"]))
            st.staged.setdefault(frame["u"], {})[frame["n"]] = frame["data"]
            return {"t": "ok"}
        if t == "file_commit":
            chunks = st.staged.pop(frame["u"], {})
            if sorted(chunks) != list(range(frame["chunks"])):
                return {"t": "error", "code": "bad_request", "msg": "missing chunks"}
            data = [chunks[n] for n in range(frame["chunks"])]
            if sum(map(len, data)) != frame["size"]:
                return {"t": "error", "code": "bad_request", "msg": "size mismatch"}
            st.files[k] = (frame["size"], frame["sha"], data)
            return {"t": "ok"}
        if t == "file_delete":
            return {"t": "ok", "existed": st.files.pop(k, None) is not None}
        return {"t": "error", "code": "bad_request", "msg": f"unknown type {t}"}

    async def _read(self, frame: dict[str, Any]) -> dict[str, Any]:
        st, t = self.state, frame["t"]
        if t == "get":
            return {"t": "ok", "val": st.kv.get(frame["k"])}
        if t == "scan":
            items = sorted((k, v) for k, v in st.kv.items() if k.startswith(frame["p"]))
            return {"t": "ok", "items": [[k, v] for k, v in items[: frame["limit"]]]}
        if t == "file_meta":
            f = st.files.get(frame["k"])
            if f is None:
                return {"t": "error", "code": "not_found", "msg": "no such file"}
            return {"t": "ok", "size": f[0], "chunks": len(f[2]), "sha": f[1]}
        if t == "file_read":
            f = st.files.get(frame["k"])
            if f is None:
                return {"t": "error", "code": "not_found", "msg": "no such file"}
            if f[1] != frame["sha"]:
                return {"t": "error", "code": "changed", "msg": "file changed"}
            self._chunk_reads_inflight += 1
            self.max_chunk_reads_inflight = max(
                self.max_chunk_reads_inflight, self._chunk_reads_inflight
            )
            try:
                await trio.sleep(0.001)  # lets several reads overlap if the client pipelines
            finally:
                self._chunk_reads_inflight -= 1
            data = f[2][frame["n"]]
            if self.corrupt_reads and frame["n"] == len(f[2]) - 1:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            return {"t": "ok", "data": data}
        return {"t": "error", "code": "bad_request", "msg": f"unknown type {t}"}


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
