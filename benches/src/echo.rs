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

/// Serve on 127.0.0.1:`port` until killed (the driver kills it).
pub fn serve(port: u16) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    rt.block_on(async move {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let l = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(conn(s));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    })
}

fn fail(msg: &str) -> ! {
    eprintln!("wst-bench echo: {msg}");
    std::process::exit(1)
}

async fn conn(s: TcpStream) {
    let _ = s.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(s, Some(ws_config())).await
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
