//! Tunnels and the server's lifecycle: stop with open tunnels, idle timeout, no leaked
//! connections on the backend side.

use std::time::{Duration, Instant};

use tungstenite::Message;
use wst_e2e::client::{close, roundtrip, RawClient};
use wst_e2e::{Browser, Httpd, WsClient, WstEcho};

/// How long the same httpd (MPM `mpm`, or the default; the same `config`) takes to stop with no
/// connection at all. Stop times with tunnels are judged against it: stock 2.2.15's worker MPM
/// needs about 5.4 s even idle (its listener thread does not exit; the parent waits, then
/// sends SIGTERM again: "child process ... still did not exit"); 2.4 stops in milliseconds.
fn idle_stop_time(mpm: Option<&str>, backend_port: u16, config: &str) -> Duration {
    let mut builder = Httpd::builder();
    if let Some(m) = mpm {
        builder = builder.mpm(m);
    }
    let mut h = builder
        .var("BACKEND_PORT", backend_port)
        .config(config)
        .start();
    wst_e2e::wait_for(Duration::from_secs(5), || {
        (!h.child_pids().is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = h.stop();
    assert!(!r.killed, "idle httpd needed SIGKILL");
    eprintln!("idle stop (baseline): {:?}", r.elapsed);
    r.elapsed
}

/// `-k stop` (SIGTERM) with open tunnels: httpd exits within about a second (more than an idle
/// stop takes), and the clients see their connections end.
#[test]
fn stop_with_open_tunnels_is_prompt() {
    let b = WstEcho::start();
    let config = "ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n";
    let idle = idle_stop_time(None, b.port(), config);
    let mut h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(config)
        .start();
    let mut conns = Vec::new();
    for br in [Browser::Chrome, Browser::Firefox, Browser::Chrome] {
        let (_r, mut ws) = WsClient::connect(&h.target(), "/ws/echo", br).unwrap();
        assert_eq!(
            roundtrip(&mut ws, Message::text("up")).unwrap(),
            Message::text("up")
        );
        conns.push(ws);
    }
    let report = h.stop();
    assert!(!report.killed, "httpd needed SIGKILL");
    assert!(
        report.elapsed < idle + Duration::from_millis(2500),
        "stop took {:?} with open tunnels ({idle:?} idle)",
        report.elapsed
    );
    for mut ws in conns {
        ws.get_mut()
            .set_read_timeout(Duration::from_secs(5))
            .unwrap();
        let start = Instant::now();
        loop {
            match ws.read() {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => assert!(start.elapsed() < Duration::from_secs(5)),
            }
        }
    }
}

/// ProxyWebsocketIdleTimeout ends a tunnel without traffic.
#[test]
fn idle_timeout_closes_idle_tunnel() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyWebsocketIdleTimeout 1\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let (_r, ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::Chrome).unwrap();
    let mut ws = ws;
    assert_eq!(
        roundtrip(&mut ws, Message::text("x")).unwrap(),
        Message::text("x")
    );
    // Now idle: the proxy must close within ~1 s (allow 4).
    let start = Instant::now();
    ws.get_mut()
        .set_read_timeout(Duration::from_secs(6))
        .unwrap();
    let ended = loop {
        match ws.read() {
            Ok(Message::Close(_)) => break true,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if wst_e2e::net::is_timeout(&e) => break false,
            Err(_) => break true,
        }
    };
    assert!(ended, "idle tunnel still open after {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "idle tunnel closed only after {:?}",
        start.elapsed()
    );
}

/// After clients go away (politely or abruptly), httpd holds no connection to the backend.
#[test]
fn no_backend_connections_left_after_clients_leave() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    for i in 0..6 {
        let (_r, mut ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::ALL[i % 2]).unwrap();
        assert_eq!(
            roundtrip(&mut ws, Message::text("x")).unwrap(),
            Message::text("x")
        );
        if i % 2 == 0 {
            close(&mut ws);
        } // else: dropped without a close frame (TCP FIN only)
    }
    // A raw client that resets mid-frame.
    let t = h.target();
    let req = wst_e2e::UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome);
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let _ = c.read_head().unwrap();
    c.send(&[0x82, 0xfe, 0x10, 0x00, 1, 2, 3, 4, 5]).unwrap(); // header of a 4 KiB frame, 1 byte
    drop(c);
    let backend_conns = || {
        let out = std::process::Command::new("ss")
            .args([
                "-Htn",
                "state",
                "established",
                &format!("( sport = :{} )", b.port()),
            ])
            .output();
        out.ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
    };
    if backend_conns().is_none() {
        eprintln!("SKIP: no `ss` (iproute2) to count connections");
        return;
    }
    let left = wst_e2e::wait_for(Duration::from_secs(5), || {
        (backend_conns() == Some(0)).then_some(())
    });
    assert!(
        left.is_some(),
        "backend still has {:?} established connections from httpd",
        backend_conns()
    );
}

/// MPM sizing so that `n` tunnels (each holding a worker) fit without spawning on demand.
fn capacity_for(mpm: &str) -> String {
    let f = Httpd::flavor();
    match mpm {
        "prefork" => f.if_mpm(
            "prefork",
            "StartServers 24\nMinSpareServers 2\nMaxSpareServers 32\n",
        ),
        _ => {
            f.if_mpm("worker", "StartServers 2\nMaxSpareThreads 64\n")
                + &f.if_mpm("event", "StartServers 2\nMaxSpareThreads 64\n")
        }
    }
}

/// `-k stop` (SIGTERM to the parent) with 20 open tunnels: httpd exits within 1.5 s (more than
/// an idle stop takes) without SIGKILL, and every client sees its connection end: with a
/// Close 1001 under event and worker.
fn stop_with_20_tunnels(mpm: &str) {
    if !Httpd::flavor().supports_mpm(mpm) {
        eprintln!("SKIP: MPM {mpm} not available");
        return;
    }
    let b = WstEcho::start();
    let config = format!(
        "{}ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/\n",
        capacity_for(mpm)
    );
    let idle = idle_stop_time(Some(mpm), b.port(), &config);
    let mut h = Httpd::builder()
        .mpm(mpm)
        .var("BACKEND_PORT", b.port())
        .config(&config)
        .start();
    let mut conns = Vec::new();
    for i in 0..20 {
        let (_r, mut ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::ALL[i % 2])
            .unwrap_or_else(|e| panic!("{mpm}: tunnel #{i}: {e}"));
        let m = format!("up {i}");
        assert_eq!(
            roundtrip(&mut ws, Message::text(m.clone())).unwrap(),
            Message::text(m)
        );
        conns.push(ws);
    }
    // All 20 still open and working right before the stop.
    for (i, ws) in conns.iter_mut().enumerate() {
        let m = format!("still {i}");
        assert_eq!(
            roundtrip(ws, Message::text(m.clone())).unwrap(),
            Message::text(m),
            "{mpm}: tunnel #{i}"
        );
    }
    let report = h.stop();
    assert!(!report.killed, "{mpm}: httpd needed SIGKILL");
    assert!(
        report.elapsed < idle + Duration::from_millis(1500),
        "{mpm}: stop took {:?} with 20 open tunnels ({idle:?} idle)",
        report.elapsed
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut codes = Vec::new();
    for (i, mut ws) in conns.into_iter().enumerate() {
        ws.get_mut()
            .set_read_timeout(Duration::from_secs(5))
            .unwrap();
        loop {
            match ws.read() {
                Ok(Message::Close(c)) => {
                    codes.push(c.map(|f| u16::from(f.code)));
                    break;
                }
                Err(_) => {
                    codes.push(None);
                    break;
                }
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "{mpm}: tunnel #{i} still delivering after the stop"
                ),
            }
        }
    }
    // event and worker close the connections' sockets before any module
    // code runs; the tunnel has its own descriptor and says Close 1001
    // (going away) to every client. A prefork child exits from its signal
    // handler: its clients only see the TCP connection end.
    if mpm != "prefork" {
        assert!(
            codes.iter().all(|c| *c == Some(1001)),
            "{mpm}: close codes after a hard stop: {codes:?}"
        );
    }
}

#[test]
fn stop_with_20_tunnels_event() {
    stop_with_20_tunnels("event");
}

#[test]
fn stop_with_20_tunnels_worker() {
    stop_with_20_tunnels("worker");
}

#[test]
fn stop_with_20_tunnels_prefork() {
    stop_with_20_tunnels("prefork");
}
