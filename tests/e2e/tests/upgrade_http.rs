//! `ProxyWebsocketUpgrade On|Off`: WebSocket upgrades on `http://` and `https://` routes are
//! tunnelled by this module, plain requests (and upgrades to other protocols) stay with
//! mod_proxy_http; in the server config, `<VirtualHost>`, `<Location>` and `<Proxy>`, `Off`
//! overriding `On`; unset, nothing is tunnelled.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{check_101, close, http_get, next_data, roundtrip, End, Response};
use wst_e2e::observe::try_upgrade;
use wst_e2e::tunnels::{backend_got, h2c_upgrade};
use wst_e2e::ws::{client_frame, server_frame, OP_BINARY, OP_CLOSE, OP_TEXT};
use wst_e2e::{
    binary_payload, need, payload, Browser, Httpd, Pki, RawClient, Target, UpgradeRequest,
    WsClient, WstEcho,
};

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

const UPGRADE_ROOT: &str = r#"
ProxyWebsocketUpgrade On
ProxyPass / http://127.0.0.1:{BACKEND_PORT}/
"#;

#[test]
fn upgrade_on_root_http_route_tunnels_upgrades_and_leaves_plain_requests_to_proxy_http() {
    if !need::ours() {
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
    let req = h2c_upgrade("/h2c", &t.host);
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
    if !need::ours() {
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
    if !need::ours() {
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
    if !need::ours() || !need::ssl() {
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
