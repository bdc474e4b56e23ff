//! `ProxyWebsocketMaxClientTunnels <n> [<store> [<expiry>]]`: at most n open tunnels per client
//! address, counted across all children: the (n+1)-th upgrade of an address gets 429 with
//! `Retry-After: 10` without reaching the backend, logged at warn as WST060 naming the address,
//! its count and the cap; another address is counted apart (a client bound to 127.0.0.2); a
//! tunnel that ends gives its count back, on the handed-over path (the default) and the
//! threaded one (`ProxyWebsocketAsync Off`); counts survive a graceful restart and come back
//! after `kill -9` of a child holding tunnels; with mod_remoteip (2.4) the forwarded address
//! is what is counted; with mod_socache_shmcb (2.4) the count can live in an ap_socache store.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};
use wst_e2e::client::{check_101, close, roundtrip, ws_config, Response};
use wst_e2e::net::Stream;
use wst_e2e::observe::{local_port, serving_child, status_auto, status_num};
use wst_e2e::tunnels::{backend_got, several_children, sigkill, Ws, WAIT};
use wst_e2e::{need, Browser, Httpd, Target, UpgradeRequest, WstEcho};

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to 127.0.0.1:`port` from `src` (port chosen by the kernel).
fn connect_from(src: Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; on success it is moved
    // into a TcpStream, on failure closed here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes(src.octets());
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &sa as *const libc::sockaddr_in as *const libc::sockaddr, len) != 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        sa.sin_addr.s_addr = u32::from_ne_bytes(LOCAL.octets());
        sa.sin_port = port.to_be();
        if libc::connect(fd, &sa as *const libc::sockaddr_in as *const libc::sockaddr, len) != 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let tcp = TcpStream::from_raw_fd(fd);
        tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(15)))?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }
}

/// One upgrade from `src`: the response head, and the WebSocket if it was a 101.
fn upgrade(src: Ipv4Addr, t: &Target, req: &UpgradeRequest) -> (Response, Option<Ws>) {
    let mut tcp = connect_from(src, t.port).unwrap_or_else(|e| panic!("connect from {src}: {e}"));
    tcp.write_all(&req.to_bytes()).unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = wst_e2e::ws::head_end(&buf) {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).unwrap_or_else(|e| panic!("from {src}: {e}"));
        assert!(n > 0, "EOF before a response head ({src}): {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let rest = buf.split_off(end);
    let r = Response::parse_head(&buf).unwrap();
    if r.status == 101 {
        check_101(req, &r).unwrap();
        let ws = WebSocket::from_partially_read(
            Stream::Plain(tcp),
            rest,
            Role::Client,
            Some(ws_config()),
        );
        (r, Some(ws))
    } else {
        (r, None)
    }
}

fn request(t: &Target, path: &str) -> UpgradeRequest {
    UpgradeRequest::new(path, &t.host, Browser::Firefox)
}

/// A tunnel from `src` to `path` that must open, checked with one echoed message.
fn open_from(src: Ipv4Addr, t: &Target, path: &str) -> Ws {
    let (r, ws) = upgrade(src, t, &request(t, path));
    let mut ws = ws.unwrap_or_else(|| panic!("{src} {path}: want 101, got:\n{}", r.head));
    let m = format!("hello from {src} {path}");
    assert_eq!(
        roundtrip(&mut ws, Message::text(m.clone())).unwrap(),
        Message::text(m)
    );
    ws
}

/// An upgrade from `src` that the per-client cap must refuse: 429 with Retry-After: 10.
fn assert_429(src: Ipv4Addr, t: &Target, path: &str) {
    let (r, ws) = upgrade(src, t, &request(t, path));
    assert!(ws.is_none(), "{src} {path}: over the per-client cap, got a 101");
    assert_eq!(r.status, 429, "{src} {path}:\n{}", r.head);
    assert_eq!(
        r.header("Retry-After").map(str::trim),
        Some("10"),
        "{src} {path}:\n{}",
        r.head
    );
}

/// A tunnel from `src` as soon as the cap allows (429 meanwhile; anything else fails).
fn open_when_allowed(src: Ipv4Addr, t: &Target, path: &str) -> (Ws, usize) {
    let (ws, n) = wst_e2e::observe::retry(WAIT, Duration::from_millis(100), || {
        let (r, ws) = upgrade(src, t, &request(t, path));
        if ws.is_none() {
            assert_eq!(r.status, 429, "{src} {path}: unexpected answer:\n{}", r.head);
        }
        ws
    });
    (
        ws.unwrap_or_else(|| panic!("{src} {path}: still refused after {WAIT:?}")),
        n,
    )
}

fn assert_wst060(h: &Httpd, addr: &str, count: u32, cap: u32) {
    let needle_count = format!("client {addr} has {count} open tunnel");
    let needle_cap = format!("ProxyWebsocketMaxClientTunnels {cap}:");
    let line = h
        .wait_error_line(WAIT, &["WST060", &needle_count, &needle_cap, "429"])
        .unwrap_or_else(|| panic!("no WST060 for {addr}:\n{}", h.error_log()));
    assert!(
        line.contains(":warn]") || line.contains("[warn]"),
        "WST060 not at warn: {line}"
    );
}

fn need_24(what: &str) -> bool {
    let ok = Httpd::flavor().is_24();
    if !ok {
        eprintln!("SKIP: {what} needs httpd 2.4");
    }
    ok
}

const CAP_2: &str = "ProxyWebsocketMaxClientTunnels 2\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n";

/// The cap on one path: `threaded` adds `ProxyWebsocketAsync Off`.
fn per_client_cap(threaded: bool, mpm: Option<&str>) {
    if !need::ours() {
        return;
    }
    if let Some(m) = mpm {
        if !need::mpm(m) {
            return;
        }
    }
    let b = WstEcho::start();
    let mut builder = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(&several_children(5, 4))
        .config(CAP_2);
    // The path is pinned (WST_ASYNC=off must not move the handed-over variants).
    builder = builder.async_tunnels(!threaded);
    if let Some(m) = mpm {
        builder = builder.mpm(m);
    }
    let h = builder.start();
    let t = h.target();

    let mut local: Vec<Ws> = (0..2)
        .map(|i| open_from(LOCAL, &t, &format!("/ws/local{i}")))
        .collect();
    assert_429(LOCAL, &t, "/ws/local-third");
    assert_eq!(
        backend_got(&b, "/local-third"),
        0,
        "the refused upgrade reached the backend: {:?}",
        b.requests()
    );
    assert_wst060(&h, "127.0.0.1", 2, 2);

    // Another address: counted apart, capped alike.
    let mut other: Vec<Ws> = (0..2)
        .map(|i| open_from(OTHER, &t, &format!("/ws/other{i}")))
        .collect();
    assert_429(OTHER, &t, "/ws/other-third");
    assert_eq!(backend_got(&b, "/other-third"), 0);
    assert_wst060(&h, "127.0.0.2", 2, 2);

    // Every tunnel still works.
    for ws in local.iter_mut().chain(other.iter_mut()) {
        assert_eq!(
            roundtrip(ws, Message::text("still")).unwrap(),
            Message::text("still")
        );
    }

    // One ends: a new one from the same address gets in, and then the address is full again.
    let mut first = local.remove(0);
    close(&mut first);
    drop(first);
    let (ws, attempts) = open_when_allowed(LOCAL, &t, "/ws/replacement");
    eprintln!("replacement tunnel after {attempts} attempt(s)");
    local.push(ws);
    assert_429(LOCAL, &t, "/ws/local-again");
    assert_eq!(backend_got(&b, "/local-again"), 0);

    // The path these tunnels took.
    let handed = h.error_log().contains("WST031");
    assert_eq!(
        handed, !threaded,
        "WST031 (handed to the reactor) {} in the log with ProxyWebsocketAsync {}",
        if handed { "is" } else { "is not" },
        if threaded { "Off" } else { "On" }
    );

    // All end: both addresses get their two again.
    for ws in local.iter_mut().chain(other.iter_mut()) {
        close(ws);
    }
    drop(local);
    drop(other);
    let mut again = Vec::new();
    for src in [LOCAL, OTHER] {
        for i in 0..2 {
            again.push(open_when_allowed(src, &t, &format!("/ws/again{i}")).0);
        }
        assert_429(src, &t, "/ws/again-third");
    }
    for ws in again.iter_mut() {
        close(ws);
    }
}

/// Default path: tunnels handed to the children's reactors.
#[test]
fn per_client_cap_handed_over() {
    per_client_cap(false, None);
}

/// `ProxyWebsocketAsync Off`: tunnels on their worker threads.
#[test]
fn per_client_cap_threaded() {
    per_client_cap(true, None);
}

/// prefork: one connection per process, so the count can only be shared memory.
#[test]
fn per_client_cap_prefork() {
    per_client_cap(false, Some("prefork"));
}

/// A failed upgrade (the backend answers 403, or is not there) gives its count back at once.
#[test]
fn failed_upgrades_give_back() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .var("DEAD_PORT", wst_e2e::net::closed_port())
        .config(
            "ProxyWebsocketMaxClientTunnels 1\n\
             ProxyPass /dead/ ws://127.0.0.1:{DEAD_PORT}/\n\
             ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n",
        )
        .start();
    let t = h.target();
    for i in 0..4 {
        let (r, ws) = upgrade(LOCAL, &t, &request(&t, &format!("/ws/status/403?{i}")));
        assert!(ws.is_none());
        assert_eq!(r.status, 403, "{}", r.head);
        let (r, ws) = upgrade(LOCAL, &t, &request(&t, "/dead/x"));
        assert!(ws.is_none());
        assert_eq!(r.status, 503, "{}", r.head);
    }
    let mut ws = open_from(LOCAL, &t, "/ws/after-failures");
    assert_429(LOCAL, &t, "/ws/second");
    close(&mut ws);
}

fn graceful(h: &Httpd) {
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
    std::thread::sleep(Duration::from_millis(500));
}

/// A graceful restart keeps the counts: the old generation's tunnels still count against the
/// new generation's admissions, and are counted out when they end.
fn counts_survive_graceful_restart(threaded: bool) {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let mut builder = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(&several_children(5, 4))
        .config(CAP_2);
    // The path is pinned (WST_ASYNC=off must not move the handed-over variants).
    builder = builder.async_tunnels(!threaded);
    let h = builder.start();
    let t = h.target();
    let mut open: Vec<Ws> = (0..2)
        .map(|i| open_from(LOCAL, &t, &format!("/ws/before{i}")))
        .collect();
    graceful(&h);
    for ws in open.iter_mut() {
        assert_eq!(
            roundtrip(ws, Message::text("after restart")).unwrap(),
            Message::text("after restart")
        );
    }
    assert_429(LOCAL, &t, "/ws/after-restart");
    assert_eq!(backend_got(&b, "/after-restart"), 0);
    let mut one = open.remove(0);
    close(&mut one);
    drop(one);
    let (ws, _) = open_when_allowed(LOCAL, &t, "/ws/new-generation");
    open.push(ws);
    assert_429(LOCAL, &t, "/ws/full-again");
    for ws in open.iter_mut() {
        close(ws);
    }
}

#[test]
fn counts_survive_graceful_restart_handed_over() {
    counts_survive_graceful_restart(false);
}

#[test]
fn counts_survive_graceful_restart_threaded() {
    counts_survive_graceful_restart(true);
}

/// `kill -9` of the children holding a client's tunnels: their counts come back (the client
/// gets its n tunnels again, and no more).
fn counts_come_back_after_kill9(mpm: &str, threaded: bool) {
    if !need::ours() || !need::mpm(mpm) {
        return;
    }
    let b = WstEcho::start();
    let status = Httpd::flavor().has_module("status");
    let mut builder = Httpd::builder()
        .mpm(mpm)
        .var("BACKEND_PORT", b.port())
        .config(&several_children(1, 1))
        .config(CAP_2);
    if status {
        builder = builder
            .module("status")
            .config("<Location /server-status>\n    SetHandler server-status\n</Location>\n");
    }
    // The path is pinned (WST_ASYNC=off must not move the handed-over variants).
    builder = builder.async_tunnels(!threaded);
    let h = builder.start();
    let t = h.target();
    if mpm == "prefork" {
        let _ = wst_e2e::wait_for(WAIT, || (h.child_pids().len() >= 5).then_some(()));
    }
    let mut victims: Vec<Ws> = (0..2)
        .map(|i| open_from(LOCAL, &t, &format!("/ws/victim{i}")))
        .collect();
    assert_429(LOCAL, &t, "/ws/before-kill");
    let mut pids: Vec<u32> = victims
        .iter()
        .map(|ws| serving_child(&h, local_port(ws.get_ref())).expect("serving child"))
        .collect();
    pids.sort();
    pids.dedup();
    eprintln!("{mpm}: killing children {pids:?} holding the client's tunnels");
    for pid in &pids {
        sigkill(*pid);
    }
    for ws in victims.iter_mut() {
        assert!(ws.read().is_err(), "a tunnel survived the kill of its child");
    }
    drop(victims);
    let mut again: Vec<Ws> = Vec::new();
    for i in 0..2 {
        let (ws, n) = open_when_allowed(LOCAL, &t, &format!("/ws/after-kill{i}"));
        eprintln!("{mpm}: tunnel {i} after the kill: {n} attempt(s)");
        again.push(ws);
    }
    assert_429(LOCAL, &t, "/ws/after-kill-third");
    if status {
        let m = status_auto(&t, "/server-status").unwrap();
        let reaped = status_num(&m, "WebSocketClientTunnelsReaped").unwrap_or(0);
        assert!(reaped >= 2, "WebSocketClientTunnelsReaped: {m:?}");
    }
    for ws in again.iter_mut() {
        close(ws);
    }
}

#[test]
fn counts_come_back_after_kill9_prefork() {
    counts_come_back_after_kill9("prefork", false);
}

#[test]
fn counts_come_back_after_kill9_event_handed_over() {
    counts_come_back_after_kill9("event", false);
}

#[test]
fn counts_come_back_after_kill9_worker_threaded() {
    counts_come_back_after_kill9("worker", true);
}

/// mod_remoteip (2.4): the address it reports (X-Forwarded-For from a trusted proxy) is the
/// one counted, not the connection's.
#[test]
fn remoteip_address_is_counted() {
    if !need::ours() || !need_24("mod_remoteip") || !need::module("remoteip") {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("remoteip")
        .var("BACKEND_PORT", b.port())
        .config(
            "RemoteIPHeader X-Forwarded-For\nRemoteIPInternalProxy 127.0.0.1\n\
             ProxyWebsocketMaxClientTunnels 1\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n",
        )
        .start();
    let t = h.target();
    let from = |xff: &str, path: &str| {
        upgrade(
            LOCAL,
            &t,
            &request(&t, path).header("X-Forwarded-For", xff),
        )
    };
    let (r, a) = from("203.0.113.7", "/ws/a");
    let mut a = a.unwrap_or_else(|| panic!("203.0.113.7: {}", r.head));
    let (r, none) = from("203.0.113.7", "/ws/a-second");
    assert!(none.is_none());
    assert_eq!(r.status, 429, "{}", r.head);
    assert_eq!(backend_got(&b, "/a-second"), 0);
    assert_wst060(&h, "203.0.113.7", 1, 1);
    // Same connection address, another forwarded one: its own count.
    let (r, c) = from("203.0.113.8", "/ws/c");
    let mut c = c.unwrap_or_else(|| panic!("203.0.113.8: {}", r.head));
    close(&mut a);
    close(&mut c);
}

/// A virtual host's own setting overrides the main server's; the count is per address,
/// server-wide.
#[test]
fn virtual_host_setting() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .listen("VPORT")
        .var("BACKEND_PORT", b.port())
        .config(
            "ProxyWebsocketMaxClientTunnels 1\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n\
             <VirtualHost 127.0.0.1:{VPORT}>\n    ServerName v.test\n    \
             ProxyWebsocketMaxClientTunnels 3\n    \
             ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n</VirtualHost>\n",
        )
        .start();
    let t = h.target();
    let v = Target::plain(h.port_of("VPORT"));
    let mut main = open_from(LOCAL, &t, "/ws/main");
    assert_429(LOCAL, &t, "/ws/main-second");
    // The vhost allows 3: the main server's tunnel counts too (one address, one count).
    let mut vs: Vec<Ws> = (0..2)
        .map(|i| open_from(LOCAL, &v, &format!("/ws/v{i}")))
        .collect();
    assert_429(LOCAL, &v, "/ws/v-third");
    close(&mut main);
    for ws in vs.iter_mut() {
        close(ws);
    }
}

/// The optional store (2.4): mod_socache_shmcb.
#[test]
fn shmcb_store() {
    if !need::ours() || !need_24("ap_socache") || !need::module("socache_shmcb") {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("socache_shmcb")
        .var("BACKEND_PORT", b.port())
        .config(&several_children(5, 4))
        .config(
            "ProxyWebsocketMaxClientTunnels 2 shmcb:{DIR}/wst-clients(65536) 60\n\
             ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n",
        )
        .start();
    let t = h.target();
    let mut open: Vec<Ws> = (0..2)
        .map(|i| open_from(LOCAL, &t, &format!("/ws/s{i}")))
        .collect();
    assert_429(LOCAL, &t, "/ws/s-third");
    assert_eq!(backend_got(&b, "/s-third"), 0);
    assert_wst060(&h, "127.0.0.1", 2, 2);
    let mut other = open_from(OTHER, &t, "/ws/other");
    let mut first = open.remove(0);
    close(&mut first);
    drop(first);
    open.push(open_when_allowed(LOCAL, &t, "/ws/s-replacement").0);
    assert_429(LOCAL, &t, "/ws/s-full");
    for ws in open.iter_mut() {
        close(ws);
    }
    drop(open);
    close(&mut other);
    // A graceful restart makes the store anew (the provider's module is reloaded): the new
    // generation counts and caps as before.
    graceful(&h);
    let mut open: Vec<Ws> = (0..2)
        .map(|i| open_when_allowed(LOCAL, &t, &format!("/ws/r{i}")).0)
        .collect();
    assert_429(LOCAL, &t, "/ws/r-third");
    for ws in open.iter_mut() {
        close(ws);
    }
}

/// Start an httpd with `snippet`; Err(the failure text) if it does not start.
fn start_result(snippet: &str) -> Result<Httpd, String> {
    let snippet = snippet.to_string();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        Httpd::builder().config(&snippet).start()
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Contexts and syntax: server config and virtual host only (not `<Location>`/`<Proxy>`), a
/// number, the store only in the main server (and only on 2.4, with its provider loaded).
#[test]
fn directive_syntax_and_contexts() {
    if !need::ours() {
        return;
    }
    let name = "ProxyWebsocketMaxClientTunnels";
    let mut bad = vec![
        "<Location /x>\n    ProxyWebsocketMaxClientTunnels 3\n</Location>\n",
        "<Proxy \"ws://127.0.0.1:1/\">\n    ProxyWebsocketMaxClientTunnels 3\n</Proxy>\n",
        "ProxyWebsocketMaxClientTunnels many\n",
        "ProxyWebsocketMaxClientTunnels -1\n",
        "<VirtualHost 127.0.0.1:{PORT}>\n    ProxyWebsocketMaxClientTunnels 3 shmcb:{DIR}/x(65536)\n</VirtualHost>\n",
        "ProxyWebsocketMaxClientTunnels 3 nosuchprovider:x\n",
    ];
    if Httpd::flavor().is_24() && Httpd::flavor().has_module("socache_shmcb") {
        bad.push("LoadModule socache_shmcb_module {SHMCB}\nProxyWebsocketMaxClientTunnels 3 shmcb:{DIR}/x(65536) 5\n");
    }
    let shmcb = Httpd::flavor()
        .module_file("socache_shmcb")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for snippet in bad {
        let snippet = snippet.replace("{SHMCB}", &shmcb);
        match start_result(&snippet) {
            Ok(_h) => panic!("httpd accepted:\n{snippet}"),
            Err(msg) => assert!(
                msg.contains(name) && msg.contains("Syntax error"),
                "{snippet}: the failure does not name {name}:\n{msg}"
            ),
        }
    }
    let good = "ProxyWebsocketMaxClientTunnels 0\n<VirtualHost 127.0.0.1:{PORT}>\n    \
                ProxyWebsocketMaxClientTunnels 4\n</VirtualHost>\n";
    if let Err(msg) = start_result(good) {
        panic!("valid configuration refused:\n{msg}");
    }
}
