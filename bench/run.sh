#!/usr/bin/env bash
# The benchmark suite: installs what it needs (varnish, nginx, wrk from Debian), builds
# lacquer and the bench tools in release mode, and runs bench/run.py (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
missing=""
for tool in varnishd nginx wrk taskset; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq varnish nginx wrk util-linux >/dev/null
fi
cargo build --release --locked --bin lacquer --example bench_origin --example bench_client
exec python3 bench/run.py "$@"
