#!/usr/bin/env bash
# `make test`: the core's unit tests, clippy's no-panic rules, the static
# checks of the built .so, and the end-to-end suite against a real httpd.
# Ends with one summary line "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
: "${CARGO:=cargo}" "${APXS:=apxs}" "${HTTPD:=/usr/sbin/apache2}" "${SO:=build/mod_proxy_wstunnel.so}"
log=$(mktemp)
fail_steps=()

step() {
    local name=$1; shift
    echo "==> $name"
    if ! "$@" 2>&1 | tee -a "$log"; then
        fail_steps+=("$name")
    fi
}

step "contract: src/ffi/contract.rs is bindgen's view of c_shim/include/wstunnel_core.h" \
    $CARGO run --quiet --locked --manifest-path tools/contract-gen/Cargo.toml -- --check
step "unit tests (Rust core)" $CARGO test --lib
step "clippy (no unwrap/expect/panic/indexing in the core)" $CARGO clippy --lib --release -- -D warnings
step "static checks of $SO (against $APXS's httpd)" sh apxs/check-so.sh "$SO" "$APXS"
step "httpd 2.2 API floor (apxs/api-httpd22.txt, api-newer.txt)" sh apxs/check-api.sh "$SO"
step "Rust core archives vs CentOS 6's ld 2.20 (self-test)" sh apxs/check-archive.sh --self-test
# The e2e suite on both tunnel paths: first the default (plain-socket tunnels
# handed to the child's reactor), then every group but the async_* ones (which
# set ProxyWebsocketAsync On themselves) again with WST_ASYNC=off, so that every
# generated config says ProxyWebsocketAsync Off (tunnels keep their worker).
step "end-to-end suite ($HTTPD), default path (tunnels handed to the reactor)" \
    env -u WST_ASYNC -C tests/e2e WST_MODULE="$PWD/$SO" HTTPD="$HTTPD" APXS="$APXS" \
    $CARGO test --release --no-fail-fast -- --test-threads=2
threaded_groups=()
for f in tests/e2e/tests/*.rs; do
    g=$(basename "$f" .rs)
    case $g in async_*) ;; *) threaded_groups+=(--test "$g") ;; esac
done
step "end-to-end suite ($HTTPD), threaded path (WST_ASYNC=off: ProxyWebsocketAsync Off)" \
    env -C tests/e2e WST_ASYNC=off WST_MODULE="$PWD/$SO" HTTPD="$HTTPD" APXS="$APXS" \
    $CARGO test --release --no-fail-fast "${threaded_groups[@]}" -- --test-threads=2

# Hardening (issue 6): bounded fuzzing of every core parser and state machine,
# a soak with 1,000 tunnels per MPM, the e2e subset under valgrind memcheck and
# against an AddressSanitizer build. Longer runs: FUZZ_SECS=600, SOAK_SECS=300.
step "fuzz (bounded)" env FUZZ_SECS="${FUZZ_SECS:-20}" scripts/fuzz.sh
step "soak (1000 tunnels, event and prefork)" env WST_MODULE="$PWD/$SO" SOAK_SECS="${SOAK_SECS:-30}" scripts/soak.sh
step "stop loop (stop, graceful, graceful-stop with and without ProxyWebsocketDrain; 100 busy tunnels, core dumps on)" env WST_MODULE="$PWD/$SO" HTTPD="$HTTPD" APXS="$APXS" SOAK_STOP_LOOP=5 SOAK_TUNNELS=100 scripts/soak.sh
step "valgrind memcheck (e2e subset, httpd -X)" env WST_MODULE="$PWD/$SO" HTTPD="$HTTPD" scripts/valgrind-e2e.sh
step "AddressSanitizer (e2e subset)" env APXS="$APXS" HTTPD="$HTTPD" scripts/asan-e2e.sh

step "i686 build and its static checks" make --no-print-directory i686
step "end-to-end suite, i686 module in a 32-bit httpd 2.4" env -C tests/e2e \
    WST_MODULE="$PWD/build/i686/mod_proxy_wstunnel.so" HTTPD="$PWD/build/i386-root/wst-httpd" \
    APXS="$PWD/build/i386-root/wst-apxs" $CARGO test --release --no-fail-fast -- --test-threads=2
step "end-to-end tunnels under a Linux 2.6.32 seccomp filter (CentOS 6's kernel), x86_64" \
    env WST_MODULE="$PWD/$SO" HTTPD="$HTTPD" APXS="$APXS" scripts/oldkernel-e2e.sh
step "end-to-end tunnels under a Linux 2.6.32 seccomp filter, i686 module in a 32-bit httpd" \
    env OLDKERNEL_ARCH=i686 OLDKERNEL_STRACE=0 WST_MODULE="$PWD/build/i686/mod_proxy_wstunnel.so" \
    HTTPD="$PWD/build/i386-root/usr/sbin/apache2" APXS="$PWD/build/i386-root/wst-apxs" \
    scripts/oldkernel-e2e.sh
step "RPM packages (make rpm) and packaging/check-rpm.sh" make --no-print-directory rpm rpm-check \
    APXS="$APXS" HTTPD="$HTTPD"
step "install guard (make install never overwrites a packaged file)" sh scripts/install-guard.sh --self-test
step "Debian package: make deb, lintian, dpkg -i, a2enmod, a WebSocket, purge" sh scripts/deb-check.sh
step "demo page in headless Chromium and Firefox ESR (ws:// and wss://)" sh scripts/browser-demo.sh

passed=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -oE '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
checks_ok=$(grep -c '^ok   ' "$log")
checks_fail=$(grep -c '^FAIL ' "$log")
rm -f "$log"
passed=$((passed + checks_ok))
failed=$((failed + checks_fail))
if [ ${#fail_steps[@]} -gt 0 ]; then
    echo "failed steps: ${fail_steps[*]}"
    [ "$failed" -gt 0 ] || failed=${#fail_steps[@]}
fi
echo "tests: $passed passed, $failed failed"
[ ${#fail_steps[@]} -eq 0 ] && [ "$failed" -eq 0 ]
