"""Speed of the simulator in two source trees, measured side by side: bench/sim_speed.py of
tree A, then of tree B, alternating which goes first each round, every configuration in each
round; medians and their ratio (B/A). On a shared machine single runs scatter by 10-20%, so
only ratios of runs interleaved like this say anything.

    git archive BASE | tar -x -C /tmp/base
    python bench/sim_ab.py /tmp/base . 5 "3 plain 30" "5 plain 15" "3 membership 20"
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys


def measure(tree: str, config: str) -> float:
    """One bench/sim_speed.py run of `config` ("NODES VARIANT SEEDS") with tree's rkv."""
    tree = os.path.abspath(tree)
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run(
        [sys.executable, os.path.join(tree, "bench", "sim_speed.py"), *config.split()],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split()[-2])  # "... seeds 1..N:  12.34 seeds/CPU-s"


def main() -> None:
    if len(sys.argv) < 5:
        sys.exit("usage: sim_ab.py TREE_A TREE_B ROUNDS 'NODES VARIANT SEEDS' ...")
    a, b, rounds, configs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    runs: dict[str, dict[str, list[float]]] = {c: {"A": [], "B": []} for c in configs}
    for r in range(rounds):
        for c in configs:
            for k in "AB" if r % 2 == 0 else "BA":
                runs[c][k].append(measure(a if k == "A" else b, c))
            print(
                f"round {r + 1} {c}: A {runs[c]['A'][-1]:.2f} B {runs[c]['B'][-1]:.2f}", flush=True
            )
    for c in configs:
        ma, mb = statistics.median(runs[c]["A"]), statistics.median(runs[c]["B"])
        print(f"{c}: A {ma:.2f} B {mb:.2f} seeds/CPU-s (medians of {rounds}), B/A {mb / ma:.3f}")


if __name__ == "__main__":
    main()
