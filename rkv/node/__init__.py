"""The node runtime: the trio composition root of one rkv server process, as a house of small
rooms, each owning its state (its module docstring says what it owns and must not do):

- `raft_loop`: the raft loop with group commit, the only code that touches the RawNode; it
  publishes a read-only `RaftView` after each Ready for the other rooms to read
- `peers`: peer links (outbound framing of Raft traffic, inbound Raft frames, fault drop sets)
- `snapshots`: streaming a snapshot to a follower, staging and installing one from the leader
- `housekeeping`: log compaction and the stale-upload sweep, between the loop's turns
- `handlers`: the client requests (KV and files), over typed requests (rkv.protocol), the put fast path
- `admin`: leadership transfer, membership, repair, backups, fault hooks
- `health`: status, readiness and liveness, the health/metrics HTTP routes
- `dispatch`: inbound frames to their room, requests decoded (rkv.protocol) and routed
- `front_doors`: the HTTP/JSON API (rkv.httpapi) and RESP (rkv.resp) wired to the dispatcher
- `server`: `Node`, which builds the rooms, wires them, listens
- `entry`: the process entry (`run_node`, `serve_main`), its exit codes and what it tells
  systemd (`tell_systemd`, over rkv.sdnotify)
- `inbox`, `common`: what the rooms share (Waiter, the loop's inputs, RaftView; errors,
  field primitives, `store_io`)

Must not: implement Raft rules (rkv.raft), state-machine semantics (rkv.store) or framing
(rkv.net).
"""

from rkv.node.common import NodeStartError
from rkv.node.entry import FAULT_INJECTION_ENV, HAND_OVER_SECONDS, run_node, serve_main
from rkv.node.inbox import RaftView, Waiter
from rkv.node.server import Node

__all__ = [
    "FAULT_INJECTION_ENV",
    "HAND_OVER_SECONDS",
    "Node",
    "NodeStartError",
    "RaftView",
    "Waiter",
    "run_node",
    "serve_main",
]
