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
    /// Request path ("/ws" unless the target routes several).
    pub path: String,
    /// Source address to connect from (the climb spreads clients over
    /// 127.0.0.0/8 to stay clear of the ephemeral port range).
    pub src: Option<std::net::Ipv4Addr>,
    /// TCP connect + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
    /// Small buffers (the climb: tens of thousands per process).
    pub small: bool,
}

impl Dest {
    pub fn new(port: u16, tls: Option<Arc<rustls::ClientConfig>>) -> Dest {
        Dest { port, tls, path: "/ws".into(), src: None, connect_timeout: CONNECT_TIMEOUT, small: false }
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Ws = WebSocketStream<Box<dyn Io>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn connect(d: &Dest) -> Result<Ws, String> {
    timeout(d.connect_timeout, connect_inner(d))
        .await
        .map_err(|_| "connect: timeout".to_string())?
}

async fn connect_inner(d: &Dest) -> Result<Ws, String> {
    let to: std::net::SocketAddr = ([127, 0, 0, 1], d.port).into();
    let s = match d.src {
        None => TcpStream::connect(to).await,
        Some(ip) => {
            let sock = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            // The port is chosen at connect (by the whole 4-tuple), not at bind.
            {
                use std::os::fd::AsRawFd;
                let one: libc::c_int = 1;
                // SAFETY: a valid socket and a c_int option value.
                unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::IPPROTO_IP,
                        libc::IP_BIND_ADDRESS_NO_PORT,
                        &one as *const libc::c_int as *const libc::c_void,
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
            }
            sock.bind((ip, 0).into()).map_err(|e| format!("bind {ip}: {e}"))?;
            sock.connect(to).await
        }
    }
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
    let url = format!("{scheme}://127.0.0.1:{}{}", d.port, d.path);
    let cfg = if d.small { crate::echo::small_ws_config() } else { crate::echo::ws_config() };
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, io, Some(cfg))
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

#[derive(Clone, Copy, Debug)]
pub struct TpResult {
    /// Echoed payload MB/s (10^6 bytes) as received back by the clients.
    pub mb_per_s: f64,
    /// Server CPU seconds per GB (10^9 bytes) through the tunnel, both
    /// directions counted; None when no server process is sampled.
    pub cpu_s_per_gb: Option<f64>,
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

// ---------------------------------------------------------------------------
// Sliced runs: every target's connections stay open for the whole round and
// the targets take turns in short slices, so that a burst of noise from the
// shared machine falls on all of them alike.
// ---------------------------------------------------------------------------

/// Round-trip connections of one target, and what each slice measured.
pub struct RtGroup {
    conns: Vec<Ws>,
    size: usize,
    /// Per slice: round trips/s, p50 and p99 latency (µs).
    slices: Vec<RtResult>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl RtGroup {
    pub async fn connect(d: &Dest, conns: usize, size: usize) -> Result<RtGroup, String> {
        Ok(RtGroup {
            conns: connect_all(d, conns).await?,
            size,
            slices: Vec::new(),
        })
    }

    /// Round trips back to back on every connection for `dur`.
    pub async fn slice(&mut self, dur: Duration) -> Result<(), String> {
        let start = Instant::now();
        let end = start + dur;
        let mut tasks = Vec::with_capacity(self.conns.len());
        for (i, mut ws) in self.conns.drain(..).enumerate() {
            let msg = payload(self.size, i as u64 + 1);
            tasks.push(tokio::spawn(async move {
                let mut lat: Vec<u32> = Vec::with_capacity(4096);
                while Instant::now() < end {
                    let t = Instant::now();
                    echo_once(&mut ws, &msg).await?;
                    lat.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                }
                Ok::<_, String>((ws, lat))
            }));
        }
        let mut err = None;
        let mut lat = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok((ws, l))) => {
                    self.conns.push(ws);
                    lat.extend(l);
                }
                Ok(Err(e)) => err = Some(e),
                Err(e) => err = Some(format!("task: {e}")),
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        let secs = start.elapsed().as_secs_f64();
        if lat.is_empty() || secs <= 0.0 {
            return Err("no round trip completed".into());
        }
        lat.sort_unstable();
        let pct = |p: f64| {
            let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
            lat.get(i.min(lat.len() - 1)).copied().unwrap_or(0) as f64 / 1000.0
        };
        self.slices.push(RtResult {
            per_sec: lat.len() as f64 / secs,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
        });
        Ok(())
    }

    /// Forget what was measured (after a warm-up slice).
    pub fn reset(&mut self) {
        self.slices.clear();
    }

    /// The median over the slices of each figure (a slice that the shared
    /// machine's noise spoiled does not decide it).
    pub fn result(self) -> Result<RtResult, String> {
        if self.slices.is_empty() {
            return Err("no round trip completed".into());
        }
        let f = |g: fn(&RtResult) -> f64| median(&mut self.slices.iter().map(g).collect::<Vec<_>>());
        Ok(RtResult {
            per_sec: f(|r| r.per_sec),
            p50_us: f(|r| r.p50_us),
            p99_us: f(|r| r.p99_us),
        })
    }
}

/// Throughput connections of one target: a writer and a reader task per
/// connection, sending only while `go` is set.
pub struct Flow {
    go: tokio::sync::watch::Sender<bool>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    bytes: u64,
    /// Per slice, MB/s.
    rates: Vec<f64>,
    cpu: Option<f64>,
}

impl Flow {
    pub async fn connect(d: &Dest, conns: usize, size: usize) -> Result<Flow, String> {
        let all = connect_all(d, conns).await?;
        let (go, go_rx) = tokio::sync::watch::channel(false);
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let batch = (65536 / size).max(1);
        let window = (window_bytes() / size).max(batch);
        let mut tasks = Vec::new();
        for (i, ws) in all.into_iter().enumerate() {
            let (mut tx, mut rx) = ws.split();
            let msg = payload(size, i as u64 + 7);
            let credit = Arc::new(tokio::sync::Semaphore::new(window));
            let credit_r = credit.clone();
            let mut go_rx = go_rx.clone();
            let (sent_w, failed_w) = (sent.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                // Runs until aborted; each send needs credit, each credit an echo.
                loop {
                    if go_rx.wait_for(|g| *g).await.is_err() {
                        return;
                    }
                    while *go_rx.borrow() {
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
                            sent_w.fetch_add(1, Ordering::Relaxed);
                        }
                        if tx.flush().await.is_err() {
                            failed_w.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }));
            let (failed_r, rcv) = (failed.clone(), received.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(m) = rx.next().await {
                    match m {
                        Ok(Message::Binary(b)) if b.len() == size => {
                            rcv.fetch_add(1, Ordering::Relaxed);
                            credit_r.add_permits(1);
                        }
                        Ok(Message::Ping(_) | Message::Pong(_)) => {}
                        _ => break,
                    }
                }
                failed_r.store(true, Ordering::Relaxed);
            }));
        }
        Ok(Flow {
            go,
            sent,
            received,
            failed,
            tasks,
            bytes: 0,
            rates: Vec::new(),
            cpu: None,
        })
    }

    /// Send for `warm + dur`, count the echoes (and `cpu()`) over the last
    /// `dur`, then stop sending and wait until every echo is back.
    pub async fn slice(
        &mut self,
        size: usize,
        warm: Duration,
        dur: Duration,
        cpu: &dyn Fn() -> Option<f64>,
    ) -> Result<(), String> {
        let _ = self.go.send(true);
        tokio::time::sleep(warm).await;
        let (m0, c0, t0) = (self.received.load(Ordering::Relaxed), cpu(), Instant::now());
        tokio::time::sleep(dur).await;
        let (m1, c1, t1) = (self.received.load(Ordering::Relaxed), cpu(), Instant::now());
        let _ = self.go.send(false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.received.load(Ordering::Relaxed) < self.sent.load(Ordering::Relaxed) {
            if self.failed.load(Ordering::Relaxed) || Instant::now() > deadline {
                return Err("a connection failed during the throughput run".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if self.failed.load(Ordering::Relaxed) {
            return Err("a connection failed during the throughput run".into());
        }
        let bytes = (m1 - m0) * size as u64;
        self.bytes += bytes;
        self.rates.push(bytes as f64 / 1e6 / (t1 - t0).as_secs_f64().max(1e-6));
        if let (Some(a), Some(b)) = (c0, c1) {
            self.cpu = Some(self.cpu.unwrap_or(0.0) + (b - a).max(0.0));
        }
        Ok(())
    }

    /// MB/s: the median over the slices; CPU per GB: over all of them.
    pub fn result(mut self) -> Result<TpResult, String> {
        for t in &self.tasks {
            t.abort();
        }
        if self.bytes == 0 || self.rates.is_empty() {
            return Err("no bytes echoed".into());
        }
        Ok(TpResult {
            mb_per_s: median(&mut self.rates),
            cpu_s_per_gb: self.cpu.map(|c| c / (2.0 * self.bytes as f64 / 1e9)),
        })
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
