#!/bin/sh
# The `make demo` page in real browsers: starts demo/run.sh (httpd with build/mod_proxy_wstunnel.so,
# websocketd's counter and wst-echo behind it, ws:// and wss:// with a test CA), loads its page in
# headless Chromium and in headless Firefox ESR, and checks that each says
# "ws:10 wss:10 echo:ok" (10 counter messages over ws:// and over wss://, an echo over each),
# that httpd's access log has the browser's tunnels on both ports, and that the demo ends well.
#
#   sh scripts/browser-demo.sh                      screenshots in build/browser-demo/
#   sh scripts/browser-demo.sh --save-screenshot    also copies Chromium's to docs/demo.png
#
# The browsers are driven by scripts/browser-demo.py with Debian's python3-websockets: Chromium
# over the DevTools protocol, Firefox over WebDriver BiDi (--remote-debugging-port); no
# chromedriver/geckodriver, no network. Each gets a fresh profile whose NSS database trusts
# the demo's CA (certutil): certificate errors are not ignored.
# Needs (Debian): chromium firefox-esr python3-websockets libnss3-tools, and what make demo needs.
# Environment: BROWSERS (default "chromium firefox"), BROWSER_TIMEOUT (s per page, default 40),
# BROWSER_DEMO_OUT (default build/browser-demo). Prints "ok   ..."/"FAIL ..."; exit 1 on failure.

set -u
cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
BROWSERS=${BROWSERS:-chromium firefox}
TIMEOUT=${BROWSER_TIMEOUT:-40}
OUT=${BROWSER_DEMO_OUT:-build/browser-demo}
SAVE=
case "${1:-}" in
    --save-screenshot) SAVE=docs/demo.png ;;
    "") ;;
    *) echo "usage: sh scripts/browser-demo.sh [--save-screenshot]" >&2; exit 2 ;;
esac
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
die() { echo "FAIL $*"; exit 1; }
T0=$(date +%s)

# ---- prerequisites ---------------------------------------------------------------------------
missing=
for b in $BROWSERS; do
    case $b in
        chromium) command -v chromium >/dev/null 2>&1 || missing="$missing chromium" ;;
        firefox) command -v firefox-esr >/dev/null 2>&1 || command -v firefox >/dev/null 2>&1 \
                     || missing="$missing firefox-esr" ;;
        *) die "unknown browser $b (BROWSERS: chromium firefox)" ;;
    esac
done
command -v certutil >/dev/null 2>&1 || missing="$missing libnss3-tools"
"$PY" -c 'import websockets' 2>/dev/null || missing="$missing python3-websockets"
[ -z "$missing" ] || die "missing:$missing (apt-get install$missing)"
[ -f build/mod_proxy_wstunnel.so ] || die "build/mod_proxy_wstunnel.so not built: run make"
mkdir -p "$OUT" || die "cannot create $OUT"

# ---- the demo, kept serving while the browsers load its page --------------------------------
LOG=$(mktemp "${TMPDIR:-/tmp}/wst-browser-demo.XXXXXX") || die "mktemp failed"
DEMO_PID=
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -TERM "$DEMO_PID" 2>/dev/null
        i=0
        while kill -0 "$DEMO_PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$DEMO_PID" 2>/dev/null
    fi
    rm -f "$LOG"
}
trap cleanup EXIT
trap 'fail=1; exit 130' INT
trap 'fail=1; exit 143' TERM

DEMO_WAIT=600 sh demo/run.sh >"$LOG" 2>&1 &
DEMO_PID=$!
i=0
while ! grep -q '^page: ' "$LOG" && kill -0 "$DEMO_PID" 2>/dev/null && [ $i -lt 3000 ]; do
    sleep 0.1
    i=$((i + 1))
done
URL=$(sed -n 's/^page: //p' "$LOG")
CA=$(sed -n 's/^ca: //p' "$LOG")
DIR=$(sed -n 's/^files: *//p' "$LOG")
WS_PORT=$(echo "$URL" | sed -n 's|^http://127.0.0.1:\([0-9]*\)/$|\1|p')
WSS_PORT=$(sed -n 's|.*https://127\.0\.0\.1:\([0-9]*\)/ (TLS).*|\1|p' "$LOG" | head -1)
if [ -z "$URL" ] || [ -z "$CA" ] || [ -z "$WSS_PORT" ] || ! grep -q 'demo done\|4. in a browser' "$LOG"; then
    sed 's/^/    | /' "$LOG"
    die "make demo's page did not come up (or without TLS)"
fi
if grep -q '!!' "$LOG"; then
    bad "demo/run.sh: its own clients failed:"
    grep '!!' "$LOG" | sed 's/^/    | /'
else
    ok "demo/run.sh: counter and echo (ws://), counter (wss://) through httpd; page $URL"
fi
echo "     wss:// port $WSS_PORT, test CA $CA"

# Tunnels (101 lines) in the demo's access log on a port.
tunnels_on() { grep -c ":$1 \"GET .* 101 " "$DIR/logs/access.log" 2>/dev/null || true; }

for b in $BROWSERS; do
    ws0=$(tunnels_on "$WS_PORT")
    wss0=$(tunnels_on "$WSS_PORT")
    t=$(date +%s)
    timeout $((TIMEOUT + 120)) "$PY" scripts/browser-demo.py --browser "$b" --url "$URL" --ca "$CA" \
        --out "$OUT/$b.png" --timeout "$TIMEOUT"
    rc=$?
    [ $rc = 0 ] || fail=1
    # The access-log line of a tunnel is written when it ends (the echo's: when the browser quit).
    i=0
    while [ $i -lt 50 ]; do
        ws=$(( $(tunnels_on "$WS_PORT") - ws0 ))
        wss=$(( $(tunnels_on "$WSS_PORT") - wss0 ))
        [ "$ws" -ge 2 ] && [ "$wss" -ge 2 ] && break
        sleep 0.1
        i=$((i + 1))
    done
    if [ "$ws" -ge 2 ] && [ "$wss" -ge 2 ]; then
        ok "$b: httpd's access log has its tunnels: $ws on :$WS_PORT (ws://), $wss on :$WSS_PORT (wss://) ($(( $(date +%s) - t )) s)"
    else
        bad "$b: httpd's access log has $ws tunnels on :$WS_PORT and $wss on :$WSS_PORT, want 2 and 2"
    fi
done

# ---- the demo ends as it would after Ctrl-C ---------------------------------------------------
kill -TERM "$DEMO_PID" 2>/dev/null
i=0
while kill -0 "$DEMO_PID" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
wait "$DEMO_PID" 2>/dev/null
drc=$?
DEMO_PID=
if [ $drc = 0 ] && grep -q 'demo done: every tunnel worked' "$LOG"; then
    ok "demo/run.sh stopped cleanly (exit 0, no errors in httpd's error log)"
else
    bad "demo/run.sh ended with $drc:"
    tail -20 "$LOG" | sed 's/^/    | /'
fi

if [ -n "$SAVE" ] && [ -f "$OUT/chromium.png" ]; then
    cp "$OUT/chromium.png" "$SAVE" && ok "screenshot saved to $SAVE ($(wc -c <"$SAVE") bytes)"
fi
echo "browser-demo: $(( $(date +%s) - T0 )) s, $( [ $fail = 0 ] && echo 'all checks passed' || echo 'FAILED' )"
exit $fail
