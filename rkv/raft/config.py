"""Configuration of one Raft core instance.

Owns: the frozen, validated tunables of the pure core (ids, voters, tick counts, flow-control
caps). Must not: know about addresses, files or wall-clock time; durations are in ticks.
"""

from __future__ import annotations

from dataclasses import dataclass

from rkv.raft.types import NodeId


@dataclass(frozen=True, slots=True)
class Config:
    id: NodeId
    voters: tuple[NodeId, ...]
    """The bootstrap configuration, used only when storage holds none. Empty for a node that
    joins an existing cluster: it learns the configuration from the leader."""
    election_tick: int = 10
    """Minimum election timeout in ticks; the randomized timeout is drawn from [T, 2T)."""
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    """Byte budget of the entries of one APPEND (at least one entry is always sent)."""
    max_inflight_msgs: int = 256
    """APPEND messages a leader may have unacknowledged per follower in replicate state."""
    pre_vote: bool = True
    check_quorum: bool = True
    applied: int = 0
    """Index the state machine already applied (after a restart); 0 means from the snapshot."""
    max_committed_size_per_ready: int = 64 << 20
    """Byte budget of `committed_entries` in one Ready (at least one entry is always given)."""

    def validate(self) -> None:
        """Raise ValueError on a configuration that cannot work."""
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Config.id must be a non-empty node id")
        if any(not isinstance(v, str) or not v for v in self.voters):
            raise ValueError("Config.voters must be non-empty node ids")
        if len(set(self.voters)) != len(self.voters):
            raise ValueError(f"Config.voters has duplicates: {sorted(self.voters)}")
        if self.heartbeat_tick < 1:
            raise ValueError("Config.heartbeat_tick must be >= 1")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("Config.election_tick must be greater than heartbeat_tick")
        if self.max_size_per_msg < 1:
            raise ValueError("Config.max_size_per_msg must be >= 1")
        if self.max_inflight_msgs < 1:
            raise ValueError("Config.max_inflight_msgs must be >= 1")
        if self.max_committed_size_per_ready < 1:
            raise ValueError("Config.max_committed_size_per_ready must be >= 1")
        if self.applied < 0:
            raise ValueError("Config.applied must be >= 0")
