#!/usr/bin/env bash
# The tunnel-heavy part of the end-to-end suite with httpd running under a
# seccomp filter that makes what Linux 2.6.32 (CentOS 6) lacks fail the way
# that kernel fails it (tests/oldkernel/seccomp-2.6.32.c): F_SETPIPE_SZ and
# F_GETPIPE_SZ give EINVAL, pipe2(O_DIRECT) and madvise(MADV_FREE...) EINVAL,
# system calls added after 2.6.32 ENOSYS. The module must fall back (default
# pipe capacity, no pipe growth) and still carry every byte.
#
#   scripts/oldkernel-e2e.sh
#   OLDKERNEL_TESTS="echo large" scripts/oldkernel-e2e.sh
#   OLDKERNEL_ARCH=i686 scripts/oldkernel-e2e.sh      (the 32-bit module)
#
# Environment:
#   OLDKERNEL_ARCH    x86_64 (default) | i686: the i686 module in the
#                     unpacked 32-bit httpd of scripts/setup-i686.sh
#                     (build/i386-root), under the i686 launcher
#   WST_MODULE        module under test (default build/mod_proxy_wstunnel.so,
#                     i686: build/i686/mod_proxy_wstunnel.so; a private copy
#                     is tested, so a rebuild cannot swap it)
#   HTTPD             the real httpd (default /usr/sbin/apache2, i686:
#                     build/i386-root/usr/sbin/apache2 with its library path)
#   APXS              its apxs (default apxs2, else apxs; i686:
#                     build/i386-root/wst-apxs)
#   OLDKERNEL_TESTS   e2e test binaries (default below)
#   OLDKERNEL_THREADS cargo test threads (default 2)
#   OLDKERNEL_STRACE  auto (default: if strace is installed) | 1 | 0: first
#                     run large's sixteen_mib_messages_plain under strace and
#                     check that F_SETPIPE_SZ was tried, got EINVAL, and that
#                     splice still moved the data
#   OLDKERNEL_I686    auto (default) | 1 | 0: also build the launcher for
#                     i686 (gcc -m32, libseccomp.a from libseccomp-dev:i386,
#                     fetched with apt-get download and unpacked, never
#                     installed); auto: a failure is only a warning (with
#                     OLDKERNEL_ARCH=i686 it is required)
#
# Output: build/oldkernel/ (launchers; wrapper and logs in build/oldkernel/
# <arch>/). Exit status non-zero if a launcher cannot be built, the filter is
# not in force, or any test fails.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
top=$repo/build/oldkernel
src=$repo/tests/oldkernel/seccomp-2.6.32.c
: "${OLDKERNEL_ARCH:=x86_64}"
libpath=
case $OLDKERNEL_ARCH in
x86_64)
    : "${WST_MODULE:=$repo/build/mod_proxy_wstunnel.so}"
    : "${HTTPD:=/usr/sbin/apache2}"
    if [ -z "${APXS:-}" ]; then
        if command -v apxs2 >/dev/null; then APXS=apxs2; else APXS=apxs; fi
    fi
    ;;
i686)
    env_file=$repo/build/i386-root/wst-i386.env
    [ -f "$env_file" ] || { echo "oldkernel-e2e: FAIL no $env_file (run scripts/setup-i686.sh)" >&2; exit 1; }
    # shellcheck disable=SC1090
    . "$env_file"
    : "${WST_MODULE:=$repo/build/i686/mod_proxy_wstunnel.so}"
    : "${HTTPD:=$WST_I386_HTTPD}"
    : "${APXS:=$WST_I386_APXS_WRAPPER}"
    libpath=$WST_I386_LD_LIBRARY_PATH
    OLDKERNEL_I686=1
    ;;
*) echo "oldkernel-e2e: FAIL OLDKERNEL_ARCH must be x86_64 or i686" >&2; exit 1 ;;
esac
out=$top/$OLDKERNEL_ARCH
# Every binary that pushes tunnel traffic: plain and WebSocket echo, 16 MiB
# messages (splice, pipes), TLS on either side, the fault matrix (100 MiB
# message, resets, half-closes, stalls), backpressure and descriptor counts,
# keep-alive pings and drains, stop with open tunnels, each MPM, handshake
# relaying, the spec's error paths, balancer routes.
: "${OLDKERNEL_TESTS:=echo large tls faults resources keepalive lifecycle mpm handshake spec routes}"
: "${OLDKERNEL_THREADS:=2}"
: "${OLDKERNEL_STRACE:=auto}"
: "${OLDKERNEL_I686:=auto}"
: "${CARGO:=cargo}"

say() { echo "oldkernel-e2e: $*"; }
die() { echo "oldkernel-e2e: FAIL $*" >&2; exit 1; }

mkdir -p "$out" || die "cannot create $out"
start=$(date +%s)

# ---- the launchers ---------------------------------------------------------
[ -f /usr/include/seccomp.h ] || die "no <seccomp.h>: apt-get install libseccomp-dev"
gcc -O2 -Wall -Wextra -Werror -o "$top/seccomp-2.6.32" "$src" -lseccomp \
    || die "cannot build $top/seccomp-2.6.32"
say "built $top/seccomp-2.6.32 (x86_64)"

build_i686() {
    local ver deb libdir=$top/i386-root/usr/lib/i386-linux-gnu
    gcc -m32 -x c -o /dev/null - <<<'int main(void){return 0;}' 2>/dev/null \
        || { echo "gcc -m32 cannot link (apt-get install gcc-multilib)"; return 1; }
    if [ ! -f "$libdir/libseccomp.a" ]; then
        ver=$(dpkg-query -W -f='${Version}' libseccomp-dev 2>/dev/null) || ver=
        mkdir -p "$top/i386-debs" || return 1
        (cd "$top/i386-debs" && apt-get download -q -o APT::Sandbox::User=root \
            "libseccomp-dev:i386${ver:+=$ver}" >/dev/null 2>&1) \
            || { echo "apt-get download libseccomp-dev:i386 failed (dpkg --add-architecture i386; apt-get update)"; return 1; }
        deb=$(ls "$top"/i386-debs/libseccomp-dev_*_i386.deb 2>/dev/null | tail -1)
        [ -n "$deb" ] && dpkg-deb -x "$deb" "$top/i386-root" || return 1
    fi
    # Static libseccomp: the 32-bit launcher then needs only libc6-i386.
    gcc -m32 -O2 -Wall -Wextra -Werror -o "$top/seccomp-2.6.32.i686" "$src" \
        "$libdir/libseccomp.a" || return 1
    "$top/seccomp-2.6.32.i686" --check || { echo "the i686 launcher's self-test failed"; return 1; }
}
if [ "$OLDKERNEL_I686" != 0 ]; then
    if msg=$(build_i686 2>&1); then
        say "built $top/seccomp-2.6.32.i686 (i686; self-test passed)"
    elif [ "$OLDKERNEL_I686" = 1 ]; then
        die "i686 launcher: $msg"
    else
        say "warning: no i686 launcher: $msg"
    fi
fi

if [ "$OLDKERNEL_ARCH" = i686 ]; then
    launcher=$top/seccomp-2.6.32.i686
else
    launcher=$top/seccomp-2.6.32
fi
# The filter must be in force (the launcher checks, and exits 125 if not).
check=$("$launcher" -v --check 2>&1) || die "launcher self-test: $check"
say "${check##*$'\n'}"

# ---- the module and the httpd wrapper --------------------------------------
[ -f "$WST_MODULE" ] || die "module $WST_MODULE missing (run make)"
command -v "$HTTPD" >/dev/null || die "no httpd $HTTPD"
HTTPD=$(command -v "$HTTPD")
cp "$WST_MODULE" "$out/mod_proxy_wstunnel.so" || die "cannot copy $WST_MODULE"
module=$out/mod_proxy_wstunnel.so
launches=$out/launches.log
: >"$launches"
wrapper=$out/httpd-2.6.32
# exec all the way: httpd keeps the pid the harness spawned (it compares the
# PidFile with it). -v and -l run under the filter too.
# i686: the library path is set here, not by build/i386-root/wst-httpd: the
# 32-bit filter must wrap the 32-bit httpd itself (a 64-bit /bin/sh under it
# would be killed as a foreign architecture).
ldline=
if [ -n "$libpath" ]; then
    ldline="LD_LIBRARY_PATH='$libpath'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}; export LD_LIBRARY_PATH"
fi
cat >"$wrapper" <<EOF
#!/bin/sh
# Generated by scripts/oldkernel-e2e.sh: $HTTPD under the Linux 2.6.32 filter.
$ldline
SECCOMP_2632_LOG='$launches'
export SECCOMP_2632_LOG
exec '$launcher' '$HTTPD' "\$@"
EOF
chmod 755 "$wrapper"
ver=$("$wrapper" -v 2>&1) || die "httpd does not start under the filter: $ver"
say "$(echo "$ver" | head -1 | sed 's/^Server version: //') starts under the filter"

run_e2e() { # log file, cargo test arguments...
    local log=$1
    shift
    (cd "$repo/tests/e2e" && WST_MODULE="$module" HTTPD="$HTTPD_WRAPPED" APXS="$APXS" \
        "$CARGO" test --release --no-fail-fast "$@") >"$log" 2>&1
}

# ---- strace: the fallback is really taken ----------------------------------
rc=0
if [ "$OLDKERNEL_STRACE" = 1 ] || { [ "$OLDKERNEL_STRACE" = auto ] && command -v strace >/dev/null; }; then
    command -v strace >/dev/null || die "OLDKERNEL_STRACE=1 but no strace (apt-get install strace)"
    traces=$out/strace
    rm -rf "$traces" && mkdir -p "$traces"
    swrapper=$out/httpd-2.6.32-strace
    # -D: strace is a grandchild, so httpd keeps the harness's child pid.
    cat >"$swrapper" <<EOF
#!/bin/sh
# Generated by scripts/oldkernel-e2e.sh: the filtered httpd, traced.
case "\$1" in -v|-V|-l|-L|-M) exec '$wrapper' "\$@";; esac
exec strace -D -f -qq -e signal=none -e trace=execve,fcntl,fcntl64,pipe2,splice -ff -o '$traces/t' '$wrapper' "\$@"
EOF
    chmod 755 "$swrapper"
    say "strace: large sixteen_mib_messages_plain under the filter"
    HTTPD_WRAPPED=$swrapper run_e2e "$out/strace-run.log" --test large -- --exact sixteen_mib_messages_plain
    st=$?
    grep -E "^test |test result" "$out/strace-run.log"
    # httpd's calls only: what a process did after its last execve (the
    # launcher's own self-test comes before it exec's httpd).
    httpd_calls() {
        local f
        for f in "$traces"/t.*; do
            [ -e "$f" ] || continue
            awk '/^execve\(/ {buf = ""; next} {buf = buf $0 "\n"} END {printf "%s", buf}' "$f"
        done
    }
    calls=$out/strace-httpd-calls.log
    httpd_calls >"$calls"
    set_einval=$(grep -cE 'F_SETPIPE_SZ.* = -1 EINVAL' "$calls")
    set_ok=$(grep -E 'F_SETPIPE_SZ' "$calls" | grep -vcE ' = -1 ')
    get_einval=$(grep -cE 'F_GETPIPE_SZ.* = -1 EINVAL' "$calls")
    pipes=$(grep -cE '^pipe2\(.*O_NONBLOCK\|O_CLOEXEC\) += 0' "$calls")
    spliced=$(sed -nE 's/^splice\(.*\) += ([0-9]+)$/\1/p' "$calls" \
        | awk '{n++; s+=$1} END {printf "%d calls, %d bytes", n, s}')
    # The most a splice asked for: the pipe's capacity as the module sees it.
    biggest=$(sed -nE 's/^splice\([0-9]+, NULL, [0-9]+, NULL, ([0-9]+),.*/\1/p' "$calls" \
        | sort -n | tail -1)
    say "strace: pipes made $pipes; F_GETPIPE_SZ -> EINVAL $get_einval; F_SETPIPE_SZ -> EINVAL $set_einval, succeeded $set_ok; splice moved $spliced; largest splice asked ${biggest:-0} bytes"
    if [ $st != 0 ]; then
        say "strace run FAILED (log: $out/strace-run.log)"
        rc=1
    elif [ "$set_einval" -lt 1 ] || [ "$set_ok" != 0 ] || [ "$get_einval" -lt 1 ]; then
        say "strace: FAIL the pipe-size fallback was not exercised (traces: $traces)"
        rc=1
    elif [ "${spliced%% *}" -lt 1 ]; then
        say "strace: FAIL no data went through splice under the filter (traces: $traces)"
        rc=1
    elif [ "${biggest:-0}" -gt 65536 ]; then
        say "strace: FAIL a splice asked for more than the default 64 KiB pipe holds (traces: $traces)"
        rc=1
    else
        say "strace: OK the module asked for bigger pipes, got EINVAL, kept 64 KiB pipes and spliced on"
    fi
fi

# ---- the suite ---------------------------------------------------------------
args=()
for t in $OLDKERNEL_TESTS; do args+=(--test "$t"); done
say "e2e under the filter: ${OLDKERNEL_TESTS} (--test-threads=$OLDKERNEL_THREADS)"
before=$(wc -l <"$launches")
HTTPD_WRAPPED=$wrapper run_e2e "$out/e2e.log" "${args[@]}" -- --test-threads="$OLDKERNEL_THREADS"
st=$?
grep -E "^test .*(FAILED|ignored)|^     Running|test result" "$out/e2e.log" \
    | sed -E 's#^ +Running tests/([a-z_0-9]+)\.rs.*#== \1#'
passed=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$out/e2e.log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -oE '[0-9]+ failed;' "$out/e2e.log" | awk '{s+=$1} END {print s+0}')
ignored=$(grep -oE '[0-9]+ ignored;' "$out/e2e.log" | awk '{s+=$1} END {print s+0}')
binaries=$(grep -c 'test result' "$out/e2e.log")
filtered=$(( $(wc -l <"$launches") - before ))
if [ $st != 0 ]; then
    grep -E "panicked at" -A4 "$out/e2e.log" | head -60
    rc=1
fi
if [ "$filtered" -lt 1 ]; then
    say "FAIL no httpd was started under the filter"
    rc=1
fi
[ "$binaries" -eq "$(echo $OLDKERNEL_TESTS | wc -w)" ] || { say "FAIL only $binaries test binaries reported"; rc=1; }
say "filter active in $filtered httpd launches (each checked F_SETPIPE_SZ -> EINVAL, recvmmsg -> ENOSYS before exec; $launches)"
say "$binaries test binaries: $passed passed, $failed failed, $ignored ignored; $(( $(date +%s) - start )) s (log: $out/e2e.log)"
if [ $rc = 0 ]; then say "PASS"; else say "FAIL"; fi
exit $rc
