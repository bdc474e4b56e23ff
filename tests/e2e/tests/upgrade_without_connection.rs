//! `Upgrade: websocket` without the `upgrade` token in `Connection` (some clients and
//! middleboxes drop or rewrite `Connection`): on a ws:// route stock httpd tunnels it in both
//! its modes, so this module does too, with or without mod_proxy_http loaded, and never
//! answers 502 for a request the backend was willing to upgrade. Every other WebSocket check
//! still applies (anything less stays a plain request). On an http:// route with
//! `ProxyWebsocketUpgrade On` such a request is left to mod_proxy_http, as without the module.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{check_101, close, next_data, roundtrip};
use wst_e2e::{need, Browser, Httpd, RawClient, Response, Target, UpgradeRequest, WstEcho};

fn start(with_proxy_http: bool) -> (WstEcho, Httpd) {
    let b = WstEcho::start();
    let mut builder = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n");
    if !with_proxy_http {
        builder = builder.without_module("proxy_http");
    }
    (b, builder.start())
}

/// The ways a client can send a WebSocket upgrade whose Connection lacks `upgrade`.
fn variants(path: &str, host: &str) -> Vec<(&'static str, UpgradeRequest)> {
    vec![
        (
            "no Connection (Chrome)",
            UpgradeRequest::new(path, host, Browser::Chrome).remove("Connection"),
        ),
        (
            "no Connection (Firefox)",
            UpgradeRequest::new(path, host, Browser::Firefox).remove("Connection"),
        ),
        (
            "Connection: keep-alive",
            UpgradeRequest::new(path, host, Browser::Firefox).set("Connection", "keep-alive"),
        ),
        (
            "Connection: close",
            UpgradeRequest::new(path, host, Browser::Chrome).set("Connection", "close"),
        ),
    ]
}

/// Send `req`; expect a good 101 and a working tunnel (the backend's `/headers` route first
/// sends the request head it got, then echoes).
fn tunnels(t: &Target, what: &str, req: &UpgradeRequest) {
    let mut c = RawClient::connect(t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let r = c
        .read_head()
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    check_101(req, &r).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut ws = c.into_websocket();
    let head = match next_data(&mut ws).unwrap() {
        Message::Text(t) => t.to_string(),
        m => panic!("{what}: expected the backend's request head, got {m:?}"),
    };
    // The backend got a proper upgrade request from us.
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nupgrade: websocket\r\n"),
        "{what}: {head}"
    );
    assert!(
        lower.contains("\r\nconnection: upgrade\r\n"),
        "{what}: {head}"
    );
    for i in 0..3 {
        let m = format!("{what}: message {i}");
        assert_eq!(
            roundtrip(&mut ws, Message::text(m.clone())).unwrap(),
            Message::text(m),
            "{what}"
        );
    }
    let big = wst_e2e::binary_payload(100_000, 3);
    assert_eq!(
        roundtrip(&mut ws, Message::binary(big.clone()))
            .unwrap()
            .into_data()[..],
        big[..],
        "{what}"
    );
    close(&mut ws);
}

fn tunnelled_without_connection_token(with_proxy_http: bool) {
    let (b, h) = start(with_proxy_http);
    let t = h.target();
    let all = variants("/ws/headers", &t.host);
    for (what, req) in &all {
        tunnels(&t, what, req);
    }
    let log = h.error_log();
    assert!(!log.contains("AH00898"), "Unexpected Upgrade:\n{log}");
    assert!(!b.log().contains("RAW"), "{}", b.log());
    // (The stock module logs its tunnels as 200.)
    if !Httpd::flavor().wst_is_stock {
        let n = all.len();
        let done = wst_e2e::wait_for(Duration::from_secs(5), || {
            let lines = h.access_lines();
            let ok = lines
                .iter()
                .filter(|l| l.status == 101 && l.request.contains("/ws/headers"))
                .count();
            (ok == n).then_some(())
        });
        assert!(
            done.is_some(),
            "expected {n} 101 lines:\n{}",
            h.access_log()
        );
        // The module says at debug level why it tunnelled a request HTTP calls plain.
        assert!(
            h.wait_error_line(
                Duration::from_secs(5),
                &[
                    "WST029",
                    "Connection header lacks the upgrade token",
                    "tunnelled"
                ],
            )
            .is_some(),
            "no debug line for the missing Connection token:\n{log}"
        );
    }
}

#[test]
fn without_connection_token_tunnelled_with_proxy_http() {
    tunnelled_without_connection_token(true);
}

#[test]
fn without_connection_token_tunnelled_without_proxy_http() {
    tunnelled_without_connection_token(false);
}

/// The Connection token missing is the only thing forgiven: an upgrade that fails another
/// WebSocket check stays a plain request (plain HTTP through mod_proxy_http when it is loaded,
/// 426 without it), as before. Never 101, never 502.
#[test]
fn other_websocket_checks_still_apply() {
    if !need::ours() {
        return;
    }
    for with_proxy_http in [true, false] {
        let (_b, h) = start(with_proxy_http);
        let t = h.target();
        let base =
            || UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome).remove("Connection");
        let mut bad_version = base();
        bad_version.version = "HTTP/1.0".into();
        let mut post = base().header("Content-Length", "0");
        post.method = "POST".into();
        let cases = [
            ("no key", base().remove("Sec-WebSocket-Key")),
            ("short key", base().set("Sec-WebSocket-Key", "c2hvcnQ=")),
            ("no version", base().remove("Sec-WebSocket-Version")),
            ("HTTP/1.0", bad_version),
            ("POST", post),
        ];
        for (what, req) in cases {
            let what = format!("{what} (mod_proxy_http loaded: {with_proxy_http})");
            let mut c = RawClient::connect(&t).unwrap();
            c.send(&req.to_bytes()).unwrap();
            let r: Response = c
                .read_response()
                .unwrap_or_else(|e| panic!("{what}: no complete answer: {e}"));
            assert_ne!(r.status, 101, "{what}: tunnelled:\n{}", r.head);
            assert_ne!(r.status, 502, "{what}:\n{}", r.head);
            if with_proxy_http {
                // wst-echo's plain answer (mod_proxy_http does not forward Upgrade).
                assert_eq!(r.status, 200, "{what}:\n{}", r.head);
                assert!(
                    r.body_str().starts_with("plain "),
                    "{what}: {}",
                    r.body_str()
                );
            } else {
                assert_eq!(r.status, 426, "{what}:\n{}", r.head);
                assert!(
                    r.header_has_token("Upgrade", "websocket"),
                    "{what}:\n{}",
                    r.head
                );
            }
        }
        assert!(!h.error_log().contains("WST029"), "{}", h.error_log());
    }
}

/// `ProxyWebsocketUpgrade On` on an http:// route: an upgrade without the Connection token is
/// mod_proxy_http's, whose rules apply as without this module (it does not upgrade it: the
/// backend answers the plain request); with the token, this module tunnels it.
#[test]
fn http_route_leaves_it_to_mod_proxy_http() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(
            "ProxyWebsocketUpgrade On\n\
             ProxyPass /h/ http://127.0.0.1:{BACKEND_PORT}/\n",
        )
        .start();
    let t = h.target();
    for (what, req) in variants("/h/echo", &t.host) {
        let mut c = RawClient::connect(&t).unwrap();
        c.send(&req.to_bytes()).unwrap();
        let r = c
            .read_response()
            .unwrap_or_else(|e| panic!("{what}: no complete answer: {e}"));
        assert_eq!(r.status, 200, "{what}:\n{}", r.head);
        assert_eq!(r.body_str(), "plain GET /echo\n", "{what}");
    }
    // (This module's scheme handler says AH02451 "serving URL"; 2.2's mod_proxy_http says
    // "serving URL" too, untagged.)
    let log = h.error_log();
    assert!(
        !log.lines()
            .any(|l| l.contains("AH02451") && l.contains("serving URL")),
        "this module served it:\n{log}"
    );
    assert!(!log.contains("WST029"), "{log}");
    // With the token: ours.
    let req = UpgradeRequest::new("/h/echo", &t.host, Browser::Chrome);
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let r = c.read_head().unwrap();
    check_101(&req, &r).unwrap();
    let mut ws = c.into_websocket();
    assert_eq!(
        roundtrip(&mut ws, Message::text("via http")).unwrap(),
        Message::text("via http")
    );
    close(&mut ws);
}

/// A backend that upgrades whatever carries a Sec-WebSocket-Key (with or without Upgrade or
/// Connection, as some do), then echoes text frames; records every request head.
struct EagerBackend {
    port: u16,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl EagerBackend {
    fn start() -> EagerBackend {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let heads2 = heads.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                let heads = heads2.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 16384];
                    let end = loop {
                        if let Some(e) = wst_e2e::ws::head_end(&buf) {
                            break e;
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    heads.lock().unwrap().push(head.clone());
                    let key = head.lines().find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.trim()
                            .eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    });
                    let Some(key) = key else {
                        let _ = s.write_all(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    };
                    let resp = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                        wst_e2e::ws::accept_key(&key)
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                    loop {
                        while let Some((f, used)) = wst_e2e::ws::decode_frame(&buf) {
                            buf.drain(..used);
                            let reply = wst_e2e::ws::server_frame(f.opcode, &f.payload);
                            if s.write_all(&reply).is_err() || f.opcode == wst_e2e::ws::OP_CLOSE {
                                return;
                            }
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        EagerBackend { port, heads }
    }
}

/// The case: a backend that upgrades the request anyway. Handed to mod_proxy_http as
/// plain HTTP it was a 502 (AH00898 "Unexpected Upgrade"); tunnelled, it works, with or
/// without mod_proxy_http.
#[test]
fn eager_backend_upgrade_is_never_502() {
    for with_proxy_http in [true, false] {
        let b = EagerBackend::start();
        let mut builder = Httpd::builder()
            .var("BACKEND_PORT", b.port)
            .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n");
        if !with_proxy_http {
            builder = builder.without_module("proxy_http");
        }
        let h = builder.start();
        let t = h.target();
        for (what, req) in variants("/ws/chat", &t.host) {
            let what = format!("{what} (mod_proxy_http loaded: {with_proxy_http})");
            let mut c = RawClient::connect(&t).unwrap();
            c.send(&req.to_bytes()).unwrap();
            let r = c
                .read_head()
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
            check_101(&req, &r).unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut ws = c.into_websocket();
            assert_eq!(
                roundtrip(&mut ws, Message::text("hello")).unwrap(),
                Message::text("hello"),
                "{what}"
            );
            close(&mut ws);
        }
        let log = h.error_log();
        assert!(!log.contains("AH00898"), "Unexpected Upgrade:\n{log}");
        // Every request reached the backend as a proper upgrade.
        let heads = b.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 4, "{heads:?}");
        for head in heads {
            assert!(
                ws_token(&head, "Upgrade", "websocket") && ws_token(&head, "Connection", "upgrade"),
                "{head}"
            );
        }
    }
}

/// Some `name` field of the request head `head` has `token` in its list.
fn ws_token(head: &str, name: &str, token: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case(name) && wst_e2e::ws::has_token(v, token)
        })
    })
}
