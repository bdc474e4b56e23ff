//! Handshake relaying: bytes after the 101, pipelined client bytes, the request the backend
//! sees, upgrade-header variants, half-close.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{check_101, close, next_data, roundtrip, End, RawClient};
use wst_e2e::ws::{self, OP_BINARY, OP_TEXT};
use wst_e2e::{Browser, Httpd, UpgradeRequest, WsClient, WstEcho};

fn start_with(extra: &str) -> (WstEcho, Httpd) {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(&format!(
            "ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/\n{extra}"
        ))
        .start();
    (b, h)
}

/// `/push` writes a text frame in the same TCP write as its 101: it must reach the client,
/// before anything else.
#[test]
fn bytes_after_101_reach_client_first() {
    let (_b, h) = start_with("");
    for br in Browser::ALL {
        let (_r, mut ws) = WsClient::connect(&h.target(), "/ws/push", br).unwrap();
        assert_eq!(
            next_data(&mut ws).unwrap(),
            Message::text("pushed"),
            "{br:?}"
        );
        assert_eq!(
            roundtrip(&mut ws, Message::text("after push")).unwrap(),
            Message::text("after push")
        );
        close(&mut ws);
    }
}

/// The upgrade request and a masked frame in ONE write, before the 101 is read: the frame must
/// reach the backend (its echo comes back).
#[test]
fn pipelined_client_frame_is_delivered() {
    let (_b, h) = start_with("");
    let t = h.target();
    for br in Browser::ALL {
        let req = UpgradeRequest::new("/ws/echo", &t.host, br);
        let mut bytes = req.to_bytes();
        bytes.extend_from_slice(&ws::client_frame(OP_TEXT, b"pipelined hello"));
        bytes.extend_from_slice(&ws::client_frame(OP_BINARY, &[1, 2, 3, 0, 255]));
        let mut c = RawClient::connect(&t).unwrap();
        c.send(&bytes).unwrap();
        let resp = c.read_head().unwrap();
        check_101(&req, &resp).unwrap();
        let f = c.read_frame().unwrap();
        assert_eq!(
            (f.opcode, &f.payload[..]),
            (OP_TEXT, &b"pipelined hello"[..]),
            "{br:?}"
        );
        assert!(!f.masked, "server frames are unmasked");
        let f = c.read_frame().unwrap();
        assert_eq!(
            (f.opcode, &f.payload[..]),
            (OP_BINARY, &[1u8, 2, 3, 0, 255][..])
        );
    }
}

fn backend_head(h: &Httpd, req: &UpgradeRequest) -> (wst_e2e::Response, String) {
    let (resp, mut ws) = WsClient::connect_with(&h.target(), req).unwrap();
    let head = next_data(&mut ws).unwrap().into_text().unwrap().to_string();
    close(&mut ws);
    (resp, head)
}

fn header_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// What the backend receives: HTTP/1.1, canonical path and query, Host (ProxyPreserveHost Off),
/// X-Forwarded-*, end-to-end headers verbatim, hop-by-hop headers removed, then exactly
/// `Upgrade: websocket` and `Connection: Upgrade`.
#[test]
fn request_to_backend_headers() {
    let (b, h) = start_with("");
    let t = h.target();
    let req = UpgradeRequest::new("/ws/headers?a=1&b=%20x", &t.host, Browser::Firefox)
        .set("Connection", "keep-alive, Upgrade, X-Hop-Test")
        .header("X-Hop-Test", "must not be forwarded")
        .header("Keep-Alive", "timeout=5")
        .header("TE", "trailers")
        .header("Cookie", "a=b; c=d")
        .header("Sec-WebSocket-Protocol", "chat, superchat")
        .header(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )
        .header("X-Custom", "  spaced   value ")
        .header("Accept-Language", "de-CH,de;q=0.9");
    let (resp, head) = backend_head(&h, &req);

    let first = head.lines().next().unwrap_or("");
    assert_eq!(
        first, "GET /headers?a=1&b=%20x HTTP/1.1",
        "request line; head:\n{head}"
    );
    let hv = |n: &str| header_values(&head, n);
    assert_eq!(
        hv("Host"),
        vec![format!("127.0.0.1:{}", b.port()).as_str()],
        "{head}"
    );
    assert_eq!(hv("X-Forwarded-For"), vec!["127.0.0.1"], "{head}");
    assert_eq!(hv("X-Forwarded-Host"), vec![t.host.as_str()], "{head}");
    assert_eq!(hv("X-Forwarded-Server"), vec!["127.0.0.1"], "{head}");
    assert_eq!(hv("Upgrade"), vec!["websocket"], "{head}");
    assert_eq!(hv("Connection"), vec!["Upgrade"], "{head}");
    for gone in ["X-Hop-Test", "Keep-Alive", "TE"] {
        assert!(hv(gone).is_empty(), "hop-by-hop {gone} forwarded:\n{head}");
    }
    for (n, v) in [
        ("Origin", req.get("Origin").unwrap()),
        ("User-Agent", Browser::Firefox.user_agent()),
        ("Cookie", "a=b; c=d"),
        ("Sec-WebSocket-Key", req.key().unwrap()),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        (
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        ),
        ("X-Custom", "spaced   value"),
        ("Accept-Language", "de-CH,de;q=0.9"),
    ] {
        assert_eq!(hv(n), vec![v], "{n} not verbatim:\n{head}");
    }
    // The backend's choice of subprotocol is relayed in the 101.
    assert_eq!(
        resp.header("Sec-WebSocket-Protocol"),
        Some("chat"),
        "{}",
        resp.head
    );
}

#[test]
fn request_to_backend_preserve_host() {
    let (_b, h) = start_with("ProxyPreserveHost On\n");
    let req = UpgradeRequest::new("/ws/headers", "ws.example.org:8443", Browser::Chrome);
    let (_resp, head) = backend_head(&h, &req);
    assert_eq!(
        header_values(&head, "Host"),
        vec!["ws.example.org:8443"],
        "{head}"
    );
}

#[test]
fn request_to_backend_without_add_headers() {
    if Httpd::flavor().version < (2, 3, 10) {
        eprintln!("SKIP: ProxyAddHeaders needs httpd 2.3.10+");
        return;
    }
    let (_b, h) = start_with("ProxyAddHeaders Off\n");
    let req = UpgradeRequest::new("/ws/headers", &h.target().host, Browser::Chrome);
    let (_resp, head) = backend_head(&h, &req);
    for n in ["X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Server"] {
        assert!(
            header_values(&head, n).is_empty(),
            "{n} sent with ProxyAddHeaders Off:\n{head}"
        );
    }
}

/// Upgrade and Connection are token lists, maybe repeated, matched case-insensitively.
#[test]
fn upgrade_header_variants_are_tunneled() {
    let (_b, h) = start_with("");
    let t = h.target();
    let base = || UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome);
    let variants: Vec<(&str, UpgradeRequest)> = vec![
        ("Upgrade: WebSocket", base().set("Upgrade", "WebSocket")),
        ("Connection: UPGRADE", base().set("Connection", "UPGRADE")),
        (
            "Firefox keep-alive, Upgrade",
            base().set("Connection", "keep-alive, Upgrade"),
        ),
        (
            "Connection: Upgrade, keep-alive",
            base().set("Connection", "Upgrade, keep-alive"),
        ),
        (
            "repeated Connection",
            base()
                .set("Connection", "keep-alive")
                .header("Connection", "Upgrade"),
        ),
        ("Upgrade list", base().set("Upgrade", "foo/1, websocket")),
        (
            "lowercase names",
            base()
                .remove("Upgrade")
                .remove("Connection")
                .header("upgrade", "websocket")
                .header("connection", "upgrade"),
        ),
        ("no spaces", base().set("Connection", "keep-alive,Upgrade")),
    ];
    for (name, req) in variants {
        let (_r, mut ws) =
            WsClient::connect_with(&t, &req).unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = roundtrip(&mut ws, Message::text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m, Message::text(name));
        close(&mut ws);
    }
}

/// The client half-closes after sending: the backend sees EOF, answers with the byte count,
/// and closes; the client gets the answer and then EOF.
#[test]
fn half_close_is_forwarded() {
    let (_b, h) = start_with("");
    let t = h.target();
    let req = UpgradeRequest::new("/ws/halfclose", &t.host, Browser::Chrome);
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let resp = c.read_head().unwrap();
    check_101(&req, &resp).unwrap();
    let mut sent = 0;
    for i in 0..5 {
        let f = ws::client_frame(OP_BINARY, &wst_e2e::binary_payload(1000 * i, i as u8));
        sent += f.len();
        c.send(&f).unwrap();
    }
    c.shutdown_write().unwrap();
    let f = c
        .read_frame()
        .unwrap_or_else(|e| panic!("no byte count after half-close: {e}"));
    assert_eq!(String::from_utf8_lossy(&f.payload), sent.to_string());
    let (rest, end) = c.read_until_close(Duration::from_secs(5));
    assert_eq!(
        end,
        End::Eof,
        "connection not closed after the backend closed"
    );
    assert!(rest.is_empty(), "unexpected bytes {rest:?}");
}
