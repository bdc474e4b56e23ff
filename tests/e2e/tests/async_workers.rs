//! Tunnels handed to the child's reactor (`ProxyWebsocketAsync On`, the default) leave their
//! worker: an httpd with 4 worker threads (prefork: 2 processes) holds 50 open echoing
//! tunnels and still answers plain requests at once, under every MPM; with
//! `ProxyWebsocketAsync Off` the same httpd is full after 4 (prefork: 2) tunnels, as stock
//! httpd is. The access log's 101 line is written at the hand-over, while the tunnel is open.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::time::{Duration, Instant};

use tungstenite::Message;
use wst_e2e::client::{close, http_get, roundtrip};
use wst_e2e::handover::{builder, few_workers, mpms};
use wst_e2e::tunnels::{open_tunnel, wait_split, Ws};
use wst_e2e::{need, Httpd, WstEcho};

const THREADS: u32 = 4;
const PROCESSES: u32 = 2;
const TUNNELS: usize = 50;
/// A plain request to an httpd with a free worker is answered well within this.
const QUICK: Duration = Duration::from_secs(2);

fn workers(mpm: &str) -> usize {
    if mpm == "prefork" {
        PROCESSES as usize
    } else {
        THREADS as usize
    }
}

/// A GET of the docroot's index, answered within [`QUICK`] (the client gives up then).
fn get_quickly(h: &Httpd) -> Result<Duration, String> {
    let t0 = Instant::now();
    match http_get(&h.target().with_timeout(QUICK), "/index.html") {
        Ok(r) if r.status == 200 => Ok(t0.elapsed()),
        Ok(r) => Err(format!("answered {}", r.status)),
        Err(e) => Err(format!("no answer within {QUICK:?}: {e}")),
    }
}

fn echo_all(tunnels: &mut [Ws], what: &str) {
    for (i, ws) in tunnels.iter_mut().enumerate() {
        let m = Message::text(format!("{what} {i}"));
        assert_eq!(roundtrip(ws, m.clone()).unwrap(), m, "tunnel {i} ({what})");
    }
}

fn many_tunnels_few_workers(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    let b = WstEcho::start();
    let h = builder(b.port())
        .mpm(mpm)
        .config(&few_workers(THREADS, PROCESSES))
        .start();
    // A client that waits for a worker gives up after 3 s: a tunnel that kept its worker
    // shows as the first upgrade beyond the workers going unanswered.
    let t = h.target().with_timeout(Duration::from_secs(3));
    let mut tunnels: Vec<Ws> = (0..TUNNELS)
        .map(|i| open_tunnel(&t, &format!("/ws/echo/{i}"), i))
        .collect();
    wait_split(&h.target(), (0, TUNNELS as u64));
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let took = get_quickly(&h).unwrap_or_else(|e| {
            panic!("{mpm}: plain request {i} with {TUNNELS} tunnels open: {e}")
        });
        slowest = slowest.max(took);
    }
    eprintln!(
        "{mpm}: {TUNNELS} tunnels on {} workers; slowest of 10 plain requests {slowest:?}",
        workers(mpm)
    );
    echo_all(&mut tunnels, "still open");
    for ws in tunnels.iter_mut() {
        close(ws);
    }
    wait_split(&h.target(), (0, 0));
}

#[test]
fn fifty_tunnels_on_four_workers_event() {
    many_tunnels_few_workers("event");
}

#[test]
fn fifty_tunnels_on_four_workers_worker() {
    many_tunnels_few_workers("worker");
}

#[test]
fn fifty_tunnels_on_two_processes_prefork() {
    many_tunnels_few_workers("prefork");
}

/// For contrast, the same httpd with `ProxyWebsocketAsync Off`: once every worker holds a
/// tunnel, a plain request waits (no answer within 2 s), and is answered when one tunnel ends.
fn threaded_path_is_capped_by_workers(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    let b = WstEcho::start();
    let h = builder(b.port())
        .async_tunnels(false)
        .mpm(mpm)
        .config(&few_workers(THREADS, PROCESSES))
        .start();
    let n = workers(mpm);
    let t = h.target().with_timeout(Duration::from_secs(3));
    let mut tunnels: Vec<Ws> = (0..n)
        .map(|i| open_tunnel(&t, &format!("/ws/echo/{i}"), i))
        .collect();
    let r = get_quickly(&h);
    assert!(
        r.is_err(),
        "{mpm}: with {n} threaded tunnels on {n} workers a plain request was answered in {r:?}"
    );
    close(&mut tunnels[0]);
    drop(tunnels.remove(0));
    let ok = wst_e2e::wait_for(Duration::from_secs(10), || get_quickly(&h).ok());
    assert!(
        ok.is_some(),
        "{mpm}: no plain request answered after a tunnel ended"
    );
    echo_all(&mut tunnels, "threaded");
}

#[test]
fn threaded_path_is_capped_by_workers_event() {
    threaded_path_is_capped_by_workers("event");
}

#[test]
fn threaded_path_is_capped_by_workers_prefork() {
    threaded_path_is_capped_by_workers("prefork");
}

/// The access log's line for the upgrade (status 101) is written when the tunnel leaves its
/// worker, while it is still open; the tunnel echoes after that.
#[test]
fn access_log_101_line_written_at_hand_over() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = builder(b.port()).start();
    let t = h.target();
    let mut ws = open_tunnel(&t, "/ws/echo/access-log", 0);
    wait_split(&t, (0, 1));
    let line = h
        .wait_access(Duration::from_secs(5), |l| {
            l.request.contains("/ws/echo/access-log")
        })
        .unwrap_or_else(|| {
            panic!(
                "no access-log line while the handed-over tunnel is open:\n{}",
                h.access_log()
            )
        });
    assert_eq!(line.status, 101, "{}", line.raw);
    let m = Message::binary(vec![7u8; 3000]);
    assert_eq!(roundtrip(&mut ws, m.clone()).unwrap(), m);
    close(&mut ws);
    // One line for the tunnel, not a second one at its end.
    std::thread::sleep(Duration::from_millis(300));
    let n = h
        .access_lines()
        .iter()
        .filter(|l| l.request.contains("/ws/echo/access-log"))
        .count();
    assert_eq!(n, 1, "access log:\n{}", h.access_log());
}
