//! Clients: a raw TCP/TLS client that sends arbitrary bytes and parses raw responses, and a
//! WebSocket client (our own handshake, then tungstenite) with browser-like header sets.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::net::{is_timeout, Stream};
use crate::pki::Pki;
use crate::ws::{self, Frame};
use crate::IO_TIMEOUT;

/// Chrome's upgrade headers.
pub const CHROME_HEADERS: &[(&str, &str)] = &[("Upgrade", "websocket"), ("Connection", "Upgrade")];
/// Firefox's upgrade headers (note `keep-alive, Upgrade`).
pub const FIREFOX_HEADERS: &[(&str, &str)] = &[
    ("Connection", "keep-alive, Upgrade"),
    ("Upgrade", "websocket"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browser {
    Chrome,
    Firefox,
}

impl Browser {
    pub const ALL: [Browser; 2] = [Browser::Chrome, Browser::Firefox];

    pub fn upgrade_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Browser::Chrome => CHROME_HEADERS,
            Browser::Firefox => FIREFOX_HEADERS,
        }
    }
    pub fn user_agent(self) -> &'static str {
        match self {
            Browser::Chrome => "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            Browser::Firefox => "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        }
    }
}

/// Where a client connects: 127.0.0.1:`port`, optionally TLS.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub tls: Option<Arc<ClientConfig>>,
    /// Name for SNI and certificate verification (TLS only).
    pub sni: String,
    /// Value of the Host header the helpers send.
    pub host: String,
    pub timeout: Duration,
}

impl Target {
    pub fn plain(port: u16) -> Target {
        Target {
            port,
            tls: None,
            sni: "localhost".into(),
            host: format!("127.0.0.1:{port}"),
            timeout: IO_TIMEOUT,
        }
    }
    pub fn tls(port: u16, pki: &Pki) -> Target {
        Target {
            port,
            tls: Some(pki.client_config()),
            sni: "localhost".into(),
            host: format!("localhost:{port}"),
            timeout: IO_TIMEOUT,
        }
    }
    pub fn with_host(mut self, host: &str) -> Target {
        self.host = host.to_string();
        self
    }
    pub fn with_timeout(mut self, t: Duration) -> Target {
        self.timeout = t;
        self
    }
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }
    pub fn connect(&self) -> io::Result<Stream> {
        Stream::connect(
            self.port,
            self.tls.as_ref().map(|c| (c, self.sni.as_str())),
            self.timeout,
        )
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw head, including the final empty line.
    pub head: String,
}

impl Response {
    /// First header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// True if some `name` header contains `token` in its comma-separated list.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers_all(name)
            .iter()
            .any(|v| ws::has_token(v, token))
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn parse_head(head: &[u8]) -> io::Result<Response> {
        let mut hdrs = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Response::new(&mut hdrs);
        match r.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(bad("partial response head")),
            Err(e) => {
                return Err(bad(&format!(
                    "unparsable response head ({e}): {:?}",
                    String::from_utf8_lossy(head)
                )))
            }
        }
        Ok(Response {
            version: format!("HTTP/1.{}", r.version.unwrap_or(1)),
            status: r.code.unwrap_or(0),
            reason: r.reason.unwrap_or("").to_string(),
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
            body: Vec::new(),
            head: String::from_utf8_lossy(head).into_owned(),
        })
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// How a read-until-close ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Orderly EOF.
    Eof,
    /// Connection reset (or another hard error).
    Reset(String),
    /// Nothing more within the time allowed; the connection is still open.
    Timeout,
}

/// A raw client: send any bytes, read raw responses and frames. All reads time out.
pub struct RawClient {
    pub stream: Stream,
    buf: Vec<u8>,
    pub timeout: Duration,
}

impl RawClient {
    pub fn connect(target: &Target) -> io::Result<RawClient> {
        Ok(RawClient {
            stream: target.connect()?,
            buf: Vec::new(),
            timeout: target.timeout,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Read more bytes into the buffer; Ok(0) at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn fill_until(&mut self, deadline: Instant, what: &str) -> io::Result<()> {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out waiting for {what}"),
            ));
        }
        match self.fill() {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "EOF while waiting for {what} (have {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
            )),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out waiting for {what} (have {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
            )),
            Err(e) => Err(e),
        }
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Read a response head (status line + headers); the body is left unread.
    pub fn read_head(&mut self) -> io::Result<Response> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(end) = ws::head_end(&self.buf) {
                let head: Vec<u8> = self.buf.drain(..end).collect();
                return Response::parse_head(&head);
            }
            self.fill_until(deadline, "response head")?;
        }
    }

    /// Read a whole response: head, then a body delimited by Content-Length, chunked encoding,
    /// or the end of the connection. 1xx, 204 and 304 have no body.
    pub fn read_response(&mut self) -> io::Result<Response> {
        let mut r = self.read_head()?;
        self.read_body(&mut r, false)?;
        Ok(r)
    }

    /// Like [`read_response`](Self::read_response) for a response to HEAD (never a body).
    pub fn read_body(&mut self, r: &mut Response, head_request: bool) -> io::Result<()> {
        if head_request || r.status < 200 || r.status == 204 || r.status == 304 {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        let te = r
            .header("Transfer-Encoding")
            .map(|s| s.to_ascii_lowercase());
        if te.as_deref().is_some_and(|t| t.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    self.fill_until(deadline, "chunk size")?;
                };
                let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| bad(&format!("bad chunk size line {line:?}")))?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailers until an empty line.
                    loop {
                        if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            let empty = p == 0;
                            self.buf.drain(..p + 2);
                            if empty {
                                break;
                            }
                        } else {
                            self.fill_until(deadline, "chunked trailer")?;
                        }
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    self.fill_until(deadline, "chunk data")?;
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
            r.body = body;
        } else if let Some(cl) = r.header("Content-Length") {
            let n: usize = cl
                .trim()
                .parse()
                .map_err(|_| bad(&format!("bad Content-Length {cl:?}")))?;
            while self.buf.len() < n {
                self.fill_until(deadline, "response body")?;
            }
            r.body = self.buf.drain(..n).collect();
        } else {
            let (bytes, end) = self.read_until_close(self.timeout);
            if end == End::Timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out reading a close-delimited body",
                ));
            }
            r.body = bytes;
        }
        Ok(())
    }

    /// Read one WebSocket frame.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some((f, used)) = ws::decode_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(f);
            }
            self.fill_until(deadline, "a WebSocket frame")?;
        }
    }

    /// Read exactly `n` bytes (buffered ones first).
    pub fn read_exact_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        while self.buf.len() < n {
            self.fill_until(deadline, &format!("{n} bytes"))?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Everything until the peer closes, or until `wait` passes. Returns all bytes (including
    /// previously buffered ones) and how it ended.
    pub fn read_until_close(&mut self, wait: Duration) -> (Vec<u8>, End) {
        let deadline = Instant::now() + wait;
        let end = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break End::Timeout;
            }
            let _ = self
                .stream
                .set_read_timeout(left.max(Duration::from_millis(1)));
            match self.fill() {
                Ok(0) => break End::Eof,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => break End::Timeout,
                Err(e) => break End::Reset(e.to_string()),
            }
        };
        let _ = self.stream.set_read_timeout(self.timeout);
        (self.take_buffered(), end)
    }

    /// Whatever arrives within `wait` (plus what is buffered); does not wait for EOF.
    pub fn read_for(&mut self, wait: Duration) -> (Vec<u8>, Option<End>) {
        let (b, e) = self.read_until_close(wait);
        (b, if e == End::Timeout { None } else { Some(e) })
    }

    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown_write()
    }

    /// Hand the connection (and any buffered bytes) to tungstenite as a client WebSocket.
    pub fn into_websocket(self) -> WebSocket<Stream> {
        WebSocket::from_partially_read(self.stream, self.buf, Role::Client, Some(ws_config()))
    }
}

/// tungstenite config without message/frame size limits.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None)
}

/// A WebSocket upgrade request, built header by header so tests control the exact bytes.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl UpgradeRequest {
    /// A browser-like upgrade request: Host, the browser's Upgrade/Connection headers,
    /// User-Agent, Origin, Sec-WebSocket-Version 13 and a fresh Sec-WebSocket-Key.
    pub fn new(path: &str, host: &str, browser: Browser) -> UpgradeRequest {
        let mut headers = vec![("Host".to_string(), host.to_string())];
        for (n, v) in browser.upgrade_headers() {
            headers.push((n.to_string(), v.to_string()));
        }
        headers.push(("User-Agent".into(), browser.user_agent().into()));
        headers.push(("Origin".into(), format!("http://{host}")));
        headers.push(("Sec-WebSocket-Version".into(), "13".into()));
        headers.push(("Sec-WebSocket-Key".into(), ws::new_key()));
        UpgradeRequest {
            method: "GET".into(),
            path: path.into(),
            version: "HTTP/1.1".into(),
            headers,
        }
    }

    /// A plain (non-upgrade) GET.
    pub fn plain_get(path: &str, host: &str) -> UpgradeRequest {
        UpgradeRequest {
            method: "GET".into(),
            path: path.into(),
            version: "HTTP/1.1".into(),
            headers: vec![("Host".into(), host.into())],
        }
    }

    /// Append a header (repeats allowed).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Replace every `name` header by one with `value` (appended if absent).
    pub fn set(mut self, name: &str, value: &str) -> Self {
        if let Some(i) = self
            .headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            self.headers[i] = (name.into(), value.into());
            let mut seen = false;
            self.headers.retain(|(n, _)| {
                if n.eq_ignore_ascii_case(name) {
                    let keep = !seen;
                    seen = true;
                    keep
                } else {
                    true
                }
            });
        } else {
            self.headers.push((name.into(), value.into()));
        }
        self
    }
    /// Remove every `name` header.
    pub fn remove(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn key(&self) -> Option<&str> {
        self.get("Sec-WebSocket-Key")
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} {}\r\n", self.method, self.path, self.version);
        for (n, v) in &self.headers {
            s.push_str(n);
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// WebSocket client helpers.
pub struct WsClient;

impl WsClient {
    /// Browser-like upgrade to `path` on `target`; checks the 101 (status, Upgrade, Connection,
    /// Sec-WebSocket-Accept) and returns it with the open WebSocket.
    pub fn connect(
        target: &Target,
        path: &str,
        browser: Browser,
    ) -> Result<(Response, WebSocket<Stream>), String> {
        Self::connect_with(target, &UpgradeRequest::new(path, &target.host, browser))
    }

    pub fn connect_with(
        target: &Target,
        req: &UpgradeRequest,
    ) -> Result<(Response, WebSocket<Stream>), String> {
        let mut c = RawClient::connect(target).map_err(|e| format!("connect: {e}"))?;
        c.send(&req.to_bytes())
            .map_err(|e| format!("send request: {e}"))?;
        let resp = c.read_head().map_err(|e| format!("read 101: {e}"))?;
        check_101(req, &resp)?;
        Ok((resp, c.into_websocket()))
    }
}

/// Verify a 101 answer to `req`.
pub fn check_101(req: &UpgradeRequest, resp: &Response) -> Result<(), String> {
    if resp.status != 101 {
        return Err(format!("expected 101, got:\n{}", resp.head));
    }
    if !resp.header_has_token("Upgrade", "websocket") {
        return Err(format!("101 without Upgrade: websocket:\n{}", resp.head));
    }
    if !resp.header_has_token("Connection", "upgrade") {
        return Err(format!("101 without Connection: Upgrade:\n{}", resp.head));
    }
    if let Some(key) = req.key() {
        let want = ws::accept_key(key);
        if resp.header("Sec-WebSocket-Accept").map(str::trim) != Some(want.as_str()) {
            return Err(format!(
                "bad Sec-WebSocket-Accept (want {want}):\n{}",
                resp.head
            ));
        }
    }
    Ok(())
}

/// Send `msg` and return the next data message (pings/pongs skipped).
pub fn roundtrip(ws: &mut WebSocket<Stream>, msg: Message) -> Result<Message, String> {
    ws.send(msg).map_err(|e| format!("send: {e}"))?;
    next_data(ws)
}

/// The next text/binary/close message (pings and pongs skipped).
pub fn next_data(ws: &mut WebSocket<Stream>) -> Result<Message, String> {
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(m) => return Ok(m),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Close politely and wait (bounded) for the peer's close / EOF.
pub fn close(ws: &mut WebSocket<Stream>) {
    let _ = ws.close(None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(_) => continue,
            Err(_) => break,
        }
    }
}

/// One plain `GET path` (with `Connection: close`) and its whole response.
pub fn http_get(target: &Target, path: &str) -> io::Result<Response> {
    http_request(
        target,
        &UpgradeRequest::plain_get(path, &target.host).header("Connection", "close"),
    )
}

/// Send `req` on a new connection and read one whole response.
pub fn http_request(target: &Target, req: &UpgradeRequest) -> io::Result<Response> {
    let mut c = RawClient::connect(target)?;
    c.send(&req.to_bytes())?;
    let head_request = req.method.eq_ignore_ascii_case("HEAD");
    let mut r = c.read_head()?;
    c.read_body(&mut r, head_request)?;
    Ok(r)
}
