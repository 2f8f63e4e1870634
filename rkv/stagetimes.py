"""Opt-in stage timing of a request's path through a node (issue 18: where a 1-client put's
time goes), on the node's own clock.

Owns: `clock`, the module-level hook (None unless switched on: `RKV_STAGE_TIMES=DIR` in a
node's environment, read once by `enable_from_env`), and `StageClock`: per-stage latency
samples and per-window counts. Must not: import anything of rkv (the net and node layers
both mark stages), do I/O except `dump`, or cost anything when off: callers write
`if stagetimes.clock is not None: stagetimes.clock.mark("...")`, one module attribute read.

A *window* is one request's stretch on this node: on the leader from the put's frame read to
its answer written (`begin("put")` ... `mark("answer_written")`), on a follower from the
APPEND's frame read to its acknowledgement sent (`begin("append")` ... `mark("ack_sent")`).
Inside a window each mark records the time since the window's previous mark under
`"<kind>: <previous> > <mark>"`, so one client's sequential puts give each transition of
the path its own histogram; marks outside a window (heartbeats, ticks) only count. With more
than one request in flight windows overlap and the figures mean little: it is a one-client
instrument. Samples are bounded (`MAX_SAMPLES` per transition; the rest are counted only).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV = "RKV_STAGE_TIMES"
"""A directory: switches stage timing on; each node writes `stages-<id>.json` there at exit."""
MAX_SAMPLES = 100_000
"""Samples kept per transition (bounded memory); later ones are counted, not kept."""
END_OF = {"put": "answer_written", "append": "ack_sent"}
"""The mark that closes a window of each kind."""

_now = time.perf_counter_ns


@dataclass(slots=True)
class StageClock:
    node: str = ""
    out_dir: Path | None = None
    kind: str | None = None
    """The open window's kind, None when none is open."""
    last: str = ""
    last_ns: int = 0
    start_ns: int = 0
    frame_ns: int = 0
    """When the last frame was read (a window begins there)."""
    samples: dict[str, list[int]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    """Events counted: `<event>` always, `<kind>/<event>` inside a window of that kind."""

    def frame_read(self) -> None:
        self.frame_ns = t = _now()
        self.count("frames_in")
        if self.kind is not None:
            self._at("frame_read", t)

    def begin(self, kind: str) -> None:
        """Open a window of `kind` at the last frame read (a window still open is dropped)."""
        self.kind = kind
        self.last = "frame_read"
        self.start_ns = self.last_ns = self.frame_ns or _now()
        self.count("windows")

    def mark(self, name: str) -> None:
        if self.kind is not None:
            self._at(name, _now())

    def _at(self, name: str, t: int) -> None:
        kind = self.kind
        assert kind is not None
        self._add(f"{kind}: {self.last} > {name}", t - self.last_ns)
        self.last, self.last_ns = name, t
        if END_OF[kind] == name:
            self._add(f"{kind}: total", t - self.start_ns)
            self.kind = None

    def count(self, event: str, n: int = 1) -> None:
        c = self.counts
        c[event] = c.get(event, 0) + n
        if self.kind is not None:
            key = f"{self.kind}/{event}"
            c[key] = c.get(key, 0) + n

    def _add(self, key: str, ns: int) -> None:
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        if n < MAX_SAMPLES:
            self.samples.setdefault(key, []).append(ns)

    def summary(self) -> dict[str, Any]:
        """Per transition: n, p50, p90, mean (microseconds); and the counts."""
        stages = {}
        for key, xs in self.samples.items():
            s = sorted(xs)
            stages[key] = {
                "n": self.seen[key],
                "p50_us": s[(len(s) - 1) // 2] / 1000,
                "p90_us": s[(len(s) - 1) * 9 // 10] / 1000,
                "mean_us": sum(s) / len(s) / 1000,
            }
        return {"node": self.node, "stages": stages, "counts": dict(self.counts)}

    def dump(self) -> Path | None:
        if self.out_dir is None:
            return None
        safe = "".join(c if c.isalnum() else "_" for c in self.node)
        path = self.out_dir / f"stages-{safe}.json"
        path.write_text(json.dumps(self.summary(), indent=1))
        return path


clock: StageClock | None = None


def enable_from_env(node: str) -> StageClock | None:
    """Switch stage timing on if `RKV_STAGE_TIMES` names a directory (created if missing)."""
    global clock
    where = os.environ.get(ENV)
    if not where:
        return None
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock(node=node, out_dir=out)
    return clock
