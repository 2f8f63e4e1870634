"""Child process for test_store_crash: writes numbered batches through save() + apply() (or,
with the argument "group", one save_and_apply()) and prints each batch number once the calls
returned. Runs until killed.

Batch b (0-based) holds entries b*BATCH+1 .. (b+1)*BATCH; entry i puts key k<i> = value(i).
A restart resumes after the applied index (re-saving the log suffix it may have left).
"""

from __future__ import annotations

import sys

from rkv.codec import Put, Request, encode_request
from rkv.raft.types import Entry, HardState
from rkv.store import open_store

BATCH = 25
VALUE_SIZE = 3000


def value(i: int) -> bytes:
    return (b"%08d" % i) * (VALUE_SIZE // 8)


def batch_entries(b: int) -> list[Entry]:
    first = b * BATCH + 1
    return [
        Entry(
            term=1 + b // 10,
            index=i,
            data=encode_request(Request(b"writer", i, Put(b"k%08d" % i, value(i)))),
        )
        for i in range(first, first + BATCH)
    ]


def main(path: str, mode: str = "separate") -> None:
    s = open_store(path, cluster_id="crash", node_id="n1", voters=("n1",), map_size=1 << 20)
    applied = s.applied_index()
    assert applied % BATCH == 0, applied
    b = applied // BATCH
    print(f"start {b}", flush=True)
    while True:
        es = batch_entries(b)
        hs = HardState(es[-1].term, "n1", es[-1].index)
        if mode == "group":
            s.save_and_apply(hs, es, es)
        else:
            s.save(hs, es)
            s.apply(es)
        print(b, flush=True)
        b += 1


if __name__ == "__main__":
    main(*sys.argv[1:])
