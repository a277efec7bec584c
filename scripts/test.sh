#!/usr/bin/env bash
# Runs lacquer's whole test suite: unit tests and the integration tests, which start the real
# proxy binary and real origins on ephemeral loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --locked --lib --bins --tests 2>&1 | tee "$log"
passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\2/' | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
