//! What tunnels handed to the child's reactor do, checked on tunnels that really were handed
//! over (mod_status's `WebSocketTunnelsAsync`, the tunnel log's `path=async`):
//!
//! * byte-exact relay under each MPM, including frames pipelined right behind the upgrade
//!   request (one write), bytes the backend sends right behind its 101, a backend flooding from
//!   its 101 on, and an idle second after the hand-over (no stray FIN from httpd);
//! * half-close, `ProxyWebsocketIdleTimeout`, `ProxyWebsocketPing` (a dead client ended);
//! * `ProxyWebsocketMaxTunnels` counting handed-over tunnels (more tunnels than workers, the
//!   next one 503); mod_status's split of open tunnels (threaded / handed over);
//! * `ProxyWebsocketTunnelLog`: one record per tunnel, on both paths, whose bytes, messages,
//!   close codes, end and duration are what the client did;
//! * TLS clients and wss:// backends stay threaded.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::time::{Duration, Instant};

use tungstenite::Message;
use wst_e2e::client::{check_101, close, roundtrip, End};
use wst_e2e::framebackend::{close_code, FrameBackend};
use wst_e2e::handover::{assert_handed_over, builder, few_workers, mpms, stop_clean};
use wst_e2e::tunnellog::{records, tunnel_record};
use wst_e2e::tunnels::{
    assert_refused_by_cap, counts, open_tunnel, raw_tunnel, split, tunnel_when_allowed, wait_split,
    Ws, WAIT,
};
use wst_e2e::ws::{
    client_frame, server_frame, Frame, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
};
use wst_e2e::{
    binary_payload, flood_message, need, payload, Browser, Pki, RawClient, Target, UpgradeRequest,
    WsClient, WstEcho, TLS_FRONT,
};

const LIFETIME: Duration = Duration::from_secs(30);

/// `/thr/` to the same backend with `ProxyWebsocketAsync Off`: tunnels that keep their worker.
const THREADED_ROUTE: &str = r#"
<Location /thr/>
    ProxyWebsocketAsync Off
</Location>
ProxyPass /thr/ ws://127.0.0.1:{BACKEND_PORT}/ retry=0
"#;

fn assert_frame(f: &Frame, opcode: u8, payload: &[u8], what: &str) {
    assert!(
        !f.masked,
        "{what}: a frame to the client must not be masked"
    );
    assert_eq!(f.opcode, opcode, "{what}: opcode");
    assert!(
        f.payload == payload,
        "{what}: payload differs ({} bytes, want {})",
        f.payload.len(),
        payload.len()
    );
}

fn close_1000(c: &mut RawClient) {
    c.send(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .unwrap();
    let f = c.read_frame().expect("the backend's Close");
    assert_eq!(
        (f.opcode, close_code(&f.payload)),
        (OP_CLOSE, Some(1000)),
        "{f:?}"
    );
    let (rest, end) = c.read_until_close(WAIT);
    assert_eq!((rest.len(), end), (0, End::Eof));
}

/// An upgrade to `uri` (wst-echo's /push route) with three frames, `size` bytes in all, in
/// the same write; checks the 101, the backend's "pushed" and the three echoes, byte-exact.
fn pipelined(t: &Target, uri: &str, size: usize, mpm: &str) -> RawClient {
    let req = UpgradeRequest::new(uri, &t.host, Browser::Chrome);
    let frames: Vec<(u8, Vec<u8>)> = vec![
        (OP_TEXT, b"first".to_vec()),
        (OP_BINARY, binary_payload(size - 305, 1)),
        (OP_TEXT, payload(300, 2)),
    ];
    let mut bytes = req.to_bytes();
    for (op, p) in &frames {
        bytes.extend_from_slice(&client_frame(*op, p));
    }
    let mut c = RawClient::connect(t).unwrap();
    c.send(&bytes).unwrap();
    check_101(&req, &c.read_head().unwrap()).unwrap();
    assert_frame(
        &c.read_frame().unwrap(),
        OP_TEXT,
        b"pushed",
        "the backend's first frame",
    );
    for (i, (op, p)) in frames.iter().enumerate() {
        let what = format!("{mpm}: {uri}: echo of pipelined frame {i}");
        assert_frame(&c.read_frame().unwrap(), *op, p, &what);
    }
    c
}

fn relay_byte_exact(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    let b = WstEcho::start();
    let mut h = builder(b.port()).mpm(mpm).start();
    let t = h.target();

    // The upgrade and three frames (40 KiB: less than the 64 KiB a hand-over takes along) in
    // one write; /push answers 101 and a frame in one write.
    let mut c = pipelined(&t, "/ws/push/pipelined", 40_000, mpm);
    wait_split(&t, (0, 1));

    // A second of silence after the hand-over: nothing arrives, the connection stays open.
    let (got, end) = c.read_for(Duration::from_secs(1));
    assert!(
        got.is_empty() && end.is_none(),
        "{mpm}: idle handed-over tunnel: {} bytes, {end:?}",
        got.len()
    );
    for (i, n) in [0usize, 1, 125, 126, 65_535, 65_536, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let p = binary_payload(n, i as u8);
        c.send(&client_frame(OP_BINARY, &p)).unwrap();
        let what = format!("{mpm}: echo of {n} bytes");
        assert_frame(&c.read_frame().unwrap(), OP_BINARY, &p, &what);
    }
    close_1000(&mut c);
    assert_handed_over(&tunnel_record(&h, "/ws/push/pipelined", WAIT));

    // 200 KiB pipelined: more than a hand-over takes along, so it may stay on its worker,
    // with every byte.
    let mut c = pipelined(&t, "/ws/push/pipelined-big", 200_000, mpm);
    close_1000(&mut c);
    tunnel_record(&h, "/ws/push/pipelined-big", WAIT);

    // A backend that floods from its 101 on: every message in order, none lost at the
    // hand-over (or at its fallback to the worker: see backend_streaming_from_its_101).
    flood_in_order(&t, mpm);
    tunnel_record(&h, "/ws/flood/4096", WAIT);
    wait_split(&t, (0, 0));
    stop_clean(&mut h);
}

/// wst-echo's /flood/4096: 500 messages, each as sent, in order.
fn flood_in_order(t: &Target, mpm: &str) {
    let mut c = raw_tunnel(t, "/ws/flood/4096");
    for i in 0..500u64 {
        let f = c.read_frame().unwrap();
        let what = format!("{mpm}: flood message {i}");
        assert_frame(&f, OP_BINARY, &flood_message(i, 4096), &what);
    }
}

/// A backend that streams from its 101 on (a feed that starts at once) sends more than the
/// hand-over takes along (64 KiB) before it is over; the tunnel must still leave its worker,
/// or such routes stay capped by MaxRequestWorkers.
#[test]
fn backend_streaming_from_its_101_is_handed_over() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let mut h = builder(b.port()).start();
    flood_in_order(&h.target(), "event");
    let rec = tunnel_record(&h, "/ws/flood/4096", WAIT);
    stop_clean(&mut h);
    assert_handed_over(&rec);
}

#[test]
fn relay_byte_exact_event() {
    relay_byte_exact("event");
}

#[test]
fn relay_byte_exact_worker() {
    relay_byte_exact("worker");
}

#[test]
fn relay_byte_exact_prefork() {
    relay_byte_exact("prefork");
}

/// The client sends frames and shuts down its write side: the backend (/halfclose) sees EOF,
/// answers with the byte count and closes; the client gets the count, then EOF.
#[test]
fn half_close_after_hand_over() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = builder(b.port()).start();
    let mut c = raw_tunnel(&h.target(), "/ws/halfclose");
    wait_split(&h.target(), (0, 1));
    let mut sent = 0;
    for i in 0..4u8 {
        let f = client_frame(OP_BINARY, &binary_payload(20_000 * i as usize, i));
        sent += f.len();
        c.send(&f).unwrap();
    }
    c.shutdown_write().unwrap();
    let count = c.read_frame().expect("the byte count after the half-close");
    assert_frame(&count, OP_TEXT, sent.to_string().as_bytes(), "byte count");
    let (rest, end) = c.read_until_close(WAIT);
    assert_eq!((rest.len(), end), (0, End::Eof));
    assert_handed_over(&tunnel_record(&h, "/ws/halfclose", WAIT));
}

/// `ProxyWebsocketIdleTimeout 1`: a silent handed-over tunnel gets Close 1001 on both sides
/// after about a second, then the client's connection ends; the record says `end=idle`.
#[test]
fn idle_timeout_after_hand_over() {
    if !need::ours() {
        return;
    }
    let b = FrameBackend::start(true, LIFETIME);
    let h = builder(b.port())
        .config("ProxyWebsocketIdleTimeout 1\n")
        .start();
    let mut c = raw_tunnel(&h.target(), "/ws/idle");
    let t0 = Instant::now();
    wait_split(&h.target(), (0, 1));
    let f = c.read_frame().expect("a Close after the idle timeout");
    let after = t0.elapsed();
    assert_eq!(
        (f.opcode, close_code(&f.payload)),
        (OP_CLOSE, Some(1001)),
        "{f:?}"
    );
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "Close after {after:?} with ProxyWebsocketIdleTimeout 1"
    );
    let (_, end) = c.read_until_close(WAIT);
    assert_ne!(end, End::Timeout, "the client's connection stays open");
    let bc = b
        .wait_conn(0, WAIT, |c| c.close_code().is_some())
        .expect("the backend got no Close");
    assert_eq!(bc.close_code(), Some(1001), "{bc:?}");
    let rec = tunnel_record(&h, "/ws/idle", WAIT);
    assert_handed_over(&rec);
    assert_eq!(rec.get("end"), "idle", "{}", rec.raw);
}

/// `ProxyWebsocketPing 1`: the client gets unmasked Pings and answers them for a while (the
/// tunnel stays open and echoes); then it stops answering and gets Close 1001, as does the
/// backend; the record says `end=ping-timeout`.
#[test]
fn ping_ends_a_dead_client_after_hand_over() {
    if !need::ours() {
        return;
    }
    let b = FrameBackend::start(true, LIFETIME);
    let h = builder(b.port()).config("ProxyWebsocketPing 1\n").start();
    let mut c = raw_tunnel(&h.target(), "/ws/ping");
    wait_split(&h.target(), (0, 1));
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let f = c.read_frame().expect("a Ping while answering them");
        assert_eq!((f.opcode, f.masked), (OP_PING, false), "{f:?}");
        c.send(&client_frame(OP_PONG, &f.payload)).unwrap();
        pings += 1;
    }
    assert!(
        pings >= 2,
        "{pings} pings in 2.5 s with ProxyWebsocketPing 1"
    );
    c.send(&client_frame(OP_TEXT, b"alive")).unwrap();
    let echo = loop {
        let f = c.read_frame().unwrap();
        if f.opcode != OP_PING {
            break f;
        }
        c.send(&client_frame(OP_PONG, &f.payload)).unwrap();
    };
    assert_frame(&echo, OP_TEXT, b"alive", "echo while answering pings");

    // Dead from now on: Pings go unanswered.
    let t0 = Instant::now();
    let close = loop {
        let f = c.read_frame().expect("a Close for the unanswered Ping");
        if f.opcode != OP_PING {
            break f;
        }
    };
    let after = t0.elapsed();
    assert_eq!(
        (close.opcode, close_code(&close.payload)),
        (OP_CLOSE, Some(1001)),
        "{close:?}"
    );
    assert!(
        after < Duration::from_secs(4),
        "Close {after:?} after the client went silent"
    );
    let bc = b
        .wait_conn(0, WAIT, |c| c.close_code().is_some())
        .expect("the backend got no Close");
    assert_eq!(bc.close_code(), Some(1001));
    assert!(
        bc.frames_with(OP_PONG).is_empty(),
        "the client's Pongs reached the backend"
    );
    let rec = tunnel_record(&h, "/ws/ping", WAIT);
    assert_handed_over(&rec);
    assert_eq!(rec.get("end"), "ping-timeout", "{}", rec.raw);
}

/// `ProxyWebsocketMaxTunnels 10` with 4 worker threads (prefork: 2 processes): ten handed-over
/// tunnels are open at once, the eleventh upgrade gets 503, and when one ends the next opens.
fn cap_counts_handed_over(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    let b = WstEcho::start();
    let h = builder(b.port())
        .mpm(mpm)
        .config(&few_workers(4, 2))
        .config("ProxyWebsocketMaxTunnels 10\n")
        .start();
    let t = h.target().with_timeout(Duration::from_secs(3));
    let mut tunnels: Vec<Ws> = (0..10)
        .map(|i| open_tunnel(&t, &format!("/ws/echo/cap/{i}"), i))
        .collect();
    wait_split(&t, (0, 10));
    assert_refused_by_cap(&t, "/ws/echo/cap/over");
    assert_eq!(counts(&t).2, 1, "refused count");
    close(&mut tunnels[0]);
    let (mut ws, _) = tunnel_when_allowed(&t, "/ws/echo/cap/next");
    let m = Message::text("next");
    assert_eq!(roundtrip(&mut ws, m.clone()).unwrap(), m);
    wait_split(&t, (0, 10));
    assert_refused_by_cap(&t, "/ws/echo/cap/over-again");
}

#[test]
fn cap_counts_handed_over_tunnels_event() {
    cap_counts_handed_over("event");
}

#[test]
fn cap_counts_handed_over_tunnels_prefork() {
    cap_counts_handed_over("prefork");
}

/// mod_status's split while tunnels of both kinds open and close: `/ws/` tunnels are handed
/// over, `/thr/` ones (`ProxyWebsocketAsync Off` in its `<Location>`) keep their worker.
fn split_counts(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    let b = WstEcho::start();
    let h = builder(b.port()).mpm(mpm).config(THREADED_ROUTE).start();
    let t = h.target();
    let (open0, total0, _) = counts(&t);
    assert_eq!((open0, split(&t)), (0, (0, 0)));
    let mut a1 = open_tunnel(&t, "/ws/echo/a1", 0);
    let mut a2 = open_tunnel(&t, "/ws/echo/a2", 1);
    let mut th = open_tunnel(&t, "/thr/echo/t1", 0);
    wait_split(&t, (1, 2));
    assert_eq!(counts(&t).0, 3, "WebSocketTunnels is the sum");
    close(&mut th);
    wait_split(&t, (0, 2));
    close(&mut a1);
    wait_split(&t, (0, 1));
    close(&mut a2);
    wait_split(&t, (0, 0));
    let (open, total, _) = counts(&t);
    assert_eq!((open, total - total0), (0, 3));
}

#[test]
fn split_counts_event() {
    split_counts("event");
}

#[test]
fn split_counts_prefork() {
    split_counts("prefork");
}

/// One tunnel on each path; the client sends a first frame behind the upgrade, two more
/// messages, waits 300 ms, and closes with 1000 (the backend answers 1000 and closes). Each
/// tunnel's record: its path, the bytes each way exactly as they crossed the client's
/// connection after the 101 head, 3 messages each way, close codes 1000/1000, `end=closed`,
/// a duration of at least 300 ms; and one record per tunnel.
#[test]
fn tunnel_log_records_what_the_client_did() {
    if !need::ours() {
        return;
    }
    let b = FrameBackend::start(true, LIFETIME);
    let h = builder(b.port()).config(THREADED_ROUTE).start();
    let t = h.target();
    for (uri, path) in [("/ws/log/a", "async"), ("/thr/log/t", "threaded")] {
        let req = UpgradeRequest::new(uri, &t.host, Browser::Firefox);
        let first = client_frame(OP_TEXT, b"first");
        let mut bytes = req.to_bytes();
        bytes.extend_from_slice(&first);
        let mut c = RawClient::connect(&t).unwrap();
        c.send(&bytes).unwrap();
        check_101(&req, &c.read_head().unwrap()).unwrap();
        // Bytes after the 101 head, each way, as they crossed the client's connection.
        let mut sent = first.len() as u64;
        let mut got = 0u64;
        let echo = |c: &mut RawClient| {
            let e = c.read_frame().unwrap();
            server_frame(e.opcode, &e.payload).len() as u64
        };
        got += echo(&mut c);
        for (i, n) in [200usize, 70_000].into_iter().enumerate() {
            let f = client_frame(OP_BINARY, &binary_payload(n, i as u8));
            sent += f.len() as u64;
            c.send(&f).unwrap();
            got += echo(&mut c);
        }
        std::thread::sleep(Duration::from_millis(300));
        sent += client_frame(OP_CLOSE, &1000u16.to_be_bytes()).len() as u64;
        got += server_frame(OP_CLOSE, &1000u16.to_be_bytes()).len() as u64;
        close_1000(&mut c);
        let rec = tunnel_record(&h, uri, WAIT);
        let r = &rec.raw;
        assert_eq!(rec.path(), path, "{r}");
        assert_eq!(rec.num("from_client"), sent, "bytes from the client: {r}");
        assert_eq!(rec.num("to_client"), got, "bytes to the client: {r}");
        assert_eq!(rec.num("from_backend"), got, "bytes from the backend: {r}");
        assert_eq!(rec.num("to_backend"), sent, "bytes to the backend: {r}");
        assert_eq!(rec.num("client_msgs"), 3, "{r}");
        assert_eq!(rec.num("backend_msgs"), 3, "{r}");
        assert_eq!(rec.num("client_close"), 1000, "{r}");
        assert_eq!(rec.num("backend_close"), 1000, "{r}");
        assert_eq!(rec.get("end"), "closed", "{r}");
        let ms = rec.num("ms");
        assert!((300..10_000).contains(&ms), "duration {ms} ms: {r}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let all = records(&h);
    assert_eq!(all.len(), 2, "one record per tunnel: {all:?}");
}

/// TLS stays on a worker thread: a wss:// client (mod_ssl front) and a wss:// backend
/// (SSLProxyEngine) keep their worker, a plain tunnel in the same httpd is handed over; the
/// split and each tunnel's record say so.
#[test]
fn tls_tunnels_stay_threaded() {
    if !need::ours() || !need::ssl() {
        return;
    }
    let pki = Pki::generate();
    let plain = WstEcho::start();
    let tls = WstEcho::start_tls(&pki);
    let mut h = builder(plain.port())
        .module("ssl")
        .pki(&pki)
        .listen("TLS_PORT")
        .var("TLS_BACKEND", tls.port())
        .var("SCHEME", "ws")
        .config(TLS_FRONT)
        .config(
            "SSLProxyEngine on\nSSLProxyVerify require\nSSLProxyCACertificateFile \"{CA}\"\n\
             ProxyPass /wss/ wss://localhost:{TLS_BACKEND}/\n",
        )
        .start();
    let t = h.target();
    let tls_front = h.tls_target(h.port_of("TLS_PORT"));
    let mut tunnels: Vec<(&str, Ws)> = Vec::new();
    for (target, uri) in [
        (&t, "/ws/echo/plain"),
        (&t, "/wss/echo/tls-backend"),
        (&tls_front, "/ws/echo/tls-front"),
    ] {
        let (_, mut ws) = WsClient::connect(target, uri, Browser::Chrome)
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
        let m = Message::text(uri);
        assert_eq!(roundtrip(&mut ws, m.clone()).unwrap(), m, "{uri}");
        tunnels.push((uri, ws));
    }
    wait_split(&t, (2, 1));
    for (uri, ws) in tunnels.iter_mut() {
        let m = Message::binary(binary_payload(100_000, 3));
        assert_eq!(roundtrip(ws, m.clone()).unwrap(), m, "{uri}");
    }
    for (_, ws) in tunnels.iter_mut() {
        close(ws);
    }
    for (uri, path) in [
        ("/ws/echo/plain", "async"),
        ("/wss/echo/tls-backend", "threaded"),
        ("/ws/echo/tls-front", "threaded"),
    ] {
        let rec = tunnel_record(&h, uri, WAIT);
        assert_eq!(rec.path(), path, "{uri}: {}", rec.raw);
    }
    wait_split(&t, (0, 0));
    stop_clean(&mut h);
}
