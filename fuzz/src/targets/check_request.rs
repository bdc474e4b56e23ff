//! The client request check (`check_request`), then, for every accepted
//! request, the backend request built from it (`build_request`), parsed
//! back with httparse: the path from a client's upgrade request to the bytes
//! the backend reads.
//!
//! Input: a mode byte; mode even = structured (method, HTTP version, header
//! list from dictionaries or raw bytes, the route's `upgrade=`), mode odd =
//! a raw request head parsed by httparse first, as httpd would.

use base64::Engine as _;
use wstunnel_core::handshake::{
    build_request, check_request, request_size, BackendRequest, Header, RequestCheck, Verdict,
};

use crate::{named, points_into, trim, Headers, Input, METHODS, WORKER_UPGRADES};

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let worker = inp.pick_or_raw(WORKER_UPGRADES, 16);
    if mode & 1 == 0 {
        let method = inp.pick_or_raw(METHODS, 8);
        let proto = match inp.u8() % 6 {
            0 => 1000,
            1 | 2 | 3 => 1001,
            4 => 2000,
            _ => inp.u32() as i32,
        };
        let headers = Headers::generate(&mut inp, 24);
        let views = headers.views();
        check_one(&method, proto, &views, &worker);
    } else {
        let raw = inp.rest();
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut storage);
        if let Ok(httparse::Status::Complete(_)) = req.parse(raw) {
            let method = req.method.unwrap_or("GET").as_bytes().to_vec();
            let proto = 1000 + i32::from(req.version.unwrap_or(1));
            let views: Vec<Header<'_>> = req
                .headers
                .iter()
                .map(|h| Header::new(h.name.as_bytes(), h.value))
                .collect();
            check_one(&method, proto, &views, &worker);
        }
    }
}

fn count(hs: &[Header<'_>], name: &str) -> usize {
    hs.iter().filter(|h| named(h.name, name)).count()
}

fn list_has(hs: &[Header<'_>], name: &str, token: &str) -> bool {
    hs.iter()
        .filter(|h| named(h.name, name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| named(trim(t), token))
}

fn check_one(method: &[u8], proto: i32, hs: &[Header<'_>], worker: &[u8]) {
    let c: RequestCheck<'_> = check_request(method, proto, hs.iter().copied(), worker);
    // Deterministic.
    let again = check_request(method, proto, hs.iter().copied(), worker);
    assert_eq!(c, again);
    assert!(!c.reason.to_bytes().is_empty());

    let w = trim(worker);
    let no_check = w.eq_ignore_ascii_case(b"NONE");
    let default_route = w.split(|&b| b == b',').all(|t| trim(t).is_empty());

    // A WebSocket upgrade whose Connection lacks the upgrade token: None, but
    // reported with its protocol and key (a ws:// route tunnels it), so it
    // must pass every check an accepted one does, but the Connection token.
    let no_token_websocket = c.verdict == Verdict::None && c.is_websocket;
    if no_token_websocket {
        assert!(!no_check && !list_has(hs, "connection", "upgrade"));
    }
    if c.verdict != Verdict::Ok && !no_token_websocket {
        assert!(c.protocol.is_empty() && c.key.is_empty() && !c.is_websocket);
        if c.verdict == Verdict::None {
            assert!(!no_check);
            let has_upgrade = hs
                .iter()
                .filter(|h| named(h.name, "upgrade"))
                .flat_map(|h| h.value.split(|&b| b == b','))
                .any(|t| !trim(t).is_empty());
            assert!(!has_upgrade || !list_has(hs, "connection", "upgrade"));
        }
        return;
    }

    // Accepted (or a WebSocket upgrade without the Connection token): never
    // with a body.
    assert_eq!(
        count(hs, "transfer-encoding"),
        0,
        "accepted with Transfer-Encoding"
    );
    for h in hs.iter().filter(|h| named(h.name, "content-length")) {
        let v = trim(h.value);
        assert!(
            !v.is_empty() && v.iter().all(|&b| b == b'0'),
            "accepted with a body"
        );
    }
    assert!(!c.protocol.is_empty());
    if default_route {
        assert!(c.is_websocket);
        assert_eq!(c.protocol, b"websocket");
    }
    if no_check {
        assert_eq!(c.protocol, b"websocket");
    } else {
        assert_eq!(list_has(hs, "connection", "upgrade"), !no_token_websocket);
        // The protocol is static or a slice of one of the client's Upgrade values.
        assert!(
            c.protocol == b"websocket"
                || hs
                    .iter()
                    .any(|h| named(h.name, "upgrade") && points_into(c.protocol, h.value)),
            "protocol {:?} not from the request",
            c.protocol
        );
    }
    if c.is_websocket {
        // RFC 6455 4.2.1, all of it.
        assert_eq!(method, b"GET");
        assert!(proto >= 1001);
        assert_eq!(count(hs, "sec-websocket-key"), 1);
        assert_eq!(count(hs, "sec-websocket-version"), 1);
        assert_eq!(c.key.len(), 24);
        let mut out = [0u8; 18];
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode_slice(c.key, &mut out),
            Ok(16)
        );
        assert!(hs.iter().any(|h| points_into(c.key, h.value)));
    }

    // What the backend would get.
    let path = b"/ws/echo?x=1";
    let req = BackendRequest {
        method,
        path,
        host: b"127.0.0.1:8080",
        headers: hs.iter().copied(),
        protocol: c.protocol,
        add_forwarded: true,
        forwarded_for: b"127.0.0.1",
        forwarded_host: b"front.example",
        forwarded_server: b"127.0.0.1",
    };
    let size = request_size(&req);
    let mut buf = vec![0u8; size];
    let Ok(n) = build_request(&req, &mut buf[..]) else {
        // Refused (a client field that could inject a line): fine.
        return;
    };
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut storage);
    assert_eq!(parsed.parse(&buf[..n]), Ok(httparse::Status::Complete(n)));
    let ups: Vec<&[u8]> = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value)
        .collect();
    assert_eq!(ups, vec![c.protocol]);
    let te = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .count();
    assert_eq!(te, 0);
}
