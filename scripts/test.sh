#!/usr/bin/env bash
# Runs lacquer's whole test suite: unit tests and the integration tests, which start the real
# proxy binary and real origins on ephemeral loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --locked
