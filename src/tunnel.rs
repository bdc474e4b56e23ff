//! The poll-based bidirectional relay.
//!
//! Two directions, client→backend and backend→client, each with one fixed
//! buffer that the caller owns (nothing here allocates or grows). Each
//! direction moves bytes from its *source* endpoint into its buffer and from
//! the buffer to its *destination* endpoint, in order, each byte exactly
//! once.
//!
//! # State of one direction
//!
//! ```text
//!             read data                    write (all or part)
//!   source ─────────────▶ [buffer: pending] ─────────────────▶ destination
//!
//!   readable  may read without waiting (poll said POLLIN/POLLHUP, or the
//!             source may hold input poll cannot see: a TLS filter's
//!             decrypted bytes, httpd's already-buffered input). Cleared by
//!             a read that returns AGAIN (or by any read of a plain socket).
//!   eof       the source said end of input: never read or polled again.
//!   writable  may write without waiting (initially, and after POLLOUT);
//!             cleared by AGAIN or a short write.
//!   shut      (half-close) the destination's write side was shut down
//!             after the source's EOF and the last pending byte.
//! ```
//!
//! # Zero-copy path
//!
//! When both endpoints of a direction are plain sockets with nothing
//! buffered above them ([`Endpoint::splice_fd`]: raw, drained) and the
//! direction's buffer is empty, its bytes go through a pipe instead:
//! `splice(source → pipe)`, `splice(pipe → destination)`, never copied
//! through user space. The pipe plays the buffer's part: at most its
//! capacity is in flight, bytes in it go out before anything read later
//! (the buffer and the pipe never both hold bytes, except after a fallback
//! below, when the buffer holds the pipe's oldest bytes), and "pending"
//! counts both. A splice into a pipe that holds bytes may answer AGAIN
//! because the pipe's slots are used up (it counts page fragments, not
//! bytes): the source is then not polled until the next write out of the
//! pipe. The pipe is made when the first bytes come and closed when the
//! tunnel has been quiet for a poll timeout, so idle tunnels hold none.
//! Where the kernel cannot splice (EINVAL/ENOSYS, e.g. an AF_UNIX backend
//! on old kernels) or no pipe can be made (EMFILE, or its descriptors would
//! come near the process's limit, which httpd needs for accepting
//! connections), the direction falls back to the buffer for good; bytes
//! already in the pipe are read back into the buffer first.
//!
//! A direction is *done* when `eof && pending == 0 && shut`. The tunnel
//! ends normally (`Closed`) when both are done; with `half_close` off, the
//! first EOF starts *closing*: no more reads on either side, pending bytes
//! are flushed (best effort, bounded by the idle timeout or
//! [`CLOSE_LINGER_MS`] without progress), then the tunnel ends. While
//! closing, a failed write towards the side that ended its input only
//! abandons those bytes (that peer is going away); any other failure is
//! reported as usual.
//!
//! Writes are tried as soon as bytes are pending; only a short write or
//! AGAIN makes a direction wait for POLLOUT. A filtered endpoint's write
//! blocks in its callback until done, so it never waits for POLLOUT.
//!
//! # The loop
//!
//! Each round (1) runs a few passes of "flush, read, flush" for both
//! directions without waiting, (2) checks the end conditions and the timers
//! (should_stop every tick, idle timeout), then (3) polls: POLLIN on a source
//! only when it is not known readable, not at EOF and its buffer has room;
//! POLLOUT on a destination only when bytes are pending and the last write
//! could not take them all. A descriptor with nothing to wait for is left
//! out of the poll set entirely (`fd = -1`), so a hung-up socket (POLLHUP
//! is reported whatever the events) cannot wake the loop for nothing. When
//! work is still possible without waiting (a source with hidden input), the
//! poll has timeout 0, so the other direction and the timers are served too.
//!
//! POLLHUP counts as readable/writable: the read then returns EOF or data,
//! the write fails. A source that keeps answering AGAIN after POLLHUP is
//! taken as ended; a destination that answers AGAIN after POLLHUP as broken
//! (EPIPE). POLLERR/POLLNVAL end the tunnel with that side's error. With
//! these rules every wakeup either moves bytes, changes a state that removes
//! the descriptor from the poll set, or ends the tunnel: no busy loop.

use crate::ffi::sys::{self, Errno, Fd, FdIo};

/// Result of one endpoint operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// This many bytes moved (more than 0 for a read).
    Ok(usize),
    /// Nothing now: it would block.
    Again,
    /// Orderly end of input (reads only).
    Eof,
    /// The endpoint is dead; errno when known, else 0.
    Error(Errno),
}

/// One side of the tunnel.
///
/// Reads never block. Writes may take only part of the bytes (or answer
/// `Again`); the tunnel keeps the rest and waits for POLLOUT on [`fd`].
/// A write that blocks until everything is written is fine too.
///
/// [`fd`]: Endpoint::fd
pub trait Endpoint {
    /// The descriptor to poll.
    fn fd(&self) -> Fd;
    /// Read up to `buf.len()` bytes (never called with an empty buffer).
    fn read(&mut self, buf: &mut [u8]) -> Io;
    /// Write from `buf` (never empty); `Io::Ok(n)` with `0 < n <= buf.len()`.
    fn write(&mut self, buf: &[u8]) -> Io;
    /// End the stream in the write direction (FIN, TLS close_notify).
    fn shutdown_write(&mut self) -> Io;
    /// True while the endpoint may hold input that poll() on [`fd`] cannot
    /// see (decrypted TLS records, filter buffers). After a read returned
    /// data such an endpoint is read again, without waiting, until it
    /// answers `Again`.
    ///
    /// [`fd`]: Endpoint::fd
    fn hidden_input(&self) -> bool {
        false
    }
    /// The socket to splice(2) from and to: Some only while the endpoint is
    /// a plain socket with nothing buffered above it (no filters, nothing
    /// left to drain), so that bytes may bypass [`read`] and [`write`].
    ///
    /// [`read`]: Endpoint::read
    /// [`write`]: Endpoint::write
    fn splice_fd(&self) -> Option<Fd> {
        None
    }
}

/// A plain socket in non-blocking mode, read and written directly.
#[derive(Debug)]
pub struct Socket {
    fd: Fd,
}

impl Socket {
    /// Wrap `fd`, which the caller has put in non-blocking mode.
    pub fn new(fd: Fd) -> Self {
        Socket { fd }
    }
}

impl Endpoint for Socket {
    fn fd(&self) -> Fd {
        self.fd
    }

    fn read(&mut self, buf: &mut [u8]) -> Io {
        match sys::read(self.fd, buf) {
            FdIo::Done(0) => Io::Eof,
            FdIo::Done(n) => Io::Ok(n),
            FdIo::WouldBlock => Io::Again,
            FdIo::Failed(e) => Io::Error(e),
        }
    }

    fn write(&mut self, buf: &[u8]) -> Io {
        match sys::write(self.fd, buf) {
            FdIo::Done(0) => Io::Again,
            FdIo::Done(n) => Io::Ok(n),
            FdIo::WouldBlock => Io::Again,
            FdIo::Failed(e) => Io::Error(e),
        }
    }

    fn shutdown_write(&mut self) -> Io {
        match sys::shutdown_write(self.fd) {
            Ok(()) => Io::Ok(0),
            Err(e) => Io::Error(e),
        }
    }

    fn splice_fd(&self) -> Option<Fd> {
        Some(self.fd)
    }
}

/// A direction's buffer: the caller's memory, and how many bytes at its
/// start are already pending (to be written before anything read later).
#[derive(Debug)]
pub struct Buffer<'a> {
    data: &'a mut [u8],
    start: usize,
    end: usize,
}

impl<'a> Buffer<'a> {
    /// None when `data` is empty (that direction could never move a byte)
    /// or `pending > data.len()`.
    pub fn new(data: &'a mut [u8], pending: usize) -> Option<Self> {
        if data.is_empty() || pending > data.len() {
            return None;
        }
        Some(Buffer {
            data,
            start: 0,
            end: pending,
        })
    }

    fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    fn is_full(&self) -> bool {
        self.len() >= self.data.len()
    }

    fn pending(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or(&[])
    }

    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The free room after the pending bytes (moving them to the front
    /// first when the room at the end is used up).
    fn room(&mut self) -> &mut [u8] {
        if self.end >= self.data.len() && self.start > 0 && self.start <= self.end {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.data.get_mut(self.end..).unwrap_or(&mut [])
    }

    fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.data.len());
    }
}

/// Which side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client connection.
    Client,
    /// The backend connection.
    Backend,
}

/// Why the tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Both directions ended normally (or, without half-close, one did and
    /// the pending bytes were flushed).
    Closed,
    /// A read, write or shutdown on the client failed, or poll reported
    /// POLLERR/POLLNVAL for it.
    ClientError,
    /// The same for the backend.
    BackendError,
    /// No byte moved for the idle timeout (or, while closing without
    /// half-close, for the linger time).
    Idle,
    /// should_stop said so.
    Stopped,
    /// poll() itself failed.
    PollError,
}

/// What the tunnel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Read from the client, counting the bytes pending in the client
    /// direction's buffer at the start.
    pub bytes_from_client: u64,
    /// Read from the backend, counting its initially pending bytes.
    pub bytes_from_backend: u64,
    /// Written to the client.
    pub bytes_to_client: u64,
    /// Written to the backend.
    pub bytes_to_backend: u64,
    /// Whose EOF or error came first.
    pub closed_first: Option<Side>,
    /// Why the tunnel ended.
    pub reason: EndReason,
    /// errno of the failure, or 0.
    pub os_error: Errno,
    /// Rounds of the loop that waited in poll() (a diagnostic: tests use it
    /// to prove there is no busy loop).
    pub polls: u64,
    /// Of the bytes read, those that went through a pipe (splice) rather
    /// than the buffer (a diagnostic).
    pub spliced: u64,
    /// Pipes made (a diagnostic).
    pub pipes: u64,
}

/// Without half-close, how long the final flush may go without progress
/// when no (shorter) idle timeout is configured.
pub const CLOSE_LINGER_MS: u64 = 10_000;

/// Default should_stop period.
pub const DEFAULT_TICK_MS: u64 = 1000;

/// Tunnel settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// End after this long without a byte moving; None: never.
    pub idle_timeout_ms: Option<u64>,
    /// should_stop is asked at least this often (> 0).
    pub tick_ms: u64,
    /// Forward one side's EOF as a write shutdown and keep the other
    /// direction running.
    pub half_close: bool,
    /// See [`CLOSE_LINGER_MS`].
    pub close_linger_ms: u64,
}

impl Config {
    /// From the C contract's values: `<= 0` means no idle timeout and the
    /// default tick respectively.
    pub fn new(idle_timeout_ms: i32, tick_ms: i32, half_close: bool) -> Self {
        Config {
            idle_timeout_ms: u64::try_from(idle_timeout_ms).ok().filter(|&v| v > 0),
            tick_ms: u64::try_from(tick_ms)
                .ok()
                .filter(|&v| v > 0)
                .unwrap_or(DEFAULT_TICK_MS),
            half_close,
            close_linger_ms: CLOSE_LINGER_MS,
        }
    }
}

/// Pipe capacity when the kernel cannot tell (16 pages).
const DEFAULT_PIPE_CAP: usize = 16 * 4096;

/// A direction that fills its pipe in one splice asks for a pipe this large
/// (fewer system calls per byte); refused past the per-user pipe limits,
/// which then keeps the default.
const BULK_PIPE_CAP: usize = 256 * 1024;

/// True when descriptor `fd` is in the last eighth (at least 64) of the
/// process's descriptor limit: too close to leave to pipes.
fn near_fd_limit(fd: Fd) -> bool {
    let Some(limit) = sys::max_open_files() else {
        return false;
    };
    let reserve = (limit / 8).max(64);
    u64::try_from(fd).map_or(true, |f| f.saturating_add(reserve) >= limit)
}

/// Which endpoint of a direction failed.
enum Broke {
    Src(Errno),
    Dst(Errno),
}

struct Dir<'a> {
    buf: Buffer<'a>,
    readable: bool,
    /// The last poll reported POLLHUP for the source.
    src_hup: bool,
    /// Reads that answered AGAIN right after a POLLHUP, in a row.
    hup_again: u8,
    eof: bool,
    writable: bool,
    /// The last poll reported POLLHUP for the destination.
    dst_hup: bool,
    shut: bool,
    /// While closing without half-close: this direction gave up flushing.
    abandoned: bool,
    /// The zero-copy path: the pipe (while in use), the bytes in it, its
    /// capacity.
    pipe: Option<sys::Pipe>,
    in_pipe: usize,
    pipe_cap: usize,
    /// A splice into the pipe answered AGAIN while it held bytes: it may
    /// be full; the source is read again after the next write out of it.
    pipe_full: bool,
    /// splice is not to be used (any more) in this direction.
    splice_off: bool,
    /// The pipe was asked to grow already.
    pipe_grown: bool,
    read: u64,
    written: u64,
    spliced: u64,
    pipes: u64,
}

impl<'a> Dir<'a> {
    fn new(buf: Buffer<'a>) -> Self {
        let read = buf.len() as u64;
        Dir {
            buf,
            // Try once without waiting: the source may hold input poll
            // cannot see (filters), and for a plain socket it costs one
            // read that answers AGAIN.
            readable: true,
            src_hup: false,
            hup_again: 0,
            eof: false,
            writable: true,
            dst_hup: false,
            shut: false,
            abandoned: false,
            pipe: None,
            in_pipe: 0,
            pipe_cap: DEFAULT_PIPE_CAP,
            pipe_full: false,
            splice_off: false,
            pipe_grown: false,
            read,
            written: 0,
            spliced: 0,
            pipes: 0,
        }
    }

    fn can_read(&self, closing: bool) -> bool {
        if self.eof || closing {
            return false;
        }
        if self.pipe.is_some() && !self.splice_off {
            self.in_pipe < self.pipe_cap && !self.pipe_full
        } else {
            // After a fallback, the pipe's bytes go first.
            self.in_pipe == 0 && !self.buf.is_full()
        }
    }

    /// Bytes read and not yet written.
    fn pending(&self) -> usize {
        self.buf.len().saturating_add(self.in_pipe)
    }

    fn ready(&self, closing: bool) -> bool {
        (self.readable && self.can_read(closing)) || (self.writable && self.wants_flush())
    }

    fn wants_flush(&self) -> bool {
        self.pending() > 0 && !self.abandoned
    }

    fn poll_in(&self, closing: bool) -> bool {
        !self.readable && self.can_read(closing)
    }

    fn poll_out(&self) -> bool {
        !self.writable && self.wants_flush()
    }

    /// Write pending bytes (`dst_fd`: the destination's splice socket).
    /// Ok(true) when some moved.
    fn flush<D: Endpoint + ?Sized>(
        &mut self,
        dst: &mut D,
        dst_fd: Option<Fd>,
    ) -> Result<bool, Errno> {
        if !self.writable || !self.wants_flush() {
            return Ok(false);
        }
        if self.buf.len() == 0 && self.in_pipe > 0 {
            if let Some(fd) = dst_fd.filter(|_| !self.splice_off) {
                if let Some(r) = self.flush_pipe(fd) {
                    return r;
                }
            }
            // No splicing to this destination: through the buffer.
            self.unpipe()?;
        }
        let pending = self.buf.pending();
        let len = pending.len();
        let hup = core::mem::replace(&mut self.dst_hup, false);
        match dst.write(pending) {
            Io::Ok(n) if n > len => Err(sys::EIO),
            Io::Ok(0) | Io::Again => {
                self.writable = false;
                if hup {
                    // Hung up yet "would block": it will never take bytes.
                    Err(sys::EPIPE)
                } else {
                    Ok(false)
                }
            }
            Io::Ok(n) => {
                self.buf.consume(n);
                self.written = self.written.saturating_add(n as u64);
                if n < len {
                    self.writable = false;
                }
                Ok(true)
            }
            Io::Eof => Err(sys::EPIPE),
            Io::Error(e) => Err(e),
        }
    }

    /// Write from the pipe to `fd`; None when the kernel cannot (splice is
    /// then off for this direction).
    fn flush_pipe(&mut self, fd: Fd) -> Option<Result<bool, Errno>> {
        let from = self.pipe.as_ref()?.read_end();
        let hup = core::mem::replace(&mut self.dst_hup, false);
        Some(match sys::splice(from, fd, self.in_pipe) {
            // The pipe holds bytes: it cannot be at its end.
            sys::FdIo::Done(0) => Err(sys::EIO),
            sys::FdIo::Done(n) => {
                let n = n.min(self.in_pipe);
                self.in_pipe -= n;
                self.written = self.written.saturating_add(n as u64);
                self.pipe_full = false;
                if self.in_pipe > 0 {
                    self.writable = false;
                }
                Ok(true)
            }
            sys::FdIo::WouldBlock => {
                self.writable = false;
                if hup {
                    Err(sys::EPIPE)
                } else {
                    Ok(false)
                }
            }
            sys::FdIo::Failed(e) if e == sys::EINVAL || e == sys::ENOSYS => {
                self.splice_off = true;
                self.dst_hup = hup;
                return None;
            }
            sys::FdIo::Failed(e) => Err(e),
        })
    }

    /// Move the pipe's bytes (as many as fit) into the empty buffer, after
    /// splice turned out unusable; the pipe is closed once empty.
    fn unpipe(&mut self) -> Result<(), Errno> {
        let Some(from) = self.pipe.as_ref().map(sys::Pipe::read_end) else {
            return Err(sys::EIO);
        };
        let room = self.buf.room();
        let want = room.len().min(self.in_pipe);
        match sys::read(from, room.get_mut(..want).unwrap_or(&mut [])) {
            sys::FdIo::Done(n) if n > 0 => {
                let n = n.min(self.in_pipe);
                self.buf.commit(n);
                self.in_pipe -= n;
                self.pipe_full = false;
                if self.in_pipe == 0 {
                    self.pipe = None;
                }
                Ok(())
            }
            sys::FdIo::Failed(e) => Err(e),
            // The pipe holds bytes but gives none: should not happen.
            _ => Err(sys::EIO),
        }
    }

    /// Splice from the source socket `fd` into the pipe (made here if
    /// needed). None when splice cannot be used (then it is off for this
    /// direction and the pipe is empty and gone): use the buffer.
    fn fill_pipe(&mut self, fd: Fd, hup: bool) -> Option<Result<bool, Errno>> {
        if self.pipe.is_none() {
            match sys::pipe() {
                Ok(p) if near_fd_limit(p.write_end()) => {
                    self.splice_off = true;
                    return None;
                }
                Ok(p) => {
                    self.pipe_cap = p.capacity().unwrap_or(DEFAULT_PIPE_CAP);
                    self.pipe_grown = false;
                    self.pipe = Some(p);
                    self.pipes = self.pipes.saturating_add(1);
                }
                Err(_) => {
                    self.splice_off = true;
                    return None;
                }
            }
        }
        let to = self.pipe.as_ref()?.write_end();
        let room = self.pipe_cap.saturating_sub(self.in_pipe);
        if room == 0 {
            return Some(Ok(false));
        }
        Some(match sys::splice(fd, to, room) {
            sys::FdIo::Done(0) => {
                self.eof = true;
                self.readable = false;
                Ok(true)
            }
            sys::FdIo::Done(n) => {
                let n = n.min(room);
                self.in_pipe += n;
                self.read = self.read.saturating_add(n as u64);
                self.spliced = self.spliced.saturating_add(n as u64);
                self.hup_again = 0;
                // Filled the pipe: the socket likely has more; read again
                // (once the pipe has room) without polling first.
                self.readable = n == room;
                if n == room && n == self.in_pipe && !self.pipe_grown {
                    // Bulk traffic: a bigger pipe, if the kernel allows.
                    self.pipe_grown = true;
                    if let Some(Ok(cap)) = self.pipe.as_ref().map(|p| p.set_capacity(BULK_PIPE_CAP)) {
                        self.pipe_cap = cap.max(self.in_pipe);
                    }
                }
                Ok(true)
            }
            sys::FdIo::WouldBlock if self.in_pipe > 0 => {
                self.pipe_full = true;
                Ok(false)
            }
            sys::FdIo::WouldBlock => Ok(self.again(hup)),
            sys::FdIo::Failed(e) if e == sys::EINVAL || e == sys::ENOSYS => {
                self.splice_off = true;
                if self.in_pipe == 0 {
                    self.pipe = None;
                    return None;
                }
                Ok(false)
            }
            sys::FdIo::Failed(e) => Err(e),
        })
    }

    /// The source has nothing now. True when that ends its input: POLLHUP
    /// yet nothing to read, twice, means it has ended even if it does not
    /// say so. (Once is allowed: a raw endpoint's filter drain ends with
    /// AGAIN.)
    fn again(&mut self, hup: bool) -> bool {
        self.readable = false;
        if hup {
            self.hup_again = self.hup_again.saturating_add(1);
            if self.hup_again >= 2 {
                self.eof = true;
                return true;
            }
        }
        false
    }

    /// Close the pipe if it is empty (the tunnel is quiet).
    fn release_pipe(&mut self) {
        if self.in_pipe == 0 {
            self.pipe = None;
            self.pipe_full = false;
        }
    }

    /// Read into the buffer, or splice into the pipe when `fds` (the source
    /// and destination sockets) allow it. Ok(true) when bytes came or EOF
    /// was seen.
    fn fill<S: Endpoint + ?Sized>(
        &mut self,
        src: &mut S,
        fds: Option<(Fd, Fd)>,
        closing: bool,
    ) -> Result<bool, Errno> {
        if !self.readable || !self.can_read(closing) {
            return Ok(false);
        }
        let hup = core::mem::replace(&mut self.src_hup, false);
        if let Some((fd, _)) = fds.filter(|_| !self.splice_off && self.buf.len() == 0) {
            if let Some(r) = self.fill_pipe(fd, hup) {
                return r;
            }
            if !self.can_read(closing) {
                return Ok(false);
            }
        }
        let room = self.buf.room();
        let cap = room.len();
        if cap == 0 {
            return Ok(false);
        }
        match src.read(room) {
            Io::Ok(n) if n > cap => Err(sys::EIO),
            Io::Ok(0) | Io::Again => Ok(self.again(hup)),
            Io::Ok(n) => {
                self.buf.commit(n);
                self.read = self.read.saturating_add(n as u64);
                self.hup_again = 0;
                // A full read: more is likely waiting; read again (once
                // there is room) without polling first.
                self.readable = src.hidden_input() || n == cap;
                Ok(true)
            }
            Io::Eof => {
                self.eof = true;
                self.readable = false;
                Ok(true)
            }
            Io::Error(e) => Err(e),
        }
    }

    /// flush, read, flush. Ok(true) when anything moved or changed.
    ///
    /// A source that still may have input (hidden input: TLS records come
    /// one per read) is read again while the buffer has room, up to
    /// [`FILLS_PER_PASS`] times, so that the destination gets larger writes.
    fn pass<S, D>(&mut self, src: &mut S, dst: &mut D, closing: bool) -> Result<bool, Broke>
    where
        S: Endpoint + ?Sized,
        D: Endpoint + ?Sized,
    {
        let fds = match (src.splice_fd(), dst.splice_fd()) {
            (Some(s), Some(d)) => Some((s, d)),
            _ => None,
        };
        let dst_fd = fds.map(|f| f.1);
        let mut progress = self.flush(dst, dst_fd).map_err(Broke::Dst)?;
        let mut filled = false;
        for _ in 0..FILLS_PER_PASS {
            if !self.fill(src, fds, closing).map_err(Broke::Src)? {
                break;
            }
            filled = true;
            if self.eof || !self.readable || !self.can_read(closing) {
                break;
            }
        }
        if filled {
            progress = true;
            progress |= self.flush(dst, dst_fd).map_err(Broke::Dst)?;
        }
        Ok(progress)
    }
}

/// Monotonic milliseconds; should the clock be unreadable, time is
/// counted from the poll timeouts that expired.
struct Clock {
    fallback: u64,
}

impl Clock {
    fn now(&self) -> u64 {
        sys::monotonic_ms().unwrap_or(self.fallback)
    }

    fn slept(&mut self, ms: u64) {
        self.fallback = self.fallback.saturating_add(ms);
    }
}

/// Reads of a source with hidden input per pass, before the flush.
const FILLS_PER_PASS: usize = 8;

/// Passes of "flush, read, flush" per round before the timers and poll()
/// get their turn.
const PASSES_PER_ROUND: usize = 16;

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Backend,
        Side::Backend => Side::Client,
    }
}

/// One direction's pass, with the closing rule: without half-close, once
/// closing, bytes for a side that has not ended its own input are best
/// effort (a failed write abandons them instead of failing the tunnel).
fn step<S, D>(
    dir: &mut Dir<'_>,
    src: &mut S,
    dst: &mut D,
    src_side: Side,
    closing: bool,
) -> Result<bool, (Side, Errno)>
where
    S: Endpoint + ?Sized,
    D: Endpoint + ?Sized,
{
    match dir.pass(src, dst, closing) {
        Ok(p) => Ok(p),
        Err(Broke::Dst(_)) if closing && !dir.eof => {
            dir.abandoned = true;
            Ok(true)
        }
        Err(Broke::Dst(e)) => Err((other(src_side), e)),
        Err(Broke::Src(e)) => Err((src_side, e)),
    }
}

/// Half-close: once a direction's source ended and its last byte is out,
/// shut the destination's write side.
fn propagate_eof<D: Endpoint + ?Sized>(
    dir: &mut Dir<'_>,
    dst: &mut D,
    dst_side: Side,
) -> Result<(), (Side, Errno)> {
    if dir.eof && !dir.shut && dir.pending() == 0 {
        if let Io::Error(e) = dst.shutdown_write() {
            return Err((dst_side, e));
        }
        dir.shut = true;
    }
    Ok(())
}

struct Tunnel<'a, 'b> {
    c2b: Dir<'a>,
    b2c: Dir<'b>,
    closed_first: Option<Side>,
    closing: bool,
    polls: u64,
}

impl Tunnel<'_, '_> {
    fn moved(&self) -> u64 {
        self.c2b
            .read
            .wrapping_add(self.c2b.written)
            .wrapping_add(self.b2c.read)
            .wrapping_add(self.b2c.written)
    }

    fn ready(&self) -> bool {
        self.c2b.ready(self.closing) || self.b2c.ready(self.closing)
    }

    fn finish(&self, reason: EndReason, os_error: Errno) -> Stats {
        Stats {
            bytes_from_client: self.c2b.read,
            bytes_from_backend: self.b2c.read,
            bytes_to_client: self.b2c.written,
            bytes_to_backend: self.c2b.written,
            closed_first: self.closed_first,
            reason,
            os_error,
            polls: self.polls,
            spliced: self.c2b.spliced.saturating_add(self.b2c.spliced),
            pipes: self.c2b.pipes.saturating_add(self.b2c.pipes),
        }
    }

    fn fail(&mut self, (side, e): (Side, Errno)) -> Stats {
        self.closed_first = self.closed_first.or(Some(side));
        let reason = match side {
            Side::Client => EndReason::ClientError,
            Side::Backend => EndReason::BackendError,
        };
        self.finish(reason, e)
    }
}

/// Run the tunnel until it ends; see the module documentation.
///
/// Raw sockets must be in non-blocking mode. `should_stop` is called at the
/// start and then at least every `cfg.tick_ms`.
pub fn run<C, B, F>(
    client: &mut C,
    client_buf: Buffer<'_>,
    backend: &mut B,
    backend_buf: Buffer<'_>,
    cfg: &Config,
    mut should_stop: F,
) -> Stats
where
    C: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
    F: FnMut() -> bool,
{
    let mut t = Tunnel {
        c2b: Dir::new(client_buf),
        b2c: Dir::new(backend_buf),
        closed_first: None,
        closing: false,
        polls: 0,
    };
    let mut clock = Clock { fallback: 0 };
    let mut now = clock.now();
    let mut last_activity = now;
    let mut next_tick = now;
    let tick = cfg.tick_ms.max(1);

    loop {
        // 1. Move bytes without waiting.
        let moved_before = t.moved();
        for _ in 0..PASSES_PER_ROUND {
            let mut progress = match step(&mut t.c2b, client, backend, Side::Client, t.closing) {
                Ok(p) => p,
                Err(f) => return t.fail(f),
            };
            progress |= match step(&mut t.b2c, backend, client, Side::Backend, t.closing) {
                Ok(p) => p,
                Err(f) => return t.fail(f),
            };
            if !progress || !t.ready() {
                break;
            }
        }
        let moved = t.moved() != moved_before;

        // 2. End of input, half-close, end of the tunnel.
        if t.closed_first.is_none() {
            if t.c2b.eof {
                t.closed_first = Some(Side::Client);
            } else if t.b2c.eof {
                t.closed_first = Some(Side::Backend);
            }
        }
        now = clock.now();
        if moved {
            last_activity = now;
        }
        if cfg.half_close {
            if let Err(f) = propagate_eof(&mut t.c2b, backend, Side::Backend) {
                return t.fail(f);
            }
            if let Err(f) = propagate_eof(&mut t.b2c, client, Side::Client) {
                return t.fail(f);
            }
            if t.c2b.shut && t.b2c.shut {
                return t.finish(EndReason::Closed, 0);
            }
        } else {
            if !t.closing && (t.c2b.eof || t.b2c.eof) {
                t.closing = true;
                last_activity = now;
            }
            if t.closing && !t.c2b.wants_flush() && !t.b2c.wants_flush() {
                return t.finish(EndReason::Closed, 0);
            }
        }

        // 3. Timers.
        if now >= next_tick {
            if should_stop() {
                return t.finish(EndReason::Stopped, 0);
            }
            next_tick = now.saturating_add(tick);
        }
        let limit = if t.closing {
            Some(
                cfg.idle_timeout_ms
                    .map_or(cfg.close_linger_ms, |i| i.min(cfg.close_linger_ms)),
            )
        } else {
            cfg.idle_timeout_ms
        };
        let mut wait = next_tick.saturating_sub(now);
        if let Some(limit) = limit {
            let deadline = last_activity.saturating_add(limit);
            if now >= deadline {
                return t.finish(EndReason::Idle, 0);
            }
            wait = wait.min(deadline - now);
        }
        if t.ready() {
            wait = 0;
        }

        // 4. Wait.
        let events = |i: bool, o: bool| {
            (if i { sys::POLLIN } else { 0 }) | (if o { sys::POLLOUT } else { 0 })
        };
        let mut fds = [
            sys::pollfd(
                client.fd(),
                events(t.c2b.poll_in(t.closing), t.b2c.poll_out()),
            ),
            sys::pollfd(
                backend.fd(),
                events(t.b2c.poll_in(t.closing), t.c2b.poll_out()),
            ),
        ];
        let timeout = i32::try_from(wait).unwrap_or(i32::MAX);
        t.polls = t.polls.saturating_add(1);
        match sys::poll(&mut fds, timeout) {
            Err(e) if e == sys::EINTR => continue,
            Err(e) => return t.finish(EndReason::PollError, e),
            Ok(0) => {
                clock.slept(wait);
                if wait > 0 {
                    // Quiet for a while: give the pipes back.
                    t.c2b.release_pipe();
                    t.b2c.release_pipe();
                }
                continue;
            }
            Ok(_) => {}
        }
        for (pfd, side) in fds.iter().zip([Side::Client, Side::Backend]) {
            let r = pfd.revents;
            if pfd.fd < 0 || r == 0 {
                continue;
            }
            if r & (sys::POLLNVAL | sys::POLLERR) != 0 {
                let e = if r & sys::POLLNVAL != 0 {
                    sys::EBADF
                } else {
                    sys::socket_error(pfd.fd)
                };
                return t.fail((side, e));
            }
            let hup = r & sys::POLLHUP != 0;
            let (src, dst) = match side {
                Side::Client => (&mut t.c2b, &mut t.b2c),
                Side::Backend => (&mut t.b2c, &mut t.c2b),
            };
            if pfd.events & sys::POLLIN != 0 && (r & sys::POLLIN != 0 || hup) {
                src.readable = true;
                src.src_hup = hup;
            }
            if pfd.events & sys::POLLOUT != 0 && (r & sys::POLLOUT != 0 || hup) {
                dst.writable = true;
                dst.dst_hup = hup;
            }
        }
    }
}

#[cfg(test)]
mod tests;
