//! wst-client: a small WebSocket client for trying a proxy by hand (and for `make demo`).
//!
//! ```text
//! wst-client [options] URL [LINE...]
//!   URL               ws://host[:port]/path or wss://host[:port]/path
//!   LINE...           text messages to send once connected, in order
//!   --stdin           also send every line read from standard input
//!   --count N         exit (0) once N messages have been received
//!   --timeout SECS    give up after SECS seconds (default 30); exit 3 if --count was not reached
//!   --ca FILE         for wss://: trust the CA certificate(s) in this PEM file
//!   --insecure        for wss://: do not verify the server's certificate
//!   --origin ORIGIN   send this Origin header
//! ```
//!
//! Prints one line per event on standard output, with the time since the connection started:
//! the handshake's status line, every message sent (`>`) and received (`<`), and the close.
//! Exit status: 0 closed by the server, or --count reached, or (without --count) --timeout
//! passed; 1 connection or handshake failure; 2 usage; 3 --count not reached in time.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

const USAGE: &str = "usage: wst-client [--stdin] [--count N] [--timeout SECS] [--ca FILE] [--insecure] [--origin ORIGIN] URL [LINE...]";

struct Opts {
    url: String,
    lines: Vec<String>,
    stdin: bool,
    count: Option<usize>,
    timeout: Duration,
    ca: Option<String>,
    insecure: bool,
    origin: Option<String>,
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("wst-client: {msg}");
    }
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        url: String::new(),
        lines: Vec::new(),
        stdin: false,
        count: None,
        timeout: Duration::from_secs(30),
        ca: None,
        insecure: false,
        origin: None,
    };
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            "--stdin" => o.stdin = true,
            "--insecure" => o.insecure = true,
            "--count" => {
                o.count = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage("--count takes a number")),
                )
            }
            "--timeout" => {
                let s: f64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|s: &f64| *s > 0.0)
                    .unwrap_or_else(|| usage("--timeout takes a number of seconds"));
                o.timeout = Duration::from_secs_f64(s);
            }
            "--ca" => o.ca = Some(args.next().unwrap_or_else(|| usage("--ca takes a file"))),
            "--origin" => {
                o.origin = Some(
                    args.next()
                        .unwrap_or_else(|| usage("--origin takes a value")),
                )
            }
            "--" => positional.extend(args.by_ref()),
            s if s.starts_with("--") => usage(&format!("unknown option {s}")),
            _ => positional.push(a),
        }
    }
    let mut it = positional.into_iter();
    o.url = it.next().unwrap_or_else(|| usage("no URL"));
    o.lines = it.collect();
    o
}

/// ws[s]://host[:port]/path -> (tls, host, port)
fn split_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else {
        return Err(format!("{url}: not a ws:// or wss:// URL"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: bad IPv6 literal"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
        None if tls => 443,
        None => 80,
    };
    Ok((tls, host, port))
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
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

/// Accepts any certificate (--insecure).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(o: &Opts) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if o.insecure {
        return Ok(Arc::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth(),
        ));
    }
    let Some(ca) = &o.ca else {
        return Err("wss:// needs --ca FILE (or --insecure)".into());
    };
    let pem = std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots
            .add(cert)
            .map_err(|e| format!("{ca}: bad certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{ca}: no certificate found"));
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// The CERTIFICATE blocks of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if l == "-----BEGIN CERTIFICATE-----" {
            cur = Some(String::new());
        } else if l == "-----END CERTIFICATE-----" {
            if let Some(b64) = cur.take() {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    out.push(CertificateDer::from(der));
                }
            }
        } else if let Some(c) = cur.as_mut() {
            c.push_str(l);
        }
    }
    out
}

struct Printer {
    start: Instant,
}

impl Printer {
    fn line(&self, what: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "  +{t:7.3}s  {what}");
        let _ = out.flush();
    }
}

fn show(m: &Message) -> String {
    match m {
        Message::Text(t) => format!("< {}", t.as_str()),
        Message::Binary(b) => format!("< [binary, {} bytes]", b.len()),
        other => format!("< {other:?}"),
    }
}

fn connect(o: &Opts, p: &Printer) -> Result<WebSocket<Conn>, String> {
    let (tls, host, port) = split_url(&o.url)?;
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    let mut last = String::from("no address");
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    let tcp = tcp.ok_or_else(|| format!("cannot connect to {host}:{port}: {last}"))?;
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(10)));
    let stream = if tls {
        let cfg = tls_config(o)?;
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let conn = ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        }
        Conn::Tls(Box::new(s))
    } else {
        Conn::Plain(tcp)
    };
    let mut req = o
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{}: {e}", o.url))?;
    if let Some(origin) = &o.origin {
        let v = HeaderValue::from_str(origin).map_err(|e| format!("--origin: {e}"))?;
        req.headers_mut().insert("Origin", v);
    }
    let cfg = wst_e2e::client::ws_config();
    match tungstenite::client::client_with_config(req, stream, Some(cfg)) {
        Ok((ws, resp)) => {
            let status = resp.status();
            p.line(&format!(
                "connected to {}: {:?} {} {}",
                o.url,
                resp.version(),
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ));
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            Err(format!(
                "{}: the server answered {} instead of 101 {}",
                o.url,
                resp.status(),
                body.lines().next().unwrap_or("")
            ))
        }
        Err(e) => Err(format!("{}: handshake failed: {e}", o.url)),
    }
}

fn main() {
    let o = parse_args();
    let p = Printer {
        start: Instant::now(),
    };
    let mut ws = match connect(&o, &p) {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("wst-client: {e}");
            std::process::exit(1)
        }
    };
    let deadline = p.start + o.timeout;

    let (tx, rx) = mpsc::channel::<Option<String>>();
    for l in &o.lines {
        let _ = tx.send(Some(l.clone()));
    }
    if o.stdin {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Some(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(None);
        });
    }
    drop(tx);

    let _ = ws
        .get_mut()
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(100)));
    let mut received = 0usize;
    loop {
        // Send what is queued.
        while let Ok(Some(line)) = rx.try_recv() {
            p.line(&format!("> {line}"));
            if let Err(e) = ws.send(Message::text(line)) {
                eprintln!("wst-client: send: {e}");
                std::process::exit(1)
            }
        }
        if o.count.is_some_and(|n| received >= n) {
            p.line(&format!("received {received} messages, closing"));
            let _ = ws.close(None);
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end {
                match ws.read() {
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(_) => break,
                }
            }
            std::process::exit(0)
        }
        if Instant::now() >= deadline {
            match o.count {
                Some(n) => {
                    p.line(&format!(
                        "timed out after {:?} with {received} of {n} messages",
                        o.timeout
                    ));
                    std::process::exit(3)
                }
                None => {
                    p.line(&format!("{:?} passed, closing", o.timeout));
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    std::process::exit(0)
                }
            }
        }
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                received += 1;
                p.line(&show(&m));
            }
            Ok(Message::Close(frame)) => {
                let why = frame
                    .map(|f| {
                        if f.reason.is_empty() {
                            format!(" (code {})", u16::from(f.code))
                        } else {
                            format!(" (code {}: {})", u16::from(f.code), f.reason)
                        }
                    })
                    .unwrap_or_default();
                p.line(&format!("closed by the server{why}"));
                // Let tungstenite answer the close, then leave.
                let _ = ws.flush();
                std::process::exit(if o.count.is_some_and(|n| received < n) {
                    3
                } else {
                    0
                })
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                p.line("connection closed");
                std::process::exit(0)
            }
            Err(e) => {
                p.line(&format!("connection ended: {e}"));
                std::process::exit(if o.count.is_some_and(|n| received < n) {
                    3
                } else {
                    0
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("ws://127.0.0.1:8080/x?y").unwrap(),
            (false, "127.0.0.1".into(), 8080)
        );
        assert_eq!(
            split_url("wss://localhost/x").unwrap(),
            (true, "localhost".into(), 443)
        );
        assert_eq!(
            split_url("ws://[::1]:81/").unwrap(),
            (false, "::1".into(), 81)
        );
        assert_eq!(split_url("ws://h").unwrap(), (false, "h".into(), 80));
        assert!(split_url("http://h/").is_err());
        assert!(split_url("ws://:80/").is_err());
    }
}
