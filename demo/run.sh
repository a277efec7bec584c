#!/usr/bin/env bash
# lacquer doing its job: builds it, starts the demo app on 127.0.0.1:8080 and lacquer in
# front of it on 127.0.0.1:6081 (conf/lacquer.yaml), shows a miss then a hit, and keeps
# running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --locked --bin lacquer --example demo_app
./target/release/examples/demo_app 127.0.0.1:8080 >/tmp/lacquer-demo-app.log 2>&1 &
APP=$!
./target/release/lacquer --config conf/lacquer.yaml &
PROXY=$!
trap 'kill $APP $PROXY 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  if curl -s -o /dev/null http://127.0.0.1:6082/healthz && curl -s -o /dev/null http://127.0.0.1:8080/404; then break; fi
  sleep 0.1
done
echo
echo "== first request: a miss, the app renders (200 ms)"
curl -s -w 'time: %{time_total}s\n' -D - -o /dev/null http://127.0.0.1:6081/ | grep -iE 'cache-status|^HTTP|time'
echo "== second request: a hit, from memory"
curl -s -w 'time: %{time_total}s\n' -D - -o /dev/null http://127.0.0.1:6081/ | grep -iE 'cache-status|^HTTP|^age|time'
echo "== a visitor submits a post: the app soft-purges the front page by its tag"
curl -s -X POST -d 'title=Hello' http://127.0.0.1:6081/submit; echo
echo "== the next visitor is served at once (stale) while lacquer refreshes in the background"
curl -s -w 'time: %{time_total}s\n' -D - -o /dev/null http://127.0.0.1:6081/ | grep -iE 'cache-status|time'
sleep 0.5
echo "== and then the refreshed page, from memory again"
curl -s -D - http://127.0.0.1:6081/ | grep -iE 'cache-status|<li>'
echo
echo "lacquer is serving http://127.0.0.1:6081/ (admin: http://127.0.0.1:6082/healthz). Ctrl-C to stop."
wait $PROXY
