#!/bin/sh
# `make demo`: a local httpd with build/mod_proxy_wstunnel.so in front of two WebSocket
# backends, a client that prints every message as it arrives through httpd, and a page that
# does the same in a browser, over ws:// and wss://.
#
#   websocketd  runs a counter script (prints 1..10, 0.3 s apart, like seed 002's wstest)
#   wst-echo    echoes every message (tests/e2e/src/bin/wst-echo.rs)
#   httpd       ProxyPass /counter/ -> websocketd, ProxyPass /echo/ -> wst-echo, on a plain
#               port and on a TLS port (a test CA and a certificate for 127.0.0.1 made with
#               openssl in the temporary directory); / serves demo/index.html, which opens
#               both routes over ws:// and wss:// and shows every message as it arrives;
#               /server-status (mod_status) shows the open tunnels
#   wst-client  tests/e2e/src/bin/wst-client.rs
#
# After the clients ran, the page's URL is printed ("page: http://127.0.0.1:<port>/") and httpd
# keeps serving it for DEMO_WAIT seconds (default 600 when run from a terminal, else 0; Ctrl-C
# ends it). wss:// in a browser needs the test CA ("ca: <file>") trusted, or the certificate of
# https://127.0.0.1:<tls port>/ accepted once. scripts/browser-demo.sh loads the page in headless
# Chromium and Firefox.
#
# Everything listens on 127.0.0.1 only, lives in a temporary directory, and is stopped when the
# script ends (also on Ctrl-C). Environment: HTTPD (default /usr/sbin/apache2), MODULES_DIR
# (default `apxs -q LIBEXECDIR`, then /usr/lib/apache2/modules), WEBSOCKETD, CARGO, OPENSSL,
# DEMO_WAIT, KEEP=1 to keep the temporary directory. POSIX sh; run from anywhere (it works from
# the repo root). Without mod_ssl or openssl the wss:// parts are skipped.

set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
HTTPD=${HTTPD:-/usr/sbin/apache2}
WEBSOCKETD=${WEBSOCKETD:-websocketd}
CARGO=${CARGO:-cargo}
OPENSSL=${OPENSSL:-openssl}
if [ -z "${DEMO_WAIT:-}" ]; then
    if [ -t 0 ] && [ -t 1 ]; then DEMO_WAIT=600; else DEMO_WAIT=0; fi
fi
SO=$ROOT/build/mod_proxy_wstunnel.so
BIN=$ROOT/tests/e2e/target/release

say() { printf '%s\n' "$*"; }
if [ -t 1 ]; then
    section() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    section() { printf '\n== %s\n' "$*"; }
fi
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# ---- prerequisites ---------------------------------------------------------------------------
[ -f "$SO" ] || die "$SO not built: run 'make' (or 'make demo') first"
[ -x "$HTTPD" ] || die "$HTTPD not found: run scripts/install-deps.sh (or set HTTPD)"
command -v "$WEBSOCKETD" >/dev/null 2>&1 || die "websocketd not found: run scripts/install-deps.sh"
command -v "$CARGO" >/dev/null 2>&1 || die "cargo not found"
if [ -z "${MODULES_DIR:-}" ]; then
    MODULES_DIR=$( (apxs -q LIBEXECDIR || apxs2 -q LIBEXECDIR) 2>/dev/null)
    [ -d "$MODULES_DIR" ] || MODULES_DIR=/usr/lib/apache2/modules
fi
for m in mpm_event authz_core proxy proxy_http; do
    [ -f "$MODULES_DIR/mod_$m.so" ] || die "$MODULES_DIR/mod_$m.so not found (set MODULES_DIR)"
done
TLS=yes
if [ ! -f "$MODULES_DIR/mod_ssl.so" ] || [ ! -f "$MODULES_DIR/mod_socache_shmcb.so" ]; then
    TLS=; say "demo: no mod_ssl or mod_socache_shmcb in $MODULES_DIR: the wss:// parts are skipped"
elif ! command -v "$OPENSSL" >/dev/null 2>&1; then
    TLS=; say "demo: no openssl: the wss:// parts are skipped"
fi

# ---- cleanup on exit -------------------------------------------------------------------------
DIR=
WSD_PID=
ECHO_PID=
HTTPD_PID=
WAITING=
STOP=
status=0
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$HTTPD_PID" ] && kill -0 "$HTTPD_PID" 2>/dev/null; then
        kill -TERM "$HTTPD_PID" 2>/dev/null
        i=0
        while kill -0 "$HTTPD_PID" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$HTTPD_PID" 2>/dev/null
    fi
    for p in $WSD_PID $ECHO_PID; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in $WSD_PID $ECHO_PID; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$p" 2>/dev/null
    done
    WSD_PID= ECHO_PID= HTTPD_PID=
    if [ -n "$DIR" ] && [ -d "$DIR" ]; then
        if [ "${KEEP:-0}" = 1 ]; then
            say "(kept $DIR)"
        else
            rm -rf "$DIR"
        fi
    fi
}
trap cleanup EXIT
# Ctrl-C (or TERM) while the page is being served ends the wait: the demo then stops as usual.
trap 'if [ -n "$WAITING" ]; then STOP=1; else exit 130; fi' INT
trap 'if [ -n "$WAITING" ]; then STOP=1; else exit 143; fi' TERM

# ---- helpers ---------------------------------------------------------------------------------
# True if something uses TCP port $1 (listening or connected), per /proc/net/tcp{,6}.
port_used() {
    hex=$(printf ':%04X ' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q "$hex"
}
# A free port at or above $1.
free_port() {
    p=$1
    while port_used "$p"; do p=$((p + 1)); done
    printf '%s\n' "$p"
}
# True if 127.0.0.1:$1 (or any address) is in LISTEN state.
listening() {
    hex=$(printf ':%04X ' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep "$hex" | awk '$4 == "0A"' | grep -q .
}
# Wait (at most $2 tenths of a second) until port $1 listens.
wait_listening() {
    i=0
    while ! listening "$1"; do
        [ $i -ge "$2" ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}
# Drop the timestamp and pid/tid of error-log lines.
short_log() { sed -e 's/^\[[^]]*\] //' -e 's/ \[pid [^]]*\]//' -e 's/ \[client [^]]*\]//'; }

# ---- build the client and the echo backend ---------------------------------------------------
section "mod_proxy_wstunnel demo"
say "httpd:   $HTTPD ($("$HTTPD" -v 2>/dev/null | sed -n 's/^Server version: //p'))"
say "module:  $SO"
say "building wst-client and wst-echo (cargo build --release --manifest-path tests/e2e/Cargo.toml --bins) ..."
if ! "$CARGO" build --release --quiet --manifest-path tests/e2e/Cargo.toml --bins; then
    die "cargo build of tests/e2e failed"
fi
[ -x "$BIN/wst-client" ] && [ -x "$BIN/wst-echo" ] || die "wst-client/wst-echo not built in $BIN"

DIR=$(mktemp -d "${TMPDIR:-/tmp}/wst-demo.XXXXXX") || die "mktemp failed"
chmod 755 "$DIR"
mkdir "$DIR/logs" "$DIR/run" "$DIR/htdocs" "$DIR/tls"
chmod 755 "$DIR/logs" "$DIR/run" "$DIR/htdocs" "$DIR/tls"

# ---- a test CA and a certificate for 127.0.0.1 (the wss:// vhost) ------------------------------
if [ -n "$TLS" ]; then
    printf '%s\n' 'basicConstraints = critical, CA:FALSE' \
        'keyUsage = critical, digitalSignature, keyEncipherment' \
        'extendedKeyUsage = serverAuth' 'subjectAltName = IP:127.0.0.1, DNS:localhost' \
        >"$DIR/tls/server.ext"
    ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    # shellcheck disable=SC2086
    if "$OPENSSL" req -x509 $ec -days 7 -subj "/CN=mod_proxy_wstunnel demo CA $(date -u +%Y%m%d%H%M%S)" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$DIR/tls/ca.key" -out "$DIR/tls/ca.pem" >"$DIR/logs/openssl.log" 2>&1 \
        && "$OPENSSL" req $ec -subj "/CN=127.0.0.1" \
            -keyout "$DIR/tls/server.key" -out "$DIR/tls/server.csr" >>"$DIR/logs/openssl.log" 2>&1 \
        && "$OPENSSL" x509 -req -in "$DIR/tls/server.csr" -CA "$DIR/tls/ca.pem" -CAkey "$DIR/tls/ca.key" \
            -CAcreateserial -days 7 -extfile "$DIR/tls/server.ext" -out "$DIR/tls/server.pem" \
            >>"$DIR/logs/openssl.log" 2>&1; then
        chmod 600 "$DIR/tls/ca.key" "$DIR/tls/server.key"
        chmod 644 "$DIR/tls/ca.pem" "$DIR/tls/server.pem"
    else
        cat "$DIR/logs/openssl.log"
        die "openssl could not make the test certificates"
    fi
fi

# ---- backends --------------------------------------------------------------------------------
base=$(( 20000 + $$ % 20000 ))
WSD_PORT=$(free_port "$base")
cat >"$DIR/counter.sh" <<'EOF'
#!/bin/sh
# seed 002's wstest: count to 10, one number every 0.3 s
for i in 1 2 3 4 5 6 7 8 9 10; do
    echo "$i"
    sleep 0.3
done
EOF
chmod 755 "$DIR/counter.sh"
"$WEBSOCKETD" --port="$WSD_PORT" --address=127.0.0.1 --loglevel=access "$DIR/counter.sh" \
    >"$DIR/logs/websocketd.log" 2>&1 &
WSD_PID=$!
wait_listening "$WSD_PORT" 100 || { cat "$DIR/logs/websocketd.log"; die "websocketd did not start"; }

"$BIN/wst-echo" --port 0 >"$DIR/run/wst-echo.port" 2>"$DIR/logs/wst-echo.log" &
ECHO_PID=$!
i=0
ECHO_PORT=
while [ -z "$ECHO_PORT" ] && [ $i -lt 100 ]; do
    ECHO_PORT=$(sed -n 's/^LISTENING //p' "$DIR/run/wst-echo.port" 2>/dev/null)
    [ -n "$ECHO_PORT" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$ECHO_PORT" ] || { cat "$DIR/logs/wst-echo.log"; die "wst-echo did not start"; }

say "backends:"
say "  websocketd  ws://127.0.0.1:$WSD_PORT/       runs counter.sh (1..10, 0.3 s apart)"
say "  wst-echo    ws://127.0.0.1:$ECHO_PORT/echo   echoes every message"

# ---- httpd -----------------------------------------------------------------------------------
HTTPD_PORT=$(free_port $((WSD_PORT + 1)))
TLS_PORT=
TLS_CONF=
if [ -n "$TLS" ]; then
    TLS_PORT=$(free_port $((HTTPD_PORT + 1)))
    TLS_CONF="<IfModule !socache_shmcb_module>
LoadModule socache_shmcb_module \"$MODULES_DIR/mod_socache_shmcb.so\"
</IfModule>
<IfModule !ssl_module>
LoadModule ssl_module \"$MODULES_DIR/mod_ssl.so\"
</IfModule>
SSLSessionCache \"shmcb:$DIR/run/ssl_scache(512000)\"
Listen 127.0.0.1:$TLS_PORT
<VirtualHost 127.0.0.1:$TLS_PORT>
    SSLEngine on
    SSLCertificateFile \"$DIR/tls/server.pem\"
    SSLCertificateKeyFile \"$DIR/tls/server.key\"
</VirtualHost>"
fi
# The page, with the ports it connects to.
HTTPD_VERSION=$("$HTTPD" -v 2>/dev/null | sed -n 's/^Server version: //p')
sed -e "s/@WS_PORT@/$HTTPD_PORT/g" -e "s/@WSS_PORT@/${TLS_PORT:-0}/g" \
    -e "s|@HTTPD@|${HTTPD_VERSION:-Apache httpd}|g" demo/index.html >"$DIR/htdocs/index.html"
chmod 644 "$DIR/htdocs/index.html"
USERGROUP=
if [ "$(id -u)" = 0 ]; then
    USERGROUP="User daemon
Group daemon"
fi
cat >"$DIR/httpd.conf" <<EOF
# mod_proxy_wstunnel demo (generated by demo/run.sh)
ServerRoot "$DIR"
ServerName 127.0.0.1
Listen 127.0.0.1:$HTTPD_PORT
PidFile "$DIR/run/httpd.pid"
DefaultRuntimeDir "$DIR/run"
Mutex file:$DIR/run default
ErrorLog "$DIR/logs/error.log"
$USERGROUP
LoadModule mpm_event_module "$MODULES_DIR/mod_mpm_event.so"
<IfModule !unixd_module>
LoadModule unixd_module "$MODULES_DIR/mod_unixd.so"
</IfModule>
<IfModule !log_config_module>
LoadModule log_config_module "$MODULES_DIR/mod_log_config.so"
</IfModule>
<IfModule !logio_module>
LoadModule logio_module "$MODULES_DIR/mod_logio.so"
</IfModule>
LoadModule authz_core_module "$MODULES_DIR/mod_authz_core.so"
<IfModule !mime_module>
LoadModule mime_module "$MODULES_DIR/mod_mime.so"
</IfModule>
<IfModule !dir_module>
LoadModule dir_module "$MODULES_DIR/mod_dir.so"
</IfModule>
<IfModule !status_module>
LoadModule status_module "$MODULES_DIR/mod_status.so"
</IfModule>
LoadModule proxy_module "$MODULES_DIR/mod_proxy.so"
LoadModule proxy_http_module "$MODULES_DIR/mod_proxy_http.so"
LoadModule proxy_wstunnel_module "$SO"
StartServers 1
LogFormat "%h %t :%{local}p \"%r\" %>s in=%I out=%O" demo
CustomLog "$DIR/logs/access.log" demo
LogLevel warn proxy_wstunnel:debug
DocumentRoot "$DIR/htdocs"
DirectoryIndex index.html
TypesConfig /dev/null
AddType text/html .html
<Location /server-status>
    SetHandler server-status
</Location>

ProxyPass /counter/ ws://127.0.0.1:$WSD_PORT/
ProxyPass /echo/    ws://127.0.0.1:$ECHO_PORT/echo
$TLS_CONF
EOF
"$HTTPD" -d "$DIR" -f "$DIR/httpd.conf" -DFOREGROUND >"$DIR/logs/stderr.log" 2>&1 &
HTTPD_PID=$!
if ! wait_listening "$HTTPD_PORT" 150 || { [ -n "$TLS_PORT" ] && ! wait_listening "$TLS_PORT" 50; } \
        || ! kill -0 "$HTTPD_PID" 2>/dev/null; then
    cat "$DIR/logs/stderr.log" "$DIR/logs/error.log" 2>/dev/null
    die "httpd did not start (config: $DIR/httpd.conf)"
fi
say "httpd:   http://127.0.0.1:$HTTPD_PORT/${TLS_PORT:+ and https://127.0.0.1:$TLS_PORT/ (TLS)} (pid $HTTPD_PID), config:"
grep -E '^(LoadModule proxy_wstunnel|ProxyPass|LogLevel|Listen)' "$DIR/httpd.conf" | sed 's/^/  /'
say "files:   $DIR"

# ---- 1. the counter, message by message ------------------------------------------------------
section "1. counter through httpd: wst-client ws://127.0.0.1:$HTTPD_PORT/counter/"
say "   (websocketd's script prints a number every 0.3 s; each one shows up as it arrives)"
"$BIN/wst-client" --count 10 --timeout 15 "ws://127.0.0.1:$HTTPD_PORT/counter/" || {
    say "   !! the counter did not deliver 10 messages"
    status=1
}

# ---- 2. echo -------------------------------------------------------------------------------
section "2. echo through httpd: wst-client ws://127.0.0.1:$HTTPD_PORT/echo/ (two lines)"
"$BIN/wst-client" --count 2 --timeout 10 "ws://127.0.0.1:$HTTPD_PORT/echo/" \
    "hello through mod_proxy_wstunnel" "a second line, echoed byte for byte" || {
    say "   !! the echo did not come back"
    status=1
}

# ---- 3. the counter over wss:// ----------------------------------------------------------------
tunnels=2
if [ -n "$TLS_PORT" ]; then
    section "3. counter over TLS: wst-client --ca <test CA> wss://127.0.0.1:$TLS_PORT/counter/"
    "$BIN/wst-client" --count 10 --timeout 15 --ca "$DIR/tls/ca.pem" "wss://127.0.0.1:$TLS_PORT/counter/" || {
        say "   !! the counter did not deliver 10 messages over wss://"
        status=1
    }
    tunnels=3
fi

# ---- logs ------------------------------------------------------------------------------------
# The access-log line of a tunnel is written when it ends; wait (bounded) for all of them.
i=0
while [ $i -lt 50 ]; do
    n=$(grep -c '" 101 ' "$DIR/logs/access.log" 2>/dev/null)
    [ "${n:-0}" -ge $tunnels ] && break
    sleep 0.1
    i=$((i + 1))
done
section "access log (status 101 = tunnelled; in/out = bytes, WebSocket frames included)"
sed 's/^/  /' "$DIR/logs/access.log" 2>/dev/null
section "module debug log (LogLevel proxy_wstunnel:debug)"
grep -E 'serving URL|tunnel closed' "$DIR/logs/error.log" | short_log | sed 's/^/  /'
if grep -E ':(error|crit|alert|emerg)\]' "$DIR/logs/error.log" >/dev/null 2>&1; then
    section "errors logged"
    grep -E ':(error|crit|alert|emerg)\]' "$DIR/logs/error.log" | short_log | sed 's/^/  /'
    status=1
fi

# ---- the page, for a browser -------------------------------------------------------------------
section "4. in a browser: the same routes from a page"
say "page: http://127.0.0.1:$HTTPD_PORT/"
if [ -n "$TLS_PORT" ]; then
    say "ca: $DIR/tls/ca.pem"
    say "   The page opens /counter/ and /echo/ over ws:// (port $HTTPD_PORT) and wss:// (port $TLS_PORT)."
    say "   For wss:// the browser must trust the test CA above, or accept the certificate of"
    say "   https://127.0.0.1:$TLS_PORT/ once. Tunnel counts: http://127.0.0.1:$HTTPD_PORT/server-status"
fi
if [ "$DEMO_WAIT" -gt 0 ] 2>/dev/null; then
    say "   Serving it for $DEMO_WAIT s (DEMO_WAIT); Ctrl-C stops the demo."
    WAITING=1
    i=0
    while [ -z "$STOP" ] && [ $i -lt "$DEMO_WAIT" ] && kill -0 "$HTTPD_PID" 2>/dev/null; do
        sleep 1
        i=$((i + 1))
    done
    WAITING=
else
    say "   (not kept: 'make demo' from a terminal, or DEMO_WAIT=<seconds>, keeps serving it)"
fi

# ---- stop ------------------------------------------------------------------------------------
section "stopping httpd, websocketd and wst-echo"
cleanup
if [ $status = 0 ]; then
    say "demo done: every tunnel worked"
else
    say "demo FAILED (see above)"
fi
exit $status
