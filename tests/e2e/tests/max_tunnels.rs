//! `ProxyWebsocketMaxTunnels <n>`: a cap on open tunnels shared by all children, under prefork,
//! worker and event: an upgrade over it gets 503 with `Retry-After: 10` (logged at warning
//! level as WST041) without reaching the backend; a slot is given back when a tunnel ends, when
//! an upgrade fails (relayed error, unreachable backend, invalid 101, refused Origin) and when
//! a child dies with tunnels open; behind a balancer a refusal does not put members in error
//! state; requests this module does not tunnel are never refused by it.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use tungstenite::Message;
use wst_e2e::client::{close, http_get, roundtrip};
use wst_e2e::observe::{local_port, serving_child, try_upgrade};
use wst_e2e::tunnels::{
    assert_refused_by_cap, backend_got, counts, h2c_upgrade, open_tunnel, several_children,
    sigkill, tunnel_when_allowed, upgrade_when_possible, wait_open, with_server_status, Ws, CAP_2,
    SERVER_STATUS, WAIT,
};
use wst_e2e::{need, Browser, Httpd, UpgradeRequest, WstEcho};

fn max_tunnels_under(mpm: &str) {
    if !need::ours() || !need::mpm(mpm) {
        return;
    }
    let b = WstEcho::start();
    // Under prefork the tunnels keep their worker (ProxyWebsocketAsync Off), so that each holds
    // its own process; handed over, one process may hold them all.
    let mut builder = Httpd::builder();
    if mpm == "prefork" {
        builder = builder.async_tunnels(false);
    }
    let h = builder
        .mpm(mpm)
        .var("BACKEND_PORT", b.port())
        .config(&several_children(5, 4))
        .config("ProxyWebsocketMaxTunnels 3\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    if mpm == "prefork" {
        assert!(
            wst_e2e::wait_for(WAIT, || (h.child_pids().len() >= 5).then_some(())).is_some(),
            "prefork did not start 5 children: {:?}",
            h.child_pids()
        );
    }

    let mut open: Vec<Ws> = (0..3).map(|i| open_tunnel(&t, "/ws/echo", i)).collect();
    let pids: Vec<Option<u32>> = open
        .iter()
        .map(|ws| serving_child(&h, local_port(ws.get_ref())))
        .collect();
    eprintln!("{mpm}: tunnels served by children {pids:?}");
    if mpm == "prefork" {
        // One connection per prefork child: three tunnels are three processes, so a refusal
        // of the fourth can only come from a count they share.
        let mut distinct: Vec<u32> = pids.iter().map(|p| p.expect("serving child")).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{pids:?}");
    }

    assert_refused_by_cap(&t, "/ws/fourth");
    assert_refused_by_cap(&t, "/ws/fifth");
    assert_eq!(
        backend_got(&b, "/fourth") + backend_got(&b, "/fifth"),
        0,
        "refused upgrades reached the backend: {:?}",
        b.requests()
    );
    assert!(
        h.wait_error_line(WAIT, &["WST041", "ProxyWebsocketMaxTunnels 3"])
            .is_some_and(|l| l.contains(":warn]") || l.contains("[warn]")),
        "no WST041 warning:\n{}",
        h.error_log()
    );
    // The three keep working.
    for (i, ws) in open.iter_mut().enumerate() {
        let m = format!("still {i}");
        assert_eq!(
            roundtrip(ws, Message::text(m.clone())).unwrap(),
            Message::text(m)
        );
    }

    // One closes: a new one gets in (as soon as the closed one is counted out).
    let mut first = open.remove(0);
    close(&mut first);
    drop(first);
    let (mut ws, attempts) = tunnel_when_allowed(&t, "/ws/replacement");
    eprintln!("{mpm}: replacement tunnel after {attempts} attempt(s)");
    assert_eq!(
        roundtrip(&mut ws, Message::text("replacement")).unwrap(),
        Message::text("replacement")
    );
    open.push(ws);
    // Full again.
    assert_refused_by_cap(&t, "/ws/sixth");
    for ws in open.iter_mut() {
        close(ws);
    }
    drop(open);
    // All closed: three at once again.
    let (ws, _) = tunnel_when_allowed(&t, "/ws/again");
    let mut again = vec![ws];
    for _ in 1..3 {
        let (ws, _) = tunnel_when_allowed(&t, "/ws/again");
        again.push(ws);
    }
    for ws in again.iter_mut() {
        close(ws);
    }
}

#[test]
fn max_tunnels_shared_under_prefork() {
    max_tunnels_under("prefork");
}

#[test]
fn max_tunnels_shared_under_worker() {
    max_tunnels_under("worker");
}

#[test]
fn max_tunnels_shared_under_event() {
    max_tunnels_under("event");
}

/// A refusal by the cap is not a backend failure. mod_proxy treats a 503 from a scheme handler
/// as one: with a balancer it puts the member in error state and fails over to the next
/// member (which refuses too, and is put in error state as well). Then one refused upgrade is
/// logged and counted once per member, and, unless the balancer's forced recovery kicks in
/// (`forcerecovery=off` here, 2.4.2+), no request reaches the balancer for the members' retry
/// time (60 s) although the cap is free again.
#[test]
fn max_tunnels_refusal_does_not_take_balancer_members_out() {
    if !need::ours() || !need::module("proxy_balancer") || !need::module("status") {
        return;
    }
    let b1 = WstEcho::start();
    let b2 = WstEcho::start();
    let no_forced_recovery = if Httpd::flavor().version >= (2, 4, 2) {
        "ProxySet forcerecovery=off"
    } else {
        ""
    };
    let h = Httpd::builder()
        .modules(&["proxy_balancer", "status"])
        .var("B1", b1.port())
        .var("B2", b2.port())
        .var("NO_FORCED_RECOVERY", no_forced_recovery)
        .config(SERVER_STATUS)
        .config(
            r#"
ProxyWebsocketMaxTunnels 1
<Proxy "balancer://wsgroup">
    BalancerMember "ws://127.0.0.1:{B1}"
    BalancerMember "ws://127.0.0.1:{B2}"
    {NO_FORCED_RECOVERY}
</Proxy>
ProxyPass /bal/ balancer://wsgroup/
"#,
        )
        .start();
    let t = h.target();
    let mut ws = open_tunnel(&t, "/bal/echo", 0);
    assert_refused_by_cap(&t, "/bal/refused");
    let mut problems = Vec::new();
    let wst041 = h.error_log().matches("WST041").count();
    if wst041 != 1 {
        problems.push(format!(
            "one refused upgrade was refused {wst041} times (mod_proxy failed over to the other \
             member after the 503)"
        ));
    }
    let refused = counts(&t).2;
    if refused != 1 {
        problems.push(format!(
            "one refused upgrade counted {refused} times in WebSocketTunnelsRefused"
        ));
    }
    close(&mut ws);
    drop(ws);
    // The cap is free again: within a few seconds (far less than the members' 60 s retry),
    // upgrades and plain requests to the balancer work.
    let (ws, attempts) = upgrade_when_possible(&t, "/bal/after");
    match ws {
        Some(mut ws) => {
            assert_eq!(
                roundtrip(&mut ws, Message::text("bal")).unwrap(),
                Message::text("bal")
            );
            close(&mut ws);
        }
        None => problems.push(format!(
            "no tunnel through the balancer {WAIT:?} after the cap was freed ({attempts} \
             attempts): its members were put in error state by the refusal"
        )),
    }
    match http_get(&t, "/bal/plain") {
        Ok(r) if r.status == 200 => {}
        Ok(r) => problems.push(format!("plain GET through the balancer: {}", r.status)),
        Err(e) => problems.push(format!("plain GET through the balancer: {e}")),
    }
    assert!(
        problems.is_empty(),
        "{}\nerror log:\n{}",
        problems.join("\n"),
        h.error_log()
    );
}

/// Every way an upgrade can fail gives its slot back: with a cap of 1, a relayed 404, an
/// unreachable backend, an invalid 101 and a refused Origin each leave room for the next
/// tunnel. And WebSocketTunnelsTotal ("opened since start") counts the tunnels that opened.
#[test]
fn max_tunnels_slot_given_back_after_failed_upgrades() {
    if !need::ours() || !need::module("status") {
        return;
    }
    let b = WstEcho::start();
    let h = with_server_status(&b)
        .log_level("warn")
        .var("DEAD_PORT", wst_e2e::net::closed_port())
        .config(
            r#"
ProxyWebsocketMaxTunnels 1
ProxyWebsocketAllowOrigin same
ProxyPass /dead/ ws://127.0.0.1:{DEAD_PORT}/
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#,
        )
        .start();
    let t = h.target();
    let failures: [(&str, Option<&str>, u16); 5] = [
        ("/ws/status/404", None, 404),
        ("/dead/echo", None, 503),
        ("/ws/bad-accept", None, 502),
        ("/ws/no-upgrade-101", None, 502),
        ("/ws/echo", Some("https://evil.example"), 403),
    ];
    let mut opened = 0;
    for (path, origin, want) in failures {
        let mut req = UpgradeRequest::new(path, &t.host, Browser::Chrome);
        if let Some(o) = origin {
            req = req.set("Origin", o);
        }
        let (mut r, mut c) = try_upgrade(&t, &req).unwrap();
        assert_eq!(r.status, want, "{path}:\n{}", r.head);
        let _ = c.read_body(&mut r, false);
        drop(c);
        let (mut ws, n) = tunnel_when_allowed(&t, "/ws/echo");
        opened += 1;
        eprintln!("after {path} ({want}): tunnel admitted after {n} attempt(s)");
        assert_eq!(
            roundtrip(&mut ws, Message::text(path)).unwrap(),
            Message::text(path)
        );
        close(&mut ws);
        drop(ws);
        wait_open(&t, 0).unwrap_or_else(|last| panic!("after {path}: open count {last:?}"));
    }
    // (Refusals may have happened: a client can read the end of a failed upgrade's answer
    // before httpd is done with that request and gives the slot back; the retries cover it.)
    let (open, total, _refused) = counts(&t);
    assert_eq!(open, 0);
    assert_eq!(
        total, opened,
        "WebSocketTunnelsTotal counts {total} tunnels opened, but {opened} were (the other \
         upgrades failed before any tunnel existed)"
    );
}

/// A child that dies with tunnels open (a crash, kill -9) must not hold their slots forever:
/// the count is of open tunnels, and a dead process has none.
fn count_recovers_when_a_child_dies(mpm: &str) {
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
    let mut a = open_tunnel(&t, "/ws/echo", 0);
    let mut victim = open_tunnel(&t, "/ws/echo", 1);
    assert_eq!(counts(&t).0, 2);
    let pid = serving_child(&h, local_port(victim.get_ref())).expect("serving child");
    let a_pid = serving_child(&h, local_port(a.get_ref())).expect("serving child");
    // Threaded MPMs: both tunnels may live in the killed process.
    let survivors = u64::from(a_pid != pid);
    sigkill(pid);
    assert!(
        victim.read().is_err(),
        "the killed child's tunnel still answers"
    );
    drop(victim);
    let recovered = wait_open(&t, survivors);
    let next = upgrade_when_possible(&t, "/ws/echo").0;
    assert!(
        recovered.is_ok() && next.is_some(),
        "{mpm}: {WAIT:?} after child {pid} was killed with {} tunnel(s) open: (open, total, \
         refused) = {recovered:?} (want {survivors} open), new tunnel admitted: {}",
        2 - survivors,
        next.is_some()
    );
    let mut next = next.unwrap();
    assert_eq!(
        roundtrip(&mut next, Message::text("next")).unwrap(),
        Message::text("next")
    );
    close(&mut next);
    if survivors == 1 {
        close(&mut a);
    }
}

#[test]
fn max_tunnels_count_recovers_when_a_prefork_child_dies() {
    count_recovers_when_a_child_dies("prefork");
}

#[test]
fn max_tunnels_count_recovers_when_a_worker_child_dies() {
    count_recovers_when_a_child_dies("worker");
}

#[test]
fn max_tunnels_count_recovers_when_an_event_child_dies() {
    count_recovers_when_a_child_dies("event");
}

/// The cap is about this module's tunnels: requests it never tunnels are not refused by it,
/// even with the cap reached. Upgrades through a balancer of http:// members without
/// ProxyWebsocketUpgrade (mod_proxy_http's), and an h2c upgrade on a ProxyWebsocketUpgrade
/// route (a plain request for mod_proxy_http).
#[test]
fn max_tunnels_refuses_only_what_this_module_tunnels() {
    if !need::ours() || !need::module("proxy_balancer") {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("proxy_balancer")
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
ProxyWebsocketMaxTunnels 1
<Proxy "balancer://httpgroup">
    BalancerMember "http://127.0.0.1:{BACKEND_PORT}"
</Proxy>
ProxyPass /httpbal/ balancer://httpgroup/httpbal/
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
<Location /up/>
    ProxyWebsocketUpgrade On
</Location>
ProxyPass /up/ http://127.0.0.1:{BACKEND_PORT}/up/
"#,
        )
        .start();
    let t = h.target();
    let mut full = open_tunnel(&t, "/ws/echo", 0);
    assert_refused_by_cap(&t, "/ws/over");

    let mut problems = Vec::new();
    for br in Browser::ALL {
        let req = UpgradeRequest::new("/httpbal/echo", &t.host, br);
        let (mut r, mut c) = try_upgrade(&t, &req).unwrap();
        let _ = c.read_body(&mut r, false);
        if r.status == 503 {
            problems.push(format!(
                "{br:?} upgrade through a balancer of http:// members (not this module's) \
                 refused by ProxyWebsocketMaxTunnels:\n{}",
                r.head
            ));
        }
    }
    let req = h2c_upgrade("/up/h2c", &t.host);
    let r = wst_e2e::client::http_request(&t, &req).unwrap();
    if (r.status, r.body_str()) != (200, "plain GET /up/h2c\n".to_string()) {
        problems.push(format!(
            "h2c upgrade on a ProxyWebsocketUpgrade route (mod_proxy_http's plain request) \
             answered {} with the cap reached:\n{}",
            r.status, r.head
        ));
    }
    close(&mut full);
    assert!(
        problems.is_empty(),
        "{}\nerror log:\n{}",
        problems.join("\n"),
        h.error_log()
    );
}
