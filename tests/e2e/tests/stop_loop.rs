//! Stop loop: httpd stopped, gracefully restarted or gracefully stopped while SOAK_TUNNELS
//! (1,000) tunnels carry traffic both ways, SOAK_STOP_LOOP rounds per MPM, with core dumps on.
//! A hunt for the child crash once seen at stop under load (faults.rs's
//! stop_while_200_tunnels_carry_traffic): any core file, any "exit signal" in the error log, a
//! child that needed SIGKILL (but for two known httpd hangs, see `round` and
//! `listener_quirk`), or a client left hanging fails the round. A child still alive 7 s after
//! a stop gets its threads' backtraces printed (gdb, if installed) before httpd's SIGKILL.
//!
//! Opt-in (ignored by a plain `cargo test`): `SOAK_STOP_LOOP=50 scripts/soak.sh`, or
//! `SOAK_STOP_LOOP=5 SOAK_TUNNELS=100 cargo test --release --test stop_loop -- --ignored
//! --nocapture stop_loop_event`.
//!
//! Round `i` does action `i % 5` (so five rounds cover every one):
//!
//! | action | signal (httpd -k) | expected |
//! |---|---|---|
//! | stop | SIGTERM (`stop`) | every process gone and every client ended within 20 s; under event and worker the module says Close 1001 to each client (wst_drain.c), under prefork the child just exits |
//! | graceful | SIGUSR1 (`graceful`) | a new generation serves; the old tunnels carry on (stock behaviour) until the clients close them, then the old children exit |
//! | graceful+drain | SIGUSR1, `ProxyWebsocketDrain 2` | Close 1001 on every tunnel within the window, old children gone, new generation serves |
//! | graceful-stop | SIGWINCH (`graceful-stop`), `GracefulShutdownTimeout 3` | tunnels carry on until the timeout, then the parent stops the children; all gone (prefork: at once; event and worker: only httpd's SIGKILL about 9 s later ends them, httpd's own limitation, counted but not failed: see `round`) |
//! | graceful-stop+drain | SIGWINCH, `ProxyWebsocketDrain 2` | Close 1001 on every tunnel within the window, all gone before GracefulShutdownTimeout (10) |
//!
//! Every round ends with a stop (SIGTERM) of whatever is left, which must be clean too.
//!
//! The backend (SOAK_STOP_BACKEND: ws, raw, both (default): alternate cycles of the five
//! actions): a WebSocket echo server (unmasked echoes, answers Close), or the raw byte echo of
//! faults.rs's stop_while_200_tunnels_carry_traffic, under which the module's tracking of the
//! backend-to-client frames loses sync (masked server frames), so the client gets no Close
//! 1001 of the module but the backend's echo of the one the module sent it.
//!
//! Core dumps: the test raises its RLIMIT_CORE to the hard limit (httpd inherits it), and
//! httpd gets `CoreDumpDirectory` = SOAK_CORE_DIR (default: a fresh /tmp/wst-stop-cores-*, mode
//! 1777 for prefork's unprivileged children); httpd chdirs there in its fatal-signal handler
//! and calls prctl(PR_SET_DUMPABLE) after setuid, so with the kernel's default core_pattern
//! ("core", relative) the core lands there. Before the rounds, a self-test sends SIGSEGV to a
//! child and requires the core file to appear (a core hunt that cannot see cores would pass
//! for nothing). Cores found after a round are renamed core.<mpm>.<round>.<action>.<k> and
//! kept; scripts/soak.sh prints a gdb backtrace of each.
//!
//! Knobs: SOAK_STOP_LOOP (rounds, 5), SOAK_TUNNELS (1000), SOAK_STOP_ACTIONS (a subset of the
//! action names, comma-separated), SOAK_STOP_BACKEND, SOAK_CORE_DIR, SOAK_STOP_TRAFFIC_SECS
//! (traffic before the signal, 2), SOAK_CLOSE1001_PCT (share of tunnels that must get Close 1001 where the module
//! promises it, 90), SOAK_CORE_SELFTEST=0 (skip the self-test: only where cores cannot be
//! had, e.g. a core_pattern piping to a handler), SOAK_STOP_DUMP=1 (a failed round prints its
//! whole error log, not only httpd's last lines).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wst_e2e::faults::{rst, After, Behaviour, FaultBackend};
use wst_e2e::rawbackend::{is_timeout, read_request_head, response_101, Recorder};
use wst_e2e::ws::{self, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};
use wst_e2e::{Browser, Httpd, UpgradeRequest};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Stop,
    Graceful,
    GracefulDrain,
    GracefulStop,
    GracefulStopDrain,
}

const ACTIONS: [Action; 5] = [
    Action::Stop,
    Action::Graceful,
    Action::GracefulDrain,
    Action::GracefulStop,
    Action::GracefulStopDrain,
];

/// The drain window of the `+drain` actions (ProxyWebsocketDrain), seconds.
const DRAIN: u64 = 2;
/// GracefulShutdownTimeout of `graceful-stop` without the drain, seconds.
const GRACEFUL_STOP_TIMEOUT: u64 = 3;
/// How long a stop (of up to 1,000 busy tunnels, on 2 shared cores) may take: httpd's own
/// reclaim sends SIGKILL to a child after about 9 s, so anything near that is a hang.
const STOP_BOUND: Duration = Duration::from_secs(20);

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Graceful => "graceful",
            Action::GracefulDrain => "graceful+drain",
            Action::GracefulStop => "graceful-stop",
            Action::GracefulStopDrain => "graceful-stop+drain",
        }
    }
    fn signal(self) -> i32 {
        match self {
            Action::Stop => libc::SIGTERM,
            Action::Graceful | Action::GracefulDrain => libc::SIGUSR1,
            Action::GracefulStop | Action::GracefulStopDrain => libc::SIGWINCH,
        }
    }
    fn drain(self) -> bool {
        matches!(self, Action::GracefulDrain | Action::GracefulStopDrain)
    }
    /// Whether the module promises Close 1001 to the client of every tunnel.
    fn promises_1001(self, mpm: &str) -> bool {
        match self {
            Action::GracefulDrain | Action::GracefulStopDrain => true,
            // A hard stop: the threaded MPMs close the client sockets under the tunnels, which
            // then say Close 1001 through their own descriptor; a prefork child just exits.
            // (At GracefulShutdownTimeout the threaded children never hear of it: see the
            // SIGKILL note in `round`.)
            Action::Stop => mpm != "prefork",
            Action::Graceful | Action::GracefulStop => false,
        }
    }
}

fn actions() -> Vec<Action> {
    match std::env::var("SOAK_STOP_ACTIONS") {
        Ok(v) if !v.trim().is_empty() => {
            let want: Vec<&str> = v.split(',').map(str::trim).collect();
            let a: Vec<Action> = ACTIONS
                .iter()
                .copied()
                .filter(|a| want.contains(&a.name()))
                .collect();
            assert!(!a.is_empty(), "SOAK_STOP_ACTIONS={v}: none of {ACTIONS:?}");
            a
        }
        _ => ACTIONS.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// (state, pgrp) of `pid` from /proc/<pid>/stat.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Live processes of process group `pgid` (httpd runs in a group of its own).
fn group(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((s, g)) = proc_stat(pid) {
            if g == pgid && s != 'Z' && s != 'X' {
                out.push(pid);
            }
        }
    }
    out
}

/// Where the threads of `pid` are: gdb's backtraces (if gdb is installed), else each
/// thread's wchan and syscall from /proc.
fn threads_of(pid: u32) -> String {
    if let Ok(o) = std::process::Command::new("gdb")
        .args([
            "-q",
            "-batch",
            "-p",
            &pid.to_string(),
            "-ex",
            "thread apply all bt 25",
        ])
        .stdin(std::process::Stdio::null())
        .output()
    {
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        if t.contains("Thread") {
            return t;
        }
    }
    let mut out = String::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        let rd = |n: &str| std::fs::read_to_string(p.join(n)).unwrap_or_default();
        out.push_str(&format!(
            "task {}: wchan {} syscall {}",
            e.file_name().to_string_lossy(),
            rd("wchan"),
            rd("syscall")
        ));
    }
    out
}

/// httpd 2.2.15 worker's own hang at stop, seen from the late child's threads (gdb): a child
/// whose every worker thread was busy (tunnels) has its listener thread waiting in
/// ap_queue_info_wait_for_idler(), which in 2.2 waits again after ap_queue_info_term()'s
/// broadcast while no worker is idle (2.4 checks `terminated` there), and no worker goes idle
/// on the way out; join_workers() gives up on the listener after 5 s, and clean_child_exit()'s
/// pool cleanup destroys the condition variable it still waits on: glibc 2.25+
/// pthread_cond_destroy() waits for that waiter (CentOS 6's glibc 2.12 returns EBUSY and the
/// child exits), so only httpd's SIGKILL ends the child. Not the module's: the threads are
/// httpd's, and no tunnel is left.
fn listener_quirk(threads: &str) -> bool {
    let f = Httpd::flavor();
    !f.is_24()
        && threads.contains("ap_queue_info_wait_for_idler")
        && threads.contains("queue_info_cleanup")
        && !threads.contains("wst_")
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill only sends a signal, to the httpd (or one of its children) this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

fn raise_limits(nofile: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write a valid local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < nofile {
            r.rlim_cur = nofile.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        if libc::getrlimit(libc::RLIMIT_CORE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &r);
        }
    }
}

fn core_limit() -> String {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid local rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut r) };
    if r.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        r.rlim_cur.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Core files
// ---------------------------------------------------------------------------------------------

fn core_dir() -> PathBuf {
    let d = match std::env::var("SOAK_CORE_DIR") {
        Ok(d) if !d.trim().is_empty() => PathBuf::from(d),
        _ => std::env::temp_dir().join(format!("wst-stop-cores-{}", std::process::id())),
    };
    std::fs::create_dir_all(&d).expect("core dir");
    use std::os::unix::fs::PermissionsExt;
    // prefork's children run as the User (daemon): the dir must be theirs to write.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    d
}

/// Core files in `dirs` not yet renamed by [`keep_cores`] (named "core" or "core.<pid>").
fn new_cores(dirs: &[&Path]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let fresh = n == "core"
                || n.strip_prefix("core.")
                    .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
            if fresh && e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Rename fresh cores to core.<tag>.<k> in the core dir, so that the next one does not
/// overwrite them; returns the new paths.
fn keep_cores(cores: &[PathBuf], dir: &Path, tag: &str) -> Vec<PathBuf> {
    cores
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let to = dir.join(format!("core.{tag}.{k}"));
            if std::fs::rename(c, &to).is_err() {
                let _ = std::fs::copy(c, &to);
                let _ = std::fs::remove_file(c);
            }
            to
        })
        .collect()
}

/// Lines of the error log that tell of a crash, a child that had to be killed, or a
/// child-side fatal error.
fn bad_log_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains("exit signal")
                || l.contains("Segmentation fault")
                || l.contains("AH00052")
                || l.contains("possible coredump")
                || l.contains("sending a SIGKILL")
                || l.contains("Aborted")
                || l.contains("Bus error")
        })
        .map(|l| l.chars().take(300).collect())
        .collect()
}

/// Send SIGSEGV to one child of a small httpd with `CoreDumpDirectory dir`: the core must
/// appear in `dir`, and the error log must say so. Panics (with what to check) if not.
fn core_self_test(mpm: &str, dir: &Path) {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let h = Httpd::builder()
        .mpm(mpm)
        .config(&format!("CoreDumpDirectory \"{}\"\n", dir.display()))
        .start();
    let child = wst_e2e::wait_for(Duration::from_secs(10), || h.child_pids().first().copied())
        .expect("no child to test core dumps with");
    let t0 = Instant::now();
    kill(child, libc::SIGSEGV);
    let cores = wst_e2e::wait_for(Duration::from_secs(15), || {
        let c = new_cores(&[dir, h.dir()]);
        // The kernel writes the file while the process dies: wait for the parent's log line.
        (!c.is_empty() && !bad_log_lines(&h.error_log()).is_empty()).then_some(c)
    });
    let log = h.error_log();
    let Some(cores) = cores else {
        panic!(
            "core self-test ({mpm}): SIGSEGV to child {child} left no core file in {} \
             (core_pattern {:?}, RLIMIT_CORE {}, /proc/sys/fs/suid_dumpable {:?}); error log:\n{log}",
            dir.display(),
            pattern.trim(),
            core_limit(),
            std::fs::read_to_string("/proc/sys/fs/suid_dumpable").unwrap_or_default().trim()
        );
    };
    let size: u64 = cores
        .iter()
        .filter_map(|c| std::fs::metadata(c).ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "STOPLOOP core self-test {mpm}: SIGSEGV to child {child}: {:?} ({} KiB) in {:?}; log: {:?}",
        cores,
        size / 1024,
        t0.elapsed(),
        bad_log_lines(&log)
    );
    for c in cores {
        let _ = std::fs::remove_file(c);
    }
}

// ---------------------------------------------------------------------------------------------
// The backend: a WebSocket echo server
// ---------------------------------------------------------------------------------------------

/// What one backend connection saw: the module's Close (code, masked) and how it ended.
#[derive(Clone, Debug, Default)]
struct BackendSeen {
    frames: u64,
    close: Option<(u16, bool)>,
    end: String,
}

/// A WebSocket echo backend: data frames come back unmasked (same FIN, opcode, payload), a
/// Ping gets its Pong, a Close gets its Close and then the write side is shut; nothing is kept
/// but [`BackendSeen`] (1,000 busy tunnels move hundreds of MiB).
fn ws_backend() -> Recorder<BackendSeen> {
    Recorder::start(Duration::from_secs(300), |s, rec, stop| {
        let end = serve_ws(s, &rec, &stop);
        rec.lock().unwrap().end = end;
    })
}

fn serve_ws(mut s: TcpStream, rec: &Mutex<BackendSeen>, stop: &AtomicBool) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(240);
    let Ok((head, mut buf)) = read_request_head(&mut s, stop, deadline) else {
        return "no-request".into();
    };
    if s.write_all(&response_101(&head)).is_err() {
        return "write-error in the 101".into();
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let mut closed = false;
    loop {
        let mut out = Vec::new();
        while let Some((f, used)) = ws::decode_frame(&buf) {
            buf.drain(..used);
            rec.lock().unwrap().frames += 1;
            match f.opcode {
                OP_TEXT | OP_BINARY | OP_CONT if !closed => {
                    out.extend(ws::encode_frame(f.fin, f.opcode, &f.payload, None))
                }
                OP_PING if !closed => out.extend(ws::encode_frame(true, OP_PONG, &f.payload, None)),
                OP_CLOSE if !closed => {
                    closed = true;
                    let code = (f.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                    rec.lock().unwrap().close = Some((code.unwrap_or(1005), f.masked));
                    out.extend(ws::encode_frame(true, OP_CLOSE, &f.payload, None));
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            if let Err(e) = s.write_all(&out) {
                return format!("write-error: {}", e.kind());
            }
        }
        if closed {
            let _ = s.shutdown(Shutdown::Write);
        }
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return "stopped".into();
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return if closed {
                    "close-eof".into()
                } else {
                    "eof".into()
                }
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return format!("reset: {}", e.kind()),
        }
    }
}

/// The backend of a round: a WebSocket echo server ([`ws_backend`]), or a raw byte echo
/// (faults.rs's FaultBackend, as stop_while_200_tunnels_carry_traffic uses): it sends the
/// client's masked frames back as they are, so the module's frame tracking of the
/// backend-to-client direction loses sync (a masked server frame) and that direction gets no
/// Close 1001 of the module; the client sees the backend's echo of the module's masked Close
/// instead.
enum Backend {
    Ws(Recorder<BackendSeen>),
    Raw(FaultBackend),
}

impl Backend {
    fn port(&self) -> u16 {
        match self {
            Backend::Ws(b) => b.port(),
            Backend::Raw(b) => b.port(),
        }
    }
    fn raw(&self) -> bool {
        matches!(self, Backend::Raw(_))
    }
}

/// SOAK_STOP_BACKEND: "ws", "raw", or "both" (default): each cycle of the actions with the
/// WebSocket backend, the next with the raw echo, and so on.
fn backend_for(cycle: usize) -> Backend {
    let raw = match std::env::var("SOAK_STOP_BACKEND").as_deref().map(str::trim) {
        Ok("ws") => false,
        Ok("raw") => true,
        _ => cycle % 2 == 1,
    };
    if raw {
        Backend::Raw(FaultBackend::start_for(
            Behaviour::Upgrade { then: After::Echo },
            Duration::from_secs(180),
        ))
    } else {
        Backend::Ws(ws_backend())
    }
}

// ---------------------------------------------------------------------------------------------
// Clients: traffic both ways on every tunnel until it ends, and how it ended
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// The connection ended: EOF.
    Eof,
    /// The connection ended: reset (on read or write).
    Reset,
    /// The client closed it (graceful without the drain: the old tunnels end this way).
    ClientClosed,
    /// Something the client must never see (garbled echo, unexpected frame, ...).
    Error(String),
}

struct Conn {
    s: Option<TcpStream>,
    /// The message in flight: the client's masked frame, written up to `sent`, and the
    /// backend's unmasked echo of it, read up to `got`.
    frame: Vec<u8>,
    echo: Vec<u8>,
    sent: usize,
    got: usize,
    next_at: Instant,
    msgs: u64,
    /// Bytes that are not an echo: server frames.
    rx: Vec<u8>,
    /// A Close frame from the module: its code and when (since the signal).
    close: Option<(u16, Duration)>,
    /// How and when (since the signal; zero if before it) the connection ended.
    end: Option<(End, Duration)>,
    /// Ended before the signal was sent.
    early: bool,
    /// The backend is a raw echo: the echo is the masked frame itself, and a masked Close (the
    /// module's own, echoed) may come.
    raw: bool,
    write_dead: bool,
    /// After the client's own half-close: only the FIN is awaited.
    half_closed: bool,
}

#[derive(Default)]
struct Shared {
    quit: AtomicBool,
    close_all: AtomicBool,
    signal_at: Mutex<Option<Instant>>,
    msgs: AtomicU64,
    ended: AtomicUsize,
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

/// Open `n` tunnels, 100 upgrade requests in flight at a time.
fn open_tunnels(port: u16, n: usize, round: usize, raw: bool) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<(usize, TcpStream)> = (i..n.min(i + 100))
            .map(|k| {
                let path = format!("/ws/stop/{round}/{k}");
                let req = UpgradeRequest::new(&path, "127.0.0.1", Browser::ALL[k % 2]).to_bytes();
                let mut s = TcpStream::connect(("127.0.0.1", port))
                    .unwrap_or_else(|e| panic!("tunnel {k}: connect: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
                s.write_all(&req).unwrap();
                (k, s)
            })
            .collect();
        for (k, mut s) in batch {
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while ws::head_end(&head).is_none() {
                let got = s.read(&mut b).unwrap_or_else(|e| panic!("tunnel {k}: {e}"));
                assert!(got > 0, "tunnel {k}: EOF in the 101");
                head.extend_from_slice(&b[..got]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 101") && ws::head_end(&head) == Some(head.len()),
                "tunnel {k}: {}",
                String::from_utf8_lossy(&head)
            );
            s.set_nonblocking(true).unwrap();
            conns.push(Conn {
                s: Some(s),
                frame: Vec::new(),
                echo: Vec::new(),
                sent: 0,
                got: 0,
                next_at: Instant::now(),
                msgs: 0,
                rx: Vec::new(),
                close: None,
                end: None,
                early: false,
                raw,
                write_dead: false,
                half_closed: false,
            });
        }
        i = n.min(i + 100);
    }
    conns
}

fn since_signal(sh: &Shared) -> (Duration, bool) {
    match *sh.signal_at.lock().unwrap() {
        Some(t) => (t.elapsed(), false),
        None => (Duration::ZERO, true),
    }
}

fn finish(c: &mut Conn, sh: &Shared, how: End) {
    if c.end.is_none() {
        let (at, early) = since_signal(sh);
        c.end = Some((how, at));
        c.early = early;
        c.s = None;
        sh.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// Take bytes read from a tunnel: the echo of the frame in flight, or server frames (the
/// module's Close). Err: what the client must never see.
fn take(c: &mut Conn, sh: &Shared, mut d: &[u8], rng: &mut Rng) -> Result<(), String> {
    while !d.is_empty() && c.rx.is_empty() && c.close.is_none() && c.got < c.echo.len() {
        let k = d.len().min(c.echo.len() - c.got);
        if d[..k] != c.echo[c.got..c.got + k] {
            if c.got != 0 {
                return Err(format!(
                    "echo differs at byte {} of a {}-byte frame",
                    c.got,
                    c.echo.len()
                ));
            }
            break;
        }
        if c.sent < c.frame.len() {
            return Err("an echo before the whole message was sent".into());
        }
        c.got += k;
        d = &d[k..];
        if c.got == c.echo.len() {
            c.msgs += 1;
            sh.msgs.fetch_add(1, Ordering::Relaxed);
            c.next_at = Instant::now() + Duration::from_millis(rng.next() % 100);
        }
    }
    if d.is_empty() {
        return Ok(());
    }
    if c.close.is_some() {
        return Err(format!("{} bytes after the Close frame", d.len()));
    }
    c.rx.extend_from_slice(d);
    while let Some((f, used)) = ws::decode_frame(&c.rx) {
        c.rx.drain(..used);
        if f.opcode == OP_CLOSE && (!f.masked || c.raw) {
            let code = if f.payload.len() >= 2 {
                u16::from_be_bytes([f.payload[0], f.payload[1]])
            } else {
                0
            };
            c.close = Some((code, since_signal(sh).0));
            if !c.rx.is_empty() {
                return Err(format!("{} bytes after the Close frame", c.rx.len()));
            }
        } else {
            return Err(format!(
                "unexpected frame: opcode {} masked {} {} bytes",
                f.opcode,
                f.masked,
                f.payload.len()
            ));
        }
    }
    Ok(())
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Traffic on every tunnel (one message of 1 to 4,096 bytes in flight, up to 100 ms between
/// messages) until each has ended or `quit` is set; on `close_all` the client closes every
/// tunnel still open (a third with a half-close, whose FIN is then awaited; a third with an
/// RST; the rest by closing the socket).
fn drive(mut conns: Vec<Conn>, sh: Arc<Shared>, seed: u64) -> Vec<Conn> {
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; 65536];
    let mut closed_all = false;
    while !sh.quit.load(Ordering::Relaxed) {
        if !closed_all && sh.close_all.load(Ordering::Relaxed) {
            closed_all = true;
            for (i, c) in conns.iter_mut().enumerate() {
                if c.end.is_some() {
                    continue;
                }
                match i % 3 {
                    0 => {
                        if let Some(s) = &c.s {
                            let _ = s.shutdown(Shutdown::Write);
                        }
                        c.half_closed = true;
                    }
                    1 => {
                        if let Some(s) = c.s.take() {
                            rst(s);
                        }
                        finish(c, &sh, End::ClientClosed);
                    }
                    _ => {
                        c.s = None;
                        finish(c, &sh, End::ClientClosed);
                    }
                }
            }
        }
        let now = Instant::now();
        for c in conns.iter_mut() {
            if c.end.is_none()
                && !c.write_dead
                && !c.half_closed
                && c.close.is_none()
                && c.got == c.echo.len()
                && now >= c.next_at
            {
                let len = 1 + (rng.next() % 4096) as usize;
                let payload = wst_e2e::binary_payload(len, rng.next() as u8);
                c.frame = ws::client_frame(OP_BINARY, &payload);
                c.echo = if c.raw {
                    c.frame.clone()
                } else {
                    ws::server_frame(OP_BINARY, &payload)
                };
                c.sent = 0;
                c.got = 0;
            }
        }
        let open: Vec<usize> = (0..conns.len())
            .filter(|&i| conns[i].end.is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = open
            .iter()
            .map(|&i| {
                let c = &conns[i];
                let out = !c.write_dead && !c.half_closed && c.sent < c.frame.len();
                libc::pollfd {
                    fd: c.s.as_ref().map_or(-1, |s| s.as_raw_fd()),
                    events: libc::POLLIN | if out { libc::POLLOUT } else { 0 },
                    revents: 0,
                }
            })
            .collect();
        // SAFETY: pfds is a valid array of pollfd for its length.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 20) };
        for (k, &i) in open.iter().enumerate() {
            let r = pfds[k].revents;
            if r == 0 {
                continue;
            }
            let c = &mut conns[i];
            if r & libc::POLLOUT != 0 && c.sent < c.frame.len() {
                let res = c.s.as_mut().map(|s| s.write(&c.frame[c.sent..]));
                match res {
                    Some(Ok(n)) => c.sent += n,
                    Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {}
                    // The reads tell how it ended.
                    Some(Err(_)) | None => c.write_dead = true,
                }
            }
            if r & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                let res = c.s.as_mut().map(|s| s.read(&mut buf));
                match res {
                    Some(Ok(0)) | None => finish(c, &sh, End::Eof),
                    Some(Ok(n)) => {
                        if let Err(e) = take(c, &sh, &buf[..n], &mut rng) {
                            finish(c, &sh, End::Error(e));
                        }
                    }
                    Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {}
                    Some(Err(e)) if is_reset(&e) => finish(c, &sh, End::Reset),
                    Some(Err(e)) => finish(c, &sh, End::Error(format!("read: {e}"))),
                }
            }
        }
    }
    conns
}

/// How the tunnels of a round ended.
#[derive(Debug, Default)]
struct Ends {
    close1001: usize,
    close_other: Vec<u16>,
    eof: usize,
    reset: usize,
    client_closed: usize,
    errors: Vec<String>,
    open: usize,
    early: usize,
    last_end: Duration,
}

fn ends(conns: &[Conn]) -> Ends {
    let mut e = Ends::default();
    for (i, c) in conns.iter().enumerate() {
        match c.close {
            Some((1001, _)) => e.close1001 += 1,
            Some((code, _)) => e.close_other.push(code),
            None => {}
        }
        match &c.end {
            None => e.open += 1,
            Some((how, at)) => {
                e.last_end = e.last_end.max(*at);
                if c.early {
                    e.early += 1;
                }
                match how {
                    End::Eof => e.eof += 1,
                    End::Reset => e.reset += 1,
                    End::ClientClosed => e.client_closed += 1,
                    End::Error(m) => e.errors.push(format!("tunnel {i}: {m}")),
                }
            }
        }
    }
    e
}

// ---------------------------------------------------------------------------------------------
// A round
// ---------------------------------------------------------------------------------------------

/// Room for `n` tunnels, and for a new generation beside an old one still holding them all.
fn capacity(mpm: &str, n: usize) -> String {
    let f = Httpd::flavor();
    let per_child = if f.is_24() {
        "MaxConnectionsPerChild"
    } else {
        "MaxRequestsPerChild"
    };
    if mpm == "prefork" {
        let max = n + 16;
        return f.if_mpm(
            "prefork",
            &format!(
                "StartServers {max}\nMinSpareServers 10\nMaxSpareServers {max}\n\
                 ServerLimit {max}\nMaxRequestWorkers {max}\n{per_child} 0\n"
            ),
        );
    }
    let per = 64;
    let procs = n.div_ceil(per) + 1;
    f.if_mpm(
        mpm,
        &format!(
            "StartServers {procs}\nServerLimit {}\nThreadLimit {per}\nThreadsPerChild {per}\n\
             MinSpareThreads 1\nMaxSpareThreads {max}\nMaxRequestWorkers {max}\n\
             {per_child} 0\n",
            2 * procs + 2,
            max = procs * per
        ),
    )
}

/// One fresh tunnel with one echoed message (the new generation serves).
fn fresh_tunnel_echoes(port: u16, raw: bool) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&UpgradeRequest::new("/ws/newgen", "127.0.0.1", Browser::Firefox).to_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let mut b = [0u8; 4096];
    while ws::head_end(&head).is_none() {
        let k = s.read(&mut b).map_err(|e| format!("read head: {e}"))?;
        if k == 0 {
            return Err("EOF in the head".into());
        }
        head.extend_from_slice(&b[..k]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(String::from_utf8_lossy(&head).into_owned());
    }
    let frame = ws::client_frame(OP_TEXT, b"new generation");
    s.write_all(&frame).map_err(|e| format!("write: {e}"))?;
    let want = if raw {
        frame
    } else {
        ws::server_frame(OP_TEXT, b"new generation")
    };
    let mut echo = vec![0u8; want.len()];
    s.read_exact(&mut echo)
        .map_err(|e| format!("read echo: {e}"))?;
    if echo != want {
        return Err("echo differs".into());
    }
    Ok(())
}

struct RoundResult {
    failures: Vec<String>,
    line: String,
}

fn round(
    mpm: &str,
    n: usize,
    r: usize,
    action: Action,
    b: Backend,
    core_dir: &Path,
) -> RoundResult {
    let t_round = Instant::now();
    let mut fail = Vec::new();
    let f = Httpd::flavor();
    let traffic_secs = env_num("SOAK_STOP_TRAFFIC_SECS", 2);
    let gst = if action.drain() {
        10
    } else {
        GRACEFUL_STOP_TIMEOUT
    };
    let h = Httpd::builder()
        .mpm(mpm)
        .var("BACKEND_PORT", b.port())
        .config(&format!(
            "{}ListenBacklog 2048\nCoreDumpDirectory \"{}\"\nGracefulShutdownTimeout {gst}\n\
             {}ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/\n",
            capacity(mpm, n),
            core_dir.display(),
            if action.drain() {
                format!("ProxyWebsocketDrain {DRAIN}\n")
            } else {
                String::new()
            }
        ))
        .start();
    let pid = h.pid().expect("httpd pid");
    let port = h.port();
    let t_open = Instant::now();
    let conns = open_tunnels(port, n, r, b.raw());
    let opened = t_open.elapsed();
    let sh = Arc::new(Shared::default());
    let driver = {
        let sh = sh.clone();
        std::thread::spawn(move || drive(conns, sh, 0x5eed ^ (r as u64) << 8))
    };
    std::thread::sleep(Duration::from_secs(traffic_secs));
    let msgs_before = sh.msgs.load(Ordering::Relaxed);
    if msgs_before < n as u64 {
        fail.push(format!(
            "hardly any traffic before the signal: {msgs_before} messages"
        ));
    }
    let old_children = h.child_pids();
    let t0 = Instant::now();
    *sh.signal_at.lock().unwrap() = Some(t0);
    kill(pid, action.signal());

    // 2.2's worker child waits 5 s more for its listener thread on a newer glibc (see
    // keepalive.rs's drain_on_graceful_stop).
    let quirk = if !f.is_24() && mpm == "worker" {
        Duration::from_secs(6)
    } else {
        Duration::ZERO
    };
    let mut gone_at = None;
    let mut notes = Vec::new();
    // Late children whose hang is httpd 2.2 worker's own (see `listener_quirk`).
    let mut quirk_pids: Vec<u32> = Vec::new();
    match action {
        Action::Stop | Action::GracefulStop | Action::GracefulStopDrain => {
            if action == Action::GracefulStop {
                // The tunnels run on until GracefulShutdownTimeout (a second of slack).
                std::thread::sleep(Duration::from_secs(GRACEFUL_STOP_TIMEOUT - 1));
                let ended = sh.ended.load(Ordering::Relaxed);
                if ended > 0 {
                    fail.push(format!(
                        "{ended} tunnels ended before GracefulShutdownTimeout without the drain"
                    ));
                }
            }
            if action != Action::GracefulStop || mpm == "prefork" {
                // A child still there after 7 s is late (2.2 worker's children take 5.4 s):
                // httpd sends SIGKILL at about 9 s. Show where its threads are before that.
                let late = Duration::from_secs(7)
                    + if action == Action::Stop {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(gst)
                    };
                if wst_e2e::wait_for(late.saturating_sub(t0.elapsed()), || {
                    group(pid).is_empty().then_some(())
                })
                .is_none()
                {
                    let left: Vec<u32> = group(pid).into_iter().filter(|p| *p != pid).collect();
                    notes.push(format!("late after {late:?}: {left:?}"));
                    for p in &left {
                        let t = threads_of(*p);
                        if listener_quirk(&t) {
                            quirk_pids.push(*p);
                        } else {
                            eprintln!("----- late child {p}: its threads -----\n{t}");
                        }
                    }
                    if !quirk_pids.is_empty() {
                        notes.push(format!(
                            "{} late in httpd 2.2 worker's listener/cond_destroy hang (known)",
                            quirk_pids.len()
                        ));
                    }
                }
            }
            let bound = STOP_BOUND
                + quirk
                + if action == Action::Stop {
                    Duration::ZERO
                } else {
                    Duration::from_secs(gst)
                };
            if let Some(at) =
                wst_e2e::wait_for(bound, || group(pid).is_empty().then(|| t0.elapsed()))
            {
                gone_at = Some(at);
            } else {
                fail.push(format!(
                    "{} did not end httpd within {bound:?}: left {:?}",
                    action.name(),
                    group(pid)
                ));
            }
        }
        Action::Graceful | Action::GracefulDrain => {
            let newgen = wst_e2e::wait_for(Duration::from_secs(20), || {
                h.child_pids()
                    .iter()
                    .any(|p| !old_children.contains(p))
                    .then_some(())
            });
            if newgen.is_none() {
                fail.push("no new generation of children within 20 s".into());
            } else if let Err(e) = fresh_tunnel_echoes(port, b.raw()) {
                fail.push(format!("the new generation does not serve: {e}"));
            }
            if action == Action::Graceful {
                // Without the drain the old tunnels carry on (stock behaviour).
                let m0 = sh.msgs.load(Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(2));
                let m1 = sh.msgs.load(Ordering::Relaxed);
                let ended = sh.ended.load(Ordering::Relaxed);
                notes.push(format!("{} messages in 2 s after the restart", m1 - m0));
                if ended > 0 || m1 - m0 < n as u64 / 2 {
                    fail.push(format!(
                        "old tunnels did not carry on after a graceful restart without the \
                         drain: {ended} ended, {} messages in 2 s",
                        m1 - m0
                    ));
                }
                sh.close_all.store(true, Ordering::Relaxed);
            }
            let bound = STOP_BOUND + quirk;
            match wst_e2e::wait_for(bound, || {
                old_children
                    .iter()
                    .all(|p| !alive(*p))
                    .then(|| t0.elapsed())
            }) {
                Some(at) => gone_at = Some(at),
                None => fail.push(format!(
                    "old children alive {bound:?} after the graceful restart: {:?}",
                    old_children
                        .iter()
                        .filter(|p| alive(**p))
                        .collect::<Vec<_>>()
                )),
            }
        }
    }
    // Every client has seen its tunnel end by now (or within a few more seconds).
    wst_e2e::wait_for(Duration::from_secs(5), || {
        (sh.ended.load(Ordering::Relaxed) == n).then_some(())
    });
    sh.quit.store(true, Ordering::Relaxed);
    let conns = driver.join().expect("client driver");
    let e = ends(&conns);
    let msgs_total = sh.msgs.load(Ordering::Relaxed);

    // Whatever is left (the new generation) stops cleanly too.
    let t_final = Instant::now();
    if !group(pid).is_empty() {
        kill(pid, libc::SIGTERM);
        if wst_e2e::wait_for(STOP_BOUND + quirk, || group(pid).is_empty().then_some(())).is_none() {
            fail.push(format!(
                "the final stop left processes after {:?}: {:?}",
                STOP_BOUND + quirk,
                group(pid)
            ));
        }
    }
    let final_stop = t_final.elapsed();
    let mut h = h;
    let report = h.stop();
    if report.killed {
        fail.push("the harness needed SIGKILL".into());
    }

    // Crashes.
    let log = h.error_log();
    let mut bad = bad_log_lines(&log);
    if action == Action::GracefulStop && mpm != "prefork" {
        // Known, and httpd's own: a threaded child told to stop gracefully waits in
        // join_workers() for its busy workers and no longer reads the pipe of death, so at
        // GracefulShutdownTimeout the parent's "restart" and SIGTERMs go unheard and only
        // its SIGKILL ends the tunnels (stock modules alike). ProxyWebsocketDrain is the cure
        // (graceful-stop+drain). Counted, not failed.
        let killed = bad
            .iter()
            .filter(|l| l.contains("sending a SIGKILL"))
            .count();
        bad.retain(|l| !l.contains("sending a SIGKILL"));
        if killed > 0 {
            notes.push(format!(
                "{killed} children SIGKILLed at the timeout (known)"
            ));
        }
    }
    if !quirk_pids.is_empty() {
        bad.retain(|l| {
            !(l.contains("sending a SIGKILL")
                && quirk_pids
                    .iter()
                    .any(|p| l.contains(&format!("child process {p} "))))
        });
    }
    if !bad.is_empty() {
        fail.push(format!("error log: {bad:#?}"));
    }
    let cores = new_cores(&[core_dir, h.dir()]);
    if !cores.is_empty() {
        let kept = keep_cores(
            &cores,
            core_dir,
            &format!("{mpm}.{r}.{}", action.name().replace('+', "-")),
        );
        fail.push(format!("core files: {kept:?}"));
    }

    // The clients.
    if e.open > 0 {
        fail.push(format!("{} clients still open (hang)", e.open));
    }
    if e.early > 0 {
        fail.push(format!("{} tunnels ended before the signal", e.early));
    }
    if !e.errors.is_empty() {
        fail.push(format!(
            "{} clients saw garbage: {:?}",
            e.errors.len(),
            &e.errors[..e.errors.len().min(5)]
        ));
    }
    if let Backend::Ws(ref wb) = b {
        let backend = wb.all();
        let backend_1001 = backend
            .iter()
            .filter(|x| x.close == Some((1001, true)))
            .count();
        let backend_other: Vec<(u16, bool)> = backend
            .iter()
            .filter_map(|x| x.close)
            .filter(|c| *c != (1001, true))
            .collect();
        notes.push(format!("backend got masked Close 1001 on {backend_1001}"));
        if !backend_other.is_empty() {
            fail.push(format!("the backend got other Closes: {backend_other:?}"));
        }
    }
    if !e.close_other.is_empty() {
        fail.push(format!("Close codes other than 1001: {:?}", e.close_other));
    }
    let pct = env_num("SOAK_CLOSE1001_PCT", 90) as usize;
    if action.promises_1001(mpm) && !b.raw() && e.close1001 * 100 < n * pct {
        fail.push(format!(
            "only {} of {n} tunnels got Close 1001 (want {pct}%)",
            e.close1001
        ));
    }
    if action.drain() && !b.raw() {
        let window = Duration::from_secs(DRAIN + 3);
        let late: Vec<Duration> = conns
            .iter()
            .filter_map(|c| c.close.map(|x| x.1))
            .filter(|t| *t > window)
            .collect();
        if !late.is_empty() {
            fail.push(format!(
                "{} Close 1001 later than the drain window + 3 s (latest {:?})",
                late.len(),
                late.iter().max()
            ));
        }
    }
    if action == Action::Graceful && e.client_closed + e.eof != n {
        fail.push(format!(
            "graceful without the drain: {} tunnels not ended by their client",
            n - e.client_closed - e.eof
        ));
    }
    let sigterms = log.matches("sending a SIGTERM").count();
    if sigterms > 0 {
        notes.push(format!("{sigterms} children needed a second SIGTERM"));
    }

    let line = format!(
        "STOPLOOP {mpm} round {r} {}{}: {n} tunnels open in {:.1?}, {msgs_before} msgs before the \
         signal, {msgs_total} in all; ends: 1001 {} eof {} reset {} client {} error {} open {}; \
         last end {:.2?}, processes gone {:.2?}, final stop {:.2?}{}{}; {} in {:.1?}",
        action.name(),
        if b.raw() { " (raw echo)" } else { "" },
        opened,
        e.close1001,
        e.eof,
        e.reset,
        e.client_closed,
        e.errors.len(),
        e.open,
        e.last_end,
        gone_at.unwrap_or_default(),
        final_stop,
        if notes.is_empty() { "" } else { "; " },
        notes.join(", "),
        if fail.is_empty() { "ok" } else { "FAILED" },
        t_round.elapsed()
    );
    eprintln!("{line}");
    for x in &fail {
        eprintln!("  FAIL: {x}");
    }
    if !fail.is_empty() {
        if std::env::var("SOAK_STOP_DUMP").is_ok() {
            eprintln!("----- error.log -----\n{log}");
        } else {
            // httpd's own lines (the module's debug lines are one per tunnel).
            let own: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(":debug]") && !l.contains("[debug]"))
                .collect();
            eprintln!(
                "----- error.log, last lines but debug (SOAK_STOP_DUMP=1: all) -----\n{}",
                own[own.len().saturating_sub(40)..].join("\n")
            );
        }
    }
    drop(b);
    RoundResult {
        failures: fail,
        line,
    }
}

fn stop_loop(mpm: &str) {
    if !Httpd::flavor().supports_mpm(mpm) {
        eprintln!("SKIP: MPM {mpm} not available");
        return;
    }
    let rounds = env_num("SOAK_STOP_LOOP", 5) as usize;
    let n = env_num("SOAK_TUNNELS", 1000) as usize;
    raise_limits(4 * n as u64 + 1024);
    let dir = core_dir();
    let t0 = Instant::now();
    if std::env::var("SOAK_CORE_SELFTEST").as_deref() == Ok("0") {
        eprintln!("STOPLOOP core self-test {mpm}: skipped (SOAK_CORE_SELFTEST=0)");
    } else {
        core_self_test(mpm, &dir);
    }
    let acts = actions();
    let mut failed = Vec::new();
    for r in 0..rounds {
        let a = acts[r % acts.len()];
        let res = round(mpm, n, r, a, backend_for(r / acts.len()), &dir);
        if !res.failures.is_empty() {
            failed.push(format!("{}\n    {}", res.line, res.failures.join("\n    ")));
        }
    }
    eprintln!(
        "STOPLOOP {mpm}: {rounds} rounds of {n} tunnels, {} failed, in {:.1?} (cores: {})",
        failed.len(),
        t0.elapsed(),
        dir.display()
    );
    let kept = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    if kept == 0 && std::env::var("SOAK_CORE_DIR").is_err() {
        let _ = std::fs::remove_dir(&dir);
    }
    assert!(
        failed.is_empty(),
        "{} of {rounds} rounds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
#[ignore = "stop loop: run with SOAK_STOP_LOOP=N scripts/soak.sh"]
fn stop_loop_event() {
    stop_loop("event");
}

#[test]
#[ignore = "stop loop: run with SOAK_STOP_LOOP=N scripts/soak.sh"]
fn stop_loop_worker() {
    stop_loop("worker");
}

#[test]
#[ignore = "stop loop: run with SOAK_STOP_LOOP=N scripts/soak.sh"]
fn stop_loop_prefork() {
    stop_loop("prefork");
}
