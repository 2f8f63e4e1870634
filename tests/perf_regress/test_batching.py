"""Correctness of the fast paths (issue 4): what one turn costs in messages and store writes.

No speed is asserted: these tests pin down the counts that make rkv fast (one APPEND per
follower and one save for many proposals, no save for a commit-only change) and the
behaviour the shortcuts must keep (a restart repairs a stored commit below the applied index;
frames written eagerly by the transport arrive whole and in order).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
import trio

from rkv.codec import Put, Request, encode_request
from rkv.net.rpc import ConnInfo, RpcClient, ServerStats, serve
from rkv.net.transport import PeerTransport
from rkv.raft.config import Config
from rkv.raft.types import Entry, HardState, Message, MessageType, Role, Snapshot
from rkv.replica import Replica
from rkv.store.memory import MemoryStore

IDS = ("n1", "n2", "n3")


class CountingStore(MemoryStore):
    """A MemoryStore that records every save (one save = one durable transaction)."""

    def __init__(self, node: str) -> None:
        super().__init__("c", node, IDS)
        self.save_calls: list[tuple[HardState | None, int]] = []
        self.apply_calls = 0
        self.group_calls = 0

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        self.save_calls.append((hard_state, len(entries)))
        super().save(hard_state, entries, snapshot)

    def apply(self, entries: Sequence[Entry]) -> Any:
        self.apply_calls += 1
        return super().apply(entries)

    def save_and_apply(
        self, hard_state: HardState | None, entries: Sequence[Entry], committed: Sequence[Entry]
    ) -> Any:
        self.group_calls += 1
        return super().save_and_apply(hard_state, entries, committed)


def put(i: int) -> bytes:
    return encode_request(Request(b"c" * 16, i + 1, Put(b"k%d" % i, b"v")))


class Cluster:
    def __init__(self) -> None:
        self.stores = {i: CountingStore(i) for i in IDS}
        self.reps: dict[str, Replica[int]] = {
            i: Replica(
                Config(id=i, voters=IDS, election_tick=10, heartbeat_tick=1, pre_vote=False),
                self.stores[i],
                rng=random.Random(k),
            )
            for k, i in enumerate(IDS)
        }
        self.wire: list[Message] = []
        for r in self.reps.values():  # new stores recover first (rkv.raft.recovery)
            r.tick()
        self.settle()

    def turn(self, i: str) -> list[Message]:
        """Handle every Ready of node i; returns what it sent."""
        sent: list[Message] = []
        self.reps[i].handle_ready(sent.extend)
        self.wire += sent
        return sent

    def deliver(self) -> None:
        """Step everything on the wire into its receiver."""
        msgs, self.wire = self.wire, []
        for m in msgs:
            self.reps[m.to].step(m)

    def replicate_and_collect_acks(self) -> list[Message]:
        """Deliver the leader's appends, let both followers handle them, and return their
        acks (undelivered)."""
        self.deliver()
        for f in ("n2", "n3"):
            self.turn(f)
        acks, self.wire = self.wire, []
        return acks

    def settle(self) -> None:
        for _ in range(100):
            for i in IDS:
                self.turn(i)
            if not self.wire:
                return
            self.deliver()
        raise AssertionError("did not settle")


@pytest.mark.parametrize("n", [1, 2, 50])
def test_proposals_of_one_turn_make_one_append_per_follower_and_one_save(n: int) -> None:
    c = Cluster()
    leader = c.reps["n1"]
    leader.raw.campaign()
    c.settle()
    assert leader.role == Role.LEADER
    store = c.stores["n1"]
    saves = len(store.save_calls)
    for i in range(n):
        leader.propose(put(i), i)
    sent = c.turn("n1")
    appends = [m for m in sent if m.type == MessageType.APPEND]
    assert sorted(m.to for m in appends) == ["n2", "n3"]
    assert all(len(m.entries) == n for m in appends)
    assert len(store.save_calls) == saves + 1
    assert store.save_calls[-1][1] == n
    # Each follower persists the whole batch in one save and acks it with one message.
    c.deliver()
    for f in ("n2", "n3"):
        before = len(c.stores[f].save_calls)
        acks = [m for m in c.turn(f) if m.type == MessageType.APPEND_RESP]
        assert len(acks) == 1 and acks[0].index == leader.raw.status().last_index
        assert len(c.stores[f].save_calls) == before + 1


def test_commit_only_change_costs_no_save_but_is_applied() -> None:
    c = Cluster()
    leader = c.reps["n1"]
    leader.raw.campaign()
    c.settle()
    for i in range(3):
        leader.propose(put(i), i)
    c.turn("n1")
    acks = c.replicate_and_collect_acks()
    saves = len(c.stores["n1"].save_calls)
    applies = c.stores["n1"].apply_calls
    for m in acks:
        leader.step(m)
    ready = leader.take_ready()
    assert ready.hard_state is not None and not ready.entries
    assert ready.committed_entries and ready.must_sync
    leader.persist(ready)
    leader.finish(ready, leader.apply(ready))
    assert len(c.stores["n1"].save_calls) == saves  # the commit index alone is not saved
    assert c.stores["n1"].apply_calls == applies + 1
    assert c.stores["n1"].get(b"k2") == b"v"
    # A new term or vote is still saved before anything depending on it is sent.
    hs, _ = c.stores["n2"].initial_state()
    c.reps["n2"].raw.campaign()
    rd = c.reps["n2"].take_ready()
    assert rd.hard_state is not None and rd.hard_state.term == hs.term + 1
    c.reps["n2"].persist(rd)
    assert c.stores["n2"].initial_state()[0].term == hs.term + 1


def test_entries_and_commit_of_one_ready_are_one_group_commit() -> None:
    """A Ready carrying new entries and committed entries (the leader under load, a follower
    getting the next APPEND with the commit index) is written by one save_and_apply."""
    c = Cluster()
    leader = c.reps["n1"]
    leader.raw.campaign()
    c.settle()
    leader.propose(put(0), 0)
    c.turn("n1")
    acks = c.replicate_and_collect_acks()
    for m in acks:
        leader.step(m)  # entry 1 of this term commits ...
    leader.propose(put(1), 1)  # ... in the same turn as a new proposal
    store = c.stores["n1"]
    saves, applies, groups = len(store.save_calls), store.apply_calls, store.group_calls
    ready = leader.take_ready()
    assert ready.entries and ready.committed_entries and leader.can_group_commit(ready)
    out = leader.finish(ready, leader.persist_and_apply(ready))
    assert [token for token, _e, _r in out.completed] == [0]
    assert store.group_calls == groups + 1
    # MemoryStore.save_and_apply is save + apply: one call of each underneath
    assert (len(store.save_calls), store.apply_calls) == (saves + 1, applies + 1)
    assert store.get(b"k0") == b"v" and store.get(b"k1") is None
    # A follower gets the new entry with the commit index of put 0 in one APPEND: one write.
    f = c.reps["n2"]
    for m in [m for m in ready.messages if m.to == "n2"]:
        f.step(m)
    rd = f.take_ready()
    assert rd.entries and rd.committed_entries and f.can_group_commit(rd)
    before = c.stores["n2"].group_calls
    f.finish(rd, f.persist_and_apply(rd))
    assert c.stores["n2"].group_calls == before + 1
    assert c.stores["n2"].get(b"k0") == b"v"
    # Nothing to save: the commit alone is applied without a save.
    assert not leader.can_group_commit(replace(ready, entries=(), hard_state=None))


def test_restart_repairs_a_stored_commit_below_the_applied_index() -> None:
    store = CountingStore("n1")
    entries = [Entry(term=1, index=i, data=put(i - 1)) for i in range(1, 4)]
    store.save(HardState(term=1, vote="n1", commit=1), entries)
    store.apply(entries)  # applied 3, stored commit 1: a crash after an unsaved commit change
    assert store.initial_state()[0].commit < store.applied_index() == 3
    cfg = Config(id="n1", voters=IDS, election_tick=10, heartbeat_tick=1, applied=3)
    rep: Replica[int] = Replica(cfg, store, rng=random.Random(1))
    assert store.initial_state()[0] == HardState(term=1, vote="n1", commit=3)
    assert rep.raw.status().commit == 3 and rep.raw.status().applied == 3
    assert not rep.has_ready() or not rep.take_ready().committed_entries


class Sink:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def __call__(self, frame: dict[str, Any], info: ConnInfo) -> None:
        self.frames.append(frame)


async def test_eager_sends_arrive_whole_and_in_order(nursery: trio.Nursery) -> None:
    sink = Sink()
    port = await nursery.start(serve, sink, "127.0.0.1", 0)
    tr = PeerTransport("a", {"b": ("127.0.0.1", port)}, hello={"cluster": "c"})
    await nursery.start(tr.run)
    tr.send("b", {"t": "raft", "n": 0})  # queued: goes after the hello
    with trio.fail_after(5):
        while not tr.statistics()["b"]["connected"] or tr.statistics()["b"]["sent"] < 1:
            await trio.sleep(0.01)
    big = b"x" * (4 << 20)  # more than a socket buffer takes at once: a partial write
    n = 1
    for _ in range(3):
        tr.send("b", {"t": "raft", "n": n}, now=True)
        tr.send("b", {"t": "raft", "n": n + 1, "big": big}, now=True)
        tr.send("b", {"t": "raft", "n": n + 2}, now=True)
        tr.send("b", {"t": "raft", "n": n + 3})
        n += 4
        with trio.fail_after(10):
            while len(sink.frames) < n:
                await trio.sleep(0.01)
    assert [f["n"] for f in sink.frames] == list(range(n))
    assert all(f["big"] == big for f in sink.frames if "big" in f)
    st = tr.statistics()["b"]
    assert st["eager_writes"] >= 3  # the first frame of each round went out at once
    assert st["sent"] == n and st["dropped"] == 0


async def test_server_stats_count_frames(nursery: trio.Nursery) -> None:
    stats = ServerStats()
    sink = Sink()
    port = await nursery.start(lambda **kw: serve(sink, "127.0.0.1", 0, stats=stats, **kw))
    tr = PeerTransport("a", {"b": ("127.0.0.1", port)})
    await nursery.start(tr.run)
    for i in range(10):
        tr.send("b", {"t": "raft", "n": i}, now=True)
        await trio.sleep(0)
    with trio.fail_after(5):
        while stats.oneway < 10:
            await trio.sleep(0.01)
    assert [f["n"] for f in sink.frames] == list(range(10))


async def test_client_eager_writes_keep_frames_whole(nursery: trio.Nursery) -> None:
    async def echo(frame: dict[str, Any], info: ConnInfo) -> dict[str, Any]:
        await trio.sleep(0)
        return {"t": "ok", "x": frame["x"]}

    port = await nursery.start(serve, echo, "127.0.0.1", 0)
    big = b"y" * (6 << 20)  # larger than the socket buffer: the first write is partial
    async with RpcClient("127.0.0.1", port, hello={"cluster": "c"}) as client:
        results: dict[int, bytes] = {}

        async def one(i: int, x: bytes) -> None:
            results[i] = (await client.call({"t": "echo", "x": x}, timeout=20))["x"]

        for _ in range(2):
            async with trio.open_nursery() as calls:
                for i in range(20):
                    calls.start_soon(one, i, big if i % 7 == 3 else b"%d" % i)
            assert all(results[i] == (big if i % 7 == 3 else b"%d" % i) for i in range(20))
        # Sequential small calls on an idle connection are written from the caller's task.
        for i in range(5):
            assert (await client.call({"t": "echo", "x": i}))["x"] == i


async def test_partial_eager_write_is_not_resent_on_the_next_connection(
    nursery: trio.Nursery,
) -> None:
    """A frame cut short by a dying connection must not poison the next one with its tail."""
    from rkv.net.framing import FrameDecoder, FrameError

    first_conn_may_close = trio.Event()
    received: list[dict[str, Any]] = []
    errors: list[FrameError] = []
    conns = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal conns
        conns += 1
        if conns == 1:
            # read nothing, so the big eager write stops part way; then die
            await first_conn_may_close.wait()
            await trio.aclose_forcefully(stream)
            return
        dec = FrameDecoder(64 << 20)
        try:
            async for data in stream:
                received.extend(dec.feed(data))
        except FrameError as e:
            errors.append(e)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    tr = PeerTransport("a", {"b": ("127.0.0.1", port)}, backoff_min=0.01, backoff_max=0.05)
    await nursery.start(tr.run)
    with trio.fail_after(5):
        while not tr.statistics()["b"]["connected"]:
            await trio.sleep(0.01)
    big = b"x" * (8 << 20)
    tr.send("b", {"t": "raft", "n": 1, "big": big}, now=True)
    st = tr.statistics()["b"]
    assert st["queued"] == 1 and st["eager_writes"] == 0  # partly written, the tail queued
    first_conn_may_close.set()
    with trio.fail_after(10):
        while conns < 2 or not tr.statistics()["b"]["connected"]:
            await trio.sleep(0.01)
    tr.send("b", {"t": "raft", "n": 2})
    with trio.fail_after(10):
        while not received and not errors:
            await trio.sleep(0.01)
    assert not errors, f"the new connection got garbage: {errors}"
    assert [f["n"] for f in received] == [2]


class _PartialWriter:
    """Stands in for an idle link whose socket takes only part of a frame."""

    def __init__(self, take: int) -> None:
        self.take = take

    def try_send_now(self, data: bytes) -> int:
        return min(self.take, len(data))


def test_a_queued_frame_tail_is_dropped_when_its_connection_ends() -> None:
    from rkv.net.framing import FrameDecoder

    tr = PeerTransport("a", {"b": ("127.0.0.1", 9)})
    peer = tr._peers["b"]
    peer.eager = _PartialWriter(7)  # type: ignore[assignment]
    tr.send("b", {"t": "raft", "n": 1, "big": b"x" * 1000}, now=True)
    peer.eager = None
    tr.send("b", {"t": "raft", "n": 2})
    assert len(peer.queue) == 2  # the tail of frame 1, then frame 2
    peer.on_disconnect()
    # what the next connection would carry decodes cleanly: frame 2 only
    frames = FrameDecoder(1 << 20).feed(b"".join(peer.queue))
    assert [f["n"] for f in frames] == [2]
    assert tr.statistics()["b"]["dropped"] == 1
