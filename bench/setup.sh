#!/usr/bin/env bash
# Installs what the benchmarks need and rkv itself does not: etcd (Debian's etcd-server, for
# the etcd driver) and pysyncobj, psutil, matplotlib, uvloop into the Python that runs it (the
# project venv when called as `./dev bench setup`). Safe to run again: it skips what is present.
# uvloop: the event loop of the cheap generator (bench/rawgen.py), which drives etcd (and
# rkv:raw) with less CPU per request than a trio client, so that on a small machine the
# generator takes as little as it can from the servers it measures (issue 18). Without it the
# same generator runs on asyncio's own loop, a little dearer per request.
# `bench resp` (issue 17) also needs Debian's redis-server (the durable one-node Redis it is
# compared with) and redis-tools' redis-benchmark (scripts/install-redis-tools.sh, which the
# RESP tests use too).
set -euo pipefail
py="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
if ! command -v etcd >/dev/null 2>&1; then
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y etcd-server
fi
if ! command -v redis-server >/dev/null 2>&1; then
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-server
fi
# The Debian package starts a system Redis on 127.0.0.1:6379; the benchmark runs its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  $sudo systemctl stop redis-server || true
fi
bash "$here/../scripts/install-redis-tools.sh"
# The Debian package starts a system etcd on 127.0.0.1:2379; the benchmark runs its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
fi
"$py" -m pip install -q "pysyncobj>=0.3.12" "psutil>=5.9" "matplotlib>=3.7" "uvloop>=0.19"
etcd --version | head -1
redis-server --version
redis-benchmark --version
"$py" -c 'from importlib.metadata import version as v; print(*(f"{p} {v(p)}" for p in ("pysyncobj", "psutil", "matplotlib", "uvloop")))'
