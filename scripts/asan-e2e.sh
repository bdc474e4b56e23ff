#!/usr/bin/env bash
# AddressSanitizer: build the module with the C shim compiled with -fsanitize=address (gcc,
# through apxs) and the Rust core instrumented too (-Zsanitizer=address, the stable compiler
# with RUSTC_BOOTSTRAP=1), into build/asan/mod_proxy_wstunnel.so; then run a subset of the
# end-to-end suite against it, httpd (not itself instrumented) started with gcc's libasan
# preloaded. Any ASan report from any httpd process fails the run (reports are collected from
# ASAN_OPTIONS=log_path files, since httpd's children have no terminal).
#
#   scripts/asan-e2e.sh                    build + the default subset (ASAN_TESTS)
#   ASAN_BUILD_ONLY=1 scripts/asan-e2e.sh  build only
#   ASAN_TESTS="faults" scripts/asan-e2e.sh
#
# LeakSanitizer runs at every httpd process exit; leaks whose stacks have no frame in the
# module are httpd's and its libraries' (suppressed by object: tests/valgrind/lsan.supp).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${APXS:=$(command -v apxs 2>/dev/null || command -v apxs2 2>/dev/null || echo apxs)}"
: "${HTTPD_REAL:=${HTTPD:-/usr/sbin/apache2}}" "${CARGO:=cargo}"
: "${ASAN_TESTS:=echo handshake spec faults seeds}"
: "${ASAN_FILTER:=}"
root=$PWD
out=build/asan
mkdir -p "$out/obj"

libasan=$(gcc -print-file-name=libasan.so)
libasan=$(readlink -f "$libasan")
[ -f "$libasan" ] || { echo "FAIL no libasan (apt-get install libasan8 / gcc)"; exit 1; }

echo "==> asan: Rust core with -Zsanitizer=address"
RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes" CARGO_PROFILE_RELEASE_LTO=off \
    $CARGO build --release --lib --target x86_64-unknown-linux-gnu --target-dir target/asan \
    >"$out/cargo.log" 2>&1 || { tail -30 "$out/cargo.log"; echo "FAIL asan core build"; exit 1; }
core=target/asan/x86_64-unknown-linux-gnu/release/libwstunnel_core.a
checks=$(nm "$core" 2>/dev/null | grep -c "U __asan_report_load" || true)
[ "${checks:-0}" -gt 0 ] || { echo "FAIL the Rust core is not instrumented ($core)"; exit 1; }

echo "==> asan: C shim with -fsanitize=address, linked by apxs"
rm -rf "$out/obj"/*
cp c_shim/*.c "$out/obj/"
(cd "$out/obj" && $APXS -c -o mod_proxy_wstunnel.la \
    -I"$root/c_shim" -I"$root/c_shim/include" \
    -Wc,-fsanitize=address -Wc,-fno-omit-frame-pointer -Wc,-g -Wc,-O1 \
    -Wc,-Wall -Wc,-Wextra -Wc,-Wno-unused-parameter -Wc,-Wno-missing-field-initializers \
    -Wl,-fsanitize=address \
    -Wl,-Wl,--version-script="$root/apxs/exports.map" \
    *.c "$root/$core") >"$out/build.log" 2>&1 \
    || { cat "$out/build.log"; echo "FAIL asan shim build"; exit 1; }
cp "$out/obj/.libs/mod_proxy_wstunnel.so" "$out/mod_proxy_wstunnel.so.tmp"
mv -f "$out/mod_proxy_wstunnel.so.tmp" "$out/mod_proxy_wstunnel.so"
checks=$(nm -D "$out/mod_proxy_wstunnel.so" 2>/dev/null | grep -c " U __asan_init" || true)
[ "${checks:-0}" -gt 0 ] || { echo "FAIL $out/mod_proxy_wstunnel.so is not instrumented"; exit 1; }
echo "built $out/mod_proxy_wstunnel.so (preload $libasan)"
[ "${ASAN_BUILD_ONLY:-0}" = 1 ] && exit 0

tmp=$(mktemp -d /tmp/wst-asan.XXXXXX)
keep=${ASAN_KEEP:-0}
trap '[ "$keep" = 1 ] || rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/reports" && chmod 1777 "$tmp/reports"
cp "$out/mod_proxy_wstunnel.so" "$tmp/mod_proxy_wstunnel.so"
lsan_supp="$PWD/tests/valgrind/lsan.supp"
cat >"$tmp/httpd" <<WRAP
#!/bin/sh
export LD_PRELOAD="$libasan"
export ASAN_OPTIONS="log_path=$tmp/reports/asan:detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_odr_violation=0:allow_user_segv_handler=1:handle_segv=1:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$lsan_supp:print_suppressions=0"
exec "$HTTPD_REAL" "\$@"
WRAP
chmod 755 "$tmp/httpd"

passed=0
failed=0
for t in $ASAN_TESTS; do
    echo "==> asan: e2e --test $t $ASAN_FILTER"
    (cd tests/e2e && HTTPD="$tmp/httpd" WST_MODULE="$tmp/mod_proxy_wstunnel.so" \
        timeout 1800 $CARGO test --release --test "$t" -- --test-threads=2 $ASAN_FILTER) >"$tmp/$t.log" 2>&1
    grep -E "^test .*(ok|FAILED|ignored)$|test result" "$tmp/$t.log" | grep -E "FAILED|test result"
    p=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$tmp/$t.log" | awk '{s+=$4} END {print s+0}')
    f=$(grep -oE '[0-9]+ failed;' "$tmp/$t.log" | awk '{s+=$1} END {print s+0}')
    if ! grep -q 'test result' "$tmp/$t.log"; then f=$((f + 1)); tail -20 "$tmp/$t.log"; fi
    [ "$f" -gt 0 ] && grep -E "panicked at" -A3 "$tmp/$t.log" | head -30
    passed=$((passed + p))
    failed=$((failed + f))
done

reports=$(ls "$tmp/reports" 2>/dev/null | wc -l)
if [ "$reports" -gt 0 ]; then
    echo "asan: $reports report file(s):"
    for r in "$tmp"/reports/*; do
        echo "--- $(basename "$r")"
        grep -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|SUMMARY|#[0-9]+ " "$r" | head -30
    done
    failed=$((failed + reports))
else
    echo "asan: no AddressSanitizer or LeakSanitizer report from any httpd process"
    passed=$((passed + 1))
fi
[ "$keep" = 1 ] && echo "asan: logs kept in $tmp"
echo "asan: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
