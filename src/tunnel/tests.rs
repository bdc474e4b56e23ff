//! Tunnel tests over real sockets: the tunnel runs in a thread between two
//! socket pairs (Unix or TCP), and the test drives the far ends.

use super::*;
use super::splice::BULK_PIPE_CAP;
use crate::sys;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A socket the test can hold in either flavour.
enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    fn fd(&self) -> i32 {
        match self {
            Sock::Unix(s) => s.as_raw_fd(),
            Sock::Tcp(s) => s.as_raw_fd(),
        }
    }
    fn try_clone(&self) -> Sock {
        match self {
            Sock::Unix(s) => Sock::Unix(s.try_clone().unwrap()),
            Sock::Tcp(s) => Sock::Tcp(s.try_clone().unwrap()),
        }
    }
    fn shutdown_write(&self) {
        let _ = match self {
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }
    fn set_nonblocking(&self, on: bool) {
        match self {
            Sock::Unix(s) => s.set_nonblocking(on).unwrap(),
            Sock::Tcp(s) => s.set_nonblocking(on).unwrap(),
        }
    }
    fn set_read_timeout(&self, d: Duration) {
        match self {
            Sock::Unix(s) => s.set_read_timeout(Some(d)).unwrap(),
            Sock::Tcp(s) => s.set_read_timeout(Some(d)).unwrap(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(b),
            Sock::Tcp(s) => s.read(b),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(b),
            Sock::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// (far end for the test, near end for the tunnel)
fn unix_pair() -> (Sock, Sock) {
    let (a, b) = UnixStream::pair().unwrap();
    (Sock::Unix(a), Sock::Unix(b))
}

fn tcp_pair() -> (Sock, Sock) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let far = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (near, _) = l.accept().unwrap();
    (Sock::Tcp(far), Sock::Tcp(near))
}

/// Counts poll rounds (the tunnel asks for the client's fd once per round).
struct Counted<E> {
    inner: E,
    rounds: Arc<AtomicU64>,
}

impl<E: Endpoint> Endpoint for Counted<E> {
    fn fd(&self) -> Fd {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.inner.fd()
    }
    fn read(&mut self, buf: &mut [u8]) -> Io {
        self.inner.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> Io {
        self.inner.write(buf)
    }
    fn shutdown_write(&mut self) -> Io {
        self.inner.shutdown_write()
    }
    fn hidden_input(&self) -> bool {
        self.inner.hidden_input()
    }
    fn splice_fd(&self) -> Option<Fd> {
        self.inner.splice_fd()
    }
}

/// A filtered endpoint simulating TLS: each read first slurps everything
/// the socket has into a private buffer (so poll() no longer sees it), then
/// hands it out `chunk` bytes at a time. Writes block until done.
struct Hidden {
    sock: Sock,
    hidden: VecDeque<u8>,
    chunk: usize,
    eof: bool,
}

impl Hidden {
    fn new(sock: Sock, chunk: usize) -> Self {
        sock.set_nonblocking(true);
        Hidden {
            sock,
            hidden: VecDeque::new(),
            chunk,
            eof: false,
        }
    }
}

impl Endpoint for Hidden {
    fn fd(&self) -> Fd {
        self.sock.fd()
    }
    fn read(&mut self, buf: &mut [u8]) -> Io {
        if self.hidden.is_empty() && !self.eof {
            let mut tmp = [0u8; 4096];
            loop {
                match self.sock.read(&mut tmp) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => self.hidden.extend(&tmp[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Io::Error(e.raw_os_error().unwrap_or(0)),
                }
            }
        }
        if self.hidden.is_empty() {
            return if self.eof { Io::Eof } else { Io::Again };
        }
        let n = self.chunk.min(buf.len()).min(self.hidden.len());
        for (d, s) in buf.iter_mut().zip(self.hidden.drain(..n)) {
            *d = s;
        }
        Io::Ok(n)
    }
    fn write(&mut self, buf: &[u8]) -> Io {
        let mut off = 0;
        while off < buf.len() {
            match self.sock.write(&buf[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let mut fds = [sys::pollfd(self.sock.fd(), sys::POLLOUT)];
                    let _ = sys::poll(&mut fds, 1000);
                }
                Err(e) => return Io::Error(e.raw_os_error().unwrap_or(0)),
            }
        }
        Io::Ok(buf.len())
    }
    fn shutdown_write(&mut self) -> Io {
        self.sock.shutdown_write();
        Io::Ok(0)
    }
    fn hidden_input(&self) -> bool {
        true
    }
}

struct Setup {
    cbuf: usize,
    bbuf: usize,
    c_initial: Vec<u8>,
    b_initial: Vec<u8>,
    cfg: Config,
}

impl Setup {
    fn new(half_close: bool) -> Self {
        Setup {
            cbuf: 65536,
            bbuf: 65536,
            c_initial: vec![],
            b_initial: vec![],
            cfg: Config::new(0, 100, half_close),
        }
    }
}

struct Running {
    handle: JoinHandle<Stats>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    started: Instant,
}

impl Running {
    fn join(self) -> (Stats, Duration) {
        let s = self.handle.join().unwrap();
        (s, self.started.elapsed())
    }
}

/// Run the tunnel in a thread; the near sockets are closed when it returns.
fn spawn<C, B>(client: C, backend: B, setup: Setup) -> Running
where
    C: Endpoint + Send + 'static,
    B: Endpoint + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let (stop2, rounds2) = (stop.clone(), rounds.clone());
    let handle = thread::spawn(move || {
        let mut cmem = vec![0u8; setup.cbuf];
        cmem[..setup.c_initial.len()].copy_from_slice(&setup.c_initial);
        let mut bmem = vec![0u8; setup.bbuf];
        bmem[..setup.b_initial.len()].copy_from_slice(&setup.b_initial);
        let mut client = Counted {
            inner: client,
            rounds: rounds2,
        };
        let mut backend = backend;
        let cbuf = Buffer::new(&mut cmem, setup.c_initial.len()).unwrap();
        let bbuf = Buffer::new(&mut bmem, setup.b_initial.len()).unwrap();
        run(&mut client, cbuf, &mut backend, bbuf, &setup.cfg, || {
            stop2.load(Ordering::Relaxed)
        })
    });
    Running {
        handle,
        stop,
        rounds,
        started: Instant::now(),
    }
}

/// Raw socket endpoints (non-blocking), keeping the std socket alive.
struct RawSock {
    sock: Socket,
    _keep: Sock,
}

fn raw(s: Sock) -> RawSock {
    s.set_nonblocking(true);
    RawSock {
        sock: Socket::new(s.fd()),
        _keep: s,
    }
}

impl Endpoint for RawSock {
    fn fd(&self) -> Fd {
        self.sock.fd()
    }
    fn read(&mut self, buf: &mut [u8]) -> Io {
        self.sock.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> Io {
        self.sock.write(buf)
    }
    fn shutdown_write(&mut self) -> Io {
        self.sock.shutdown_write()
    }
    fn splice_fd(&self) -> Option<Fd> {
        self.sock.splice_fd()
    }
}

fn writer(mut s: Sock, data: Vec<u8>, shut: bool) -> JoinHandle<()> {
    thread::spawn(move || {
        s.write_all(&data).unwrap();
        if shut {
            s.shutdown_write();
        }
    })
}

fn reader(mut s: Sock) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        s.set_read_timeout(Duration::from_secs(20));
        s.read_to_end(&mut v).unwrap();
        v
    })
}

fn read_exact_timeout(s: &mut Sock, n: usize, secs: u64) -> Vec<u8> {
    s.set_read_timeout(Duration::from_secs(secs));
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

/// Both directions at once, each far end shutting down its write side after
/// its data; with half-close both directions complete independently.
fn exchange(
    pair: fn() -> (Sock, Sock),
    csize: usize,
    bsize: usize,
    cbuf: usize,
    bbuf: usize,
) -> Stats {
    let (cfar, cnear) = pair();
    let (bfar, bnear) = pair();
    let cdata = random_bytes(csize, 1 + csize as u64);
    let bdata = random_bytes(bsize, 7 + bsize as u64);
    let mut setup = Setup::new(true);
    setup.cbuf = cbuf;
    setup.bbuf = bbuf;
    let t = spawn(raw(cnear), raw(bnear), setup);
    let cw = writer(cfar.try_clone(), cdata.clone(), true);
    let bw = writer(bfar.try_clone(), bdata.clone(), true);
    let cr = reader(cfar);
    let br = reader(bfar);
    cw.join().unwrap();
    bw.join().unwrap();
    let got_b = br.join().unwrap();
    let got_c = cr.join().unwrap();
    assert!(
        got_b == cdata,
        "client->backend: {} of {} bytes",
        got_b.len(),
        cdata.len()
    );
    assert!(
        got_c == bdata,
        "backend->client: {} of {} bytes",
        got_c.len(),
        bdata.len()
    );
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.bytes_from_client, csize as u64);
    assert_eq!(s.bytes_to_backend, csize as u64);
    assert_eq!(s.bytes_from_backend, bsize as u64);
    assert_eq!(s.bytes_to_client, bsize as u64);
    assert!(s.closed_first.is_some());
    assert_eq!(s.os_error, 0);
    s
}

#[test]
fn byte_exact_both_ways_unix() {
    for &(c, b) in &[
        (0, 0),
        (1, 0),
        (0, 1),
        (1, 1),
        (4095, 70_000),
        (3 << 20, 5 << 20),
    ] {
        let s = exchange(unix_pair, c, b, 65536, 65536);
        assert_eq!(s.spliced, (c + b) as u64, "raw to raw: all spliced");
    }
}

#[test]
fn byte_exact_both_ways_small_odd_buffers() {
    exchange(unix_pair, 1 << 20, 777_777, 1, 3);
    exchange(unix_pair, 3 << 20, 2 << 20, 1000, 4093);
    // The buffers matter only for the copy path: here, the spliced path.
    let s = exchange(unix_pair, 1 << 20, 777_777, 1, 3);
    assert_eq!(s.spliced, (1 << 20) + 777_777);
}

#[test]
fn byte_exact_both_ways_tcp() {
    exchange(tcp_pair, 0, 0, 65536, 65536);
    let s = exchange(tcp_pair, 4 << 20, 3 << 20, 16384, 65536);
    assert_eq!(s.spliced, 7 << 20);
    assert!(s.pipes >= 2, "{} pipes", s.pipes);
}

#[test]
fn initial_pending_bytes_go_first() {
    let (cfar, cnear) = unix_pair();
    let (bfar, bnear) = unix_pair();
    let mut setup = Setup::new(true);
    setup.c_initial = b"PIPELINED-FIRST-FRAME".to_vec();
    setup.b_initial = b"FRAME-AFTER-101".to_vec();
    setup.cbuf = 64;
    setup.bbuf = 15; // exactly full at the start
    let t = spawn(raw(cnear), raw(bnear), setup);
    let cw = writer(cfar.try_clone(), b"-then-more".to_vec(), true);
    let bw = writer(bfar.try_clone(), b"-and-more".to_vec(), true);
    let cr = reader(cfar);
    let br = reader(bfar);
    cw.join().unwrap();
    bw.join().unwrap();
    assert_eq!(br.join().unwrap(), b"PIPELINED-FIRST-FRAME-then-more");
    assert_eq!(cr.join().unwrap(), b"FRAME-AFTER-101-and-more");
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.bytes_from_client, 31);
    assert_eq!(s.bytes_to_client, 24);
}

/// One side ends its output; its peer sees the FIN while the other
/// direction keeps flowing; then the other side ends too.
fn half_close(first_client: bool) {
    let (cfar, cnear) = unix_pair();
    let (bfar, bnear) = unix_pair();
    let t = spawn(raw(cnear), raw(bnear), Setup::new(true));
    let (mut first, mut second) = if first_client {
        (cfar, bfar)
    } else {
        (bfar, cfar)
    };
    first.write_all(b"last words").unwrap();
    first.shutdown_write();
    // The peer gets the bytes, then EOF: the FIN went through.
    let mut got = Vec::new();
    second.set_read_timeout(Duration::from_secs(5));
    second.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words");
    // The other direction still flows, a lot.
    let data = random_bytes(2 << 20, 99);
    let w = writer(second.try_clone(), data.clone(), false);
    let got = read_exact_timeout(&mut first, data.len(), 20);
    assert!(got == data);
    w.join().unwrap();
    second.shutdown_write();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(
        s.closed_first,
        Some(if first_client {
            Side::Client
        } else {
            Side::Backend
        })
    );
}

#[test]
fn half_close_from_client() {
    half_close(true);
}

#[test]
fn half_close_from_backend() {
    half_close(false);
}

#[test]
fn without_half_close_first_eof_ends_after_flush() {
    let (mut cfar, cnear) = unix_pair();
    let (bfar, bnear) = unix_pair();
    let t = spawn(raw(cnear), raw(bnear), Setup::new(false));
    let data = random_bytes(1 << 20, 5);
    // The backend reads only after a while: the tail must still arrive.
    let br = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let mut s = bfar;
        let mut v = Vec::new();
        s.set_read_timeout(Duration::from_secs(20));
        s.read_to_end(&mut v).unwrap();
        v
    });
    cfar.write_all(&data).unwrap();
    cfar.shutdown_write();
    assert!(br.join().unwrap() == data);
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.closed_first, Some(Side::Client));
    // The tunnel closed the client too.
    let mut rest = Vec::new();
    cfar.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn without_half_close_final_flush_is_bounded() {
    let (cfar, cnear) = unix_pair();
    let (bfar, bnear) = unix_pair();
    let mut setup = Setup::new(false);
    setup.cfg.close_linger_ms = 200;
    let t = spawn(raw(cnear), raw(bnear), setup);
    // The client sends more than the backend will ever read...
    let cfar2 = cfar.try_clone();
    let data = random_bytes(8 << 20, 3);
    let w = thread::spawn(move || {
        let mut s = cfar2;
        let _ = s.write_all(&data);
    });
    thread::sleep(Duration::from_millis(300));
    // ...and the backend ends its output: closing, with bytes stuck.
    bfar.shutdown_write();
    let (s, d) = t.join();
    assert_eq!(s.reason, EndReason::Idle);
    assert_eq!(s.closed_first, Some(Side::Backend));
    assert!(d < Duration::from_secs(5));
    assert!(s.bytes_from_client > s.bytes_to_backend);
    drop(cfar);
    drop(bfar);
    w.join().unwrap();
}

#[test]
fn stuck_reader_does_not_block_other_direction() {
    let (cfar, cnear) = unix_pair();
    let (bfar, bnear) = unix_pair();
    let mut setup = Setup::new(true);
    setup.cfg.tick_ms = 50;
    let t = spawn(raw(cnear), raw(bnear), setup);
    // backend -> client: the client never reads.
    let bw = {
        let mut s = bfar.try_clone();
        thread::spawn(move || {
            let chunk = random_bytes(65536, 11);
            while s.write_all(&chunk).is_ok() {}
        })
    };
    thread::sleep(Duration::from_millis(300));
    // client -> backend still flows.
    let data = random_bytes(4 << 20, 12);
    let cw = writer(cfar.try_clone(), data.clone(), false);
    let mut b = bfar.try_clone();
    let got = read_exact_timeout(&mut b, data.len(), 20);
    assert!(got == data);
    cw.join().unwrap();
    // Stalled both ways now, with a full buffer: no busy loop.
    let before = t.rounds.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(500));
    let during = t.rounds.load(Ordering::Relaxed) - before;
    assert!(during <= 20, "{during} poll rounds in 500 ms");
    t.stop.store(true, Ordering::Relaxed);
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Stopped);
    assert_eq!(s.bytes_to_backend, data.len() as u64);
    // Bounded: what the tunnel holds for the client is at most its buffer,
    // or its pipe (grown for bulk traffic).
    assert!(s.bytes_from_backend - s.bytes_to_client <= BULK_PIPE_CAP.max(65536) as u64);
    drop(cfar);
    drop(bfar);
    bw.join().unwrap();
}

#[test]
fn reset_by_client_is_a_client_error() {
    let (cfar, cnear) = tcp_pair();
    let (bfar, bnear) = tcp_pair();
    let t = spawn(raw(cnear), raw(bnear), Setup::new(true));
    let mut c = cfar.try_clone();
    c.write_all(b"hello").unwrap();
    let mut b = bfar.try_clone();
    assert_eq!(read_exact_timeout(&mut b, 5, 5), b"hello");
    sys::set_linger_zero(cfar.fd()).unwrap();
    drop(c);
    drop(cfar);
    let (s, d) = t.join();
    assert_eq!(s.reason, EndReason::ClientError);
    assert_eq!(s.closed_first, Some(Side::Client));
    assert_eq!(s.os_error, libc::ECONNRESET);
    assert!(d < Duration::from_secs(5));
}

#[test]
fn write_to_closed_backend_is_a_backend_error() {
    let (cfar, cnear) = unix_pair();
    let (bfar, bnear) = unix_pair();
    let t = spawn(raw(cnear), raw(bnear), Setup::new(true));
    drop(bfar);
    let mut c = cfar.try_clone();
    let _ = c.write_all(&random_bytes(1 << 20, 1));
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::BackendError);
    assert_eq!(s.closed_first, Some(Side::Backend));
    assert!(
        s.os_error == libc::EPIPE || s.os_error == libc::ECONNRESET,
        "{}",
        s.os_error
    );
}

#[test]
fn idle_timeout() {
    let (mut cfar, cnear) = unix_pair();
    let (mut bfar, bnear) = unix_pair();
    let mut setup = Setup::new(true);
    setup.cfg = Config::new(300, 0, true);
    let t = spawn(raw(cnear), raw(bnear), setup);
    // Traffic keeps it alive...
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(100));
        cfar.write_all(b"x").unwrap();
        assert_eq!(read_exact_timeout(&mut bfar, 1, 5), b"x");
    }
    assert!(!t.handle.is_finished());
    // ...silence ends it.
    let quiet = Instant::now();
    let (s, _) = t.join();
    let d = quiet.elapsed();
    assert_eq!(s.reason, EndReason::Idle);
    assert_eq!(s.closed_first, None);
    assert!(
        d >= Duration::from_millis(250) && d < Duration::from_secs(3),
        "{d:?}"
    );
    assert!(s.polls < 60, "{} polls", s.polls);
}

#[test]
fn should_stop_is_polled_every_tick() {
    let (_cfar, cnear) = unix_pair();
    let (_bfar, bnear) = unix_pair();
    let mut setup = Setup::new(true);
    setup.cfg = Config::new(0, 50, true);
    let t = spawn(raw(cnear), raw(bnear), setup);
    thread::sleep(Duration::from_millis(300));
    assert!(!t.handle.is_finished());
    t.stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let (s, total) = t.join();
    assert_eq!(s.reason, EndReason::Stopped);
    assert!(stopped.elapsed() < Duration::from_secs(1));
    // One wakeup per tick, give or take.
    let ticks = total.as_millis() as u64 / 50;
    assert!(
        s.polls <= ticks + 5,
        "{} polls for {} ticks",
        s.polls,
        ticks
    );
}

#[test]
fn should_stop_while_data_flows() {
    let (cfar, cnear) = unix_pair();
    let (bfar, bnear) = unix_pair();
    let mut setup = Setup::new(true);
    setup.cfg = Config::new(0, 20, true);
    let t = spawn(raw(cnear), raw(bnear), setup);
    let mut c = cfar.try_clone();
    let w = thread::spawn(move || while c.write_all(&[7u8; 4096]).is_ok() {});
    let mut b = bfar.try_clone();
    let r = thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while matches!(b.read(&mut buf), Ok(n) if n > 0) {}
    });
    thread::sleep(Duration::from_millis(200));
    t.stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Stopped);
    assert!(stopped.elapsed() < Duration::from_secs(1));
    assert!(s.bytes_to_backend > 0);
    drop(cfar);
    drop(bfar);
    w.join().unwrap();
    r.join().unwrap();
}

#[test]
fn hung_up_client_is_not_polled() {
    // Half-close: the client closes entirely; the backend takes the FIN
    // but neither answers nor closes. The client's socket reports POLLHUP
    // forever: it must drop out of the poll set.
    let (cfar, cnear) = unix_pair();
    let (mut bfar, bnear) = unix_pair();
    let mut setup = Setup::new(true);
    setup.cfg = Config::new(600, 0, true);
    let t = spawn(raw(cnear), raw(bnear), setup);
    drop(cfar);
    let mut v = Vec::new();
    bfar.set_read_timeout(Duration::from_secs(5));
    bfar.read_to_end(&mut v).unwrap();
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Idle);
    assert_eq!(s.closed_first, Some(Side::Client));
    assert!(s.polls < 10, "{} polls", s.polls);
}

#[test]
fn filtered_hidden_input_is_not_one_event_behind() {
    // The client endpoint swallows the socket's bytes into a private buffer
    // and hands them out 10 at a time: after the first read poll() sees
    // nothing. Everything must still arrive at once, with a 16-byte buffer
    // (the reads pause while it is full). No tick or timeout helps.
    let (mut cfar, cnear) = unix_pair();
    let (mut bfar, bnear) = unix_pair();
    let mut setup = Setup::new(true);
    setup.cfg = Config::new(0, 60_000, true);
    setup.cbuf = 16;
    let t = spawn(Hidden::new(cnear, 10), raw(bnear), setup);
    for round in 0..3u64 {
        let data = random_bytes(10_000, round);
        cfar.write_all(&data).unwrap();
        assert!(read_exact_timeout(&mut bfar, data.len(), 5) == data);
        // and back, through the hidden endpoint's blocking write
        bfar.write_all(&data[..777]).unwrap();
        assert_eq!(read_exact_timeout(&mut cfar, 777, 5), &data[..777]);
    }
    cfar.write_all(b"bye").unwrap();
    cfar.shutdown_write();
    bfar.shutdown_write();
    let mut v = Vec::new();
    bfar.read_to_end(&mut v).unwrap();
    assert_eq!(v, b"bye");
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
}

#[test]
fn filtered_both_sides_byte_exact() {
    let (cfar, cnear) = tcp_pair();
    let (bfar, bnear) = tcp_pair();
    let mut setup = Setup::new(true);
    setup.cbuf = 1000;
    setup.bbuf = 3000;
    let t = spawn(Hidden::new(cnear, 333), Hidden::new(bnear, 4096), setup);
    let cdata = random_bytes(2 << 20, 21);
    let bdata = random_bytes(3 << 20, 22);
    let cw = writer(cfar.try_clone(), cdata.clone(), true);
    let bw = writer(bfar.try_clone(), bdata.clone(), true);
    let cr = reader(cfar);
    let br = reader(bfar);
    cw.join().unwrap();
    bw.join().unwrap();
    assert!(br.join().unwrap() == cdata);
    assert!(cr.join().unwrap() == bdata);
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.spliced, 0, "filtered endpoints are never spliced");
    assert_eq!(s.pipes, 0);
}

/// A raw endpoint whose first reads come from a "filter" that already
/// holds bytes (then AGAIN), after which it reads its socket.
struct Draining {
    pre: VecDeque<u8>,
    draining: bool,
    sock: RawSock,
}

impl Endpoint for Draining {
    fn fd(&self) -> Fd {
        self.sock.fd()
    }
    fn read(&mut self, buf: &mut [u8]) -> Io {
        if self.draining {
            if self.pre.is_empty() {
                self.draining = false;
                return Io::Again;
            }
            let n = buf.len().min(self.pre.len()).min(4);
            for (d, s) in buf.iter_mut().zip(self.pre.drain(..n)) {
                *d = s;
            }
            return Io::Ok(n);
        }
        self.sock.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> Io {
        self.sock.write(buf)
    }
    fn shutdown_write(&mut self) -> Io {
        self.sock.shutdown_write()
    }
    fn hidden_input(&self) -> bool {
        self.draining
    }
    fn splice_fd(&self) -> Option<Fd> {
        if self.draining {
            None
        } else {
            self.sock.splice_fd()
        }
    }
}

#[test]
fn raw_endpoint_drains_filter_bytes_first() {
    let (mut cfar, cnear) = unix_pair();
    let (mut bfar, bnear) = unix_pair();
    let client = Draining {
        pre: b"buffered-by-httpd".iter().copied().collect(),
        draining: true,
        sock: raw(cnear),
    };
    let mut setup = Setup::new(true);
    setup.cfg = Config::new(0, 60_000, true);
    setup.cbuf = 8;
    let t = spawn(client, raw(bnear), setup);
    // Arrives with no socket traffic at all.
    assert_eq!(read_exact_timeout(&mut bfar, 17, 5), b"buffered-by-httpd");
    cfar.write_all(b"+socket").unwrap();
    cfar.shutdown_write();
    bfar.shutdown_write();
    let mut v = Vec::new();
    bfar.read_to_end(&mut v).unwrap();
    assert_eq!(v, b"+socket");
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.bytes_from_client, 24);
    // The filter's bytes through the buffer, the socket's spliced.
    assert_eq!(s.spliced, 7);
}

#[test]
fn buffer_rules() {
    let mut empty: [u8; 0] = [];
    assert!(Buffer::new(&mut empty, 0).is_none());
    let mut b = [0u8; 4];
    assert!(Buffer::new(&mut b, 5).is_none());
    let mut buf = Buffer::new(&mut b, 4).unwrap();
    assert!(buf.is_full());
    assert!(buf.room().is_empty());
    buf.consume(1);
    assert_eq!(buf.room().len(), 1);
    assert_eq!(buf.pending().len(), 3);
    buf.consume(3);
    assert_eq!(buf.room().len(), 4);
}

#[test]
fn config_from_c_values() {
    let c = Config::new(-5, -1, false);
    assert_eq!(c.idle_timeout_ms, None);
    assert_eq!(c.tick_ms, DEFAULT_TICK_MS);
    let c = Config::new(1500, 20, true);
    assert_eq!(c.idle_timeout_ms, Some(1500));
    assert_eq!(c.tick_ms, 20);
    assert!(c.half_close);
}

// ---------------------------------------------------------------------------
// The zero-copy (splice) path
// ---------------------------------------------------------------------------

/// Writes `data` in `chunk`-sized writes (message boundaries for seqpacket).
fn chunked_writer(mut s: Sock, data: Vec<u8>, chunk: usize) -> JoinHandle<()> {
    thread::spawn(move || {
        for c in data.chunks(chunk) {
            s.write_all(c).unwrap();
        }
        s.shutdown_write();
    })
}

#[test]
fn splice_half_close_tcp() {
    // The FIN crosses after the last spliced byte; the other direction
    // keeps flowing through its own pipe, then ends too.
    let (mut cfar, cnear) = tcp_pair();
    let (mut bfar, bnear) = tcp_pair();
    let t = spawn(raw(cnear), raw(bnear), Setup::new(true));
    let first = random_bytes(300_000, 41);
    cfar.write_all(&first).unwrap();
    cfar.shutdown_write();
    let mut got = Vec::new();
    bfar.set_read_timeout(Duration::from_secs(10));
    bfar.read_to_end(&mut got).unwrap();
    assert!(got == first, "{} of {} bytes", got.len(), first.len());
    let back = random_bytes(2 << 20, 42);
    let w = writer(bfar.try_clone(), back.clone(), true);
    let mut got = Vec::new();
    cfar.set_read_timeout(Duration::from_secs(10));
    cfar.read_to_end(&mut got).unwrap();
    assert!(got == back);
    w.join().unwrap();
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.closed_first, Some(Side::Client));
    assert_eq!(s.bytes_from_client, 300_000);
    assert_eq!(s.bytes_to_backend, 300_000);
    assert_eq!(s.bytes_to_client, 2 << 20);
    assert_eq!(s.spliced, 300_000 + (2 << 20));
}

#[test]
fn splice_stuck_reader_is_bounded_and_quiet() {
    // The client never reads: the backend's bytes stop at the pipe's
    // capacity, the other direction still flows, and the stalled tunnel
    // does not spin.
    let (cfar, cnear) = tcp_pair();
    let (bfar, bnear) = tcp_pair();
    let mut setup = Setup::new(true);
    setup.cfg.tick_ms = 50;
    let t = spawn(raw(cnear), raw(bnear), setup);
    let bw = {
        let mut s = bfar.try_clone();
        thread::spawn(move || {
            let chunk = random_bytes(65536, 43);
            while s.write_all(&chunk).is_ok() {}
        })
    };
    thread::sleep(Duration::from_millis(300));
    let data = random_bytes(4 << 20, 44);
    let cw = writer(cfar.try_clone(), data.clone(), false);
    let mut b = bfar.try_clone();
    assert!(read_exact_timeout(&mut b, data.len(), 20) == data);
    cw.join().unwrap();
    let before = t.rounds.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(500));
    let during = t.rounds.load(Ordering::Relaxed) - before;
    assert!(during <= 20, "{during} poll rounds in 500 ms");
    t.stop.store(true, Ordering::Relaxed);
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Stopped);
    assert_eq!(s.bytes_to_backend, data.len() as u64);
    assert_eq!(s.spliced, s.bytes_from_client + s.bytes_from_backend);
    // In flight towards the client: at most one pipe's worth (grown for
    // bulk traffic, where the kernel allows).
    let cap = sys::pipe().unwrap().capacity().unwrap_or(65536).max(BULK_PIPE_CAP) as u64;
    let held = s.bytes_from_backend - s.bytes_to_client;
    assert!(held <= cap, "{held} bytes held, pipe capacity {cap}");
    drop(cfar);
    drop(bfar);
    bw.join().unwrap();
}

#[test]
fn splice_many_small_writes_fill_pipe_slots() {
    // Thousands of tiny segments: the pipe runs out of slots long before
    // bytes; the tunnel must wait for the destination, not spin or stall.
    let (cfar, cnear) = tcp_pair();
    let (mut bfar, bnear) = tcp_pair();
    let mut setup = Setup::new(true);
    setup.cfg.tick_ms = 50;
    let t = spawn(raw(cnear), raw(bnear), setup);
    let data = random_bytes(200_000, 45);
    let cw = chunked_writer(cfar.try_clone(), data.clone(), 7);
    // The backend reads late, then everything.
    thread::sleep(Duration::from_millis(300));
    let got = read_exact_timeout(&mut bfar, data.len(), 20);
    assert!(got == data);
    cw.join().unwrap();
    bfar.shutdown_write();
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.spliced, data.len() as u64);
    assert!(s.polls < 20_000, "{} polls", s.polls);
}

/// A raw socket whose splice_fd is a timerfd, which splice(2) refuses
/// (EINVAL: no splice_read/splice_write) on current kernels: the tunnel
/// believes it may splice, the kernel says no.
struct SpliceRefused {
    sock: RawSock,
    timerfd: std::os::fd::OwnedFd,
}

fn splice_refused(s: Sock) -> SpliceRefused {
    SpliceRefused {
        sock: raw(s),
        timerfd: sys::timerfd().unwrap(),
    }
}

impl Endpoint for SpliceRefused {
    fn fd(&self) -> Fd {
        self.sock.fd()
    }
    fn read(&mut self, buf: &mut [u8]) -> Io {
        self.sock.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> Io {
        self.sock.write(buf)
    }
    fn shutdown_write(&mut self) -> Io {
        self.sock.shutdown_write()
    }
    fn splice_fd(&self) -> Option<Fd> {
        use std::os::fd::AsRawFd;
        Some(self.timerfd.as_raw_fd())
    }
}

#[test]
fn splice_unsupported_falls_back_to_the_buffer() {
    // client->backend: splicing in from the client is refused at once, so
    // the buffer is used from the first byte. backend->client: bytes are
    // spliced into the pipe, splicing them out is refused: they are read
    // back from the pipe into the buffer, in order, and the direction goes
    // on through the buffer.
    let (cfar, cnear) = tcp_pair();
    let (bfar, bnear) = tcp_pair();
    let t = spawn(splice_refused(cnear), raw(bnear), Setup::new(true));
    let cdata = random_bytes(1 << 20, 46);
    let bdata = random_bytes(3 << 20, 47);
    let cw = writer(cfar.try_clone(), cdata.clone(), true);
    let bw = writer(bfar.try_clone(), bdata.clone(), true);
    let br = reader(bfar);
    let cr = reader(cfar);
    cw.join().unwrap();
    bw.join().unwrap();
    assert!(br.join().unwrap() == cdata);
    let got = cr.join().unwrap();
    assert!(got == bdata, "{} of {} bytes", got.len(), bdata.len());
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.bytes_from_client, cdata.len() as u64);
    assert_eq!(s.bytes_to_backend, cdata.len() as u64);
    assert_eq!(s.bytes_from_backend, bdata.len() as u64);
    assert_eq!(s.bytes_to_client, bdata.len() as u64);
    // At most the first pipeful (grown for bulk) went in by splice.
    let cap = sys::pipe().unwrap().capacity().unwrap_or(65536).max(BULK_PIPE_CAP) as u64;
    assert!(s.spliced <= cap, "{s:?}");
}

#[test]
fn pipes_are_given_back_when_quiet() {
    let (mut cfar, cnear) = tcp_pair();
    let (mut bfar, bnear) = tcp_pair();
    let mut setup = Setup::new(true);
    setup.cfg.tick_ms = 40;
    let t = spawn(raw(cnear), raw(bnear), setup);
    for round in 0..3u64 {
        let d = random_bytes(10_000, 50 + round);
        cfar.write_all(&d).unwrap();
        assert!(read_exact_timeout(&mut bfar, d.len(), 5) == d);
        thread::sleep(Duration::from_millis(250));
    }
    cfar.shutdown_write();
    bfar.shutdown_write();
    let (s, _) = t.join();
    assert_eq!(s.reason, EndReason::Closed);
    assert_eq!(s.spliced, 30_000);
    // One pipe per burst: each was closed while the tunnel was quiet.
    assert!(s.pipes >= 3, "{} pipes", s.pipes);
}

// ---------------------------------------------------------------------------
// WebSocket tunnels (frame tracking, pings, Close 1001)
// ---------------------------------------------------------------------------

mod ws {
    use super::*;
    use crate::frames::CLOSE_GOING_AWAY;
    use std::sync::atomic::AtomicU8;
    use std::sync::Mutex;

    /// A frame, encoded by the test itself: first byte `b0` as given,
    /// minimal length, masked with `mask` when given.
    pub(super) fn frame(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let m = if mask.is_some() { 0x80 } else { 0 };
        let len = payload.len();
        let mut v = vec![b0];
        if len < 126 {
            v.push(m | len as u8);
        } else if len < 65536 {
            v.push(m | 126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            v.push(m | 127);
            v.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if let Some(k) = mask {
            v.extend_from_slice(&k);
        }
        v.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, &b)| b ^ mask.map_or(0, |k| k[i % 4])),
        );
        v
    }

    /// A frame as a far end read it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(super) struct WsFrame {
        pub fin: bool,
        pub op: u8,
        pub mask: Option<[u8; 4]>,
        /// Unmasked.
        pub payload: Vec<u8>,
        /// As on the wire.
        pub raw: Vec<u8>,
    }

    impl WsFrame {
        fn close_code(&self) -> Option<u16> {
            (self.op == 8 && self.payload.len() >= 2)
                .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
        }
    }

    /// The frame at the start of `b`, with its size, once complete.
    pub(super) fn parse_frame(b: &[u8]) -> Option<(WsFrame, usize)> {
        if b.len() < 2 {
            return None;
        }
        let masked = b[1] & 0x80 != 0;
        let (len, mut off) = match b[1] & 0x7f {
            126 => (u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize, 4),
            127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
            n => (n as usize, 2),
        };
        let mask = if masked {
            let k: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
            off += 4;
            Some(k)
        } else {
            None
        };
        let body = b.get(off..off + len)?;
        let payload = body
            .iter()
            .enumerate()
            .map(|(i, &x)| x ^ mask.map_or(0, |k| k[i % 4]))
            .collect();
        Some((
            WsFrame {
                fin: b[0] & 0x80 != 0,
                op: b[0] & 0x0f,
                mask,
                payload,
                raw: b[..off + len].to_vec(),
            },
            off + len,
        ))
    }

    /// Everything a far end received.
    #[derive(Debug, Default)]
    pub(super) struct PeerLog {
        pub raw: Vec<u8>,
        pub frames: Vec<(WsFrame, Instant)>,
        /// Bytes at the end that were not a whole frame.
        pub trailing: usize,
    }

    impl PeerLog {
        /// The bytes received without the frames `drop` picks.
        pub fn without(&self, drop: impl Fn(&WsFrame) -> bool) -> Vec<u8> {
            let mut v = Vec::new();
            for (f, _) in &self.frames {
                if !drop(f) {
                    v.extend(&f.raw);
                }
            }
            v
        }
        pub fn count(&self, op: u8) -> usize {
            self.frames.iter().filter(|(f, _)| f.op == op).count()
        }
        /// The received stream is valid frames, masked (or not) as this
        /// far end requires, nothing after a Close of the tunnel's.
        pub fn check_valid(&self, masked: bool) {
            assert_eq!(self.trailing, 0, "a partial frame at the end");
            for (i, (f, _)) in self.frames.iter().enumerate() {
                assert_eq!(f.mask.is_some(), masked, "frame {i}: {f:?}");
                assert!(matches!(f.op, 0 | 1 | 2 | 8 | 9 | 10), "frame {i}: {f:?}");
                if f.op >= 8 {
                    assert!(f.fin && f.payload.len() <= 125);
                }
                if f.op == 8 {
                    assert_eq!(i + 1, self.frames.len(), "nothing may follow a Close");
                }
            }
        }
        pub fn last(&self) -> Option<&WsFrame> {
            self.frames.last().map(|(f, _)| f)
        }
    }

    /// A far end: a thread reads and parses what the tunnel sends, answers
    /// Pings (and, if asked, a Close) as a WebSocket peer would; the test
    /// writes through `send`, holding the writer for whole frames.
    pub(super) struct Peer {
        pub writer: Arc<Mutex<Sock>>,
        reader: JoinHandle<PeerLog>,
        pub masked: bool,
        key: u32,
    }

    impl Peer {
        /// `masked`: this far end is the client (its frames are masked).
        pub fn new(sock: Sock, masked: bool, answer_pings: bool, answer_close: bool) -> Peer {
            let writer = Arc::new(Mutex::new(sock.try_clone()));
            let w2 = writer.clone();
            let mut sock = sock;
            let reader = thread::spawn(move || {
                sock.set_read_timeout(Duration::from_secs(20));
                let mut log = PeerLog::default();
                let mut pos = 0;
                let mut buf = vec![0u8; 65536];
                let mut closed = false;
                loop {
                    let n = match sock.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    log.raw.extend(&buf[..n]);
                    while let Some((f, len)) = parse_frame(&log.raw[pos..]) {
                        pos += len;
                        let at = Instant::now();
                        let answer = match f.op {
                            9 if answer_pings && !closed => Some(frame(
                                0x8a,
                                masked.then_some([1, 2, 3, 4]),
                                &f.payload,
                            )),
                            8 if answer_close && !closed => {
                                closed = true;
                                Some(frame(0x88, masked.then_some([5, 6, 7, 8]), &f.payload))
                            }
                            _ => None,
                        };
                        if let Some(a) = answer {
                            let _ = w2.lock().unwrap().write_all(&a);
                        }
                        log.frames.push((f, at));
                    }
                }
                log.trailing = log.raw.len() - pos;
                log
            });
            Peer {
                writer,
                reader,
                masked,
                key: 0x1234_5678,
            }
        }

        /// A whole frame from this peer (masked if it is the client).
        pub fn frame(&mut self, b0: u8, payload: &[u8]) -> Vec<u8> {
            self.key = self.key.wrapping_mul(2_654_435_761).wrapping_add(1);
            frame(b0, self.masked.then(|| self.key.to_be_bytes()), payload)
        }

        pub fn send(&self, bytes: &[u8]) {
            self.writer.lock().unwrap().write_all(bytes).unwrap();
        }

        pub fn shutdown_write(&self) {
            self.writer.lock().unwrap().shutdown_write();
        }

        pub fn log(self) -> PeerLog {
            self.reader.join().unwrap()
        }
    }

    pub(super) struct RunningWs {
        handle: JoinHandle<Stats>,
        /// 0: no, 1: now, 2: going away, 3: shutdown (hard stop).
        stop: Arc<AtomicU8>,
        asked: Arc<AtomicU64>,
    }

    impl RunningWs {
        fn join(self) -> Stats {
            self.handle.join().unwrap()
        }
    }

    pub(super) fn ws_config(idle_ms: i32, ping_ms: i32, idle_close: bool) -> Config {
        let mut c = Config::new(idle_ms, 50, true).with_websocket(ping_ms, idle_close, 0xC0DE);
        c.close_wait_ms = 600;
        c
    }

    pub(super) fn spawn_ws<C, B>(
        client: C,
        backend: B,
        cfg: Config,
        bufs: (usize, usize),
        initial: (Vec<u8>, Vec<u8>),
    ) -> RunningWs
    where
        C: Endpoint + Send + 'static,
        B: Endpoint + Send + 'static,
    {
        let stop = Arc::new(AtomicU8::new(0));
        let asked = Arc::new(AtomicU64::new(0));
        let (stop2, asked2) = (stop.clone(), asked.clone());
        let handle = thread::spawn(move || {
            let (mut client, mut backend) = (client, backend);
            let mut cmem = vec![0u8; bufs.0];
            cmem[..initial.0.len()].copy_from_slice(&initial.0);
            let mut bmem = vec![0u8; bufs.1];
            bmem[..initial.1.len()].copy_from_slice(&initial.1);
            let cbuf = Buffer::new(&mut cmem, initial.0.len()).unwrap();
            let bbuf = Buffer::new(&mut bmem, initial.1.len()).unwrap();
            run(&mut client, cbuf, &mut backend, bbuf, &cfg, || {
                asked2.fetch_add(1, Ordering::Relaxed);
                match stop2.load(Ordering::Relaxed) {
                    0 => Stop::No,
                    1 => Stop::Now,
                    3 => Stop::Shutdown,
                    _ => Stop::GoingAway,
                }
            })
        });
        RunningWs {
            handle,
            stop,
            asked,
        }
    }

    /// A WebSocket tunnel between two peers (client masking) over fresh
    /// socket pairs, with empty buffers to start; `answer`: the peers answer
    /// a Close (they never answer Pings).
    fn ws_tunnel(
        pair: fn() -> (Sock, Sock),
        answer: bool,
        cfg: Config,
        bufs: (usize, usize),
    ) -> (Peer, Peer, RunningWs) {
        let (cf, cn) = pair();
        let (bf, bn) = pair();
        let cp = Peer::new(cf, true, false, answer);
        let bp = Peer::new(bf, false, false, answer);
        (cp, bp, spawn_ws(raw(cn), raw(bn), cfg, bufs, (vec![], vec![])))
    }

    /// Writes `data` in random pieces, now and then pausing, so that the
    /// tunnel reads it split anywhere.
    fn split_send(p: &Peer, data: &[u8], seed: u64) {
        let cuts = random_bytes(data.len() / 64 + 8, seed);
        let mut off = 0;
        let mut i = 0;
        while off < data.len() {
            let c = cuts[i % cuts.len()] as usize;
            i += 1;
            let n = match c % 4 {
                0 => 1 + c % 3,
                1 => 1 + c * 7,
                _ => 1 + c * 131,
            }
            .min(data.len() - off);
            p.send(&data[off..off + n]);
            off += n;
            if c % 16 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// A stream of `n` messages from a peer (random fragmentation, sizes
    /// from 0 to `big`, Pings and Pongs of its own in between).
    fn messages(p: &mut Peer, n: usize, big: usize, seed: u64) -> Vec<u8> {
        let r = random_bytes(n * 8 + 8, seed);
        let mut v = Vec::new();
        for i in 0..n {
            let frags = 1 + r[i * 8] as usize % 3;
            for f in 0..frags {
                let op = if f == 0 { 1 + r[i * 8 + 1] % 2 } else { 0 };
                let fin = if f + 1 == frags { 0x80 } else { 0 };
                let len = match r[i * 8 + 2 + f] % 8 {
                    0 => 0,
                    1 if big > 0 => big,
                    2 => 126,
                    3 => 65536 % (big + 1),
                    _ => r[i * 8 + 5] as usize,
                };
                let payload = random_bytes(len, seed + i as u64);
                v.extend(p.frame(fin | op, &payload));
                if r[i * 8 + 6] % 5 == 0 {
                    v.extend(p.frame(0x89, b"app-ping"));
                }
                if r[i * 8 + 7] % 7 == 0 {
                    v.extend(p.frame(0x8a, b"app-pong"));
                }
            }
        }
        v
    }

    fn both_ways(client: Sock, backend: Sock, near: (Sock, Sock), raw_ends: bool, bufs: (usize, usize)) {
        let mut cp = Peer::new(client, true, false, false);
        let mut bp = Peer::new(backend, false, false, false);
        let pipelined = cp.frame(0x81, b"pipelined");
        let after_101 = bp.frame(0x82, b"after-101");
        let cfg = ws_config(0, 0, false);
        let (cn, bn) = near;
        let t = if raw_ends {
            spawn_ws(raw(cn), raw(bn), cfg, bufs, (pipelined.clone(), after_101.clone()))
        } else {
            spawn_ws(
                Hidden::new(cn, 700),
                Hidden::new(bn, 333),
                cfg,
                bufs,
                (pipelined.clone(), after_101.clone()),
            )
        };
        let mut cdata = messages(&mut cp, 120, 300_000, 5);
        let mut bdata = messages(&mut bp, 150, 200_000, 6);
        cdata.extend(cp.frame(0x88, &1000u16.to_be_bytes()));
        bdata.extend(bp.frame(0x88, b"\x0f\xa0bye"));
        thread::scope(|s| {
            s.spawn(|| split_send(&cp, &cdata, 1));
            s.spawn(|| split_send(&bp, &bdata, 2));
        });
        cp.shutdown_write();
        bp.shutdown_write();
        let s = t.join();
        let (cl, bl) = (cp.log(), bp.log());
        let mut want_b = pipelined;
        want_b.extend(&cdata);
        let mut want_c = after_101;
        want_c.extend(&bdata);
        assert!(bl.raw == want_b, "client->backend: {} of {}", bl.raw.len(), want_b.len());
        assert!(cl.raw == want_c, "backend->client: {} of {}", cl.raw.len(), want_c.len());
        assert_eq!(s.reason, EndReason::Closed);
        let count = |l: &PeerLog| {
            l.frames
                .iter()
                .filter(|(f, _)| f.fin && f.op <= 2)
                .count() as u64
        };
        assert_eq!(s.ws.messages_from_client, count(&bl));
        assert_eq!(s.ws.messages_from_backend, count(&cl));
        assert_eq!(s.ws.messages_from_client, 121);
        assert_eq!(s.ws.messages_from_backend, 151);
        assert_eq!(s.ws.close_code_from_client, Some(1000));
        assert_eq!(s.ws.close_code_from_backend, Some(4000));
        assert!(!s.ws.lost_sync_client && !s.ws.lost_sync_backend);
        assert_eq!((s.ws.pings_sent, s.ws.pongs_consumed), (0, 0));
        assert_eq!(s.bytes_to_backend, want_b.len() as u64);
        assert_eq!(s.bytes_to_client, want_c.len() as u64);
        if raw_ends {
            // Long payloads were spliced, headers were not.
            assert!(
                s.spliced > (want_b.len() + want_c.len()) as u64 / 2,
                "{} of {} spliced",
                s.spliced,
                want_b.len() + want_c.len()
            );
        } else {
            assert_eq!(s.spliced, 0);
        }
    }

    #[test]
    fn messages_and_close_codes_with_random_splits() {
        for (i, (raw_ends, bufs)) in [
            (true, (65536, 65536)),
            (true, (100, 37)),
            (false, (65536, 4096)),
            (false, (31, 64)),
        ]
        .into_iter()
        .enumerate()
        {
            let pair = if i % 2 == 0 { tcp_pair } else { unix_pair };
            let (cf, cn) = pair();
            let (bf, bn) = pair();
            both_ways(cf, bf, (cn, bn), raw_ends, bufs);
        }
    }

    #[test]
    fn close_without_code_and_no_close() {
        let (mut cp, bp, t) =
            ws_tunnel(unix_pair, false, ws_config(0, 0, false), (4096, 4096));
        let c = cp.frame(0x88, b"");
        cp.send(&c);
        cp.shutdown_write();
        bp.shutdown_write();
        let s = t.join();
        assert_eq!(s.ws.close_code_from_client, Some(1005));
        assert_eq!(s.ws.close_code_from_backend, None);
        assert_eq!(bp.log().raw, c);
        cp.log();
    }

    /// Both far ends got valid frames ending with the tunnel's Close 1001
    /// (masked towards the backend), nothing after it.
    fn got_going_away(cl: &PeerLog, bl: &PeerLog) {
        cl.check_valid(false);
        bl.check_valid(true);
        for l in [cl, bl] {
            let last = l.last().expect("a Close");
            assert_eq!(last.op, 8, "{last:?}");
            assert_eq!(last.close_code(), Some(CLOSE_GOING_AWAY));
            assert_eq!(last.payload.len(), 2);
        }
    }

    #[test]
    fn idle_close_frame_to_both_sides() {
        let (mut cp, mut bp, t) =
            ws_tunnel(tcp_pair, false, ws_config(300, 0, true), (8192, 8192));
        let m1 = cp.frame(0x81, b"hello");
        let m2 = bp.frame(0x82, &random_bytes(100_000, 9));
        cp.send(&m1);
        bp.send(&m2);
        let quiet = Instant::now();
        let s = t.join();
        let d = quiet.elapsed();
        assert_eq!(s.reason, EndReason::Idle);
        assert!(d >= Duration::from_millis(250) && d < Duration::from_secs(2), "{d:?}");
        let (cl, bl) = (cp.log(), bp.log());
        got_going_away(&cl, &bl);
        assert_eq!(bl.without(|f| f.op == 8), m1);
        assert_eq!(cl.without(|f| f.op == 8), m2);
        // Injected bytes: 8 towards the backend, 4 towards the client.
        assert_eq!(s.bytes_to_backend, m1.len() as u64 + 8);
        assert_eq!(s.bytes_to_client, m2.len() as u64 + 4);
        assert_eq!((s.ws.messages_from_client, s.ws.messages_from_backend), (1, 1));
        assert_eq!(s.ws.close_code_from_client, None);
    }

    #[test]
    fn idle_close_frame_not_into_a_frame_under_way() {
        // The client stops in the middle of a frame: the backend gets the
        // bytes so far and no Close; the client gets its Close 1001.
        let (mut cp, bp, t) =
            ws_tunnel(unix_pair, false, ws_config(200, 0, true), (8192, 8192));
        let m = cp.frame(0x82, &[7u8; 1000]);
        cp.send(&m[..500]);
        let quiet = Instant::now();
        let s = t.join();
        let d = quiet.elapsed();
        assert_eq!(s.reason, EndReason::Idle);
        // The idle timeout, then the bound on finding a boundary.
        assert!(d >= Duration::from_millis(750) && d < Duration::from_secs(3), "{d:?}");
        // Waiting for a boundary is not a busy loop (ticks every 50 ms).
        assert!(s.polls < 60, "{} polls", s.polls);
        let (cl, bl) = (cp.log(), bp.log());
        assert_eq!(bl.raw, &m[..500]);
        cl.check_valid(false);
        assert_eq!(cl.frames.len(), 1);
        assert_eq!(cl.last().unwrap().close_code(), Some(CLOSE_GOING_AWAY));
    }

    #[test]
    fn idle_close_frame_not_after_the_peers_close() {
        // The backend sent its Close (the client did not answer): only the
        // backend gets the tunnel's Close 1001.
        let (cp, mut bp, t) =
            ws_tunnel(unix_pair, false, ws_config(200, 0, true), (8192, 8192));
        let c = bp.frame(0x88, &1000u16.to_be_bytes());
        bp.send(&c);
        let s = t.join();
        assert_eq!(s.reason, EndReason::Idle);
        let (cl, bl) = (cp.log(), bp.log());
        assert_eq!(cl.raw, c);
        bl.check_valid(true);
        assert_eq!(bl.frames.len(), 1);
        assert_eq!(bl.last().unwrap().close_code(), Some(CLOSE_GOING_AWAY));
        assert_eq!(s.ws.close_code_from_backend, Some(1000));
    }

    #[test]
    fn pings_at_boundaries_and_pongs_swallowed() {
        let (cf, cn) = tcp_pair();
        let (bf, bn) = tcp_pair();
        let mut cp = Peer::new(cf, true, true, false);
        let mut bp = Peer::new(bf, false, true, false);
        let t = spawn_ws(raw(cn), raw(bn), ws_config(0, 100, false), (8192, 8192), (vec![], vec![]));
        // The peers' own Pings and Pongs pass (their answers too).
        let mut cdata = cp.frame(0x81, b"first");
        cdata.extend(cp.frame(0x8a, b"unsolicited"));
        cp.send(&cdata);
        thread::sleep(Duration::from_millis(550));
        // Silent for 550 ms: pings every 100 ms or so, all answered.
        let m = bp.frame(0x82, &random_bytes(300_000, 3));
        bp.send(&m);
        thread::sleep(Duration::from_millis(350));
        cp.shutdown_write();
        bp.shutdown_write();
        let s = t.join();
        assert_eq!(s.reason, EndReason::Closed);
        let (cl, bl) = (cp.log(), bp.log());
        cl.check_valid(false);
        bl.check_valid(true);
        // The tunnel's Pings reached both, masked towards the backend; its
        // Pongs never did: each far end sees the other's bytes exactly,
        // plus Pings.
        assert_eq!(bl.without(|f| f.op == 9), cdata);
        assert_eq!(cl.without(|f| f.op == 9), m);
        assert_eq!((cl.count(10), bl.count(10)), (0, 1), "the client's own Pong only");
        let (pc, pb) = (cl.count(9), bl.count(9));
        assert!(pc >= 4 && pb >= 4, "{pc} and {pb} pings");
        assert_eq!(s.ws.pings_sent as usize, pc + pb);
        // Every ping but the last ones was answered, and swallowed.
        assert!(s.ws.pongs_consumed as usize + 2 >= pc + pb, "{s:?}");
        // Bytes: what came in, less the Pongs taken out (14 bytes from the
        // client, 10 from the backend), plus the Pings put in.
        assert_eq!(s.bytes_to_backend, bl.raw.len() as u64);
        assert_eq!(s.bytes_to_client, cl.raw.len() as u64);
        let from_c = s.bytes_from_client + 14 * pb as u64 - s.bytes_to_backend;
        let from_b = s.bytes_from_backend + 10 * pc as u64 - s.bytes_to_client;
        assert_eq!((from_c % 14, from_b % 10), (0, 0));
        assert_eq!(from_c / 14 + from_b / 10, u64::from(s.ws.pongs_consumed));
        // Pings are 8-byte tokens, all different.
        let mut tokens: Vec<_> = cl
            .frames
            .iter()
            .chain(bl.frames.iter())
            .filter(|(f, _)| f.op == 9)
            .map(|(f, _)| f.payload.clone())
            .collect();
        assert!(tokens.iter().all(|p| p.len() == 8));
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), pc + pb);
        // Not during the traffic (300 KB take some ms), nor too often.
        assert!(pc <= 10 && pb <= 10, "{pc} and {pb} pings");
        assert_eq!(s.ws.messages_from_backend, 1);
    }

    #[test]
    fn ping_waits_for_the_frame_under_way() {
        let (cf, cn) = unix_pair();
        let (bf, bn) = unix_pair();
        let mut cp = Peer::new(cf, true, true, false);
        let bp = Peer::new(bf, false, true, false);
        let t = spawn_ws(raw(cn), raw(bn), ws_config(0, 300, false), (8192, 8192), (vec![], vec![]));
        let m = cp.frame(0x82, &random_bytes(20_000, 4));
        let done;
        {
            // The client stops in the middle of a frame for 450 ms: the
            // Pings go out after 300 ms of silence, the backend's must wait
            // for the frame's end. The client cannot answer its own before
            // (it holds its writer), but does within the interval.
            let mut w = cp.writer.lock().unwrap();
            w.write_all(&m[..7000]).unwrap();
            thread::sleep(Duration::from_millis(450));
            done = Instant::now();
            w.write_all(&m[7000..]).unwrap();
        }
        thread::sleep(Duration::from_millis(100));
        cp.shutdown_write();
        bp.shutdown_write();
        let s = t.join();
        assert_eq!(s.reason, EndReason::Closed);
        let (cl, bl) = (cp.log(), bp.log());
        bl.check_valid(true);
        cl.check_valid(false);
        // The backend's stream: the whole frame, then Ping(s), none inside.
        assert_eq!(bl.frames[0].0.raw, m);
        assert!(bl.count(9) >= 1);
        assert!(bl.frames[1].1 >= done);
        // The client got its Ping while it was mid-frame, answered after.
        assert!(cl.count(9) >= 1);
        assert!(cl.frames[0].1 < done);
        assert_eq!(s.ws.pings_sent as usize, cl.count(9) + bl.count(9));
        assert!(s.ws.pongs_consumed >= 2, "{s:?}");
        assert!(s.polls < 100, "{} polls", s.polls);
        assert_eq!(bl.without(|f| f.op == 9), m);
    }

    #[test]
    fn ping_timeout_when_a_side_does_not_answer() {
        let (cf, cn) = unix_pair();
        let (bf, bn) = unix_pair();
        let cp = Peer::new(cf, true, true, false);
        let bp = Peer::new(bf, false, false, false);
        let started = Instant::now();
        let t = spawn_ws(raw(cn), raw(bn), ws_config(0, 150, false), (8192, 8192), (vec![], vec![]));
        let s = t.join();
        let d = started.elapsed();
        assert_eq!(s.reason, EndReason::PingTimeout);
        // One interval of silence, one for the answer.
        assert!(d >= Duration::from_millis(280) && d < Duration::from_secs(2), "{d:?}");
        let (cl, bl) = (cp.log(), bp.log());
        got_going_away(&cl, &bl);
        assert_eq!((cl.count(9), bl.count(9)), (1, 1));
        assert_eq!(s.ws.pings_sent, 2);
        assert_eq!(s.ws.pongs_consumed, 1);
        // The client's answer was swallowed: the backend saw only ours.
        assert_eq!(bl.count(10), 0);
    }

    /// One text message each way, then should_stop answers `stop` (2: going
    /// away, 3: shutdown): the tunnel ends with GoingAway, each peer got its
    /// message and then the module's Close 1001. Returns the stats and how
    /// long the tunnel took to end once asked.
    fn one_message_each_then(stop: u8, answer: bool, cfg: Config) -> (Stats, Duration) {
        let (mut cp, mut bp, t) = ws_tunnel(tcp_pair, answer, cfg, (8192, 8192));
        let m1 = cp.frame(0x81, b"up");
        let m2 = bp.frame(0x81, b"down");
        cp.send(&m1);
        bp.send(&m2);
        thread::sleep(Duration::from_millis(100));
        t.stop.store(stop, Ordering::Relaxed);
        let asked = Instant::now();
        let s = t.join();
        let d = asked.elapsed();
        assert_eq!(s.reason, EndReason::GoingAway);
        let (cl, bl) = (cp.log(), bp.log());
        got_going_away(&cl, &bl);
        assert_eq!(bl.without(|f| f.op == 8), m1);
        assert_eq!(cl.without(|f| f.op == 8), m2);
        (s, d)
    }

    #[test]
    fn going_away_waits_for_the_answers() {
        let (s, d) = one_message_each_then(2, true, ws_config(0, 0, false));
        // Both answered at once: well before the bound.
        assert!(d < Duration::from_millis(500), "{d:?}");
        // Their answers were not relayed (each got one Close, ours).
        assert_eq!(s.ws.close_code_from_client, Some(CLOSE_GOING_AWAY));
        assert_eq!(s.ws.close_code_from_backend, Some(CLOSE_GOING_AWAY));
        assert_eq!((s.ws.messages_from_client, s.ws.messages_from_backend), (1, 1));
    }

    #[test]
    fn going_away_is_bounded_and_stop_now_still_cuts() {
        // Nobody answers: the tunnel ends at the bound.
        let (cp, bp, t) = ws_tunnel(unix_pair, false, ws_config(0, 0, false), (8192, 8192));
        thread::sleep(Duration::from_millis(60));
        t.stop.store(2, Ordering::Relaxed);
        let asked = Instant::now();
        let s = t.join();
        let d = asked.elapsed();
        assert_eq!(s.reason, EndReason::GoingAway);
        assert!(d >= Duration::from_millis(550) && d < Duration::from_secs(2), "{d:?}");
        got_going_away(&cp.log(), &bp.log());

        // Now after GoingAway: at once; should_stop is still asked.
        let mut cfg = ws_config(0, 0, false);
        cfg.close_wait_ms = 10_000;
        let (cp, bp, t) = ws_tunnel(unix_pair, false, cfg, (8192, 8192));
        t.stop.store(2, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(300));
        let before = t.asked.load(Ordering::Relaxed);
        assert!(before >= 3, "{before}");
        t.stop.store(1, Ordering::Relaxed);
        let cut = Instant::now();
        let s = t.join();
        assert!(cut.elapsed() < Duration::from_millis(500));
        assert_eq!(s.reason, EndReason::Stopped);
        got_going_away(&cp.log(), &bp.log());
    }

    #[test]
    fn shutdown_says_going_away_at_once_without_waiting_for_answers() {
        // Peers that never answer, a long close wait: a hard stop still
        // ends the tunnel as soon as both Closes are out.
        let mut cfg = ws_config(0, 0, false);
        cfg.close_wait_ms = 10_000;
        let (_, d) = one_message_each_then(3, false, cfg);
        assert!(d < Duration::from_millis(400), "{d:?}");

        // A drain under way (waiting for answers that never come) is cut
        // short by a hard stop.
        let mut cfg = ws_config(0, 0, false);
        cfg.close_wait_ms = 10_000;
        let (cp, bp, t) = ws_tunnel(unix_pair, false, cfg, (8192, 8192));
        t.stop.store(2, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(300));
        t.stop.store(3, Ordering::Relaxed);
        let cut = Instant::now();
        let s = t.join();
        assert!(cut.elapsed() < Duration::from_millis(400), "{:?}", cut.elapsed());
        assert_eq!(s.reason, EndReason::GoingAway);
        got_going_away(&cp.log(), &bp.log());

        // A plain tunnel: a stop.
        let (_cf, cn) = unix_pair();
        let (_bf, bn) = unix_pair();
        let t = spawn_ws(raw(cn), raw(bn), Config::new(0, 50, true), (64, 64), (vec![], vec![]));
        t.stop.store(3, Ordering::Relaxed);
        assert_eq!(t.join().reason, EndReason::Stopped);
    }

    #[test]
    fn going_away_on_a_plain_tunnel_is_a_stop() {
        let (cf, cn) = unix_pair();
        let (bf, bn) = unix_pair();
        let mut cfg = Config::new(0, 50, true);
        cfg.close_wait_ms = 10_000;
        let t = spawn_ws(raw(cn), raw(bn), cfg, (64, 64), (vec![], vec![]));
        t.stop.store(2, Ordering::Relaxed);
        let s = t.join();
        assert_eq!(s.reason, EndReason::Stopped);
        assert_eq!(s.ws, WsStats::default());
        drop((cf, bf));
    }

    #[test]
    fn lost_sync_relays_untouched() {
        // The client's stream breaks the protocol: its bytes keep flowing
        // untouched, nothing is put into it, its side gets no Ping (its
        // answer could not be seen); the backend's stream is tracked on.
        let (cf, cn) = unix_pair();
        let (bf, bn) = unix_pair();
        let mut cp = Peer::new(cf, true, true, false);
        // (It parses the garbage as frames: it must not answer them.)
        let mut bp = Peer::new(bf, false, false, false);
        let t = spawn_ws(raw(cn), raw(bn), ws_config(400, 100, true), (4096, 4096), (vec![], vec![]));
        let mut cdata = cp.frame(0x81, b"ok");
        cdata.extend([0x83, 0x80, 1, 2, 3, 4]); // reserved opcode 3
        cdata.extend(random_bytes(50_000, 8));
        split_send(&cp, &cdata, 3);
        let m = bp.frame(0x81, b"still tracked");
        bp.send(&m);
        let s = t.join();
        assert_eq!(s.reason, EndReason::Idle);
        let (cl, bl) = (cp.log(), bp.log());
        assert!(bl.raw == cdata, "{} of {}", bl.raw.len(), cdata.len());
        cl.check_valid(false);
        assert_eq!(cl.frames.len(), 2, "{:?}", cl.frames);
        assert_eq!(cl.frames[0].0.raw, m);
        assert_eq!(cl.last().unwrap().close_code(), Some(CLOSE_GOING_AWAY));
        assert!(s.ws.lost_sync_client && !s.ws.lost_sync_backend);
        assert_eq!(s.ws.pings_sent, 0);
        assert_eq!((s.ws.messages_from_client, s.ws.messages_from_backend), (1, 1));
    }

    // ---- Limits (message size, message rate, lifetime) ----

    fn closes(l: &PeerLog) -> Vec<u16> {
        l.frames.iter().filter(|(f, _)| f.op == 8).filter_map(|(f, _)| f.close_code()).collect()
    }

    #[test]
    fn message_too_big_is_cut_before_its_header_with_1009_back_and_1001_on() {
        for split in [false, true] {
            let mut cfg = ws_config(0, 0, true);
            cfg.max_message_size = Some(1000);
            let (mut cp, mut bp, t) = ws_tunnel(tcp_pair, false, cfg, (8192, 8192));
            let ok = cp.frame(0x81, &[b'a'; 1000]);
            // A fragmented message: 600 + 600 > 1000: cut before the second.
            let first = cp.frame(0x01, &[b'b'; 600]);
            let second = cp.frame(0x80, &[b'c'; 600]);
            cp.send(&ok);
            cp.send(&first);
            if split {
                // The header in two pieces, a pause between them.
                thread::sleep(Duration::from_millis(50));
                cp.send(&second[..3]);
                thread::sleep(Duration::from_millis(50));
                cp.send(&second[3..]);
            } else {
                cp.send(&second);
            }
            let s = t.join();
            assert_eq!(s.reason, EndReason::MessageTooBig);
            let (cl, bl) = (cp.log(), bp.log());
            assert_eq!(closes(&cl), vec![1009], "to the sender");
            assert_eq!(closes(&bl), vec![1001], "to the other side");
            bl.check_valid(true);
            // The backend got the good message and the first fragment, then
            // the Close: nothing of the frame that broke the limit.
            let mut want = ok.clone();
            want.extend(&first);
            assert_eq!(bl.without(|f| f.op == 8), want);
            assert_eq!(s.ws.messages_from_client, 1);
            assert_eq!(s.ws.largest_message_from_client, 1200);
        }
    }

    #[test]
    fn message_too_big_from_the_backend() {
        let mut cfg = ws_config(0, 0, true);
        cfg.max_message_size = Some(100);
        let (mut cp, mut bp, t) = ws_tunnel(tcp_pair, false, cfg, (8192, 8192));
        let small = bp.frame(0x82, &[7; 100]);
        let big = bp.frame(0x82, &[8; 100_000]);
        bp.send(&small);
        bp.send(&big);
        let s = t.join();
        assert_eq!(s.reason, EndReason::MessageTooBig);
        let (cl, bl) = (cp.log(), bp.log());
        assert_eq!(closes(&bl), vec![1009]);
        assert_eq!(closes(&cl), vec![1001]);
        assert_eq!(cl.without(|f| f.op == 8), small);
        assert_eq!(s.ws.largest_message_from_backend, 100_000);
    }

    #[test]
    fn control_frames_and_limits_off_pass() {
        let mut cfg = ws_config(0, 0, true);
        cfg.max_message_size = Some(10);
        let (mut cp, mut bp, t) = ws_tunnel(tcp_pair, false, cfg, (8192, 8192));
        // A Ping of 100 bytes is not a message: it passes.
        let ping = cp.frame(0x89, &[1; 100]);
        let msg = cp.frame(0x81, b"0123456789");
        cp.send(&ping);
        cp.send(&msg);
        let close = cp.frame(0x88, &1000u16.to_be_bytes());
        cp.send(&close);
        let bclose = bp.frame(0x88, &1000u16.to_be_bytes());
        bp.send(&bclose);
        let s = t.join();
        assert_eq!(s.reason, EndReason::Closed);
        let bl = bp.log();
        let mut want = ping.clone();
        want.extend(&msg);
        want.extend(&close);
        assert_eq!(bl.raw, want);
        drop(cp);
    }

    #[test]
    fn message_rate_burst_then_1008() {
        let mut cfg = ws_config(0, 0, true);
        cfg.max_message_rate = Some((2, 5));
        let (mut cp, mut bp, t) = ws_tunnel(tcp_pair, false, cfg, (8192, 8192));
        let mut sent = Vec::new();
        for i in 0..20u8 {
            let m = cp.frame(0x81, &[b'0' + i % 10]);
            sent.push(m.clone());
            cp.send(&m);
        }
        let s = t.join();
        assert_eq!(s.reason, EndReason::RateLimited);
        let (cl, bl) = (cp.log(), bp.log());
        assert_eq!(closes(&cl), vec![1008]);
        assert_eq!(closes(&bl), vec![1001]);
        // The burst (5) passed, maybe one more from the refill, no more.
        let got = bl.frames.iter().filter(|(f, _)| f.op == 1).count();
        assert!((5..=6).contains(&got), "{got}");
        assert_eq!(bl.without(|f| f.op == 8), sent[..got].concat());
    }

    #[test]
    fn message_rate_within_the_limit_passes() {
        let mut cfg = ws_config(0, 0, true);
        cfg.max_message_rate = Some((50, 3));
        let (mut cp, mut bp, t) = ws_tunnel(tcp_pair, false, cfg, (8192, 8192));
        for _ in 0..10 {
            let m = cp.frame(0x82, b"x");
            cp.send(&m);
            thread::sleep(Duration::from_millis(40));
        }
        let close = cp.frame(0x88, &1000u16.to_be_bytes());
        cp.send(&close);
        let bclose = bp.frame(0x88, &1000u16.to_be_bytes());
        bp.send(&bclose);
        let s = t.join();
        assert_eq!(s.reason, EndReason::Closed);
        assert_eq!(s.ws.messages_from_client, 10);
        drop((cp.log(), bp.log()));
    }

    #[test]
    fn lifetime_ends_in_its_last_tenth_with_1001() {
        let mut cfg = ws_config(0, 0, true);
        cfg.max_lifetime_ms = Some(1000);
        let started = Instant::now();
        let (cp, bp, t) = ws_tunnel(tcp_pair, true, cfg, (8192, 8192));
        let s = t.join();
        let d = started.elapsed();
        assert_eq!(s.reason, EndReason::Lifetime);
        assert!(d >= Duration::from_millis(880) && d < Duration::from_millis(1800), "{d:?}");
        let (cl, bl) = (cp.log(), bp.log());
        got_going_away(&cl, &bl);
    }

    #[test]
    fn ping_round_trips_are_measured() {
        let cfg = ws_config(0, 150, true);
        let (cf, cn) = tcp_pair();
        let (bf, bn) = tcp_pair();
        let cp = Peer::new(cf, true, true, true);
        let mut bp = Peer::new(bf, false, true, true);
        let t = spawn_ws(raw(cn), raw(bn), cfg, (8192, 8192), (vec![], vec![]));
        thread::sleep(Duration::from_millis(700));
        let close = bp.frame(0x88, &1000u16.to_be_bytes());
        bp.send(&close);
        let s = t.join();
        assert!(s.ws.pongs_consumed >= 2, "{s:?}");
        assert!(s.ws.ping_rtt_client_last_ms.is_some() && s.ws.ping_rtt_backend_last_ms.is_some(), "{s:?}");
        assert!(s.ws.ping_rtt_client_max_ms.unwrap() < 100);
        drop((cp.log(), bp.log()));
    }
}
