//! Request notes for LogFormat `%{...}n` (logged with wst_e2e::notes::NOTES_LOG):
//! `wstunnel-client-bytes`, `wstunnel-backend-bytes` (frame bytes each way, a first frame
//! pipelined with the upgrade included), `wstunnel-duration-ms`, `wstunnel-closed-first`
//! (client, backend, none) and `wstunnel-end` (closed, idle); no notes for a request that is no
//! tunnel. On a TLS front: tests/allow_origin.rs (`origin_same_and_notes_on_tls_front`).
//!
//! These are the notes of tunnels that keep their worker (`ProxyWebsocketAsync Off` here,
//! whatever `WST_ASYNC` says): a tunnel handed to the child's reactor is logged at the
//! hand-over, before it has figures, with `wstunnel-end=handed-over` only (the last test); its
//! figures go to `ProxyWebsocketTunnelLog` (tests/async_relay.rs).
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::time::{Duration, Instant};

use wst_e2e::client::{check_101, http_get, End};
use wst_e2e::notes::{notes_for, notes_line, NOTES_LOG};
use wst_e2e::tunnels::{raw_tunnel, WAIT};
use wst_e2e::ws::{client_frame, server_frame, OP_BINARY, OP_CLOSE, OP_TEXT};
use wst_e2e::{binary_payload, need, Browser, Httpd, RawClient, UpgradeRequest, WstEcho};

/// `/ws/` to the backend on `{BACKEND_PORT}`, with an idle timeout of 1 s under `/ws/idle/`.
const ROUTES: &str = r#"
<Location /ws/idle/>
    ProxyWebsocketIdleTimeout 1
</Location>
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#;

fn notes_httpd(b: &WstEcho) -> Httpd {
    Httpd::builder()
        .async_tunnels(false)
        .var("BACKEND_PORT", b.port())
        .config(NOTES_LOG)
        .config(ROUTES)
        .start()
}

/// The client ends the tunnel: frames both ways, then the client's FIN (no close frame, like a
/// killed browser); the backend closes only after that.
#[test]
fn notes_client_closes_first() {
    if !need::ours() {
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
    if !need::ours() {
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
    if !need::ours() {
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
    if !need::ours() {
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
    assert_eq!(
        rest,
        server_frame(OP_CLOSE, &1001u16.to_be_bytes()),
        "{rest:?}"
    );
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
    let line = notes_line(&h, |l| l.ends_with("|GET /ws/plain HTTP/1.1")).unwrap();
    assert!(line.starts_with("-|-|-|-|-|200|"), "{line}");
}

/// A tunnel handed to the child's reactor is logged when it leaves its worker, while it is
/// open: `wstunnel-end=handed-over`, no figures yet (they go to ProxyWebsocketTunnelLog).
#[test]
fn notes_of_a_handed_over_tunnel() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .async_tunnels(true)
        .var("BACKEND_PORT", b.port())
        .config(NOTES_LOG)
        .config(ROUTES)
        .start();
    let mut c = raw_tunnel(&h.target(), "/ws/echo/handed-over");
    let n = notes_for(&h, "/ws/echo/handed-over");
    assert_eq!(
        (n.end.as_str(), n.status.as_str(), n.client_bytes.as_str()),
        ("handed-over", "101", "-"),
        "{n:?}"
    );
    let f = client_frame(OP_TEXT, b"still open");
    c.send(&f).unwrap();
    assert_eq!(
        c.read_exact_bytes(f.len() - 4).unwrap(),
        server_frame(OP_TEXT, b"still open")
    );
}
