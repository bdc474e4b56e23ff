//! WebSocket over HTTP/2 (RFC 8441): an h2 client over rustls (ALPN h2) that opens extended
//! CONNECT streams (`:method CONNECT`, `:protocol websocket`, `:scheme https`, `:path`,
//! `:authority`, `sec-websocket-version: 13`) and exchanges WebSocket frames in DATA frames:
//! one stream ([`websocket_over_h2`]) or several at once on one connection
//! ([`websockets_over_h2`]), each ended by a close handshake, a reset in the middle of a frame
//! or the whole connection dropping ([`H2WsEnd`]); and a plain h2 GET ([`h2_get`]).
//! Everything runs under one overall timeout, so a server that hangs makes a test fail, not hang.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use rustls::pki_types::ServerName;

use crate::pki::Pki;
use crate::ws;

/// What happened on one extended CONNECT stream.
#[derive(Debug, Default, Clone)]
pub struct H2WsOutcome {
    /// The server sent SETTINGS_ENABLE_CONNECT_PROTOCOL = 1.
    pub connect_protocol_enabled: bool,
    /// `:status` of the answer (0 if none came).
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// For a non-200 answer: its body (bounded).
    pub body: Vec<u8>,
    /// For a 200: the payload of every data message received back, in order.
    pub messages: Vec<Vec<u8>>,
    /// For a 200 ended by [`H2WsEnd::Close`]: the server answered our close frame with one.
    pub got_close: bool,
    /// For a 200 ended by [`H2WsEnd::Close`]: the stream ended (END_STREAM or reset) after
    /// the close.
    pub stream_ended: bool,
}

/// How the client ends each stream once its messages have been echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2WsEnd {
    /// Close frame, the server's Close back, END_STREAM, then the end of the server's stream.
    Close,
    /// The first half of a 1000-byte frame, then RST_STREAM (CANCEL): a client that goes away
    /// in the middle of a message. The connection stays up: a fresh stream on it afterwards
    /// must work ([`H2WsRun::after`]).
    Reset,
    /// The streams stay open and the whole TCP connection is dropped: no GOAWAY, no
    /// close_notify, no RST_STREAM.
    DropConnection,
}

/// What happened on one h2 connection with several WebSocket streams.
#[derive(Debug, Default, Clone)]
pub struct H2WsRun {
    /// The server sent SETTINGS_ENABLE_CONNECT_PROTOCOL = 1.
    pub connect_protocol_enabled: bool,
    /// One outcome per stream, in the order of the message lists.
    pub streams: Vec<H2WsOutcome>,
    /// [`H2WsEnd::Reset`]: a fresh stream opened on the same connection after the resets, one
    /// message and a close.
    pub after: Option<H2WsOutcome>,
}

/// Open a TLS + h2 connection to 127.0.0.1:`port` (SNI `localhost`, trusting `pki`), and on
/// one extended CONNECT stream to `path` send each of `messages` as a masked binary frame,
/// waiting for each echo; then close. `Err` only for failures below HTTP (TLS, h2 protocol,
/// timeout).
pub fn websocket_over_h2(
    port: u16,
    pki: &Pki,
    path: &str,
    messages: &[Vec<u8>],
    timeout: Duration,
) -> Result<H2WsOutcome, String> {
    let run = websockets_over_h2(
        port,
        pki,
        path,
        &[messages.to_vec()],
        H2WsEnd::Close,
        timeout,
    )?;
    let mut o = run.streams.into_iter().next().unwrap_or_default();
    o.connect_protocol_enabled = run.connect_protocol_enabled;
    Ok(o)
}

/// As [`websocket_over_h2`], with the stream left idle for `idle` after the first message's
/// echo (the tunnel waits on both sides: poll() must sleep, not spin).
pub fn websocket_over_h2_idle(
    port: u16,
    pki: &Pki,
    path: &str,
    messages: &[Vec<u8>],
    idle: Duration,
    timeout: Duration,
) -> Result<H2WsOutcome, String> {
    let rt = runtime()?;
    let cfg = h2_config(pki);
    let path = path.to_string();
    let streams = vec![messages.to_vec()];
    let run = rt.block_on(async move {
        let go = run(port, cfg, &path, streams, H2WsEnd::Close, idle);
        match tokio::time::timeout(timeout, go).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {timeout:?} (server hang?)")),
        }
    })?;
    let mut o = run.streams.into_iter().next().unwrap_or_default();
    o.connect_protocol_enabled = run.connect_protocol_enabled;
    Ok(o)
}

/// One h2 connection as [`websocket_over_h2`], with one extended CONNECT stream per entry of
/// `streams`, all open at the same time: every stream sends its messages (each a masked binary
/// frame, waiting for its echo) concurrently with the others, then ends as `end` says.
pub fn websockets_over_h2(
    port: u16,
    pki: &Pki,
    path: &str,
    streams: &[Vec<Vec<u8>>],
    end: H2WsEnd,
    timeout: Duration,
) -> Result<H2WsRun, String> {
    let rt = runtime()?;
    let cfg = h2_config(pki);
    let path = path.to_string();
    let streams = streams.to_vec();
    rt.block_on(async move {
        let go = run(port, cfg, &path, streams, end, Duration::ZERO);
        match tokio::time::timeout(timeout, go).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {timeout:?} (server hang?)")),
        }
    })
}

/// A plain h2 GET of `path` (with `headers`): (status, body). `Err` only below HTTP.
pub fn h2_get(
    port: u16,
    pki: &Pki,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let rt = runtime()?;
    let cfg = h2_config(pki);
    let mut req = http::Request::builder()
        .method(http::Method::GET)
        .uri(format!("https://localhost:{port}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(()).map_err(|e| format!("request: {e}"))?;
    rt.block_on(async move {
        let get = async move {
            let (client, conn_task, _) = connect(port, cfg).await?;
            let mut client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
            let (resp, _send) = client
                .send_request(req, true)
                .map_err(|e| format!("send_request: {e}"))?;
            let resp = resp.await.map_err(|e| format!("response: {e}"))?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut out = Vec::new();
            while let Some(chunk) = body.data().await {
                match chunk {
                    Ok(b) => {
                        let _ = body.flow_control().release_capacity(b.len());
                        out.extend_from_slice(&b);
                    }
                    Err(_) => break,
                }
            }
            conn_task.abort();
            Ok((status, out))
        };
        match tokio::time::timeout(timeout, get).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {timeout:?} (server hang?)")),
        }
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn h2_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut c = (*pki.client_config()).clone();
    c.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(c)
}

/// TLS + h2 handshake; then wait (bounded) for the server's SETTINGS: the client, the task
/// driving the connection (abort it to drop the connection), and whether the server enabled
/// extended CONNECT.
async fn connect(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<(SendRequest<Bytes>, tokio::task::JoinHandle<()>, bool), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost".to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|a| a.to_vec());
    if alpn.as_deref() != Some(b"h2".as_slice()) {
        return Err(format!(
            "server did not negotiate h2 (ALPN {:?})",
            alpn.map(|a| String::from_utf8_lossy(&a).into_owned())
        ));
    }
    let (client, conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });

    // The server's SETTINGS arrive with its first frames; wait for them (bounded).
    let mut client = client;
    let mut enabled = false;
    for _ in 0..100 {
        client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
        if client.is_extended_connect_protocol_enabled() {
            enabled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((client, conn_task, enabled))
}

async fn run(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    streams: Vec<Vec<Vec<u8>>>,
    end: H2WsEnd,
    idle: Duration,
) -> Result<H2WsRun, String> {
    let mut out = H2WsRun::default();
    let (client, conn_task, enabled) = connect(port, cfg).await?;
    out.connect_protocol_enabled = enabled;
    if !enabled {
        conn_task.abort();
        return Ok(out);
    }

    let tasks: Vec<_> = streams
        .into_iter()
        .map(|messages| {
            tokio::spawn(one_stream(
                client.clone(),
                port,
                path.to_string(),
                messages,
                end,
                idle,
            ))
        })
        .collect();
    // Streams left open for DropConnection: dropping them would reset them.
    let mut held = Vec::new();
    for t in tasks {
        let (mut o, keep) = t.await.map_err(|e| format!("stream task: {e}"))??;
        o.connect_protocol_enabled = true;
        out.streams.push(o);
        held.extend(keep);
    }
    match end {
        H2WsEnd::Close => {}
        H2WsEnd::Reset => {
            // The connection must still serve: a fresh WebSocket stream on it.
            let (mut o, _) = one_stream(
                client.clone(),
                port,
                path.to_string(),
                vec![b"after the reset".to_vec()],
                H2WsEnd::Close,
                Duration::ZERO,
            )
            .await?;
            o.connect_protocol_enabled = true;
            out.after = Some(o);
        }
        H2WsEnd::DropConnection => {
            // Dropping the task that owns the connection closes its socket, streams open.
            conn_task.abort();
            let _ = conn_task.await;
            drop(held);
            return Ok(out);
        }
    }
    drop(held);
    conn_task.abort();
    Ok(out)
}

/// The next data message's payload (control frames skipped); `buf` keeps what follows it.
async fn next_message(body: &mut RecvStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    loop {
        if let Some((f, used)) = ws::decode_frame(buf) {
            buf.drain(..used);
            if f.opcode == ws::OP_TEXT || f.opcode == ws::OP_BINARY {
                return Ok(f.payload);
            }
            continue;
        }
        match body.data().await {
            Some(Ok(b)) => {
                let _ = body.flow_control().release_capacity(b.len());
                buf.extend_from_slice(&b);
            }
            Some(Err(e)) => return Err(format!("stream error: {e}")),
            None => return Err("stream ended before the echo".into()),
        }
    }
}

type Held = (SendStream<Bytes>, RecvStream);

/// One extended CONNECT stream: its answer, its messages and echoes (and `idle` after the
/// first echo), its end. With [`H2WsEnd::DropConnection`] the stream's handles are handed
/// back, still open.
async fn one_stream(
    client: SendRequest<Bytes>,
    port: u16,
    path: String,
    messages: Vec<Vec<u8>>,
    end: H2WsEnd,
    idle: Duration,
) -> Result<(H2WsOutcome, Option<Held>), String> {
    let mut out = H2WsOutcome::default();
    let mut client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://localhost:{port}{path}"))
        .header("sec-websocket-version", "13")
        .header("origin", format!("https://localhost:{port}"))
        .extension(h2::ext::Protocol::from_static("websocket"))
        .body(())
        .map_err(|e| format!("request: {e}"))?;
    let (resp, mut send) = client
        .send_request(req, false)
        .map_err(|e| format!("send_request: {e}"))?;
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    out.status = resp.status().as_u16();
    out.headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = resp.into_body();

    if out.status != 200 {
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(b) => {
                    let _ = body.flow_control().release_capacity(b.len());
                    if out.body.len() < 64 * 1024 {
                        out.body.extend_from_slice(&b);
                    }
                }
                Err(_) => break,
            }
        }
        return Ok((out, None));
    }

    let mut buf: Vec<u8> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        send.send_data(Bytes::from(ws::client_frame(ws::OP_BINARY, m)), false)
            .map_err(|e| format!("send_data: {e}"))?;
        out.messages.push(next_message(&mut body, &mut buf).await?);
        if i == 0 && !idle.is_zero() {
            tokio::time::sleep(idle).await;
        }
    }

    match end {
        H2WsEnd::Close => {}
        H2WsEnd::Reset => {
            let frame = ws::client_frame(ws::OP_BINARY, &crate::binary_payload(1000, 9));
            send.send_data(Bytes::from(frame[..frame.len() / 2].to_vec()), false)
                .map_err(|e| format!("send_data: {e}"))?;
            // Let the half frame reach the tunnel before the reset.
            tokio::time::sleep(Duration::from_millis(100)).await;
            send.send_reset(h2::Reason::CANCEL);
            return Ok((out, None));
        }
        H2WsEnd::DropConnection => return Ok((out, Some((send, body)))),
    }

    // Close: our close frame, the server's close back, then the end of the stream.
    send.send_data(
        Bytes::from(ws::client_frame(ws::OP_CLOSE, &[0x03, 0xe8])),
        false,
    )
    .map_err(|e| format!("send close: {e}"))?;
    loop {
        if let Some((f, used)) = ws::decode_frame(&buf) {
            buf.drain(..used);
            if f.opcode == ws::OP_CLOSE {
                out.got_close = true;
                break;
            }
            continue;
        }
        match body.data().await {
            Some(Ok(b)) => {
                let _ = body.flow_control().release_capacity(b.len());
                buf.extend_from_slice(&b);
            }
            Some(Err(_)) | None => break,
        }
    }
    let _ = send.send_data(Bytes::new(), true);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        // Until the end of the stream (None) or its reset (an error).
        while let Some(Ok(b)) = body.data().await {
            let _ = body.flow_control().release_capacity(b.len());
        }
    })
    .await;
    out.stream_ended = ended.is_ok();
    Ok((out, None))
}
