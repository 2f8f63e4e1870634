"""One Ready, in order, and what the raft loop publishes after it (part of the raft loop's
room: only rkv.node.raft_loop calls it, from the loop's task).

The order of a Ready: send `messages` (written at once on idle peer links), answer the
committed puts (or, when no message carries entries, answer them first and then send),
persist in one store transaction (one fsync for the whole batch), send `persisted_messages`,
apply committed entries (one transaction, not itself fsynced), wake the waiting clients,
advance. Commit notices among the messages are held (rkv.node.outbox) until a later message
carries the commit index or the loop releases them after a tick. When a Ready
has both entries to persist and committed entries, both go into one transaction (one fsync).
Small transactions run on the loop itself, large ones (over `inline_io_bytes`) in a worker
thread (`store_io`).

Owns: the configuration in force as the loop last saw it, the apply backlog's pacing (when a
deferred apply is written), the held commit notices, and `view`, the read-only `RaftView` published after each Ready
and after each store step that moves `applied`. Must not: step inputs or tick (the loop
does), or send anything itself (`send` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio
import trio.testing

from rkv import stagetimes
from rkv.config import NodeConfig
from rkv.metrics import NodeMetrics
from rkv.node.common import data_bytes, store_io
from rkv.node.inbox import RaftView, Waiter, log
from rkv.node.outbox import CommitNotices
from rkv.raft.progress import REPLICATE
from rkv.raft.types import ConfState, Message, Ready, Role
from rkv.replica import Outcome, Replica


class ReadyHandler:
    def __init__(
        self,
        cfg: NodeConfig,
        replica: Replica[Waiter],
        metrics: NodeMetrics,
        *,
        send: Callable[[Sequence[Message]], None],
        on_conf_change: Callable[[ConfState, ConfState], None],
    ) -> None:
        self.cfg = cfg
        self.replica = replica
        self.metrics = metrics
        self._send_now = send
        self.notices = CommitNotices(self._match)
        """Commit notices to followers, held until superseded or the next tick."""
        self._on_conf_change = on_conf_change
        self._backlog_since: float | None = None
        """When the replica's apply backlog became non-empty (see flush_backlog)."""
        self._backlog_grew = 0.0
        """When the backlog last grew."""
        self._backlog_len = 0
        self._conf = replica.raw.conf_state()
        """The configuration in force (as of the applied index), refreshed after each Ready."""
        self._leader: tuple[str, str | None] = (replica.leader, replica.leader_address())
        """The leader's id and address as last published (the address is worked out once)."""
        self.view = self._publish()

    def _publish(self) -> RaftView:
        r = self.replica
        core = r.raw.raft  # what raw.status() reads, without building its progress list
        if r.leader != self._leader[0]:
            self._leader = (r.leader, r.leader_address())
        self.view = RaftView(
            role=r.role,
            leader=r.leader,
            leader_addr=self._leader[1],
            term=core.term,
            commit=core.log.committed,
            applied=r.applied,
            last_index=core.log.last_index(),
            recovering=core.recovery is not None,
            conf=self._conf,
        )
        return self.view

    def _match(self, peer: str) -> int | None:
        core = self.replica.raw.raft
        if core.role != Role.LEADER:
            return None
        pr = core.prs.get(peer)
        return pr.match if pr is not None and pr.state == REPLICATE else None

    def _send(self, messages: Sequence[Message]) -> None:
        self._send_now(self.notices.filter(messages))

    def release_notices(self) -> None:
        """Send the commit notices held since a tick (the raft loop calls this each turn), to
        the followers that still are (not to a member removed meanwhile, nor after losing the
        lead)."""
        held = self.notices.release()
        if held:
            core = self.replica.raw.raft
            if core.role == Role.LEADER:
                self._send_now([m for m in held if m.to in core.prs])

    async def handle(self) -> None:
        replica = self.replica
        clock = stagetimes.clock
        ready = replica.take_ready()
        self._publish()
        saves = replica.saves
        if clock is not None:
            clock.count("readies")
            clock.mark("ready_built")
        # Committed puts are answered before this turn writes anything: their answers need
        # neither the apply nor this Ready's own log write. New entries go to the followers
        # first (their flush runs beside the answers); with none, the answers go first (the
        # messages are then acks and commit notices, which no client waits on).
        answer_first = not ready.entries and not any(m.entries for m in ready.messages)
        if not answer_first:
            self._send(ready.messages)
            if clock is not None:
                clock.mark("sent")
        early = replica.answer_committed(ready)
        if early.completed:
            self._deliver(early)
            if clock is not None:
                clock.mark("answered_early")
        if answer_first:
            self._send(ready.messages)
            if clock is not None:
                clock.mark("sent")
        if early.completed and (ready.entries or ready.snapshot is not None):
            # Let the answers leave before this Ready's write blocks the loop (a Ready that
            # only moves the commit index writes nothing).
            with trio.move_on_after(self.cfg.gather_seconds):
                await trio.testing.wait_all_tasks_blocked()
        if clock is not None:
            clock.mark("persist_start")
        if replica.can_group_commit(ready):
            results = await self._persist_and_apply(ready)
            if clock is not None:
                self._mark_persisted(clock, saves)
            self._send(ready.persisted_messages)
        else:
            await self._persist(ready)
            if clock is not None:
                self._mark_persisted(clock, saves)
            self._publish()
            self._send(ready.persisted_messages)
            results = await self._apply(ready)
        if clock is not None and ready.persisted_messages:
            clock.mark("ack_sent" if clock.kind == "append" else "persisted_sent")
        out = replica.finish(ready, results)
        self._deliver(out)
        if ready.committed_entries or ready.snapshot is not None:
            self._check_conf()
        self._publish()
        self._note_backlog()
        if clock is not None:
            clock.mark("finished")
        if out.completed or out.reads:
            with trio.move_on_after(self.cfg.gather_seconds):
                # Let the answers leave before the next turn can block on the store.
                await trio.testing.wait_all_tasks_blocked()
            if clock is not None:
                clock.mark("answers_gathered")
        if out.role_changed or out.leader_changed:
            log.info(
                "%s: now %s, term %d, leader %s",
                self.cfg.id,
                replica.role.name.lower(),
                replica.raw.status().term,
                replica.leader or "-",
            )

    def _mark_persisted(self, clock: stagetimes.StageClock, saves: int) -> None:
        """Stage timing: whether the Ready's persist wrote (a durable commit) or had nothing
        to write (only the commit index moved)."""
        if self.replica.saves != saves:
            clock.count("fsyncs")
            clock.mark("fsynced")
        else:
            clock.mark("no_write")

    async def _persist(self, ready: Ready) -> None:
        if not ready.must_sync:
            return
        t0 = trio.current_time()
        # a snapshot install always goes to a worker thread
        size = data_bytes(ready.entries) if ready.snapshot is None else float("inf")
        await store_io(
            self.replica.persist,
            ready,
            size=size,
            inline_bytes=self.cfg.inline_io_bytes,
            what="persisting",
        )
        self.metrics.on_save(trio.current_time() - t0)

    async def _persist_and_apply(self, ready: Ready) -> Sequence[Any]:
        """Group commit: the Ready's entries and its committed entries in one transaction."""
        t0 = trio.current_time()
        self.metrics.on_apply(len(ready.committed_entries))
        results = await store_io(
            self.replica.persist_and_apply,
            ready,
            size=data_bytes(ready.entries) + data_bytes(ready.committed_entries),
            inline_bytes=self.cfg.inline_io_bytes,
            what="persisting",
        )
        self.metrics.on_save(trio.current_time() - t0)
        return results

    async def _apply(self, ready: Ready) -> Sequence[Any]:
        """Apply (or, see Replica's defer_apply, queue) the committed entries."""
        if ready.committed_entries:
            self.metrics.on_apply(len(ready.committed_entries))
        return await store_io(
            self.replica.apply,
            ready,
            size=data_bytes(ready.committed_entries) + self.replica.backlog_bytes,
            inline_bytes=self.cfg.inline_io_bytes,
            what="applying",
        )

    def _check_conf(self) -> None:
        conf = self.replica.raw.conf_state()
        if conf == self._conf:
            return
        old, self._conf = self._conf, conf
        log.info("%s: configuration %s (was %s)", self.cfg.id, conf.describe(), old.describe())
        self._on_conf_change(old, conf)

    def _deliver(self, out: Outcome[Waiter]) -> None:
        for w, entry, result in out.completed:
            w.entry = entry
            w.result = result
            w.finish()
        for w, err in out.failed:
            w.fail(err)
        for w, _index in out.reads:
            w.finish()

    # -- the apply backlog (Replica's defer_apply) --------------------------------------------

    def _note_backlog(self) -> None:
        n = self.replica.backlog
        if n == 0:
            self._backlog_since = None
        elif n > self._backlog_len:
            now = trio.current_time()
            self._backlog_grew = now
            if self._backlog_since is None:
                self._backlog_since = now
        self._backlog_len = n

    def backlog_due(self) -> float | None:
        """When the backlog is to be written (None: there is none): once writes stopped (no
        entry joined it for apply_delay_seconds and none is under way: a follower, or an idle
        leader, must not keep its store, which stale reads, snapshots and a restart's replay
        see, behind for long), or once its oldest entry waited apply_max_delay_seconds. Under
        load a batch fills up (and goes with a log write) or grows old: a pause between two
        rounds of requests does not cut it short."""
        if self._backlog_since is None:
            return None
        due = self._backlog_since + self.cfg.apply_max_delay_seconds
        if self.replica.uncommitted:
            return due
        return min(due, self._backlog_grew + self.cfg.apply_delay_seconds)

    async def flush_backlog(self, now: float) -> None:
        """Write the apply backlog when `backlog_due`. A large backlog (up to
        Replica.max_backlog_bytes) is written in a worker thread, like any large
        transaction."""
        due = self.backlog_due()
        if due is None or now < due:
            return
        out = await store_io(
            self.replica.apply_backlog,
            size=self.replica.backlog_bytes,
            inline_bytes=self.cfg.inline_io_bytes,
            what="applying",
        )
        self._deliver(out)
        self._publish()
        self._note_backlog()
