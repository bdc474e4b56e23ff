//! The load generator: WebSocket clients (tokio-tungstenite, an
//! implementation independent of the proxies under test) for the echo
//! round-trip, throughput and idle-tunnel workloads. Every loop is bounded
//! by a deadline, every network wait by a timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Where a workload connects: 127.0.0.1:port, ws:// or wss://.
#[derive(Clone)]
pub struct Dest {
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Ws = WebSocketStream<Box<dyn Io>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn connect(d: &Dest) -> Result<Ws, String> {
    timeout(CONNECT_TIMEOUT, connect_inner(d))
        .await
        .map_err(|_| "connect: timeout".to_string())?
}

async fn connect_inner(d: &Dest) -> Result<Ws, String> {
    let s = TcpStream::connect(("127.0.0.1", d.port))
        .await
        .map_err(|e| format!("connect 127.0.0.1:{}: {e}", d.port))?;
    let _ = s.set_nodelay(true);
    let (io, scheme): (Box<dyn Io>, &str) = match &d.tls {
        None => (Box::new(s), "ws"),
        Some(cfg) => {
            let c = tokio_rustls::TlsConnector::from(cfg.clone());
            let name = rustls::pki_types::ServerName::IpAddress(
                std::net::Ipv4Addr::LOCALHOST.into(),
            );
            let t = c
                .connect(name, s)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            (Box::new(t), "wss")
        }
    };
    let url = format!("{scheme}://127.0.0.1:{}/ws", d.port);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, io, Some(crate::echo::ws_config()))
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(ws)
}

/// Send one message and wait for its echo (checked byte for byte).
pub async fn echo_once(ws: &mut Ws, payload: &tokio_tungstenite::tungstenite::Bytes) -> Result<(), String> {
    ws.send(Message::Binary(payload.clone()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        match timeout(REPLY_TIMEOUT, ws.next()).await {
            Err(_) => return Err("no echo within 10 s".into()),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(format!("read: {e}")),
            Ok(Some(Ok(Message::Binary(b)))) if b == *payload => return Ok(()),
            Ok(Some(Ok(Message::Binary(_)))) => return Err("echo differs".into()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return Err(format!("unexpected {m:?}")),
        }
    }
}

pub fn payload(size: usize, seed: u64) -> tokio_tungstenite::tungstenite::Bytes {
    let mut x = seed | 1;
    let v: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    v.into()
}

async fn connect_all(d: &Dest, n: usize) -> Result<Vec<Ws>, String> {
    let mut v = Vec::with_capacity(n);
    let p = payload(64, 99);
    for _ in 0..n {
        let mut ws = connect(d).await?;
        echo_once(&mut ws, &p).await?;
        v.push(ws);
    }
    Ok(v)
}

#[derive(Clone, Copy, Debug)]
pub struct RtResult {
    pub per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// `conns` connections, each sending a `size`-byte message and waiting for
/// its echo, back to back, for `warmup + dur`; only round trips that start
/// inside the measured window count.
pub async fn round_trips(
    d: &Dest,
    conns: usize,
    size: usize,
    warmup: Duration,
    dur: Duration,
) -> Result<RtResult, String> {
    let all = connect_all(d, conns).await?;
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + warmup;
    let end = from + dur;
    let mut tasks = Vec::with_capacity(conns);
    for (i, mut ws) in all.into_iter().enumerate() {
        let msg = payload(size, i as u64 + 1);
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 14);
            tokio::time::sleep_until(start.into()).await;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                echo_once(&mut ws, &msg).await?;
                if t >= from {
                    let ns = t.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                    lat.push(ns);
                }
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("task: {e}")),
        }
    }
    if lat.is_empty() {
        return Err("no round trip completed".into());
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i.min(lat.len() - 1)).copied().unwrap_or(0) as f64 / 1000.0
    };
    Ok(RtResult {
        per_sec: lat.len() as f64 / dur.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

#[derive(Clone, Copy, Debug)]
pub struct TpResult {
    /// Echoed payload MB/s (10^6 bytes) as received back by the clients.
    pub mb_per_s: f64,
    /// Server CPU seconds per GB (10^9 bytes) through the tunnel, both
    /// directions counted; None when no server process is sampled.
    pub cpu_s_per_gb: Option<f64>,
}

/// `conns` connections, each with a writer sending `size`-byte messages as
/// fast as the path takes them and a reader counting the echoes.
/// `cpu()` is sampled at both ends of the measured window.
pub async fn throughput(
    d: &Dest,
    conns: usize,
    size: usize,
    warmup: Duration,
    dur: Duration,
    cpu: &dyn Fn() -> Option<f64>,
) -> Result<TpResult, String> {
    let all = connect_all(d, conns).await?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let hard_end = Instant::now() + warmup + dur + Duration::from_secs(5);
    let mut tasks = Vec::new();
    // Flush after about 64 KiB of messages.
    let batch = (65536 / size).max(1);
    // At most WINDOW bytes sent and not yet echoed, per connection: like a
    // real client, and without it a proxy that blocks on one direction's
    // write while the other fills up (the stock legacy tunnel) deadlocks
    // against any echo server that stops reading while it writes.
    let window = (window_bytes() / size).max(batch);
    for (i, ws) in all.into_iter().enumerate() {
        let (mut tx, mut rx) = ws.split();
        let msg = payload(size, i as u64 + 7);
        let credit = Arc::new(tokio::sync::Semaphore::new(window));
        let credit_r = credit.clone();
        let (stop_w, failed_w) = (stop.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while !stop_w.load(Ordering::Relaxed) && Instant::now() < hard_end {
                for _ in 0..batch {
                    match timeout(REPLY_TIMEOUT, credit.acquire()).await {
                        Ok(Ok(p)) => p.forget(),
                        _ => {
                            failed_w.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                    if tx.feed(Message::Binary(msg.clone())).await.is_err() {
                        failed_w.store(true, Ordering::Relaxed);
                        return;
                    }
                }
                if tx.flush().await.is_err() {
                    failed_w.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }));
        let (stop_r, failed_r, rcv) = (stop.clone(), failed.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            while !stop_r.load(Ordering::Relaxed) && Instant::now() < hard_end {
                match timeout(REPLY_TIMEOUT, rx.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) if b.len() == size => {
                        rcv.fetch_add(b.len() as u64, Ordering::Relaxed);
                        credit_r.add_permits(1);
                    }
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                    _ => {
                        if !stop_r.load(Ordering::Relaxed) {
                            failed_r.store(true, Ordering::Relaxed);
                        }
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    let (b0, c0, t0) = (received.load(Ordering::Relaxed), cpu(), Instant::now());
    tokio::time::sleep(dur).await;
    let (b1, c1, t1) = (received.load(Ordering::Relaxed), cpu(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    if failed.load(Ordering::Relaxed) {
        return Err("a connection failed during the throughput run".into());
    }
    let bytes = b1.saturating_sub(b0);
    if bytes == 0 {
        return Err("no bytes echoed".into());
    }
    let secs = (t1 - t0).as_secs_f64();
    let cpu_s_per_gb = match (c0, c1) {
        (Some(a), Some(b)) => Some((b - a).max(0.0) / (2.0 * bytes as f64 / 1e9)),
        _ => None,
    };
    Ok(TpResult {
        mb_per_s: bytes as f64 / 1e6 / secs,
        cpu_s_per_gb,
    })
}

/// Bytes in flight per connection in the throughput runs (BENCH_WINDOW_KIB).
pub fn window_bytes() -> usize {
    std::env::var("BENCH_WINDOW_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(512)
        .clamp(4, 65536)
        * 1024
}

/// Open up to `n` more tunnels (each checked with one echo), `parallel` at
/// a time, appending them to `held`; stops at the first failure. Returns
/// the number opened and the first error, if any.
pub async fn open_idle(
    d: &Dest,
    n: usize,
    parallel: usize,
    held: &mut Vec<Ws>,
) -> (usize, Option<String>) {
    let mut opened = 0;
    let p = payload(64, 5);
    let mut remaining = n;
    while remaining > 0 {
        let k = remaining.min(parallel.max(1));
        let mut set = Vec::with_capacity(k);
        for _ in 0..k {
            let (d, p) = (d.clone(), p.clone());
            set.push(tokio::spawn(async move {
                let mut ws = connect(&d).await?;
                echo_once(&mut ws, &p).await?;
                Ok::<_, String>(ws)
            }));
        }
        let mut err = None;
        for t in set {
            match t.await {
                Ok(Ok(ws)) => {
                    held.push(ws);
                    opened += 1;
                }
                Ok(Err(e)) => err = Some(e),
                Err(e) => err = Some(format!("task: {e}")),
            }
        }
        if err.is_some() {
            return (opened, err);
        }
        remaining -= k;
    }
    (opened, None)
}

/// Check every `step`-th held tunnel with an echo; the number that failed.
pub async fn verify_held(held: &mut [Ws], step: usize) -> usize {
    let p = payload(64, 6);
    let mut bad = 0;
    for ws in held.iter_mut().step_by(step.max(1)) {
        if echo_once(ws, &p).await.is_err() {
            bad += 1;
        }
    }
    bad
}
