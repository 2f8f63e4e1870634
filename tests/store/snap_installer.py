"""Child process for the install-atomicity test: stages a large snapshot into an LMDB store
and installs it, printing "staged" and "installed" as it goes. The parent SIGKILLs it at
random moments; whatever the moment, the store must hold either the old state or the new one.
"""

from __future__ import annotations

import sys

from rkv.codec import Put, Request, encode_request
from rkv.raft.types import Entry, HardState, Snapshot
from rkv.store import MemoryStore, open_store

NEW_KEYS = 300
VALUE = 8000


def new_state() -> MemoryStore:
    src = MemoryStore("crash", "leader", ("n1", "n2"))
    es = [
        Entry(
            term=3,
            index=i + 1,
            data=encode_request(Request(b"", 0, Put(b"new%05d" % i, bytes([i % 251]) * VALUE))),
        )
        for i in range(NEW_KEYS)
    ]
    src.save(HardState(3, "", NEW_KEYS), es)
    src.apply(es)
    return src


def main(path: str) -> None:
    src = new_state()
    dst = open_store(path, cluster_id="crash", node_id="n1", voters=("n1", "n2"))
    with src.open_snapshot(64 << 10) as source:
        dst.begin_snapshot_install(source.meta)
        for seq, chunk in enumerate(source.chunks()):
            dst.stage_snapshot_chunk(seq, chunk)
        dst.finish_snapshot_staging(source.chunk_count, source.records)
        meta = source.meta
    print("staged", flush=True)
    dst.install_snapshot(HardState(3, "", meta.index), [], Snapshot(meta))
    print("installed", flush=True)
    sys.stdin.read()  # wait to be killed


if __name__ == "__main__":
    main(sys.argv[1])
