//! The module's own directives and counters:
//!
//! * `ProxyWebsocketUpgrade On|Off`: WebSocket upgrades on `http://` and `https://` routes are
//!   tunnelled by this module, plain requests stay with mod_proxy_http (server, `<VirtualHost>`,
//!   `<Location>`, `<Proxy>`).
//! * `ProxyWebsocketAllowOrigin same|*|<origin>...`: 403 (logged as WST042) before the backend
//!   is contacted; no Origin header: allowed.
//! * `ProxyWebsocketMaxTunnels <n>`: a cap shared by all children (503 + `Retry-After: 10`,
//!   WST041), under prefork, worker and event; also behind a balancer.
//! * mod_status: `WebSocketTunnels`, `WebSocketTunnelsTotal`, `WebSocketTunnelsRefused` in
//!   `?auto`, a "WebSocket tunnels" section in the HTML page; across a graceful restart.
//! * Request notes for LogFormat `%{...}n`: `wstunnel-client-bytes`, `wstunnel-backend-bytes`,
//!   `wstunnel-duration-ms`, `wstunnel-closed-first`, `wstunnel-end`.
//!
//! Only meaningful for this module: with the stock module (WST_MODULE pointing at it) every test
//! says SKIP, since the directives do not exist there.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use tungstenite::Message;
use wst_e2e::client::{check_101, close, http_get, next_data, roundtrip, End, Response};
use wst_e2e::observe::{
    local_port, log_lines, retry, serving_child, status_auto, status_num, try_upgrade,
    wait_log_line,
};
use wst_e2e::ws::{client_frame, server_frame, OP_BINARY, OP_CLOSE, OP_TEXT};
use wst_e2e::{
    binary_payload, payload, Browser, Httpd, Pki, RawClient, Target, UpgradeRequest, WsClient,
    WstEcho,
};

const WAIT: Duration = Duration::from_secs(10);

fn ours() -> bool {
    if Httpd::flavor().wst_is_stock {
        eprintln!("SKIP: the stock module has none of these directives");
        false
    } else {
        true
    }
}

fn need_ssl() -> bool {
    if Httpd::flavor().has_module("ssl") {
        true
    } else {
        eprintln!("SKIP: no mod_ssl in this httpd");
        false
    }
}

fn need_module(m: &str) -> bool {
    if Httpd::flavor().has_module(m) {
        true
    } else {
        eprintln!("SKIP: no mod_{m} in this httpd");
        false
    }
}

/// Request lines the backend received for exactly `path`.
fn backend_got(b: &WstEcho, path: &str) -> usize {
    let prefix = format!("GET {path} ");
    b.requests()
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .count()
}

/// Error-log lines in which this module says it serves `url` (mod_proxy's AH02451, logged by
/// this module's scheme handler only).
fn served_by_us(h: &Httpd, url: &str) -> usize {
    let needle = format!("serving URL {url}");
    h.error_log()
        .lines()
        .filter(|l| l.contains("AH02451") && l.trim_end().ends_with(&needle))
        .count()
}

/// Text and binary messages of several sizes through `ws`, compared by value.
fn echo_sizes(ws: &mut tungstenite::WebSocket<wst_e2e::net::Stream>, what: &str, max: usize) {
    for (i, n) in [0usize, 1, 125, 126, 65535, 65536, 1 << 20]
        .into_iter()
        .filter(|n| *n <= max)
        .enumerate()
    {
        let text = String::from_utf8(payload(n, i as u8)).unwrap();
        assert_eq!(
            roundtrip(ws, Message::text(text.clone())).unwrap(),
            Message::text(text),
            "{what}: text of {n} bytes"
        );
        let bin = binary_payload(n, i as u8);
        let m = roundtrip(ws, Message::binary(bin.clone())).unwrap();
        assert!(
            m.clone().into_data()[..] == bin[..],
            "{what}: binary of {n} bytes differs ({m:?})"
        );
    }
}

/// Byte-exact: the upgrade request and a first frame in one write, then frames of several
/// sizes; what comes back must be exactly the frames an echo sends (the tunnel adds, drops
/// and changes nothing), and the close handshake ends with EOF.
fn raw_echo_exact(t: &Target, path: &str, br: Browser) {
    let req = UpgradeRequest::new(path, &t.host, br);
    let mut bytes = req.to_bytes();
    bytes.extend_from_slice(&client_frame(OP_TEXT, b"pipelined with the upgrade"));
    let mut c = RawClient::connect(t).unwrap();
    c.send(&bytes).unwrap();
    let r = c.read_head().unwrap();
    check_101(&req, &r).unwrap_or_else(|e| panic!("{path} {br:?}: {e}"));
    let want = server_frame(OP_TEXT, b"pipelined with the upgrade");
    assert_eq!(
        c.read_exact_bytes(want.len()).unwrap(),
        want,
        "{path} {br:?}"
    );
    for (i, n) in [0usize, 1, 125, 126, 65535, 65536, 300_000]
        .into_iter()
        .enumerate()
    {
        let p = binary_payload(n, i as u8 + 1);
        c.send(&client_frame(OP_BINARY, &p)).unwrap();
        let want = server_frame(OP_BINARY, &p);
        let got = c.read_exact_bytes(want.len()).unwrap();
        assert!(
            got == want,
            "{path} {br:?}: {n}-byte frame came back different"
        );
    }
    c.send(&client_frame(OP_CLOSE, &[0x03, 0xe8])).unwrap();
    let f = c.read_frame().unwrap();
    assert_eq!(f.opcode, OP_CLOSE, "{path} {br:?}: {f:?}");
    let (rest, end) = c.read_until_close(Duration::from_secs(5));
    assert!(rest.is_empty(), "{path} {br:?}: extra bytes {rest:?}");
    assert_eq!(end, End::Eof, "{path} {br:?}");
}

/// An upgrade to `path` that must NOT become a WebSocket: the answer is not 101, and a frame
/// sent afterwards is not echoed. Returns the answer.
fn assert_not_tunnelled(t: &Target, path: &str, br: Browser) -> Response {
    let req = UpgradeRequest::new(path, &t.host, br);
    let (mut r, mut c) = try_upgrade(t, &req).unwrap_or_else(|e| panic!("{path} {br:?}: {e}"));
    assert_ne!(
        r.status, 101,
        "{path} {br:?}: the upgrade was tunnelled:\n{}",
        r.head
    );
    c.read_body(&mut r, false)
        .unwrap_or_else(|e| panic!("{path} {br:?}: body of the {}: {e}", r.status));
    if c.send(&client_frame(OP_TEXT, b"probe")).is_ok() {
        let (bytes, _) = c.read_for(Duration::from_millis(500));
        assert!(
            !bytes.starts_with(&server_frame(OP_TEXT, b"probe")),
            "{path} {br:?}: a frame was echoed after a {}",
            r.status
        );
    }
    // And a WebSocket client does not get a WebSocket.
    let again = UpgradeRequest::new(path, &t.host, br);
    assert!(
        WsClient::connect_with(t, &again).is_err(),
        "{path} {br:?}: WsClient got a WebSocket"
    );
    r
}

fn http_request_with_body(t: &Target, method: &str, path: &str, body: &[u8]) -> Response {
    let mut c = RawClient::connect(t).unwrap();
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        t.host,
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    c.send(&bytes).unwrap();
    c.read_response().unwrap()
}

// ---------------------------------------------------------------------------------------------
// ProxyWebsocketUpgrade
// ---------------------------------------------------------------------------------------------

const UPGRADE_ROOT: &str = r#"
ProxyWebsocketUpgrade On
ProxyPass / http://127.0.0.1:{BACKEND_PORT}/
"#;

#[test]
fn upgrade_on_root_http_route_tunnels_upgrades_and_leaves_plain_requests_to_proxy_http() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(UPGRADE_ROOT)
        .start();
    let t = h.target();
    let base = format!("http://127.0.0.1:{}", b.port());

    for br in Browser::ALL {
        let (_r, mut ws) =
            WsClient::connect(&t, "/echo", br).unwrap_or_else(|e| panic!("{br:?}: {e}"));
        echo_sizes(&mut ws, &format!("/echo {br:?}"), 1 << 20);
        close(&mut ws);

        raw_echo_exact(&t, "/chat/echo", br);

        // The backend's 101 and first frame in one write.
        let (_r, mut ws) = WsClient::connect(&t, "/push", br).unwrap();
        assert_eq!(next_data(&mut ws).unwrap(), Message::text("pushed"));
        assert_eq!(
            roundtrip(&mut ws, Message::text("after push")).unwrap(),
            Message::text("after push")
        );
        close(&mut ws);

        // What the backend received: a WebSocket upgrade with the client's key, for its own
        // host.
        let req = UpgradeRequest::new("/headers", &t.host, br);
        let (_r, mut ws) = WsClient::connect_with(&t, &req).unwrap();
        let head = next_data(&mut ws).unwrap().into_text().unwrap().to_string();
        close(&mut ws);
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("GET /headers HTTP/1.1\r\n"), "{head}");
        assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
        assert!(
            lower.contains("\r\nconnection: upgrade\r\n"),
            "backend must get Connection: Upgrade:\n{head}"
        );
        assert!(
            head.contains(&format!("Sec-WebSocket-Key: {}\r\n", req.key().unwrap())),
            "{head}"
        );
        assert!(
            head.contains(&format!("Host: 127.0.0.1:{}\r\n", b.port())),
            "{head}"
        );
    }
    for p in ["/echo", "/chat/echo", "/push", "/headers"] {
        assert_eq!(
            served_by_us(&h, &format!("{base}{p}")),
            2,
            "{p}: expected this module to serve both browsers' upgrades (AH02451)"
        );
    }

    // Plain requests: mod_proxy_http (wst-echo's plain answers), never this module.
    let r = http_get(&t, "/poll?t=1").unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "plain GET /poll?t=1\n");
    let r = http_request_with_body(&t, "POST", "/xhr_send", b"[\"hello\"]");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "plain POST /xhr_send\n");
    let r = http_get(&t, "/headers").unwrap();
    assert_eq!(r.status, 200);
    assert!(
        !r.body_str().to_ascii_lowercase().contains("upgrade:"),
        "{}",
        r.body_str()
    );
    let r = http_get(&t, "/").unwrap();
    assert_eq!(r.body_str(), "plain GET /\n");
    for p in ["/poll?t=1", "/xhr_send", "/"] {
        assert_eq!(served_by_us(&h, &format!("{base}{p}")), 0, "{p}");
    }

    // Upgrades to other protocols stay mod_proxy_http's business (which does not pass h2c on).
    let req = UpgradeRequest::plain_get("/h2c", &t.host)
        .header("Connection", "Upgrade, HTTP2-Settings, close")
        .header("Upgrade", "h2c")
        .header("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA");
    let r = wst_e2e::client::http_request(&t, &req).unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, "plain GET /h2c\n".to_string()),
        "{}",
        r.head
    );
    assert_eq!(served_by_us(&h, &format!("{base}/h2c")), 0);

    // SockJS-style: polling, then an upgrade on the same (keep-alive) client connection.
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&UpgradeRequest::plain_get("/info", &t.host).to_bytes())
        .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, "plain GET /info\n".to_string())
    );
    let req = UpgradeRequest::new("/ka/echo", &t.host, Browser::Chrome);
    c.send(&req.to_bytes()).unwrap();
    let r = c.read_head().unwrap();
    check_101(&req, &r).unwrap();
    let mut ws = c.into_websocket();
    assert_eq!(
        roundtrip(&mut ws, Message::text("after polling")).unwrap(),
        Message::text("after polling")
    );
    close(&mut ws);
}

#[test]
fn upgrade_unset_on_http_route_is_not_tunnelled() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass / http://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    for br in Browser::ALL {
        let r = assert_not_tunnelled(&t, "/echo", br);
        eprintln!("unset, {br:?}: upgrade answered {}", r.status);
    }
    assert_eq!(
        served_by_us(&h, &format!("http://127.0.0.1:{}/echo", b.port())),
        0
    );
    // mod_proxy_http forwarded it (without the upgrade, on 2.4.47+ and 2.2).
    assert!(backend_got(&b, "/echo") >= 2, "{:?}", b.requests());
    let r = http_get(&t, "/poll").unwrap();
    assert_eq!(r.body_str(), "plain GET /poll\n");
}

#[test]
fn upgrade_in_location_proxy_section_and_explicit_off() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
<Location /app>
    ProxyWebsocketUpgrade On
</Location>
<Location /app/legacy>
    ProxyWebsocketUpgrade Off
</Location>
<Location /inloc/>
    ProxyPass http://127.0.0.1:{BACKEND_PORT}/inloc/
    ProxyWebsocketUpgrade On
</Location>
<Proxy "http://127.0.0.1:{BACKEND_PORT}/prox/">
    ProxyWebsocketUpgrade On
</Proxy>
ProxyPass /app http://127.0.0.1:{BACKEND_PORT}/app
ProxyPass /prox/ http://127.0.0.1:{BACKEND_PORT}/prox/
ProxyPass /other/ http://127.0.0.1:{BACKEND_PORT}/other/
"#,
        )
        .start();
    let t = h.target();
    for br in Browser::ALL {
        for p in ["/app/echo", "/inloc/echo", "/prox/echo"] {
            let (_r, mut ws) =
                WsClient::connect(&t, p, br).unwrap_or_else(|e| panic!("{p} {br:?}: {e}"));
            echo_sizes(&mut ws, &format!("{p} {br:?}"), 65536);
            close(&mut ws);
        }
        raw_echo_exact(&t, "/app/raw/echo", br);
        for p in ["/other/echo", "/app/legacy/echo"] {
            let r = assert_not_tunnelled(&t, p, br);
            eprintln!("{p} {br:?}: upgrade answered {}", r.status);
        }
    }
    let base = format!("http://127.0.0.1:{}", b.port());
    assert_eq!(served_by_us(&h, &format!("{base}/app/echo")), 2);
    assert_eq!(served_by_us(&h, &format!("{base}/prox/echo")), 2);
    assert_eq!(served_by_us(&h, &format!("{base}/other/echo")), 0);
    assert_eq!(served_by_us(&h, &format!("{base}/app/legacy/echo")), 0);
    for p in ["/app/poll", "/inloc/poll", "/prox/poll", "/other/poll"] {
        let r = http_get(&t, p).unwrap();
        assert_eq!(
            (r.status, r.body_str()),
            (200, format!("plain GET {p}\n")),
            "{p}"
        );
    }
}

const HTTPS_ROUTE: &str = r#"
SSLProxyEngine on
SSLProxyVerify require
SSLProxyCACertificateFile "{CA}"
ProxyWebsocketUpgrade On
ProxyPass / https://localhost:{BACKEND_PORT}/

<VirtualHost 127.0.0.1:{TLS_PORT}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile "{CERT}"
    SSLCertificateKeyFile "{KEY}"
    SSLProxyEngine on
    SSLProxyVerify require
    SSLProxyCACertificateFile "{CA}"
    ProxyWebsocketUpgrade On
    ProxyPass / https://localhost:{BACKEND_PORT}/
</VirtualHost>

<VirtualHost 127.0.0.1:{OFF_PORT}>
    SSLProxyEngine on
    SSLProxyVerify require
    SSLProxyCACertificateFile "{CA}"
    ProxyWebsocketUpgrade Off
    ProxyPass / https://localhost:{BACKEND_PORT}/
</VirtualHost>
"#;

#[test]
fn upgrade_on_https_route_with_tls_backend() {
    if !ours() || !need_ssl() {
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls(&pki);
    let h = Httpd::builder()
        .module("ssl")
        .pki(&pki)
        .listen("TLS_PORT")
        .listen("OFF_PORT")
        .var("BACKEND_PORT", b.port())
        .config(HTTPS_ROUTE)
        .start();
    let fronts = [
        ("plain front", h.target()),
        ("TLS front", h.tls_target(h.port_of("TLS_PORT"))),
    ];
    for (what, t) in &fronts {
        for br in Browser::ALL {
            let (_r, mut ws) =
                WsClient::connect(t, "/echo", br).unwrap_or_else(|e| panic!("{what} {br:?}: {e}"));
            echo_sizes(&mut ws, &format!("{what} {br:?}"), 1 << 20);
            close(&mut ws);
            let (_r, mut ws) = WsClient::connect(t, "/push", br).unwrap();
            assert_eq!(next_data(&mut ws).unwrap(), Message::text("pushed"));
            close(&mut ws);
            raw_echo_exact(t, "/raw/echo", br);
        }
        let r = http_get(t, "/poll").unwrap();
        assert_eq!(
            (r.status, r.body_str()),
            (200, "plain GET /poll\n".to_string()),
            "{what}"
        );
    }
    let url = format!("https://localhost:{}/echo", b.port());
    assert_eq!(served_by_us(&h, &url), 4, "both fronts, both browsers");
    // The vhost that says Off: mod_proxy_http's, not a tunnel.
    let off = Target::plain(h.port_of("OFF_PORT"));
    for br in Browser::ALL {
        assert_not_tunnelled(&off, "/off/echo", br);
    }
    let r = http_get(&off, "/off/poll").unwrap();
    assert_eq!(r.body_str(), "plain GET /off/poll\n");
    assert_eq!(
        served_by_us(&h, &format!("https://localhost:{}/off/echo", b.port())),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// ProxyWebsocketAllowOrigin
// ---------------------------------------------------------------------------------------------

/// Upgrade to `path` with `origin` (None: no Origin header) and `host`; Ok(()) for a working
/// tunnel (echo checked), Err(response) otherwise.
fn upgrade_with_origin(
    t: &Target,
    path: &str,
    host: &str,
    origin: Option<&str>,
) -> Result<(), Response> {
    let mut req = UpgradeRequest::new(path, host, Browser::Chrome).remove("Origin");
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    let (mut r, c) = try_upgrade(t, &req).unwrap_or_else(|e| panic!("{path} {origin:?}: {e}"));
    if r.status != 101 {
        let mut c = c;
        let _ = c.read_body(&mut r, false);
        return Err(r);
    }
    check_101(&req, &r).unwrap();
    let mut ws = c.into_websocket();
    assert_eq!(
        roundtrip(&mut ws, Message::text("origin ok")).unwrap(),
        Message::text("origin ok"),
        "{path} {origin:?}"
    );
    close(&mut ws);
    Ok(())
}

/// Run `cases` of (Host, Origin, allowed) against `path_prefix`, each on its own backend path;
/// a refused one must be a 403 that never reached the backend and is logged (warning level,
/// WST042, naming the origin).
fn origin_cases(
    h: &Httpd,
    b: &WstEcho,
    path_prefix: &str,
    backend_prefix: &str,
    cases: &[(String, Option<String>, bool)],
) {
    origin_cases_on(h, &h.target(), b, path_prefix, backend_prefix, cases);
}

fn origin_cases_on(
    h: &Httpd,
    t: &Target,
    b: &WstEcho,
    path_prefix: &str,
    backend_prefix: &str,
    cases: &[(String, Option<String>, bool)],
) {
    for (i, (host, origin, allowed)) in cases.iter().enumerate() {
        let path = format!("{path_prefix}case{i}/echo");
        let backend_path = format!("{backend_prefix}case{i}/echo");
        let got = upgrade_with_origin(t, &path, host, origin.as_deref());
        match (allowed, got) {
            (true, Ok(())) => {
                assert_eq!(backend_got(b, &backend_path), 1, "{path}");
            }
            (false, Err(r)) => {
                assert_eq!(
                    r.status, 403,
                    "Host {host}, Origin {origin:?}: expected 403:\n{}",
                    r.head
                );
                assert_eq!(
                    backend_got(b, &backend_path),
                    0,
                    "Host {host}, Origin {origin:?}: refused, yet the backend got the request: {:?}",
                    b.requests()
                );
                let o = origin.as_deref().unwrap_or("(none)");
                let line = h
                    .wait_error_line(WAIT, &["WST042", &format!("Origin {o} "), &backend_path])
                    .unwrap_or_else(|| {
                        panic!(
                            "no WST042 line naming origin {o} and {backend_path}:\n{}",
                            h.error_log()
                        )
                    });
                assert!(
                    line.contains(":warn]") || line.contains("[warn]"),
                    "WST042 not at warning level: {line}"
                );
            }
            (true, Err(r)) => panic!(
                "Host {host}, Origin {origin:?} must be allowed, got:\n{}{}",
                r.head,
                r.body_str()
            ),
            (false, Ok(())) => {
                panic!("Host {host}, Origin {origin:?} must be refused, got a tunnel")
            }
        }
    }
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn allow_origin_same() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .log_level("warn")
        .var("BACKEND_PORT", b.port())
        .config("ProxyWebsocketAllowOrigin same\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let p = h.port();
    let hp = format!("127.0.0.1:{p}");
    let lh = format!("localhost:{p}");
    let cases = vec![
        (hp.clone(), Some(format!("http://127.0.0.1:{p}")), true),
        (hp.clone(), Some(format!("HTTP://127.0.0.1:{p}")), true),
        // An https page may open a ws:// tunnel to the same host and port.
        (hp.clone(), Some(format!("https://127.0.0.1:{p}")), true),
        (lh.clone(), Some(format!("http://localhost:{p}")), true),
        (hp.clone(), None, true),
        (hp.clone(), Some(s("http://evil.example")), false),
        (hp.clone(), Some(format!("http://evil.example:{p}")), false),
        (
            hp.clone(),
            Some(format!("http://127.0.0.1:{}", p.wrapping_add(1))),
            false,
        ),
        (hp.clone(), Some(s("http://127.0.0.1")), false),
        (hp.clone(), Some(s("null")), false),
        (lh.clone(), Some(format!("http://127.0.0.1:{p}")), false),
        (
            hp.clone(),
            Some(format!("http://127.0.0.1.evil.example:{p}")),
            false,
        ),
    ];
    origin_cases(&h, &b, "/ws/", "/", &cases);
}

#[test]
fn allow_origin_list_and_missing_origin() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .log_level("warn")
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
ProxyWebsocketAllowOrigin https://app.example.com http://localhost:8080
ProxyWebsocketAllowOrigin https://second-line.example.org
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#,
        )
        .start();
    let hp = format!("127.0.0.1:{}", h.port());
    let cases: Vec<(String, Option<String>, bool)> = [
        (Some("https://app.example.com"), true),
        (Some("HTTPS://APP.EXAMPLE.COM"), true),
        (Some("https://app.example.com:443"), true),
        (Some("http://localhost:8080"), true),
        (Some("https://second-line.example.org"), true),
        (None, true),
        (Some("http://app.example.com"), false),
        (Some("https://app.example.com:8443"), false),
        (Some("https://app.example.com.evil.net"), false),
        (Some("http://localhost"), false),
        (Some("https://evil.example"), false),
        (Some("null"), false),
    ]
    .into_iter()
    .map(|(o, ok)| (hp.clone(), o.map(s), ok))
    .collect();
    origin_cases(&h, &b, "/ws/", "/", &cases);
    // Not 'same' unless listed: the request's own origin is refused here.
    let own = vec![(hp.clone(), Some(format!("http://{hp}")), false)];
    origin_cases(&h, &b, "/ws/own-", "/own-", &own);
}

#[test]
fn allow_origin_star_and_per_location_override() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .log_level("warn")
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
ProxyWebsocketAllowOrigin same
<Location /ws/open/>
    ProxyWebsocketAllowOrigin *
</Location>
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#,
        )
        .start();
    let hp = format!("127.0.0.1:{}", h.port());
    let open: Vec<_> = [
        Some("https://evil.example"),
        Some("null"),
        Some("http://anything:1"),
        None,
    ]
    .into_iter()
    .map(|o| (hp.clone(), o.map(s), true))
    .collect();
    origin_cases(&h, &b, "/ws/open/", "/open/", &open);
    let closed = vec![
        (hp.clone(), Some(s("https://evil.example")), false),
        (hp.clone(), Some(format!("http://{hp}")), true),
    ];
    origin_cases(&h, &b, "/ws/closed/", "/closed/", &closed);
}

/// The Origin policy on a ProxyWebsocketUpgrade route: upgrades only; plain requests with any
/// Origin are mod_proxy_http's as before.
#[test]
fn allow_origin_on_upgrade_route_applies_to_upgrades_only() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .log_level("warn")
        .var("BACKEND_PORT", b.port())
        .config(
            "ProxyWebsocketUpgrade On\nProxyWebsocketAllowOrigin same\nProxyPass / http://127.0.0.1:{BACKEND_PORT}/\n",
        )
        .start();
    let hp = format!("127.0.0.1:{}", h.port());
    let cases = vec![
        (hp.clone(), Some(format!("http://{hp}")), true),
        (hp.clone(), Some(s("https://evil.example")), false),
        (hp.clone(), None, true),
    ];
    origin_cases(&h, &b, "/sock/", "/sock/", &cases);
    let t = h.target();
    let req = UpgradeRequest::plain_get("/xhr", &t.host)
        .header("Origin", "https://evil.example")
        .header("Connection", "close");
    let r = wst_e2e::client::http_request(&t, &req).unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, "plain GET /xhr\n".to_string())
    );
}

// ---------------------------------------------------------------------------------------------
// ProxyWebsocketMaxTunnels
// ---------------------------------------------------------------------------------------------

/// prefork: enough children up front that every tunnel has its own; threaded MPMs: several
/// small children, so that tunnels may land in different processes.
const SEVERAL_CHILDREN: &str = r#"
<IfModule prefork.c>
    StartServers 5
    MinSpareServers 5
    MaxSpareServers 10
</IfModule>
<IfModule worker.c>
    StartServers 3
    ThreadsPerChild 4
    MinSpareThreads 4
    MaxSpareThreads 16
</IfModule>
<IfModule event.c>
    StartServers 3
    ThreadsPerChild 4
    MinSpareThreads 4
    MaxSpareThreads 16
</IfModule>
"#;

type Ws = tungstenite::WebSocket<wst_e2e::net::Stream>;

fn open_tunnel(t: &Target, path: &str, i: usize) -> Ws {
    let (_r, mut ws) = WsClient::connect(t, path, Browser::ALL[i % 2])
        .unwrap_or_else(|e| panic!("tunnel {i} to {path}: {e}"));
    let m = format!("tunnel {i}");
    assert_eq!(
        roundtrip(&mut ws, Message::text(m.clone())).unwrap(),
        Message::text(m)
    );
    ws
}

/// An upgrade refused by the cap: 503 with Retry-After: 10.
fn assert_refused_by_cap(t: &Target, path: &str) {
    let req = UpgradeRequest::new(path, &t.host, Browser::Firefox);
    let (mut r, mut c) = try_upgrade(t, &req).unwrap();
    assert_eq!(r.status, 503, "{path}: over the cap:\n{}", r.head);
    assert_eq!(
        r.header("Retry-After").map(str::trim),
        Some("10"),
        "{path}:\n{}",
        r.head
    );
    let _ = c.read_body(&mut r, false);
}

/// A new tunnel as soon as the cap allows (bounded retries); returns it and the attempts.
fn tunnel_when_allowed(t: &Target, path: &str) -> (Ws, usize) {
    let (ws, n) = retry(WAIT, Duration::from_millis(100), || {
        let req = UpgradeRequest::new(path, &t.host, Browser::Chrome);
        let (r, c) = try_upgrade(t, &req).ok()?;
        if r.status == 101 {
            check_101(&req, &r).unwrap();
            Some(c.into_websocket())
        } else {
            assert_eq!(r.status, 503, "{path}: unexpected answer:\n{}", r.head);
            None
        }
    });
    let ws = ws.unwrap_or_else(|| panic!("{path}: still refused after {WAIT:?}"));
    (ws, n)
}

fn max_tunnels_under(mpm: &str) {
    if !ours() {
        return;
    }
    if !Httpd::flavor().supports_mpm(mpm) {
        eprintln!("SKIP: this httpd cannot run the {mpm} MPM");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .mpm(mpm)
        .var("BACKEND_PORT", b.port())
        .config(SEVERAL_CHILDREN)
        .config("ProxyWebsocketMaxTunnels 3\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    if mpm == "prefork" {
        assert!(
            wst_e2e::wait_for(WAIT, || (h.child_pids().len() >= 5).then_some(())).is_some(),
            "prefork did not start 5 children: {:?}",
            h.child_pids()
        );
    }

    let mut open: Vec<Ws> = (0..3).map(|i| open_tunnel(&t, "/ws/echo", i)).collect();
    let pids: Vec<Option<u32>> = open
        .iter()
        .map(|ws| serving_child(&h, local_port(ws.get_ref())))
        .collect();
    eprintln!("{mpm}: tunnels served by children {pids:?}");
    if mpm == "prefork" {
        // One connection per prefork child: three tunnels are three processes, so a refusal
        // of the fourth can only come from a count they share.
        let mut distinct: Vec<u32> = pids.iter().map(|p| p.expect("serving child")).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{pids:?}");
    }

    assert_refused_by_cap(&t, "/ws/fourth");
    assert_refused_by_cap(&t, "/ws/fifth");
    assert_eq!(
        backend_got(&b, "/fourth") + backend_got(&b, "/fifth"),
        0,
        "refused upgrades reached the backend: {:?}",
        b.requests()
    );
    assert!(
        h.wait_error_line(WAIT, &["WST041", "ProxyWebsocketMaxTunnels 3"])
            .is_some_and(|l| l.contains(":warn]") || l.contains("[warn]")),
        "no WST041 warning:\n{}",
        h.error_log()
    );
    // The three keep working.
    for (i, ws) in open.iter_mut().enumerate() {
        let m = format!("still {i}");
        assert_eq!(
            roundtrip(ws, Message::text(m.clone())).unwrap(),
            Message::text(m)
        );
    }

    // One closes: a new one gets in (as soon as the closed one is counted out).
    let mut first = open.remove(0);
    close(&mut first);
    drop(first);
    let (mut ws, attempts) = tunnel_when_allowed(&t, "/ws/replacement");
    eprintln!("{mpm}: replacement tunnel after {attempts} attempt(s)");
    assert_eq!(
        roundtrip(&mut ws, Message::text("replacement")).unwrap(),
        Message::text("replacement")
    );
    open.push(ws);
    // Full again.
    assert_refused_by_cap(&t, "/ws/sixth");
    for ws in open.iter_mut() {
        close(ws);
    }
    drop(open);
    // All closed: three at once again.
    let (ws, _) = tunnel_when_allowed(&t, "/ws/again");
    let mut again = vec![ws];
    for i in 1..3 {
        let (ws, _) = tunnel_when_allowed(&t, "/ws/again");
        let _ = i;
        again.push(ws);
    }
    for ws in again.iter_mut() {
        close(ws);
    }
}

#[test]
fn max_tunnels_shared_under_prefork() {
    max_tunnels_under("prefork");
}

#[test]
fn max_tunnels_shared_under_worker() {
    max_tunnels_under("worker");
}

#[test]
fn max_tunnels_shared_under_event() {
    max_tunnels_under("event");
}

/// A refusal by the cap is not a backend failure. mod_proxy treats a 503 from a scheme handler
/// as one: with a balancer it puts the member in error state and fails over to the next
/// member (which refuses too, and is put in error state as well). Then one refused upgrade is
/// logged and counted once per member, and, unless the balancer's forced recovery kicks in
/// (`forcerecovery=off` here, 2.4.2+), no request reaches the balancer for the members' retry
/// time (60 s) although the cap is free again.
#[test]
fn max_tunnels_refusal_does_not_take_balancer_members_out() {
    if !ours() || !need_module("proxy_balancer") || !need_module("status") {
        return;
    }
    let b1 = WstEcho::start();
    let b2 = WstEcho::start();
    let no_forced_recovery = if Httpd::flavor().version >= (2, 4, 2) {
        "ProxySet forcerecovery=off"
    } else {
        ""
    };
    let h = Httpd::builder()
        .modules(&["proxy_balancer", "status"])
        .var("B1", b1.port())
        .var("B2", b2.port())
        .var("NO_FORCED_RECOVERY", no_forced_recovery)
        .config(
            r#"
<Location /server-status>
    SetHandler server-status
</Location>
ProxyWebsocketMaxTunnels 1
<Proxy "balancer://wsgroup">
    BalancerMember "ws://127.0.0.1:{B1}"
    BalancerMember "ws://127.0.0.1:{B2}"
    {NO_FORCED_RECOVERY}
</Proxy>
ProxyPass /bal/ balancer://wsgroup/
"#,
        )
        .start();
    let t = h.target();
    let mut ws = open_tunnel(&t, "/bal/echo", 0);
    assert_refused_by_cap(&t, "/bal/refused");
    let mut problems = Vec::new();
    let wst041 = h.error_log().matches("WST041").count();
    if wst041 != 1 {
        problems.push(format!(
            "one refused upgrade was refused {wst041} times (mod_proxy failed over to the other \
             member after the 503)"
        ));
    }
    let refused = counts(&t).2;
    if refused != 1 {
        problems.push(format!(
            "one refused upgrade counted {refused} times in WebSocketTunnelsRefused"
        ));
    }
    close(&mut ws);
    drop(ws);
    // The cap is free again: within a few seconds (far less than the members' 60 s retry),
    // upgrades and plain requests to the balancer work.
    let (ws, attempts) = retry(WAIT, Duration::from_millis(200), || {
        let req = UpgradeRequest::new("/bal/after", &t.host, Browser::Chrome);
        let (r, c) = try_upgrade(&t, &req).ok()?;
        (r.status == 101).then(|| c.into_websocket())
    });
    match ws {
        Some(mut ws) => {
            assert_eq!(
                roundtrip(&mut ws, Message::text("bal")).unwrap(),
                Message::text("bal")
            );
            close(&mut ws);
        }
        None => problems.push(format!(
            "no tunnel through the balancer {WAIT:?} after the cap was freed ({attempts} \
             attempts): its members were put in error state by the refusal"
        )),
    }
    match http_get(&t, "/bal/plain") {
        Ok(r) if r.status == 200 => {}
        Ok(r) => problems.push(format!("plain GET through the balancer: {}", r.status)),
        Err(e) => problems.push(format!("plain GET through the balancer: {e}")),
    }
    assert!(
        problems.is_empty(),
        "{}\nerror log:\n{}",
        problems.join("\n"),
        h.error_log()
    );
}

// ---------------------------------------------------------------------------------------------
// mod_status
// ---------------------------------------------------------------------------------------------

const STATUS: &str = r#"
<Location /server-status>
    SetHandler server-status
</Location>
ProxyWebsocketMaxTunnels 2
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#;

fn counts(t: &Target) -> (u64, u64, u64) {
    let m = status_auto(t, "/server-status").unwrap();
    let get = |k: &str| {
        status_num(&m, k).unwrap_or_else(|| panic!("no {k} in /server-status?auto: {m:?}"))
    };
    (
        get("WebSocketTunnels"),
        get("WebSocketTunnelsTotal"),
        get("WebSocketTunnelsRefused"),
    )
}

fn wait_counts(t: &Target, want: (u64, u64, u64)) {
    let mut last = (0, 0, 0);
    let ok = wst_e2e::wait_for(WAIT, || {
        last = counts(t);
        (last == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "(open, total, refused): want {want:?}, have {last:?}"
    );
}

fn status_counts_under(mpm: &str) {
    if !ours() || !need_module("status") {
        return;
    }
    if !Httpd::flavor().supports_mpm(mpm) {
        eprintln!("SKIP: this httpd cannot run the {mpm} MPM");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .mpm(mpm)
        .module("status")
        .var("BACKEND_PORT", b.port())
        .config(SEVERAL_CHILDREN)
        .config(STATUS)
        .start();
    let t = h.target();
    assert_eq!(counts(&t), (0, 0, 0));
    let mut a = open_tunnel(&t, "/ws/echo", 0);
    assert_eq!(counts(&t), (1, 1, 0));
    let mut b2 = open_tunnel(&t, "/ws/echo", 1);
    assert_eq!(counts(&t), (2, 2, 0));
    assert_refused_by_cap(&t, "/ws/refused");
    assert_eq!(counts(&t), (2, 2, 1));

    let html = http_get(&t, "/server-status").unwrap();
    assert_eq!(html.status, 200);
    let body = html.body_str();
    assert!(body.contains("WebSocket tunnels"), "{body}");
    assert!(
        body.contains("Open tunnels: 2 of at most 2"),
        "HTML section:\n{body}"
    );
    assert!(body.contains("Opened since start: 2"), "{body}");
    assert!(
        body.contains("Refused by ProxyWebsocketMaxTunnels: 1"),
        "{body}"
    );

    close(&mut a);
    drop(a);
    wait_counts(&t, (1, 2, 1));
    let mut c = open_tunnel(&t, "/ws/echo", 2);
    assert_eq!(counts(&t), (2, 3, 1));
    assert_refused_by_cap(&t, "/ws/refused-again");
    assert_eq!(counts(&t), (2, 3, 2));
    close(&mut b2);
    close(&mut c);
    drop((b2, c));
    wait_counts(&t, (0, 3, 2));
    // A tunnel that the backend ends is counted out too.
    let (_r, mut ws) = WsClient::connect(&t, "/ws/bye", Browser::Chrome).unwrap();
    assert_eq!(next_data(&mut ws).unwrap(), Message::text("bye"));
    close(&mut ws);
    drop(ws);
    wait_counts(&t, (0, 4, 2));
    // Plain requests and refusals are not tunnels.
    let r = http_get(&t, "/ws/plain").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(counts(&t), (0, 4, 2));
}

#[test]
fn status_counts_under_event() {
    status_counts_under("event");
}

#[test]
fn status_counts_under_worker() {
    status_counts_under("worker");
}

#[test]
fn status_counts_under_prefork() {
    status_counts_under("prefork");
}

/// A graceful restart keeps the count: tunnels still open in the old generation are still
/// counted (and still limited), and counted out when they end.
#[test]
fn status_counts_and_cap_survive_graceful_restart() {
    if !ours() || !need_module("status") {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("status")
        .var("BACKEND_PORT", b.port())
        .config(SEVERAL_CHILDREN)
        .config(STATUS)
        .start();
    let t = h.target();
    let mut open: Vec<Ws> = (0..2).map(|i| open_tunnel(&t, "/ws/echo", i)).collect();
    assert_eq!(counts(&t), (2, 2, 0));
    let old_children = h.child_pids();
    // SAFETY: kill only sends SIGUSR1 (graceful restart) to the httpd parent this test started.
    assert_eq!(
        unsafe { libc::kill(h.pid().unwrap() as i32, libc::SIGUSR1) },
        0
    );
    assert!(
        wst_e2e::wait_for(WAIT, || {
            let now = h.child_pids();
            now.iter().any(|p| !old_children.contains(p)).then_some(())
        })
        .is_some(),
        "no new generation of children after SIGUSR1"
    );
    // The restart is done once the new generation answers.
    let _ = wst_e2e::wait_for(WAIT, || {
        h.error_log()
            .contains("resuming normal operations")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counts(&t).0, 2, "open tunnels after a graceful restart");
    for (i, ws) in open.iter_mut().enumerate() {
        let m = format!("after restart {i}");
        assert_eq!(
            roundtrip(ws, Message::text(m.clone())).unwrap(),
            Message::text(m)
        );
    }
    assert_refused_by_cap(&t, "/ws/over");
    for ws in open.iter_mut() {
        close(ws);
    }
    drop(open);
    let mut last = (0, 0, 0);
    assert!(
        wst_e2e::wait_for(WAIT, || {
            last = counts(&t);
            (last.0 == 0).then_some(())
        })
        .is_some(),
        "open count after closing the old generation's tunnels: {last:?}"
    );
    let mut ws = open_tunnel(&t, "/ws/echo", 3);
    assert_eq!(counts(&t).0, 1);
    close(&mut ws);
}

// ---------------------------------------------------------------------------------------------
// Request notes
// ---------------------------------------------------------------------------------------------

const NOTES: &str = r#"
LogFormat "%{wstunnel-client-bytes}n|%{wstunnel-backend-bytes}n|%{wstunnel-duration-ms}n|%{wstunnel-closed-first}n|%{wstunnel-end}n|%>s|%r" wstnotes
CustomLog "{DIR}/logs/notes.log" wstnotes
<Location /ws/idle/>
    ProxyWebsocketIdleTimeout 1
</Location>
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#;

#[derive(Debug)]
struct Notes {
    client_bytes: String,
    backend_bytes: String,
    duration_ms: String,
    closed_first: String,
    end: String,
    status: String,
    raw: String,
}

impl Notes {
    fn parse(line: &str) -> Option<Notes> {
        let f: Vec<&str> = line.splitn(7, '|').collect();
        (f.len() == 7).then(|| Notes {
            client_bytes: f[0].into(),
            backend_bytes: f[1].into(),
            duration_ms: f[2].into(),
            closed_first: f[3].into(),
            end: f[4].into(),
            status: f[5].into(),
            raw: line.into(),
        })
    }
    fn duration(&self) -> u64 {
        self.duration_ms
            .parse()
            .unwrap_or_else(|_| panic!("duration not a number: {}", self.raw))
    }
}

fn notes_for(h: &Httpd, path: &str) -> Notes {
    let needle = format!("|GET {path} HTTP/1.1");
    let line = wait_log_line(h, "notes.log", WAIT, |l| l.ends_with(&needle)).unwrap_or_else(|| {
        panic!(
            "no notes line for {path}:\n{}",
            log_lines(h, "notes.log").join("\n")
        )
    });
    Notes::parse(&line).unwrap_or_else(|| panic!("unparsable notes line {line:?}"))
}

/// Upgrade with a raw client; returns it after the 101 (the head is consumed, any bytes after
/// it stay buffered).
fn raw_tunnel(t: &Target, path: &str) -> RawClient {
    let req = UpgradeRequest::new(path, &t.host, Browser::Firefox);
    let (r, c) = try_upgrade(t, &req).unwrap();
    check_101(&req, &r).unwrap_or_else(|e| panic!("{path}: {e}"));
    c
}

fn notes_httpd(b: &WstEcho) -> Httpd {
    Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(NOTES)
        .start()
}

/// The client ends the tunnel: frames both ways, then the client's FIN (no close frame, like a
/// killed browser); the backend closes only after that.
#[test]
fn notes_client_closes_first() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = notes_httpd(&b);
    let t = h.target();
    // The first frame goes in the same write as the upgrade request (it waits in httpd's
    // input filters until the tunnel starts, and must be counted too).
    let req = UpgradeRequest::new("/ws/echo/client-first", &t.host, Browser::Firefox);
    let first = client_frame(OP_TEXT, b"pipelined");
    let mut bytes = req.to_bytes();
    bytes.extend_from_slice(&first);
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&bytes).unwrap();
    let t0 = Instant::now();
    check_101(&req, &c.read_head().unwrap()).unwrap();
    let back = server_frame(OP_TEXT, b"pipelined");
    assert_eq!(c.read_exact_bytes(back.len()).unwrap(), back);
    let mut sent = first.len() as u64;
    let mut expect_back = back.len() as u64;
    for (i, n) in [5usize, 300, 70_000].into_iter().enumerate() {
        let p = binary_payload(n, i as u8);
        let f = client_frame(OP_BINARY, &p);
        sent += f.len() as u64;
        c.send(&f).unwrap();
        let want = server_frame(OP_BINARY, &p);
        expect_back += want.len() as u64;
        assert_eq!(c.read_exact_bytes(want.len()).unwrap(), want);
    }
    std::thread::sleep(Duration::from_millis(400));
    c.shutdown_write().unwrap();
    let (rest, end) = c.read_until_close(WAIT);
    let elapsed = t0.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(end, End::Eof);
    let n = notes_for(&h, "/ws/echo/client-first");
    assert_eq!(n.status, "101", "{n:?}");
    assert_eq!(n.client_bytes, sent.to_string(), "client bytes: {n:?}");
    assert_eq!(
        n.backend_bytes,
        expect_back.to_string(),
        "backend bytes: {n:?}"
    );
    assert_eq!(n.closed_first, "client", "{n:?}");
    assert_eq!(n.end, "closed", "{n:?}");
    let d = n.duration();
    assert!(
        d >= 400 && d <= elapsed.as_millis() as u64 + 100,
        "duration {d} ms, tunnel lasted about {elapsed:?}: {n:?}"
    );
}

/// The client closes first with a close frame among its data (its FIN follows): /halfclose
/// answers only after the client's EOF, with the number of bytes it received, which must be
/// what the client wrote and what the note says.
#[test]
fn notes_client_close_frame_then_fin_counts_match_backend() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = notes_httpd(&b);
    let t = h.target();
    let mut c = raw_tunnel(&t, "/ws/halfclose/notes");
    let mut wire = Vec::new();
    wire.extend_from_slice(&client_frame(OP_TEXT, b"one"));
    wire.extend_from_slice(&client_frame(OP_BINARY, &binary_payload(1000, 7)));
    wire.extend_from_slice(&client_frame(OP_CLOSE, &[0x03, 0xe8]));
    c.send(&wire).unwrap();
    c.shutdown_write().unwrap();
    let f = c.read_frame().unwrap();
    assert_eq!(f.opcode, OP_TEXT);
    assert_eq!(String::from_utf8_lossy(&f.payload), wire.len().to_string());
    let (rest, end) = c.read_until_close(WAIT);
    assert!(rest.is_empty() && end == End::Eof, "{rest:?} {end:?}");
    let count_frame = server_frame(OP_TEXT, wire.len().to_string().as_bytes());
    let n = notes_for(&h, "/ws/halfclose/notes");
    assert_eq!(n.client_bytes, wire.len().to_string(), "{n:?}");
    assert_eq!(n.backend_bytes, count_frame.len().to_string(), "{n:?}");
    assert_eq!(n.closed_first, "client", "{n:?}");
    assert_eq!(n.end, "closed", "{n:?}");
}

/// The backend ends the conversation (/bye: a text frame and a close frame in the same write
/// as its 101, then FIN); the client answers the close and closes.
#[test]
fn notes_backend_closes_first() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = notes_httpd(&b);
    let t = h.target();
    let mut c = raw_tunnel(&t, "/ws/bye/notes");
    let f = c.read_frame().unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (OP_TEXT, &b"bye"[..]));
    let f = c.read_frame().unwrap();
    assert_eq!(f.opcode, OP_CLOSE);
    // The backend's FIN reaches the client (half-close), before the client answers.
    let (rest, end) = c.read_until_close(WAIT);
    assert!(rest.is_empty() && end == End::Eof, "{rest:?} {end:?}");
    let reply = client_frame(OP_CLOSE, &[0x03, 0xe8]);
    c.send(&reply).unwrap();
    c.shutdown_write().unwrap();
    let backend_sent =
        server_frame(OP_TEXT, b"bye").len() + server_frame(OP_CLOSE, &[3, 0xe8]).len();
    let n = notes_for(&h, "/ws/bye/notes");
    assert_eq!(n.backend_bytes, backend_sent.to_string(), "{n:?}");
    assert_eq!(n.client_bytes, reply.len().to_string(), "{n:?}");
    assert_eq!(n.closed_first, "backend", "{n:?}");
    assert_eq!(n.end, "closed", "{n:?}");

    // /drop: the backend goes away without a close frame.
    let mut c = raw_tunnel(&t, "/ws/drop/notes");
    let f = c.read_frame().unwrap();
    assert_eq!(f.payload, b"bye");
    let (rest, end) = c.read_until_close(WAIT);
    assert!(rest.is_empty() && end == End::Eof, "{rest:?} {end:?}");
    drop(c);
    let n = notes_for(&h, "/ws/drop/notes");
    assert_eq!(
        n.backend_bytes,
        server_frame(OP_TEXT, b"bye").len().to_string(),
        "{n:?}"
    );
    assert_eq!(n.client_bytes, "0", "{n:?}");
    assert_eq!(n.closed_first, "backend", "{n:?}");
    assert_eq!(n.end, "closed", "{n:?}");
}

/// ProxyWebsocketIdleTimeout ends a quiet tunnel: wstunnel-end is "idle", nobody closed.
#[test]
fn notes_idle_end_and_no_notes_without_a_tunnel() {
    if !ours() {
        return;
    }
    let b = WstEcho::start();
    let h = notes_httpd(&b);
    let t = h.target();
    let mut c = raw_tunnel(&t, "/ws/idle/echo");
    let f = client_frame(OP_TEXT, b"x");
    c.send(&f).unwrap();
    let back = server_frame(OP_TEXT, b"x");
    assert_eq!(c.read_exact_bytes(back.len()).unwrap(), back);
    let t0 = Instant::now();
    let (rest, end) = c.read_until_close(WAIT);
    // A WebSocket tunnel's idle timeout sends Close 1001 (going away), then
    // closes.
    assert_eq!(rest, server_frame(OP_CLOSE, &1001u16.to_be_bytes()), "{rest:?}");
    assert_ne!(end, End::Timeout, "the idle tunnel was not closed");
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
    let n = notes_for(&h, "/ws/idle/echo");
    assert_eq!(n.end, "idle", "{n:?}");
    assert_eq!(n.closed_first, "none", "{n:?}");
    assert_eq!(n.client_bytes, f.len().to_string(), "{n:?}");
    assert_eq!(n.backend_bytes, back.len().to_string(), "{n:?}");
    assert!((900..10_000).contains(&n.duration()), "{n:?}");

    // Requests that are no tunnel have no notes.
    let r = http_get(&t, "/ws/plain").unwrap();
    assert_eq!(r.status, 200);
    let line = wait_log_line(&h, "notes.log", WAIT, |l| {
        l.ends_with("|GET /ws/plain HTTP/1.1")
    })
    .unwrap();
    assert!(line.starts_with("-|-|-|-|-|200|"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Directive syntax and contexts
// ---------------------------------------------------------------------------------------------

/// `ProxyWebsocketAllowOrigin` without an origin must not load (and leave every origin
/// allowed): httpd 2.4's core refuses an ITERATE directive without arguments, 2.2's calls the
/// directive's function zero times and says nothing.
#[test]
fn allow_origin_without_arguments_is_a_syntax_error() {
    if !ours() {
        return;
    }
    match start_result("ProxyWebsocketAllowOrigin\n") {
        Ok(_h) => panic!("httpd accepted a ProxyWebsocketAllowOrigin line without any origin"),
        Err(msg) => assert!(
            msg.contains("ProxyWebsocketAllowOrigin") && msg.contains("Syntax error"),
            "the failure does not name ProxyWebsocketAllowOrigin:\n{msg}"
        ),
    }
}

/// Start an httpd with `snippet`; Err(the failure text) if it does not start.
fn start_result(snippet: &str) -> Result<Httpd, String> {
    let snippet = snippet.to_string();
    std::panic::catch_unwind(AssertUnwindSafe(move || {
        Httpd::builder().config(&snippet).start()
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn directive_syntax_and_contexts() {
    if !ours() {
        return;
    }
    let bad = [
        (
            "<VirtualHost 127.0.0.1:{PORT}>\n    ProxyWebsocketMaxTunnels 3\n</VirtualHost>\n",
            "ProxyWebsocketMaxTunnels",
        ),
        (
            "<Location /x>\n    ProxyWebsocketMaxTunnels 3\n</Location>\n",
            "ProxyWebsocketMaxTunnels",
        ),
        (
            "ProxyWebsocketMaxTunnels many\n",
            "ProxyWebsocketMaxTunnels",
        ),
        ("ProxyWebsocketMaxTunnels -1\n", "ProxyWebsocketMaxTunnels"),
        ("ProxyWebsocketUpgrade maybe\n", "ProxyWebsocketUpgrade"),
        // httpd's time syntax and nothing else: no sign, no unknown unit, nothing after it.
        ("ProxyWebsocketIdleTimeout -5\n", "ProxyWebsocketIdleTimeout"),
        ("ProxyWebsocketIdleTimeout 5x\n", "ProxyWebsocketIdleTimeout"),
        ("ProxyWebsocketIdleTimeout 5sec\n", "ProxyWebsocketIdleTimeout"),
        ("ProxyWebsocketIdleTimeout ms\n", "ProxyWebsocketIdleTimeout"),
        ("ProxyWebsocketPing 1.5\n", "ProxyWebsocketPing"),
        ("ProxyWebsocketDrain 400d\n", "ProxyWebsocketDrain"),
        ("ProxyWebsocketAsyncDelay soon\n", "ProxyWebsocketAsyncDelay"),
    ];
    for (snippet, name) in bad {
        match start_result(snippet) {
            Ok(_h) => panic!("httpd accepted:\n{snippet}"),
            Err(msg) => assert!(
                msg.contains(name) && msg.contains("Syntax error"),
                "{snippet}: the failure does not name {name}:\n{msg}"
            ),
        }
    }
    // Every allowed context loads.
    let good = r#"
ProxyWebsocketMaxTunnels 0
ProxyWebsocketUpgrade Off
ProxyWebsocketAllowOrigin *
<VirtualHost 127.0.0.1:{PORT}>
    ProxyWebsocketUpgrade On
    ProxyWebsocketAllowOrigin same https://a.example
</VirtualHost>
<Location /a>
    ProxyWebsocketUpgrade On
    ProxyWebsocketAllowOrigin same
</Location>
<Proxy "http://127.0.0.1:1/">
    ProxyWebsocketUpgrade On
    ProxyWebsocketAllowOrigin https://a.example
</Proxy>
"#;
    if let Err(msg) = start_result(good) {
        panic!("valid configuration refused:\n{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// Slots, failures, TLS
// ---------------------------------------------------------------------------------------------

/// Every way an upgrade can fail gives its slot back: with a cap of 1, a relayed 404, an
/// unreachable backend, an invalid 101 and a refused Origin each leave room for the next
/// tunnel. And WebSocketTunnelsTotal ("opened since start") counts the tunnels that opened.
#[test]
fn max_tunnels_slot_given_back_after_failed_upgrades() {
    if !ours() || !need_module("status") {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("status")
        .log_level("warn")
        .var("BACKEND_PORT", b.port())
        .var("DEAD_PORT", wst_e2e::net::closed_port())
        .config(
            r#"
<Location /server-status>
    SetHandler server-status
</Location>
ProxyWebsocketMaxTunnels 1
ProxyWebsocketAllowOrigin same
ProxyPass /dead/ ws://127.0.0.1:{DEAD_PORT}/
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#,
        )
        .start();
    let t = h.target();
    let failures: [(&str, Option<&str>, u16); 5] = [
        ("/ws/status/404", None, 404),
        ("/dead/echo", None, 503),
        ("/ws/bad-accept", None, 502),
        ("/ws/no-upgrade-101", None, 502),
        ("/ws/echo", Some("https://evil.example"), 403),
    ];
    let mut opened = 0;
    for (path, origin, want) in failures {
        let mut req = UpgradeRequest::new(path, &t.host, Browser::Chrome);
        if let Some(o) = origin {
            req = req.set("Origin", o);
        }
        let (mut r, mut c) = try_upgrade(&t, &req).unwrap();
        assert_eq!(r.status, want, "{path}:\n{}", r.head);
        let _ = c.read_body(&mut r, false);
        drop(c);
        let (mut ws, n) = tunnel_when_allowed(&t, "/ws/echo");
        opened += 1;
        eprintln!("after {path} ({want}): tunnel admitted after {n} attempt(s)");
        assert_eq!(
            roundtrip(&mut ws, Message::text(path)).unwrap(),
            Message::text(path)
        );
        close(&mut ws);
        drop(ws);
        let mut last = (0, 0, 0);
        assert!(
            wst_e2e::wait_for(WAIT, || {
                last = counts(&t);
                (last.0 == 0).then_some(())
            })
            .is_some(),
            "after {path}: open count {last:?}"
        );
    }
    // (Refusals may have happened: a client can read the end of a failed upgrade's answer
    // before httpd is done with that request and gives the slot back; the retries cover it.)
    let (open, total, _refused) = counts(&t);
    assert_eq!(open, 0);
    assert_eq!(
        total, opened,
        "WebSocketTunnelsTotal counts {total} tunnels opened, but {opened} were (the other \
         upgrades failed before any tunnel existed)"
    );
}

/// A child that dies with tunnels open (a crash, kill -9) must not hold their slots forever:
/// the count is of open tunnels, and a dead process has none.
fn count_recovers_when_a_child_dies(mpm: &str) {
    if !ours() || !need_module("status") {
        return;
    }
    if !Httpd::flavor().supports_mpm(mpm) {
        eprintln!("SKIP: this httpd cannot run the {mpm} MPM");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .mpm(mpm)
        .module("status")
        .var("BACKEND_PORT", b.port())
        .config(SEVERAL_CHILDREN)
        .config(STATUS)
        .start();
    let t = h.target();
    let mut a = open_tunnel(&t, "/ws/echo", 0);
    let mut victim = open_tunnel(&t, "/ws/echo", 1);
    assert_eq!(counts(&t).0, 2);
    let pid = serving_child(&h, local_port(victim.get_ref())).expect("serving child");
    let a_pid = serving_child(&h, local_port(a.get_ref())).expect("serving child");
    // Threaded MPMs: both tunnels may live in the killed process.
    let survivors = u64::from(a_pid != pid);
    // SAFETY: kill only sends SIGKILL to a child of the httpd this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert!(
        victim.read().is_err(),
        "the killed child's tunnel still answers"
    );
    drop(victim);
    let mut last = (0, 0, 0);
    let recovered = wst_e2e::wait_for(WAIT, || {
        last = counts(&t);
        (last.0 == survivors).then_some(())
    });
    let next = retry(WAIT, Duration::from_millis(200), || {
        let req = UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome);
        let (r, c) = try_upgrade(&t, &req).ok()?;
        (r.status == 101).then(|| c.into_websocket())
    })
    .0;
    assert!(
        recovered.is_some() && next.is_some(),
        "{mpm}: {WAIT:?} after child {pid} was killed with {} tunnel(s) open: (open, total, \
         refused) = {last:?} (want {survivors} open), new tunnel admitted: {}",
        2 - survivors,
        next.is_some()
    );
    let mut next = next.unwrap();
    assert_eq!(
        roundtrip(&mut next, Message::text("next")).unwrap(),
        Message::text("next")
    );
    close(&mut next);
    if survivors == 1 {
        close(&mut a);
    }
}

#[test]
fn max_tunnels_count_recovers_when_a_prefork_child_dies() {
    count_recovers_when_a_child_dies("prefork");
}

#[test]
fn max_tunnels_count_recovers_when_a_worker_child_dies() {
    count_recovers_when_a_child_dies("worker");
}

#[test]
fn max_tunnels_count_recovers_when_an_event_child_dies() {
    count_recovers_when_a_child_dies("event");
}

/// On a TLS front: `same` compares with the https default port, and the notes count the
/// plaintext frame bytes that went through mod_ssl.
#[test]
fn origin_same_and_notes_on_tls_front() {
    if !ours() || !need_ssl() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("ssl")
        .listen("TLS_PORT")
        .log_level("warn")
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
LogFormat "%{wstunnel-client-bytes}n|%{wstunnel-backend-bytes}n|%{wstunnel-duration-ms}n|%{wstunnel-closed-first}n|%{wstunnel-end}n|%>s|%r" wstnotes
CustomLog "{DIR}/logs/notes.log" wstnotes
<VirtualHost 127.0.0.1:{TLS_PORT}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile "{CERT}"
    SSLCertificateKeyFile "{KEY}"
    ProxyWebsocketAllowOrigin same
    ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
</VirtualHost>
"#,
        )
        .start();
    let tp = h.port_of("TLS_PORT");
    let t = h.tls_target(tp);
    let with_port = format!("localhost:{tp}");
    let cases = vec![
        (
            with_port.clone(),
            Some(format!("https://localhost:{tp}")),
            true,
        ),
        (s("localhost"), Some(s("https://localhost")), true),
        (s("localhost:443"), Some(s("https://localhost")), true),
        (s("localhost"), Some(s("http://localhost")), false),
        (with_port.clone(), Some(s("https://localhost")), false),
        (with_port.clone(), Some(s("https://evil.example")), false),
    ];
    origin_cases_on(&h, &t, &b, "/ws/", "/", &cases);

    let mut c = raw_tunnel(&t, "/ws/echo/tls-notes");
    let mut sent = 0;
    let mut back = 0;
    for (i, n) in [10usize, 40_000].into_iter().enumerate() {
        let p = binary_payload(n, i as u8);
        let f = client_frame(OP_BINARY, &p);
        sent += f.len();
        c.send(&f).unwrap();
        let want = server_frame(OP_BINARY, &p);
        back += want.len();
        assert_eq!(c.read_exact_bytes(want.len()).unwrap(), want);
    }
    c.shutdown_write().unwrap();
    let (rest, end) = c.read_until_close(WAIT);
    assert!(rest.is_empty() && end == End::Eof, "{rest:?} {end:?}");
    let n = notes_for(&h, "/ws/echo/tls-notes");
    assert_eq!(n.client_bytes, sent.to_string(), "{n:?}");
    assert_eq!(n.backend_bytes, back.to_string(), "{n:?}");
    assert_eq!(n.closed_first, "client", "{n:?}");
    assert_eq!(n.end, "closed", "{n:?}");
}

/// Without any cap (nothing refuses, so nothing else looks for dead children), the count that
/// mod_status shows must still drop when a child dies with a tunnel open. The MPMs are tuned
/// so that killing one child needs no replacement (enough idle capacity).
fn status_count_recovers_without_a_cap(mpm: &str) {
    if !ours() || !need_module("status") {
        return;
    }
    if !Httpd::flavor().supports_mpm(mpm) {
        eprintln!("SKIP: this httpd cannot run the {mpm} MPM");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .mpm(mpm)
        .module("status")
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
<IfModule prefork.c>
    StartServers 5
    MinSpareServers 1
    MaxSpareServers 10
</IfModule>
<IfModule worker.c>
    StartServers 3
    ThreadsPerChild 4
    MinSpareThreads 1
    MaxSpareThreads 16
</IfModule>
<IfModule event.c>
    StartServers 3
    ThreadsPerChild 4
    MinSpareThreads 1
    MaxSpareThreads 16
</IfModule>
<Location /server-status>
    SetHandler server-status
</Location>
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#,
        )
        .start();
    let t = h.target();
    if mpm == "prefork" {
        let _ = wst_e2e::wait_for(WAIT, || (h.child_pids().len() >= 5).then_some(()));
    }
    let mut victim = open_tunnel(&t, "/ws/echo", 0);
    assert_eq!(counts(&t).0, 1);
    let pid = serving_child(&h, local_port(victim.get_ref())).expect("serving child");
    // SAFETY: kill only sends SIGKILL to a child of the httpd this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert!(victim.read().is_err());
    drop(victim);
    let mut last = (0, 0, 0);
    let ok = wst_e2e::wait_for(WAIT, || {
        last = counts(&t);
        (last.0 == 0).then_some(())
    });
    assert!(
        ok.is_some(),
        "{mpm}: WebSocketTunnels still {} {WAIT:?} after child {pid} died with the only \
         tunnel (open, total, refused) = {last:?}; children now {:?}",
        last.0,
        h.child_pids()
    );
}

#[test]
fn status_count_recovers_without_a_cap_prefork() {
    status_count_recovers_without_a_cap("prefork");
}

#[test]
fn status_count_recovers_without_a_cap_worker() {
    status_count_recovers_without_a_cap("worker");
}

#[test]
fn status_count_recovers_without_a_cap_event() {
    status_count_recovers_without_a_cap("event");
}

/// The cap is about this module's tunnels: requests it never tunnels are not refused by it,
/// even with the cap reached. Upgrades through a balancer of http:// members without
/// ProxyWebsocketUpgrade (mod_proxy_http's), and an h2c upgrade on a ProxyWebsocketUpgrade
/// route (a plain request for mod_proxy_http).
#[test]
fn max_tunnels_refuses_only_what_this_module_tunnels() {
    if !ours() || !need_module("proxy_balancer") {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("proxy_balancer")
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
ProxyWebsocketMaxTunnels 1
<Proxy "balancer://httpgroup">
    BalancerMember "http://127.0.0.1:{BACKEND_PORT}"
</Proxy>
ProxyPass /httpbal/ balancer://httpgroup/httpbal/
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
<Location /up/>
    ProxyWebsocketUpgrade On
</Location>
ProxyPass /up/ http://127.0.0.1:{BACKEND_PORT}/up/
"#,
        )
        .start();
    let t = h.target();
    let mut full = open_tunnel(&t, "/ws/echo", 0);
    assert_refused_by_cap(&t, "/ws/over");

    let mut problems = Vec::new();
    for br in Browser::ALL {
        let req = UpgradeRequest::new("/httpbal/echo", &t.host, br);
        let (mut r, mut c) = try_upgrade(&t, &req).unwrap();
        let _ = c.read_body(&mut r, false);
        if r.status == 503 {
            problems.push(format!(
                "{br:?} upgrade through a balancer of http:// members (not this module's) \
                 refused by ProxyWebsocketMaxTunnels:\n{}",
                r.head
            ));
        }
    }
    let req = UpgradeRequest::plain_get("/up/h2c", &t.host)
        .header("Connection", "Upgrade, HTTP2-Settings, close")
        .header("Upgrade", "h2c")
        .header("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA");
    let r = wst_e2e::client::http_request(&t, &req).unwrap();
    if (r.status, r.body_str()) != (200, "plain GET /up/h2c\n".to_string()) {
        problems.push(format!(
            "h2c upgrade on a ProxyWebsocketUpgrade route (mod_proxy_http's plain request) \
             answered {} with the cap reached:\n{}",
            r.status, r.head
        ));
    }
    close(&mut full);
    assert!(
        problems.is_empty(),
        "{}\nerror log:\n{}",
        problems.join("\n"),
        h.error_log()
    );
}

/// A refused Origin is a 403 whatever the tunnel count: with the cap reached, a cross-site
/// upgrade is still refused for its Origin (403, WST042), not counted as a cap refusal.
#[test]
fn refused_origin_is_403_even_with_the_cap_reached() {
    if !ours() || !need_module("status") {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("status")
        .var("BACKEND_PORT", b.port())
        .config(STATUS)
        .config("ProxyWebsocketAllowOrigin same\n")
        .start();
    let t = h.target();
    let mut a = open_tunnel(&t, "/ws/echo", 0);
    let mut b2 = open_tunnel(&t, "/ws/echo", 1);
    let req = UpgradeRequest::new("/ws/cross-site", &t.host, Browser::Chrome)
        .set("Origin", "https://evil.example");
    let (mut r, mut c) = try_upgrade(&t, &req).unwrap();
    let _ = c.read_body(&mut r, false);
    let refused = counts(&t).2;
    close(&mut a);
    close(&mut b2);
    assert_eq!(
        r.status, 403,
        "cross-site upgrade with the cap reached:\n{}",
        r.head
    );
    assert_eq!(refused, 0, "a forbidden Origin counted as a cap refusal");
}
