//! `ProxyWebsocketTunnelLog`: one record per tunnel when it ends, on both paths (tunnels
//! handed to the child's reactor and tunnels that keep their worker). [`TUNNEL_LOG`] writes
//! `logs/tunnels.log` as `key=value` fields; [`tunnel_record`] waits for the record of a
//! request path and parses it into a [`TunnelRecord`].
//!
//! The format codes are the module's (c_shim/wst_tlog.c); this file is the one place that
//! names them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::httpd::Httpd;
use crate::observe::{log_lines, wait_log_line};

/// The log file's name under the server root's `logs/`.
pub const FILE: &str = "tunnels.log";

/// `ProxyWebsocketTunnelLog` to `{DIR}/logs/tunnels.log`, one `key=value` field per code, the
/// request path last (so a record of `/ws/a` ends with `uri=/ws/a`): `path` async or threaded,
/// bytes from and to the client and the backend, messages from each, the Close code each sent
/// (`-`: none), who closed first (client, backend, none), the end reason, the duration in ms.
pub const TUNNEL_LOG: &str = "ProxyWebsocketTunnelLog \"{DIR}/logs/tunnels.log\" \
\"path=%p from_client=%I to_client=%O from_backend=%B to_backend=%b client_msgs=%m \
backend_msgs=%M client_close=%c backend_close=%C first=%f end=%r ms=%D uri=%U\"\n";

/// One record: its fields by key (a code the module had no value for reads `-`).
#[derive(Debug, Clone)]
pub struct TunnelRecord {
    pub fields: BTreeMap<String, String>,
    pub raw: String,
}

impl TunnelRecord {
    pub fn parse(line: &str) -> TunnelRecord {
        let fields = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TunnelRecord {
            fields,
            raw: line.to_string(),
        }
    }

    /// Field `key`; fails the test if the record has none.
    pub fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in tunnel record {:?}", self.raw))
    }

    /// Field `key` as a number; fails the test if it is none.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key}= is not a number in {:?}", self.raw))
    }

    /// "async" (the tunnel was handed to the child's reactor) or "threaded".
    pub fn path(&self) -> &str {
        self.get("path")
    }

    pub fn uri(&self) -> &str {
        self.get("uri")
    }
}

/// Every record written so far.
pub fn records(h: &Httpd) -> Vec<TunnelRecord> {
    log_lines(h, FILE)
        .iter()
        .map(|l| TunnelRecord::parse(l))
        .collect()
}

/// The record of the tunnel to `uri`, waiting up to `timeout` (it is written when the tunnel
/// ends); fails the test without one.
pub fn tunnel_record(h: &Httpd, uri: &str, timeout: Duration) -> TunnelRecord {
    let needle = format!(" uri={uri}");
    let line = wait_log_line(h, FILE, timeout, |l| l.ends_with(&needle)).unwrap_or_else(|| {
        panic!(
            "no tunnel record for {uri} after {timeout:?}:\n{}",
            log_lines(h, FILE).join("\n")
        )
    });
    TunnelRecord::parse(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_a_record() {
        let r = TunnelRecord::parse(
            "path=async from_client=12 to_client=34 client_msgs=1 backend_msgs=2 \
             client_close=1000 backend_close=- first=client end=closed ms=5 uri=/ws/a",
        );
        assert_eq!((r.path(), r.uri()), ("async", "/ws/a"));
        assert_eq!((r.num("from_client"), r.num("ms")), (12, 5));
        assert_eq!(r.get("backend_close"), "-");
        assert!(std::panic::catch_unwind(|| r.num("backend_close")).is_err());
        assert!(std::panic::catch_unwind(|| r.get("nothing").to_string()).is_err());
        assert!(
            TUNNEL_LOG.contains("{DIR}/logs/tunnels.log") && TUNNEL_LOG.ends_with(" uri=%U\"\n")
        );
    }
}
