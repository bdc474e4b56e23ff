#!/usr/bin/env bash
# Fuzz the Rust core's parsers and state machines (fuzz/, cargo-fuzz + libFuzzer).
#
#   scripts/fuzz.sh                 replay the seed corpus and past crashes (cargo test),
#                                   then fuzz every target for FUZZ_SECS (default 40) seconds
#   FUZZ_SECS=600 scripts/fuzz.sh   the long run (10 minutes per target)
#   scripts/fuzz.sh tunnel chunked  only these targets
#   FUZZ_SECS=0 scripts/fuzz.sh     replay only
#
# Seeds are read from fuzz/corpus/<target>/ (never written: new inputs go to a
# scratch corpus under fuzz/target/). A crash fails the run and its input is
# left in fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ so
# that `cargo test` in fuzz/ replays it forever. Prints one line per target
# (executions, coverage, features, corpus size, seconds) and a summary line.
#
# Needs: cargo-fuzz (installed with `cargo install cargo-fuzz --locked` if
# missing), a C++ compiler (libFuzzer is built from source by libfuzzer-sys).
# The stable toolchain runs it with RUSTC_BOOTSTRAP=1 (cargo-fuzz's
# -Zsanitizer flags, and the per-package --cfg test that lets a std binary
# link the no_std core; see fuzz/Cargo.toml).
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
: "${FUZZ_SECS:=40}" "${FUZZ_JOBS:=1}"
ALL=(check_request build_request parse_response chunked handshake_ffi tunnel)
if [ -f ../src/frames.rs ] && grep -q '^name = "frames"' Cargo.toml; then ALL+=(frames); fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

passed=0
failed=0

echo "==> fuzz: replay of fuzz/corpus and fuzz/regressions (cargo test)"
if cargo test --release 2>&1 | tee /tmp/fuzz-replay.$$ | grep -E '^test |test result'; then :; fi
r_pass=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' /tmp/fuzz-replay.$$ | awk '{s+=$4} END {print s+0}')
r_fail=$(grep -oE '[0-9]+ failed;' /tmp/fuzz-replay.$$ | awk '{s+=$1} END {print s+0}')
if ! grep -q 'test result' /tmp/fuzz-replay.$$; then
    tail -30 /tmp/fuzz-replay.$$
    r_fail=$((r_fail + 1))
fi
rm -f /tmp/fuzz-replay.$$
passed=$((passed + r_pass))
failed=$((failed + r_fail))

if [ "$FUZZ_SECS" -gt 0 ]; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "==> installing cargo-fuzz"
        cargo install cargo-fuzz --locked >/dev/null 2>&1 || { echo "FAIL cannot install cargo-fuzz"; exit 1; }
    fi
    echo "==> fuzz: building the targets"
    cargo fuzz build -O >/tmp/fuzz-build.$$ 2>&1 || { tail -40 /tmp/fuzz-build.$$; echo "FAIL fuzz build"; exit 1; }
    rm -f /tmp/fuzz-build.$$
    jobs=""
    # More than one job: libFuzzer forks workers (their logs go to fuzz/target/).
    [ "$FUZZ_JOBS" -gt 1 ] && jobs="-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS"
    printf '%-16s %12s %8s %8s %8s %6s  %s\n' target execs exec/s cov ft corpus result
    for t in "${targets[@]}"; do
        work=target/corpus-work/$t
        mkdir -p "$work" "artifacts/$t"
        log=target/fuzz-$t.log
        start=$(date +%s)
        # -timeout: one input may not take 10 s (an endless loop in the
        # tunnel is caught by the target itself, well before that).
        timeout $((FUZZ_SECS + 120)) cargo fuzz run -O "$t" "$work" "corpus/$t" -- \
            -max_total_time="$FUZZ_SECS" -dict=dict/http.dict -timeout=10 -rss_limit_mb=4096 \
            -print_final_stats=1 $jobs >"$log" 2>&1
        rc=$?
        secs=$(( $(date +%s) - start ))
        execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
        done_line=$(grep -E '#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
        [ -n "$done_line" ] || done_line=$(grep -E '#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|INITED)' "$log" | tail -1)
        cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$done_line")
        ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$done_line")
        corp=$(sed -nE 's/.*corp: ([0-9]+).*/\1/p' <<<"$done_line")
        if [ $rc -eq 0 ]; then
            result=ok
            passed=$((passed + 1))
        else
            result="CRASH (rc $rc, see fuzz/$log and fuzz/artifacts/$t/)"
            failed=$((failed + 1))
            grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -8
        fi
        printf '%-16s %12s %8s %8s %8s %6s  %s (%ss)\n' "$t" "$execs" "$((execs / (secs > 0 ? secs : 1)))" \
            "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result" "$secs"
    done
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
