#!/usr/bin/env bash
# Scans lacquer for HTTP request smuggling with smugglex (crates.io), as a user would: the
# release lacquer in front of the bench origin on loopback, every smugglex check (including
# the stateful opt-in ones: cl-0, 0-cl, parser-discrepancy) against a cacheable URL and a
# URL that bypasses the cache. Prints smugglex's report and exits non-zero on any finding.
# Results are recorded in docs/security.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
command -v smugglex >/dev/null 2>&1 || cargo install smugglex --locked
cargo build --release --locked --bin lacquer --example bench_origin
tmp="$(mktemp -d)"
cleanup() {
  kill "$origin_pid" "$lacquer_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
origin_pid=""; lacquer_pid=""
trap cleanup EXIT
./target/release/examples/bench_origin 127.0.0.1:18090 >"$tmp/origin.log" 2>&1 &
origin_pid=$!
cat >"$tmp/lacquer.yaml" <<YAML
listen: ["127.0.0.1:18091"]
admin:
  listen: "127.0.0.1:18092"
upstreams:
  - addr: "127.0.0.1:18090"
access_log:
  target: "off"
YAML
./target/release/lacquer --config "$tmp/lacquer.yaml" >"$tmp/lacquer.log" 2>&1 &
lacquer_pid=$!
for _ in $(seq 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/18091) 2>/dev/null; then break; fi
  sleep 0.1
done
checks="cl-te,te-cl,te-te,h2c,cl-edge,cl-0,0-cl,parser-discrepancy"
found=0
url="http://127.0.0.1:18091/1k/smuggle-scan"
# once as an anonymous visitor (served from the cache), once with a cookie (passed to the app)
for cookie in "" "Cookie: sessionid=1"; do
  echo "== smugglex on $url ${cookie:+with $cookie}"
  extra=(); [ -n "$cookie" ] && extra=(-H "$cookie")
  smugglex --no-color -q -t 5 -c "$checks" "${extra[@]}" -o "$tmp/report.json" -f json "$url" >/dev/null 2>&1 || true
  n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["vulnerable_checks"])' "$tmp/report.json" 2>/dev/null || echo "?")
  python3 - "$tmp/report.json" <<'PY' || true
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    for c in r["checks"]:
        print("  %-20s vulnerable=%s" % (c["check_type"], c["vulnerable"]))
PY
  echo "findings: $n"
  if [ "$n" != "0" ]; then found=1; cat "$tmp/report.json"; fi
done
exit "$found"
