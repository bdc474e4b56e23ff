//! WebSocket over HTTP/2 (RFC 8441): an h2 client over rustls (ALPN h2) that opens an
//! extended CONNECT stream (`:method CONNECT`, `:protocol websocket`, `:scheme https`, `:path`,
//! `:authority`, `sec-websocket-version: 13`) and exchanges WebSocket frames in DATA frames.
//! Everything runs under one overall timeout, so a server that hangs makes a test fail, not hang.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
    /// For a 200: the server answered our close frame with one.
    pub got_close: bool,
    /// For a 200: the stream ended (END_STREAM or reset) after the close.
    pub stream_ended: bool,
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let cfg = {
        let mut c = (*pki.client_config()).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    };
    let path = path.to_string();
    let messages = messages.to_vec();
    rt.block_on(async move {
        match tokio::time::timeout(timeout, run(port, cfg, &path, &messages)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {timeout:?} (server hang?)")),
        }
    })
}

async fn run(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    messages: &[Vec<u8>],
) -> Result<H2WsOutcome, String> {
    let mut out = H2WsOutcome::default();
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
    for _ in 0..100 {
        client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
        if client.is_extended_connect_protocol_enabled() {
            out.connect_protocol_enabled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !out.connect_protocol_enabled {
        conn_task.abort();
        return Ok(out);
    }

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
        conn_task.abort();
        return Ok(out);
    }

    let mut buf: Vec<u8> = Vec::new();
    for m in messages {
        send.send_data(Bytes::from(ws::client_frame(ws::OP_BINARY, m)), false)
            .map_err(|e| format!("send_data: {e}"))?;
        loop {
            if let Some((f, used)) = ws::decode_frame(&buf) {
                buf.drain(..used);
                if f.opcode == ws::OP_TEXT || f.opcode == ws::OP_BINARY {
                    out.messages.push(f.payload);
                    break;
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
        loop {
            match body.data().await {
                Some(Ok(b)) => {
                    let _ = body.flow_control().release_capacity(b.len());
                }
                Some(Err(_)) | None => break,
            }
        }
    })
    .await;
    out.stream_ended = ended.is_ok();
    conn_task.abort();
    Ok(out)
}
