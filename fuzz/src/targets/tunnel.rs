//! The tunnel state machine (`tunnel::run`) driven by random event
//! sequences through two in-memory endpoints.
//!
//! Every endpoint call takes its outcome from the fuzzer's bytes: reads give
//! data of a random size, AGAIN, EOF or an error; writes take all, part,
//! nothing (AGAIN) or fail; shutdowns succeed or fail; `hidden_input` is
//! random; and what `poll()` reports is chosen by the descriptor each
//! endpoint hands out for the round: always ready (/dev/null), never ready
//! (an empty pipe), POLLHUP (a pipe without writer), POLLERR (a pipe without
//! reader) or POLLNVAL (a closed descriptor number). `should_stop` is random
//! too. Once the fuzzer's bytes run out the endpoints become well-behaved
//! (reads end, writes take everything, descriptors are ready) and the tunnel
//! must end within a bounded number of rounds.
//!
//! Invariants: every byte a destination receives is the next byte its
//! source produced (byte-exact, in order, once); the stats count exactly
//! what moved; a source is never read after its EOF or error; a destination
//! is never written after its shutdown and is shut at most once, only after
//! the other side's EOF and its last byte; an error end names a side that
//! actually failed; `Closed` with half-close means everything was delivered
//! both ways; no panic; no endless loop.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::OnceLock;

use wstunnel_core::tunnel::{self, Buffer, Config, EndReason, Endpoint, Io, Side};

use crate::Input;

/// Descriptors whose poll() result is known.
struct Fds {
    ready: RawFd,
    idle: RawFd,
    hup: RawFd,
    err: RawFd,
    nval: RawFd,
}

fn fds() -> &'static Fds {
    static FDS: OnceLock<Fds> = OnceLock::new();
    FDS.get_or_init(|| {
        // SAFETY: plain libc calls on local arrays and constant paths.
        unsafe {
            let ready = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            let mut idle = [0; 2];
            let mut hup = [0; 2];
            let mut err = [0; 2];
            assert_eq!(libc::pipe(idle.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(hup.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(err.as_mut_ptr()), 0);
            libc::close(hup[1]);
            libc::close(err[0]);
            // A descriptor number that is certainly not open.
            let nval = libc::dup(ready);
            libc::close(nval);
            assert!(ready >= 0);
            Fds {
                ready,
                idle: idle[0],
                hup: hup[0],
                err: err[1],
                nval,
            }
        }
    })
}

/// The byte number `i` of `side`'s stream (both directions distinct, and
/// not periodic at any small power of two).
fn stream_byte(side: Side, i: u64) -> u8 {
    let salt: u64 = if side == Side::Client { 0x9e37 } else { 0x7f4a };
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i >> 7) ^ salt;
    (x >> 29) as u8 ^ (i as u8)
}

/// Rounds allowed once the script has run out.
const MAX_TAIL_ROUNDS: u64 = 2_000;
/// Never-ready descriptors handed out per input (each costs up to a tick).
const MAX_IDLE_FDS: u32 = 6;

struct Script<'a> {
    inp: Input<'a>,
    idle_fds: u32,
    tail_rounds: u64,
    stop_calls: u64,
}

impl Script<'_> {
    fn live(&self) -> bool {
        !self.inp.is_empty()
    }
}

/// What one endpoint saw and did.
#[derive(Default, Debug)]
struct Side_ {
    /// Bytes this endpoint's source produced (including the pending ones
    /// placed in the buffer at the start).
    produced: u64,
    /// Bytes written to this endpoint (from the other side's stream).
    received: u64,
    eof_given: bool,
    read_failed: bool,
    shut: bool,
    /// Some operation failed or poll reported POLLERR/POLLNVAL/POLLHUP.
    failed: bool,
    /// poll reported POLLHUP (the tunnel may take that as the end of input).
    hup: bool,
    hidden: bool,
}

struct Ep<'a> {
    side: Side,
    script: Rc<RefCell<Script<'a>>>,
    st: Rc<RefCell<Side_>>,
    peer: Rc<RefCell<Side_>>,
}

const ERRNOS: [i32; 4] = [libc::ECONNRESET, libc::EPIPE, libc::EIO, 0];

impl Endpoint for Ep<'_> {
    fn fd(&self) -> i32 {
        let mut s = self.script.borrow_mut();
        if !s.live() {
            s.tail_rounds += 1;
            assert!(
                s.tail_rounds < MAX_TAIL_ROUNDS,
                "the tunnel keeps polling well-behaved endpoints: endless loop"
            );
            return fds().ready;
        }
        let f = fds();
        match s.inp.u8() % 16 {
            0..=9 => f.ready,
            10 | 11 => {
                if s.idle_fds < MAX_IDLE_FDS {
                    s.idle_fds += 1;
                    f.idle
                } else {
                    f.ready
                }
            }
            12 | 13 => {
                let mut st = self.st.borrow_mut();
                st.failed = true;
                st.hup = true;
                f.hup
            }
            14 => {
                self.st.borrow_mut().failed = true;
                f.err
            }
            _ => {
                self.st.borrow_mut().failed = true;
                f.nval
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Io {
        assert!(!buf.is_empty(), "read with an empty buffer");
        let mut st = self.st.borrow_mut();
        assert!(!st.eof_given, "{:?} read again after EOF", self.side);
        assert!(!st.read_failed, "{:?} read again after an error", self.side);
        let mut s = self.script.borrow_mut();
        let op = if s.live() { s.inp.u8() } else { 255 };
        let io = match op % 8 {
            0..=3 => {
                let max = match op >> 6 {
                    0 => 1,
                    1 => 7,
                    2 => 300,
                    _ => 70_000,
                };
                let n = 1 + s.inp.below(max).min(buf.len() - 1);
                for b in &mut buf[..n] {
                    *b = stream_byte(self.side, st.produced);
                    st.produced += 1;
                }
                Io::Ok(n)
            }
            4 | 5 => Io::Again,
            6 if op != 255 => {
                st.read_failed = true;
                st.failed = true;
                Io::Error(ERRNOS[usize::from(op >> 6)])
            }
            _ => {
                st.eof_given = true;
                Io::Eof
            }
        };
        if matches!(io, Io::Ok(_)) && s.live() {
            st.hidden = s.inp.u8() % 4 == 0;
        } else if !s.live() {
            st.hidden = false;
        }
        io
    }

    fn write(&mut self, buf: &[u8]) -> Io {
        assert!(!buf.is_empty(), "write of nothing");
        let mut st = self.st.borrow_mut();
        assert!(!st.shut, "{:?} written after its shutdown", self.side);
        let mut s = self.script.borrow_mut();
        let op = if s.live() { s.inp.u8() } else { 0 };
        let take = match op % 8 {
            0..=3 => buf.len(),
            4 => 1 + s.inp.below(buf.len()),
            5 => 0,
            6 => return Io::Again,
            _ => {
                st.failed = true;
                return Io::Error(ERRNOS[usize::from(op >> 6)]);
            }
        };
        if take == 0 {
            return Io::Ok(0);
        }
        let peer = self.peer.borrow();
        for &b in &buf[..take] {
            let i = st.received;
            assert!(
                i < peer.produced,
                "{:?} got a byte its peer never produced",
                self.side
            );
            let other = if self.side == Side::Client {
                Side::Backend
            } else {
                Side::Client
            };
            assert_eq!(
                b,
                stream_byte(other, i),
                "{:?} byte {i} wrong or out of order",
                self.side
            );
            st.received += 1;
        }
        Io::Ok(take)
    }

    fn shutdown_write(&mut self) -> Io {
        let mut st = self.st.borrow_mut();
        assert!(!st.shut, "{:?} shut twice", self.side);
        let peer = self.peer.borrow();
        assert!(
            peer.eof_given || peer.hup,
            "{:?} shut before its peer's EOF",
            self.side
        );
        assert_eq!(
            st.received, peer.produced,
            "{:?} shut before the last byte",
            self.side
        );
        st.shut = true;
        let mut s = self.script.borrow_mut();
        if s.live() && s.inp.u8() % 8 == 7 {
            st.failed = true;
            return Io::Error(libc::ENOTCONN);
        }
        Io::Ok(0)
    }

    fn hidden_input(&self) -> bool {
        self.st.borrow().hidden
    }
}

fn buf_size(inp: &mut Input<'_>) -> usize {
    match inp.u8() % 4 {
        0 => 1 + inp.below(4),
        1 => 1 + inp.below(64),
        2 => 1 + inp.below(4096),
        _ => 65_536,
    }
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let half_close = inp.bool();
    let idle = match inp.u8() % 4 {
        0 => Some(1 + u64::from(inp.u8() % 20)),
        _ => None,
    };
    // Config::new and field assignments (not a struct literal): new settings added to the
    // tunnel keep their defaults here.
    let mut cfg = Config::new(0, 1 + i32::from(inp.u8() % 2), half_close);
    cfg.idle_timeout_ms = idle;
    cfg.close_linger_ms = 20;
    let (csize, bsize) = (buf_size(&mut inp), buf_size(&mut inp));
    let cpend = inp.below(csize + 1);
    let bpend = inp.below(bsize + 1);
    let stop_every = inp.u8();

    let script = Rc::new(RefCell::new(Script {
        inp,
        idle_fds: 0,
        tail_rounds: 0,
        stop_calls: 0,
    }));
    let cst = Rc::new(RefCell::new(Side_::default()));
    let bst = Rc::new(RefCell::new(Side_::default()));

    let mut cmem = vec![0u8; csize];
    let mut bmem = vec![0u8; bsize];
    for (mem, pend, st, side) in [
        (&mut cmem, cpend, &cst, Side::Client),
        (&mut bmem, bpend, &bst, Side::Backend),
    ] {
        let mut st = st.borrow_mut();
        for b in &mut mem[..pend] {
            *b = stream_byte(side, st.produced);
            st.produced += 1;
        }
    }
    let mut client = Ep {
        side: Side::Client,
        script: script.clone(),
        st: cst.clone(),
        peer: bst.clone(),
    };
    let mut backend = Ep {
        side: Side::Backend,
        script: script.clone(),
        st: bst.clone(),
        peer: cst.clone(),
    };
    let stopped = RefCell::new(false);
    let should_stop = || {
        let mut s = script.borrow_mut();
        s.stop_calls += 1;
        if !s.live() || stop_every == 0 {
            return false;
        }
        let stop = s.inp.u8() % 64 == 0 && stop_every % 3 == 0;
        *stopped.borrow_mut() |= stop;
        stop
    };
    let stats = tunnel::run(
        &mut client,
        Buffer::new(&mut cmem, cpend).expect("buffer"),
        &mut backend,
        Buffer::new(&mut bmem, bpend).expect("buffer"),
        &cfg,
        should_stop,
    );

    let (c, b) = (cst.borrow(), bst.borrow());
    // The stats are what moved.
    assert_eq!(stats.bytes_from_client, c.produced, "{stats:?}");
    assert_eq!(stats.bytes_from_backend, b.produced, "{stats:?}");
    assert_eq!(stats.bytes_to_backend, b.received, "{stats:?}");
    assert_eq!(stats.bytes_to_client, c.received, "{stats:?}");
    assert!(stats.bytes_to_backend <= stats.bytes_from_client);
    assert!(stats.bytes_to_client <= stats.bytes_from_backend);
    match stats.reason {
        EndReason::Closed => {
            let (c_end, b_end) = (c.eof_given || c.hup, b.eof_given || b.hup);
            assert!(c_end || b_end, "closed without an EOF: {stats:?}");
            assert!(stats.closed_first.is_some());
            if half_close {
                assert!(c_end && b_end && c.shut && b.shut, "{stats:?}");
                assert_eq!(stats.bytes_to_backend, stats.bytes_from_client, "{stats:?}");
                assert_eq!(stats.bytes_to_client, stats.bytes_from_backend, "{stats:?}");
            }
        }
        EndReason::ClientError => {
            assert!(
                c.failed,
                "client error but the client never failed: {stats:?}"
            );
            assert!(stats.closed_first.is_some());
        }
        EndReason::BackendError => {
            assert!(
                b.failed,
                "backend error but the backend never failed: {stats:?}"
            );
            assert!(stats.closed_first.is_some());
        }
        EndReason::Stopped => assert!(*stopped.borrow(), "stopped, yet should_stop never said so"),
        EndReason::Idle => assert!(
            idle.is_some() || (!half_close && (c.eof_given || b.eof_given || c.hup || b.hup)),
            "idle end without an idle timeout or a closing tunnel: {stats:?}"
        ),
        EndReason::PollError => panic!("poll() failed: {stats:?}"),
        EndReason::PingTimeout | EndReason::GoingAway => {
            panic!("a WebSocket ending on a plain tunnel: {stats:?}")
        }
        EndReason::MessageTooBig | EndReason::RateLimited | EndReason::Lifetime => {
            panic!("a limit ended a tunnel that has none: {stats:?}")
        }
    }
}
