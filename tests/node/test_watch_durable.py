"""The watch hub over a durable history (rkv.node.watch.HistoryReader), with a fake reader: a
poll from below the in-memory window (a restarted node's window starts empty) is served from
the durable history, a reply's worth at a time, nothing lost or repeated where it meets the
window; Compacted below the durable history's first revision; stretches without an event for
the watch are read through within one poll."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rkv.errors import Compacted
from rkv.node.watch import WatchHub
from rkv.protocol import WatchRequest
from rkv.store.commands import Change
from rkv.store.history import HistoryRead, held_size


def put(rev: int, key: bytes, value: bytes = b"v", prev: bytes | None = None) -> Change:
    return Change(rev, "put", key, value, prev)


async def no_barrier() -> None:
    pass


class FakeHistory:
    """What rkv.store.history.read answers, over a list: whole revisions, stopping after the
    revision that takes the read past max_bytes."""

    def __init__(self, first: int, changes: list[Change]) -> None:
        self.first = first
        self.changes = list(changes)
        self.reads: list[tuple[int, int]] = []
        self.through = 0
        """What the last read was complete through."""

    def history_first(self) -> int:
        return self.first

    def read_history(self, after: int, top: int, max_bytes: int) -> HistoryRead:
        got = self._read(after, top, max_bytes)
        self.reads.append((after, top))
        self.through = got.through
        return got

    def _read(self, after: int, top: int, max_bytes: int) -> HistoryRead:
        if after + 1 < self.first:
            return HistoryRead(self.first, (), after)
        out: list[Change] = []
        size = 0
        for c in self.changes:
            if c.revision <= after or c.revision > top:
                continue
            if size >= max_bytes and c.revision != out[-1].revision:
                return HistoryRead(self.first, tuple(out), out[-1].revision)
            out.append(c)
            size += held_size(c)
        return HistoryRead(self.first, tuple(out), top)


def restarted(history: FakeHistory, applied: int, reply_bytes: int = 4 << 20) -> WatchHub:
    """A hub as a node builds it at start: an empty window after `applied`."""
    hub = WatchHub(applied, durable=history, reply_bytes=reply_bytes)
    hub.feed([], applied, "n1", 0.0)
    return hub


async def drain(hub: WatchHub, after: int, upto: int, **kw: object) -> list[tuple[int, bytes]]:
    seen: list[tuple[int, bytes]] = []
    while after < upto:
        req = WatchRequest(after=after, wait_ms=0, **kw)  # type: ignore[arg-type]
        reply = await hub.poll(req, 1, barrier=no_barrier, applied=lambda: upto)
        seen += [(e.rev, e.key) for e in reply.events]
        assert reply.rev > after or not reply.events
        after = reply.rev
    return seen


async def test_a_poll_below_the_window_is_served_from_the_durable_history() -> None:
    old = [put(r, b"k/%d" % r) for r in range(41, 101)] + [put(100, b"k/x")]
    history = FakeHistory(41, old)
    hub = restarted(history, 100, reply_bytes=1024)  # a few revisions per reply
    assert hub.first == 41
    new = [put(r, b"k/%d" % r) for r in range(101, 111)]
    hub.feed(new, 110, "n1", 0.0)
    history.changes += new  # the store writes both
    seen = await drain(hub, 50, 110)
    want = [(c.revision, c.key) for c in old + new if c.revision > 50]
    assert seen == want  # in order, each once, across the join with the window
    assert len(history.reads) > 3  # bounded reads, not one big one
    assert hub.statistics()["watch_history_reads"] == len(history.reads)


async def test_prev_values_come_from_the_durable_history() -> None:
    history = FakeHistory(
        1, [put(5, b"k", b"new", b"old"), Change(6, "delete", b"k", None, b"new")]
    )
    hub = restarted(history, 6)
    reply = await hub.poll(
        WatchRequest(after=4, prev=True), 1, barrier=no_barrier, applied=lambda: 6
    )
    got = [(e.rev, e.type, e.value, e.prev, e.prev_known) for e in reply.events]
    assert got == [(5, "put", b"new", b"old", True), (6, "delete", None, b"new", True)]
    assert reply.rev == 6


@pytest.mark.parametrize("after", [0, 39])
async def test_below_the_durable_history_is_compacted(after: int) -> None:
    hub = restarted(FakeHistory(41, [put(r, b"k") for r in range(41, 101)]), 100)
    with pytest.raises(Compacted) as e:
        await hub.poll(WatchRequest(after=after), 1, barrier=no_barrier, applied=lambda: 100)
    assert e.value.first_revision == 41
    assert hub.statistics()["watch_compacted"] == 1
    reply = await hub.poll(WatchRequest(after=40), 1, barrier=no_barrier, applied=lambda: 100)
    assert reply.events[0].rev == 41


async def test_a_durable_history_trimmed_past_the_window_answers_the_window_first() -> None:
    """The durable history may drop revisions the window still holds (it also holds what
    came before the restart): the first revision offered is the lower of the two."""
    history = FakeHistory(1, [])
    hub = WatchHub(10, durable=history)
    hub.feed([put(r, b"k") for r in range(11, 21)], 20, "n1", 0.0)
    history.first = 15
    assert hub.first == 11
    reply = await hub.poll(WatchRequest(after=10), 1, barrier=no_barrier, applied=lambda: 20)
    assert [e.rev for e in reply.events] == list(range(11, 21))
    assert history.reads == []  # the window had it
    with pytest.raises(Compacted) as e:
        await hub.poll(WatchRequest(after=5), 1, barrier=no_barrier, applied=lambda: 20)
    assert e.value.first_revision == 11


async def test_stretches_without_events_for_the_watch_are_read_through() -> None:
    other = [put(r, b"other/%d" % r, b"x" * 200) for r in range(1, 200)]
    history = FakeHistory(1, [*other, put(200, b"mine")])
    hub = restarted(history, 200, reply_bytes=1024)
    reply = await hub.poll(
        WatchRequest(prefix=b"mine", after=0, wait_ms=0), 1, barrier=no_barrier,
        applied=lambda: 200,
    )  # fmt: skip
    assert [(e.rev, e.key) for e in reply.events] == [(200, b"mine")]
    assert len(history.reads) > 10  # one poll, many bounded reads


async def test_a_snapshot_install_compacts_the_durable_history_too() -> None:
    history = FakeHistory(1, [put(r, b"k") for r in range(1, 11)])
    hub = restarted(history, 10)
    history.first, history.changes = 51, []  # the store's install reset it
    hub.feed([Change(50, "reset", b"")], 50, "n1", 0.0)
    assert hub.first == 51
    with pytest.raises(Compacted) as e:
        await hub.poll(WatchRequest(after=5), 1, barrier=no_barrier, applied=lambda: 50)
    assert e.value.first_revision == 51


async def test_a_waiting_poll_does_not_read_the_durable_history_again_on_each_feed() -> None:
    other = [put(r, b"other/%d" % r, b"x" * 200) for r in range(1, 201)]
    history = FakeHistory(1, other)
    hub = restarted(history, 200, reply_bytes=1024)
    got = []

    async def poll() -> None:
        req = WatchRequest(prefix=b"mine", after=0, wait_ms=10_000)
        got.append(await hub.poll(req, 1, barrier=no_barrier, applied=lambda: hub.rev))

    async with trio.open_nursery() as n:
        n.start_soon(poll)
        while history.through < 200:  # the reads run in worker threads
            await trio.sleep(0.01)
        await trio.sleep(0.1)  # the poll now waits for a feed
        first_pass = len(history.reads)
        assert first_pass > 10
        for r in range(201, 221):  # each feed wakes the poll
            hub.feed([put(r, b"other/%d" % r)], r, "n1", 0.0)
            await trio.testing.wait_all_tasks_blocked()
        hub.feed([put(221, b"mine")], 221, "n1", 0.0)
    assert [(e.rev, e.key) for e in got[0].events] == [(221, b"mine")]
    assert len(history.reads) == first_pass  # the window answered the rest


@pytest.mark.parametrize(
    ("store_kind", "configured", "window", "durable_bound"),
    [
        # the LMDB store keeps the history durably: the memory window is capped, the store
        # keeps the configured bound
        ("lmdb", (100_000, 64 << 20), (10_000, 8 << 20), (100_000, 64 << 20)),
        ("lmdb", (500, 1 << 20), (500, 1 << 20), (500, 1 << 20)),
        # the in-memory store has no durable history: the window is all there is
        ("memory", (100_000, 64 << 20), (100_000, 64 << 20), None),
    ],
)
def test_the_memory_window_is_a_cache_only_over_a_durable_history(
    tmp_path: object,
    store_kind: str,
    configured: tuple[int, int],
    window: tuple[int, int],
    durable_bound: tuple[int, int] | None,
) -> None:
    from pathlib import Path

    from rkv.config import NodeConfig
    from rkv.node import Node
    from rkv.node.entry import _open
    from rkv.store.memory import MemoryStore

    me, other = "127.0.0.1:7001", "127.0.0.1:7002"
    cfg = NodeConfig.create(
        me,
        [me, other],
        data_dir=Path(str(tmp_path)),
        watch_history=configured[0],
        watch_history_bytes=configured[1],
    )
    store = _open(cfg) if store_kind == "lmdb" else MemoryStore(cfg.cluster_id, me, (me, other))
    try:
        node = Node(cfg, store)
        assert (node.watch.history, node.watch.history_bytes) == window
        bounds = getattr(store, "history_bounds", None)
        if durable_bound is None:
            assert not hasattr(store, "read_history")
        else:
            assert bounds is not None and (bounds.changes, bounds.bytes) == durable_bound
    finally:
        store.close()
