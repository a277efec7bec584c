#!/usr/bin/env bash
# Three lacquer nodes and one Redis on this machine: origin requests for 3 nodes x N objects,
# memory vs shared-tier vs app latency and throughput, purge propagation (bench/cluster.py).
#   ./bench/cluster.sh [OBJECTS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || ./scripts/setup.sh
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin lacquer --example bench_origin --example bench_client
SKIP_BUILD=1 exec python3 bench/cluster.py "$@"
