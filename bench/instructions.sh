#!/usr/bin/env bash
# Instructions per cache hit, counted by valgrind's callgrind: a measure of lacquer's own
# (user-space) work per request that does not depend on what else the machine is doing, for
# before/after comparisons of the hit path on a shared, noisy machine (docs/benchmarks.md).
# Starts the bench origin and lacquer (one worker thread) under callgrind, warms one URL,
# counts only while wrk sends hits for 4 s, prints requests, instructions and their ratio.
#   ./bench/instructions.sh [1k|16k|256k]   (default 1k)
#   HEADERS=browser ./bench/instructions.sh   (wrk sends what a browser sends for a page: user
#                                             agent, accepts, referer, analytics cookies, ...)
#   LACQUER_BIN=/path/to/lacquer ./bench/instructions.sh   (compare another build)
#   SKIP_BUILD=1 BENCH_ORIGIN=/path/to/bench_origin ...      (measure prebuilt binaries only)
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-1k}"
bin="${LACQUER_BIN:-./target/release/lacquer}"
for tool in valgrind wrk; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind wrk >/dev/null
  fi
done
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin lacquer --example bench_origin
tmp="$(mktemp -d)"
origin_pid=""; vg_pid=""
cleanup() { kill "$origin_pid" "$vg_pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
"${BENCH_ORIGIN:-./target/release/examples/bench_origin}" 127.0.0.1:18190 >"$tmp/origin.log" 2>&1 &
origin_pid=$!
cat >"$tmp/lacquer.yaml" <<YAML
listen: ["127.0.0.1:18191"]
threads: 1
admin:
  listen: "127.0.0.1:18192"
upstreams:
  - addr: "127.0.0.1:18190"
health_check:
  type: none
access_log:
  target: "off"
YAML
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/callgrind.out" \
  "$bin" --config "$tmp/lacquer.yaml" >"$tmp/vg.log" 2>&1 &
vg_pid=$!
url="http://127.0.0.1:18191/$size/instructions"
for _ in $(seq 150); do curl -s -o /dev/null "$url" && break; sleep 0.2; done
curl -s -o /dev/null "$url"
headers=()
if [ "${HEADERS:-}" = "browser" ]; then
  headers=(
    -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
    -H "Accept-Language: en-US,en;q=0.9"
    -H "Accept-Encoding: gzip, deflate, br, zstd"
    -H "Referer: http://127.0.0.1:18191/"
    -H "Cookie: _ga=GA1.1.1234567890.1764000000; _gid=GA1.1.987654321.1764000000"
    -H "Sec-Fetch-Dest: document"
    -H "Sec-Fetch-Mode: navigate"
    -H "Sec-Fetch-Site: same-origin"
    -H "Upgrade-Insecure-Requests: 1"
  )
  curl -s -o /dev/null "${headers[@]}" "$url"; curl -s -o /dev/null "${headers[@]}" "$url"
fi
callgrind_control -i on "$vg_pid" >/dev/null
requests=$(wrk -t1 -c16 -d4s "${headers[@]}" "$url" | awk '/requests in/ {print $1}')
callgrind_control -i off "$vg_pid" >/dev/null
callgrind_control -d "$vg_pid" >/dev/null
sleep 1
ir=$(callgrind_annotate "$tmp"/callgrind.out.* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "size=$size headers=${HEADERS:-wrk} requests=$requests instructions=$ir per_request=$((ir / requests))"
