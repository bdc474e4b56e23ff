//! Behaviour the issue specifies beyond the happy path: non-101 answers relayed as HTTP, bad
//! 101s, missing/malformed upgrades, unreachable backends. None may hang or answer 500.

use std::time::{Duration, Instant};

use wst_e2e::client::{check_101, http_get, End, RawClient};
use wst_e2e::ws::{self, OP_TEXT};
use wst_e2e::{Browser, Httpd, Response, Target, UpgradeRequest, WstEcho};

fn start() -> (WstEcho, Httpd) {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    (b, h)
}

/// Send an upgrade request and read the whole (non-101) response, within bounded time.
fn upgrade_response(t: &Target, req: &UpgradeRequest) -> (RawClient, Response) {
    let started = Instant::now();
    let mut c = RawClient::connect(t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let r = c
        .read_response()
        .unwrap_or_else(|e| panic!("no complete response to {} {}: {e}", req.method, req.path));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answer took {:?}",
        started.elapsed()
    );
    (c, r)
}

/// A non-101 answer is relayed as ordinary HTTP with its body, and the connection is never
/// tunneled: bytes the client sends afterwards do not reach the backend (wst-echo would echo
/// them back raw).
fn non_101_relayed(path: &str, status: u16, body: &str) {
    let (b, h) = start();
    let t = h.target();
    for br in Browser::ALL {
        let req = UpgradeRequest::new(path, &t.host, br);
        let (mut c, r) = upgrade_response(&t, &req);
        assert_eq!(r.status, status, "{br:?}:\n{}", r.head);
        assert_eq!(r.body_str(), body, "{br:?}: body");
        assert!(
            !r.header_has_token("Upgrade", "websocket"),
            "{br:?}: Upgrade in a {status}:\n{}",
            r.head
        );
        // A WebSocket frame now must not be tunneled.
        let frame = ws::client_frame(OP_TEXT, b"this must not be tunneled");
        c.send(&frame).ok();
        let (after, end) = c.read_until_close(Duration::from_secs(3));
        assert!(
            !after.windows(frame.len()).any(|w| w == frame),
            "{br:?}: frame echoed: the connection was tunneled after a {status}"
        );
        if !after.is_empty() {
            assert!(
                after.starts_with(b"HTTP/1.1 400"),
                "{br:?}: unexpected bytes after the {status}: {:?}",
                String::from_utf8_lossy(&after)
            );
        }
        assert_ne!(
            end,
            End::Timeout,
            "{br:?}: garbage after a {status} left the connection open"
        );
    }
    assert!(
        !b.log().contains("RAW"),
        "backend got tunneled bytes:\n{}",
        b.log()
    );
}

#[test]
fn backend_404_is_relayed_with_body_not_tunneled() {
    non_101_relayed("/ws/status/404", 404, "status 404 from wst-echo\n");
}

/// A relayed answer loses its hop-by-hop fields: the fixed ones and every field any of its
/// Connection fields names; the end-to-end ones pass.
#[test]
fn backend_answer_relayed_without_its_hop_by_hop_fields() {
    let (_b, h) = start();
    let t = h.target();
    let req = UpgradeRequest::new("/ws/status-hop/403", &t.host, Browser::Chrome);
    let (_c, r) = upgrade_response(&t, &req);
    assert_eq!(r.status, 403, "{}", r.head);
    assert_eq!(r.header("X-Public"), Some("ok"), "{}", r.head);
    for gone in ["X-Private", "Keep-Alive", "Proxy-Connection"] {
        assert!(r.header(gone).is_none(), "hop-by-hop {gone} relayed:\n{}", r.head);
    }
    assert!(!r.header_has_token("Connection", "X-Private"), "{}", r.head);
}

/// An answer with more header fields than the module first makes room for (a 101 has a
/// handful) is relayed with every one of them.
#[test]
fn backend_answer_with_many_fields_relayed_whole() {
    let (_b, h) = start();
    let t = h.target();
    let req = UpgradeRequest::new("/ws/status-many/404", &t.host, Browser::Firefox);
    let (_c, r) = upgrade_response(&t, &req);
    assert_eq!(r.status, 404, "{}", r.head);
    assert_eq!(r.body_str(), "status 404 from wst-echo\n");
    for i in 0..40 {
        let v = format!("value {i}");
        assert_eq!(r.header(&format!("X-Field-{i}")), Some(v.as_str()), "{}", r.head);
    }
}

#[test]
fn backend_403_chunked_is_relayed_with_body_not_tunneled() {
    non_101_relayed(
        "/ws/status-chunked/403",
        403,
        "status 403 from wst-echo (chunked)\n",
    );
}

#[test]
fn backend_200_to_upgrade_is_relayed_not_tunneled() {
    non_101_relayed("/ws/status/200", 200, "status 200 from wst-echo\n");
}

fn expect_502_no_tunnel(path: &str) {
    let (_b, h) = start();
    let t = h.target();
    for br in Browser::ALL {
        let req = UpgradeRequest::new(path, &t.host, br);
        let (_c, r) = upgrade_response(&t, &req);
        assert_eq!(r.status, 502, "{br:?}:\n{}", r.head);
    }
}

#[test]
fn backend_101_with_bad_accept_is_502() {
    expect_502_no_tunnel("/ws/bad-accept");
}

#[test]
fn backend_101_without_upgrade_is_502() {
    expect_502_no_tunnel("/ws/no-upgrade-101");
}

/// A ws:// route without an upgrade, and no mod_proxy_http to serve it: 426 + Upgrade.
#[test]
fn plain_get_on_ws_route_without_proxy_http_is_426() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .without_module("proxy_http")
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let r = http_get(&h.target(), "/ws/echo").unwrap();
    assert_eq!(r.status, 426, "{}", r.head);
    assert!(r.header_has_token("Upgrade", "websocket"), "{}", r.head);
    assert!(
        b.requests().is_empty(),
        "backend contacted: {:?}",
        b.requests()
    );
}

/// A ws:// route without an upgrade, with mod_proxy_http loaded: plain HTTP to the backend.
#[test]
fn plain_get_on_ws_route_with_proxy_http_is_proxied() {
    let (_b, h) = start();
    let r = http_get(&h.target(), "/ws/some/page?x=1").unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "plain GET /some/page?x=1\n");
}

fn expect_400(req: UpgradeRequest, what: &str) {
    let (b, h) = start();
    let req = UpgradeRequest {
        headers: req.headers.clone(),
        ..req
    }
    .set("Host", &h.target().host);
    let (_c, r) = upgrade_response(&h.target(), &req);
    assert_eq!(r.status, 400, "{what}:\n{}", r.head);
    assert!(
        b.requests().is_empty(),
        "{what}: backend contacted: {:?}",
        b.requests()
    );
}

#[test]
fn upgrade_without_key_is_400() {
    expect_400(
        UpgradeRequest::new("/ws/echo", "x", Browser::Chrome).remove("Sec-WebSocket-Key"),
        "no Sec-WebSocket-Key",
    );
}

#[test]
fn upgrade_with_short_key_is_400() {
    // base64 of "short" (5 bytes, not 16).
    expect_400(
        UpgradeRequest::new("/ws/echo", "x", Browser::Firefox).set("Sec-WebSocket-Key", "c2hvcnQ="),
        "5-byte key",
    );
}

#[test]
fn upgrade_with_non_base64_key_is_400() {
    expect_400(
        UpgradeRequest::new("/ws/echo", "x", Browser::Chrome)
            .set("Sec-WebSocket-Key", "!!!!not~base64~at~all!!!"),
        "non-base64 key",
    );
}

/// Backend port closed: 503, fast.
#[test]
fn backend_unreachable_is_503() {
    let port = wst_e2e::net::closed_port();
    let h = Httpd::builder()
        .var("DEAD_PORT", port)
        .config("ProxyPass /ws/ ws://127.0.0.1:{DEAD_PORT}/\n")
        .start();
    for br in Browser::ALL {
        let t = h.target();
        let (_c, r) = upgrade_response(&t, &UpgradeRequest::new("/ws/echo", &t.host, br));
        assert_eq!(r.status, 503, "{br:?}:\n{}", r.head);
    }
}

/// Unresolvable backend host: 502. The name has a 64-character label, which the resolver
/// rejects locally (no DNS query leaves the machine), like any name that does not resolve.
#[test]
fn backend_unresolvable_is_502() {
    let host = format!("{}.invalid", "a".repeat(64));
    let h = Httpd::builder()
        .var("BAD_HOST", &host)
        .config("ProxyPass /ws/ ws://{BAD_HOST}/\n")
        .start();
    for br in Browser::ALL {
        let t = h.target();
        let (_c, r) = upgrade_response(&t, &UpgradeRequest::new("/ws/echo", &t.host, br));
        assert_eq!(r.status, 502, "{br:?}:\n{}", r.head);
    }
}

/// A backend that never answers the upgrade: the client gets an error status within
/// ProxyTimeout, not a hang.
#[test]
fn backend_silent_times_out_with_error_status() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyTimeout 2\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    let started = Instant::now();
    let (_c, r) = upgrade_response(
        &t,
        &UpgradeRequest::new("/ws/slow", &t.host, Browser::Chrome),
    );
    assert!(
        matches!(r.status, 502 | 504),
        "expected 502/504 after ProxyTimeout, got:\n{}",
        r.head
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

/// Never a 500 for odd but well-formed requests to a ws:// route.
#[test]
fn odd_requests_never_500() {
    let (_b, h) = start();
    let t = h.target();
    let cases: Vec<(&str, UpgradeRequest)> = vec![
        ("HEAD upgrade", {
            let mut r = UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome);
            r.method = "HEAD".into();
            r
        }),
        ("POST upgrade", {
            let mut r = UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome);
            r.method = "POST".into();
            r.header("Content-Length", "0")
        }),
        ("HTTP/1.0 upgrade", {
            let mut r = UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome);
            r.version = "HTTP/1.0".into();
            r
        }),
        (
            "Upgrade: h2c",
            UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome).set("Upgrade", "h2c"),
        ),
        (
            "Sec-WebSocket-Version: 8",
            UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome)
                .set("Sec-WebSocket-Version", "8"),
        ),
    ];
    for (name, req) in cases {
        let mut c = RawClient::connect(&t).unwrap();
        c.send(&req.to_bytes()).unwrap();
        let mut r = c.read_head().unwrap_or_else(|e| panic!("{name}: {e}"));
        if r.status != 101 {
            c.read_body(&mut r, req.method == "HEAD")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            check_101(&req, &r).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(r.status < 500, "{name}: {}", r.head);
    }
}
