"""Operations on a running node (docs/operations.md): leadership transfer and the shutdown
hand-over, membership changes, repair and leaving the cluster, backups, the fault hooks.

Owns: whether this node was removed (`removed`) or stops for repair (`repair`), and the stop
that follows either. Must not: touch the RawNode (it reads the raft loop's `view`, and hands
transfers and configuration changes to the loop), or serve KV requests (rkv.node.handlers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from rkv.backup import BackupSource
from rkv.config import NodeConfig, format_address, parse_address
from rkv.errors import BadRequest, ExitCode, RkvError, Timeout, Unavailable
from rkv.node.common import Fatal, one_line
from rkv.node.handlers import Handler, leader_check
from rkv.node.inbox import Frame, MemberChange, Transfer, Waiter, log
from rkv.node.peers import PeerLinks
from rkv.node.raft_loop import RaftLoop
from rkv.protocol import (
    BackupBeginRequest,
    BackupEndRequest,
    BackupReadRequest,
    DataReply,
    FaultRequest,
    MemberRequest,
    MembersRequest,
    RepairRequest,
    StatusRequest,
    TransferRequest,
)
from rkv.raft.confchange import ConfChange, ConfChangeType
from rkv.raft.types import ConfState, Role
from rkv.repair import damaged_path

REMOVED_EXIT_DELAY = 2.0
"""A node that applied its own removal stops after this long: time for the answer to the
`member remove` request, and for a removed leader's hand-over, to leave."""
REPAIR_EXIT_DELAY = 0.2
"""Seconds between answering `repair` and stopping (the answer leaves first)."""

RECOVERING_CHECK_SECONDS = 1.0
"""How long a voter's removal waits for each other member's status (is it recovering?)."""

_MEMBER_OPS = {
    "add": ConfChangeType.ADD_LEARNER,
    "promote": ConfChangeType.PROMOTE,
    "remove": ConfChangeType.REMOVE,
}


class Admin:
    def __init__(
        self,
        cfg: NodeConfig,
        raft: RaftLoop,
        peers: PeerLinks,
        backups: BackupSource,
        *,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> None:
        self.cfg = cfg
        self.raft = raft
        self.peers = peers
        self.backups = backups
        self._spawn = spawn
        """Starts a task in the node's nursery (once it runs)."""
        self.removed = False
        self.repair: tuple[Path, ConfState] | None = None
        """(where the damaged data dir goes, the configuration then) once repair was asked."""

    def routes(self) -> dict[str, Handler]:
        return {
            "fault": self.fault,
            "transfer": self.transfer,
            "members": self.members_request,
            "member": self.member,
            "backup_begin": self.backup_begin,
            "backup_read": self.backup_read,
            "backup_end": self.backup_end,
            "repair": self.repair_request,
        }

    # -- leadership transfer ------------------------------------------------------------------

    def transfer_target(self) -> str | None:
        """The most caught-up follower (highest match index; ties: lowest id), or None.
        Followers whose link is down count only when no connected one exists (a node that
        is already stopped would make a shutdown wait out the whole hand-over bound)."""
        links = self.peers.transport.statistics()
        voters = self.raft.view.conf.voters
        best: tuple[bool, int, str] | None = None
        for p in self.raft.progress():
            if p.id == self.cfg.id or p.id not in voters:
                continue
            up = bool(links.get(p.id, {}).get("connected"))
            if best is None or (up, p.match) > best[:2]:
                best = (up, p.match, p.id)
        return None if best is None else best[2]

    async def transfer_leadership(self, to: str | None, timeout: float | None = None) -> str:
        """Hand leadership to `to` (None: the most caught-up follower); returns the new
        leader's id once this node has heard from it. Raises NotLeader / Unavailable, or
        Timeout after `timeout` (default: two election timeouts, after which the core has
        given the transfer up anyway)."""
        leader_check(self.raft.view, self.cfg.id)
        if to is None:
            to = self.transfer_target()
            if to is None:
                raise BadRequest("no other voter to transfer leadership to")
        if to == self.cfg.id:
            return to
        if to not in self.raft.view.conf.voters:
            raise BadRequest(f"{one_line(to)[:100]!r} is not a voter of this cluster")
        limit = (
            timeout if timeout is not None else 2 * self.cfg.election_ticks * self.cfg.tick_seconds
        )
        w = Waiter()
        with trio.move_on_after(limit):
            await self.raft.put(Transfer(to, w))
            await w.event.wait()
            if w.error is not None:
                raise w.error
            # The old leader learns the outcome from the new leader's first append.
            while self.raft.view.leader != to:
                leader = self.raft.view.leader
                if leader and leader != self.cfg.id:
                    raise Unavailable(f"transfer to {to} failed: {leader} became leader")
                await trio.sleep(self.cfg.tick_seconds / 2)
            return to
        raise Timeout(f"leadership transfer to {to} did not complete within {limit:.2f} s")

    async def transfer(self, r: TransferRequest) -> Frame:
        leader = await self.transfer_leadership(r.to)
        return {"t": "ok", "leader": leader, "leader_addr": self.cfg.peer_address(leader)}

    async def hand_over(self, timeout: float = 1.5) -> str | None:
        """On shutdown: if leader, pass leadership to the most caught-up follower so the
        cluster does not wait an election timeout. Bounded; returns the new leader or None."""
        if self.raft.view.role != Role.LEADER or len(self.raft.view.conf.voters) < 2:
            return None
        try:
            new = await self.transfer_leadership(None, timeout=timeout)
        except RkvError as e:
            log.warning("%s: leadership hand-over failed: %s", self.cfg.id, e.msg)
            return None
        log.info("%s: handed leadership to %s", self.cfg.id, new)
        return new

    # -- membership ---------------------------------------------------------------------------

    def members(self) -> dict[str, Any]:
        v = self.raft.view
        return {
            "cluster": self.cfg.cluster_id,
            "voters": list(v.conf.voters),
            "learners": list(v.conf.learners),
            "leader": v.leader or None,
            "leader_addr": v.leader_addr,
            "commit": v.commit,
            "progress": [
                {"node": p.id, "match": p.match, "state": p.state.lower()}
                for p in self.raft.progress()
            ],
        }

    async def members_request(self, r: MembersRequest) -> Frame:
        leader_check(self.raft.view, self.cfg.id)  # the leader's view is the newest
        return {"t": "ok", **self.members()}

    async def member(self, r: MemberRequest) -> Frame:
        op, node = r.op, r.node
        if op == "add":
            try:
                node = format_address(*parse_address(node))
            except ValueError as e:
                raise BadRequest(f"node: {one_line(str(e))}") from None
        leader_check(self.raft.view, self.cfg.id)
        if op == "remove" and node in self.raft.view.conf.voters:
            await self._refuse_while_recovering(node)
        w = Waiter()
        await self.raft.submit(
            MemberChange(ConfChange(_MEMBER_OPS[op], node), w), w, "membership change not applied"
        )
        return {"t": "ok", "node": node, **self.members()}

    async def _refuse_while_recovering(self, removed: str) -> None:
        """Refuse to remove voter `removed` while another member says it recovers from a
        replaced disk: it counts on answers from the voters it knows (rkv.raft.recovery), and
        a removed voter that stops would leave it waiting forever (docs/operations.md,
        "Replaced disks"). Members that cannot be reached now are not counted: removing a
        dead voter is what `member remove` is for."""
        others = [m for m in self.raft.view.conf.members() if m not in (removed, self.cfg.id)]
        timeout = min(self.cfg.request_timeout, RECOVERING_CHECK_SECONDS)
        recovering: list[str] = []

        async def ask(member: str) -> None:
            try:
                st = await self.peers.call_peer(member, StatusRequest().to_frame(), timeout)
            except RkvError:
                return
            if st.get("recovering") is True:
                recovering.append(member)

        async with trio.open_nursery() as nursery:
            for m in others:
                nursery.start_soon(ask, m)
        if recovering:
            who = ", ".join(sorted(recovering))
            raise BadRequest(
                f"{who} is recovering from a replaced disk and may count on {removed}'s answer: "
                f"remove {removed} once `rkv status` shows {who} caught up (or remove {who} first)"
            )

    def leave(self, why: str) -> None:
        """Removed from the cluster: stop (exit code REMOVED) after a short grace period."""
        if self.removed:
            return
        self.removed = True
        log.warning("%s: removed from the cluster (%s); stopping", self.cfg.id, why)
        self._spawn(self._stop_removed)

    async def _stop_removed(self) -> None:
        await trio.sleep(REMOVED_EXIT_DELAY)
        raise Fatal(ExitCode.REMOVED, f"{self.cfg.id} was removed from the cluster")

    # -- repair -------------------------------------------------------------------------------

    async def repair_request(self, r: RepairRequest) -> Frame:
        """Stop, and rebuild this node's stored state from the cluster (rkv.repair): the data
        dir is moved aside once the store is closed (run_node), and a new store of this member
        recovers from the leader when the node is started again."""
        if self.raft.view.role == Role.LEADER:
            raise BadRequest("this node leads: hand leadership over first (rkv leader transfer)")
        if not [v for v in self.raft.view.conf.voters if v != self.cfg.id]:
            raise BadRequest("no other voter to rebuild this node from")
        aside = self._begin_repair("repair asked")
        return {"t": "ok", "node": self.cfg.id, "moved_to": str(aside)}

    def _begin_repair(self, why: str) -> Path:
        if self.repair is None:
            self.repair = (damaged_path(self.cfg.data_dir), self.raft.view.conf)
            log.warning(
                "%s: %s: stopping; the data dir goes to %s", self.cfg.id, why, self.repair[0]
            )
            self._spawn(self._stop_for_repair)
        return self.repair[0]

    def damaged(self, reason: str) -> None:
        """This node's own stored data is damaged (rkv.integrity): with auto_repair, a
        follower with other voters to rebuild from repairs itself at once."""
        if not self.cfg.auto_repair or self.raft.view.role == Role.LEADER:
            return
        if [v for v in self.raft.view.conf.voters if v != self.cfg.id]:
            self._begin_repair(f"auto repair ({reason})")

    async def _stop_for_repair(self) -> None:
        await trio.sleep(REPAIR_EXIT_DELAY)  # the answer leaves first
        raise Fatal(ExitCode.REPAIR, f"{self.cfg.id} stopped for repair")

    # -- backups ------------------------------------------------------------------------------

    async def backup_begin(self, r: BackupBeginRequest) -> Frame:
        # A read barrier first: every write acknowledged before this request is applied
        # here, so the copy holds it.
        await self.raft.read_barrier()
        token, manifest = await self.backups.begin()
        return {"t": "ok", "b": token, "manifest": manifest}

    async def backup_read(self, r: BackupReadRequest) -> Frame:
        return DataReply(await self.backups.read(r.token, r.off, r.length)).to_frame()

    async def backup_end(self, r: BackupEndRequest) -> Frame:
        return {"t": "ok", "ended": self.backups.end(r.token)}

    # -- fault hooks --------------------------------------------------------------------------

    async def fault(self, r: FaultRequest) -> Frame:
        """Partition hooks for the nemesis: drop Raft messages to / from the given peers.

        Each call replaces both sets (empty lists heal). Refused unless the node was started
        with fault injection enabled (RKV_FAULT_INJECTION=1).
        """
        if not self.cfg.fault_injection:
            raise BadRequest("fault injection is disabled on this node")
        peers = self.peers
        drop_to = self._peer_set(r.drop_to, "drop_to")  # both checked before either applies
        drop_from = self._peer_set(r.drop_from, "drop_from")
        peers.drop_to, peers.drop_from = drop_to, drop_from
        log.warning(
            "%s: fault injection: dropping raft messages to [%s], from [%s]",
            self.cfg.id,
            ",".join(sorted(peers.drop_to)),
            ",".join(sorted(peers.drop_from)),
        )
        return {"t": "ok", "drop_to": sorted(peers.drop_to), "drop_from": sorted(peers.drop_from)}

    def _peer_set(self, v: tuple[str, ...], name: str) -> frozenset[str]:
        members = self.raft.view.conf.members()
        unknown = [p for p in v if p not in members or p == self.cfg.id]
        if unknown:
            raise BadRequest(f"{name}: not peers of this node: {one_line(','.join(unknown))[:200]}")
        return frozenset(v)
