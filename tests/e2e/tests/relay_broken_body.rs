//! A non-101 answer to the upgrade whose body is broken: bad chunked syntax, a chunk size
//! beyond 64 bits, a chunked body cut short, fewer bytes than Content-Length before the
//! backend closes. While nothing has reached the client (the module holds the start of the
//! body, up to 16 KiB and 250 ms) the client gets a 502 and the error log says what was wrong;
//! once bytes have gone, the response is cut short as mod_proxy_http cuts it (no last chunk,
//! or fewer bytes than Content-Length, then the connection closes), so the client can tell.
//! Never a hang, never a closed connection without a status line. Good bodies, fast or slow,
//! whole or in pieces, are relayed whole.
//!
//! The backend is a hand-rolled TCP server that answers the upgrade with a script.
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wst_e2e::client::End;
use wst_e2e::{need, Browser, Httpd, RawClient, Response, UpgradeRequest};

/// One step of a scripted answer.
#[derive(Clone)]
enum Step {
    Write(Vec<u8>),
    Sleep(u64),
}

fn w(b: impl AsRef<[u8]>) -> Step {
    Step::Write(b.as_ref().to_vec())
}

/// Answers every connection with `script` after reading the request head, then closes (after
/// `linger_ms`, the connection left open and silent); over TLS with `tls`.
struct ScriptBackend {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ScriptBackend {
    fn start(script: Vec<Step>, linger_ms: u64) -> ScriptBackend {
        Self::start_with(script, linger_ms, None)
    }

    fn start_with(
        script: Vec<Step>,
        linger_ms: u64,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> ScriptBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let heads2 = heads.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                let (script, heads, tls) = (script.clone(), heads2.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        None => serve(s, &script, linger_ms, &heads),
                        Some(cfg) => {
                            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                return;
                            };
                            let mut tls = rustls::StreamOwned::new(conn, s);
                            serve(&mut tls, &script, linger_ms, &heads);
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                        }
                    }
                });
            }
        });
        ScriptBackend { port, heads }
    }
}

fn serve<S: Read + Write>(mut s: S, script: &[Step], linger_ms: u64, heads: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while wst_e2e::ws::head_end(&buf).is_none() {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    heads
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&buf).into_owned());
    for step in script {
        match step {
            Step::Write(b) => {
                if s.write_all(b).and_then(|_| s.flush()).is_err() {
                    return;
                }
            }
            Step::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
        }
    }
    std::thread::sleep(Duration::from_millis(linger_ms));
}

fn start(script: Vec<Step>, linger_ms: u64) -> (ScriptBackend, Httpd) {
    let b = ScriptBackend::start(script, linger_ms);
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port)
        .config("ProxyTimeout 5\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    (b, h)
}

const HEAD_CHUNKED: &str =
    "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Backend: script\r\nTransfer-Encoding: chunked\r\n\r\n";

fn head_length(n: usize) -> String {
    format!("HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Backend: script\r\nContent-Length: {n}\r\n\r\n")
}

/// Send an upgrade, read the whole answer within 10 s.
fn upgrade(h: &Httpd) -> (RawClient, Response) {
    let t = h.target();
    let req = UpgradeRequest::new("/ws/refused", &t.host, Browser::Chrome);
    let started = Instant::now();
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let r = c
        .read_head()
        .unwrap_or_else(|e| panic!("no status line: {e}\n{}", h.error_log()));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    (c, r)
}

/// The answer is a 502 of httpd's own (none of the backend's fields), the connection then
/// closes, and the error log has one line with every one of `needles`.
fn expect_502(script: Vec<Step>, linger_ms: u64, needles: &[&str]) {
    if !need::ours() {
        return;
    }
    let (b, h) = start(script, linger_ms);
    let (mut c, mut r) = upgrade(&h);
    assert_eq!(r.status, 502, "{}\n{}", r.head, h.error_log());
    assert!(
        r.header("X-Backend").is_none(),
        "backend's field in the 502:\n{}",
        r.head
    );
    c.read_body(&mut r, false).unwrap();
    assert!(
        r.body_str().contains("Bad Gateway") || r.body_str().contains("Proxy Error"),
        "{}",
        r.body_str()
    );
    let (rest, end) = c.read_until_close(Duration::from_secs(5));
    assert!(
        rest.is_empty(),
        "bytes after the 502: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_ne!(end, End::Timeout, "connection left open after the 502");
    let line = h
        .wait_error_line(Duration::from_secs(5), needles)
        .unwrap_or_else(|| panic!("no log line with {needles:?}:\n{}", h.error_log()));
    assert!(line.contains("error"), "{line}");
    assert!(
        !h.error_log()
            .contains("while trying to use an ErrorDocument"),
        "{}",
        h.error_log()
    );
    let logged = wst_e2e::wait_for(Duration::from_secs(5), || {
        h.access_lines()
            .iter()
            .any(|l| l.status == 502)
            .then_some(())
    });
    assert!(logged.is_some(), "{}", h.access_log());
    assert_eq!(b.heads.lock().unwrap().len(), 1);
}

#[test]
fn bad_chunk_syntax_is_502() {
    for linger in [0, 3000] {
        expect_502(
            vec![w(HEAD_CHUNKED), w("zz\r\nhello\r\n0\r\n\r\n")],
            linger,
            &["WST002", "403", "malformed chunked", "answering 502"],
        );
    }
    // Bad framing after a good chunk (no CRLF after its data).
    expect_502(
        vec![w(HEAD_CHUNKED), w("5\r\nhelloXX\r\n0\r\n\r\n")],
        3000,
        &["WST002", "malformed chunked", "answering 502"],
    );
}

#[test]
fn bad_chunk_syntax_in_a_later_write_is_502() {
    expect_502(
        vec![
            w(HEAD_CHUNKED),
            Step::Sleep(60),
            w("5\r\nhello\r\n"),
            Step::Sleep(60),
            w("5;\x01\r\nworld\r\n0\r\n\r\n"),
        ],
        3000,
        &["WST002", "malformed chunked", "answering 502"],
    );
}

#[test]
fn overflowing_chunk_size_is_502() {
    expect_502(
        vec![
            w(HEAD_CHUNKED),
            w("10000000000000000\r\nhello\r\n0\r\n\r\n"),
        ],
        3000,
        &["WST002", "malformed chunked", "answering 502"],
    );
    expect_502(
        vec![w(HEAD_CHUNKED), w("4\r\nWiki\r\nfffffffffffffffff\r\n")],
        3000,
        &["WST002", "malformed chunked", "answering 502"],
    );
}

#[test]
fn chunked_body_cut_short_is_502() {
    // In the middle of a chunk's data.
    expect_502(
        vec![w(HEAD_CHUNKED), w("a\r\nhello")],
        0,
        &["WST003", "before the last chunk", "answering 502"],
    );
    // After whole chunks, without the last one.
    expect_502(
        vec![w(HEAD_CHUNKED), w("5\r\nhello\r\n")],
        0,
        &["WST003", "before the last chunk", "answering 502"],
    );
    // Nothing of the body at all.
    expect_502(
        vec![w(HEAD_CHUNKED)],
        0,
        &["WST003", "before the last chunk", "answering 502"],
    );
}

#[test]
fn content_length_longer_than_the_body_is_502() {
    expect_502(
        vec![w(head_length(100)), w("only ten b")],
        0,
        &["WST003", "after 10 of the 100 bytes", "answering 502"],
    );
    expect_502(
        vec![w(head_length(100)), Step::Sleep(50), w("only ten b")],
        0,
        &["WST003", "after 10 of the 100 bytes", "answering 502"],
    );
    expect_502(
        vec![w(head_length(5))],
        0,
        &["WST003", "after 0 of the 5 bytes", "answering 502"],
    );
}

/// Decode a chunked body: (data, whether the last chunk came).
fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|x| x == b"\r\n") else {
            return (data, false);
        };
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap().trim(), 16).ok());
        let Some(size) = size else {
            return (data, false);
        };
        b = &b[eol + 2..];
        if size == 0 {
            return (data, b.starts_with(b"\r\n"));
        }
        if b.len() < size + 2 {
            data.extend_from_slice(&b[..b.len().min(size)]);
            return (data, false);
        }
        data.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Broken after the first 16 KiB were relayed: the client has the backend's status line and
/// what came, then the connection closes without the body's end.
fn expect_cut_short(script: Vec<Step>, chunked: bool, sent: &[u8], needles: &[&str]) {
    if !need::ours() {
        return;
    }
    let (_b, h) = start(script, 3000);
    let (mut c, r) = upgrade(&h);
    assert_eq!(r.status, 403, "{}", r.head);
    assert_eq!(r.header("X-Backend"), Some("script"), "{}", r.head);
    let (body, end) = c.read_until_close(Duration::from_secs(8));
    assert_ne!(
        end,
        End::Timeout,
        "the connection stayed open after a broken body"
    );
    if chunked {
        assert!(
            r.header_has_token("Transfer-Encoding", "chunked"),
            "{}",
            r.head
        );
        let (data, complete) = dechunk(&body);
        assert!(!complete, "a broken body ended with a last chunk");
        assert!(data.len() >= 16 * 1024, "only {} bytes relayed", data.len());
        assert!(
            sent.starts_with(&data),
            "relayed bytes differ from the backend's"
        );
    } else {
        let cl: usize = r.header("Content-Length").unwrap().trim().parse().unwrap();
        assert!(body.len() < cl, "{} of {cl}", body.len());
        assert!(body.len() >= 16 * 1024, "only {} bytes relayed", body.len());
        assert!(
            sent.starts_with(&body),
            "relayed bytes differ from the backend's"
        );
    }
    // The client cannot take it for a whole response.
    let mut again = RawClient::connect(&h.target()).unwrap();
    let req = UpgradeRequest::new("/ws/refused", &h.target().host, Browser::Firefox);
    again.send(&req.to_bytes()).unwrap();
    assert!(
        again.read_response().is_err(),
        "a truncated body read as a complete response"
    );
    h.wait_error_line(Duration::from_secs(5), needles)
        .unwrap_or_else(|| panic!("no log line with {needles:?}:\n{}", h.error_log()));
}

#[test]
fn garbage_after_a_large_first_chunk_cuts_the_response_short() {
    let data = wst_e2e::payload(64 * 1024, 5);
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(b"\r\n");
    expect_cut_short(
        vec![
            w(HEAD_CHUNKED),
            w(&chunk),
            Step::Sleep(100),
            w("garbage\r\n"),
        ],
        true,
        &data,
        &["WST002", "malformed chunked", "cut short"],
    );
}

#[test]
fn large_chunked_body_cut_short_is_recognisable() {
    let data = wst_e2e::payload(64 * 1024, 6);
    let mut chunk = format!("{:x}\r\n", 200_000).into_bytes();
    chunk.extend_from_slice(&data);
    expect_cut_short(
        vec![w(HEAD_CHUNKED), w(&chunk)],
        true,
        &data,
        &["WST003", "before the last chunk", "cut short"],
    );
}

#[test]
fn large_content_length_body_cut_short_is_recognisable() {
    let data = wst_e2e::payload(64 * 1024, 7);
    expect_cut_short(
        vec![w(head_length(200_000)), w(&data)],
        false,
        &data,
        &["WST003", "after 65536 of the 200000 bytes", "cut short"],
    );
}

/// Good bodies are relayed whole: at once, in pieces, large, slow; and a body that pauses is
/// not held back for long (its head comes within the hold's 250 ms, not after the body).
#[test]
fn good_bodies_relayed_whole() {
    if !need::ours() {
        return;
    }
    let big = wst_e2e::payload(100_000, 9);
    let mut big_chunked = Vec::new();
    for part in big.chunks(7000) {
        big_chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        big_chunked.extend_from_slice(part);
        big_chunked.extend_from_slice(b"\r\n");
    }
    big_chunked.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    let cases: Vec<(&str, Vec<Step>, Vec<u8>)> = vec![
        (
            "chunked at once",
            vec![w(HEAD_CHUNKED), w("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")],
            b"hello world".to_vec(),
        ),
        (
            "chunked in pieces",
            vec![
                w(HEAD_CHUNKED),
                w("5\r\nhe"),
                Step::Sleep(30),
                w("llo\r\n6\r"),
                Step::Sleep(30),
                w("\n world\r\n0\r\n"),
                Step::Sleep(30),
                w("\r\n"),
            ],
            b"hello world".to_vec(),
        ),
        (
            "chunked, large",
            vec![w(HEAD_CHUNKED), w(&big_chunked)],
            big.clone(),
        ),
        (
            "length, in pieces",
            vec![w(head_length(11)), w("hello"), Step::Sleep(50), w(" world")],
            b"hello world".to_vec(),
        ),
        (
            "length, large",
            vec![w(head_length(big.len())), w(&big)],
            big.clone(),
        ),
        (
            "close-delimited",
            vec![w(
                "HTTP/1.1 403 Forbidden\r\nX-Backend: script\r\n\r\nuntil the end",
            )],
            b"until the end".to_vec(),
        ),
    ];
    for (what, script, want) in cases {
        let (_b, h) = start(script, 0);
        let (mut c, mut r) = upgrade(&h);
        assert_eq!(r.status, 403, "{what}: {}\n{}", r.head, h.error_log());
        assert_eq!(r.header("X-Backend"), Some("script"), "{what}");
        c.read_body(&mut r, false)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", h.error_log()));
        assert!(
            r.body == want,
            "{what}: body differs ({} bytes)",
            r.body.len()
        );
        assert!(
            !h.error_log().contains("broken body"),
            "{what}: {}",
            h.error_log()
        );
    }

    // A body that pauses: each part reaches the client before the next is sent (the hold
    // ends when the backend pauses, later parts are flushed when it pauses again).
    let (_b, h) = start(
        vec![
            w(HEAD_CHUNKED),
            w("5\r\nhello\r\n"),
            Step::Sleep(1000),
            w("6\r\n world\r\n"),
            Step::Sleep(1000),
            w("0\r\n\r\n"),
        ],
        0,
    );
    let started = Instant::now();
    let (mut c, r) = upgrade(&h);
    assert_eq!(r.status, 403, "{}", r.head);
    assert!(
        r.header_has_token("Transfer-Encoding", "chunked"),
        "{}",
        r.head
    );
    let first = c.read_exact_bytes(10).unwrap();
    let t1 = started.elapsed();
    assert_eq!(first, b"5\r\nhello\r\n");
    let second = c.read_exact_bytes(11).unwrap();
    let t2 = started.elapsed();
    assert_eq!(second, b"6\r\n world\r\n");
    assert!(t1 < Duration::from_millis(900), "first part after {t1:?}");
    assert!(t2 < Duration::from_millis(1900), "second part after {t2:?}");
    let (rest, end) = c.read_until_close(Duration::from_secs(5));
    assert_eq!(rest, b"0\r\n\r\n");
    assert_eq!(end, End::Eof);
}

/// The same over a wss:// backend (mod_ssl between the module and the backend): a body that
/// pauses longer than the hold is relayed whole (a read that timed out is tried again), a bad
/// chunk is a 502, a short Content-Length body a 502 (on 2.2, whose mod_ssl loses its input
/// after a timed-out read, the hold takes only what has come, so there it may be cut short).
#[test]
fn wss_backend_answers() {
    if !need::ours() || !need::ssl() {
        return;
    }
    let pki = wst_e2e::Pki::generate();
    let cfg =
        wst_e2e::pki::server_config_from_files(&pki.cert_file(), &pki.key_file(), None).unwrap();
    let start_tls = |script: Vec<Step>| {
        let b = ScriptBackend::start_with(script, 0, Some(cfg.clone()));
        let h = Httpd::builder()
            .module("ssl")
            .pki(&pki)
            .var("BACKEND_PORT", b.port)
            .config(
                "ProxyTimeout 5\nSSLProxyEngine on\nSSLProxyVerify require\n\
                 SSLProxyCACertificateFile \"{CA}\"\n\
                 ProxyPass /ws/ wss://localhost:{BACKEND_PORT}/\n",
            )
            .start();
        (b, h)
    };

    let (_b, h) = start_tls(vec![
        w(HEAD_CHUNKED),
        w("5\r\nhello\r\n"),
        Step::Sleep(700),
        w("6\r\n world\r\n0\r\n\r\n"),
    ]);
    let (mut c, mut r) = upgrade(&h);
    assert_eq!(r.status, 403, "{}\n{}", r.head, h.error_log());
    c.read_body(&mut r, false)
        .unwrap_or_else(|e| panic!("{e}\n{}", h.error_log()));
    assert_eq!(r.body_str(), "hello world", "{}", h.error_log());

    let (_b, h) = start_tls(vec![w(HEAD_CHUNKED), w("5\r\nhelloXX\r\n0\r\n\r\n")]);
    let (_c, r) = upgrade(&h);
    assert_eq!(r.status, 502, "{}\n{}", r.head, h.error_log());
    h.wait_error_line(
        Duration::from_secs(5),
        &["WST002", "malformed chunked", "answering 502"],
    )
    .unwrap_or_else(|| panic!("{}", h.error_log()));

    let (_b, h) = start_tls(vec![w(head_length(100)), w("only ten b")]);
    let (mut c, r) = upgrade(&h);
    if Httpd::flavor().is_24() || r.status == 502 {
        assert_eq!(r.status, 502, "{}\n{}", r.head, h.error_log());
        h.wait_error_line(
            Duration::from_secs(5),
            &["WST003", "after 10 of the 100 bytes", "answering 502"],
        )
        .unwrap_or_else(|| panic!("{}", h.error_log()));
    } else {
        assert_eq!(r.status, 403, "{}", r.head);
        let (body, end) = c.read_until_close(Duration::from_secs(8));
        assert_ne!(end, End::Timeout);
        assert_eq!(body, b"only ten b");
        h.wait_error_line(
            Duration::from_secs(5),
            &["WST003", "after 10 of the 100 bytes", "cut short"],
        )
        .unwrap_or_else(|| panic!("{}", h.error_log()));
    }
}
