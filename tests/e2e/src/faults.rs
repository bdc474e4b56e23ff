//! Fault injection for the end-to-end suite: a scripted backend that misbehaves on purpose
//! ([`FaultBackend`]), resets ([`rst`]), and the descriptor / socket accounting of httpd's
//! children before and after a fault ([`Baseline`]).
//!
//! Everything is bounded: every socket operation has a timeout, every loop a deadline, and a
//! backend's threads end when it is dropped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::httpd::Httpd;
use crate::procfs::{fd_count, tcp_sockets_of, TCP_CLOSE_WAIT, TCP_LISTEN};
use crate::rawbackend::{is_timeout, read_request_head, response_101, NoHead, Recorder};
use crate::ws;

/// What the backend does once it has read the upgrade request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Never answer; hold the connection until the backend is dropped.
    NoAnswer,
    /// Close (FIN, or RST with `rst`) without answering.
    CloseBeforeAnswer { rst: bool },
    /// Answer 101, then do `then`.
    Upgrade { then: After },
    /// Answer 101 one byte every `byte_ms` milliseconds, then echo.
    SlowUpgrade { byte_ms: u64 },
    /// Wait `delay_ms`, answer 101, then echo (the client may be gone by then).
    LateUpgrade { delay_ms: u64 },
}

/// What an upgraded backend does after its 101.
#[derive(Clone, Debug)]
pub enum After {
    /// Echo every byte back.
    Echo,
    /// Send these bytes, then reset the connection.
    SendThenRst(Vec<u8>),
    /// Send these bytes, shut down its write side, then read until EOF (bytes are counted,
    /// and echoed back as a text frame with the count is impossible after the FIN, so they are
    /// only logged).
    SendThenHalfClose(Vec<u8>),
    /// Never read (its receive buffer fills up); hold the connection.
    NeverRead,
    /// Write server frames of this size as fast as possible until the peer goes away.
    Flood(usize),
    /// Wait for the peer's first bytes (a tunnel's hand-over is over once the client's first
    /// frame has come through it), then flood as [`After::Flood`].
    FloodAfterFirstBytes(usize),
}

/// What a backend connection saw, for the test to check.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The upgrade request head as received (empty if none came).
    pub request: Vec<u8>,
    /// Bytes read after the request head.
    pub bytes_after: u64,
    /// Bytes written after the 101.
    pub bytes_sent: u64,
    /// How the connection ended on the backend's side: "eof", "reset", "write-error: ...",
    /// "timeout", "dropped" (the backend was dropped first), "closed-by-backend".
    pub end: String,
}

/// A TCP backend on 127.0.0.1 that behaves as told, and records what it saw.
pub struct FaultBackend {
    seen: Recorder<Seen>,
}

/// Longest a backend connection lives by default (see [`FaultBackend::start_for`]).
const CONN_LIMIT: Duration = Duration::from_secs(20);

impl FaultBackend {
    /// A backend whose connections live at most 20 s, accepting for 2 minutes.
    pub fn start(behaviour: Behaviour) -> FaultBackend {
        Self::start_for(behaviour, CONN_LIMIT)
    }

    /// A backend whose connections live at most `lifetime`, accepting for `lifetime` plus
    /// 2 minutes (long runs such as the soak).
    pub fn start_for(behaviour: Behaviour, lifetime: Duration) -> FaultBackend {
        let seen = Recorder::start(lifetime + Duration::from_secs(120), move |s, rec, stop| {
            serve(s, behaviour.clone(), rec, stop, lifetime)
        });
        FaultBackend { seen }
    }

    pub fn port(&self) -> u16 {
        self.seen.port()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.seen.connections()
    }

    /// What connection `i` saw so far.
    pub fn seen(&self, i: usize) -> Option<Seen> {
        self.seen.get(i)
    }

    /// Wait until connection `i` has ended (its `end` is set), at most `timeout`.
    pub fn wait_end(&self, i: usize, timeout: Duration) -> Option<Seen> {
        self.seen.wait(i, timeout, |s| !s.end.is_empty())
    }
}

/// Reset a TCP connection: SO_LINGER {on, 0} then close sends RST instead of FIN.
pub fn rst(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `l` (a valid, initialised linger) for its size; the fd is ours.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn set_end(rec: &Mutex<Seen>, end: &str) {
    let mut r = rec.lock().unwrap();
    if r.end.is_empty() {
        r.end = end.to_string();
    }
}

fn io_end(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => "reset".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout".into(),
        _ => format!("error: {e}"),
    }
}

/// Read until EOF/reset/stop, counting bytes (echoing them when `echo`).
fn drain(s: &mut TcpStream, rec: &Mutex<Seen>, stop: &AtomicBool, echo: bool, limit: Duration) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) || started.elapsed() > limit {
            set_end(rec, "dropped");
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                set_end(rec, "eof");
                return;
            }
            Ok(n) => {
                rec.lock().unwrap().bytes_after += n as u64;
                if echo {
                    if let Err(e) = s.write_all(&buf[..n]) {
                        set_end(rec, &format!("write-{}", io_end(&e)));
                        return;
                    }
                    rec.lock().unwrap().bytes_sent += n as u64;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                set_end(rec, &io_end(&e));
                return;
            }
        }
    }
}

fn hold(rec: &Mutex<Seen>, stop: &AtomicBool, limit: Duration) {
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    set_end(rec, "dropped");
}

/// Write server frames of `size` bytes as fast as the peer takes them, until it goes away,
/// the backend is dropped or `limit` passes.
fn flood(s: &mut TcpStream, size: usize, rec: &Mutex<Seen>, stop: &AtomicBool, limit: Duration) {
    let frame = ws::server_frame(ws::OP_BINARY, &vec![b'f'; size]);
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    let t0 = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) || t0.elapsed() > limit {
            set_end(rec, "dropped");
            return;
        }
        match s.write(&frame) {
            Ok(n) => rec.lock().unwrap().bytes_sent += n as u64,
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                set_end(rec, &format!("write-{}", io_end(&e)));
                return;
            }
        }
    }
}

/// Wait until the peer sends something (counted in `bytes_after`); false if it never does
/// (EOF, error, stop or `limit`; the end is recorded).
fn first_bytes(s: &mut TcpStream, rec: &Mutex<Seen>, stop: &AtomicBool, limit: Duration) -> bool {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        if stop.load(Ordering::Relaxed) || t0.elapsed() > limit {
            set_end(rec, "dropped");
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                set_end(rec, "eof");
                return false;
            }
            Ok(n) => {
                rec.lock().unwrap().bytes_after += n as u64;
                return true;
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                set_end(rec, &io_end(&e));
                return false;
            }
        }
    }
}

fn serve(
    mut s: TcpStream,
    b: Behaviour,
    rec: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    limit: Duration,
) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let (head, extra) = match read_request_head(&mut s, &stop, Instant::now() + limit) {
        Ok(got) => got,
        Err(NoHead::Stopped) => {
            set_end(&rec, "dropped");
            return;
        }
        Err(NoHead::Eof(partial)) => {
            rec.lock().unwrap().request = partial;
            set_end(&rec, "eof");
            return;
        }
        Err(NoHead::Io(e, partial)) => {
            rec.lock().unwrap().request = partial;
            set_end(&rec, &io_end(&e));
            return;
        }
    };
    {
        let mut r = rec.lock().unwrap();
        r.request = head.clone();
        r.bytes_after = extra.len() as u64;
    }
    let resp = response_101(&head);
    match b {
        Behaviour::NoAnswer => hold(&rec, &stop, limit),
        Behaviour::CloseBeforeAnswer { rst: true } => {
            set_end(&rec, "closed-by-backend");
            rst(s);
            return;
        }
        Behaviour::CloseBeforeAnswer { rst: false } => {
            set_end(&rec, "closed-by-backend");
            drop(s);
            return;
        }
        Behaviour::SlowUpgrade { byte_ms } => {
            for byte in &resp {
                if s.write_all(std::slice::from_ref(byte)).is_err() {
                    set_end(&rec, "write-error during the 101");
                    return;
                }
                std::thread::sleep(Duration::from_millis(byte_ms));
            }
            drain(&mut s, &rec, &stop, true, limit);
        }
        Behaviour::LateUpgrade { delay_ms } => {
            std::thread::sleep(Duration::from_millis(delay_ms));
            if s.write_all(&resp).is_err() {
                set_end(&rec, "write-error during the 101");
                return;
            }
            drain(&mut s, &rec, &stop, true, limit);
        }
        Behaviour::Upgrade { then } => {
            if s.write_all(&resp).is_err() {
                set_end(&rec, "write-error during the 101");
                return;
            }
            match then {
                After::Echo => drain(&mut s, &rec, &stop, true, limit),
                After::SendThenRst(bytes) => {
                    let _ = s.write_all(&bytes);
                    rec.lock().unwrap().bytes_sent = bytes.len() as u64;
                    // Let the bytes leave before the RST (an RST discards unsent data).
                    std::thread::sleep(Duration::from_millis(100));
                    set_end(&rec, "closed-by-backend");
                    rst(s);
                    return;
                }
                After::SendThenHalfClose(bytes) => {
                    let _ = s.write_all(&bytes);
                    rec.lock().unwrap().bytes_sent = bytes.len() as u64;
                    let _ = s.shutdown(Shutdown::Write);
                    drain(&mut s, &rec, &stop, false, limit);
                }
                After::NeverRead => hold(&rec, &stop, limit),
                After::Flood(size) => flood(&mut s, size, &rec, &stop, limit),
                After::FloodAfterFirstBytes(size) => {
                    if first_bytes(&mut s, &rec, &stop, limit) {
                        flood(&mut s, size, &rec, &stop, limit);
                    }
                }
            }
        }
    }
    // A backend that was dropped (the test is over, or it "crashes") goes away with an RST,
    // as a process that dies with unread or unsent data does.
    if rec.lock().unwrap().end == "dropped" {
        rst(s);
    }
}

// ---------------------------------------------------------------------------------------------
// Descriptors and sockets of httpd's children
// ---------------------------------------------------------------------------------------------

/// The processes that serve connections: httpd's children, or httpd itself when it has none
/// (`httpd -X`, as under valgrind).
pub fn worker_pids(h: &Httpd) -> Vec<u32> {
    let c = h.child_pids();
    if c.is_empty() {
        h.pid().into_iter().collect()
    } else {
        c
    }
}

/// Descriptor counts of httpd's children at one moment.
#[derive(Clone, Debug)]
pub struct Baseline {
    pub fds: Vec<(u32, usize)>,
}

impl Baseline {
    pub fn take(h: &Httpd) -> Baseline {
        Baseline {
            fds: worker_pids(h)
                .into_iter()
                .filter_map(|p| fd_count(p).map(|n| (p, n)))
                .collect(),
        }
    }

    pub fn total(&self) -> usize {
        self.fds.iter().map(|(_, n)| n).sum()
    }
}

/// The children's TCP sockets other than listeners, as "pid: local->remote STATE".
pub fn open_sockets(h: &Httpd) -> Vec<String> {
    tcp_sockets_of(&worker_pids(h))
        .into_iter()
        .filter(|(_, s)| s.state != TCP_LISTEN)
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

/// Sockets in CLOSE_WAIT held by the children.
pub fn close_wait(h: &Httpd) -> Vec<String> {
    tcp_sockets_of(&worker_pids(h))
        .into_iter()
        .filter(|(_, s)| s.state == TCP_CLOSE_WAIT)
        .map(|(pid, s)| format!("pid {pid}: {}->{}", s.local_port, s.remote_port))
        .collect()
}

/// Wait (up to `timeout`) until the children hold exactly their baseline descriptors (same
/// processes, each within `slack`) and no TCP socket but their listeners; panic with the
/// details otherwise. Returns how long it took.
pub fn assert_released(
    h: &Httpd,
    base: &Baseline,
    slack: usize,
    timeout: Duration,
    what: &str,
) -> Duration {
    let t0 = Instant::now();
    let ok = crate::wait_for(timeout, || {
        let now = Baseline::take(h);
        let fds_ok = base.fds.iter().all(|(pid, n)| {
            now.fds
                .iter()
                .find(|(p, _)| p == pid)
                .is_some_and(|(_, m)| *m <= n + slack)
        });
        (fds_ok && open_sockets(h).is_empty()).then_some(())
    });
    if ok.is_none() {
        panic!(
            "{what}: resources not released after {timeout:?}.\nfds at baseline {:?}, now {:?}\n\
             sockets still held by the children:\n{}",
            base.fds,
            Baseline::take(h).fds,
            open_sockets(h).join("\n")
        );
    }
    t0.elapsed()
}

/// MPM settings for fault tests: one child process for the whole test (event/worker), so that
/// descriptor counts compare, and enough threads for a few concurrent connections.
pub const ONE_CHILD: &str = "<IfModule mpm_event_module>\n  StartServers 1\n  ServerLimit 1\n  ThreadsPerChild 16\n  MinSpareThreads 1\n  MaxSpareThreads 16\n  MaxRequestWorkers 16\n</IfModule>\n<IfModule mpm_worker_module>\n  StartServers 1\n  ServerLimit 1\n  ThreadsPerChild 16\n  MinSpareThreads 1\n  MaxSpareThreads 16\n  MaxRequestWorkers 16\n</IfModule>\n";

/// Short timeouts, so that every fault resolves within a few seconds.
pub const SHORT_TIMEOUTS: &str = "Timeout 5\nProxyTimeout 2\n";
