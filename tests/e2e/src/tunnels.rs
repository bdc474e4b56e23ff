//! Opening tunnels and counting them, for the tests of `ProxyWebsocketMaxTunnels` and of the
//! counts mod_status shows (`WebSocketTunnels`, `WebSocketTunnelsTotal`,
//! `WebSocketTunnelsRefused`, and the split `WebSocketTunnelsThreaded` / `WebSocketTunnelsAsync`):
//! configuration snippets, tunnels that must open or must be refused
//! by the cap, the three counts from `/server-status?auto`, and what the backend received.
//!
//! Every wait is bounded by [`WAIT`].

use std::time::Duration;

use tungstenite::Message;

use crate::backend::WstEcho;
use crate::client::{check_101, roundtrip, Browser, RawClient, Target, UpgradeRequest, WsClient};
use crate::httpd::{Httpd, HttpdBuilder};
use crate::observe::{retry, status_auto, status_num, try_upgrade};

/// How long the helpers here (and the tests using them) wait for something to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A client WebSocket through httpd.
pub type Ws = tungstenite::WebSocket<crate::net::Stream>;

/// mod_status's handler at `/server-status` (load the module with `.module("status")`).
pub const SERVER_STATUS: &str = r#"
<Location /server-status>
    SetHandler server-status
</Location>
"#;

/// A builder for an httpd with mod_status at `/server-status` ([`SERVER_STATUS`]) and
/// `{BACKEND_PORT}` set to `b`'s port; add the routes, the cap, the MPM and its tuning.
pub fn with_server_status(b: &WstEcho) -> HttpdBuilder {
    Httpd::builder()
        .module("status")
        .var("BACKEND_PORT", b.port())
        .config(SERVER_STATUS)
}

/// A cap of 2 on `/ws/` to the backend on `{BACKEND_PORT}`.
pub const CAP_2: &str = r#"
ProxyWebsocketMaxTunnels 2
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#;

/// MPM tuning for tunnels in several processes. prefork: 5 children up front (so that every
/// tunnel can have its own); threaded MPMs: 3 small children of 4 threads, so that tunnels may
/// land in different processes. `min_spare_servers` / `min_spare_threads` decide how much idle
/// capacity httpd keeps (1 and 1: killing one child needs no replacement).
pub fn several_children(min_spare_servers: u32, min_spare_threads: u32) -> String {
    format!(
        r#"
<IfModule prefork.c>
    StartServers 5
    MinSpareServers {min_spare_servers}
    MaxSpareServers 10
</IfModule>
<IfModule worker.c>
    StartServers 3
    ThreadsPerChild 4
    MinSpareThreads {min_spare_threads}
    MaxSpareThreads 16
</IfModule>
<IfModule event.c>
    StartServers 3
    ThreadsPerChild 4
    MinSpareThreads {min_spare_threads}
    MaxSpareThreads 16
</IfModule>
"#
    )
}

/// Tunnel number `i` to `path` (Chrome's or Firefox's upgrade, alternately), checked with one
/// echoed message.
pub fn open_tunnel(t: &Target, path: &str, i: usize) -> Ws {
    let (_r, mut ws) = WsClient::connect(t, path, Browser::ALL[i % 2])
        .unwrap_or_else(|e| panic!("tunnel {i} to {path}: {e}"));
    let m = format!("tunnel {i}");
    assert_eq!(
        roundtrip(&mut ws, Message::text(m.clone())).unwrap(),
        Message::text(m)
    );
    ws
}

/// An upgrade refused by the cap: 503 with Retry-After: 10.
pub fn assert_refused_by_cap(t: &Target, path: &str) {
    let req = UpgradeRequest::new(path, &t.host, Browser::Firefox);
    let (mut r, mut c) = try_upgrade(t, &req).unwrap();
    assert_eq!(r.status, 503, "{path}: over the cap:\n{}", r.head);
    assert_eq!(
        r.header("Retry-After").map(str::trim),
        Some("10"),
        "{path}:\n{}",
        r.head
    );
    let _ = c.read_body(&mut r, false);
}

/// A new tunnel as soon as the cap allows (bounded retries every 100 ms; any answer but 101
/// or 503 fails the test); returns it and the attempts.
pub fn tunnel_when_allowed(t: &Target, path: &str) -> (Ws, usize) {
    let (ws, n) = retry(WAIT, Duration::from_millis(100), || {
        let req = UpgradeRequest::new(path, &t.host, Browser::Chrome);
        let (r, c) = try_upgrade(t, &req).ok()?;
        if r.status == 101 {
            check_101(&req, &r).unwrap();
            Some(c.into_websocket())
        } else {
            assert_eq!(r.status, 503, "{path}: unexpected answer:\n{}", r.head);
            None
        }
    });
    let ws = ws.unwrap_or_else(|| panic!("{path}: still refused after {WAIT:?}"));
    (ws, n)
}

/// Upgrades to `path` every 200 ms, for at most [`WAIT`], until one is a 101 (whatever the
/// other answers); the tunnel if one opened, and the attempts.
pub fn upgrade_when_possible(t: &Target, path: &str) -> (Option<Ws>, usize) {
    retry(WAIT, Duration::from_millis(200), || {
        let req = UpgradeRequest::new(path, &t.host, Browser::Chrome);
        let (r, c) = try_upgrade(t, &req).ok()?;
        (r.status == 101).then(|| c.into_websocket())
    })
}

/// Upgrade with a raw client; returns it after the 101 (the head is consumed, any bytes after
/// it stay buffered).
pub fn raw_tunnel(t: &Target, path: &str) -> RawClient {
    let req = UpgradeRequest::new(path, &t.host, Browser::Firefox);
    let (r, c) = try_upgrade(t, &req).unwrap();
    check_101(&req, &r).unwrap_or_else(|e| panic!("{path}: {e}"));
    c
}

/// An `Upgrade: h2c` request for `path` (not a WebSocket: mod_proxy_http's plain request),
/// with `Connection: close`.
pub fn h2c_upgrade(path: &str, host: &str) -> UpgradeRequest {
    UpgradeRequest::plain_get(path, host)
        .header("Connection", "Upgrade, HTTP2-Settings, close")
        .header("Upgrade", "h2c")
        .header("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")
}

/// (open, total, refused): `WebSocketTunnels`, `WebSocketTunnelsTotal`,
/// `WebSocketTunnelsRefused`.
pub type Counts = (u64, u64, u64);

/// The three counts from `/server-status?auto` (see [`SERVER_STATUS`]); panics without them.
pub fn counts(t: &Target) -> Counts {
    let m = status_auto(t, "/server-status").unwrap();
    let get = |k: &str| {
        status_num(&m, k).unwrap_or_else(|| panic!("no {k} in /server-status?auto: {m:?}"))
    };
    (
        get("WebSocketTunnels"),
        get("WebSocketTunnelsTotal"),
        get("WebSocketTunnelsRefused"),
    )
}

/// Wait (at most [`WAIT`]) until the counts are `want`; fails the test otherwise.
pub fn wait_counts(t: &Target, want: Counts) {
    let mut last = (0, 0, 0);
    let ok = crate::wait_for(WAIT, || {
        last = counts(t);
        (last == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "(open, total, refused): want {want:?}, have {last:?}"
    );
}

/// Wait (at most [`WAIT`]) until `open` tunnels are open: Ok(the counts then), or Err(the
/// last counts seen).
pub fn wait_open(t: &Target, open: u64) -> Result<Counts, Counts> {
    let mut last = (0, 0, 0);
    crate::wait_for(WAIT, || {
        last = counts(t);
        (last.0 == open).then_some(last)
    })
    .ok_or(last)
}

/// (threaded, handed over): `WebSocketTunnelsThreaded`, `WebSocketTunnelsAsync`, the open
/// tunnels on a worker thread and those handed to the children's reactors.
pub type Split = (u64, u64);

/// The split of the open tunnels from `/server-status?auto`; panics without it.
pub fn split(t: &Target) -> Split {
    let m = status_auto(t, "/server-status").unwrap();
    let get = |k: &str| {
        status_num(&m, k).unwrap_or_else(|| panic!("no {k} in /server-status?auto: {m:?}"))
    };
    (
        get("WebSocketTunnelsThreaded"),
        get("WebSocketTunnelsAsync"),
    )
}

/// Wait (at most [`WAIT`]) until the split is `want` (threaded, handed over); fails the test
/// otherwise.
pub fn wait_split(t: &Target, want: Split) {
    let mut last = (0, 0);
    let ok = crate::wait_for(WAIT, || {
        last = split(t);
        (last == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "(threaded, handed over): want {want:?}, have {last:?}"
    );
}

/// Request lines the backend received for exactly `path`.
pub fn backend_got(b: &WstEcho, path: &str) -> usize {
    let prefix = format!("GET {path} ");
    b.requests()
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .count()
}

/// SIGKILL to `pid` (a child of an httpd the test started, "crashing" with its tunnels open);
/// fails the test if the signal could not be sent.
pub fn sigkill(pid: u32) {
    // SAFETY: kill only sends SIGKILL to a process the test chose (a child of its own httpd).
    assert_eq!(
        unsafe { libc::kill(pid as i32, libc::SIGKILL) },
        0,
        "kill {pid}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_children_sets_the_spare_counts() {
        let c = several_children(5, 4);
        assert!(c.contains("MinSpareServers 5\n"), "{c}");
        assert_eq!(c.matches("MinSpareThreads 4\n").count(), 2, "{c}");
        let c = several_children(1, 1);
        assert!(c.contains("MinSpareServers 1\n"), "{c}");
        assert_eq!(c.matches("MinSpareThreads 1\n").count(), 2, "{c}");
        assert_eq!(c.matches("StartServers").count(), 3, "{c}");
    }

    #[test]
    fn h2c_upgrade_is_a_plain_get_with_upgrade_headers() {
        let req = h2c_upgrade("/up/h2c", "127.0.0.1:1");
        let text = String::from_utf8(req.to_bytes()).unwrap();
        assert!(text.starts_with("GET /up/h2c HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nUpgrade: h2c\r\n"), "{text}");
        assert!(
            text.contains("\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"),
            "{text}"
        );
        assert!(
            !text.to_ascii_lowercase().contains("sec-websocket-key"),
            "{text}"
        );
    }
}
