#!/bin/sh
# The Debian package (make deb) in this system's real apache2, from dpkg -i to
# dpkg --purge, leaving the system as it was found:
#
#   1. the package: Depends on this apache2's apache2-api-<MMN>, the module
#      under its own name (not apache2-bin's mod_proxy_wstunnel.so), a .load
#      with "# Depends: proxy" and "# Conflicts: proxy_wstunnel", a .conf with
#      every directive of README.md's Configuration table; lintian clean
#      (errors and warnings; overrides and infos shown);
#   2. install over an enabled stock proxy_wstunnel: dpkg -i enables
#      proxy_wstunnel_rs (and proxy) and switches the stock one off;
#      apache2ctl configtest passes;
#   3. apache2 with the system's mods-enabled and conf-enabled, on
#      127.0.0.1:<free port> only (apache2 -f with its own Listen: the system's
#      ports.conf and sites, port 80, are not read), carries WebSocket messages
#      through the module to an echo backend, and the tunnel is ours (WST012);
#   4. dpkg --purge gives the stock module back (enabled, its .load naming
#      apache2-bin's file) and leaves nothing of the package behind;
#   5. reinstall, then switch by hand: a2enmod proxy_wstunnel_rs refuses while
#      the stock module is enabled; with both enabled (a2enmod proxy_wstunnel
#      does not refuse: apache2's .load has no Conflicts line) httpd loads only
#      one (AH01574); purge after the admin switched the stock module off
#      leaves it off, and a2enmod proxy_wstunnel works again.
#
#   sh scripts/deb-check.sh                 builds the package (make deb) first
#   DEB=path/to/pkg.deb sh scripts/deb-check.sh
#
# Needs root, Debian's apache2, lintian, and tests/e2e's wst-client and wst-echo
# (built here with cargo, offline, if missing). Before it changes anything it
# saves /etc/apache2 and /var/lib/apache2 (a2enmod's state) and restores them
# at the end, also on failure or Ctrl-C; a policy-rc.d that stops
# maintainer scripts from starting the system's apache2 (on port 80) is put in
# place for the run if there is none. Prints "ok   ..." / "FAIL ..." lines;
# exit status 1 if any check failed.

set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
PKG=libapache2-mod-proxy-wstunnel-rs
MOD=proxy_wstunnel_rs
MODS=/etc/apache2/mods-available
ENABLED=/etc/apache2/mods-enabled
MODDIR=/usr/lib/apache2/modules
BIN=$ROOT/tests/e2e/target/release
CARGO=${CARGO:-cargo}
fail=0

ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
check() { # check "description" command...: ok/FAIL by the command's status
    d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
section() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/    /'; }
die() { echo "FAIL $*"; exit 1; }

# ---- prerequisites (nothing changed yet) ----------------------------------------------------
[ "$(id -u)" = 0 ] || die "deb-check installs a package into the system's apache2: run it as root"
for t in dpkg dpkg-deb dpkg-query a2enmod a2dismod a2query apache2ctl lintian tar md5sum; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (apt-get install apache2 lintian)"
done
[ -x /usr/sbin/apache2 ] || die "/usr/sbin/apache2 not found (apt-get install apache2)"
[ -f "$MODS/proxy_wstunnel.load" ] || die "$MODS/proxy_wstunnel.load (apache2's) not found"
if dpkg-query -W -f='${Status}\n' "$PKG" 2>/dev/null | grep -qv 'not-installed'; then
    die "$PKG is installed (or its configuration is): dpkg --purge $PKG first, so that the check can leave the system as it finds it"
fi

T0=$(date +%s)
if [ -z "${DEB:-}" ]; then
    section "make deb"
    if grep -q 'packaging/deb.mk' Makefile; then
        make --no-print-directory deb || die "make deb failed"
    else
        make --no-print-directory -f Makefile -f packaging/deb.mk deb || die "make deb failed"
    fi
    DEB=$(ls -t build/deb/"${PKG}"_*_"$(dpkg --print-architecture)".deb 2>/dev/null | head -1)
fi
[ -f "${DEB:-}" ] || die "no package: DEB=${DEB:-} (make deb)"
CHANGES=${DEB%.deb}.changes
if [ ! -x "$BIN/wst-client" ] || [ ! -x "$BIN/wst-echo" ]; then
    "$CARGO" build --release --quiet --offline --manifest-path tests/e2e/Cargo.toml --bins \
        || die "cargo build of tests/e2e (wst-client, wst-echo) failed"
fi

# ---- state saved, and put back on exit ------------------------------------------------------
TMP=$(mktemp -d /tmp/wst-deb-check.XXXXXX) || die "mktemp failed"
chmod 755 "$TMP"
mkdir -p "$TMP/run" "$TMP/lock" "$TMP/logs"
# Every path, type, mode, link target and file digest under the two trees.
state() {
    find /etc/apache2 /var/lib/apache2 -printf '%p %y %m %l\n' 2>/dev/null | LC_ALL=C sort
    find /etc/apache2 /var/lib/apache2 -type f -exec md5sum {} + 2>/dev/null | LC_ALL=C sort -k2
}
state >"$TMP/state.before"
tar -C / -cpf "$TMP/apache2-state.tar" etc/apache2 var/lib/apache2 || die "could not save /etc/apache2"
listening_80_before=$(awk '$4 == "0A" && $2 ~ /:0050$/' /proc/net/tcp /proc/net/tcp6 2>/dev/null | wc -l)
POLICY_ADDED=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# deb-check.sh: no service starts during the check\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_ADDED=1
fi
HTTPD_PID=
ECHO_PID=

stop_pid() { # pid, tenths of a second to wait before SIGKILL
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt "$2" ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$1" 2>/dev/null
    return 0
}
cleanup() {
    trap - EXIT INT TERM
    stop_pid "$HTTPD_PID" 100
    stop_pid "$ECHO_PID" 20
    HTTPD_PID= ECHO_PID=
    section "system restored"
    if dpkg-query -W -f='${Status}\n' "$PKG" 2>/dev/null | grep -qv 'not-installed'; then
        dpkg --purge "$PKG" >"$TMP/purge-at-exit.log" 2>&1 || cat "$TMP/purge-at-exit.log"
    fi
    if [ -n "$POLICY_ADDED" ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    state >"$TMP/state.end"
    if ! cmp -s "$TMP/state.before" "$TMP/state.end"; then
        echo "    what the run changed under /etc/apache2 and /var/lib/apache2 (put back from the saved copy):"
        diff "$TMP/state.before" "$TMP/state.end" | awk '$1 ~ /^[<>]$/ && $2 ~ /^\// {print "    " $1 " " $2}' \
            | sort -u -k2 | head -20
        rm -rf /etc/apache2 /var/lib/apache2
        tar -C / -xpf "$TMP/apache2-state.tar"
    fi
    state >"$TMP/state.after"
    if cmp -s "$TMP/state.before" "$TMP/state.after"; then
        ok "/etc/apache2 and /var/lib/apache2 as found (every path, mode, link and digest)"
    else
        bad "/etc/apache2 or /var/lib/apache2 differ from the start:"
        diff "$TMP/state.before" "$TMP/state.after" | head -20 | indent
    fi
    if dpkg-query -W -f='${Status}\n' "$PKG" 2>/dev/null | grep -qv 'not-installed'; then
        bad "$PKG still installed"
    else
        ok "$PKG not installed"
    fi
    if [ -n "$POLICY_ADDED" ] && [ -e /usr/sbin/policy-rc.d ]; then
        bad "/usr/sbin/policy-rc.d (added for the run) still there"
    fi
    rm -rf "$TMP"
    echo
    echo "deb-check: $(( $(date +%s) - T0 )) s, $( [ $fail = 0 ] && echo 'all checks passed' || echo 'FAILED' )"
    exit $fail
}
trap cleanup EXIT
trap 'fail=1; exit 130' INT
trap 'fail=1; exit 143' TERM

# a2query -m's answer: 0 enabled, 1 unknown, 32 disabled by the admin, 33 by a maintainer script.
modstate() { r=0; a2query -q -m "$1" >/dev/null 2>&1 || r=$?; echo $r; }
# The .so named by the LoadModule line of a .load file.
load_target() { awk '$1 == "LoadModule" {print $3}' "$1" 2>/dev/null; }
configtest() { apache2ctl configtest >"$TMP/configtest.log" 2>&1; }

# ---- 1. the package ---------------------------------------------------------------------------
section "package $(basename "$DEB")"
dpkg-deb -f "$DEB" Package Version Architecture Depends | indent
mmn=$(a2query -a 2>/dev/null)
deps=$(dpkg-deb -f "$DEB" Depends)
check "Depends on this apache2's ABI, apache2-api-$mmn" \
    sh -c "echo '$deps' | tr ',' '\n' | grep -qx ' *apache2-api-$mmn *'"
dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's,^\./,/,' >"$TMP/contents"
check "the module is $MODDIR/mod_proxy_wstunnel_rs.so" grep -qx "$MODDIR/mod_proxy_wstunnel_rs.so" "$TMP/contents"
check "apache2-bin's $MODDIR/mod_proxy_wstunnel.so is not in the package" \
    sh -c "! grep -qx '$MODDIR/mod_proxy_wstunnel.so' '$TMP/contents'"
check "$MODS/$MOD.load and .conf are in the package" \
    sh -c "grep -qx '$MODS/$MOD.load' '$TMP/contents' && grep -qx '$MODS/$MOD.conf' '$TMP/contents'"
dpkg-deb -x "$DEB" "$TMP/unpacked"
load="$TMP/unpacked$MODS/$MOD.load"
sed 's/^/    | /' "$load"
check ".load: '# Depends: proxy' (a2enmod enables mod_proxy first)" grep -qx '# Depends: proxy' "$load"
check ".load: '# Conflicts: proxy_wstunnel' (a2enmod refuses to enable both)" grep -qx '# Conflicts: proxy_wstunnel' "$load"
check ".load: LoadModule proxy_wstunnel_module $MODDIR/mod_proxy_wstunnel_rs.so" \
    grep -qx "LoadModule proxy_wstunnel_module $MODDIR/mod_proxy_wstunnel_rs.so" "$load"
conf="$TMP/unpacked$MODS/$MOD.conf"
directives=$(sed -n 's/^| `\(ProxyWebsocket[A-Za-z]*\).*/\1/p' README.md | sort -u)
missing=
for d in $directives; do
    grep -Eq "^[[:space:]]*#$d [^ ]" "$conf" || missing="$missing $d"
    grep -Eq "^[[:space:]]*$d" "$conf" && missing="$missing $d(not-commented)"
done
if [ -n "$directives" ] && [ -z "$missing" ]; then
    ok ".conf: every directive of README.md's table commented out with an example ($(echo $directives | wc -w))"
else
    bad ".conf: missing or active directives:${missing:- (none found in README.md)}"
fi

section "lintian $(basename "$CHANGES")"
if [ -f "$CHANGES" ]; then
    target=$CHANGES
else
    target=$DEB
fi
# The verdict from a plain run (with --show-overrides, lintian 2.116 exits 2
# for overridden tags too); the listing with overrides and their reasons.
lintian --fail-on error,warning "$target" >/dev/null 2>&1
lrc=$?
lintian --display-info --show-overrides "$target" >"$TMP/lintian.log" 2>&1
grep -v 'running with root privileges' "$TMP/lintian.log" | indent
if [ $lrc = 0 ] && ! grep -q '^[EW]: ' "$TMP/lintian.log"; then
    ok "lintian: no errors or warnings (O: overridden with the reason above, I: information)"
else
    bad "lintian: errors or warnings (exit $lrc)"
fi

# ---- 2. install over an enabled stock module --------------------------------------------------
section "install: dpkg -i over an enabled stock proxy_wstunnel"
a2enmod -q proxy_wstunnel 2>&1 | indent
check "before: stock proxy_wstunnel enabled (a2enmod proxy_wstunnel)" test "$(modstate proxy_wstunnel)" = 0
dpkg -i "$DEB" >"$TMP/install.log" 2>&1
irc=$?
indent <"$TMP/install.log"
check "dpkg -i $(basename "$DEB")" test $irc = 0
check "proxy_wstunnel_rs enabled (a2query -m)" test "$(modstate $MOD)" = 0
check "proxy enabled (its Depends)" test "$(modstate proxy)" = 0
check "stock proxy_wstunnel switched off by the package (a2query -m: 33, by maintainer script)" \
    test "$(modstate proxy_wstunnel)" = 33
check "$ENABLED/$MOD.load -> ../mods-available/$MOD.load" \
    test "$(readlink "$ENABLED/$MOD.load")" = "../mods-available/$MOD.load"
check "$MODDIR/mod_proxy_wstunnel_rs.so belongs to $PKG" \
    sh -c "dpkg -S '$MODDIR/mod_proxy_wstunnel_rs.so' 2>/dev/null | grep -q '^$PKG:'"
ls "$ENABLED" | grep -E '^proxy' | sed 's/^/    mods-enabled: /'
configtest
irc=$?
indent <"$TMP/configtest.log"
check "apache2ctl configtest" test $irc = 0
check "configtest: no AH01574 (proxy_wstunnel_module loaded once)" sh -c "! grep -q AH01574 '$TMP/configtest.log'"

# ---- 3. serve on a test port ------------------------------------------------------------------
section "apache2 with the system's modules on 127.0.0.1 only"
port_used() { # TCP port $1 in any state, per /proc/net/tcp{,6}
    hex=$(printf ':%04X ' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q "$hex"
}
listening() {
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p' /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q .
}
wait_listening() { # port, tenths of a second
    i=0
    while ! listening "$1"; do
        [ $i -ge "$2" ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}
PORT=$(( 20000 + $$ % 20000 ))
i=0
while port_used "$PORT" && [ $i -lt 500 ]; do PORT=$((PORT + 1)); i=$((i + 1)); done

"$BIN/wst-echo" --port 0 >"$TMP/run/wst-echo.port" 2>"$TMP/logs/wst-echo.log" &
ECHO_PID=$!
i=0
ECHO_PORT=
while [ -z "$ECHO_PORT" ] && [ $i -lt 100 ]; do
    ECHO_PORT=$(sed -n 's/^LISTENING //p' "$TMP/run/wst-echo.port" 2>/dev/null)
    [ -n "$ECHO_PORT" ] || sleep 0.1
    i=$((i + 1))
done
check "wst-echo backend on 127.0.0.1:${ECHO_PORT:-?}" test -n "$ECHO_PORT"

cat >"$TMP/apache2-test.conf" <<EOF
# deb-check.sh: Debian's apache2 with the modules a2enmod enabled
# (mods-enabled) and conf-enabled, on one test port. Not read: apache2.conf's
# ports.conf (Listen 80) and sites-enabled.
ServerRoot "/etc/apache2"
ServerName 127.0.0.1
DefaultRuntimeDir "$TMP/run"
PidFile "$TMP/run/apache2.pid"
Mutex file:$TMP/lock default
ErrorLog "$TMP/logs/error.log"
LogLevel warn proxy_wstunnel:debug
User \${APACHE_RUN_USER}
Group \${APACHE_RUN_GROUP}
IncludeOptional mods-enabled/*.load
IncludeOptional mods-enabled/*.conf
IncludeOptional conf-enabled/*.conf
Listen 127.0.0.1:$PORT
LogFormat "%h %t \"%r\" %>s in=%I out=%O" check
CustomLog "$TMP/logs/access.log" check
ProxyPass /echo/ ws://127.0.0.1:$ECHO_PORT/echo
EOF
(
    set +u
    . /etc/apache2/envvars
    export APACHE_PID_FILE="$TMP/run/apache2.pid" APACHE_RUN_DIR="$TMP/run" \
        APACHE_LOCK_DIR="$TMP/lock" APACHE_LOG_DIR="$TMP/logs"
    exec /usr/sbin/apache2 -d /etc/apache2 -f "$TMP/apache2-test.conf" -DFOREGROUND
) >"$TMP/logs/stderr.log" 2>&1 &
HTTPD_PID=$!
if wait_listening "$PORT" 150 && kill -0 "$HTTPD_PID" 2>/dev/null; then
    ok "apache2 -f $(basename "$TMP")/apache2-test.conf listens on 127.0.0.1:$PORT (pid $HTTPD_PID)"
else
    bad "apache2 did not start on 127.0.0.1:$PORT"
    cat "$TMP/logs/stderr.log" "$TMP/logs/error.log" 2>/dev/null | indent
fi
listening_80=$(awk '$4 == "0A" && $2 ~ /:0050$/' /proc/net/tcp /proc/net/tcp6 2>/dev/null | wc -l)
check "port 80: no new listener ($listening_80_before before, $listening_80 now)" \
    test "$listening_80" -le "$listening_80_before"
"$BIN/wst-client" --count 2 --timeout 10 "ws://127.0.0.1:$PORT/echo/" \
    "hello through the Debian package" "second message" >"$TMP/client.log" 2>&1
crc=$?
indent <"$TMP/client.log"
check "wst-client: two WebSocket messages through apache2 and back" \
    sh -c "[ $crc = 0 ] && grep -q '< .*hello through the Debian package' '$TMP/client.log' \
           && grep -q '< .*second message' '$TMP/client.log'"
i=0
while ! grep -q '" 101 ' "$TMP/logs/access.log" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
i=0
while ! grep -q 'WST012' "$TMP/logs/error.log" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sed 's/^/    access: /' "$TMP/logs/access.log" 2>/dev/null
grep -E 'AH02451|WST012' "$TMP/logs/error.log" 2>/dev/null \
    | sed -e 's/^\[[^]]*\] //' -e 's/ \[pid [^]]*\]//' -e 's/ \[client [^]]*\]//' -e 's/^/    error: /'
check "access log: GET /echo/ answered 101" grep -q '"GET /echo/ HTTP/1.1" 101 ' "$TMP/logs/access.log"
check "the tunnel was this module's (its WST012 'tunnel closed' line)" grep -q 'WST012' "$TMP/logs/error.log"
if grep -E ':(error|crit|alert|emerg)\]' "$TMP/logs/error.log" >/dev/null 2>&1; then
    bad "errors in apache2's error log:"
    grep -E ':(error|crit|alert|emerg)\]' "$TMP/logs/error.log" | head -10 | indent
fi
stop_pid "$HTTPD_PID" 100
check "apache2 stopped" sh -c "! kill -0 $HTTPD_PID 2>/dev/null"
HTTPD_PID=
stop_pid "$ECHO_PID" 20
ECHO_PID=

# ---- 4. purge ---------------------------------------------------------------------------------
stock_back() { # the stock module enabled, its .load naming apache2-bin's file
    [ "$(modstate proxy_wstunnel)" = 0 ] \
        && [ "$(readlink "$ENABLED/proxy_wstunnel.load")" = "../mods-available/proxy_wstunnel.load" ] \
        && [ "$(load_target "$MODS/proxy_wstunnel.load")" = "$MODDIR/mod_proxy_wstunnel.so" ] \
        && dpkg -S "$MODDIR/mod_proxy_wstunnel.so" 2>/dev/null | grep -q '^apache2-bin:'
}
nothing_left() {
    [ ! -e "$MODDIR/mod_proxy_wstunnel_rs.so" ] && [ ! -e "$MODS/$MOD.load" ] && [ ! -e "$MODS/$MOD.conf" ] \
        && [ ! -e "$ENABLED/$MOD.load" ] && [ ! -L "$ENABLED/$MOD.load" ] && [ ! -L "$ENABLED/$MOD.conf" ] \
        && [ -z "$(find /var/lib/apache2 -name "$MOD" 2>/dev/null)" ]
}
section "purge: the stock module comes back"
dpkg --purge "$PKG" >"$TMP/purge.log" 2>&1
prc=$?
indent <"$TMP/purge.log"
check "dpkg --purge $PKG" test $prc = 0
check "nothing of the package left (.so, .load, .conf, mods-enabled links, a2enmod state)" nothing_left
check "stock proxy_wstunnel enabled again, $ENABLED/proxy_wstunnel.load -> $MODDIR/mod_proxy_wstunnel.so (apache2-bin)" stock_back
configtest
crc=$?
check "apache2ctl configtest" test $crc = 0

# ---- 5. reinstall, switch by hand -------------------------------------------------------------
section "reinstall, then switch with a2enmod/a2dismod by hand"
dpkg -i "$DEB" >"$TMP/install2.log" 2>&1
irc=$?
check "dpkg -i again: proxy_wstunnel_rs on, the stock one off" \
    sh -c "[ $irc = 0 ] && [ $(modstate $MOD) = 0 ] && [ $(modstate proxy_wstunnel) = 33 ]"
echo "    # a2enmod proxy_wstunnel (stock .load: no Conflicts line, so a2enmod cannot refuse)"
a2enmod proxy_wstunnel 2>&1 | indent
configtest
crc=$?
indent <"$TMP/configtest.log"
check "both enabled: configtest passes, httpd loads only the first (stock) one and skips ours (AH01574)" \
    sh -c "[ $crc = 0 ] && grep -q 'AH01574: module proxy_wstunnel_module is already loaded' '$TMP/configtest.log'"
echo "    # a2dismod proxy_wstunnel_rs; a2enmod proxy_wstunnel_rs (the stock one enabled)"
a2dismod -q $MOD 2>&1 | indent
a2enmod $MOD >"$TMP/a2enmod.log" 2>&1
erc=$?
indent <"$TMP/a2enmod.log"
check "a2enmod proxy_wstunnel_rs refuses while proxy_wstunnel is enabled (# Conflicts)" \
    sh -c "[ $erc != 0 ] && grep -q 'cannot proceed due to conflicts' '$TMP/a2enmod.log' && [ $(modstate $MOD) != 0 ]"
echo "    # a2dismod proxy_wstunnel; a2enmod proxy_wstunnel_rs"
a2dismod proxy_wstunnel 2>&1 | indent
a2enmod $MOD >"$TMP/a2enmod.log" 2>&1
erc=$?
indent <"$TMP/a2enmod.log"
check "a2enmod proxy_wstunnel_rs after a2dismod proxy_wstunnel" \
    sh -c "[ $erc = 0 ] && [ $(modstate $MOD) = 0 ] && [ $(modstate proxy_wstunnel) = 32 ]"
configtest
crc=$?
check "apache2ctl configtest, no AH01574" sh -c "[ $crc = 0 ] && ! grep -q AH01574 '$TMP/configtest.log'"
dpkg --purge "$PKG" >"$TMP/purge2.log" 2>&1
prc=$?
check "dpkg --purge: the stock module stays off (the admin switched it off: a2query 32)" \
    sh -c "[ $prc = 0 ] && [ $(modstate proxy_wstunnel) = 32 ]"
check "(nothing left)" nothing_left
echo "    # a2enmod proxy_wstunnel"
a2enmod proxy_wstunnel 2>&1 | indent
check "a2enmod proxy_wstunnel works again, its .load names $MODDIR/mod_proxy_wstunnel.so (apache2-bin)" stock_back
configtest
crc=$?
check "apache2ctl configtest" test $crc = 0
# cleanup (trap) restores /etc/apache2 and /var/lib/apache2 and prints the verdict
