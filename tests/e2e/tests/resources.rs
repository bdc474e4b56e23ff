//! httpd's resources while tunnelling: bounded memory when the client stops reading
//! (backpressure), and no sockets left in CLOSE_WAIT nor descriptors leaked once tunnels end.
//! Memory, descriptors and TCP states come from /proc (see `wst_e2e::procfs`).

use std::time::{Duration, Instant};

use tungstenite::Message;
use wst_e2e::client::{close, next_data, roundtrip, RawClient};
use wst_e2e::procfs::{fd_count, tcp_sockets_of, total_rss_kib, TCP_CLOSE_WAIT, TCP_ESTABLISHED};
use wst_e2e::ws::{self, OP_BINARY};
use wst_e2e::{flood_message, Browser, Httpd, Pki, Target, UpgradeRequest, WsClient, WstEcho};

const MSG: usize = 16 * 1024;

/// A client that stops reading while wst-echo's /flood pushes 16 KiB messages as fast as it
/// can: httpd's children must not grow (the tunnel stops reading the backend when the client
/// side is full), and when the client reads again it gets every message, in order, intact.
fn backpressure(h: &Httpd, t: &Target, what: &str) {
    let req = UpgradeRequest::new(&format!("/ws/flood/{MSG}"), &t.host, Browser::Chrome);
    let mut c = RawClient::connect(t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let head = c.read_head().unwrap();
    assert_eq!(head.status, 101, "{what}: {}", head.head);
    // Read a little, then stop reading.
    let mut next: u64 = 0;
    let check = |c: &mut RawClient, next: &mut u64| {
        let f = c
            .read_frame()
            .unwrap_or_else(|e| panic!("{what}: message {next}: {e}"));
        assert_eq!(f.opcode, OP_BINARY, "{what}: message {next}");
        if f.payload != flood_message(*next, MSG) {
            let got = f
                .payload
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().unwrap()));
            panic!(
                "{what}: expected message {next}, got {got:?} ({} bytes)",
                f.payload.len()
            );
        }
        *next += 1;
    };
    for _ in 0..16 {
        check(&mut c, &mut next);
    }
    let children = h.child_pids();
    assert!(!children.is_empty());
    let rss_start = total_rss_kib(&children);

    // Let every buffer on the way fill up (loopback moves hundreds of MiB/s, the socket
    // buffers hold a few tens of MiB at most).
    std::thread::sleep(Duration::from_secs(2));
    let children_filled = h.child_pids();
    let rss_filled = total_rss_kib(&children_filled);
    assert!(
        !children_filled.is_empty() && rss_filled > 0,
        "{what}: no httpd child found with the buffers full (children {children_filled:?}):\n{}",
        h.error_log()
    );
    let mut max_rss = rss_filled;
    let sample_start = Instant::now();
    while sample_start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(250));
        max_rss = max_rss.max(total_rss_kib(&h.child_pids()));
    }
    eprintln!(
        "{what}: children RSS {rss_start} KiB once the tunnel was up, {rss_filled} KiB with buffers full, \
         max {max_rss} KiB over 5 s of a stalled client"
    );
    let growth = max_rss.saturating_sub(rss_filled);
    assert!(
        growth < 8 * 1024,
        "{what}: httpd's children grew by {growth} KiB in 5 s while the client did not read"
    );
    assert!(
        max_rss.saturating_sub(rss_start) < 32 * 1024,
        "{what}: httpd's children grew by {} KiB while the client did not read",
        max_rss.saturating_sub(rss_start)
    );

    // Resume: 48 MiB more, every message in order and intact.
    let resume = Instant::now();
    let want = next + 3072;
    while next < want {
        check(&mut c, &mut next);
    }
    eprintln!(
        "{what}: resumed, {} messages verified in {:?}",
        next,
        resume.elapsed()
    );
    drop(c);
}

#[test]
fn stalled_client_does_not_grow_httpd_plain() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    backpressure(&h, &h.target(), "ws front");
}

/// The same with mod_ssl between the client and the tunnel (a filtered endpoint, where output
/// goes through httpd's filters rather than straight to the socket).
#[test]
fn stalled_client_does_not_grow_httpd_tls_front() {
    if !Httpd::flavor().has_module("ssl") {
        eprintln!("SKIP: no mod_ssl");
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("ssl")
        .pki(&pki)
        .listen("TLS_PORT")
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
<VirtualHost 127.0.0.1:{TLS_PORT}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile "{CERT}"
    SSLCertificateKeyFile "{KEY}"
    ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
</VirtualHost>
"#,
        )
        .start();
    backpressure(&h, &h.tls_target(h.port_of("TLS_PORT")), "wss front");
}

/// The other direction: a client that pushes continuously to a backend that never reads
/// (wst-echo's /stall). Once the buffers are full the client's writes must block (what it has
/// written stops growing) and httpd's children must not grow.
#[test]
fn stalled_backend_does_not_grow_httpd() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    let req = UpgradeRequest::new("/ws/stall", &t.host, Browser::Chrome);
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    assert_eq!(c.read_head().unwrap().status, 101);
    let rss_start = total_rss_kib(&h.child_pids());

    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let frame = ws::client_frame(OP_BINARY, &wst_e2e::binary_payload(MSG, 5));
    let writer = {
        let written = written.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Blocks once everything on the way is full; the write timeout (15 s) ends it
            // after the test has looked.
            while !stop.load(Ordering::Relaxed) {
                if c.send(&frame).is_err() {
                    break;
                }
                written.fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
            drop(c);
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let written_full = written.load(Ordering::Relaxed);
    let children_full = h.child_pids();
    let rss_full = total_rss_kib(&children_full);
    assert!(
        !children_full.is_empty() && rss_full > 0,
        "no httpd child found with the buffers full (children {children_full:?}):\n{}",
        h.error_log()
    );
    let mut max_rss = rss_full;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(250));
        max_rss = max_rss.max(total_rss_kib(&h.child_pids()));
    }
    let written_end = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "stalled backend: client wrote {} KiB in 2 s, {} KiB more in the next 5 s; children RSS \
         {rss_start} -> {rss_full} -> max {max_rss} KiB",
        written_full / 1024,
        (written_end - written_full) / 1024
    );
    assert!(
        written_end - written_full < 1024 * 1024,
        "the client could still write {} KiB in 5 s to a backend that does not read",
        (written_end - written_full) / 1024
    );
    assert!(
        written_full > 256 * 1024,
        "the client wrote only {written_full} bytes before blocking"
    );
    assert!(
        max_rss.saturating_sub(rss_full) < 8 * 1024,
        "httpd's children grew by {} KiB in 5 s while the backend did not read",
        max_rss.saturating_sub(rss_full)
    );
    drop(h); // ends the tunnel, so the writer's blocked send fails
    let _ = writer.join();
}

// ---------------------------------------------------------------------------------------------
// CLOSE_WAIT and descriptors
// ---------------------------------------------------------------------------------------------

/// Enough threads for 20 tunnels in two processes from the start (prefork: 24 processes), and
/// no process started or stopped on the way, so that descriptor counts compare.
fn fixed_processes() -> String {
    let f = Httpd::flavor();
    let threaded = "StartServers 2\nServerLimit 2\nThreadsPerChild 32\nMinSpareThreads 1\n\
                    MaxSpareThreads 64\nMaxRequestWorkers 64\n";
    f.if_mpm("event", threaded)
        + &f.if_mpm("worker", threaded)
        + &f.if_mpm(
            "prefork",
            "StartServers 24\nMinSpareServers 1\nMaxSpareServers 24\nServerLimit 24\n\
             MaxRequestWorkers 24\n",
        )
}

struct Snapshot {
    fds: Vec<(u32, usize)>,
}

fn snapshot(h: &Httpd) -> Snapshot {
    Snapshot {
        fds: h
            .child_pids()
            .into_iter()
            .filter_map(|p| fd_count(p).map(|n| (p, n)))
            .collect(),
    }
}

/// A snapshot once the children's descriptor counts hold still for 600 ms (bounded: 6 s):
/// connections that just ended may sit in httpd's lingering close for up to 2 s (the
/// module closes first once a WebSocket close handshake is over, RFC 6455 §7.1.1).
fn settled_snapshot(h: &Httpd) -> Snapshot {
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    let mut last = snapshot(h);
    loop {
        std::thread::sleep(Duration::from_millis(600));
        let now = snapshot(h);
        if now.fds == last.fds || std::time::Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

fn close_wait_sockets(h: &Httpd) -> Vec<String> {
    tcp_sockets_of(&h.child_pids())
        .into_iter()
        .filter(|(_, s)| s.state == TCP_CLOSE_WAIT)
        .map(|(pid, s)| {
            format!(
                "pid {pid}: {}->{} {}",
                s.local_port,
                s.remote_port,
                s.state_name()
            )
        })
        .collect()
}

/// Wait (10 s at most) until `n` tunnels have logged their end; the stock module does not log
/// it, so there this only waits a moment and the descriptor checks do the rest.
fn wait_tunnels_closed(h: &Httpd, n: usize, what: &str) {
    if Httpd::flavor().wst_is_stock {
        std::thread::sleep(Duration::from_millis(500));
        return;
    }
    let ok = wst_e2e::wait_for(Duration::from_secs(10), || {
        (tunnels_closed(h) >= n).then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: {} of {n} tunnels ended after 10 s",
        tunnels_closed(h)
    );
}

fn tunnels_closed(h: &Httpd) -> usize {
    let f = Httpd::flavor();
    h.error_log()
        .lines()
        .filter(|l| f.log_line_from(l, "proxy_wstunnel") && l.contains("tunnel closed"))
        .count()
}

/// Wait until the children hold no CLOSE_WAIT socket and have their baseline descriptor
/// counts again (± 3); panic with the details otherwise.
fn assert_back_to_baseline(h: &Httpd, base: &Snapshot, what: &str) {
    let ok = wst_e2e::wait_for(Duration::from_secs(5), || {
        let now = snapshot(h);
        let fds_ok = base.fds.iter().all(|(pid, n)| {
            now.fds
                .iter()
                .find(|(p, _)| p == pid)
                .is_some_and(|(_, m)| m.abs_diff(*n) <= 3)
        });
        (fds_ok && close_wait_sockets(h).is_empty()).then_some(())
    });
    if ok.is_none() {
        let now = snapshot(h);
        let socks: Vec<String> = tcp_sockets_of(&h.child_pids())
            .into_iter()
            .map(|(pid, s)| {
                format!(
                    "pid {pid}: {}->{} {}",
                    s.local_port,
                    s.remote_port,
                    s.state_name()
                )
            })
            .collect();
        panic!(
            "{what}: not back to baseline after 5 s.\nfds at baseline {:?}, now {:?}\n\
             CLOSE_WAIT: {:?}\nall TCP sockets of the children:\n{}",
            base.fds,
            now.fds,
            close_wait_sockets(h),
            socks.join("\n")
        );
    }
}

#[test]
fn no_close_wait_or_fd_leak_after_20_tunnels_each_way() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(&format!(
            "{}ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/\n",
            fixed_processes()
        ))
        .start();
    let t = h.target();
    // Warm-up: one tunnel per process (lazy initialisation is not a leak).
    for _ in 0..4 {
        let (_r, mut ws) = WsClient::connect(&t, "/ws/echo", Browser::Chrome).unwrap();
        roundtrip(&mut ws, Message::text("warm")).unwrap();
        close(&mut ws);
    }
    let warm = 4;
    wait_tunnels_closed(&h, warm, "warm-up");
    let base = settled_snapshot(&h);
    assert!(!base.fds.is_empty());
    assert!(close_wait_sockets(&h).is_empty());

    // 20 tunnels, closed by the client: 10 with a close handshake, 10 by dropping the socket.
    let mut conns = Vec::new();
    for i in 0..20 {
        let (_r, mut ws) = WsClient::connect(&t, "/ws/echo", Browser::ALL[i % 2]).unwrap();
        let m = format!("c{i}");
        assert_eq!(
            roundtrip(&mut ws, Message::text(m.clone())).unwrap(),
            Message::text(m)
        );
        conns.push(ws);
    }
    // The /proc view works: 20 established sockets to the backend, and more fds than before.
    let to_backend = tcp_sockets_of(&h.child_pids())
        .into_iter()
        .filter(|(_, s)| s.remote_port == b.port() && s.state == TCP_ESTABLISHED)
        .count();
    assert_eq!(
        to_backend, 20,
        "sockets to the backend while 20 tunnels are open"
    );
    let open_fds: usize = snapshot(&h).fds.iter().map(|(_, n)| n).sum();
    let base_fds: usize = base.fds.iter().map(|(_, n)| n).sum();
    assert!(
        open_fds >= base_fds + 40,
        "fds {base_fds} -> {open_fds} with 20 tunnels"
    );
    for (i, mut ws) in conns.into_iter().enumerate() {
        if i % 2 == 0 {
            close(&mut ws);
        } else {
            drop(ws);
        }
    }
    wait_tunnels_closed(&h, warm + 20, "client-side closes");
    assert_back_to_baseline(&h, &base, "after 20 client-side closes");

    // 20 tunnels, closed by the backend: 10 with a close frame (the client answers it and
    // closes), 10 with a bare FIN (the client closes when it sees EOF).
    let mut conns = Vec::new();
    for i in 0..20 {
        let path = if i % 2 == 0 { "/ws/bye" } else { "/ws/drop" };
        let (_r, mut ws) = WsClient::connect(&t, path, Browser::ALL[i % 2]).unwrap();
        assert_eq!(next_data(&mut ws).unwrap(), Message::text("bye"));
        conns.push((i, ws));
    }
    for (i, mut ws) in conns {
        if i % 2 == 0 {
            match next_data(&mut ws) {
                Ok(Message::Close(_)) => {}
                other => panic!("tunnel {i}: expected the backend's close, got {other:?}"),
            }
            close(&mut ws);
        } else {
            assert!(next_data(&mut ws).is_err(), "tunnel {i}: expected EOF");
        }
    }
    wait_tunnels_closed(&h, warm + 40, "backend-side closes");
    assert_back_to_baseline(&h, &base, "after 20 backend-side closes");
    // Nothing left towards the backend either.
    let to_backend: Vec<String> = tcp_sockets_of(&h.child_pids())
        .into_iter()
        .filter(|(_, s)| s.remote_port == b.port())
        .map(|(pid, s)| format!("pid {pid}: {} {}", s.local_port, s.state_name()))
        .collect();
    assert!(
        to_backend.is_empty(),
        "sockets to the backend left: {to_backend:?}"
    );
}

/// A raw client that half-closes right after the 101 and a backend that closes after
/// answering: both directions end with FIN, nothing stays in CLOSE_WAIT.
#[test]
fn no_close_wait_after_half_closes() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(&format!(
            "{}ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/\n",
            fixed_processes()
        ))
        .start();
    let t = h.target();
    // Settled: a prefork child forked a moment ago has not yet opened what its child_init
    // opens (the reactor's epoll and wake-up pipe).
    let base = settled_snapshot(&h);
    for i in 0..10 {
        let req = UpgradeRequest::new("/ws/halfclose", &t.host, Browser::Chrome);
        let mut c = RawClient::connect(&t).unwrap();
        c.send(&req.to_bytes()).unwrap();
        assert_eq!(c.read_head().unwrap().status, 101);
        c.send(&ws::client_frame(
            ws::OP_TEXT,
            format!("half {i}").as_bytes(),
        ))
        .unwrap();
        c.shutdown_write().unwrap();
        let f = c.read_frame().unwrap();
        assert_eq!(f.opcode, ws::OP_TEXT);
        let (_rest, end) = c.read_until_close(Duration::from_secs(5));
        assert_ne!(end, wst_e2e::client::End::Timeout, "tunnel {i} not ended");
    }
    assert_back_to_baseline(&h, &base, "after 10 half-closed tunnels");
}

/// The same with mod_ssl on both sides (wss:// client, wss:// backend: both endpoints filtered).
#[test]
fn stalled_client_does_not_grow_httpd_tls_both_sides() {
    if !Httpd::flavor().has_module("ssl") {
        eprintln!("SKIP: no mod_ssl");
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls(&pki);
    let h = wst_e2e::start_tls_both_sides(&pki, b.port());
    backpressure(
        &h,
        &h.tls_target(h.port_of("TLS_PORT")),
        "wss front, wss backend",
    );
}
