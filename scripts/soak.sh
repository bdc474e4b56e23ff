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
# Stop loop (SOAK_STOP_LOOP=N, tests/e2e/tests/stop_loop.rs): instead of the soak, per MPM of
# SOAK_MPMS (then "event worker prefork" by default), N rounds of: httpd with the module,
# SOAK_TUNNELS busy tunnels (echo traffic both ways), then -k stop, -k graceful (without and
# with ProxyWebsocketDrain) or -k graceful-stop (without and with it) in turn, the outcome
# checked (processes gone or a new generation serving, every client ended, Close 1001 where
# the module promises it), with core dumps on: `ulimit -c unlimited`, CoreDumpDirectory
# SOAK_CORE_DIR (default a fresh /tmp/wst-stop-cores.*; a self-test proves a SIGSEGV'd child
# leaves its core there). Any core, "exit signal" in the error log or hanging client fails the
# round; each core gets a gdb backtrace here and is kept (with a copy of the module) for more.
#
#   SOAK_STOP_LOOP=50 scripts/soak.sh                          50 rounds per MPM, 1,000 tunnels
#   SOAK_STOP_LOOP=5 SOAK_TUNNELS=100 scripts/soak.sh          the bounded CI variant
#   HTTPD=/opt/el6-httpd-2.2.15-x86_64-prefork/bin/httpd APXS=/opt/el6-httpd-2.2.15-x86_64-prefork/bin/apxs \
#     WST_MODULE=build/el6-soak/mod_proxy_wstunnel.so SOAK_MPMS=prefork SOAK_STOP_LOOP=10 scripts/soak.sh
#
# The module under test is copied to a private file first (WST_MODULE, default
# build/mod_proxy_wstunnel.so), so that a rebuild during the run cannot change the code under
# a running httpd.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${SOAK_STOP_LOOP:=0}" "${SOAK_SECS:=60}" "${SOAK_TUNNELS:=1000}" "${CARGO:=cargo}"
if [ "$SOAK_STOP_LOOP" -gt 0 ]; then
    : "${SOAK_MPMS:=event worker prefork}"
else
    : "${SOAK_MPMS:=event prefork}"
fi
: "${WST_MODULE:=$PWD/build/mod_proxy_wstunnel.so}"
export SOAK_SECS SOAK_TUNNELS SOAK_STOP_LOOP
tmp=$(mktemp -d /tmp/wst-soak.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp "$WST_MODULE" "$tmp/mod_proxy_wstunnel.so"
export WST_MODULE="$tmp/mod_proxy_wstunnel.so"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$SOAK_STOP_LOOP" -gt 0 ]; then
    ulimit -c unlimited 2>/dev/null || ulimit -c "$(ulimit -Hc)"
    : "${SOAK_CORE_DIR:=$(mktemp -d /tmp/wst-stop-cores.XXXXXX)}"
    mkdir -p "$SOAK_CORE_DIR" && chmod 1777 "$SOAK_CORE_DIR"
    export SOAK_CORE_DIR
    echo "stop loop: $SOAK_STOP_LOOP rounds per MPM ($SOAK_MPMS), $SOAK_TUNNELS tunnels," \
         "cores in $SOAK_CORE_DIR (RLIMIT_CORE $(ulimit -c), core_pattern" \
         "'$(cat /proc/sys/kernel/core_pattern 2>/dev/null)')"
fi

# gdb backtraces of the cores a stop loop left in $1, kept with a copy of the module.
backtraces() {
    local core httpd=${HTTPD:-/usr/sbin/apache2} any=
    for core in "$1"/core*; do
        [ -f "$core" ] || continue
        any=1
        echo "==> core $core"
        if command -v gdb >/dev/null; then
            gdb -q -batch -ex "info sharedlibrary mod_proxy_wstunnel" -ex "bt full 12" \
                -ex "thread apply all bt 30" "$httpd" "$core" 2>&1 | head -400
        else
            echo "(no gdb: apt-get install gdb)"
        fi
    done
    if [ -n "$any" ]; then
        cp "$WST_MODULE" "$1/" 2>/dev/null || true
        echo "cores kept in $1 (with the module under test)"
    fi
}

passed=0
failed=0
for mpm in $SOAK_MPMS; do
    start=$(date +%s)
    if [ "$SOAK_STOP_LOOP" -gt 0 ]; then
        echo "==> stop loop: $mpm MPM, $SOAK_STOP_LOOP rounds, $SOAK_TUNNELS tunnels"
        test=stop_loop
        limit=$((SOAK_STOP_LOOP * 90 + 300))
    else
        echo "==> soak: $mpm MPM, $SOAK_TUNNELS tunnels, ${SOAK_SECS}s"
        test=soak
        limit=$((SOAK_SECS + 600))
    fi
    cores="${SOAK_CORE_DIR:-}"
    if [ "$SOAK_STOP_LOOP" -gt 0 ]; then
        cores="$SOAK_CORE_DIR/$mpm"
        mkdir -p "$cores" && chmod 1777 "$cores"
    fi
    if (cd tests/e2e && { [ -z "$cores" ] || export SOAK_CORE_DIR="$cores"; } && timeout "$limit" $CARGO test --release --test "$test" -- \
            --ignored --nocapture --exact "${test}_$mpm") >"$tmp/$mpm.log" 2>&1; then
        passed=$((passed + 1))
        result=ok
    else
        failed=$((failed + 1))
        result=FAILED
        grep -E "panicked" -A3 "$tmp/$mpm.log" | head -20
        if [ "$SOAK_STOP_LOOP" -gt 0 ]; then
            # The whole log (late children's backtraces, error-log excerpts) is kept.
            cp "$tmp/$mpm.log" "$cores/test.log" && echo "test log kept: $cores/test.log"
        fi
    fi
    grep -E "^(SOAK|STOPLOOP|  FAIL|  (before|during|after|warm-up|round)|soak |SKIP)" "$tmp/$mpm.log"
    if [ "$SOAK_STOP_LOOP" -gt 0 ]; then
        backtraces "$cores"
        rmdir "$cores" 2>/dev/null || true
    fi
    echo "soak $mpm: $result in $(( $(date +%s) - start ))s"
done
[ "$SOAK_STOP_LOOP" -gt 0 ] && rmdir "$SOAK_CORE_DIR" 2>/dev/null || true
echo "soak: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
