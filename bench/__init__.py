"""Benchmarks of rkv against etcd and PySyncObj: `python -m bench --help` (docs/bench.md)."""
