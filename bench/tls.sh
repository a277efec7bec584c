#!/usr/bin/env bash
# TLS hit throughput, HTTP/2 (h2load) and HTTP/1.1 over TLS (h2load --h1), lacquer against
# nginx terminating TLS with its proxy_cache, the same certificate, each server pinned alone to
# CPU 0 with one worker, h2load and the bench origin on CPU 1. Prints one line per run: req/s,
# the 99th percentile of request time (h2load's per-request log) and the server's CPU time per
# request (its utime + stime over the run, from /proc).
#   ./bench/tls.sh [SECONDS] [SIZES]      (default 8 s, "1k 16k")
#   LACQUER_BIN=/path/to/lacquer ./bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-8}"
sizes="${2:-1k 16k}"
bin="${LACQUER_BIN:-./target/release/lacquer}"
origin_bin="${BENCH_ORIGIN:-./target/release/examples/bench_origin}"
for tool in h2load nginx openssl; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nghttp2-client nginx openssl >/dev/null
  fi
done
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin lacquer --example bench_origin
tmp="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
[ -n "${DEBUG_TLS:-}" ] && set -x
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/site.key" -out "$tmp/site.pem" -days 2 \
  -subj "/CN=site.test" -addext "subjectAltName=DNS:site.test" 2>/dev/null
taskset -c 1 "$origin_bin" 127.0.0.1:18290 >"$tmp/origin.log" 2>&1 &
pids+=($!)
cat >"$tmp/lacquer.yaml" <<YAML
listen:
  - addr: "127.0.0.1:18291"
    tls:
      certificates: [{cert: "$tmp/site.pem", key: "$tmp/site.key"}]
threads: 1
admin: {listen: "127.0.0.1:18292"}
upstreams: [{addr: "127.0.0.1:18290"}]
health_check: {type: none}
access_log: {target: "off"}
YAML
taskset -c 0 "$bin" --config "$tmp/lacquer.yaml" >"$tmp/lacquer.log" 2>&1 &
pids+=($!)
mkdir -p "$tmp/cache"
# nginx workers run unprivileged: they must reach the cache and the key
chmod 755 "$tmp"; chmod 777 "$tmp/cache"; chmod 644 "$tmp/site.key"
cat >"$tmp/nginx.conf" <<NGINX
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  # h2load does not reconnect: without this nginx ends each connection after 1,000 requests
  keepalive_requests 10000000;
  proxy_cache_path $tmp/cache keys_zone=c:10m;
  server {
    listen 127.0.0.1:18293 ssl http2;
    ssl_certificate $tmp/site.pem;
    ssl_certificate_key $tmp/site.key;
    location / { proxy_pass http://127.0.0.1:18290; proxy_cache c; proxy_cache_lock on; }
  }
}
NGINX
taskset -c 0 /usr/sbin/nginx -c "$tmp/nginx.conf"
sleep 1
lacquer_pid="${pids[1]}"
nginx_worker=$(pgrep -P "$(cat "$tmp/nginx.pid")" | head -1)
# CPU time of a process so far, in microseconds (utime + stime, /proc/PID/stat fields 14, 15)
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000000 / hz)}' "/proc/$1/stat"; }
for size in $sizes; do
  for target in lacquer:18291 nginx:18293; do
    name="${target%%:*}"; port="${target##*:}"
    pid="$lacquer_pid"; [ "$name" = nginx ] && pid="$nginx_worker"
    url="https://127.0.0.1:$port/$size/tls"
    curl -sk -o /dev/null "$url"; curl -sk -o /dev/null "$url"
    for proto in h2 h1; do
      # HTTP/2: 64 connections, 8 streams each; HTTP/1.1: 64 connections, no pipelining
      flags=(-m 8); [ "$proto" = h1 ] && flags=(--h1 -m 1)
      before=$(cpu_us "$pid")
      out=$(taskset -c 1 h2load "${flags[@]}" -D "$seconds" -c 64 -t 1 --log-file="$tmp/h2.log" "$url" 2>&1)
      after=$(cpu_us "$pid")
      rps=$(echo "$out" | awk '/^finished in/ {print $4}')
      ok=$(echo "$out" | awk '/^status codes:/ {print $3}' | tr -d ,)
      # the log's third column is each request's time in microseconds
      p99=$(sort -n -k3 "$tmp/h2.log" | awk '{v[NR]=$3} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f", v[i]/1000}')
      cpu=$(awk -v c=$((after - before)) -v n="${ok:-0}" 'BEGIN {if (n>0) printf "%.2f", c/n; else print "-"}')
      [ -n "${DEBUG_TLS:-}" ] && echo "$out" | tail -8
      echo "size=$size server=$name proto=$proto req/s=$rps 2xx=$ok p99_ms=$p99 cpu_us_per_req=$cpu"
    done
  done
done
