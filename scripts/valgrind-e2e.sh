#!/usr/bin/env bash
# The end-to-end suite (a representative subset) against `httpd -X` (one process) running
# under valgrind memcheck. Fails on any memcheck error and on any definite leak (suppressions
# for httpd's and its libraries' own known reports: tests/valgrind/httpd.supp, each one
# explained there). Prints per-test-binary results, the valgrind summary of every httpd run,
# and a summary line.
#
#   scripts/valgrind-e2e.sh                       the default subset (VG_TESTS)
#   VG_TESTS="echo faults" scripts/valgrind-e2e.sh
#   VG_FILTER=seed_002 VG_TESTS=seeds scripts/valgrind-e2e.sh
#
# How: HTTPD points at a wrapper that runs `valgrind ... /usr/sbin/apache2 -X "$@"` (plain
# `-v`/`-l`/`-V`/`-M` go to httpd directly), so the harness needs no change: -X keeps the
# whole server in the one process valgrind watches. The module is a private copy (a rebuild
# during the run cannot swap the code under valgrind).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${HTTPD_REAL:=${HTTPD:-/usr/sbin/apache2}}" "${CARGO:=cargo}"
: "${WST_MODULE:=$PWD/build/mod_proxy_wstunnel.so}"
: "${VG_TESTS:=echo handshake spec faults}"
: "${VG_FILTER:=}"
command -v valgrind >/dev/null || { echo "FAIL valgrind not installed (apt-get install valgrind)"; exit 1; }
tmp=$(mktemp -d /tmp/wst-valgrind.XXXXXX)
keep=${VG_KEEP:-0}
trap '[ "$keep" = 1 ] || rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
cp "$WST_MODULE" "$tmp/mod_proxy_wstunnel.so"
mkdir -p "$tmp/logs" && chmod 1777 "$tmp/logs"
supp="$PWD/tests/valgrind/httpd.supp"
cat >"$tmp/httpd" <<WRAP
#!/bin/sh
case "\$1" in -v|-V|-l|-L|-M) exec "$HTTPD_REAL" "\$@";; esac
exec valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \\
    --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=40 \\
    --suppressions="$supp" --gen-suppressions=all \\
    --log-file="$tmp/logs/vg.%p.log" "$HTTPD_REAL" -X "\$@"
WRAP
chmod 755 "$tmp/httpd"

passed=0
failed=0
for t in $VG_TESTS; do
    echo "==> valgrind: e2e --test $t ${VG_FILTER}"
    if (cd tests/e2e && HTTPD="$tmp/httpd" WST_MODULE="$tmp/mod_proxy_wstunnel.so" \
            WST_VALGRIND=1 timeout 1800 $CARGO test --release --test "$t" -- --test-threads=1 $VG_FILTER) \
            >"$tmp/$t.log" 2>&1; then
        :
    fi
    grep -E "^test |test result" "$tmp/$t.log" | grep -vE "^test result: ok. 0 passed"
done

# Every httpd run's memcheck report.
runs=0
bad=0
for f in "$tmp"/logs/vg.*.log; do
    [ -e "$f" ] || continue
    runs=$((runs + 1))
    errs=$(sed -nE 's/.*ERROR SUMMARY: ([0-9]+) errors.*/\1/p' "$f" | tail -1)
    def=$(sed -nE 's/.*definitely lost: ([0-9,]+) bytes.*/\1/p' "$f" | tail -1 | tr -d ,)
    if [ -z "$errs" ]; then
        echo "valgrind: $(basename "$f"): no summary (httpd killed before exit?)"
        bad=$((bad + 1))
        cp "$f" "$tmp/incomplete-$(basename "$f")"
        continue
    fi
    if [ "$errs" != 0 ] || [ "${def:-0}" != 0 ]; then
        bad=$((bad + 1))
        echo "valgrind: $(basename "$f"): $errs errors, ${def:-0} bytes definitely lost"
        sed -n '/^==[0-9]*== [A-Z].*\(Invalid\|uninitialised\|definitely lost\|Mismatched\|overlap\|Syscall param\)/,/^==[0-9]*== $/p' "$f" | head -80
    fi
done
echo "valgrind: $runs httpd runs under memcheck, $((runs - bad)) clean, $bad with errors or definite leaks"
for t in $VG_TESTS; do
    p=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$tmp/$t.log" | awk '{s+=$4} END {print s+0}')
    f=$(grep -oE '[0-9]+ failed;' "$tmp/$t.log" | awk '{s+=$1} END {print s+0}')
    if ! grep -q 'test result' "$tmp/$t.log"; then f=$((f + 1)); tail -20 "$tmp/$t.log"; fi
    if [ "$f" -gt 0 ]; then grep -E "panicked at" -A3 "$tmp/$t.log" | head -30; fi
    passed=$((passed + p))
    failed=$((failed + f))
done
passed=$((passed + runs - bad))
failed=$((failed + bad))
[ "$keep" = 1 ] && echo "valgrind: logs kept in $tmp"
echo "valgrind: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
