//! The tunnel counts mod_status shows (`WebSocketTunnels`, `WebSocketTunnelsTotal`,
//! `WebSocketTunnelsRefused` in `?auto`, the "WebSocket tunnels" section of the HTML page) while
//! tunnels open, close and are refused by `ProxyWebsocketMaxTunnels`, under event, worker and
//! prefork; across a graceful restart; when a child dies with a tunnel open (also without a
//! cap). The forms of the page themselves: tests/status.rs.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{close, http_get, next_data, roundtrip};
use wst_e2e::observe::{local_port, serving_child};
use wst_e2e::tunnels::{
    assert_refused_by_cap, counts, open_tunnel, several_children, sigkill, wait_counts, wait_open,
    with_server_status, Ws, CAP_2, WAIT,
};
use wst_e2e::{need, Browser, WsClient, WstEcho};

fn status_counts_under(mpm: &str) {
    if !need::ours() || !need::module("status") || !need::mpm(mpm) {
        return;
    }
    let b = WstEcho::start();
    let h = with_server_status(&b)
        .mpm(mpm)
        .config(&several_children(5, 4))
        .config(CAP_2)
        .start();
    let t = h.target();
    assert_eq!(counts(&t), (0, 0, 0));
    let mut a = open_tunnel(&t, "/ws/echo", 0);
    assert_eq!(counts(&t), (1, 1, 0));
    let mut b2 = open_tunnel(&t, "/ws/echo", 1);
    assert_eq!(counts(&t), (2, 2, 0));
    assert_refused_by_cap(&t, "/ws/refused");
    assert_eq!(counts(&t), (2, 2, 1));

    let html = http_get(&t, "/server-status").unwrap();
    assert_eq!(html.status, 200);
    let body = html.body_str();
    assert!(body.contains("WebSocket tunnels"), "{body}");
    assert!(
        body.contains("Open tunnels: 2 of at most 2"),
        "HTML section:\n{body}"
    );
    assert!(body.contains("Opened since start: 2"), "{body}");
    assert!(
        body.contains("Refused by ProxyWebsocketMaxTunnels: 1"),
        "{body}"
    );

    close(&mut a);
    drop(a);
    wait_counts(&t, (1, 2, 1));
    let mut c = open_tunnel(&t, "/ws/echo", 2);
    assert_eq!(counts(&t), (2, 3, 1));
    assert_refused_by_cap(&t, "/ws/refused-again");
    assert_eq!(counts(&t), (2, 3, 2));
    close(&mut b2);
    close(&mut c);
    drop((b2, c));
    wait_counts(&t, (0, 3, 2));
    // A tunnel that the backend ends is counted out too.
    let (_r, mut ws) = WsClient::connect(&t, "/ws/bye", Browser::Chrome).unwrap();
    assert_eq!(next_data(&mut ws).unwrap(), Message::text("bye"));
    close(&mut ws);
    drop(ws);
    wait_counts(&t, (0, 4, 2));
    // Plain requests and refusals are not tunnels.
    let r = http_get(&t, "/ws/plain").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(counts(&t), (0, 4, 2));
}

#[test]
fn status_counts_under_event() {
    status_counts_under("event");
}

#[test]
fn status_counts_under_worker() {
    status_counts_under("worker");
}

#[test]
fn status_counts_under_prefork() {
    status_counts_under("prefork");
}

/// A graceful restart keeps the count: tunnels still open in the old generation are still
/// counted (and still limited), and counted out when they end.
#[test]
fn status_counts_and_cap_survive_graceful_restart() {
    if !need::ours() || !need::module("status") {
        return;
    }
    let b = WstEcho::start();
    let h = with_server_status(&b)
        .config(&several_children(5, 4))
        .config(CAP_2)
        .start();
    let t = h.target();
    let mut open: Vec<Ws> = (0..2).map(|i| open_tunnel(&t, "/ws/echo", i)).collect();
    assert_eq!(counts(&t), (2, 2, 0));
    let old_children = h.child_pids();
    // SAFETY: kill only sends SIGUSR1 (graceful restart) to the httpd parent this test started.
    assert_eq!(
        unsafe { libc::kill(h.pid().unwrap() as i32, libc::SIGUSR1) },
        0
    );
    assert!(
        wst_e2e::wait_for(WAIT, || {
            let now = h.child_pids();
            now.iter().any(|p| !old_children.contains(p)).then_some(())
        })
        .is_some(),
        "no new generation of children after SIGUSR1"
    );
    // The restart is done once the new generation answers.
    let _ = wst_e2e::wait_for(WAIT, || {
        h.error_log()
            .contains("resuming normal operations")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counts(&t).0, 2, "open tunnels after a graceful restart");
    for (i, ws) in open.iter_mut().enumerate() {
        let m = format!("after restart {i}");
        assert_eq!(
            roundtrip(ws, Message::text(m.clone())).unwrap(),
            Message::text(m)
        );
    }
    assert_refused_by_cap(&t, "/ws/over");
    for ws in open.iter_mut() {
        close(ws);
    }
    drop(open);
    wait_open(&t, 0).unwrap_or_else(|last| {
        panic!("open count after closing the old generation's tunnels: {last:?}")
    });
    let mut ws = open_tunnel(&t, "/ws/echo", 3);
    assert_eq!(counts(&t).0, 1);
    close(&mut ws);
}

/// Without any cap (nothing refuses, so nothing else looks for dead children), the count that
/// mod_status shows must still drop when a child dies with a tunnel open. The MPMs are tuned
/// so that killing one child needs no replacement (enough idle capacity).
fn status_count_recovers_without_a_cap(mpm: &str) {
    if !need::ours() || !need::module("status") || !need::mpm(mpm) {
        return;
    }
    let b = WstEcho::start();
    let h = with_server_status(&b)
        .mpm(mpm)
        .config(&several_children(1, 1))
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    if mpm == "prefork" {
        let _ = wst_e2e::wait_for(WAIT, || (h.child_pids().len() >= 5).then_some(()));
    }
    let mut victim = open_tunnel(&t, "/ws/echo", 0);
    assert_eq!(counts(&t).0, 1);
    let pid = serving_child(&h, local_port(victim.get_ref())).expect("serving child");
    sigkill(pid);
    assert!(victim.read().is_err());
    drop(victim);
    if let Err(last) = wait_open(&t, 0) {
        panic!(
            "{mpm}: WebSocketTunnels still {} {WAIT:?} after child {pid} died with the only \
             tunnel (open, total, refused) = {last:?}; children now {:?}",
            last.0,
            h.child_pids()
        );
    }
}

#[test]
fn status_count_recovers_without_a_cap_prefork() {
    status_count_recovers_without_a_cap("prefork");
}

#[test]
fn status_count_recovers_without_a_cap_worker() {
    status_count_recovers_without_a_cap("worker");
}

#[test]
fn status_count_recovers_without_a_cap_event() {
    status_count_recovers_without_a_cap("event");
}
