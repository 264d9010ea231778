#!/usr/bin/env bash
# scripts/fuzz.sh (`make fuzz`): runs the built libFuzzer targets (build-fuzz/tests/<target>), each
# for FUZZ_SECONDS, FUZZ_JOBS at a time (default: one per core; a target is single-threaded, so
# two on two cores each get a whole core and CI waits half as long). Each target's output goes to
# build-fuzz/logs/<target>.log; a crash, a failed oracle, a leak or an input slower than 10 s
# fails the target, whose log tail is then printed, and the run. New inputs go to
# build-fuzz/corpus/<target>; tests/fuzz/corpus/<target> holds the chosen seeds.
# Usage: scripts/fuzz.sh TARGET...   (env: FUZZ_SECONDS, FUZZ_JOBS, FUZZ_ARGS)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-$(nproc)}
mkdir -p build-fuzz/logs

run_one() {
    local t=$1 dict=
    mkdir -p "build-fuzz/corpus/$t"
    [ -f "tests/fuzz/$t.dict" ] && dict=-dict=tests/fuzz/$t.dict
    # shellcheck disable=SC2086
    if LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1 \
        "./build-fuzz/tests/$t" -max_total_time="$secs" -timeout=10 -print_final_stats=1 $dict ${FUZZ_ARGS:-} \
        "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"build-fuzz/logs/$t.log" 2>&1; then
        echo "== $t: ok, $(grep -m1 -o 'Done [0-9]* runs in [0-9]* second(s)' "build-fuzz/logs/$t.log")," \
             "$(grep -o 'cov: [0-9]*' "build-fuzz/logs/$t.log" | tail -1)"
    else
        echo "== $t: FAILED (build-fuzz/logs/$t.log):"
        tail -n 60 "build-fuzz/logs/$t.log"
        return 1
    fi
}
export -f run_one
export secs

echo "fuzz: $# targets, $secs s each, $jobs at a time"
printf '%s\n' "$@" | xargs -P "$jobs" -I{} bash -c 'run_one {}'
