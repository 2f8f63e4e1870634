"""Seeds per CPU-second of the simulator: time.process_time around run_seed, in one process,
so other load on the machine does not count.

    PYTHONPATH=. python bench/sim_speed.py                 # every configuration below
    PYTHONPATH=. python bench/sim_speed.py 3 membership 40 # nodes, variant, seeds 1..N
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rkv.sim.cluster import SimParams
from rkv.sim.runner import run_seed

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "membership": {"membership": True},
    "compact20": {"compact_every": 20},
    "disk-replace": {"disk_replace": True},
}
CONFIGS = [
    (3, "plain", 40),
    (5, "plain", 20),
    (7, "plain", 12),
    (3, "membership", 40),
    (3, "compact20", 40),
    (3, "disk-replace", 40),
]


def measure(nodes: int, variant: str, n: int) -> float:
    p = SimParams(nodes=nodes, **VARIANTS[variant])
    t0 = time.process_time()
    for s in range(1, n + 1):
        run_seed(s, nodes, params=p)
    return n / (time.process_time() - t0)


def main() -> None:
    configs = CONFIGS
    if len(sys.argv) > 1:
        configs = [(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 40)]
    for nodes, variant, n in configs:
        rate = measure(nodes, variant, n)
        print(f"{nodes} nodes {variant:<12} seeds 1..{n}: {rate:6.2f} seeds/CPU-s", flush=True)


if __name__ == "__main__":
    main()
