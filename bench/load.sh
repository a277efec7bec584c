#!/usr/bin/env bash
# The load tests (see docs/load-tests.md): builds lacquer and the bench origin in release mode,
# then runs bench/idle_conns.py (10,000 idle keep-alive connections held while new requests
# are timed) and bench/soak.py (a mixed soak, 600 s by default: flat memory after warm-up,
# metrics that add up). Both use loopback only, start and stop their own processes, and exit
# non-zero on a failed check; this script runs both and fails if either failed.
#
#   bench/load.sh                                  # both, with their defaults
#   bench/load.sh --seconds 120                    # arguments go to soak.py ...
#   bench/load.sh --seconds 120 -- --conns 5000    # ... and those after `--` to idle_conns.py
#   LOAD_ONLY=idle bench/load.sh                   # only one of them: idle or soak
#
# Python 3.11+ standard library only. Both raise their open-file limit to the hard limit
# (`ulimit -Hn`), which must exceed the number of idle connections asked for.
set -euo pipefail
cd "$(dirname "$0")/.."
soak_args=()
idle_args=()
seen_sep=0
for a in "$@"; do
  if [ "$seen_sep" = 0 ] && [ "$a" = "--" ]; then seen_sep=1; continue; fi
  if [ "$seen_sep" = 0 ]; then soak_args+=("$a"); else idle_args+=("$a"); fi
done
only="${LOAD_ONLY:-all}"
case "$only" in all|idle|soak) ;; *) echo "LOAD_ONLY must be idle, soak or all" >&2; exit 2 ;; esac

./scripts/setup.sh
cargo build --release --locked --bin lacquer --example bench_origin

status=0
if [ "$only" != soak ]; then
  python3 bench/idle_conns.py ${idle_args[@]+"${idle_args[@]}"} || status=1
fi
if [ "$only" != idle ]; then
  python3 bench/soak.py ${soak_args[@]+"${soak_args[@]}"} || status=1
fi
exit "$status"
