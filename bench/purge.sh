#!/usr/bin/env bash
# Purge benchmark: 1,000,000 objects, tag purge of 10,000, URL purge, concurrent lookups, and
# the memory the tags and their index cost per object (a run with tags minus one without).
# Results and the machine they came from go in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
OBJECTS="${OBJECTS:-1000000}"
cargo build --release --locked --example purge_bench
echo "== without tags"
./target/release/examples/purge_bench --objects "$OBJECTS" --tags 0 | tee /tmp/purge-notags.txt
echo "== with 3 tags per object (2 shared category tags + 1 unique)"
./target/release/examples/purge_bench --objects "$OBJECTS" --tags 2 | tee /tmp/purge-tags.txt
a=$(grep -o '[0-9]* bytes/object' /tmp/purge-notags.txt | cut -d' ' -f1)
b=$(grep -o '[0-9]* bytes/object' /tmp/purge-tags.txt | cut -d' ' -f1)
echo "== tags and tag index: $((b - a)) bytes per object (3 tags)"
