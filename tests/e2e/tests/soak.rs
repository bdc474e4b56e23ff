//! Soak: SOAK_TUNNELS (1,000) concurrent tunnels carrying traffic for SOAK_SECS seconds under
//! one MPM, then all closed; afterwards httpd's children must hold no more descriptors than
//! before, no socket in CLOSE_WAIT (nor any TCP socket but their listeners), and a total RSS
//! within SOAK_RSS_PCT (5) percent of where it started.
//!
//! Opt-in (ignored by a plain `cargo test`): `scripts/soak.sh`, or
//! `SOAK_SECS=60 cargo test --release --test soak -- --ignored --nocapture`.
//!
//! "Where it started" is measured after a warm-up round (the same tunnels opened, used and
//! closed once), so that memory httpd keeps for reuse by design (APR pools and allocators,
//! lazily created worker threads and processes) is part of the baseline; the figures of the
//! cold start are printed too. Every message is a masked frame of 1 to 4,096 bytes echoed back
//! byte for byte by a raw echo backend, and checked.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use wst_e2e::faults::{open_sockets, rst, After, Behaviour, FaultBackend};
use wst_e2e::procfs::{fd_count, tcp_sockets_of, total_rss_kib, TCP_CLOSE_WAIT};
use wst_e2e::ws::{self, OP_BINARY};
use wst_e2e::{Browser, Httpd, UpgradeRequest};

static BACKEND_DEBUG: std::sync::OnceLock<&'static FaultBackend> = std::sync::OnceLock::new();

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

const TUNNEL_LOG: &str =
    "CustomLog \"{DIR}/logs/tunnel.log\" \"%>s %{wstunnel-end}n %{wstunnel-closed-first}n %r\"\n";

fn mpm_config(mpm: &str, tunnels: usize) -> String {
    match mpm {
        "prefork" => format!(
            "<IfModule mpm_prefork_module>\n  StartServers {n}\n  MinSpareServers 10\n  MaxSpareServers {n}\n  ServerLimit {n}\n  MaxRequestWorkers {n}\n  MaxConnectionsPerChild 0\n</IfModule>\n",
            n = tunnels + 16
        ),
        _ => {
            let per = 64;
            let procs = tunnels.div_ceil(per) + 1;
            format!(
                "<IfModule mpm_{mpm}_module>\n  StartServers {procs}\n  ServerLimit {procs}\n  ThreadLimit {per}\n  ThreadsPerChild {per}\n  MinSpareThreads 1\n  MaxSpareThreads {max}\n  MaxRequestWorkers {max}\n  MaxConnectionsPerChild 0\n</IfModule>\n",
                max = procs * per
            )
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    children: usize,
    fds: usize,
    rss_kib: u64,
    close_wait: usize,
    sockets: usize,
}

fn figures(h: &Httpd) -> Figures {
    let pids = h.child_pids();
    let socks = tcp_sockets_of(&pids);
    Figures {
        children: pids.len(),
        fds: pids.iter().filter_map(|p| fd_count(*p)).sum(),
        rss_kib: total_rss_kib(&pids),
        close_wait: socks
            .iter()
            .filter(|(_, s)| s.state == TCP_CLOSE_WAIT)
            .count(),
        sockets: open_sockets(h).len(),
    }
}

struct Conn {
    s: TcpStream,
    /// The frame in flight: written from `sent`, echoed back up to `got`.
    frame: Vec<u8>,
    sent: usize,
    got: usize,
    next_at: Instant,
    msgs: u64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn raise_nofile(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write a valid local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn open_tunnels(h: &Httpd, n: usize, round: usize) -> Vec<Conn> {
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let path = format!("/ws/soak/{round}/{i}");
        let req = UpgradeRequest::new(&path, "127.0.0.1", Browser::ALL[i % 2]).to_bytes();
        let mut s = TcpStream::connect(("127.0.0.1", h.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&req).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while ws::head_end(&head).is_none() {
            let k = s.read(&mut b).unwrap_or_else(|e| panic!("tunnel {i}: {e}"));
            assert!(k > 0, "tunnel {i}: EOF in the 101");
            head.extend_from_slice(&b[..k]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "tunnel {i}: {}",
            String::from_utf8_lossy(&head)
        );
        assert_eq!(
            ws::head_end(&head),
            Some(head.len()),
            "tunnel {i}: bytes after the 101"
        );
        s.set_nonblocking(true).unwrap();
        conns.push(Conn {
            s,
            frame: Vec::new(),
            sent: 0,
            got: 0,
            next_at: Instant::now(),
            msgs: 0,
        });
    }
    eprintln!("  round {round}: {n} tunnels open in {:?}", t0.elapsed());
    conns
}

/// Traffic on every tunnel for `secs`: one message in flight per tunnel, a pause of up to
/// 200 ms between messages. Returns (messages, bytes each way).
fn traffic(conns: &mut [Conn], secs: u64, seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed | 1);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 65536];
    let mut last_progress = Instant::now();
    loop {
        let now = Instant::now();
        let finishing = now >= end;
        // New messages.
        if !finishing {
            for c in conns.iter_mut() {
                if c.got == c.frame.len() && now >= c.next_at {
                    let len = 1 + (rng.next() % 4096) as usize;
                    let payload = wst_e2e::binary_payload(len, rng.next() as u8);
                    c.frame = ws::client_frame(OP_BINARY, &payload);
                    c.sent = 0;
                    c.got = 0;
                }
            }
        }
        let busy: Vec<usize> = (0..conns.len())
            .filter(|&i| conns[i].got < conns[i].frame.len())
            .collect();
        if finishing && busy.is_empty() {
            break;
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(20),
            "no echo progress for 20 s ({} messages in flight)",
            busy.len()
        );
        let mut pfds: Vec<libc::pollfd> = busy
            .iter()
            .map(|&i| {
                let c = &conns[i];
                let ev = libc::POLLIN
                    | if c.sent < c.frame.len() {
                        libc::POLLOUT
                    } else {
                        0
                    };
                libc::pollfd {
                    fd: c.s.as_raw_fd(),
                    events: ev,
                    revents: 0,
                }
            })
            .collect();
        // SAFETY: pfds is a valid array of pollfd for its length.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 20) };
        for (k, &i) in busy.iter().enumerate() {
            let r = pfds[k].revents;
            if r == 0 {
                continue;
            }
            let c = &mut conns[i];
            assert!(
                r & (libc::POLLERR | libc::POLLNVAL) == 0,
                "tunnel {i}: poll error {r:#x}"
            );
            if r & libc::POLLOUT != 0 && c.sent < c.frame.len() {
                match c.s.write(&c.frame[c.sent..]) {
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("tunnel {i}: write: {e}"),
                }
            }
            if r & (libc::POLLIN | libc::POLLHUP) != 0 {
                match c.s.read(&mut buf) {
                    Ok(0) => {
                        if let Some(b) = BACKEND_DEBUG.get() {
                            let ended: Vec<String> = (0..b.connections())
                                .filter_map(|k| {
                                    b.seen(k).filter(|x| !x.end.is_empty()).map(|x| {
                                        format!("{k}: {} after {} bytes", x.end, x.bytes_after)
                                    })
                                })
                                .collect();
                            eprintln!("backend connections that ended: {ended:?}");
                        }
                        panic!("tunnel {i}: EOF during traffic after {} messages", c.msgs)
                    }
                    Ok(n) => {
                        assert!(c.got + n <= c.sent, "tunnel {i}: more echoed than sent");
                        assert_eq!(
                            &buf[..n],
                            &c.frame[c.got..c.got + n],
                            "tunnel {i}: echo differs"
                        );
                        c.got += n;
                        bytes += n as u64;
                        last_progress = Instant::now();
                        if c.got == c.frame.len() {
                            c.msgs += 1;
                            c.next_at = Instant::now() + Duration::from_millis(rng.next() % 200);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("tunnel {i}: read: {e}"),
                }
            }
        }
    }
    (conns.iter().map(|c| c.msgs).sum(), bytes)
}

/// Close every tunnel: a quarter with a half-close (and wait for the FIN coming back), a
/// quarter with an RST, the rest by closing the socket.
fn close_all(conns: Vec<Conn>) {
    let mut half = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        match i % 4 {
            0 => {
                c.s.shutdown(Shutdown::Write).unwrap();
                half.push((i, c.s));
            }
            1 => rst(c.s),
            _ => drop(c.s),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    for (i, mut s) in half {
        s.set_nonblocking(false).unwrap();
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {}
            other => panic!("tunnel {i}: expected the FIN after a half-close, got {other:?}"),
        }
    }
}

fn tunnels_logged(h: &Httpd) -> usize {
    std::fs::read_to_string(h.dir().join("logs/tunnel.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("101 "))
        .count()
}

fn soak(mpm: &str) {
    if !Httpd::flavor().supports_mpm(mpm) {
        eprintln!("SKIP: MPM {mpm} not available");
        return;
    }
    let secs = env_num("SOAK_SECS", 60);
    let n = env_num("SOAK_TUNNELS", 1000) as usize;
    let rss_pct = env_num("SOAK_RSS_PCT", 5);
    raise_nofile(4 * n as u64 + 1024);
    let b = FaultBackend::start_for(
        Behaviour::Upgrade { then: After::Echo },
        Duration::from_secs(secs + 120),
    );
    let b: &'static FaultBackend = Box::leak(Box::new(b));
    let _ = BACKEND_DEBUG.set(b);
    let h = Httpd::builder()
        .mpm(mpm)
        .var("BACKEND_PORT", b.port())
        .config(&format!(
            "{}{}ListenBacklog 2048\n{TUNNEL_LOG}ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/\n",
            mpm_config(mpm, n),
            // SOAK_CORE_DIR: where crashing children dump core (with `ulimit -c unlimited`).
            std::env::var("SOAK_CORE_DIR")
                .ok()
                .filter(|d| !d.trim().is_empty())
                .map(|d| format!("CoreDumpDirectory \"{d}\"\n"))
                .unwrap_or_default()
        ))
        .start();
    // Let the MPM start all its processes.
    std::thread::sleep(Duration::from_secs(3));
    let cold = figures(&h);
    eprintln!("soak {mpm}: {n} tunnels, {secs} s of traffic; cold start: {cold:?}");

    // Warm-up rounds (SOAK_WARMUPS, default 3): the same number of tunnels opened, used for
    // up to 5 s and closed, so that what httpd keeps for reuse is in the baseline.
    let warmups = env_num("SOAK_WARMUPS", 3) as usize;
    for round in 0..warmups {
        let mut conns = open_tunnels(&h, n, round);
        let (m0, b0) = traffic(&mut conns, 5.min(secs), 1 + round as u64);
        close_all(conns);
        let want = n * (round + 1);
        assert!(
            wst_e2e::wait_for(Duration::from_secs(30), || (tunnels_logged(&h) >= want)
                .then_some(()))
            .is_some(),
            "warm-up: {} of {want} tunnels logged their end",
            tunnels_logged(&h)
        );
        std::thread::sleep(Duration::from_secs(1));
        eprintln!(
            "  warm-up {round}: {m0} messages, {b0} bytes echoed; then {:?}",
            figures(&h)
        );
    }
    let before = figures(&h);

    // The soak.
    let mut conns = open_tunnels(&h, n, warmups);
    let during_open = figures(&h);
    let t0 = Instant::now();
    let (msgs, bytes) = traffic(&mut conns, secs, 99);
    let during = figures(&h);
    let took = t0.elapsed();
    if std::env::var("SOAK_FD_DUMP").is_ok() {
        let mut kinds = std::collections::BTreeMap::new();
        for p in h.child_pids() {
            for e in std::fs::read_dir(format!("/proc/{p}/fd"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let l = std::fs::read_link(e.path())
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let k = l.split(':').next().unwrap_or("").to_string();
                *kinds.entry(k).or_insert(0) += 1;
            }
        }
        eprintln!("  fd kinds during traffic: {kinds:?}");
    }
    close_all(conns);
    assert!(
        wst_e2e::wait_for(Duration::from_secs(30), || {
            (tunnels_logged(&h) >= (warmups + 1) * n).then_some(())
        })
        .is_some(),
        "soak: {} of {n} tunnels logged their end",
        tunnels_logged(&h) - warmups * n
    );
    // Sockets and descriptors are given back as soon as the tunnels end; give the last ones a
    // moment.
    let settled = wst_e2e::wait_for(Duration::from_secs(10), || {
        let f = figures(&h);
        (f.fds <= before.fds && f.close_wait == 0 && f.sockets == 0).then_some(f)
    });
    let after = settled.unwrap_or_else(|| figures(&h));
    let rss_delta_pct =
        (after.rss_kib as f64 - before.rss_kib as f64) * 100.0 / before.rss_kib as f64;
    eprintln!(
        "SOAK {mpm}: {n} tunnels, {took:.1?} of traffic, {msgs} messages, {} MiB echoed ({:.0} msg/s)\n  \
         before: children {} fds {} RSS {} KiB CLOSE_WAIT {} sockets {}\n  \
         during: children {} fds {} RSS {} KiB (at open: fds {} RSS {} KiB)\n  \
         after:  children {} fds {} RSS {} KiB CLOSE_WAIT {} sockets {}  (RSS {:+.2}% vs before, {:+.2}% vs cold start)",
        bytes >> 20,
        msgs as f64 / took.as_secs_f64(),
        before.children, before.fds, before.rss_kib, before.close_wait, before.sockets,
        during.children, during.fds, during.rss_kib, during_open.fds, during_open.rss_kib,
        after.children, after.fds, after.rss_kib, after.close_wait, after.sockets,
        rss_delta_pct,
        (after.rss_kib as f64 - cold.rss_kib as f64) * 100.0 / cold.rss_kib as f64,
    );
    assert!(
        during_open.fds >= before.fds + n,
        "the tunnels did not show in the children's fds"
    );
    assert_eq!(
        after.close_wait,
        0,
        "sockets in CLOSE_WAIT: {:?}",
        open_sockets(&h)
    );
    assert_eq!(after.sockets, 0, "sockets left: {:?}", open_sockets(&h));
    assert!(
        after.fds <= before.fds,
        "fds {} before, {} after",
        before.fds,
        after.fds
    );
    assert!(
        rss_delta_pct <= rss_pct as f64,
        "RSS {} KiB before, {} KiB after ({rss_delta_pct:+.2}%)",
        before.rss_kib,
        after.rss_kib
    );
    assert!(msgs > n as u64, "hardly any traffic: {msgs} messages");
}

#[test]
#[ignore = "soak: run with scripts/soak.sh (SOAK_SECS, SOAK_TUNNELS)"]
fn soak_event() {
    soak("event");
}

#[test]
#[ignore = "soak: run with scripts/soak.sh (SOAK_SECS, SOAK_TUNNELS)"]
fn soak_prefork() {
    soak("prefork");
}

#[test]
#[ignore = "soak: run with scripts/soak.sh (SOAK_SECS, SOAK_TUNNELS)"]
fn soak_worker() {
    soak("worker");
}
