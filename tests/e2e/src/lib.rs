//! End-to-end test harness for mod_proxy_wstunnel.
//!
//! * [`httpd`]: build an httpd.conf in a temp dir, start httpd on free ports, read its logs, stop it.
//! * [`backend`]: the `wst-echo` backend process and Debian's `websocketd`.
//! * [`client`]: raw TCP/TLS client and WebSocket client with full control over the request bytes.
//! * [`pki`]: a throw-away CA and server certificate for 127.0.0.1/localhost.
//! * [`ws`]: WebSocket frame and handshake helpers shared by the clients and `wst-echo`.
//! * [`h2ws`]: WebSocket over HTTP/2 (RFC 8441 extended CONNECT) client.
//! * [`procfs`]: memory, descriptors and TCP states of httpd's processes from /proc.
//! * [`faults`], [`framebackend`]: scripted raw-TCP backends, on [`rawbackend`]'s accept loop.
//! * [`need`]: skip guards; [`tunnels`]: opening and counting tunnels (the cap, mod_status);
//!   [`notes`]: the module's request notes in a log; [`tunnellog`]: `ProxyWebsocketTunnelLog`'s
//!   records; [`handover`]: httpds for tunnels handed to the child's reactor.
//!
//! Every network operation has a timeout ([`IO_TIMEOUT`]) so that no test can hang, whatever
//! httpd does.

pub mod backend;
pub mod client;
pub mod faults;
pub mod framebackend;
pub mod h2ws;
pub mod handover;
pub mod httpd;
pub mod need;
pub mod net;
pub mod notes;
pub mod observe;
pub mod pki;
pub mod procfs;
pub mod rawbackend;
pub mod tunnellog;
pub mod tunnels;
pub mod ws;

pub use backend::{Websocketd, WstEcho};
pub use client::{
    Browser, RawClient, Response, Target, UpgradeRequest, WsClient, CHROME_HEADERS, FIREFOX_HEADERS,
};
pub use httpd::{AccessLine, Httpd, HttpdBuilder, StopReport};
pub use pki::Pki;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Default timeout of every socket read/write done by the harness and its clients.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// The repository root (tests/e2e/../..).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf())
        .unwrap_or(manifest)
}

/// Poll `f` every 20 ms until it returns `Some`, or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic test payload of `len` bytes (printable ASCII, so it is also valid UTF-8 text).
pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b' ' + ((i.wrapping_mul(31).wrapping_add(seed as usize * 7) % 95) as u8))
        .collect()
}

/// Deterministic binary payload of `len` bytes covering all byte values.
pub fn binary_payload(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Message `i` of wst-echo's `/flood` route: `i` as a big-endian u64, then `size - 8` bytes
/// that depend on `i` (so a lost, repeated or reordered message shows).
pub fn flood_message(i: u64, size: usize) -> Vec<u8> {
    let size = size.max(8);
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(&i.to_be_bytes());
    let mut x = (i as u32).wrapping_mul(0x9e37_79b9) | 1;
    while m.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        m.push((x >> 24) as u8);
    }
    m
}

/// A mod_ssl vhost on the extra port `TLS_PORT` (add `.module("ssl")` and `.listen("TLS_PORT")`)
/// whose `/ws/` goes to `{SCHEME}://localhost:{BACKEND_PORT}/`; a wss:// backend is verified
/// against the test CA. Reach it with `h.tls_target(h.port_of("TLS_PORT"))`.
pub const TLS_FRONT: &str = r#"
<VirtualHost 127.0.0.1:{TLS_PORT}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile "{CERT}"
    SSLCertificateKeyFile "{KEY}"
    SSLProxyEngine on
    SSLProxyVerify require
    SSLProxyCACertificateFile "{CA}"
    ProxyPass /ws/ {SCHEME}://localhost:{BACKEND_PORT}/
</VirtualHost>
"#;

/// An httpd with [`TLS_FRONT`] whose `/ws/` goes to the TLS backend on `backend_port`
/// (`wss://localhost`): TLS on both sides of the tunnel, both endpoints filtered.
pub fn start_tls_both_sides(pki: &Pki, backend_port: u16) -> Httpd {
    Httpd::builder()
        .module("ssl")
        .pki(pki)
        .listen("TLS_PORT")
        .var("BACKEND_PORT", backend_port)
        .var("SCHEME", "wss")
        .config(TLS_FRONT)
        .start()
}
