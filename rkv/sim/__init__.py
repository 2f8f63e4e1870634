"""rkv.sim: a seeded discrete-event simulator of an rkv cluster (see docs/sim.md).

Modules: network.py (delay, loss, duplication, partitions), disk.py (durable MemoryStorage twin
and write latency), statemachine.py (the pluggable state machine and a small KV),
invariants.py (Raft's safety properties, checked after every event), history.py (client
operations and the sequential-model check), cluster.py (the event loop, nodes, clients,
faults), runner.py (one seed -> SeedResult with a replayable failure report), command.py
(the seeds of `rkv sim` / `python -m rkv.sim`: workers, soak, summary), cmdline.py (their one
command line), leases.py (the lease workload and the lease checks). linearizability.py is a separate history checker.
Nothing here reads a clock, uses threads or trio, or draws randomness but from the seed.
"""
