"""The simulator's event kinds (rkv.sim.cluster's heap entries: (time, seq, kind, a, b)).

Owns: the kind numbers. Must not: hold behaviour; the cluster's event loop dispatches them.
"""

# Event kinds (ints keep heap entries small and comparisons cheap).
(
    TICK,
    DELIVER,
    PERSISTED,
    CLIENT,
    RETRY,
    TIMEOUT,
    FAULT,
    RESTART,
    QUIET_START,
    QUIET_CHECK,
    BACKLOG,
) = range(11)
