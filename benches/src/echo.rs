//! The one echo backend every target proxies to (and the "direct" target
//! itself): tokio + tokio-tungstenite, any path, every data message sent
//! back as it came. Replies are batched: everything already readable is
//! echoed before one flush.

use std::net::SocketAddr;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub fn ws_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(16 << 20);
    c.max_frame_size = Some(16 << 20);
    c
}

/// For the capacity climb (tens of thousands of idle connections per
/// process): 4 KiB read buffers instead of tungstenite's 128 KiB, writes
/// unbuffered; messages there are 64 bytes.
pub fn small_ws_config() -> WebSocketConfig {
    let mut c = ws_config();
    c.read_buffer_size = 4096;
    c.write_buffer_size = 0;
    c
}

/// Serve on 127.0.0.1:`port` (and every further port) until killed (the
/// driver kills it). `small`: [`small_ws_config`] for the climb.
pub fn serve(ports: &[u16], small: bool) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let cfg = if small { small_ws_config() } else { ws_config() };
    rt.block_on(async move {
        let mut ls = Vec::new();
        for &port in ports {
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            // A deep backlog: the climb connects hundreds at a time.
            let l = tokio::net::TcpSocket::new_v4()
                .and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.bind(addr)?;
                    s.listen(4096)
                })
                .unwrap_or_else(|e| fail(&format!("listen {addr}: {e}")));
            ls.push(l);
        }
        let mut tasks = Vec::new();
        for l in ls {
            tasks.push(tokio::spawn(accept_loop(l, cfg)));
        }
        for t in tasks {
            let _ = t.await;
        }
        fail("listeners ended")
    })
}

async fn accept_loop(l: TcpListener, cfg: WebSocketConfig) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                tokio::spawn(conn(s, cfg));
            }
            // EMFILE and the like: wait, never spin.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("wst-bench echo: {msg}");
    std::process::exit(1)
}

async fn conn(s: TcpStream, cfg: WebSocketConfig) {
    let _ = s.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(s, Some(cfg)).await
    else {
        return;
    };
    // Bounded by the peer: each iteration needs a message from it.
    while let Some(Ok(m)) = ws.next().await {
        if !is_data(&m) {
            if m.is_close() {
                break;
            }
            continue;
        }
        if ws.feed(m).await.is_err() {
            return;
        }
        // Echo what is already here too, then flush once (at most 256).
        for _ in 0..256 {
            match ws.next().now_or_never() {
                Some(Some(Ok(m))) if is_data(&m) => {
                    if ws.feed(m).await.is_err() {
                        return;
                    }
                }
                Some(Some(Ok(m))) if !m.is_close() => {}
                Some(_) => {
                    let _ = ws.flush().await;
                    return;
                }
                None => break,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
    let _ = ws.close(None).await;
}

fn is_data(m: &Message) -> bool {
    matches!(m, Message::Binary(_) | Message::Text(_))
}
