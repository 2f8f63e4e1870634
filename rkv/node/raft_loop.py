"""The raft loop: the only code that touches the RawNode (`replica.raw`), with rkv.node.ready,
the handling of one Ready, which it calls.

Owns: the Replica, the inbox (one bounded channel of inputs: peer messages, proposals, reads,
transfers, membership changes, snapshot installs), the turn, the ticks, and request deadlines
(the sweep). Other rooms read its `view` (a read-only `RaftView` published after each Ready)
and hand it inputs (`offer`, `put`, `submit`, `read_barrier`). Must not: frame or send anything
itself (`send` does), serve requests, or decide what a configuration change means for links
and membership (`on_conf_change` does).

Group commit: each turn first lets the other tasks run until they block (bounded by
`gather_seconds`), drains everything available, steps it, runs due ticks, then handles one
Ready (rkv.node.ready: send, persist in one transaction, send persisted messages, apply, wake
the waiting clients, advance). Whatever arrives meanwhile joins the next batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
import trio.testing

from rkv import stagetimes
from rkv.config import NodeConfig
from rkv.errors import BadRequest, ExitCode, RkvError, Timeout, Unavailable
from rkv.metrics import NodeMetrics
from rkv.node.common import Fatal, one_line
from rkv.node.inbox import (
    Input,
    InstallSnapshot,
    MemberChange,
    PeerMessages,
    Propose,
    RaftView,
    Read,
    Transfer,
    Waiter,
)
from rkv.node.ready import ReadyHandler
from rkv.raft.confchange import ConfChangeType
from rkv.raft.errors import ProposalDropped
from rkv.raft.types import ConfState, Message, ProgressStatus
from rkv.replica import CompactionPolicy, Replica
from rkv.store.errors import IntegrityError as StoreIntegrityError
from rkv.store.errors import StoreError, StoreFullError

PROMOTE_MAX_LAG = 1000
"""A learner is promoted only once it is at most this many entries behind the commit index
(promoting a far-behind node is safe, but the cluster would lose availability meanwhile)."""
_TICK_CATCH_UP = 50
"""Most ticks run in one turn after a stall: enough to let time pass, bounded so a long pause
(a suspended process) does not spin."""


class RaftLoop:
    def __init__(
        self,
        cfg: NodeConfig,
        replica: Replica[Waiter],
        metrics: NodeMetrics,
        *,
        send: Callable[[Sequence[Message]], None],
        on_conf_change: Callable[[ConfState, ConfState], None],
        after_turn: Callable[[], Awaitable[None]],
    ) -> None:
        self.cfg = cfg
        self.replica = replica
        self.metrics = metrics
        self._after_turn = after_turn
        self._in_send, self._in_recv = trio.open_memory_channel[Input](cfg.inbox_size)
        self.ready = ReadyHandler(cfg, replica, metrics, send=send, on_conf_change=on_conf_change)
        """The handling of one Ready (rkv.node.ready), which publishes the view."""
        self._installs_stepped: list[trio.Event] = []
        self.turns = 0
        self.max_batch_seen = 0
        self.running = False

    @property
    def view(self) -> RaftView:
        """The read-only view of the raft state, as of the last Ready."""
        return self.ready.view

    # -- what the other rooms use -------------------------------------------------------------

    def offer(self, item: Input) -> bool:
        """Queue `item` without waiting; False if the inbox is full."""
        try:
            self._in_send.send_nowait(item)
        except trio.WouldBlock:
            return False
        return True

    async def put(self, item: Input) -> None:
        """Queue `item`, waiting for room in the inbox."""
        await self._in_send.send(item)

    async def submit(self, item: Input, w: Waiter, what: str) -> None:
        """Hand `item` to the raft loop and wait for its waiter `w`; raises `w`'s error, which
        is Timeout ("`what` within N s") once request_timeout passed: the raft loop answers
        that (`_expired`, and its sweep every tick), so a request costs no cancel scope."""
        w.deadline = trio.current_time() + self.cfg.request_timeout
        w.what = what
        try:
            # The inbox nearly always has room: no checkpoint (a task switch) to queue it.
            self._in_send.send_nowait(item)
        except trio.WouldBlock:
            with trio.move_on_at(w.deadline):
                await self._in_send.send(item)
                w.what = ""
            if w.what:  # still not queued at the deadline
                raise self._timeout(w) from None
            w.what = what
        await w.event.wait()
        if w.error is not None:
            raise w.error

    async def read_barrier(self) -> None:
        """Wait until this node applied everything committed before the call (ReadIndex)."""
        w = Waiter()
        await self.submit(Read(w), w, "read index not reached")

    def progress(self) -> tuple[ProgressStatus, ...]:
        """A leader's live view of each member's replication (empty on a follower)."""
        return self.replica.raw.status().progress

    def conf_at(self, index: int) -> ConfState:
        return self.replica.raw.conf_at(index)

    def compaction_index(self, policy: CompactionPolicy) -> int | None:
        return self.replica.compaction_index(policy)

    def snapshots_installed(self) -> int:
        return self.replica.snapshots_installed

    def statistics(self) -> dict[str, Any]:
        r = self.replica
        return {
            "turns": self.turns,
            "readies": r.readies,
            "saves": r.saves,
            "applies": r.applies,
            "max_batch": self.max_batch_seen,
            "commit_notices_held": self.ready.notices.held_total,
            "commit_notices_dropped": self.ready.notices.dropped_total,
            "pending_proposals": r.pending_proposals,
            "pending_reads": r.pending_reads,
        }

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """The raft loop, fail-stop: once the store failed (a failed commit or fsync, a
        corrupt record) nothing it holds can be trusted to be durable, so the node stops with
        an exit code instead of going on (docs/faults.md)."""
        try:
            await self._raft_loop()
        except StoreFullError as e:
            raise Fatal(ExitCode.STORE_FULL, one_line(f"store full: {e}")) from e
        except StoreIntegrityError as e:
            # applying a write over a damaged record (its version, a session) cannot be done
            # the way the other replicas did it
            raise Fatal(ExitCode.INTEGRITY, one_line(f"store damaged, stopping: {e}")) from e
        except StoreError as e:
            raise Fatal(ExitCode.STORE_ERROR, one_line(f"store failed, stopping: {e}")) from e

    async def _raft_loop(self) -> None:
        tick = self.cfg.tick_seconds
        next_tick = trio.current_time() + tick
        next_sweep = next_tick
        batch: list[Input] = []
        self.running = True
        while True:
            if not batch and not self.replica.has_ready():
                wake = next_tick
                backlog_due = self.ready.backlog_due()
                if backlog_due is not None:
                    wake = min(wake, backlog_due)
                with trio.move_on_at(wake):
                    batch.append(await self._in_recv.receive())
            clock = stagetimes.clock
            if clock is not None:
                clock.count("turns")
                clock.mark("turn_start")
            if batch and self.cfg.gather_seconds > 0:
                # Group commit: the store runs on this task, so nothing else runs meanwhile.
                # Let every other task run until it blocks (connection readers and handlers
                # turn what has arrived into inputs, writers flush answers) so that this turn
                # takes them all into one Ready and one fsync. Bounded: a busy node still turns.
                with trio.move_on_after(self.cfg.gather_seconds):
                    await trio.testing.wait_all_tasks_blocked()
            # Bounded batches: at most max_batch inputs and about max_batch_bytes of proposed
            # data per turn (one Ready, one fsync); the rest waits for the next turn.
            size = sum(len(i.data) for i in batch if isinstance(i, Propose))
            while len(batch) < self.cfg.max_batch and size < self.cfg.max_batch_bytes:
                try:
                    item = self._in_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(item)
                if isinstance(item, Propose):
                    size += len(item.data)
            self.max_batch_seen = max(self.max_batch_seen, len(batch))
            self.metrics.proposals += sum(1 for i in batch if isinstance(i, Propose))
            if clock is not None:
                clock.mark("gathered")
            self._step_inputs(batch)
            batch = []
            now = trio.current_time()
            if now >= next_tick:
                due = min(_TICK_CATCH_UP, int((now - next_tick) / tick) + 1)
                for _ in range(due):
                    self.replica.tick()
                self.ready.notices.tick()
                next_tick = max(next_tick + due * tick, now - tick) if due else next_tick
                if next_tick <= now:
                    next_tick = now + tick
            if clock is not None:
                clock.mark("stepped")
            if self.replica.has_ready():
                await self.ready.handle()
            self.ready.release_notices()  # those a tick ago, unless this Ready carried them
            await self.ready.flush_backlog(now)
            await self._end_turn()
            if clock is not None:
                clock.mark("turn_end")
            self.turns += 1
            if now >= next_sweep:
                # Requests past their deadline get Timeout here, not from a cancel scope per
                # request in its handler (that costs more than the rest of a put's wait), and
                # are no longer tracked: e.g. a read whose forwarded request or answer was
                # lost while the leader stayed the same.
                self._sweep(now)
                next_sweep = now + tick

    def _step_inputs(self, batch: Sequence[Input]) -> None:
        now = trio.current_time()
        for item in batch:
            if isinstance(item, PeerMessages):
                for m in item.messages:
                    self.replica.step(m)
            elif isinstance(item, Propose):
                if self._expired(item.waiter, now):
                    continue
                try:
                    self.replica.propose(item.data, item.waiter, early=item.early)
                except RkvError as e:
                    item.waiter.fail(e)
                    continue
            elif isinstance(item, InstallSnapshot):
                self.replica.step(item.message)
                self._installs_stepped.append(item.done)
            elif isinstance(item, MemberChange):
                if self._expired(item.waiter, now):
                    continue
                try:
                    if item.change.type == ConfChangeType.PROMOTE:
                        self._check_caught_up(item.change.node)
                    self.replica.propose_conf_change(item.change, item.waiter)
                except RkvError as e:
                    item.waiter.fail(e)
            elif isinstance(item, Transfer):
                try:
                    self.replica.raw.transfer_leader(item.to)
                except ProposalDropped:
                    item.waiter.fail(Unavailable("no longer the leader; retry"))
                except ValueError as e:
                    item.waiter.fail(BadRequest(one_line(str(e))))
                else:
                    item.waiter.finish()
            else:
                if self._expired(item.waiter, now):
                    continue
                try:
                    self.replica.read(item.waiter)
                except RkvError as e:
                    item.waiter.fail(e)

    def _check_caught_up(self, node: str) -> None:
        st = self.replica.raw.status()
        pr = next((p for p in st.progress if p.id == node), None)
        if pr is None:
            return  # not a member, or not the leader: proposing says which
        if pr.state != "REPLICATE" or st.commit - pr.match > PROMOTE_MAX_LAG:
            raise Unavailable(
                f"learner {node} is catching up (has {pr.match} of {st.commit}); retry"
            )

    async def _end_turn(self) -> None:
        """Between Readies: release installs stepped this turn, then the housekeeping."""
        if self._installs_stepped:
            for ev in self._installs_stepped:
                ev.set()
            self._installs_stepped.clear()
        await self._after_turn()

    def _sweep(self, now: float) -> None:
        for w in self.replica.forget(lambda w: w.deadline <= now):
            w.fail(self._timeout(w))

    def _timeout(self, w: Waiter) -> Timeout:
        return Timeout(f"{w.what} within {self.cfg.request_timeout} s")

    def _expired(self, w: Waiter, now: float) -> bool:
        """Fail `w` with Timeout if its deadline passed (it waited that long in the inbox)."""
        if now < w.deadline:
            return False
        w.fail(self._timeout(w))
        return True
