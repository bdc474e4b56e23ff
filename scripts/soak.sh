#!/usr/bin/env bash
# Soak: SOAK_TUNNELS (1000) concurrent tunnels through a real httpd carrying traffic for
# SOAK_SECS (60) seconds under each MPM of SOAK_MPMS ("event prefork"), then all closed;
# checks that httpd's children hold no more descriptors than before, no socket in CLOSE_WAIT,
# and an RSS within SOAK_RSS_PCT (5) percent of where it started (after SOAK_WARMUPS (3)
# warm-up rounds). Prints the figures (lines starting with "SOAK") and a summary line.
#
#   scripts/soak.sh                      both MPMs, 60 s each (about 2 minutes per MPM)
#   SOAK_SECS=300 scripts/soak.sh        a longer run
#   SOAK_MPMS=event scripts/soak.sh      one MPM
#
# The module under test is copied to a private file first (WST_MODULE, default
# build/mod_proxy_wstunnel.so), so that a rebuild during the run cannot change the code under
# a running httpd.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${SOAK_SECS:=60}" "${SOAK_TUNNELS:=1000}" "${SOAK_MPMS:=event prefork}" "${CARGO:=cargo}"
: "${WST_MODULE:=$PWD/build/mod_proxy_wstunnel.so}"
export SOAK_SECS SOAK_TUNNELS
tmp=$(mktemp -d /tmp/wst-soak.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp "$WST_MODULE" "$tmp/mod_proxy_wstunnel.so"
export WST_MODULE="$tmp/mod_proxy_wstunnel.so"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
passed=0
failed=0
for mpm in $SOAK_MPMS; do
    echo "==> soak: $mpm MPM, $SOAK_TUNNELS tunnels, ${SOAK_SECS}s"
    start=$(date +%s)
    if (cd tests/e2e && timeout $((SOAK_SECS + 600)) $CARGO test --release --test soak -- \
            --ignored --nocapture --exact "soak_$mpm") >"$tmp/$mpm.log" 2>&1; then
        passed=$((passed + 1))
        result=ok
    else
        failed=$((failed + 1))
        result=FAILED
        grep -E "panicked" -A3 "$tmp/$mpm.log" | head -20
    fi
    grep -E "^(SOAK|  (before|during|after|warm-up|round)|soak )" "$tmp/$mpm.log"
    echo "soak $mpm: $result in $(( $(date +%s) - start ))s"
done
echo "soak: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
