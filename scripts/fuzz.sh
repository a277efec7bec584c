#!/usr/bin/env bash
# Runs lacquer's cargo-fuzz targets (fuzz/fuzz_targets/*.rs) for a short time each and exits
# non-zero if any of them finds a crash, a failed property check, a timeout or an out-of-memory.
#
#   ./scripts/fuzz.sh                          # every target, 30 s each
#   FUZZ_SECONDS=600 ./scripts/fuzz.sh         # longer
#   FUZZ_TARGETS="freshness config" ./scripts/fuzz.sh
#   FUZZ_KEEP_GOING=1 ./scripts/fuzz.sh        # do not stop at a target's first failure:
#                                              # run the whole time, keep every failing input
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, coverage instrumentation);
# on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks them, which this script sets. It installs
# cargo-fuzz if missing. Builds go to fuzz/target; the corpus grows in fuzz/corpus/<target>
# (seeded from fuzz/seeds/<target>), crashing inputs land in fuzz/artifacts/<target>, and each
# run's libFuzzer output is kept in fuzz/target/fuzz-logs/<target>.log. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
targets="${FUZZ_TARGETS:-freshness cache_key purge_request surrogate_keys config}"
# per input: a slower one counts as a hang (a failure)
input_timeout="${FUZZ_INPUT_TIMEOUT:-10}"
keep_going="${FUZZ_KEEP_GOING:-0}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# cargo fuzz has no --locked: fail here instead if fuzz/Cargo.lock would have to change
cargo metadata --locked --format-version 1 >/dev/null

# -O -a: optimised, with debug assertions and overflow checks (the same flags for build and
# run, so run does not rebuild)
build_flags=(-O -a)
cargo fuzz build "${build_flags[@]}"
triple="$(rustc -vV | sed -n 's/^host: //p')"

logs=target/fuzz-logs
mkdir -p "$logs"
failed=()
summary=()
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t")
    [[ -d "seeds/$t" ]] && dirs+=("seeds/$t")
    # the inputs of bugs found and fixed: read first, at every run
    [[ -d "regressions/$t" ]] && dirs+=("regressions/$t")
    [[ "$t" == config ]] && dirs+=("../conf")
    args=(-max_total_time="$seconds" -timeout="$input_timeout" -print_final_stats=1)
    [[ -f "dict/$t.dict" ]] && args+=(-dict="dict/$t.dict")
    # libFuzzer's fork mode with -ignore_crashes runs on after a failure, in a child process
    [[ "$keep_going" == 1 ]] && args+=(-fork=1 -ignore_crashes=1)
    marker="$logs/$t.start"
    touch "$marker"
    echo "== fuzz $t for ${seconds}s"
    start=$SECONDS
    status=ok
    if ! cargo fuzz run "${build_flags[@]}" "$t" "${dirs[@]}" -- "${args[@]}" \
        >"$logs/$t.log" 2>&1; then
        status=FAILED
    fi
    elapsed=$((SECONDS - start))
    mapfile -t new < <(find "artifacts/$t" -type f -newer "$marker" | sort)
    found=${#new[@]}
    if ((found > 0)); then
        status=FAILED
    fi
    if [[ "$status" == FAILED ]]; then
        failed+=("$t")
        if ((found == 0)); then
            tail -n 40 "$logs/$t.log"
        fi
        # replay each failing input once to show what failed (the first 10)
        for a in "${new[@]:0:10}"; do
            echo "-- $a"
            "target/$triple/release/$t" "$a" 2>&1 | grep -A 2 -m 1 'panicked at' || true
        done
    fi
    # total runs: libFuzzer's final stats, or in fork mode its last progress line
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
    if [[ -z "$runs" ]]; then
        runs=$(sed -n 's/^#\([0-9][0-9]*\):.*/\1/p' "$logs/$t.log" | tail -n 1)
    fi
    runs=${runs:-0}
    summary+=("$(printf '%-15s %-7s %4ss  runs=%-10s exec/s=%-7s new failing inputs=%s' \
        "$t" "$status" "$elapsed" "$runs" "$((runs / (elapsed > 0 ? elapsed : 1)))" "$found")")
done

echo "== summary (${seconds}s per target; logs in fuzz/$logs, failing inputs in fuzz/artifacts/)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi
