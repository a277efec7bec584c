#!/usr/bin/env bash
# One mutation run: apply one textual mutation to a file under src/, run the integration tests
# that should catch it, restore the file, and say whether they did.
#
#   scripts/mutation.sh FILE OLD NEW [TEST_FILTER...]
#
# FILE is a path in the repository (src/cache/storage.rs), OLD an exact piece of its text
# that must occur exactly once, NEW what replaces it ("" deletes it). The filters go to
# `cargo test --locked --test it -- FILTER...` (none: the whole suite).
# Prints CAUGHT (exit 0) when the tests fail with the mutation in place, MISSED (exit 1) when
# they pass; exit 2 when the mutation cannot be applied or does not build. The file is
# restored in every case, also on Ctrl-C. Set CARGO_TARGET_DIR as for any build; the test
# output goes to target-of-your-choice/mutation.log (MUTATION_LOG overrides).
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
file=$1
old=$2
new=$3
shift 3

cd "$(dirname "$0")/.."
[ -f "$file" ] || { echo "no such file: $file" >&2; exit 2; }
log=${MUTATION_LOG:-${CARGO_TARGET_DIR:-target}/mutation.log}
mkdir -p "$(dirname "$log")"

backup=$(mktemp)
cp "$file" "$backup"
restore() { cp "$backup" "$file"; rm -f "$backup"; }
trap restore EXIT INT TERM

# replace exactly one occurrence, literally (no regex, no escapes)
OLD=$old NEW=$new python3 - "$file" <<'EOF'
import os, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
old, new = os.environ["OLD"], os.environ["NEW"]
n = text.count(old)
if n != 1:
    sys.stderr.write(f"the old text occurs {n} times in {path}, not once\n")
    sys.exit(2)
open(path, "w", encoding="utf-8").write(text.replace(old, new, 1))
EOF

echo "mutation: $file: $(printf '%q' "$old") -> $(printf '%q' "$new")"
if ! cargo test --locked --test it --no-run >"$log" 2>&1; then
    echo "the mutant does not build (see $log)"
    exit 2
fi
if cargo test --locked --test it -- "$@" >>"$log" 2>&1; then
    echo "MISSED: the tests pass with the mutation (${*:-all tests})"
    exit 1
fi
failed=$(grep -E '^    [A-Za-z0-9_:]+$' "$log" | sed 's/^ *//' | tr '\n' ' ' || true)
echo "CAUGHT by: ${failed:-see $log}"
exit 0
