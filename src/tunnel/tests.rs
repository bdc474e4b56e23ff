//! Tunnel tests over real sockets: the tunnel runs in a thread between two
//! socket pairs (Unix or TCP), and the test drives the far ends.

use super::*;
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
    use std::os::fd::FromRawFd;
    // SAFETY: timerfd_create takes no pointer; the descriptor it returns is
    // new and owned by nobody else.
    let fd = unsafe {
        libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
    };
    assert!(fd >= 0);
    SpliceRefused {
        sock: raw(s),
        // SAFETY: fd is a fresh descriptor we own.
        timerfd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
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
