"""Record what the simulator does per seed, to check that a speed change alters nothing.

For each configuration (3/5/7 nodes; plain, --membership, --compact-every 20, --disk-replace,
--txn-fraction 0.3) and seed: ok/failure, every Stats field, and a hash of the full event trace
(so the event order and every traced message are compared too). One JSON line per seed, in a
fixed order.

    PYTHONPATH=. python bench/sim_identity.py 2 > /tmp/ident.before   # 2 worker processes
    PYTHONPATH=. python bench/sim_identity.py 2 4 > /tmp/ident.quick  # every 4th seed only
    PYTHONPATH=. python bench/sim_identity.py 2 > /tmp/ident.after
    cmp /tmp/ident.before /tmp/ident.after
"""

from __future__ import annotations

import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

from rkv.sim.cluster import SimParams
from rkv.sim.runner import run_seed

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "membership": {"membership": True},
    "compact20": {"compact_every": 20},
    "disk-replace": {"disk_replace": True},
    "txn30": {"txn_fraction": 0.3},
}
SEEDS = {3: range(1000, 1200), 5: range(2000, 2080), 7: range(3000, 3040)}


def one(job: tuple[int, str, int]) -> str:
    nodes, variant, seed = job
    p = SimParams(nodes=nodes, full_trace=True, **VARIANTS[variant])
    r = run_seed(seed, nodes, params=p)
    f = r.failure
    return json.dumps(
        {
            "nodes": nodes,
            "variant": variant,
            "seed": seed,
            "ok": r.ok,
            "failure": None if f is None else [f.invariant, f.detail, f.time],
            "stats": asdict(r.stats),
            "trace": hashlib.sha256("\n".join(r.trace).encode()).hexdigest(),
            "lines": len(r.trace),
        },
        sort_keys=True,
    )


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    every = int(sys.argv[2]) if len(sys.argv) > 2 else 1  # 4: a quick check on every 4th seed
    jobs = [(n, v, s) for n, seeds in SEEDS.items() for v in VARIANTS for s in seeds[::every]]
    with ProcessPoolExecutor(workers) as ex:
        for line in ex.map(one, jobs, chunksize=4):
            print(line, flush=True)


if __name__ == "__main__":
    main()
