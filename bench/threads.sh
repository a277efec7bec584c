#!/usr/bin/env bash
# Hits with `threads: 1` (lacquer on CPU 0, wrk on CPU 1) against `threads: 2` (lacquer and wrk
# sharing CPUs 0-1): 1 KiB hits of one URL, wrk -t2 -c64, three 6-second runs each; prints
# req/s and p99 per run (docs/benchmarks.md, "Threads").
#   ./bench/threads.sh             (builds lacquer and the bench origin first)
#   SKIP_BUILD=1 LACQUER_BIN=/path/to/lacquer BENCH_ORIGIN=/path/to/bench_origin ./bench/threads.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${LACQUER_BIN:-./target/release/lacquer}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin lacquer --example bench_origin
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
tmp="$(mktemp -d)"
origin_pid=""; lacquer_pid=""
cleanup() { kill "$origin_pid" "$lacquer_pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
"${BENCH_ORIGIN:-./target/release/examples/bench_origin}" 127.0.0.1:18490 >"$tmp/origin.log" 2>&1 &
origin_pid=$!
for threads in 1 2; do
  cat >"$tmp/lacquer.yaml" <<YAML
listen: ["127.0.0.1:18491"]
threads: $threads
admin:
  listen: "127.0.0.1:18492"
upstreams:
  - addr: "127.0.0.1:18490"
health_check:
  type: none
access_log:
  target: "off"
YAML
  if [ "$threads" = 1 ]; then server_cpus=0; load_cpus=1; else server_cpus=0,1; load_cpus=0,1; fi
  taskset -c "$server_cpus" "$bin" --config "$tmp/lacquer.yaml" >"$tmp/lacquer.log" 2>&1 &
  lacquer_pid=$!
  url="http://127.0.0.1:18491/1k/threads"
  for _ in $(seq 100); do curl -s -o /dev/null "$url" && break; sleep 0.1; done
  curl -s -o /dev/null "$url"
  for run in 1 2 3; do
    out=$(taskset -c "$load_cpus" wrk -t2 -c64 -d6s --latency "$url")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    echo "threads=$threads run=$run req/s=$rps p99=$p99"
  done
  kill "$lacquer_pid"; wait "$lacquer_pid" 2>/dev/null || true; lacquer_pid=""
done
