//! Limits on what goes through a tunnel (issue 15), through a real httpd, on both tunnel paths
//! (each test runs twice: handed to the child's reactor, the default, and threaded with
//! `ProxyWebsocketAsync Off`; the tunnel log's `%p` proves which path carried it):
//!
//! * `ProxyWebsocketMaxMessageSize`: an oversized message from the client gets Close 1009 to
//!   the client and 1001 to the backend, which never sees a byte of the oversized frame; from
//!   the backend, 1009 to the backend and 1001 to the client; a fragmented message crossing
//!   the limit is cut at the crossing fragment; a message of exactly the limit passes.
//! * `ProxyWebsocketMaxMessageRate`: the burst passes, then Close 1008 to the client and 1001
//!   to the backend; a client under the rate is unaffected.
//! * `ProxyWebsocketMaxLifetime`: Close 1001 to both sides within the last tenth of the
//!   lifetime, at spread moments for several tunnels.
//! * The figures: `wstunnel-*-largest-message` and `wstunnel-*-rtt(-max)-ms` notes (threaded)
//!   and the tunnel log's `%l %L %g %G %x %X` (both paths); the WST080-062 lines.
//!
//! The backend is a raw one of this file (`LimBackend`): it records every byte it receives
//! after its 101, echoes data frames, answers Pings and Closes, and on `/big/<n>,<n>...`
//! sends binary messages of those sizes first. Only meaningful for this module.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wst_e2e::client::check_101;
use wst_e2e::framebackend::close_code;
use wst_e2e::rawbackend::{is_timeout, read_request_head, response_101, Recorder};
use wst_e2e::ws::{
    self, client_frame, encode_frame, Frame, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG,
    OP_TEXT,
};
use wst_e2e::{need, Browser, Httpd, RawClient, Target, UpgradeRequest};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The backend

#[derive(Clone, Debug, Default)]
struct Conn {
    request: String,
    /// Every byte received after the request head.
    raw: Vec<u8>,
    /// "eof", "reset: ...", "stopped" once over.
    end: String,
}

impl Conn {
    /// The frames in `raw`, and how many bytes are left over (part of a frame).
    fn frames(&self) -> (Vec<Frame>, usize) {
        let mut buf = &self.raw[..];
        let mut out = Vec::new();
        while let Some((f, used)) = ws::decode_frame(buf) {
            out.push(f);
            buf = &buf[used..];
        }
        (out, buf.len())
    }
    fn data_frames(&self) -> Vec<Frame> {
        self.frames()
            .0
            .into_iter()
            .filter(|f| matches!(f.opcode, OP_TEXT | OP_BINARY | OP_CONT))
            .collect()
    }
    fn close_code(&self) -> Option<u16> {
        self.frames()
            .0
            .iter()
            .find(|f| f.opcode == OP_CLOSE)
            .and_then(|f| close_code(&f.payload))
    }
}

struct LimBackend {
    rec: Recorder<Conn>,
}

impl LimBackend {
    fn start() -> LimBackend {
        LimBackend {
            rec: Recorder::start(Duration::from_secs(120), |s, rec, stop| {
                let end = serve(s, &rec, &stop);
                rec.lock().unwrap().end = end;
            }),
        }
    }
    fn port(&self) -> u16 {
        self.rec.port()
    }
    /// The connection whose request line has `path`, once `pred` holds.
    fn wait(&self, path: &str, pred: impl Fn(&Conn) -> bool) -> Conn {
        let needle = format!("GET /{} ", path.trim_start_matches("/ws/"));
        wst_e2e::wait_for(WAIT, || {
            self.rec
                .all()
                .into_iter()
                .find(|c| c.request.contains(&needle) && pred(c))
        })
        .unwrap_or_else(|| {
            panic!(
                "backend: no connection for {path} as expected: {:?}",
                self.rec
                    .all()
                    .iter()
                    .map(|c| (
                        c.request.lines().next().unwrap_or("").to_string(),
                        c.frames(),
                        c.end.clone()
                    ))
                    .collect::<Vec<_>>()
            )
        })
    }
}

fn serve(mut s: TcpStream, rec: &Arc<Mutex<Conn>>, stop: &AtomicBool) -> String {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (head, mut buf) = match read_request_head(&mut s, stop, deadline) {
        Ok(got) => got,
        Err(e) => return format!("no head: {e:?}"),
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    rec.lock().unwrap().request = text.clone();
    rec.lock().unwrap().raw.extend_from_slice(&buf);
    if !text.to_ascii_lowercase().contains("upgrade: websocket") {
        return serve_raw(s, rec, stop, buf);
    }
    let mut out = response_101(&head);
    // /big/<n>,<n>...: binary messages of those sizes right after the 101
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    if let Some(list) = path.split("/big/").nth(1) {
        for n in list.split(',').filter_map(|n| n.parse::<usize>().ok()) {
            out.extend(encode_frame(true, OP_BINARY, &wst_e2e::payload(n, 3), None));
        }
    }
    if s.write_all(&out).is_err() {
        return "write-error".into();
    }
    let mut chunk = [0u8; 16 * 1024];
    let mut close_sent = false;
    loop {
        while let Some((f, used)) = ws::decode_frame(&buf) {
            buf.drain(..used);
            let reply = match f.opcode {
                OP_PING => Some(encode_frame(true, OP_PONG, &f.payload, None)),
                OP_TEXT | OP_BINARY | OP_CONT if !close_sent => {
                    Some(encode_frame(f.fin, f.opcode, &f.payload, None))
                }
                OP_CLOSE if !close_sent => {
                    close_sent = true;
                    Some(encode_frame(true, OP_CLOSE, &f.payload, None))
                }
                _ => None,
            };
            if let Some(r) = reply {
                let _ = s.write_all(&r);
            }
            if f.opcode == OP_CLOSE {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return "stopped".into();
        }
        match s.read(&mut chunk) {
            Ok(0) => return "eof".into(),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                rec.lock().unwrap().raw.extend_from_slice(&chunk[..n]);
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return format!("reset: {e}"),
        }
    }
}

/// Another protocol (`Upgrade: foo`): a 101 for it, then every byte echoed.
fn serve_raw(mut s: TcpStream, rec: &Arc<Mutex<Conn>>, stop: &AtomicBool, buf: Vec<u8>) -> String {
    let out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n";
    if s.write_all(out).is_err() || s.write_all(&buf).is_err() {
        return "write-error".into();
    }
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return "stopped".into();
        }
        match s.read(&mut chunk) {
            Ok(0) => return "eof".into(),
            Ok(n) => {
                rec.lock().unwrap().raw.extend_from_slice(&chunk[..n]);
                if s.write_all(&chunk[..n]).is_err() {
                    return "write-error".into();
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return format!("reset: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// httpd, clients, logs

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Async,
    Threaded,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Async => "async",
            Path::Threaded => "threaded",
        }
    }
}

const TLOG: &str = "%U|%p|%r|%c|%C|%l|%L|%g|%G|%x|%X|%m|%M|%D";
const NOTES: &str = "LogFormat \"%U|%{wstunnel-end}n|%{wstunnel-client-largest-message}n|\
%{wstunnel-backend-largest-message}n|%{wstunnel-client-rtt-ms}n|%{wstunnel-client-rtt-max-ms}n|\
%{wstunnel-backend-rtt-ms}n|%{wstunnel-backend-rtt-max-ms}n\" wstlim\n\
CustomLog \"{DIR}/logs/notes.log\" wstlim\n";

/// httpd with a tunnel log, the notes log, `/ws/` to `port`, and `extra` (directives).
fn httpd(path: Path, port: u16, extra: &str) -> Httpd {
    // The path is pinned (WST_ASYNC=off must not move the handed-over variants).
    Httpd::builder()
        .var("BACKEND_PORT", port)
        .async_tunnels(matches!(path, Path::Async))
        .config(NOTES)
        .config(&format!(
            "ProxyWebsocketTunnelLog \"{{DIR}}/logs/tunnels.log\" \"{TLOG}\"\n{extra}\
             ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/ retry=0\n"
        ))
        .start()
}

fn log_file(h: &Httpd, name: &str) -> Vec<String> {
    std::fs::read_to_string(h.dir().join("logs").join(name))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The first line of `logs/<file>` that starts with `<uri>|`, split at `|` (waits for it).
fn record(h: &Httpd, file: &str, uri: &str) -> Vec<String> {
    let line = wst_e2e::wait_for(WAIT, || {
        log_file(h, file)
            .into_iter()
            .find(|l| l.starts_with(&format!("{uri}|")))
    })
    .unwrap_or_else(|| panic!("no {file} line for {uri}: {:?}", log_file(h, file)));
    line.split('|').map(str::to_string).collect()
}

/// The tunnel log's record for `uri`, which `path` carried: uri, path, end, client close,
/// backend close, largest from client, largest from backend, rtt client last, backend last,
/// client max, backend max, messages from client, from backend, duration.
fn tlog(h: &Httpd, uri: &str, path: Path) -> Vec<String> {
    let f = record(h, "tunnels.log", uri);
    assert_eq!(f[1], path.name(), "the tunnel took the other path: {f:?}");
    f
}

/// The notes of a threaded tunnel: uri, end, client largest, backend largest, client rtt,
/// client rtt max, backend rtt, backend rtt max.
fn notes(h: &Httpd, uri: &str) -> Vec<String> {
    record(h, "notes.log", uri)
}

fn wait_error_line(h: &Httpd, needles: &[&str]) -> String {
    h.wait_error_line(WAIT, needles)
        .unwrap_or_else(|| panic!("no error log line with {needles:?}:\n{}", h.error_log()))
}

fn tunnel(t: &Target, path: &str) -> RawClient {
    let req = UpgradeRequest::new(path, &t.host, Browser::Chrome);
    let mut c = RawClient::connect(t).expect("connect");
    c.send(&req.to_bytes()).expect("send upgrade");
    let resp = c.read_head().expect("101");
    check_101(&req, &resp).expect("a valid 101");
    c
}

/// The next frame that is not one of the module's Pings (those are answered).
fn next_frame(c: &mut RawClient) -> Frame {
    loop {
        let f = c.read_frame().expect("a frame");
        if f.opcode == OP_PING {
            c.send(&client_frame(OP_PONG, &f.payload)).expect("pong");
            continue;
        }
        return f;
    }
}

fn expect_close(c: &mut RawClient, code: u16, what: &str) {
    let f = next_frame(c);
    assert_eq!(
        (f.opcode, close_code(&f.payload)),
        (OP_CLOSE, Some(code)),
        "{what}: expected Close {code}, got {f:?}"
    );
    // answer it, as a client does, and see the connection end
    let _ = c.send(&client_frame(OP_CLOSE, &f.payload));
    let (_, end) = c.read_until_close(WAIT);
    assert_ne!(
        end,
        wst_e2e::client::End::Timeout,
        "{what}: not closed after the Close"
    );
}

fn echo(c: &mut RawClient, op: u8, payload: &[u8]) {
    c.send(&client_frame(op, payload)).expect("send");
    let f = next_frame(c);
    assert_eq!(
        (f.opcode, f.payload.len()),
        (op, payload.len()),
        "echo of {} bytes",
        payload.len()
    );
    assert!(f.payload == payload, "echo differs");
}

macro_rules! both_paths {
    ($name:ident) => {
        mod $name {
            #[test]
            fn handed_over() {
                super::$name(super::Path::Async);
            }
            #[test]
            fn threaded() {
                super::$name(super::Path::Threaded);
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// ProxyWebsocketMaxMessageSize

/// In a <Location>: 1000 bytes (exactly the limit) pass; 1001 from the client: Close 1009 to
/// it, 1001 to the backend, which got no byte of that frame; the figures and WST080.
fn size_from_client(path: Path) {
    if !need::ours() {
        return;
    }
    let b = LimBackend::start();
    let h = httpd(
        path,
        b.port(),
        "<Location /ws/>\n    ProxyWebsocketMaxMessageSize 1000\n</Location>\n",
    );
    let t = h.target();
    let mut c = tunnel(&t, "/ws/sizec");
    echo(&mut c, OP_BINARY, &wst_e2e::binary_payload(1000, 1));
    echo(&mut c, OP_TEXT, &wst_e2e::payload(10, 2));
    c.send(&client_frame(OP_BINARY, &wst_e2e::binary_payload(1001, 3)))
        .expect("send");
    expect_close(&mut c, 1009, "client after its 1001-byte message");

    let conn = b.wait("/ws/sizec", |c| {
        c.close_code().is_some() && !c.end.is_empty()
    });
    let (frames, left) = conn.frames();
    assert_eq!(left, 0, "the backend got part of a frame: {frames:?}");
    let sizes: Vec<usize> = conn.data_frames().iter().map(|f| f.payload.len()).collect();
    assert_eq!(sizes, vec![1000, 10], "backend's data frames");
    assert_eq!(conn.close_code(), Some(1001), "backend's Close");

    let f = tlog(&h, "/ws/sizec", path);
    assert_eq!(f[2], "message-too-big", "{f:?}");
    assert_eq!(
        (f[5].as_str(), f[6].as_str()),
        ("1001", "1000"),
        "largest messages {f:?}"
    );
    assert_eq!(f[7], "-", "no ping: no rtt {f:?}");
    wait_error_line(
        &h,
        &[
            "WST080",
            "/ws/sizec",
            "1001 bytes from the client",
            "ProxyWebsocketMaxMessageSize 1000",
            "1009",
        ],
    );
    if path == Path::Threaded {
        let n = notes(&h, "/ws/sizec");
        assert_eq!(
            &n[1..4],
            &["message-too-big", "1001", "1000"],
            "notes {n:?}"
        );
        assert_eq!(&n[4..8], &["-", "-", "-", "-"], "notes {n:?}");
    }
}
both_paths!(size_from_client);

/// Server context, with a K suffix: the backend's 1024-byte message passes, its 1025-byte one
/// ends the tunnel: Close 1009 to the backend, 1001 to the client, which gets none of it.
fn size_from_backend(path: Path) {
    if !need::ours() {
        return;
    }
    let b = LimBackend::start();
    let h = httpd(
        path,
        b.port(),
        "ProxyWebsocketMaxMessageSize 1K\n\
         <Location /ws/off/>\n    ProxyWebsocketMaxMessageSize 0\n</Location>\n",
    );
    let t = h.target();
    // A <Location> that says 0 turns the server's limit off there
    let mut c = tunnel(&t, "/ws/off/big/5000");
    let f = next_frame(&mut c);
    assert_eq!((f.opcode, f.payload.len()), (OP_BINARY, 5000), "limit off");
    echo(&mut c, OP_BINARY, &wst_e2e::binary_payload(4000, 9));
    c.send(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .expect("close");
    assert_eq!(close_code(&next_frame(&mut c).payload), Some(1000));

    let mut c = tunnel(&t, "/ws/big/1024,1025");
    let f = next_frame(&mut c);
    assert_eq!(
        (f.opcode, f.payload.len()),
        (OP_BINARY, 1024),
        "first message"
    );
    let f = next_frame(&mut c);
    assert_eq!(
        (f.opcode, close_code(&f.payload)),
        (OP_CLOSE, Some(1001)),
        "the client's next frame must be Close 1001, nothing of the 1025 bytes: {f:?}"
    );
    let _ = c.send(&client_frame(OP_CLOSE, &f.payload));
    let (rest, _) = c.read_until_close(WAIT);
    assert!(rest.is_empty(), "bytes after the Close: {}", rest.len());
    let conn = b.wait("/ws/big/1024,1025", |c| c.close_code().is_some());
    assert_eq!(conn.close_code(), Some(1009), "backend's Close");
    assert!(conn.data_frames().is_empty(), "the client sent nothing");

    let f = tlog(&h, "/ws/big/1024,1025", path);
    assert_eq!(f[2], "message-too-big", "{f:?}");
    assert_eq!(
        (f[5].as_str(), f[6].as_str()),
        ("-", "1025"),
        "largest messages {f:?}"
    );
    wait_error_line(
        &h,
        &[
            "WST080",
            "1025 bytes from the backend",
            "ProxyWebsocketMaxMessageSize 1024",
        ],
    );
}
both_paths!(size_from_backend);

/// Fragments: 500 + 500 (exactly the limit) pass; 400 + 400 + 400 is cut at the third
/// fragment's header: the backend has the first two, none of the third.
fn size_fragmented(path: Path) {
    if !need::ours() {
        return;
    }
    let b = LimBackend::start();
    let h = httpd(path, b.port(), "ProxyWebsocketMaxMessageSize 1000\n");
    let t = h.target();
    let mut c = tunnel(&t, "/ws/frag");
    let p = wst_e2e::payload(500, 4);
    c.send(
        &[
            ws::encode_frame(false, OP_TEXT, &p, Some([1, 2, 3, 4])),
            ws::encode_frame(true, OP_CONT, &p, Some([5, 6, 7, 8])),
        ]
        .concat(),
    )
    .expect("send");
    for op in [OP_TEXT, OP_CONT] {
        let f = next_frame(&mut c);
        assert_eq!((f.opcode, f.payload.len()), (op, 500), "echoed fragment");
    }
    let q = wst_e2e::payload(400, 5);
    c.send(&ws::encode_frame(false, OP_BINARY, &q, Some([1, 1, 1, 1])))
        .expect("send");
    c.send(&ws::encode_frame(false, OP_CONT, &q, Some([2, 2, 2, 2])))
        .expect("send");
    for op in [OP_BINARY, OP_CONT] {
        let f = next_frame(&mut c);
        assert_eq!((f.opcode, f.payload.len()), (op, 400), "echoed fragment");
    }
    c.send(&ws::encode_frame(true, OP_CONT, &q, Some([3, 3, 3, 3])))
        .expect("send");
    expect_close(&mut c, 1009, "client after the crossing fragment");
    let conn = b.wait("/ws/frag", |c| c.close_code().is_some());
    let (frames, left) = conn.frames();
    assert_eq!(left, 0, "part of a frame reached the backend");
    let sizes: Vec<usize> = conn.data_frames().iter().map(|f| f.payload.len()).collect();
    assert_eq!(
        sizes,
        vec![500, 500, 400, 400],
        "backend's fragments {frames:?}"
    );
    assert_eq!(conn.close_code(), Some(1001));
    let f = tlog(&h, "/ws/frag", path);
    assert_eq!(f[2], "message-too-big", "{f:?}");
}
both_paths!(size_fragmented);

// ---------------------------------------------------------------------------------------
// ProxyWebsocketMaxMessageRate

/// Rate 20/s, burst 3: a burst of 3 passes, then more at once gets Close 1008 (the backend
/// 1001); another client at 8 messages/s for 1.2 s is unaffected.
fn rate(path: Path) {
    if !need::ours() {
        return;
    }
    let b = LimBackend::start();
    let h = httpd(path, b.port(), "ProxyWebsocketMaxMessageRate 20 3\n");
    let t = h.target();

    let slow = std::thread::spawn({
        let t = t.clone();
        move || {
            let mut c = tunnel(&t, "/ws/slow");
            for i in 0..10u8 {
                echo(&mut c, OP_TEXT, &wst_e2e::payload(20, i));
                std::thread::sleep(Duration::from_millis(125));
            }
            c.send(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
                .expect("close");
            let f = next_frame(&mut c);
            assert_eq!(
                close_code(&f.payload),
                Some(1000),
                "slow client: its own Close back"
            );
        }
    });

    let mut c = tunnel(&t, "/ws/fast");
    let burst: Vec<u8> = (0..3u8)
        .flat_map(|i| client_frame(OP_TEXT, &wst_e2e::payload(10, i)))
        .collect();
    c.send(&burst).expect("burst");
    for _ in 0..3 {
        let f = next_frame(&mut c);
        assert_eq!(f.opcode, OP_TEXT, "the burst is echoed");
    }
    let more: Vec<u8> = (0..6u8)
        .flat_map(|i| client_frame(OP_TEXT, &wst_e2e::payload(10, i)))
        .collect();
    let _ = c.send(&more);
    // echoes of what got through before the cut, then the Close
    let mut echoed = 0;
    let f = loop {
        let f = next_frame(&mut c);
        if f.opcode != OP_TEXT {
            break f;
        }
        echoed += 1;
    };
    assert_eq!(
        (f.opcode, close_code(&f.payload)),
        (OP_CLOSE, Some(1008)),
        "{f:?}"
    );
    assert!(echoed <= 1, "{echoed} messages over the burst went through");
    let _ = c.send(&client_frame(OP_CLOSE, &f.payload));
    let conn = b.wait("/ws/fast", |c| c.close_code().is_some());
    assert_eq!(conn.close_code(), Some(1001), "backend's Close");
    let n = conn.data_frames().len();
    // The core cuts after the message that found the bucket empty: that one still reaches
    // the backend (4 here); in front of it would be 3.
    assert!((3..=4).contains(&n), "backend got {n} messages");

    slow.join().expect("the client under the rate");
    let f = tlog(&h, "/ws/fast", path);
    assert_eq!(f[2], "rate-limited", "{f:?}");
    let f = tlog(&h, "/ws/slow", path);
    assert_eq!((f[2].as_str(), f[11].as_str()), ("closed", "10"), "{f:?}");
    wait_error_line(
        &h,
        &[
            "WST081",
            "/ws/fast",
            "ProxyWebsocketMaxMessageRate 20",
            "burst 3",
            "1008",
        ],
    );
}
both_paths!(rate);

// ---------------------------------------------------------------------------------------
// ProxyWebsocketMaxLifetime

/// 2 s: five tunnels each get Close 1001 (client and backend) between 1.8 s and 2 s (plus
/// slack), not all at the same moment.
fn lifetime(path: Path) {
    if !need::ours() {
        return;
    }
    let b = LimBackend::start();
    let h = httpd(path, b.port(), "ProxyWebsocketMaxLifetime 2\n");
    let t = h.target();
    let threads: Vec<_> = (0..5)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                let mut c = tunnel(&t, &format!("/ws/life{i}"));
                let start = Instant::now();
                echo(&mut c, OP_TEXT, b"hello");
                let f = next_frame(&mut c);
                let at = start.elapsed();
                assert_eq!(
                    (f.opcode, close_code(&f.payload)),
                    (OP_CLOSE, Some(1001)),
                    "{f:?}"
                );
                let _ = c.send(&client_frame(OP_CLOSE, &f.payload));
                at
            })
        })
        .collect();
    let ends: Vec<Duration> = threads
        .into_iter()
        .map(|t| t.join().expect("tunnel"))
        .collect();
    for at in &ends {
        assert!(
            *at >= Duration::from_millis(1750) && *at <= Duration::from_millis(2400),
            "a tunnel ended at {at:?}, outside [1.8 s, 2 s] (+ slack): {ends:?}"
        );
    }
    eprintln!("lifetime {}: tunnels ended at {ends:?}", path.name());
    let min = ends.iter().min().unwrap();
    let max = ends.iter().max().unwrap();
    assert!(
        *max - *min >= Duration::from_millis(15),
        "not spread: {ends:?}"
    );
    for i in 0..5 {
        let conn = b.wait(&format!("/ws/life{i}"), |c| c.close_code().is_some());
        assert_eq!(conn.close_code(), Some(1001), "backend {i}");
        let f = tlog(&h, &format!("/ws/life{i}"), path);
        assert_eq!(f[2], "lifetime", "{f:?}");
    }
    wait_error_line(
        &h,
        &["WST082", "/ws/life", "ProxyWebsocketMaxLifetime 2000 ms"],
    );
}
both_paths!(lifetime);

/// Not only WebSocket tunnels: an `Upgrade: foo` tunnel (`upgrade=foo`, httpd 2.4.26+) with
/// ProxyWebsocketMaxLifetime 1 is closed between 0.9 s and 1 s (plus slack).
fn lifetime_other_protocol(path: Path) {
    if !need::ours() {
        return;
    }
    if !Httpd::flavor().is_24() {
        eprintln!("SKIP: upgrade= needs httpd 2.4");
        return;
    }
    let b = LimBackend::start();
    let h = httpd(
        path,
        b.port(),
        "ProxyWebsocketMaxLifetime 1\n\
         ProxyPass /raw/ ws://127.0.0.1:{BACKEND_PORT}/ upgrade=foo\n",
    );
    let t = h.target();
    let mut c = RawClient::connect(&t).expect("connect");
    c.send(
        format!(
            "GET /raw/x HTTP/1.1\r\nHost: {}\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n",
            t.host
        )
        .as_bytes(),
    )
    .expect("send");
    let resp = c.read_head().expect("head");
    assert_eq!(resp.status, 101, "{resp:?}");
    let start = Instant::now();
    c.send(b"hello").expect("send");
    assert_eq!(c.read_exact_bytes(5).expect("echo"), b"hello");
    let (rest, end) = c.read_until_close(Duration::from_secs(5));
    let at = start.elapsed();
    assert!(rest.is_empty(), "unexpected bytes {rest:?}");
    assert_ne!(end, wst_e2e::client::End::Timeout, "not closed");
    assert!(
        at >= Duration::from_millis(850) && at <= Duration::from_millis(1400),
        "closed at {at:?}, outside [0.9 s, 1 s] (+ slack)"
    );
    let f = tlog(&h, "/raw/x", path);
    assert_eq!(f[2], "lifetime", "{f:?}");
    wait_error_line(
        &h,
        &[
            "WST082",
            "/raw/x",
            "ProxyWebsocketMaxLifetime 1000 ms: closed",
        ],
    );
}
both_paths!(lifetime_other_protocol);

// ---------------------------------------------------------------------------------------
// Figures: largest message, ping round trips

/// ProxyWebsocketPing 300ms: after a silence both sides were pinged and answered; the tunnel
/// log (and threaded, the notes) give the largest message each way and the round trips.
fn figures(path: Path) {
    if !need::ours() {
        return;
    }
    let b = LimBackend::start();
    let h = httpd(path, b.port(), "ProxyWebsocketPing 300ms\n");
    let t = h.target();
    let mut c = tunnel(&t, "/ws/big/3000");
    let f = next_frame(&mut c);
    assert_eq!(f.payload.len(), 3000);
    echo(&mut c, OP_TEXT, &wst_e2e::payload(700, 1));
    echo(&mut c, OP_TEXT, &wst_e2e::payload(30, 2));
    // silence: pings come, answered by next_frame's loop and by the backend
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1100) {
        let (got, _) = c.read_for(Duration::from_millis(100));
        let mut buf = &got[..];
        while let Some((f, used)) = ws::decode_frame(buf) {
            buf = &buf[used..];
            assert_eq!(f.opcode, OP_PING, "only pings in the silence: {f:?}");
            pings += 1;
            c.send(&client_frame(OP_PONG, &f.payload)).expect("pong");
        }
    }
    assert!(pings >= 1, "no ping in 1.1 s");
    c.send(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .expect("close");
    let f = next_frame(&mut c);
    assert_eq!(close_code(&f.payload), Some(1000));

    let f = tlog(&h, "/ws/big/3000", path);
    assert_eq!(f[2], "closed", "{f:?}");
    assert_eq!(
        (f[5].as_str(), f[6].as_str()),
        ("700", "3000"),
        "largest {f:?}"
    );
    for (last, max) in [(7, 9), (8, 10)] {
        let l: i64 = f[last]
            .parse()
            .unwrap_or_else(|_| panic!("rtt not a number: {f:?}"));
        let m: i64 = f[max]
            .parse()
            .unwrap_or_else(|_| panic!("rtt max not a number: {f:?}"));
        assert!(l >= 0 && m >= l && m < 1000, "rtt last {l} max {m}: {f:?}");
    }
    if path == Path::Threaded {
        let n = notes(&h, "/ws/big/3000");
        assert_eq!(&n[1..4], &["closed", "700", "3000"], "notes {n:?}");
        assert_eq!(
            (n[4].as_str(), n[5].as_str(), n[6].as_str(), n[7].as_str()),
            (f[7].as_str(), f[9].as_str(), f[8].as_str(), f[10].as_str()),
            "notes agree with the tunnel log: {n:?} {f:?}"
        );
    }
}
both_paths!(figures);

// ---------------------------------------------------------------------------------------
// Configuration errors

/// Bad values stop httpd at start-up with a message naming the directive.
#[test]
fn bad_values_are_refused() {
    if !need::ours() {
        return;
    }
    for (line, needle) in [
        (
            "ProxyWebsocketMaxMessageSize 10X",
            "ProxyWebsocketMaxMessageSize takes a size",
        ),
        (
            "ProxyWebsocketMaxMessageSize -1",
            "ProxyWebsocketMaxMessageSize takes a size",
        ),
        ("ProxyWebsocketMaxMessageSize 2000G", "at most 1024G"),
        (
            "ProxyWebsocketMaxMessageRate fast",
            "ProxyWebsocketMaxMessageRate takes",
        ),
        ("ProxyWebsocketMaxMessageRate 10 0", "burst"),
        ("ProxyWebsocketMaxMessageRate 0 5", "burst"),
        (
            "ProxyWebsocketMaxLifetime 5sec",
            "ProxyWebsocketMaxLifetime takes a time",
        ),
    ] {
        match start_result(&format!("{line}\n")) {
            Ok(_h) => panic!("httpd accepted {line}"),
            Err(msg) => assert!(
                msg.contains(needle),
                "{line}: the failure does not say {needle:?}:\n{msg}"
            ),
        }
    }
    // Every value here loads, in server, virtual host, <Location> and <Proxy> contexts.
    let good = [
        "ProxyWebsocketMaxMessageSize 0",
        "ProxyWebsocketMaxMessageSize 64k",
        "ProxyWebsocketMaxMessageSize 1G",
        "ProxyWebsocketMaxMessageRate 0",
        "ProxyWebsocketMaxMessageRate 100",
        "ProxyWebsocketMaxMessageRate 100 500",
        "ProxyWebsocketMaxLifetime 0",
        "ProxyWebsocketMaxLifetime 30mi",
    ];
    let mut conf = String::from("ProxyWebsocketMaxMessageSize 1M\nProxyWebsocketMaxLifetime 1h\n");
    conf += "<VirtualHost 127.0.0.1:{PORT}>\n    ProxyWebsocketMaxMessageRate 50\n</VirtualHost>\n";
    conf += "<Proxy \"ws://127.0.0.1:1/\">\n    ProxyWebsocketMaxMessageSize 2K\n</Proxy>\n";
    for (i, ok) in good.iter().enumerate() {
        conf += &format!("<Location /x{i}/>\n    {ok}\n</Location>\n");
    }
    if let Err(msg) = start_result(&conf) {
        panic!("valid values refused:\n{conf}\n{msg}");
    }
}

/// Start an httpd with `snippet`; Err(the failure text) if it does not start.
fn start_result(snippet: &str) -> Result<Httpd, String> {
    let snippet = snippet.to_string();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        Httpd::builder().config(&snippet).start()
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}
