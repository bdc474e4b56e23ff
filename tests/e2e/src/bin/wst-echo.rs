//! wst-echo: the WebSocket backend of the end-to-end tests.
//!
//! `wst-echo [--port N] [--tls-cert FILE --tls-key FILE [--tls13-tickets N]]` listens on 127.0.0.1:N (0: any free
//! port), prints `LISTENING <port>` on stdout, and serves every connection in a thread. It logs
//! `REQ <request line>` for every request head to stderr. The handshake is written by hand (so
//! that broken answers can be produced); after a good 101, tungstenite takes over.
//!
//! Routes (matched anywhere in the path, so prefixes added by proxy routes do not matter):
//! * `/status-many/<code>`: as `/status/<code>`, with 40 more fields (X-Field-0..39).
//! * `/status-hop/<code>`: as `/status/<code>`, with hop-by-hop fields (two Connection
//!   fields, one naming X-Private; X-Private, Keep-Alive, Proxy-Connection) and X-Public.
//! * `/status-chunked/<code>`, `/status/<code>`: that status with a small chunked or
//!   Content-Length body, for upgrade and plain requests alike. The connection stays open;
//!   bytes that follow and do not look like an HTTP request are echoed back raw (so a client
//!   can tell whether a proxy wrongly tunneled).
//! * `/slow`: never answers; holds the connection until the peer closes it.
//! * Upgrade requests: `/bad-accept` (101 with a wrong Sec-WebSocket-Accept), `/no-upgrade-101`
//!   (101 without Upgrade), `/push` (101 and a text frame "pushed" in one write, then echo),
//!   `/halfclose` (101, count raw bytes until EOF, send the count as a text frame, close),
//!   `/headers` (one text message with the request head, then echo), `/flood[/<bytes>]`
//!   (binary messages 0, 1, 2... of 16 KiB or <bytes> each, forever: see
//!   `wst_e2e::flood_message`), `/bye` (text "bye", a close frame, FIN, then wait for EOF),
//!   `/drop` (text "bye", then close(2) without a close frame), `/stall` (never reads after
//!   the 101), anything else: echo.
//!   No Sec-WebSocket-Key: 400.
//! * Plain requests: `/headers`: 200 with the request head as body; else 200
//!   `plain <METHOD> <path>`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};
use wst_e2e::client::ws_config;
use wst_e2e::ws;

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
    fn shutdown_write(&mut self) {
        if let Conn::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                if s.conn.write_tls(&mut s.sock).is_err() {
                    break;
                }
            }
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                Ok(n) => Ok(wst_e2e::net::gather_tls(&mut s.conn, &mut s.sock, buf, n)),
                r => r,
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

fn log(msg: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{msg}");
    let _ = e.flush();
}

fn main() {
    let mut port: u16 = 0;
    let mut cert = None;
    let mut key = None;
    let mut tickets = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            "--tls-cert" => cert = args.next(),
            "--tls-key" => key = args.next(),
            "--tls13-tickets" => tickets = args.next().and_then(|p| p.parse().ok()),
            _ => {
                eprintln!("usage: wst-echo [--port N] [--tls-cert FILE --tls-key FILE [--tls13-tickets N]]");
                std::process::exit(2);
            }
        }
    }
    let tls: Option<Arc<ServerConfig>> = match (cert, key) {
        (Some(c), Some(k)) => Some(
            wst_e2e::pki::server_config_from_files(c.as_ref(), k.as_ref(), tickets).unwrap_or_else(
                |e| {
                    eprintln!("wst-echo: {e}");
                    std::process::exit(2)
                },
            ),
        ),
        (None, None) => None,
        _ => {
            eprintln!("wst-echo: --tls-cert and --tls-key go together");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("wst-echo: bind: {e}");
        std::process::exit(1)
    });
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("LISTENING {port}");
    let _ = io::stdout().flush();
    log(&format!(
        "wst-echo listening on 127.0.0.1:{port}{}",
        if tls.is_some() { " (TLS)" } else { "" }
    ));

    for (id, s) in listener.incoming().enumerate() {
        let Ok(s) = s else { continue };
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
            let _ = s.set_nodelay(true);
            let conn = match tls {
                None => Conn::Plain(s),
                Some(cfg) => match ServerConnection::new(cfg) {
                    Ok(c) => Conn::Tls(Box::new(StreamOwned::new(c, s))),
                    Err(e) => {
                        log(&format!("#{id} tls: {e}"));
                        return;
                    }
                },
            };
            match handle(conn, id) {
                Ok(()) => log(&format!("#{id} done")),
                Err(e) => log(&format!("#{id} ended: {e}")),
            }
        });
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        426 => "Upgrade Required",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// A complete response with a Content-Length body.
fn response(code: u16, body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nServer: wst-echo\r\nContent-Type: text/plain\r\n{extra}",
        reason(code)
    );
    if !(code < 200 || code == 204 || code == 304) {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !(code < 200 || code == 204 || code == 304) {
        out.extend_from_slice(body);
    }
    out
}

fn chunked_response(code: u16, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nServer: wst-echo\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        reason(code)
    )
    .into_bytes();
    let (a, b) = body.split_at(body.len() / 2);
    for part in [a, b] {
        if !part.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// `/flood/<bytes>`: the message size asked for (1..=16 MiB).
fn flood_size(path: &str) -> Option<usize> {
    let i = path.find("/flood/")?;
    let digits: String = path[i + 7..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .ok()
        .filter(|n| (8..=16 * 1024 * 1024).contains(n))
}

fn status_code(path: &str, marker: &str) -> Option<u16> {
    let i = path.find(marker)?;
    let digits: String = path[i + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|c| (100..=999).contains(c))
}

struct Req {
    method: String,
    path: String,
    version: u8,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| ws::has_token(v, token))
    }
}

fn parse_req(head: &[u8]) -> Result<Req, String> {
    let mut hdrs = [httparse::EMPTY_HEADER; 128];
    let mut r = httparse::Request::new(&mut hdrs);
    match r.parse(head) {
        Ok(httparse::Status::Complete(_)) => Ok(Req {
            method: r.method.unwrap_or("").to_string(),
            path: r.path.unwrap_or("").to_string(),
            version: r.version.unwrap_or(1),
            headers: r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
        }),
        Ok(httparse::Status::Partial) => Err("partial head".into()),
        Err(e) => Err(format!("bad request head: {e}")),
    }
}

/// Raw echo of everything until EOF.
fn raw_echo(c: &mut Conn, mut pending: Vec<u8>, id: usize) -> io::Result<()> {
    let mut total = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if !pending.is_empty() {
            total += pending.len();
            c.write_all(&pending)?;
            c.flush()?;
            pending.clear();
        }
        let n = c.read(&mut chunk)?;
        if n == 0 {
            log(&format!("#{id} RAW echoed {total} bytes"));
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// Read and discard until EOF.
fn hold(c: &mut Conn) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    while c.read(&mut chunk)? > 0 {}
    Ok(())
}

fn echo(mut w: WebSocket<Conn>) -> io::Result<()> {
    loop {
        match w.read() {
            Ok(m @ Message::Text(_)) | Ok(m @ Message::Binary(_)) => {
                if let Err(e) = w.send(m) {
                    return Err(io::Error::other(e));
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return Ok(())
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

fn handle(mut c: Conn, id: usize) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Read one request head (or detect raw bytes after a non-101 answer).
        let end = loop {
            if !buf.is_empty() && !buf[0].is_ascii_uppercase() {
                log(&format!("#{id} RAW bytes instead of a request: echoing"));
                return raw_echo(&mut c, std::mem::take(&mut buf), id);
            }
            if let Some(e) = ws::head_end(&buf) {
                break e;
            }
            if buf.len() > 256 * 1024 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
            }
            let n = c.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let head_text = String::from_utf8_lossy(&head).into_owned();
        let req = match parse_req(&head) {
            Ok(r) => r,
            Err(e) => {
                log(&format!("#{id} {e}: {head_text:?}"));
                c.write_all(&response(400, b"bad request\n", "Connection: close\r\n"))?;
                return Ok(());
            }
        };
        log(&format!(
            "REQ {} {} HTTP/1.{}",
            req.method, req.path, req.version
        ));
        let path = req.path.split('?').next().unwrap_or("").to_string();
        let upgrade = req.has_token("Upgrade", "websocket");
        let close_after = req.has_token("Connection", "close") || req.version == 0;

        // Discard a request body (plain requests with Content-Length only).
        if !upgrade {
            if let Some(n) = req
                .header("Content-Length")
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                while buf.len() < n {
                    let r = c.read(&mut chunk)?;
                    if r == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..r]);
                }
                buf.drain(..n);
            }
        }

        if let Some(code) = status_code(&path, "/status-chunked/") {
            let body = format!("status {code} from wst-echo (chunked)\n");
            c.write_all(&chunked_response(code, body.as_bytes()))?;
            c.flush()?;
            if close_after {
                return Ok(());
            }
            continue;
        }
        if let Some(code) = status_code(&path, "/status-many/") {
            // More header fields than a 101 ever has (40).
            let body = format!("status {code} from wst-echo\n");
            let extra: String = (0..40).map(|i| format!("X-Field-{i}: value {i}\r\n")).collect();
            c.write_all(&response(code, body.as_bytes(), &extra))?;
            c.flush()?;
            if close_after {
                return Ok(());
            }
            continue;
        }
        if let Some(code) = status_code(&path, "/status-hop/") {
            // Hop-by-hop fields a proxy must not relay, among end-to-end ones.
            let body = format!("status {code} from wst-echo\n");
            let extra = "Connection: X-Private\r\nConnection: keep-alive\r\nX-Private: secret\r\n\
                         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Public: ok\r\n";
            c.write_all(&response(code, body.as_bytes(), extra))?;
            c.flush()?;
            if close_after {
                return Ok(());
            }
            continue;
        }
        if let Some(code) = status_code(&path, "/status/") {
            let body = format!("status {code} from wst-echo\n");
            c.write_all(&response(code, body.as_bytes(), ""))?;
            c.flush()?;
            if close_after {
                return Ok(());
            }
            continue;
        }
        if path.contains("/slow") {
            log(&format!("#{id} slow: holding"));
            return hold(&mut c);
        }

        if !upgrade {
            let body = if path.contains("/headers") {
                head.clone()
            } else {
                format!("plain {} {}\n", req.method, req.path).into_bytes()
            };
            let extra = if close_after {
                "Connection: close\r\n"
            } else {
                ""
            };
            c.write_all(&response(200, &body, extra))?;
            c.flush()?;
            if close_after {
                return Ok(());
            }
            continue;
        }

        // WebSocket upgrade.
        let Some(key) = req
            .header("Sec-WebSocket-Key")
            .map(|k| k.trim().to_string())
        else {
            c.write_all(&response(400, b"missing Sec-WebSocket-Key\n", ""))?;
            continue;
        };
        let accept = ws::accept_key(&key);
        let protocol = req
            .header("Sec-WebSocket-Protocol")
            .and_then(|p| p.split(',').next())
            .map(|p| format!("Sec-WebSocket-Protocol: {}\r\n", p.trim()))
            .unwrap_or_default();
        let good_101 = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
        );

        if path.contains("/bad-accept") {
            let wrong = ws::accept_key(&format!("{key}x"));
            c.write_all(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {wrong}\r\n\r\n"
                )
                .as_bytes(),
            )?;
            c.flush()?;
            return hold(&mut c);
        }
        if path.contains("/no-upgrade-101") {
            c.write_all(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .as_bytes(),
            )?;
            c.flush()?;
            return hold(&mut c);
        }
        if path.contains("/halfclose") {
            c.write_all(good_101.as_bytes())?;
            c.flush()?;
            let mut count = buf.len();
            loop {
                let n = c.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                count += n;
            }
            log(&format!("#{id} halfclose: got EOF after {count} bytes"));
            c.write_all(&ws::server_frame(ws::OP_TEXT, count.to_string().as_bytes()))?;
            c.flush()?;
            c.shutdown_write();
            return Ok(());
        }
        if path.contains("/flood") {
            // Binary messages 0, 1, 2, ... of `size` bytes, as fast as the peer takes them,
            // until a write fails. Message i starts with i (u64, big-endian); the rest is
            // wst_e2e::flood_message(i, size).
            let size = flood_size(&path).unwrap_or(16 * 1024);
            c.write_all(good_101.as_bytes())?;
            c.flush()?;
            let mut i: u64 = 0;
            loop {
                let frame = ws::server_frame(ws::OP_BINARY, &wst_e2e::flood_message(i, size));
                if let Err(e) = c.write_all(&frame).and_then(|_| c.flush()) {
                    log(&format!("#{id} flood: stopped after {i} messages: {e}"));
                    return Ok(());
                }
                i += 1;
            }
        }
        if path.contains("/stall") {
            // 101, then never read: the client's data piles up in the buffers on the way.
            c.write_all(good_101.as_bytes())?;
            c.flush()?;
            log(&format!("#{id} stall: not reading"));
            std::thread::sleep(Duration::from_secs(60));
            return Ok(());
        }
        if path.contains("/bye") {
            // The backend ends the conversation: one text message "bye", a close frame
            // (1000), then FIN; waits (bounded) for the peer's EOF.
            let mut out = good_101.into_bytes();
            out.extend_from_slice(&ws::server_frame(ws::OP_TEXT, b"bye"));
            out.extend_from_slice(&ws::server_frame(ws::OP_CLOSE, &[0x03, 0xe8]));
            c.write_all(&out)?;
            c.flush()?;
            c.shutdown_write();
            let _ = c.tcp().set_read_timeout(Some(Duration::from_secs(10)));
            let _ = hold(&mut c);
            log(&format!("#{id} bye: closed"));
            return Ok(());
        }
        if path.contains("/drop") {
            // The backend goes away without a close frame: "bye", then close(2).
            c.write_all(good_101.as_bytes())?;
            c.write_all(&ws::server_frame(ws::OP_TEXT, b"bye"))?;
            c.flush()?;
            log(&format!("#{id} drop: closing the socket"));
            return Ok(());
        }
        if path.contains("/push") {
            let mut out = good_101.into_bytes();
            out.extend_from_slice(&ws::server_frame(ws::OP_TEXT, b"pushed"));
            c.write_all(&out)?; // one write: 101 and the first frame together
            c.flush()?;
            let w = WebSocket::from_partially_read(c, buf, Role::Server, Some(ws_config()));
            return echo(w);
        }
        c.write_all(good_101.as_bytes())?;
        c.flush()?;
        let mut w = WebSocket::from_partially_read(c, buf, Role::Server, Some(ws_config()));
        if path.contains("/headers") {
            if let Err(e) = w.send(Message::text(head_text)) {
                return Err(io::Error::other(e));
            }
        }
        return echo(w);
    }
}
