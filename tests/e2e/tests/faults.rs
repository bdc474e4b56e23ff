//! The fault matrix, end to end through a real httpd: backends and clients that reset, half-close,
//! stall, answer slowly or never, oversized and body-carrying upgrades, a 100 MiB message, and
//! peers that never read. For each fault the test checks what the client sees, what the backend
//! sees, what httpd logs (the error log and the module's record of each tunnel,
//! `ProxyWebsocketTunnelLog`), and that httpd's child holds no more descriptors and no TCP socket but its listener afterwards.
//!
//! Every test uses one child process (so descriptor counts compare), `Timeout 5` and
//! `ProxyTimeout 2`, and finishes in a few seconds. `cargo test --test faults -- --nocapture`
//! prints one "FAULT" report per case.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use wst_e2e::client::{End, RawClient};
use wst_e2e::faults::{
    assert_released, close_wait, rst, worker_pids, After, Baseline, Behaviour, FaultBackend,
    SHORT_TIMEOUTS,
};
use wst_e2e::procfs::total_rss_kib;
use wst_e2e::ws::{self, OP_BINARY, OP_TEXT};
use wst_e2e::{Browser, Httpd, UpgradeRequest};

/// The module's record of each tunnel when it ends (on both paths), one line per tunnel.
const TUNNEL_LOG: &str = "ProxyWebsocketTunnelLog \"{DIR}/logs/tunnel.log\" \"end=%r first=%f from_client=%I from_backend=%B %U\"\n";

fn start(backend_port: u16, extra: &str) -> Httpd {
    Httpd::builder()
        .one_child()
        .var("BACKEND_PORT", backend_port)
        .config(&format!(
            "{SHORT_TIMEOUTS}{TUNNEL_LOG}{extra}ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/ retry=0\n"
        ))
        .start()
}

/// Baseline after one plain request has been served (the child is up and has accepted once).
fn baseline(h: &Httpd) -> Baseline {
    let t = h.target();
    let r = wst_e2e::client::http_get(&t, "/index.html").expect("warm-up GET");
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(100));
    let b = Baseline::take(h);
    assert_eq!(b.fds.len(), 1, "one child process expected: {:?}", b.fds);
    b
}

fn tunnel_log(h: &Httpd) -> Vec<String> {
    std::fs::read_to_string(h.dir().join("logs/tunnel.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait for the tunnel log line of a request to `path`.
fn wait_tunnel_line(h: &Httpd, path: &str, timeout: Duration) -> String {
    wst_e2e::wait_for(timeout, || {
        tunnel_log(h).into_iter().find(|l| l.contains(path))
    })
    .unwrap_or_else(|| {
        panic!(
            "no log line for {path} after {timeout:?}; tunnel.log: {:?}",
            tunnel_log(h)
        )
    })
}

fn wst_lines(h: &Httpd) -> Vec<String> {
    h.error_log()
        .lines()
        .filter(|l| l.contains("proxy_wstunnel") || l.contains("AH0"))
        .map(|l| {
            // Drop the timestamp and pid/tid prefix for the report.
            l.split_once("] [client")
                .map_or(l.to_string(), |(_, rest)| format!("[client{rest}"))
        })
        .collect()
}

fn report(case: &str, client: &str, backend: &str, h: &Httpd, released: Duration) {
    eprintln!(
        "FAULT {case}\n  client:  {client}\n  backend: {backend}\n  log:     {}\n  error.log: {:?}\n  resources: released after {released:?}, CLOSE_WAIT {:?}",
        tunnel_log(h).join(" | "),
        wst_lines(h),
        close_wait(h)
    );
}

fn upgrade(path: &str) -> UpgradeRequest {
    UpgradeRequest::new(path, "127.0.0.1", Browser::Chrome)
}

fn connect_upgraded(h: &Httpd, path: &str) -> RawClient {
    let mut c = RawClient::connect(&h.target()).unwrap();
    c.send(&upgrade(path).to_bytes()).unwrap();
    let head = c.read_head().unwrap();
    assert_eq!(head.status, 101, "{}", head.head);
    c
}

fn tcp_of(c: &RawClient) -> TcpStream {
    c.stream.tcp().try_clone().unwrap()
}

const RELEASE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Backend faults
// ---------------------------------------------------------------------------------------------

/// The backend sends the first 100 bytes of a 1000-byte frame, then RST.
#[test]
fn backend_rst_mid_frame() {
    let frame = ws::server_frame(OP_BINARY, &[b'x'; 1000]);
    let partial = frame[..104].to_vec();
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::SendThenRst(partial.clone()),
    });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let mut c = connect_upgraded(&h, "/ws/rst-mid-frame");
    let (bytes, end) = c.read_until_close(Duration::from_secs(5));
    assert_eq!(
        bytes, partial,
        "the client gets exactly the bytes sent before the RST"
    );
    assert!(end != End::Timeout, "the client's connection must end");
    let line = wait_tunnel_line(&h, "/ws/rst-mid-frame", Duration::from_secs(5));
    assert!(line.contains("first=backend"), "{line}");
    assert!(
        line.contains("end=backend-error") || line.contains("end=closed"),
        "{line}"
    );
    let seen = b.seen(0).unwrap();
    assert!(String::from_utf8_lossy(&seen.request).contains("Upgrade: websocket"));
    drop(c);
    let t = assert_released(&h, &base, 0, RELEASE, "backend RST mid-frame");
    report(
        "backend RST mid-frame",
        &format!(
            "101, the {} bytes sent before the RST, then {end:?}",
            bytes.len()
        ),
        &format!(
            "request head received, sent {} bytes, then RST",
            seen.bytes_sent
        ),
        &h,
        t,
    );
}

/// The backend sends a frame and shuts down its write side: the client gets the frame and
/// EOF, and can still send; the backend gets those bytes, then the client's EOF.
#[test]
fn backend_half_close() {
    let bye = ws::server_frame(OP_TEXT, b"bye");
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::SendThenHalfClose(bye.clone()),
    });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let mut c = connect_upgraded(&h, "/ws/half-close");
    let (bytes, end) = c.read_until_close(Duration::from_secs(5));
    assert_eq!(bytes, bye);
    assert_eq!(
        end,
        End::Eof,
        "the backend's FIN reaches the client as a FIN"
    );
    // The other direction still works.
    let msg = ws::client_frame(OP_TEXT, b"after the backend's FIN");
    c.send(&msg).unwrap();
    let got = wst_e2e::wait_for(Duration::from_secs(5), || {
        b.seen(0).filter(|s| s.bytes_after >= msg.len() as u64)
    });
    assert!(
        got.is_some(),
        "backend did not get the client's bytes after its FIN: {:?}",
        b.seen(0)
    );
    c.shutdown_write().unwrap();
    let seen = b
        .wait_end(0, Duration::from_secs(5))
        .expect("backend sees the end");
    assert_eq!(seen.end, "eof");
    assert_eq!(seen.bytes_after, msg.len() as u64);
    let line = wait_tunnel_line(&h, "/ws/half-close", Duration::from_secs(5));
    assert!(
        line.contains("end=closed") && line.contains("first=backend"),
        "{line}"
    );
    drop(c);
    let t = assert_released(&h, &base, 0, RELEASE, "backend half-close");
    report(
        "backend half-close",
        "101, the frame, EOF; its own bytes still reach the backend",
        &format!(
            "sent {} bytes + FIN, got {} bytes then EOF",
            seen.bytes_sent, seen.bytes_after
        ),
        &h,
        t,
    );
}

/// The backend accepts and reads the request but never answers: 504 after ProxyTimeout.
#[test]
fn backend_never_answers() {
    let b = FaultBackend::start(Behaviour::NoAnswer);
    let h = start(b.port(), "");
    let base = baseline(&h);
    let mut c = RawClient::connect(&h.target()).unwrap();
    let t0 = Instant::now();
    c.send(&upgrade("/ws/never-answers").to_bytes()).unwrap();
    let r = c.read_response().unwrap();
    let waited = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.head);
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "answered after {waited:?} with ProxyTimeout 2"
    );
    // The head's deadline (ProxyTimeout) has passed: WST019 says so.
    assert!(
        h.wait_error_line(Duration::from_secs(2), &["WST019", "did not complete within"])
            .is_some(),
        "no WST019 line:\n{}",
        h.error_log()
    );
    // httpd closes its side: the backend sees EOF.
    let seen = wst_e2e::wait_for(Duration::from_secs(3), || {
        b.seen(0).filter(|s| !s.request.is_empty())
    })
    .unwrap();
    assert!(String::from_utf8_lossy(&seen.request).starts_with("GET /never-answers HTTP/1.1"));
    drop(c);
    let t = assert_released(&h, &base, 0, RELEASE, "backend never answers");
    report(
        "backend accepts and never answers",
        &format!("{} after {waited:?}", r.status),
        "request head received, nothing sent; httpd's side closed",
        &h,
        t,
    );
}

/// The backend sends its 101 one byte every 3 ms: the client gets a correct 101 and a working
/// tunnel.
#[test]
fn backend_answers_byte_by_byte() {
    let b = FaultBackend::start(Behaviour::SlowUpgrade { byte_ms: 3 });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let req = upgrade("/ws/slow-101");
    let mut c = RawClient::connect(&h.target()).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let head = c.read_head().unwrap();
    assert_eq!(head.status, 101, "{}", head.head);
    wst_e2e::client::check_101(&req, &head).unwrap();
    let msg = ws::client_frame(OP_TEXT, b"through a slow handshake");
    c.send(&msg).unwrap();
    // The raw echo backend returns the masked frame as it is.
    assert_eq!(c.read_exact_bytes(msg.len()).unwrap(), msg);
    c.shutdown_write().unwrap();
    let (_, end) = c.read_until_close(Duration::from_secs(5));
    assert_eq!(end, End::Eof);
    let line = wait_tunnel_line(&h, "/ws/slow-101", Duration::from_secs(5));
    assert!(line.contains("end=closed"), "{line}");
    drop(c);
    let t = assert_released(&h, &base, 0, RELEASE, "slow 101");
    report(
        "backend answers byte by byte",
        "a correct 101, then an echo",
        "request, 101 written one byte per 3 ms, echo",
        &h,
        t,
    );
}

/// The backend closes (FIN, then RST) after reading the request, before any answer: 502.
#[test]
fn backend_gone_between_connect_and_101() {
    for rst_it in [false, true] {
        let b = FaultBackend::start(Behaviour::CloseBeforeAnswer { rst: rst_it });
        let h = start(b.port(), "");
        let base = baseline(&h);
        let mut c = RawClient::connect(&h.target()).unwrap();
        c.send(&upgrade("/ws/gone").to_bytes()).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 502, "rst={rst_it}: {}", r.head);
        let needle = if rst_it {
            "WST0" // WST009 (EOF) or WST010 (read error), whichever the RST gives
        } else {
            "backend closed the connection before answering"
        };
        assert!(
            h.wait_error_log(Duration::from_secs(2), needle),
            "{}",
            h.error_log()
        );
        drop(c);
        let t = assert_released(&h, &base, 0, RELEASE, "backend gone before 101");
        report(
            if rst_it {
                "backend RST before its 101"
            } else {
                "backend FIN before its 101"
            },
            "502",
            "request head received, then closed without answering",
            &h,
            t,
        );
    }
    // And a backend that is not there at all (connection refused): 503.
    let port = wst_e2e::net::closed_port();
    let h = start(port, "");
    let base = baseline(&h);
    let mut c = RawClient::connect(&h.target()).unwrap();
    c.send(&upgrade("/ws/refused").to_bytes()).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 503, "{}", r.head);
    drop(c);
    let t = assert_released(&h, &base, 0, RELEASE, "backend refused");
    report(
        "backend refuses the connection",
        "503",
        "nothing (port closed)",
        &h,
        t,
    );
}

// ---------------------------------------------------------------------------------------------
// Client faults
// ---------------------------------------------------------------------------------------------

/// The client sends half of its request head, then RST: the backend is never contacted.
#[test]
fn client_rst_during_request_head() {
    let b = FaultBackend::start(Behaviour::Upgrade { then: After::Echo });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let bytes = upgrade("/ws/rst-head").to_bytes();
    let mut s = TcpStream::connect(("127.0.0.1", h.port())).unwrap();
    s.write_all(&bytes[..bytes.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    rst(s);
    let t = assert_released(&h, &base, 0, RELEASE, "client RST in the request head");
    assert_eq!(b.connections(), 0, "the backend must not be contacted");
    report(
        "client RST during the request head",
        "(reset by the client)",
        "never contacted",
        &h,
        t,
    );
}

/// The client sends its whole upgrade request and resets before the backend's 101 (sent
/// 500 ms late): the backend gets the request, and its connection is closed once the 101 finds
/// the client gone.
#[test]
fn client_rst_before_101() {
    let b = FaultBackend::start(Behaviour::LateUpgrade { delay_ms: 500 });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let mut s = TcpStream::connect(("127.0.0.1", h.port())).unwrap();
    s.write_all(&upgrade("/ws/rst-before-101").to_bytes())
        .unwrap();
    wst_e2e::wait_for(Duration::from_secs(3), || {
        b.seen(0).filter(|x| !x.request.is_empty())
    })
    .expect("backend got the request");
    rst(s);
    let seen = b
        .wait_end(0, Duration::from_secs(5))
        .expect("backend connection ends");
    assert!(
        seen.end == "eof" || seen.end == "reset" || seen.end.starts_with("write-"),
        "{seen:?}"
    );
    let t = assert_released(&h, &base, 0, RELEASE, "client RST before 101");
    report(
        "client RST during the handshake (before the 101)",
        "(reset by the client)",
        &format!("request received, 101 sent late, then {}", seen.end),
        &h,
        t,
    );
}

/// The client sends the first 100 bytes of a 1000-byte frame, then RST: the backend gets
/// exactly those bytes, then the end of its connection.
#[test]
fn client_rst_mid_frame() {
    let b = FaultBackend::start(Behaviour::Upgrade { then: After::Echo });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let c = connect_upgraded(&h, "/ws/client-rst-mid-frame");
    let frame = ws::client_frame(OP_BINARY, &[b'y'; 1000]);
    let partial = &frame[..108];
    let mut s = tcp_of(&c);
    s.write_all(partial).unwrap();
    wst_e2e::wait_for(Duration::from_secs(3), || {
        b.seen(0).filter(|x| x.bytes_after >= partial.len() as u64)
    })
    .expect("the partial frame reaches the backend");
    drop(c);
    rst(s);
    let seen = b
        .wait_end(0, Duration::from_secs(5))
        .expect("backend connection ends");
    assert_eq!(seen.bytes_after, partial.len() as u64);
    assert!(
        seen.end == "eof" || seen.end == "reset" || seen.end.starts_with("write-"),
        "{seen:?}"
    );
    let line = wait_tunnel_line(&h, "/ws/client-rst-mid-frame", Duration::from_secs(5));
    assert!(line.contains("first=client"), "{line}");
    let t = assert_released(&h, &base, 0, RELEASE, "client RST mid-frame");
    report(
        "client RST mid-frame",
        "(reset by the client after 108 of 1004 bytes)",
        &format!(
            "{} bytes (exactly the partial frame), then {}",
            seen.bytes_after, seen.end
        ),
        &h,
        t,
    );
}

/// The backend floods 16 KiB frames; the client reads a little, then RST: the tunnel ends with
/// a client error and the backend's writes fail.
#[test]
fn client_rst_while_backend_sends() {
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::Flood(16 * 1024),
    });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let mut c = connect_upgraded(&h, "/ws/rst-while-sending");
    let got = c.read_exact_bytes(256 * 1024).unwrap();
    assert_eq!(got[0], 0x82, "a binary frame first");
    let s = tcp_of(&c);
    drop(c);
    rst(s);
    let seen = b
        .wait_end(0, Duration::from_secs(5))
        .expect("backend's writes end");
    assert!(seen.end.starts_with("write-"), "{seen:?}");
    let line = wait_tunnel_line(&h, "/ws/rst-while-sending", Duration::from_secs(5));
    assert!(line.contains("first=client"), "{line}");
    assert!(
        line.contains("end=client-error") || line.contains("end=closed"),
        "{line}"
    );
    let t = assert_released(&h, &base, 0, RELEASE, "client RST while the backend sends");
    report(
        "client RST while the backend is sending",
        "256 KiB of frames, then (reset by the client)",
        &format!("sent {} bytes, then {}", seen.bytes_sent, seen.end),
        &h,
        t,
    );
}

// ---------------------------------------------------------------------------------------------
// Requests refused before the backend is contacted
// ---------------------------------------------------------------------------------------------

/// A header above LimitRequestFieldSize: httpd's core answers 400; no backend connection.
#[test]
fn header_above_limit_request_field_size() {
    let b = FaultBackend::start(Behaviour::Upgrade { then: After::Echo });
    let h = start(b.port(), "LimitRequestFieldSize 1024\n");
    let base = baseline(&h);
    let req = upgrade("/ws/big-header").header("X-Big", &"a".repeat(2000));
    let mut c = RawClient::connect(&h.target()).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 400, "{}", r.head);
    // httpd's core refuses it (AH00561, logged at info: nothing at the suite's warn level).
    assert!(h
        .wait_access(Duration::from_secs(2), |l| l.status == 400)
        .is_some());
    drop(c);
    let t = assert_released(&h, &base, 0, RELEASE, "oversized header");
    assert_eq!(b.connections(), 0);
    report(
        "header above LimitRequestFieldSize",
        "400 (httpd core)",
        "never contacted",
        &h,
        t,
    );
}

/// An upgrade carrying a body (Content-Length, or Transfer-Encoding: chunked), with a second
/// request smuggled in the body: 400 before the backend is contacted, and the smuggled
/// request is never served as a request nor tunnelled.
#[test]
fn upgrade_with_a_body_is_refused() {
    let b = FaultBackend::start(Behaviour::Upgrade { then: After::Echo });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let smuggled = b"GET /ws/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for (name, value, body) in [
        (
            "Content-Length",
            smuggled.len().to_string(),
            smuggled.to_vec(),
        ),
        (
            "Transfer-Encoding",
            "chunked".to_string(),
            [
                format!("{:x}\r\n", smuggled.len()).into_bytes(),
                smuggled.to_vec(),
                b"\r\n0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
    ] {
        let mut bytes = upgrade("/ws/with-body").header(name, &value).to_bytes();
        bytes.extend_from_slice(&body);
        let mut c = RawClient::connect(&h.target()).unwrap();
        c.send(&bytes).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 400, "{name}: {}", r.head);
        // Nothing else comes back on this connection (no second response).
        let (rest, _) = c.read_until_close(Duration::from_secs(2));
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
            "{name}: a second response: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    assert!(h.wait_error_log(
        Duration::from_secs(2),
        "upgrade request with a body (Content-Length)"
    ));
    assert!(h.wait_error_log(
        Duration::from_secs(2),
        "upgrade request with a body (Transfer-Encoding)"
    ));
    assert!(
        !h.access_log().contains("/ws/smuggled"),
        "{}",
        h.access_log()
    );
    let t = assert_released(&h, &base, 0, RELEASE, "upgrade with a body");
    assert_eq!(b.connections(), 0, "the backend must not be contacted");
    report(
        "upgrade with Content-Length / Transfer-Encoding (smuggled request in the body)",
        "400 each, nothing after it",
        "never contacted",
        &h,
        t,
    );
}

// ---------------------------------------------------------------------------------------------
// Volume and stalls
// ---------------------------------------------------------------------------------------------

fn max_rss_while(h: &Httpd, dur: Duration) -> u64 {
    let t0 = Instant::now();
    let mut max = 0;
    while t0.elapsed() < dur {
        max = max.max(total_rss_kib(&worker_pids(h)));
        std::thread::sleep(Duration::from_millis(100));
    }
    max
}

/// One 100 MiB message through the tunnel and back (a raw echo backend): byte-exact, and
/// httpd's child does not grow by anything like the message size.
#[test]
fn message_of_100_mib() {
    const LEN: usize = 100 << 20;
    let b = FaultBackend::start(Behaviour::Upgrade { then: After::Echo });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let rss0 = total_rss_kib(&worker_pids(&h));
    let mut c = connect_upgraded(&h, "/ws/100mib");
    let payload = wst_e2e::binary_payload(LEN, 7);
    let frame = ws::encode_frame(true, OP_BINARY, &payload, Some([1, 2, 3, 4]));
    drop(payload);
    let mut w = tcp_of(&c);
    let frame = std::sync::Arc::new(frame);
    let f2 = frame.clone();
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || w.write_all(&f2));
    let mut rss_max = rss0;
    let mut got = Vec::with_capacity(frame.len());
    let mut r = tcp_of(&c);
    let mut buf = vec![0u8; 1 << 20];
    let mut last_sample = Instant::now();
    while got.len() < frame.len() {
        let n = r.read(&mut buf).expect("read the echo");
        assert!(n > 0, "EOF after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if last_sample.elapsed() > Duration::from_millis(100) {
            rss_max = rss_max.max(total_rss_kib(&worker_pids(&h)));
            last_sample = Instant::now();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "too slow");
    }
    writer.join().unwrap().unwrap();
    let took = t0.elapsed();
    assert!(got == *frame, "the echo differs from the message");
    c.shutdown_write().unwrap();
    let (_, end) = c.read_until_close(Duration::from_secs(5));
    assert_eq!(end, End::Eof);
    let line = wait_tunnel_line(&h, "/ws/100mib", Duration::from_secs(5));
    assert!(
        line.contains(&format!("from_client={}", frame.len())),
        "{line}"
    );
    assert!(
        line.contains(&format!("from_backend={}", frame.len())),
        "{line}"
    );
    let growth = rss_max.saturating_sub(rss0);
    assert!(
        growth < 16 * 1024,
        "httpd grew by {growth} KiB for a 100 MiB message"
    );
    drop(c);
    let t = assert_released(&h, &base, 0, RELEASE, "100 MiB message");
    report(
        "a 100 MiB message",
        &format!(
            "echoed byte-exact in {took:?} ({:.0} MiB/s each way)",
            100.0 / took.as_secs_f64()
        ),
        &format!(
            "{} bytes in, {} out",
            b.seen(0).unwrap().bytes_after,
            b.seen(0).unwrap().bytes_sent
        ),
        &h,
        t,
    );
    eprintln!("  httpd child RSS {rss0} KiB before, max {rss_max} KiB during (+{growth} KiB)");
}

/// A backend that never reads while the client writes as fast as it can: httpd's memory stays
/// flat (the tunnel stops reading the client when the backend does not take bytes). The
/// backend then goes away (RST, its receive buffer unread), which ends the tunnel.
#[test]
fn backend_never_reads() {
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::NeverRead,
    });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let c = connect_upgraded(&h, "/ws/backend-never-reads");
    let rss0 = total_rss_kib(&worker_pids(&h));
    let (sent, w) = write_until_blocked(&c);
    let rss_max = max_rss_while(&h, Duration::from_secs(2));
    let growth = rss_max.saturating_sub(rss0);
    assert!(growth < 8 * 1024, "httpd grew by {growth} KiB");
    assert!(
        sent < 256 << 20,
        "the client could write {sent} bytes: no backpressure?"
    );
    drop(b);
    let line = wait_tunnel_line(&h, "/ws/backend-never-reads", Duration::from_secs(5));
    assert!(line.contains("end=backend-error"), "{line}");
    drop(c);
    drop(w);
    let t = assert_released(&h, &base, 0, RELEASE, "backend never reads");
    report(
        "a backend that never reads",
        &format!("could write {} KiB before blocking", sent / 1024),
        "101 sent, nothing read, then gone (RST)",
        &h,
        t,
    );
    eprintln!("  httpd child RSS {rss0} KiB at the start, max {rss_max} KiB (+{growth} KiB)");
}

/// Write 64 KiB frames until the socket blocks for 1 s (at most 4 s in all).
fn write_until_blocked(c: &RawClient) -> (u64, TcpStream) {
    let mut w = tcp_of(c);
    w.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let chunk = ws::client_frame(OP_BINARY, &[b'z'; 64 * 1024]);
    let mut sent = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        match w.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(_) => break,
        }
    }
    (sent, w)
}

/// REGRESSION (bug found by this suite, see the README's Security section, "Findings of the hardening work"): while the
/// client→backend direction waits for a backend that does not read, and the backend sends
/// nothing, the client's socket is left out of the poll set, so a client RST goes unnoticed and
/// the tunnel (a worker thread, both sockets) is held until the backend reads or closes, or
/// the idle timeout if one is set. The tunnel must end with a client error.
#[test]
fn client_rst_ends_a_tunnel_stalled_on_the_backend() {
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::NeverRead,
    });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let c = connect_upgraded(&h, "/ws/stalled-on-backend");
    let (_sent, w) = write_until_blocked(&c);
    drop(c);
    rst(w);
    let line = wait_tunnel_line(&h, "/ws/stalled-on-backend", Duration::from_secs(5));
    assert!(
        line.contains("end=client-error") && line.contains("first=client"),
        "{line}"
    );
    let t = assert_released(&h, &base, 0, RELEASE, "client RST, backend not reading");
    report(
        "client RST while the backend does not read",
        "wrote until blocked, then RST",
        "101 sent, nothing read",
        &h,
        t,
    );
}

/// REGRESSION (the mirror of the above): while backend→client waits for a client that does
/// not read and the client sends nothing, a backend RST goes unnoticed. The tunnel must end
/// with a backend error.
#[test]
fn backend_rst_ends_a_tunnel_stalled_on_the_client() {
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::Flood(64 * 1024),
    });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let c = connect_upgraded(&h, "/ws/stalled-on-client");
    // Let every buffer on the way fill up, then make the backend go away with an RST.
    std::thread::sleep(Duration::from_millis(1500));
    drop(b);
    let line = wait_tunnel_line(&h, "/ws/stalled-on-client", Duration::from_secs(5));
    assert!(
        line.contains("end=backend-error") && line.contains("first=backend"),
        "{line}"
    );
    drop(c);
    let t = assert_released(&h, &base, 0, RELEASE, "backend RST, client not reading");
    report(
        "backend RST while the client does not read",
        "101, never reads",
        "flooded until blocked, then RST",
        &h,
        t,
    );
}

/// A client that never reads while the backend floods: httpd's memory stays flat and the
/// backend is held back; a client RST then ends the tunnel and the backend's writes fail.
#[test]
fn client_never_reads() {
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::Flood(64 * 1024),
    });
    let h = start(b.port(), "");
    let base = baseline(&h);
    let c = connect_upgraded(&h, "/ws/client-never-reads");
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = total_rss_kib(&worker_pids(&h));
    let sent0 = b.seen(0).unwrap().bytes_sent;
    let rss_max = max_rss_while(&h, Duration::from_secs(2));
    let sent1 = b.seen(0).unwrap().bytes_sent;
    let growth = rss_max.saturating_sub(rss0);
    assert!(growth < 8 * 1024, "httpd grew by {growth} KiB");
    assert!(
        sent1 - sent0 < 4 << 20,
        "the backend could still send {} KiB in 2 s to a client that does not read",
        (sent1 - sent0) / 1024
    );
    let s = tcp_of(&c);
    drop(c);
    rst(s);
    let seen = b
        .wait_end(0, Duration::from_secs(5))
        .expect("backend's writes end");
    assert!(seen.end.starts_with("write-"), "{seen:?}");
    let t = assert_released(&h, &base, 0, RELEASE, "client never reads");
    report(
        "a client that never reads",
        "101, then RST after 2.5 s without reading",
        &format!(
            "sent {} KiB in all ({} KiB in the last 2 s), then {}",
            seen.bytes_sent / 1024,
            (sent1 - sent0) / 1024,
            seen.end
        ),
        &h,
        t,
    );
    eprintln!("  httpd child RSS {rss0} KiB at the start, max {rss_max} KiB (+{growth} KiB)");
}

// ---------------------------------------------------------------------------------------------
// Stopping httpd while tunnels carry traffic
// ---------------------------------------------------------------------------------------------

/// Open `n` tunnels on `h` and keep echo traffic on all of them (one 1 KiB frame in flight per
/// tunnel) until `stop` is set or the connections end. Returns the number of messages echoed.
fn traffic_until(
    h: &Httpd,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let port = h.port();
    std::thread::spawn(move || {
        let frame = ws::client_frame(OP_BINARY, &[b'q'; 1024]);
        let mut conns = Vec::new();
        for i in 0..n {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&upgrade(&format!("/ws/stop/{i}")).to_bytes())
                .unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while ws::head_end(&head).is_none() {
                let k = s.read(&mut b).unwrap();
                assert!(k > 0);
                head.extend_from_slice(&b[..k]);
            }
            assert!(head.starts_with(b"HTTP/1.1 101"));
            conns.push(s);
        }
        let mut msgs = 0u64;
        let mut buf = vec![0u8; frame.len()];
        'outer: while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for s in conns.iter_mut() {
                if s.write_all(&frame).is_err() || s.read_exact(&mut buf).is_err() {
                    break 'outer;
                }
                msgs += 1;
            }
        }
        msgs
    })
}

/// httpd stopped (SIGTERM, as `apachectl -k stop`) while 200 tunnels carry traffic: every
/// child exits cleanly (no "exit signal" in the error log) and no SIGKILL is needed.
#[test]
fn stop_while_200_tunnels_carry_traffic() {
    let b = FaultBackend::start(Behaviour::Upgrade { then: After::Echo });
    // Room for 200 tunnels from the start under every MPM (2.2 names them prefork.c/worker.c).
    let f = Httpd::flavor();
    let threaded = "StartServers 4\nServerLimit 4\nThreadsPerChild 64\nThreadLimit 64\n\
                    MaxRequestWorkers 256\nMaxSpareThreads 256\n";
    let capacity = f.if_mpm("event", threaded)
        + &f.if_mpm("worker", threaded)
        + &f.if_mpm(
            "prefork",
            "StartServers 210\nMinSpareServers 1\nMaxSpareServers 256\nServerLimit 256\n\
             MaxRequestWorkers 256\n",
        );
    let mut h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(&format!(
            "{capacity}{SHORT_TIMEOUTS}ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/\n"
        ))
        .start();
    // Under valgrind (httpd -X: one process, 64 threads) fewer tunnels fit.
    let n = if std::env::var_os("WST_VALGRIND").is_some() {
        40
    } else {
        200
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = traffic_until(&h, n, stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    let r = h.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let msgs = t.join().unwrap();
    let log = h.error_log();
    let crashes: Vec<&str> = log.lines().filter(|l| l.contains("exit signal")).collect();
    eprintln!(
        "stop with {n} busy tunnels: {msgs} messages echoed, stopped in {:?}, crashes {crashes:?}",
        r.elapsed
    );
    assert!(
        crashes.is_empty(),
        "children crashed on stop:\n{}",
        crashes.join("\n")
    );
    assert!(!r.killed, "SIGKILL was needed");
}

// ---------------------------------------------------------------------------------------------
// TLS to the backend follows the user's SSLProxy* settings
// ---------------------------------------------------------------------------------------------

/// Another name of 127.0.0.1 in /etc/hosts than localhost (absent from the test certificate).
fn loopback_alias() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("127.0.0.1"))
        .flat_map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .find(|n| n != "localhost" && !n.starts_with('#'))
}

/// `wss://` backends are verified exactly as the user's SSLProxy* directives say (the module
/// hands the connection to mod_ssl and never sets TLS options itself): with
/// `SSLProxyVerify require` an untrusted certificate and (with the default
/// `SSLProxyCheckPeerName on`) a name the certificate does not carry are refused with 502;
/// the relaxed settings of seed 002 accept both.
#[test]
fn wss_backend_verification_follows_sslproxy_settings() {
    if !Httpd::flavor().has_module("ssl") {
        eprintln!("SKIP: no mod_ssl");
        return;
    }
    let backend_pki = wst_e2e::Pki::generate();
    let other_pki = wst_e2e::Pki::generate();
    let b = wst_e2e::WstEcho::start_tls(&backend_pki);
    let alias = loopback_alias();
    let cases: Vec<(&str, String, String, u16)> = {
        let mut v = vec![
            (
                "verifying, trusted CA, right name",
                format!(
                    "SSLProxyVerify require\nSSLProxyCACertificateFile \"{}\"\n",
                    backend_pki.ca_file().display()
                ),
                "localhost".to_string(),
                101,
            ),
            (
                "verifying, untrusted CA",
                format!(
                    "SSLProxyVerify require\nSSLProxyCACertificateFile \"{}\"\n",
                    other_pki.ca_file().display()
                ),
                "localhost".to_string(),
                502,
            ),
            (
                "seed 002's relaxed settings, untrusted CA",
                "SSLProxyVerify none\nSSLProxyCheckPeerName off\n".to_string(),
                "localhost".to_string(),
                101,
            ),
        ];
        if let Some(a) = &alias {
            v.push((
                "verifying, trusted CA, name not in the certificate",
                format!(
                    "SSLProxyVerify require\nSSLProxyCACertificateFile \"{}\"\n",
                    backend_pki.ca_file().display()
                ),
                a.clone(),
                502,
            ));
            v.push((
                "seed 002's relaxed settings, name not in the certificate",
                "SSLProxyVerify none\nSSLProxyCheckPeerName off\n".to_string(),
                a.clone(),
                101,
            ));
        } else {
            eprintln!("SKIP (name check): no alias of 127.0.0.1 in /etc/hosts");
        }
        v
    };
    for (what, settings, host, want) in cases {
        let h = Httpd::builder()
            .module("ssl")
            .var("BACKEND_PORT", b.port())
            .config(&format!(
                "{SHORT_TIMEOUTS}SSLProxyEngine on\n{settings}ProxyPass /ws/ wss://{host}:{{BACKEND_PORT}}/ retry=0\n"
            ))
            .start();
        let mut c = RawClient::connect(&h.target()).unwrap();
        c.send(&upgrade("/ws/echo").to_bytes()).unwrap();
        let r = c.read_head().unwrap();
        let errs: Vec<String> = h
            .error_log()
            .lines()
            .filter(|l| l.contains(":error]"))
            .map(|l| {
                l.split_once("] ")
                    .map_or(l, |x| x.1)
                    .chars()
                    .take(160)
                    .collect()
            })
            .collect();
        eprintln!("TLS {what}: {} ; error.log: {errs:?}", r.status);
        assert_eq!(r.status, want, "{what}: {}\n{}", r.head, h.error_log());
        if want == 101 {
            let msg = ws::client_frame(OP_TEXT, b"over verified TLS");
            c.send(&msg).unwrap();
            let f = c.read_frame().unwrap();
            assert_eq!(f.payload, b"over verified TLS", "{what}");
        }
    }
}
