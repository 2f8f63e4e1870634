"""`python -m rkv.nemesis.serve serve ...`: the real `rkv` CLI with small snapshot tunables.

Owns: nothing but a test-only override of NodeConfig defaults, so that nemesis runs make
nodes compact their logs and ship snapshots to followers that were killed, frozen or cut
off (with the defaults that happens once every 10,000 entries). The values come from the
environment: RKV_NEMESIS_SNAPSHOT_ENTRIES (compact after this many applied entries) and
RKV_NEMESIS_SNAPSHOT_KEEP (entries kept behind a compaction); and RKV_NEMESIS_WATCH_HISTORY
(changes a node keeps for watches: small, so that lagging watchers get Compacted). Must not: change anything
else about the node, or be used outside tests.
"""

from __future__ import annotations

import os
import runpy
from typing import Any

from rkv.config import NodeConfig
from rkv.nemesis.cluster import SNAPSHOT_ENTRIES_ENV, SNAPSHOT_KEEP_ENV, WATCH_HISTORY_ENV


def _install() -> None:
    tunables: dict[str, int] = {}
    if os.environ.get(SNAPSHOT_ENTRIES_ENV):
        tunables["snapshot_entries"] = int(os.environ[SNAPSHOT_ENTRIES_ENV])
    if os.environ.get(SNAPSHOT_KEEP_ENV):
        tunables["snapshot_keep_entries"] = int(os.environ[SNAPSHOT_KEEP_ENV])
    if os.environ.get(WATCH_HISTORY_ENV):
        tunables["watch_history"] = int(os.environ[WATCH_HISTORY_ENV])
    if not tunables:
        return
    original = NodeConfig.create.__func__  # type: ignore[attr-defined]

    def create(cls: type[NodeConfig], *args: Any, **kwargs: Any) -> NodeConfig:
        for name, value in tunables.items():
            kwargs.setdefault(name, value)
        result: NodeConfig = original(cls, *args, **kwargs)
        return result

    NodeConfig.create = classmethod(create)  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    _install()
    # Exactly `python -m rkv` from here on (the CLI is a sibling layer, so not imported).
    runpy.run_module("rkv", run_name="__main__", alter_sys=True)
