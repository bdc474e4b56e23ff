//! The capacity climb: how many open idle ws:// tunnels one server holds,
//! each checked with an echo when opened and again after the hold.
//!
//! A process here may hold at most 20,000 descriptors (a hard limit root
//! cannot raise), so the clients are several `wst-bench hold` processes,
//! each connecting from its own source address in 127.0.0.0/8, and the
//! backend is several `wst-bench echo` processes with several listeners
//! each (one route per listener): no client process, backend process or
//! (source address, destination) pair comes near its limits, and the
//! ephemeral port range (28k ports per destination) is never the cap.
//!
//! The driver talks to each holder over its stdin/stdout, one line per
//! command and one per answer:
//!   open PORT PATHS N PARALLEL SRC TIMEOUT_MS -> ok|err OPENED HELD [why]
//!   echo PARALLEL                             -> ok BAD HELD [first error]
//!   close                                     -> ok 0 0

use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::load::{self, Dest, Ws};
use crate::servers::{self, Server};

// ---------------------------------------------------------------------------
// The holder process
// ---------------------------------------------------------------------------

pub fn hold() -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("wst-bench hold: runtime: {e}");
            std::process::exit(1)
        });
    let mut held: Vec<Ws> = Vec::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let f: Vec<&str> = line.split_whitespace().collect();
        let reply = match f.first().copied() {
            Some("open") if f.len() >= 7 => {
                let port: u16 = f[1].parse().unwrap_or(0);
                let paths: Vec<String> = f[2].split(',').map(String::from).collect();
                let n: usize = f[3].parse().unwrap_or(0);
                let par: usize = f[4].parse().unwrap_or(1);
                let src: Option<Ipv4Addr> = f[5].parse().ok();
                let to = Duration::from_millis(f[6].parse().unwrap_or(5000));
                let (opened, err) = rt.block_on(open(port, &paths, n, par, src, to, &mut held));
                match err {
                    None => format!("ok {opened} {}", held.len()),
                    Some(e) => format!("err {opened} {} {}", held.len(), e.replace('\n', " ")),
                }
            }
            Some("echo") => {
                let par: usize = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(50);
                let (bad, first) = rt.block_on(echo_all(&mut held, par));
                format!("ok {bad} {} {}", held.len(), first.unwrap_or_default().replace('\n', " "))
            }
            Some("close") => {
                held.clear();
                "ok 0 0".to_string()
            }
            Some("quit") => break,
            _ => format!("err 0 {} bad command", held.len()),
        };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    std::process::exit(0)
}

/// Open `n` more tunnels, `par` at a time, path chosen round-robin; stop
/// after the first batch with a failure (its successes are kept).
async fn open(
    port: u16,
    paths: &[String],
    n: usize,
    par: usize,
    src: Option<Ipv4Addr>,
    to: Duration,
    held: &mut Vec<Ws>,
) -> (usize, Option<String>) {
    let p = load::payload(64, 5);
    let mut opened = 0;
    let mut remaining = n;
    while remaining > 0 {
        let k = remaining.min(par.max(1));
        let mut set = Vec::with_capacity(k);
        for j in 0..k {
            let path = paths[(held.len() + j) % paths.len().max(1)].clone();
            let d = Dest { path, src, connect_timeout: to, small: true, ..Dest::new(port, None) };
            let p = p.clone();
            set.push(tokio::spawn(async move {
                let mut ws = load::connect(&d).await?;
                load::echo_once(&mut ws, &p).await?;
                Ok::<_, String>(ws)
            }));
        }
        let mut err = None;
        for t in set {
            match t.await {
                Ok(Ok(ws)) => {
                    held.push(ws);
                    opened += 1;
                }
                Ok(Err(e)) => err = err.or(Some(e)),
                Err(e) => err = err.or(Some(format!("task: {e}"))),
            }
        }
        if err.is_some() {
            return (opened, err);
        }
        remaining -= k;
    }
    (opened, None)
}

/// One echo on every held tunnel, `par` tunnels at a time.
async fn echo_all(held: &mut Vec<Ws>, par: usize) -> (usize, Option<String>) {
    let all = std::mem::take(held);
    let per = all.len().div_ceil(par.max(1)).max(1);
    let mut tasks = Vec::new();
    let mut it = all.into_iter().peekable();
    let mut i = 0u64;
    while it.peek().is_some() {
        let chunk: Vec<Ws> = it.by_ref().take(per).collect();
        i += 1;
        let p = load::payload(64, 100 + i);
        tasks.push(tokio::spawn(async move {
            let mut bad = 0;
            let mut first = None;
            let mut keep = Vec::with_capacity(chunk.len());
            for mut ws in chunk {
                match load::echo_once(&mut ws, &p).await {
                    Ok(()) => keep.push(ws),
                    Err(e) => {
                        bad += 1;
                        first = first.or(Some(e));
                    }
                }
            }
            (keep, bad, first)
        }));
    }
    let mut bad = 0;
    let mut first = None;
    for t in tasks {
        if let Ok((keep, b, f)) = t.await {
            held.extend(keep);
            bad += b;
            first = first.or(f);
        }
    }
    (bad, first)
}

// ---------------------------------------------------------------------------
// The driver's side
// ---------------------------------------------------------------------------

pub struct Holder {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<String>,
    pub src: Ipv4Addr,
    pub held: usize,
}

impl Holder {
    pub fn spawn(src: Ipv4Addr) -> Result<Holder, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("hold").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe: the holder dies with the driver.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn holder: {e}"))?;
        let stdin = child.stdin.take().ok_or("holder stdin")?;
        let stdout = child.stdout.take().ok_or("holder stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Holder { child, stdin, rx, src, held: 0 })
    }

    fn send(&mut self, cmd: &str) -> Result<(), String> {
        writeln!(self.stdin, "{cmd}").and_then(|_| self.stdin.flush()).map_err(|e| format!("holder {}: {e}", self.src))
    }

    fn answer(&mut self, to: Duration) -> Result<(bool, usize, usize, String), String> {
        let l = self.rx.recv_timeout(to).map_err(|_| format!("holder {}: no answer within {} s", self.src, to.as_secs()))?;
        let mut f = l.splitn(4, ' ');
        let ok = f.next() == Some("ok");
        let a = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let held = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        self.held = held;
        Ok((ok, a, held, f.next().unwrap_or("").to_string()))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default, Debug)]
pub struct Climb {
    /// Tunnels open at the top (each echoed when opened).
    pub held: usize,
    /// Of those, how many failed their echo after the hold.
    pub echo_bad: usize,
    pub echo_err: Option<String>,
    /// Why the climb stopped below the cap (None: reached it).
    pub stopped: Option<String>,
    pub secs: f64,
    pub rss0: u64,
    pub rss_top: u64,
    pub fds0: usize,
    pub fds_top: usize,
    /// Descriptors of the proxy once every tunnel closed (and settled).
    pub fds_after: usize,
    /// Proxy-side connections left in CLOSE_WAIT / established to the
    /// backends after every client closed.
    pub close_wait_after: usize,
    pub backend_open_after: usize,
    /// Processes of the server at the top, with their descriptor counts
    /// (how the tunnels spread over httpd's children).
    pub spread: Vec<usize>,
    pub alive_after: bool,
    pub procs0: usize,
    pub procs_top: usize,
}

pub struct ClimbPlan {
    pub cap: usize,
    pub step: usize,
    pub parallel: usize,
    pub connect_timeout: Duration,
    pub hold: Duration,
    pub deadline: Duration,
}

/// Climb `server` (whose routes `paths` lead to `backend_ports`) with
/// `holders`, up to `plan.cap`, then hold, echo on all, close all and
/// check what the server kept.
pub fn climb(server: &Server, port: u16, paths: &[String], backend_ports: &[u16], holders: &mut [Holder], plan: &ClimbPlan) -> Climb {
    let started = Instant::now();
    let mut r = Climb { rss0: server.rss_kib(), fds0: server.fds(), procs0: server.processes(), ..Climb::default() };
    let paths_arg = paths.join(",");
    let to_ms = plan.connect_timeout.as_millis();
    let nh = holders.len().max(1);
    let mut held = 0usize;
    let mut retried = false;
    loop {
        if held >= plan.cap {
            break;
        }
        if started.elapsed() > plan.deadline {
            r.stopped = Some(format!("climb deadline ({} s)", plan.deadline.as_secs()));
            break;
        }
        let want = (plan.cap - held).min(if retried { 10 } else { plan.step });
        // Spread over the holders (retry: the first holder alone).
        let mut shares = vec![0usize; nh];
        if retried {
            shares[0] = want;
        } else {
            for (i, s) in shares.iter_mut().enumerate() {
                *s = want / nh + usize::from(i < want % nh);
            }
        }
        let mut errs = Vec::new();
        for (h, &n) in holders.iter_mut().zip(&shares) {
            if n == 0 {
                continue;
            }
            let cmd = format!("open {port} {paths_arg} {n} {} {} {to_ms}", plan.parallel, h.src);
            if let Err(e) = h.send(&cmd) {
                errs.push(e);
            }
        }
        for (h, &n) in holders.iter_mut().zip(&shares) {
            if n == 0 {
                continue;
            }
            let batches = n.div_ceil(plan.parallel.max(1)) as u32;
            match h.answer(plan.connect_timeout * (batches + 2) + Duration::from_secs(15)) {
                Ok((true, _, _, _)) => {}
                Ok((false, _, _, why)) => errs.push(why),
                Err(e) => errs.push(e),
            }
        }
        held = holders.iter().map(|h| h.held).sum();
        if !errs.is_empty() {
            if retried {
                r.stopped = Some(errs.swap_remove(0));
                break;
            }
            // Once more, 10 tunnels, after a pause (a slot may still be
            // finishing an earlier connection), then stop.
            retried = true;
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        if retried {
            retried = false;
        }
    }
    r.held = held;
    r.secs = started.elapsed().as_secs_f64();
    r.rss_top = settle(server);
    r.fds_top = server.fds();
    r.procs_top = server.processes();
    r.spread = server.fds_by_process().into_iter().map(|(_, n)| n).collect();
    r.spread.sort_unstable_by(|a, b| b.cmp(a));
    // Hold, then an echo on every tunnel.
    std::thread::sleep(plan.hold);
    for h in holders.iter_mut() {
        let _ = h.send("echo 50");
    }
    for h in holders.iter_mut() {
        let n = h.held as u32;
        match h.answer(Duration::from_secs(30) + Duration::from_millis(20) * n) {
            Ok((_, bad, _, first)) => {
                r.echo_bad += bad;
                if bad > 0 && r.echo_err.is_none() {
                    r.echo_err = Some(first);
                }
            }
            Err(e) => {
                r.echo_bad += n as usize;
                r.echo_err = Some(e);
            }
        }
    }
    // Close every tunnel; the server must give back what it held.
    for h in holders.iter_mut() {
        let _ = h.send("close");
    }
    for h in holders.iter_mut() {
        let _ = h.answer(Duration::from_secs(60));
    }
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        r.backend_open_after = backend_ports.iter().map(|&p| servers::connections_to(p)).sum();
        r.fds_after = server.fds();
        if (r.backend_open_after == 0 && r.fds_after <= r.fds0 + 8) || Instant::now() > until {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    r.close_wait_after = servers::close_wait(port, backend_ports);
    r.alive_after = server.processes() >= r.procs0.min(1);
    r
}

/// RSS once it has stopped moving (bounded: 10 samples).
fn settle(s: &Server) -> u64 {
    let mut last = s.rss_kib();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let now = s.rss_kib();
        if now.abs_diff(last) < 256 {
            return now;
        }
        last = now;
    }
    last
}

/// The kernel settings that bound a climb, for the log and the results.
pub fn limits() -> Vec<(String, String)> {
    let rd = |p: &str| std::fs::read_to_string(p).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).unwrap_or_else(|_| "?".into());
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: l is a valid rlimit for getrlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    vec![
        ("RLIMIT_NOFILE (soft/hard)".into(), format!("{}/{}", l.rlim_cur, l.rlim_max)),
        ("net.ipv4.ip_local_port_range".into(), rd("/proc/sys/net/ipv4/ip_local_port_range")),
        ("net.core.somaxconn".into(), rd("/proc/sys/net/core/somaxconn")),
        ("net.ipv4.tcp_max_syn_backlog".into(), rd("/proc/sys/net/ipv4/tcp_max_syn_backlog")),
        ("net.ipv4.tcp_tw_reuse".into(), rd("/proc/sys/net/ipv4/tcp_tw_reuse")),
        ("net.ipv4.tcp_mem".into(), rd("/proc/sys/net/ipv4/tcp_mem")),
        ("fs.file-max".into(), rd("/proc/sys/fs/file-max")),
        ("fs.nr_open".into(), rd("/proc/sys/fs/nr_open")),
        ("vm.max_map_count".into(), rd("/proc/sys/vm/max_map_count")),
    ]
}
