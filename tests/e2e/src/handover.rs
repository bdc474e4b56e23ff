//! Tests of tunnels handed to the child's reactor (`ProxyWebsocketAsync On`): an httpd that
//! takes that path whatever `WST_ASYNC` says, with mod_status (the split of open tunnels) and
//! the tunnel log (each record names its path), small worker sizings, and the checks that a
//! tunnel really left its worker.

use std::time::Duration;

use crate::httpd::{Flavor, Httpd, HttpdBuilder};
use crate::tunnellog::{records, TunnelRecord, TUNNEL_LOG};
use crate::tunnels::SERVER_STATUS;

/// A builder for the handed-over path: `ProxyWebsocketAsync On`, mod_status at
/// `/server-status`, [`TUNNEL_LOG`], `{BACKEND_PORT}` and `ProxyPass /ws/` to it (`retry=0`).
/// Add the MPM, its sizing and the test's directives.
pub fn builder(backend_port: u16) -> HttpdBuilder {
    Httpd::builder()
        .async_tunnels(true)
        .module("status")
        .var("BACKEND_PORT", backend_port)
        .config(SERVER_STATUS)
        .config(TUNNEL_LOG)
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/ retry=0\n")
}

/// MPM sizing with very few workers: one child of `threads` threads (event, worker), or
/// `processes` single-connection children (prefork, and 2.2's compiled-in MPMs alike).
pub fn few_workers(threads: u32, processes: u32) -> String {
    let f = Flavor::get();
    let threaded = format!(
        "StartServers 1\nServerLimit 1\nThreadsPerChild {threads}\nThreadLimit {threads}\n\
         MinSpareThreads 1\nMaxSpareThreads {threads}\nMaxRequestWorkers {threads}\n"
    );
    f.if_mpm("event", &threaded)
        + &f.if_mpm("worker", &threaded)
        + &f.if_mpm(
            "prefork",
            &format!(
                "StartServers {processes}\nMinSpareServers 1\nMaxSpareServers {processes}\n\
                 ServerLimit {processes}\nMaxRequestWorkers {processes}\n"
            ),
        )
}

/// The MPMs to run a per-MPM test under: all three on 2.4 (those this httpd has), the
/// compiled-in one on 2.2.
pub fn mpms() -> Vec<&'static str> {
    ["event", "worker", "prefork"]
        .into_iter()
        .filter(|m| {
            let ok = Flavor::get().supports_mpm(m);
            if !ok {
                eprintln!("SKIP: this httpd cannot run the {m} MPM");
            }
            ok
        })
        .collect()
}

/// Fails the test unless `rec` says the tunnel was handed over.
pub fn assert_handed_over(rec: &TunnelRecord) {
    assert_eq!(
        rec.path(),
        "async",
        "the tunnel was not handed to the reactor: {}",
        rec.raw
    );
}

/// Error-log lines that tell of a crashed child or a broken heap.
pub fn crashes(h: &Httpd) -> Vec<String> {
    h.error_log()
        .lines()
        .filter(|l| {
            l.contains("exit signal")
                || l.contains("Segmentation fault")
                || l.contains("double free")
                || l.contains("corrupted")
                || l.contains("Aborted")
        })
        .map(str::to_string)
        .collect()
}

/// Stop httpd (SIGTERM); fails the test if SIGKILL was needed or a child crashed.
pub fn stop_clean(h: &mut Httpd) {
    let r = h.stop();
    let bad = crashes(h);
    assert!(!r.killed && bad.is_empty(), "unclean stop {r:?}: {bad:?}");
}

/// Wait (at most `timeout`) until the tunnel log holds `n` records; returns them.
pub fn wait_records(h: &Httpd, n: usize, timeout: Duration) -> Vec<TunnelRecord> {
    crate::wait_for(timeout, || {
        let r = records(h);
        (r.len() >= n).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "{} tunnel records after {timeout:?}, want {n}",
            records(h).len()
        )
    })
}
