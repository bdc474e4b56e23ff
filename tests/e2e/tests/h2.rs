//! WebSocket over HTTP/2 (RFC 8441) with mod_http2's `H2WebSockets on` (httpd 2.4.58+).
//!
//! mod_http2 turns an extended CONNECT stream into a GET with `Upgrade: websocket` on a
//! secondary connection. This module must not poll or write that connection's socket (it is
//! the whole h2 connection's): with mod_proxy_http loaded it hands the request over (and the
//! WebSocket works), without it it answers a clean error (501). Never a crashed child, never a
//! hang: the error log has no "exit signal" / "Segmentation fault", the children that existed
//! before are still there, and HTTP/1.1 tunnels still work afterwards.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{close, roundtrip};
use wst_e2e::h2ws::{websocket_over_h2, H2WsOutcome};
use wst_e2e::{binary_payload, Browser, Httpd, Pki, WsClient, WstEcho};

fn supported() -> bool {
    let f = Httpd::flavor();
    if f.version < (2, 4, 58) {
        eprintln!(
            "SKIP: H2WebSockets needs httpd 2.4.58+ ({})",
            f.version_string
        );
        return false;
    }
    for m in ["http2", "ssl"] {
        if !f.has_module(m) {
            eprintln!("SKIP: no mod_{m}");
            return false;
        }
    }
    true
}

const VHOST: &str = r#"
<VirtualHost 127.0.0.1:{TLS_PORT}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile "{CERT}"
    SSLCertificateKeyFile "{KEY}"
    Protocols h2 http/1.1
    H2WebSockets on
    ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
</VirtualHost>
"#;

fn start(with_proxy_http: bool, pki: &Pki) -> (WstEcho, Httpd) {
    let b = WstEcho::start();
    let mut builder = Httpd::builder()
        .no_fallback_directive()
        .modules(&["ssl", "http2"])
        .pki(pki)
        .listen("TLS_PORT")
        .log_level(if with_proxy_http {
            "warn proxy_wstunnel:debug proxy_http:debug http2:info"
        } else {
            "warn proxy_wstunnel:debug http2:info"
        })
        .var("BACKEND_PORT", b.port())
        .config(VHOST);
    if !with_proxy_http {
        builder = builder.without_module("proxy_http");
    }
    (b, builder.start())
}

fn messages() -> Vec<Vec<u8>> {
    vec![
        b"hello over h2".to_vec(),
        binary_payload(70_000, 3),
        b"".to_vec(),
        binary_payload(300, 4),
    ]
}

/// No crash, no new children, and an HTTP/1.1 tunnel still works.
fn assert_healthy(h: &Httpd, children_before: &[u32], what: &str) {
    std::thread::sleep(Duration::from_millis(300));
    let log = h.error_log();
    for bad in ["exit signal", "Segmentation fault", "AH00052", "AH00060"] {
        assert!(
            !log.contains(bad),
            "{what}: error log mentions {bad:?}:\n{log}"
        );
    }
    let now = h.child_pids();
    for pid in children_before {
        assert!(
            now.contains(pid),
            "{what}: child {pid} is gone (children before {children_before:?}, now {now:?})"
        );
    }
    let t = h.tls_target(h.port_of("TLS_PORT"));
    let (_r, mut ws) = WsClient::connect(&t, "/ws/echo", Browser::Chrome)
        .unwrap_or_else(|e| panic!("{what}: HTTP/1.1 tunnel afterwards: {e}"));
    assert_eq!(
        roundtrip(&mut ws, Message::text("h1 still fine")).unwrap(),
        Message::text("h1 still fine")
    );
    close(&mut ws);
}

fn run(h: &Httpd, pki: &Pki) -> H2WsOutcome {
    websocket_over_h2(
        h.port_of("TLS_PORT"),
        pki,
        "/ws/echo",
        &messages(),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("h2 WebSocket: {e}"))
}

/// With mod_proxy_http loaded: handed over, the WebSocket works over the h2 stream.
#[test]
fn h2_websocket_with_proxy_http_works() {
    if !supported() {
        return;
    }
    let pki = Pki::generate();
    let (b, h) = start(true, &pki);
    let before = h.child_pids();
    let o = run(&h, &pki);
    assert!(
        o.connect_protocol_enabled,
        "mod_http2 did not enable extended CONNECT"
    );
    eprintln!(
        "h2 with proxy_http: status {} headers {:?}",
        o.status, o.headers
    );
    // mod_proxy_http can tunnel an h2 WebSocket stream (2.4.58+) and this module hands such
    // streams to it, so the request must work: a 4xx here means the request never got to
    // mod_proxy_http.
    assert_eq!(
        o.status,
        200,
        "extended CONNECT not served: {}\n{}",
        String::from_utf8_lossy(&o.body),
        h.error_log()
    );
    {
        let want = messages();
        assert_eq!(o.messages.len(), want.len(), "echoes over h2");
        for (i, (got, exp)) in o.messages.iter().zip(want.iter()).enumerate() {
            assert!(got == exp, "message {i} differs over h2");
        }
        assert!(o.got_close, "no close frame back over h2");
        assert!(o.stream_ended, "h2 stream did not end after the close");
        assert!(
            b.requests().iter().any(|r| r.starts_with("GET /echo ")),
            "backend requests: {:?}",
            b.requests()
        );
    }
    // Who served it: never this module's own tunnel on an h2 stream.
    let log = h.error_log();
    assert!(
        !log.lines()
            .any(|l| l.contains("[proxy_wstunnel:") && l.contains("serving URL")),
        "proxy_wstunnel tunnelled an h2 stream itself:\n{log}"
    );
    assert_healthy(&h, &before, "h2 with proxy_http");
}

/// Without mod_proxy_http: a clean error (501 Not Implemented), logged, and no hang.
#[test]
fn h2_websocket_without_proxy_http_is_clean_error() {
    if !supported() {
        return;
    }
    let pki = Pki::generate();
    let (b, h) = start(false, &pki);
    let before = h.child_pids();
    let o = run(&h, &pki);
    assert!(
        o.connect_protocol_enabled,
        "mod_http2 did not enable extended CONNECT"
    );
    eprintln!(
        "h2 without proxy_http: status {} headers {:?}",
        o.status, o.headers
    );
    if !Httpd::flavor().wst_is_stock {
        assert_eq!(
            o.status,
            501,
            "expected 501 for WebSocket over HTTP/2 without mod_proxy_http: {:?}",
            String::from_utf8_lossy(&o.body)
        );
        assert!(
            h.wait_error_line(
                Duration::from_secs(3),
                &["proxy_wstunnel", "WebSocket over HTTP/2"]
            )
            .is_some(),
            "no error line about WebSocket over HTTP/2"
        );
    }
    if !Httpd::flavor().wst_is_stock {
        assert!(
            b.requests().is_empty(),
            "backend contacted: {:?}",
            b.requests()
        );
    }
    assert_healthy(&h, &before, "h2 without proxy_http");
}

/// Several h2 WebSocket streams one after the other and a plain h2 GET in between: still no
/// crash, no stuck worker.
#[test]
fn h2_websocket_repeated_streams_keep_httpd_healthy() {
    if !supported() {
        return;
    }
    let pki = Pki::generate();
    for with_proxy_http in [true, false] {
        let (_b, h) = start(with_proxy_http, &pki);
        let before = h.child_pids();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(run(&h, &pki).status);
        }
        assert!(
            statuses.windows(2).all(|w| w[0] == w[1]),
            "statuses vary: {statuses:?}"
        );
        assert_healthy(
            &h,
            &before,
            &format!("5 h2 streams (proxy_http {with_proxy_http})"),
        );
    }
}
