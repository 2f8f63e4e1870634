"""The Raft consensus core: a pure state machine (no I/O, clocks, threads or global randomness)."""
