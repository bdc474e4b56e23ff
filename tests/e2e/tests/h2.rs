//! WebSocket over HTTP/2 (RFC 8441) with mod_http2's `H2WebSockets on` (httpd 2.4.58+).
//!
//! mod_http2 turns an extended CONNECT stream into a GET with `Upgrade: websocket` (and a
//! `Sec-WebSocket-Key` of its own) on a secondary connection, and the 101 that answers that key
//! into the stream's 200. The secondary connection's socket is the whole h2 connection's: it
//! must never be polled or written. With mod_proxy_http loaded this module hands such streams
//! over (and mod_proxy_http tunnels them); without it, it tunnels the stream itself, through the
//! stream's filters, polling the pipe mod_http2 signals for the stream's input. Several streams
//! at once, a stream reset in the middle of a frame, and an h2 connection dropped with tunnels
//! open all leave httpd clean: no crashed child (no "exit signal" / "Segmentation fault"), every
//! backend connection closed (no worker left in a tunnel), HTTP/1.1 and h2 tunnels still work.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{close, roundtrip};
use wst_e2e::h2ws::{
    h2_get, websocket_over_h2, websocket_over_h2_idle, websockets_over_h2, H2WsEnd, H2WsOutcome,
};
use wst_e2e::procfs::tcp_sockets_of;
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
    for m in ["http2", "ssl", "headers"] {
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

/// As [`VHOST`], with an Upgrade that is not mod_http2's RFC 8441 one on every request (set
/// before the proxy routes are chosen), plain h2 GETs included.
const VHOST_FORGED_UPGRADE: &str = r#"
<VirtualHost 127.0.0.1:{TLS_PORT}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile "{CERT}"
    SSLCertificateKeyFile "{KEY}"
    Protocols h2 http/1.1
    H2WebSockets on
    RequestHeader set Upgrade websocket early
    RequestHeader set Connection Upgrade early
    ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
</VirtualHost>
"#;

fn start(with_proxy_http: bool, pki: &Pki) -> (WstEcho, Httpd) {
    start_vhost(with_proxy_http, pki, VHOST)
}

fn start_vhost(with_proxy_http: bool, pki: &Pki, vhost: &str) -> (WstEcho, Httpd) {
    let b = WstEcho::start();
    let mut builder = Httpd::builder()
        .no_fallback_directive()
        .modules(&["ssl", "http2", "headers"])
        .pki(pki)
        .listen("TLS_PORT")
        .log_level(if with_proxy_http {
            "warn proxy_wstunnel:debug proxy_http:debug http2:info"
        } else {
            "warn proxy_wstunnel:debug http2:info"
        })
        .var("BACKEND_PORT", b.port())
        .config(vhost);
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

/// Stream `i`'s messages: its own text, a 70 KB binary one, an empty one, a small one.
fn stream_messages(i: usize) -> Vec<Vec<u8>> {
    vec![
        format!("stream {i} says hello over h2").into_bytes(),
        binary_payload(70_000, 10 + i as u8),
        b"".to_vec(),
        binary_payload(300 + i, 40 + i as u8),
    ]
}

/// Every message came back, in order.
fn assert_echoed(o: &H2WsOutcome, want: &[Vec<u8>], what: &str) {
    assert_eq!(
        o.status,
        200,
        "{what}: {:?}",
        String::from_utf8_lossy(&o.body)
    );
    assert_eq!(o.messages.len(), want.len(), "{what}: echoes");
    for (i, (got, exp)) in o.messages.iter().zip(want.iter()).enumerate() {
        assert!(
            got == exp,
            "{what}: message {i} differs ({} bytes back, {} sent)",
            got.len(),
            exp.len()
        );
    }
}

/// Wait until no child of httpd holds a connection to the backend any more: every tunnel
/// ended and released its backend connection (this module closes it), so no worker is left
/// in a tunnel.
fn wait_backend_released(h: &Httpd, b: &WstEcho, what: &str) {
    let held = || {
        tcp_sockets_of(&h.child_pids())
            .into_iter()
            .filter(|(_, s)| s.remote_port == b.port())
            .map(|(pid, s)| format!("{pid}: {}", s.state_name()))
            .collect::<Vec<_>>()
    };
    let done = wst_e2e::wait_for(Duration::from_secs(10), || held().is_empty().then_some(()));
    assert!(
        done.is_some(),
        "{what}: httpd still holds backend connections {:?}\n{}",
        held(),
        h.error_log()
    );
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

/// Without mod_proxy_http: this module tunnels the stream itself (as stock does): a 200 on the
/// stream, messages both ways (a 70 KB one too), the close handshake and the end of the stream;
/// the 200 carries none of the 101's hop-by-hop fields.
#[test]
fn h2_websocket_without_proxy_http_works() {
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
    assert_echoed(&o, &messages(), "h2 without proxy_http");
    assert!(
        b.requests().iter().any(|r| r.starts_with("GET /echo ")),
        "backend requests: {:?}",
        b.requests()
    );
    if !Httpd::flavor().wst_is_stock {
        assert!(o.got_close, "no close frame back over h2");
        assert!(o.stream_ended, "h2 stream did not end after the close");
        for (n, _) in &o.headers {
            assert!(
                !["upgrade", "connection", "sec-websocket-accept"].contains(&n.as_str()),
                "the stream's 200 carries {n}: {:?}",
                o.headers
            );
        }
        // Served by this module, and no refusal logged.
        let log = h.error_log();
        assert!(
            log.lines()
                .any(|l| l.contains("[proxy_wstunnel:") && l.contains("serving URL")),
            "proxy_wstunnel did not serve the h2 stream:\n{log}"
        );
        assert!(!log.contains("WST016"), "a refusal was logged:\n{log}");
        wait_backend_released(&h, &b, "h2 without proxy_http");
    }
    assert_healthy(&h, &before, "h2 without proxy_http");
}

/// What the backend gets for an h2 stream: an ordinary HTTP/1.1 upgrade, with the
/// Sec-WebSocket-Key mod_http2 made up for the stream (whose Accept mod_http2 checks), the
/// client's Sec-WebSocket-Version and the :authority as Host; no Transfer-Encoding (mod_http2's
/// framing of the open stream, not a body).
#[test]
fn h2_websocket_backend_gets_http11_upgrade() {
    if !supported() || Httpd::flavor().wst_is_stock {
        return;
    }
    let pki = Pki::generate();
    let (b, h) = start(false, &pki);
    let o = websocket_over_h2(
        h.port_of("TLS_PORT"),
        &pki,
        "/ws/headers",
        &[b"x".to_vec()],
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("h2 WebSocket: {e}"));
    assert_eq!(o.status, 200, "{}", String::from_utf8_lossy(&o.body));
    let head = String::from_utf8_lossy(&o.messages[0]).to_ascii_lowercase();
    eprintln!("backend got:\n{head}");
    assert!(head.starts_with("get /headers http/1.1\r\n"), "{head}");
    let field = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    assert_eq!(field("upgrade").as_deref(), Some("websocket"), "{head}");
    assert_eq!(field("connection").as_deref(), Some("upgrade"), "{head}");
    assert_eq!(
        field("sec-websocket-version").as_deref(),
        Some("13"),
        "{head}"
    );
    assert_eq!(
        field("sec-websocket-key").map(|k| k.len()),
        Some(24),
        "mod_http2's key: {head}"
    );
    assert_eq!(
        field("host"),
        Some(format!("127.0.0.1:{}", b.port())),
        "{head}"
    );
    assert!(field("transfer-encoding").is_none(), "{head}");
    assert!(field("content-length").is_none(), "{head}");
    assert!(o.got_close && o.stream_ended, "{o:?}");
}

/// CPU time (user + system, clock ticks) that the processes `pids` used so far.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the command (which may hold spaces) in parentheses.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// An idle h2 tunnel sleeps: the stream's pipe is drained by the read that answers EAGAIN, so
/// poll() waits until the next byte (a spinning tunnel would burn the whole idle time in CPU).
#[test]
fn h2_websocket_idle_tunnel_does_not_spin() {
    if !supported() {
        return;
    }
    let pki = Pki::generate();
    let (_b, h) = start(false, &pki);
    let children = h.child_pids();
    let idle = Duration::from_secs(3);
    let t0 = cpu_ticks(&children);
    let o = websocket_over_h2_idle(
        h.port_of("TLS_PORT"),
        &pki,
        "/ws/echo",
        &messages(),
        idle,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("h2 WebSocket: {e}"));
    let used = cpu_ticks(&children) - t0;
    eprintln!("httpd's children used {used} ticks over a {idle:?} idle h2 tunnel");
    assert_echoed(&o, &messages(), "idle h2 tunnel");
    if !Httpd::flavor().wst_is_stock {
        // 100 ticks a second: a spinning tunnel uses about 300 here, a sleeping one a few.
        assert!(used < 60, "the idle h2 tunnel used {used} ticks of CPU");
    }
}

/// Four WebSocket streams at once on one h2 connection, each with its own messages (a 70 KB one
/// among them): every stream gets its own echoes back, closes, and every tunnel ends.
#[test]
fn h2_websocket_streams_at_once_without_proxy_http() {
    if !supported() {
        return;
    }
    let pki = Pki::generate();
    let (b, h) = start(false, &pki);
    let before = h.child_pids();
    let lists: Vec<_> = (0..4).map(stream_messages).collect();
    let got = websockets_over_h2(
        h.port_of("TLS_PORT"),
        &pki,
        "/ws/echo",
        &lists,
        H2WsEnd::Close,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("h2 WebSockets: {e}\n{}", h.error_log()));
    assert!(got.connect_protocol_enabled);
    assert_eq!(got.streams.len(), 4);
    for (i, (o, want)) in got.streams.iter().zip(lists.iter()).enumerate() {
        assert_echoed(o, want, &format!("stream {i}"));
        if !Httpd::flavor().wst_is_stock {
            assert!(o.got_close && o.stream_ended, "stream {i}: {o:?}");
        }
    }
    assert!(
        b.requests()
            .iter()
            .filter(|r| r.starts_with("GET /echo "))
            .count()
            >= 4,
        "backend requests: {:?}",
        b.requests()
    );
    if !Httpd::flavor().wst_is_stock {
        wait_backend_released(&h, &b, "4 streams at once");
    }
    assert_healthy(&h, &before, "4 streams at once");
}

/// Streams reset by the client in the middle of a frame (RST_STREAM while the tunnel runs):
/// every tunnel ends and releases its backend connection, and the h2 connection itself goes on
/// serving (a fresh WebSocket stream on it works).
#[test]
fn h2_websocket_stream_reset_mid_tunnel() {
    if !supported() {
        return;
    }
    let pki = Pki::generate();
    let (b, h) = start(false, &pki);
    let before = h.child_pids();
    let lists: Vec<_> = (0..3).map(stream_messages).collect();
    let got = websockets_over_h2(
        h.port_of("TLS_PORT"),
        &pki,
        "/ws/echo",
        &lists,
        H2WsEnd::Reset,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("h2 WebSockets: {e}\n{}", h.error_log()));
    for (i, (o, want)) in got.streams.iter().zip(lists.iter()).enumerate() {
        assert_echoed(o, want, &format!("stream {i} before its reset"));
    }
    let after = got.after.expect("a stream after the resets");
    assert_echoed(
        &after,
        &[b"after the reset".to_vec()],
        "stream after the resets",
    );
    if !Httpd::flavor().wst_is_stock {
        assert!(after.got_close && after.stream_ended, "{after:?}");
        wait_backend_released(&h, &b, "streams reset mid-tunnel");
        // Each tunnel ended (WST012 at debug), none logged as an error.
        let log = h.error_log();
        assert!(
            wst_e2e::wait_for(Duration::from_secs(5), || {
                (h.error_log().matches("WST012").count() >= 4).then_some(())
            })
            .is_some(),
            "not every tunnel logged its end:\n{log}"
        );
        assert!(
            !log.lines().any(|l| l.contains("[proxy_wstunnel:error]")),
            "{log}"
        );
    }
    assert_healthy(&h, &before, "streams reset mid-tunnel");
}

/// The client drops the whole h2 connection (no GOAWAY, no RST_STREAM) with three tunnels open:
/// every tunnel ends and releases its backend connection, and a new h2 connection's WebSocket
/// works.
#[test]
fn h2_websocket_connection_dropped_mid_tunnel() {
    if !supported() {
        return;
    }
    let pki = Pki::generate();
    let (b, h) = start(false, &pki);
    let before = h.child_pids();
    let lists: Vec<_> = (0..3).map(stream_messages).collect();
    let got = websockets_over_h2(
        h.port_of("TLS_PORT"),
        &pki,
        "/ws/echo",
        &lists,
        H2WsEnd::DropConnection,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("h2 WebSockets: {e}\n{}", h.error_log()));
    for (i, (o, want)) in got.streams.iter().zip(lists.iter()).enumerate() {
        assert_echoed(o, want, &format!("stream {i} before the drop"));
    }
    if !Httpd::flavor().wst_is_stock {
        wait_backend_released(&h, &b, "h2 connection dropped");
    }
    let o = run(&h, &pki);
    assert_echoed(&o, &messages(), "a new h2 connection afterwards");
    assert_healthy(&h, &before, "h2 connection dropped");
}

/// `apachectl -k stop` with h2 tunnels open: they end (mod_http2 resets their streams, or the
/// module notices the h2 connection's socket closing) and httpd stops promptly, no SIGKILL.
#[test]
fn h2_stop_with_open_tunnels_is_prompt() {
    if !supported() || Httpd::flavor().wst_is_stock {
        return;
    }
    let pki = Pki::generate();
    let (b, mut h) = start(false, &pki);
    let port = h.port_of("TLS_PORT");
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let pki = pki.clone();
            std::thread::spawn(move || {
                websocket_over_h2_idle(
                    port,
                    &pki,
                    "/ws/echo",
                    &[b"open".to_vec(), b"never answered".to_vec()],
                    Duration::from_secs(5),
                    Duration::from_secs(15),
                )
            })
        })
        .collect();
    let open = wst_e2e::wait_for(Duration::from_secs(10), || {
        let n = tcp_sockets_of(&h.child_pids())
            .into_iter()
            .filter(|(_, s)| s.remote_port == b.port())
            .count();
        (n == 3).then_some(())
    });
    assert!(open.is_some(), "3 tunnels did not open:\n{}", h.error_log());
    let report = h.stop();
    assert!(
        !report.killed,
        "SIGKILL needed to stop httpd with h2 tunnels"
    );
    assert!(
        report.elapsed < Duration::from_secs(5),
        "stopping took {:?}",
        report.elapsed
    );
    for c in clients {
        // The client sees its stream or connection end (an error), never a hang.
        let r = c.join().expect("client thread");
        assert!(
            r.as_ref().map_or(true, |o| o.messages.len() < 2),
            "the tunnel outlived httpd: {r:?}"
        );
    }
}

/// The backend refuses the upgrade (403) or answers with a 101 for another key: the stream
/// gets the 403 as an ordinary h2 response, the bad 101 a 502, and no tunnel is opened.
#[test]
fn h2_websocket_backend_refusals() {
    if !supported() || Httpd::flavor().wst_is_stock {
        return;
    }
    let pki = Pki::generate();
    let (_b, h) = start(false, &pki);
    let before = h.child_pids();
    for (path, want) in [("/ws/status/403", 403), ("/ws/bad-accept", 502)] {
        let o = websocket_over_h2(
            h.port_of("TLS_PORT"),
            &pki,
            path,
            &[b"never".to_vec()],
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            o.status,
            want,
            "{path}: {:?}",
            String::from_utf8_lossy(&o.body)
        );
        assert!(o.messages.is_empty(), "{path}: tunnelled");
    }
    assert!(
        !h.error_log().contains("WST012"),
        "a tunnel was opened:\n{}",
        h.error_log()
    );
    assert_healthy(&h, &before, "backend refusals over h2");
}

/// An h2 request with an Upgrade header that mod_http2 did not make (a plain GET whose Upgrade
/// and Connection a RequestHeader sets): not a WebSocket stream this module can serve, 501, and
/// logged at info (a configuration matter, not a server error).
#[test]
fn h2_forged_upgrade_is_refused_at_info() {
    if !supported() || Httpd::flavor().wst_is_stock {
        return;
    }
    let pki = Pki::generate();
    let (b, h) = start_vhost(false, &pki, VHOST_FORGED_UPGRADE);
    let (status, body) = h2_get(
        h.port_of("TLS_PORT"),
        &pki,
        "/ws/echo",
        &[],
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("h2 GET: {e}"));
    assert_eq!(status, 501, "{}", String::from_utf8_lossy(&body));
    let line = h
        .wait_error_line(Duration::from_secs(3), &["WST016"])
        .unwrap_or_else(|| panic!("no WST016 line:\n{}", h.error_log()));
    assert!(line.contains(":info]"), "WST016 not at info: {line}");
    assert!(
        b.requests().is_empty(),
        "backend contacted: {:?}",
        b.requests()
    );
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
