//! Looking at a running httpd from the outside: mod_status's machine-readable page, extra log
//! files a test configures itself (`CustomLog "{DIR}/logs/<name>" ...`), which child process
//! serves a given client connection, and a bounded "retry until" loop for upgrades.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use crate::client::{http_get, RawClient, Response, Target, UpgradeRequest};
use crate::httpd::Httpd;
use crate::net::Stream;
use crate::procfs;

/// `GET <path>?auto` (mod_status's machine-readable form) as `Key: value` pairs.
pub fn status_auto(target: &Target, path: &str) -> io::Result<BTreeMap<String, String>> {
    let r = http_get(target, &format!("{path}?auto"))?;
    if r.status != 200 {
        return Err(io::Error::other(format!(
            "{path}?auto answered {}:\n{}{}",
            r.status,
            r.head,
            r.body_str()
        )));
    }
    Ok(parse_status_auto(&r.body_str()))
}

/// Parse `Key: value` lines (lines without `": "` are ignored).
pub fn parse_status_auto(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A numeric field of a `?auto` page.
pub fn status_num(map: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    map.get(key).and_then(|v| v.parse().ok())
}

/// Lines of the log file `logs/<name>` in the httpd's server root.
pub fn log_lines(h: &Httpd, name: &str) -> Vec<String> {
    std::fs::read(h.dir().join("logs").join(name))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Wait (bounded) for a line of `logs/<name>` satisfying `pred`.
pub fn wait_log_line(
    h: &Httpd,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    crate::wait_for(timeout, || log_lines(h, name).into_iter().find(|l| pred(l)))
}

/// Local (client-side) port of a client connection.
pub fn local_port(s: &Stream) -> u16 {
    s.tcp().local_addr().map(|a| a.port()).unwrap_or(0)
}

/// The httpd child holding the server side of the client connection whose client-side port
/// is `client_port` (from /proc; None if no child holds it).
pub fn serving_child(h: &Httpd, client_port: u16) -> Option<u32> {
    let pids = h.child_pids();
    procfs::tcp_sockets_of(&pids)
        .into_iter()
        .find(|(_, s)| s.local_port == h.port() && s.remote_port == client_port)
        .map(|(pid, _)| pid)
}

/// One attempt at an upgrade: the response head, and the client (for a 101, ready to be
/// turned into a WebSocket).
pub fn try_upgrade(target: &Target, req: &UpgradeRequest) -> io::Result<(Response, RawClient)> {
    let mut c = RawClient::connect(target)?;
    c.send(&req.to_bytes())?;
    let r = c.read_head()?;
    Ok((r, c))
}

/// Repeat `attempt` every `pause` until it returns `Some`, for at most `timeout`; returns the
/// value and the number of attempts made.
pub fn retry<T>(
    timeout: Duration,
    pause: Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> (Option<T>, usize) {
    let deadline = Instant::now() + timeout;
    let mut n = 0;
    loop {
        n += 1;
        if let Some(v) = attempt() {
            return (Some(v), n);
        }
        if Instant::now() + pause >= deadline {
            return (None, n);
        }
        std::thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_auto_parsing() {
        let m = parse_status_auto(
            "127.0.0.1\nServerVersion: Apache/2.4.71\nTotal Accesses: 3\nWebSocketTunnels: 2\nScoreboard: W__\n",
        );
        assert_eq!(status_num(&m, "WebSocketTunnels"), Some(2));
        assert_eq!(status_num(&m, "Total Accesses"), Some(3));
        assert_eq!(m.get("Scoreboard").map(String::as_str), Some("W__"));
        assert_eq!(status_num(&m, "Missing"), None);
    }

    #[test]
    fn retry_is_bounded() {
        let t0 = Instant::now();
        let (v, n) = retry(
            Duration::from_millis(200),
            Duration::from_millis(50),
            || None::<()>,
        );
        assert!(v.is_none());
        assert!((2..=5).contains(&n), "{n} attempts");
        assert!(t0.elapsed() < Duration::from_secs(1));
        let mut k = 0;
        let (v, n) = retry(Duration::from_secs(5), Duration::from_millis(1), || {
            k += 1;
            (k == 3).then_some(k)
        });
        assert_eq!((v, n), (Some(3), 3));
    }
}
