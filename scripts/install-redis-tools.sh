#!/usr/bin/env bash
# Installs Debian's redis-tools (redis-cli, redis-benchmark) when they are missing: the RESP
# end-to-end tests (tests/e2e/test_resp_tools.py) use them as clients nobody here wrote.
# Called by `./dev setup` / `./dev test` and by .ci/run. Safe to run again: it skips what is
# present. Without root or sudo it says what to install and leaves it to you.
set -euo pipefail
if command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1; then
  sudo="sudo"
else
  echo "install-redis-tools: redis-cli/redis-benchmark missing and no root or sudo:" \
    "install Debian's redis-tools (the RESP tests need them)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-redis-tools: no apt-get here: install redis-cli and redis-benchmark" \
    "(Redis 7) yourself (the RESP tests need them)" >&2
  exit 1
fi
echo "install-redis-tools: installing Debian's redis-tools (redis-cli, redis-benchmark)" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-tools >&2
redis-cli --version >&2
