"""The watch hub (rkv.node.watch) with fakes: what a poll answers for a given window, that
feeding never waits on a watcher, that nothing is lost or repeated when a slow watcher reads
back through the window, Compacted below it, whole revisions, the prefix filter, progress
after a ReadIndex, no_leader, and the watch limits."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import trio
import trio.testing

from rkv.errors import Compacted, NoLeader, TooManyWatchers
from rkv.node.watch import WatchHub
from rkv.protocol import WatchRequest
from rkv.store.commands import Change


def put(rev: int, key: bytes, value: bytes = b"v", prev: bytes | None = None) -> Change:
    return Change(rev, "put", key, value, prev)


async def no_barrier() -> None:
    pass


def keys(reply: object) -> list[tuple[int, bytes]]:
    return [(e.rev, e.key) for e in reply.events]  # type: ignore[attr-defined]


@dataclass
class Case:
    name: str
    req: WatchRequest
    want: list[tuple[int, bytes]]
    want_rev: int


WINDOW = [
    put(11, b"a/1"),
    put(11, b"b/1"),
    put(12, b"a/2"),
    Change(13, "delete", b"a/1", None, b"v"),
    put(14, b"a/3"),
    put(14, b"a/4"),
    put(14, b"a/5"),
    Change(15, "file_commit", b"a/f"),
]

CASES = [
    Case("everything after 10", WatchRequest(after=10), [(11, b"a/1"), (11, b"b/1"),
         (12, b"a/2"), (13, b"a/1"), (14, b"a/3"), (14, b"a/4"), (14, b"a/5"),
         (15, b"a/f")], 15),
    Case("prefix filter", WatchRequest(prefix=b"b/", after=10), [(11, b"b/1")], 15),
    Case("one key", WatchRequest(prefix=b"a/1", after=10, exact=True),
         [(11, b"a/1"), (13, b"a/1")], 15),
    Case("one key is not a prefix", WatchRequest(prefix=b"a/", after=10, exact=True), [], 15),
    Case("from the middle", WatchRequest(prefix=b"a/", after=13),
         [(14, b"a/3"), (14, b"a/4"), (14, b"a/5"), (15, b"a/f")], 15),
    # limit 2 reached inside revision 14: the revision is finished, never split
    Case("limit keeps a revision whole", WatchRequest(prefix=b"a/", after=13, limit=2),
         [(14, b"a/3"), (14, b"a/4"), (14, b"a/5")], 14),
    Case("limit at a revision boundary", WatchRequest(after=10, limit=2),
         [(11, b"a/1"), (11, b"b/1")], 11),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_poll_answers(case: Case) -> None:
    hub = WatchHub(10)
    hub.feed(WINDOW, 15, "n1", 0.0)
    reply = await hub.poll(case.req, 1, barrier=no_barrier, applied=lambda: 15)
    assert keys(reply) == case.want
    assert reply.rev == case.want_rev


async def test_prev_values_only_when_asked() -> None:
    hub = WatchHub(10)
    hub.feed([put(11, b"k", b"new", b"old")], 11, "n1", 0.0)
    plain = await hub.poll(WatchRequest(after=10), 1, barrier=no_barrier, applied=lambda: 11)
    with_prev = await hub.poll(
        WatchRequest(after=10, prev=True), 1, barrier=no_barrier, applied=lambda: 11
    )
    assert (plain.events[0].prev_known, plain.events[0].prev) == (False, None)
    assert (with_prev.events[0].prev_known, with_prev.events[0].prev) == (True, b"old")
    assert "prev" not in plain.events[0].to_wire()
    assert with_prev.events[0].to_wire()["prev"] == b"old"


async def test_feeding_never_waits_on_a_watcher_and_a_slow_one_loses_nothing() -> None:
    """Many revisions are fed while a watcher does not poll (a slow reader): every feed
    returns at once (it is synchronous: nothing to wait on), and the watcher then reads all
    of them back in order, each once, over several bounded polls."""
    hub = WatchHub(0, history=10_000)
    for rev in range(1, 2001):
        hub.feed([put(rev, b"k%d" % rev)], rev, "n1", 0.0)  # no await: cannot block
    seen: list[int] = []
    after = 0
    while after < 2000:
        reply = await hub.poll(
            WatchRequest(after=after, limit=300), 1, barrier=no_barrier, applied=lambda: 2000
        )
        seen += [e.rev for e in reply.events]
        after = reply.rev
    assert seen == list(range(1, 2001))


async def test_a_watcher_behind_the_window_gets_compacted() -> None:
    hub = WatchHub(0, history=100)
    for rev in range(1, 1001):
        hub.feed([put(rev, b"k")], rev, "n1", 0.0)
    assert hub.first > 1
    with pytest.raises(Compacted) as e:
        await hub.poll(WatchRequest(after=0), 1, barrier=no_barrier, applied=lambda: 1000)
    assert e.value.first_revision == hub.first
    # from the first revision held: everything, nothing missing
    reply = await hub.poll(
        WatchRequest(after=hub.first - 1, limit=10_000), 1, barrier=no_barrier, applied=lambda: 1
    )
    assert [ev.rev for ev in reply.events] == list(range(hub.first, 1001))


async def test_the_window_is_bounded_in_bytes_too() -> None:
    hub = WatchHub(0, history=1_000_000, history_bytes=100_000)
    for rev in range(1, 201):
        hub.feed([put(rev, b"k", b"x" * 10_000, b"y" * 10_000)], rev, "n1", 0.0)
    held = hub.statistics()["watch_held_bytes"]
    assert 0 < held <= 100_000 + 20_200
    assert hub.first > 190  # only the last few revisions fit
    reply = await hub.poll(
        WatchRequest(after=hub.first - 1), 1, barrier=no_barrier, applied=lambda: 200
    )
    assert [e.rev for e in reply.events] == list(range(hub.first, 201))


async def test_a_snapshot_install_compacts_what_came_before() -> None:
    hub = WatchHub(5)
    hub.feed([put(6, b"k"), Change(50, "reset", b""), put(51, b"k")], 51, "n1", 0.0)
    with pytest.raises(Compacted) as e:
        await hub.poll(WatchRequest(after=6), 1, barrier=no_barrier, applied=lambda: 51)
    assert e.value.first_revision == 51
    reply = await hub.poll(WatchRequest(after=50), 1, barrier=no_barrier, applied=lambda: 51)
    assert keys(reply) == [(51, b"k")]


async def test_a_waiting_poll_wakes_on_the_feed() -> None:
    hub = WatchHub(3)
    got: list[object] = []

    async def watcher() -> None:
        got.append(
            await hub.poll(WatchRequest(wait_ms=60_000), 1, barrier=no_barrier, applied=lambda: 4)
        )

    async with trio.open_nursery() as n:
        n.start_soon(watcher)
        await trio.testing.wait_all_tasks_blocked()
        assert not got
        hub.feed([put(4, b"x")], 4, "n1", 0.0)
    assert keys(got[0]) == [(4, b"x")]


async def test_progress_waits_for_the_read_index_and_never_overtakes_an_event() -> None:
    """No change for the poll's wait: the ReadIndex says 7 is current; the poll answers only
    once the window reached 7, and with the event of revision 7 in the same reply."""
    hub = WatchHub(5)
    read_index = 7
    fed = trio.Event()

    async def barrier() -> None:
        pass

    async def feeder() -> None:
        await trio.sleep(0.5)
        hub.feed([put(7, b"late")], 7, "n1", trio.current_time())
        fed.set()

    async with trio.open_nursery() as n:
        n.start_soon(feeder)
        reply = await hub.poll(
            WatchRequest(wait_ms=100), 1, barrier=barrier, applied=lambda: read_index
        )
    assert fed.is_set()
    assert keys(reply) == [(7, b"late")]
    assert (reply.rev, reply.progress) == (7, True)


async def test_an_idle_watch_gets_a_progress_reply() -> None:
    hub = WatchHub(9)
    reply = await hub.poll(WatchRequest(wait_ms=50), 1, barrier=no_barrier, applied=lambda: 9)
    assert (reply.events, reply.rev, reply.progress) == ((), 9, True)


async def test_no_leader_within_an_election_timeout() -> None:
    hub = WatchHub(1, election_timeout=0.3)
    hub.feed([], 1, "", trio.current_time())  # the leader is gone from now on
    t0 = trio.current_time()
    with pytest.raises(NoLeader):
        await hub.poll(WatchRequest(wait_ms=60_000), 1, barrier=no_barrier, applied=lambda: 1)
    assert trio.current_time() - t0 <= 0.3 + 0.3 / 2 + 0.1


async def test_limits_per_connection_and_per_node() -> None:
    hub = WatchHub(1, max_watchers=3, max_per_conn=2)

    async def hold(conn: int) -> None:
        await hub.poll(WatchRequest(wait_ms=60_000), conn, barrier=no_barrier, applied=lambda: 1)

    async with trio.open_nursery() as n:
        n.start_soon(hold, 1)
        n.start_soon(hold, 1)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(TooManyWatchers, match="connection"):
            await hub.poll(WatchRequest(), 1, barrier=no_barrier, applied=lambda: 1)
        n.start_soon(hold, 2)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(TooManyWatchers, match="node"):
            await hub.poll(WatchRequest(), 3, barrier=no_barrier, applied=lambda: 1)
        assert hub.watching == 3
        n.cancel_scope.cancel()
    assert hub.watching == 0  # a cancelled poll (its connection closed) gives its slot back


async def test_counters_of_events_compacted_and_no_leader() -> None:
    """What /metrics shows of the hub (rkv.metrics): events sent (each watch counted), polls
    answered Compacted and NoLeader, the window's size and first revision."""
    hub = WatchHub(10, history=100, election_timeout=0.1)
    hub.feed(WINDOW, 15, "n1", 0.0)
    for req in (WatchRequest(after=10), WatchRequest(prefix=b"a/", after=13)):
        await hub.poll(req, 1, barrier=no_barrier, applied=lambda: 15)
    with pytest.raises(Compacted):
        await hub.poll(WatchRequest(after=1), 1, barrier=no_barrier, applied=lambda: 15)
    hub.feed([], 15, "", trio.current_time())
    with pytest.raises(NoLeader):
        await hub.poll(WatchRequest(wait_ms=60_000), 1, barrier=no_barrier, applied=lambda: 15)
    st = hub.statistics()
    assert st["watch_events_delivered"] == 8 + 4
    assert (st["watch_compacted"], st["watch_no_leader"], st["watch_polls"]) == (1, 1, 4)
    assert (st["watch_held_changes"], st["watch_first_revision"], st["watch_active"]) == (8, 11, 0)
    size = sum(len(c.key) + len(c.value or b"") + len(c.prev or b"") + 100 for c in WINDOW)
    assert st["watch_held_bytes"] == size
