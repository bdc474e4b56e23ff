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
//! tunnel has been quiet for a poll timeout, so idle tunnels hold none;
//! at the same moment an empty buffer's pages go back to the kernel.
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
//!
//! # WebSocket tunnels
//!
//! With [`Config::websocket`], each direction has a
//! [`FrameTracker`] (client→backend: masked
//! frames; backend→client: unmasked) that sees every byte as it is read, the
//! initially pending ones too; the figures ([`WsStats`]: messages, Close
//! codes, lost sync) come from them. The tracker only observes: the bytes
//! relayed are the bytes read, except for what the tunnel itself puts in or
//! takes out below, and a stream that breaks the protocol is relayed
//! untouched and never tracked or written into again.
//!
//! Zero-copy: frame headers always go through the buffer (the tracker must
//! see them); the rest of a payload of at least 4 KiB is
//! spliced when the buffer is empty, the tracker skipping it unseen
//! ([`FrameTracker::skip`]), and the next header is read once the pipe has
//! been written out (so buffer and pipe never both hold bytes). A stream
//! that lost sync is spliced like a plain one.
//!
//! The tunnel writes frames of its own only at a frame boundary of the
//! stream it writes into, after every pending byte (never while the pipe
//! holds bytes), and never after that stream's own Close:
//!
//! - keep-alive ([`Config::ping_interval_ms`]): after an interval without
//!   traffic (the tunnel's own frames and the Pongs it takes out are not
//!   traffic), a Ping with a fresh 8-byte token goes to each side whose
//!   answer can be watched (both streams in sync and open, no Close from
//!   either side), at that stream's next boundary, or not at all if none
//!   comes within the interval. The answering Pong is held back as it
//!   arrives ([`FrameTracker::held`]) and taken out of the buffer whole;
//!   other Pongs pass. A side that has not answered one interval after its
//!   Ping went in ends the tunnel ([`EndReason::PingTimeout`]), and the next
//!   round comes an interval after the last one began or after the last
//!   traffic, whichever is later;
//! - ending ([`EndReason::Idle`] with [`Config::idle_close_frame`],
//!   [`EndReason::PingTimeout`], [`EndReason::GoingAway`] from
//!   [`Stop::GoingAway`]): Close 1001 goes into each direction at its next
//!   boundary (masked with a key from [`Config::random_seed`] towards the
//!   backend); from then on that direction's source is read and dropped
//!   (watched for the answering Close). A direction whose source already
//!   sent its Close, lost sync, ended mid-frame or whose destination is gone
//!   gets none. The tunnel ends once every direction has written its Close
//!   (or everything it had), for going-away also once each side answered
//!   with its Close or ended its input, and at the latest
//!   [`Config::close_wait_ms`] after the decision; while ending, a failure
//!   only ends its direction, and should_stop is still asked every tick
//!   ([`Stop::Now`] cuts at once). A hard stop ([`Stop::Shutdown`]) is
//!   going-away without waiting for the answers, within
//!   [`SHUTDOWN_CLOSE_MS`], and also cuts short an ending under way.

use crate::sys::{self, Errno, Fd, FdIo, Socket};
use crate::frames::{self, FrameTracker, CLOSE_GOING_AWAY, MAX_HEADER_LEN, MAX_PONG_TOKEN};

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

/// A plain socket in non-blocking mode ([`sys::Socket`]), read and
/// written directly.
impl Endpoint for Socket {
    fn fd(&self) -> Fd {
        Socket::fd(self)
    }

    fn read(&mut self, buf: &mut [u8]) -> Io {
        match self.read_some(buf) {
            FdIo::Done(0) => Io::Eof,
            FdIo::Done(n) => Io::Ok(n),
            FdIo::WouldBlock => Io::Again,
            FdIo::Failed(e) => Io::Error(e),
        }
    }

    fn write(&mut self, buf: &[u8]) -> Io {
        match self.write_some(buf) {
            FdIo::Done(0) => Io::Again,
            FdIo::Done(n) => Io::Ok(n),
            FdIo::WouldBlock => Io::Again,
            FdIo::Failed(e) => Io::Error(e),
        }
    }

    fn shutdown_write(&mut self) -> Io {
        match self.shut_write() {
            Ok(()) => Io::Ok(0),
            Err(e) => Io::Error(e),
        }
    }

    fn splice_fd(&self) -> Option<Fd> {
        Some(Socket::fd(self))
    }
}

/// A direction's buffer: the caller's memory, and how many bytes at its
/// start are already pending (to be written before anything read later).
#[derive(Debug)]
pub struct Buffer<'a> {
    data: &'a mut [u8],
    start: usize,
    end: usize,
    /// Bytes were put in since the pages were last given back.
    touched: bool,
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
            touched: true,
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
        self.touched = true;
    }

    /// When empty, give its pages back to the kernel (see
    /// [`sys::discard_pages`]): an idle tunnel then holds no resident
    /// memory for its buffers, whatever passed through them before.
    fn release(&mut self) {
        if self.touched && self.len() == 0 {
            sys::discard_pages(self.data);
            self.touched = false;
        }
    }

    /// Take the `len` pending bytes at index `at` of `data` out, moving the
    /// ones after them down. False (nothing changed) unless they are all
    /// pending.
    fn remove(&mut self, at: usize, len: usize) -> bool {
        let Some(to) = at.checked_add(len) else {
            return false;
        };
        if at < self.start || to > self.end {
            return false;
        }
        self.data.copy_within(to..self.end, at);
        self.end -= len;
        true
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
    /// should_stop said [`Stop::Now`] (or [`Stop::GoingAway`] for a plain
    /// tunnel).
    Stopped,
    /// poll() itself failed.
    PollError,
    /// WebSocket: a side did not answer the Ping the tunnel sent it.
    PingTimeout,
    /// WebSocket: should_stop said [`Stop::GoingAway`].
    GoingAway,
}

impl EndReason {
    /// The name the shim logs and puts in the `wstunnel-end` note.
    pub const fn name(self) -> &'static core::ffi::CStr {
        match self {
            EndReason::Closed => c"closed",
            EndReason::ClientError => c"client-error",
            EndReason::BackendError => c"backend-error",
            EndReason::Idle => c"idle",
            EndReason::Stopped => c"stopped",
            EndReason::PollError => c"poll-error",
            EndReason::PingTimeout => c"ping-timeout",
            EndReason::GoingAway => c"going-away",
        }
    }
}

/// What should_stop answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Carry on.
    No,
    /// End at once (bare close).
    Now,
    /// WebSocket tunnels: Close 1001 to both sides at a frame boundary,
    /// then end once the Closes are through (see the module docs); plain
    /// tunnels: as [`Stop::Now`].
    GoingAway,
    /// A hard stop. WebSocket tunnels: Close 1001 to both sides at their
    /// next frame boundary, without waiting for the answers, ending at the
    /// latest [`SHUTDOWN_CLOSE_MS`] later (an ending already under way is
    /// cut short the same way); plain tunnels: as [`Stop::Now`].
    Shutdown,
}

/// A hard stop ([`Stop::Shutdown`]): how long the Closes may take.
pub const SHUTDOWN_CLOSE_MS: u64 = 500;

impl From<bool> for Stop {
    fn from(stop: bool) -> Self {
        if stop {
            Stop::Now
        } else {
            Stop::No
        }
    }
}

/// The WebSocket figures of a tunnel (all zero / None for a plain one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WsStats {
    /// Complete data messages the client sent (relayed).
    pub messages_from_client: u64,
    /// Complete data messages the backend sent (relayed).
    pub messages_from_backend: u64,
    /// Code of the last Close the client sent (1005 for a Close without a
    /// code), None when it sent none.
    pub close_code_from_client: Option<u16>,
    /// The same for the backend.
    pub close_code_from_backend: Option<u16>,
    /// Pings the tunnel put in (both sides).
    pub pings_sent: u32,
    /// Pongs answering them, taken out of the streams.
    pub pongs_consumed: u32,
    /// The client's stream broke the protocol: no longer tracked.
    pub lost_sync_client: bool,
    /// The backend's stream broke the protocol: no longer tracked.
    pub lost_sync_backend: bool,
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
    /// WebSocket figures.
    pub ws: WsStats,
}

/// Without half-close, how long the final flush may go without progress
/// when no (shorter) idle timeout is configured.
pub const CLOSE_LINGER_MS: u64 = 10_000;

/// Default should_stop period.
pub const DEFAULT_TICK_MS: u64 = 1000;

/// WebSocket: how long the tunnel may take, once it has decided to send
/// Close 1001 (idle timeout, dead ping, going away), to find the frame
/// boundaries, write the Closes and (going away) see the answers.
pub const CLOSE_WAIT_MS: u64 = 2000;

/// WebSocket: the least payload worth splicing (the rest of a frame
/// already begun); less goes through the buffer with the frames after it.
const MIN_WS_SPLICE: u64 = 4096;

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
    /// Both directions carry RFC 6455 frames: track them (headers only),
    /// count messages, note Close codes; needed by the three below.
    pub websocket: bool,
    /// WebSocket: after this long without traffic, Ping both sides; no
    /// answer within the same time ends the tunnel (Close 1001 to both).
    pub ping_interval_ms: Option<u64>,
    /// WebSocket: at the idle timeout, Close 1001 to both sides instead of
    /// a bare close.
    pub idle_close_frame: bool,
    /// Seed of the mask keys and ping tokens.
    pub random_seed: u32,
    /// See [`CLOSE_WAIT_MS`].
    pub close_wait_ms: u64,
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
            websocket: false,
            ping_interval_ms: None,
            idle_close_frame: false,
            random_seed: 0,
            close_wait_ms: CLOSE_WAIT_MS,
        }
    }

    /// The WebSocket settings from the C contract's values (`<= 0`: no
    /// pings).
    pub fn with_websocket(
        mut self,
        ping_interval_ms: i32,
        idle_close_frame: bool,
        random_seed: u32,
    ) -> Self {
        self.websocket = true;
        self.ping_interval_ms = u64::try_from(ping_interval_ms).ok().filter(|&v| v > 0);
        self.idle_close_frame = idle_close_frame;
        self.random_seed = random_seed;
        self
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

/// Where a direction stands with the Close 1001 the tunnel sends when it
/// ends a WebSocket tunnel itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloseOut {
    /// Not ending (or not decided for this direction yet).
    None,
    /// To be put in at the next frame boundary.
    Pending,
    /// Put in; the source's later bytes are read and dropped.
    Sent,
    /// None will be: the source's own Close went through, the stream lost
    /// sync or ended mid-frame, or the destination is gone.
    Skipped,
}

/// A keep-alive Ping towards a direction's destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PingOut {
    None,
    /// To be put in at the next frame boundary (given up at `since` plus
    /// the interval).
    Due { since: u64, token: [u8; 8] },
    /// Put in at `at`; the answer is watched for on the other direction.
    Sent { at: u64 },
}

/// A direction's WebSocket state.
struct Frames {
    tracker: FrameTracker,
    /// Bytes of the tunnel's own Pongs taken out of the stream.
    swallowed: u64,
    own_pongs: u32,
    close: CloseOut,
    ping: PingOut,
    /// Data messages when a Close of ours went in (later ones are not
    /// relayed).
    sealed_messages: Option<u64>,
}

impl Frames {
    fn new(masked: bool) -> Self {
        Frames {
            tracker: FrameTracker::new(masked),
            swallowed: 0,
            own_pongs: 0,
            close: CloseOut::None,
            ping: PingOut::None,
            sealed_messages: None,
        }
    }

    /// A Close of ours went in: the source is read but not relayed.
    fn sealed(&self) -> bool {
        self.close == CloseOut::Sent
    }

    fn messages(&self) -> u64 {
        self.sealed_messages
            .unwrap_or_else(|| self.tracker.messages())
    }

    fn close_code(&self) -> Option<u16> {
        if self.tracker.close_seen() {
            Some(self.tracker.close_code().unwrap_or(1005))
        } else {
            None
        }
    }

    /// Bytes that may be spliced now: the rest of a long payload (or
    /// anything once the stream lost sync); 0 between frames, in headers,
    /// when the payload is read (a Close code, a Pong being matched) or
    /// dropped.
    fn splice_allowance(&self) -> usize {
        if self.sealed() {
            return 0;
        }
        let k = self.tracker.skippable();
        if self.tracker.lost_sync().is_some() {
            usize::MAX
        } else if k >= MIN_WS_SPLICE {
            usize::try_from(k).unwrap_or(usize::MAX)
        } else {
            0
        }
    }
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
    /// WebSocket tracking (None: a plain tunnel).
    ws: Option<Frames>,
    /// The last bytes the tunnel put in itself, as a range of the output
    /// stream (`written` coordinates), and how many of such bytes were
    /// written: they are not traffic.
    inj_from: u64,
    inj_to: u64,
    injected_written: u64,
}

impl<'a> Dir<'a> {
    /// `ws`: track the frames (`Some(masked)`: whether this direction's
    /// frames are masked, i.e. it comes from the client). Not inlined: see
    /// [`init`].
    #[inline(never)]
    fn new(buf: Buffer<'a>, ws: Option<bool>) -> Self {
        let read = buf.len() as u64;
        let mut d = Dir {
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
            ws: ws.map(Frames::new),
            inj_from: 0,
            inj_to: 0,
            injected_written: 0,
        };
        // The bytes already pending are frames too.
        let pending = d.buf.len();
        d.track(pending);
        d
    }

    fn can_read(&self, closing: bool) -> bool {
        if self.eof || closing {
            return false;
        }
        if self.pipe.is_some() && !self.splice_off && self.buf.len() == 0 && self.splice_allowance() > 0
        {
            self.in_pipe < self.pipe_cap && !self.pipe_full
        } else {
            // After a fallback, the pipe's bytes go first; WebSocket: a
            // frame header is read once the pipe's payload is out.
            self.in_pipe == 0 && !self.buf.is_full()
        }
    }

    /// Bytes that may be spliced now: all for a plain tunnel; see
    /// [`Frames::splice_allowance`].
    fn splice_allowance(&self) -> usize {
        self.ws.as_ref().map_or(usize::MAX, Frames::splice_allowance)
    }

    /// Bytes read and not yet written.
    fn pending(&self) -> usize {
        self.buf.len().saturating_add(self.in_pipe)
    }

    /// WebSocket: this direction's source sent a Close frame, the frame has
    /// passed whole (nothing may follow it) and every byte of it is written.
    fn close_handshake_done(&self) -> bool {
        self.ws
            .as_ref()
            .is_some_and(|w| w.tracker.close_seen() && w.tracker.at_boundary())
            && self.pending() == 0
    }

    /// The last pending bytes that may not be written yet (they may be the
    /// start of the tunnel's own Pong).
    fn held(&self) -> usize {
        self.ws.as_ref().map_or(0, |w| w.tracker.held())
    }

    /// Pending bytes that may be written now.
    fn sendable(&self) -> usize {
        self.pending().saturating_sub(self.held())
    }

    fn ready(&self, closing: bool) -> bool {
        (self.readable && self.can_read(closing)) || (self.writable && self.wants_flush())
    }

    fn wants_flush(&self) -> bool {
        self.sendable() > 0 && !self.abandoned
    }

    /// Bytes moved that are traffic: read (but not the tunnel's own Pongs)
    /// and written (but not what the tunnel put in itself).
    fn traffic(&self) -> u64 {
        let swallowed = self.ws.as_ref().map_or(0, |w| w.swallowed);
        self.read
            .wrapping_sub(swallowed)
            .wrapping_add(self.written)
            .wrapping_sub(self.injected_written)
    }

    /// `n` more bytes were written.
    fn count_written(&mut self, n: usize) {
        let from = self.written;
        let to = from.saturating_add(n as u64);
        let ours = to.min(self.inj_to).saturating_sub(from.max(self.inj_from));
        self.injected_written = self.injected_written.saturating_add(ours);
        self.written = to;
    }

    /// Show the last `n` pending bytes (just read) to the tracker, taking
    /// the tunnel's own Pongs out of the buffer.
    fn track(&mut self, n: usize) {
        let Some(w) = self.ws.as_mut() else {
            return;
        };
        let mut end = self.buf.end;
        let mut pos = end.saturating_sub(n).max(self.buf.start);
        while pos < end {
            let Some(bytes) = self.buf.data.get(pos..end) else {
                break;
            };
            let f = w.tracker.feed(bytes);
            if f.consumed == 0 {
                break;
            }
            pos = pos.saturating_add(f.consumed);
            if let Some(e) = f.end.filter(|e| e.own_pong) {
                let len = usize::try_from(e.header.frame_len()).unwrap_or(usize::MAX);
                w.own_pongs = w.own_pongs.saturating_add(1);
                if let Some(at) = pos.checked_sub(len) {
                    if self.buf.remove(at, len) {
                        pos = at;
                        end -= len;
                        w.swallowed = w.swallowed.saturating_add(len as u64);
                    }
                }
            }
        }
        // A buffer too small for a whole Pong: let it pass (unwatched).
        if self.buf.is_full() && w.tracker.held() >= self.buf.len() {
            w.tracker.cancel_pong();
        }
    }

    /// Put a frame (built by `build` into the room it is given) after every
    /// pending byte. False when it does not fit now.
    fn inject<F>(&mut self, build: F) -> bool
    where
        F: FnOnce(&mut [u8]) -> Result<usize, frames::WriteError>,
    {
        if self.in_pipe > 0 {
            return false;
        }
        let at = self.written.saturating_add(self.buf.len() as u64);
        let Ok(n) = build(self.buf.room()) else {
            return false;
        };
        self.buf.commit(n);
        if self.inj_to <= self.written {
            self.inj_from = at;
        }
        self.inj_to = at.saturating_add(n as u64);
        true
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
        let held = self.held();
        let pending = self.buf.pending();
        let len = pending.len().saturating_sub(held);
        let Some(out) = pending.get(..len).filter(|o| !o.is_empty()) else {
            return Ok(false);
        };
        let hup = core::mem::replace(&mut self.dst_hup, false);
        match dst.write(out) {
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
                self.count_written(n);
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
                self.count_written(n);
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
        let allowance = self.splice_allowance();
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
        // WebSocket: payload bytes only, up to the end of the frame.
        let pipe_room = self.pipe_cap.saturating_sub(self.in_pipe);
        let room = pipe_room.min(allowance);
        if room == 0 {
            return Some(Ok(false));
        }
        Some(match sys::splice(fd, to, room) {
            // Some older kernels answer 0 rather than AGAIN when the pipe's
            // slots are used up: only an empty pipe's 0 is end of input.
            sys::FdIo::Done(0) if self.in_pipe > 0 => {
                self.pipe_full = true;
                Ok(false)
            }
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
                if let Some(w) = self.ws.as_mut() {
                    let _ = w.tracker.skip(n);
                }
                self.hup_again = 0;
                // Filled the pipe: the socket likely has more; read again
                // (once the pipe has room) without polling first.
                self.readable = n == room;
                if n == pipe_room && n == self.in_pipe && !self.pipe_grown {
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
        self.buf.release();
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
        if let Some((fd, _)) =
            fds.filter(|_| !self.splice_off && self.buf.len() == 0 && self.splice_allowance() > 0)
        {
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
                self.read = self.read.saturating_add(n as u64);
                match self.ws.as_mut() {
                    Some(w) if w.sealed() => {
                        // After our Close: watched (for the answering
                        // Close), never relayed.
                        let mut seen = room.get(..n).unwrap_or(&[]);
                        while !seen.is_empty() {
                            let f = w.tracker.feed(seen);
                            seen = seen.get(f.consumed.max(1)..).unwrap_or(&[]);
                        }
                    }
                    _ => {
                        self.buf.commit(n);
                        self.track(n);
                    }
                }
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
/// While the tunnel ends a WebSocket tunnel itself (`ending`), a failure
/// only ends that direction (a failed source counts as ended).
fn step<S, D>(
    dir: &mut Dir<'_>,
    src: &mut S,
    dst: &mut D,
    src_side: Side,
    closing: bool,
    ending: bool,
) -> Result<bool, (Side, Errno)>
where
    S: Endpoint + ?Sized,
    D: Endpoint + ?Sized,
{
    match dir.pass(src, dst, closing) {
        Ok(p) => Ok(p),
        Err(Broke::Dst(_)) if ending || (closing && !dir.eof) => {
            dir.abandoned = true;
            Ok(true)
        }
        Err(Broke::Src(_)) if ending => {
            dir.eof = true;
            dir.readable = false;
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

/// Mask keys and ping tokens (splitmix64): they need to be unpredictable
/// to the peers only as far as the seed is.
struct Rng(u64);

impl Rng {
    fn new(seed: u32) -> Self {
        Rng(u64::from(seed) ^ 0x6A09_E667_F3BC_C908)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn key(&mut self) -> [u8; 4] {
        let [a, b, c, d, ..] = self.next().to_be_bytes();
        [a, b, c, d]
    }

    fn token(&mut self) -> [u8; 8] {
        self.next().to_be_bytes()
    }
}

/// The tunnel ends a WebSocket tunnel itself: Close 1001 both ways.
#[derive(Clone, Copy, Debug)]
struct Ending {
    reason: EndReason,
    /// End then, whatever is left.
    deadline: u64,
    /// Also wait for each side's answering Close (or its end of input).
    wait_answers: bool,
}

/// Ending: put the Close in direction `d` if it stands at a frame
/// boundary, or decide it never will.
fn close_step(d: &mut Dir<'_>, rng: &mut Rng) {
    let Some(w) = d.ws.as_mut() else {
        return;
    };
    if w.close != CloseOut::Pending {
        return;
    }
    let t = w.tracker;
    if d.abandoned
        || d.shut
        || t.lost_sync().is_some()
        || t.close_seen()
        || (d.eof && !t.at_boundary())
    {
        w.close = CloseOut::Skipped;
        return;
    }
    if !t.can_inject() {
        return;
    }
    let mask = t.masked().then(|| rng.key());
    if d.inject(|b| frames::write_close(b, CLOSE_GOING_AWAY, mask)) {
        if let Some(w) = d.ws.as_mut() {
            w.sealed_messages = Some(w.tracker.messages());
            w.close = CloseOut::Sent;
        }
    }
}

/// A Ping may go into `d` (towards its destination), its answer being
/// watched for on `o` (from that destination): both streams in sync and
/// open, no Close from either side, and room in `o` for a whole Pong.
fn ping_possible(d: &Dir<'_>, o: &Dir<'_>) -> bool {
    let (Some(w), Some(ow)) = (d.ws.as_ref(), o.ws.as_ref()) else {
        return false;
    };
    !d.eof
        && !d.shut
        && !d.abandoned
        && !o.eof
        && w.tracker.lost_sync().is_none()
        && ow.tracker.lost_sync().is_none()
        && !w.tracker.close_seen()
        && !ow.tracker.close_seen()
        && o.buf.data.len() >= MAX_HEADER_LEN + MAX_PONG_TOKEN
}

/// The Ping due in `d`, put in if `d` stands at a frame boundary; the
/// answer is then expected on `o`. True when it went in.
fn ping_step(d: &mut Dir<'_>, o: &mut Dir<'_>, rng: &mut Rng, now: u64) -> bool {
    let Some(PingOut::Due { token, .. }) = d.ws.as_ref().map(|w| w.ping) else {
        return false;
    };
    if !ping_possible(d, o) {
        if let Some(w) = d.ws.as_mut() {
            w.ping = PingOut::None;
        }
        return false;
    }
    let Some(t) = d.ws.as_ref().map(|w| w.tracker) else {
        return false;
    };
    if !t.can_inject() {
        return false;
    }
    let mask = t.masked().then(|| rng.key());
    if !d.inject(|b| frames::write_ping(b, &token, mask)) {
        return false;
    }
    if let (Some(w), Some(ow)) = (d.ws.as_mut(), o.ws.as_mut()) {
        w.ping = PingOut::Sent { at: now };
        ow.tracker.expect_pong(&token);
    }
    true
}

/// The Ping sent into `d` was answered on `o`, or can no longer be: done.
fn ping_resolve(d: &mut Dir<'_>, o: &Dir<'_>) {
    let answered = o.ws.as_ref().is_none_or(|ow| {
        !ow.tracker.pong_expected() || ow.tracker.lost_sync().is_some()
    });
    if let Some(w) = d.ws.as_mut() {
        if matches!(w.ping, PingOut::Sent { .. }) && answered {
            w.ping = PingOut::None;
        }
    }
}

struct Tunnel<'a, 'b> {
    c2b: Dir<'a>,
    b2c: Dir<'b>,
    closed_first: Option<Side>,
    closing: bool,
    polls: u64,
    /// poll() reported POLLHUP for this side's descriptor while nothing was
    /// asked of it: it is left out of later poll sets (no busy loop).
    client_hup: bool,
    backend_hup: bool,
    /// WebSocket: the tunnel's own Close 1001s are under way.
    ending: Option<Ending>,
    rng: Rng,
    pings_sent: u32,
    /// When the last round of Pings began.
    ping_round: u64,
}

impl Tunnel<'_, '_> {
    fn moved(&self) -> u64 {
        self.c2b.traffic().wrapping_add(self.b2c.traffic())
    }

    fn ready(&self) -> bool {
        self.c2b.ready(self.closing) || self.b2c.ready(self.closing)
    }

    fn ws_stats(&self) -> WsStats {
        let (Some(c), Some(b)) = (self.c2b.ws.as_ref(), self.b2c.ws.as_ref()) else {
            return WsStats::default();
        };
        WsStats {
            messages_from_client: c.messages(),
            messages_from_backend: b.messages(),
            close_code_from_client: c.close_code(),
            close_code_from_backend: b.close_code(),
            pings_sent: self.pings_sent,
            pongs_consumed: c.own_pongs.saturating_add(b.own_pongs),
            lost_sync_client: c.tracker.lost_sync().is_some(),
            lost_sync_backend: b.tracker.lost_sync().is_some(),
        }
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
            ws: self.ws_stats(),
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

    /// WebSocket: what the last reads changed for the Pings.
    fn ws_update(&mut self) {
        let (c_eof, b_eof) = (self.c2b.eof, self.b2c.eof);
        for (w, eof) in [(self.c2b.ws.as_mut(), c_eof), (self.b2c.ws.as_mut(), b_eof)] {
            // A stream that ended brings no answer: its held bytes go on.
            if let Some(w) = w.filter(|_| eof) {
                w.tracker.cancel_pong();
            }
        }
        ping_resolve(&mut self.c2b, &self.b2c);
        ping_resolve(&mut self.b2c, &self.c2b);
    }

    /// No more Pings (closing or ending): none due, no answer awaited.
    fn stop_pinging(&mut self) {
        for w in [self.c2b.ws.as_mut(), self.b2c.ws.as_mut()].into_iter().flatten() {
            w.ping = PingOut::None;
            w.tracker.cancel_pong();
        }
    }

    /// WebSocket keep-alive, once per round while neither closing nor
    /// ending: true when a pinged side did not answer in time.
    fn pings(&mut self, now: u64, last_activity: u64, interval: u64) -> bool {
        let mut idle = true;
        for w in [self.c2b.ws.as_mut(), self.b2c.ws.as_mut()] {
            let Some(w) = w else {
                return false;
            };
            match w.ping {
                PingOut::Sent { at } if now >= at.saturating_add(interval) => return true,
                // No frame boundary in time: given up, for this round.
                PingOut::Due { since, .. } if now >= since.saturating_add(interval) => {
                    w.ping = PingOut::None;
                }
                PingOut::None => {}
                _ => idle = false,
            }
        }
        if idle && now >= last_activity.max(self.ping_round).saturating_add(interval) {
            self.ping_round = now;
            let to_backend = ping_possible(&self.c2b, &self.b2c);
            let to_client = ping_possible(&self.b2c, &self.c2b);
            for (w, go) in [(self.c2b.ws.as_mut(), to_backend), (self.b2c.ws.as_mut(), to_client)] {
                if let Some(w) = w.filter(|_| go) {
                    w.ping = PingOut::Due {
                        since: now,
                        token: self.rng.token(),
                    };
                }
            }
        }
        if ping_step(&mut self.c2b, &mut self.b2c, &mut self.rng, now) {
            self.pings_sent = self.pings_sent.saturating_add(1);
        }
        if ping_step(&mut self.b2c, &mut self.c2b, &mut self.rng, now) {
            self.pings_sent = self.pings_sent.saturating_add(1);
        }
        false
    }

    /// When [`pings`](Self::pings) has something to do next.
    fn ping_wake(&self, last_activity: u64, interval: u64) -> u64 {
        let mut wake = u64::MAX;
        let mut idle = true;
        for w in [self.c2b.ws.as_ref(), self.b2c.ws.as_ref()].into_iter().flatten() {
            match w.ping {
                PingOut::Due { since: at, .. } | PingOut::Sent { at } => {
                    idle = false;
                    wake = wake.min(at.saturating_add(interval));
                }
                PingOut::None => {}
            }
        }
        if idle {
            wake = wake.min(last_activity.max(self.ping_round).saturating_add(interval));
        }
        wake
    }

    /// Decide to send Close 1001 both ways and end (WebSocket tunnels).
    /// Decide to end with Close 1001 (see the module docs), within
    /// `wait_ms`. An ending already under way keeps its reason and is only
    /// made shorter (deadline, no waiting for answers) when asked.
    fn start_ending(&mut self, reason: EndReason, now: u64, wait_ms: u64, wait_answers: bool) {
        let deadline = now.saturating_add(wait_ms);
        if let Some(e) = self.ending.as_mut() {
            e.deadline = e.deadline.min(deadline);
            e.wait_answers &= wait_answers;
            return;
        }
        self.stop_pinging();
        self.ending = Some(Ending {
            reason,
            deadline,
            wait_answers: wait_answers && !self.closing,
        });
        for w in [self.c2b.ws.as_mut(), self.b2c.ws.as_mut()].into_iter().flatten() {
            w.close = CloseOut::Pending;
        }
    }

    /// Ending: put the Closes in where possible; the reason to end with once
    /// the Closes (or whatever each direction ended with) are out and, if
    /// asked, both sides answered, or at the deadline.
    fn progress_ending(&mut self, now: u64) -> Option<EndReason> {
        let e = self.ending?;
        close_step(&mut self.c2b, &mut self.rng);
        close_step(&mut self.b2c, &mut self.rng);
        let out = |d: &Dir<'_>| {
            d.ws.as_ref()
                .is_none_or(|w| matches!(w.close, CloseOut::Sent | CloseOut::Skipped))
                && (d.sendable() == 0 || d.abandoned)
        };
        let answered = |d: &Dir<'_>| {
            d.eof
                || d.ws.as_ref().is_none_or(|w| {
                    w.tracker.close_seen() || w.tracker.lost_sync().is_some()
                })
        };
        let complete = out(&self.c2b)
            && out(&self.b2c)
            && (!e.wait_answers || (answered(&self.c2b) && answered(&self.b2c)));
        (complete || now >= e.deadline).then_some(e.reason)
    }
}

/// Run the tunnel until it ends; see the module documentation.
///
/// Raw sockets must be in non-blocking mode. `should_stop` is called at the
/// start and then at least every `cfg.tick_ms` (a `bool` answer: true is
/// [`Stop::Now`]).
#[inline(never)]
pub fn run<C, B, F, R>(
    client: &mut C,
    client_buf: Buffer<'_>,
    backend: &mut B,
    backend_buf: Buffer<'_>,
    cfg: &Config,
    should_stop: F,
) -> Stats
where
    C: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
    F: FnMut() -> R,
    R: Into<Stop>,
{
    let mut state = None;
    run_in(&mut state, client, client_buf, backend, backend_buf, cfg, should_stop)
}

/// The tunnel's state, kept where the caller wants it (see [`run_in`]).
pub struct TunnelState<'a>(Tunnel<'a, 'a>);

/// [`run`], with the tunnel's state (some 700 bytes) in `state` rather
/// than on this thread's stack: a caller that keeps it in memory it
/// allocated anyway makes the stack under the waiting tunnel shallower,
/// and stack pages, once touched, stay resident for the tunnel's whole
/// life. `state` is None again when this returns (pipes closed).
#[inline(never)]
pub fn run_in<'a, C, B, F, R>(
    state: &mut Option<TunnelState<'a>>,
    client: &mut C,
    client_buf: Buffer<'a>,
    backend: &mut B,
    backend_buf: Buffer<'a>,
    cfg: &Config,
    should_stop: F,
) -> Stats
where
    C: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
    F: FnMut() -> R,
    R: Into<Stop>,
{
    let clock = Clock { fallback: 0 };
    let now = clock.now();
    let TunnelState(t) = init(state, client_buf, backend_buf, cfg, now);
    let stats = drive(t, clock, now, client, backend, cfg, should_stop);
    *state = None;
    stats
}

/// Make the tunnel in `state`. Not inlined: the temporaries of building it
/// are gone from the stack before the loop runs.
#[inline(never)]
fn init<'s, 'a>(
    state: &'s mut Option<TunnelState<'a>>,
    client_buf: Buffer<'a>,
    backend_buf: Buffer<'a>,
    cfg: &Config,
    now: u64,
) -> &'s mut TunnelState<'a> {
    let ws = cfg.websocket;
    *state = None;
    state.get_or_insert_with(|| TunnelState(Tunnel {
        c2b: Dir::new(client_buf, ws.then_some(true)),
        b2c: Dir::new(backend_buf, ws.then_some(false)),
        closed_first: None,
        closing: false,
        polls: 0,
        client_hup: false,
        backend_hup: false,
        ending: None,
        rng: Rng::new(cfg.random_seed),
        pings_sent: 0,
        ping_round: now,
    }))
}

/// The loop of [`run`], on a tunnel made at `now`.
fn drive<'a, C, B, F, R>(
    t: &mut Tunnel<'a, 'a>,
    mut clock: Clock,
    mut now: u64,
    client: &mut C,
    backend: &mut B,
    cfg: &Config,
    mut should_stop: F,
) -> Stats
where
    C: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
    F: FnMut() -> R,
    R: Into<Stop>,
{
    let ws = cfg.websocket;
    let mut last_activity = now;
    let mut next_tick = now;
    let tick = cfg.tick_ms.max(1);
    let ping_interval = cfg.ping_interval_ms.filter(|_| ws);

    loop {
        // 1. Move bytes without waiting.
        let moved_before = t.moved();
        let ending = t.ending.is_some();
        for _ in 0..PASSES_PER_ROUND {
            let mut progress =
                match step(&mut t.c2b, client, backend, Side::Client, t.closing, ending) {
                    Ok(p) => p,
                    Err(f) => return t.fail(f),
                };
            progress |= match step(&mut t.b2c, backend, client, Side::Backend, t.closing, ending) {
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
        if ws {
            t.ws_update();
        }
        if ws && t.ending.is_none() && t.c2b.close_handshake_done() && t.b2c.close_handshake_done() {
            // Both peers' Close frames went through whole: the close
            // handshake is over, and the server side closes the TCP
            // connections (RFC 6455 §7.1.1) rather than wait for the client.
            return t.finish(EndReason::Closed, 0);
        }
        if cfg.half_close {
            // While ending, a failed shutdown only ends that direction.
            if let Err(f) = propagate_eof(&mut t.c2b, backend, Side::Backend) {
                if t.ending.is_none() {
                    return t.fail(f);
                }
                t.c2b.shut = true;
            }
            if let Err(f) = propagate_eof(&mut t.b2c, client, Side::Client) {
                if t.ending.is_none() {
                    return t.fail(f);
                }
                t.b2c.shut = true;
            }
            if t.c2b.shut && t.b2c.shut {
                let reason = t.ending.map_or(EndReason::Closed, |e| e.reason);
                return t.finish(reason, 0);
            }
        } else if t.ending.is_none() {
            if !t.closing && (t.c2b.eof || t.b2c.eof) {
                t.closing = true;
                last_activity = now;
                t.stop_pinging();
            }
            if t.closing && !t.c2b.wants_flush() && !t.b2c.wants_flush() {
                return t.finish(EndReason::Closed, 0);
            }
        }

        // 3. Timers.
        if now >= next_tick {
            match should_stop().into() {
                Stop::No => {}
                Stop::GoingAway if ws => {
                    t.start_ending(EndReason::GoingAway, now, cfg.close_wait_ms, true);
                }
                Stop::Shutdown if ws => {
                    let wait = cfg.close_wait_ms.min(SHUTDOWN_CLOSE_MS);
                    t.start_ending(EndReason::GoingAway, now, wait, false);
                }
                Stop::Now | Stop::GoingAway | Stop::Shutdown => {
                    return t.finish(EndReason::Stopped, 0)
                }
            }
            next_tick = now.saturating_add(tick);
        }
        let mut wait = next_tick.saturating_sub(now);
        if t.ending.is_none() {
            let limit = if t.closing {
                Some(
                    cfg.idle_timeout_ms
                        .map_or(cfg.close_linger_ms, |i| i.min(cfg.close_linger_ms)),
                )
            } else {
                cfg.idle_timeout_ms
            };
            if let Some(limit) = limit {
                let deadline = last_activity.saturating_add(limit);
                if now < deadline {
                    wait = wait.min(deadline - now);
                } else if ws && cfg.idle_close_frame && !t.closing {
                    t.start_ending(EndReason::Idle, now, cfg.close_wait_ms, false);
                } else {
                    return t.finish(EndReason::Idle, 0);
                }
            }
        }
        if let Some(interval) = ping_interval.filter(|_| !t.closing && t.ending.is_none()) {
            if t.pings(now, last_activity, interval) {
                t.start_ending(EndReason::PingTimeout, now, cfg.close_wait_ms, false);
            } else {
                wait = wait.min(t.ping_wake(last_activity, interval).saturating_sub(now));
            }
        }
        if let Some(e) = t.ending {
            if let Some(reason) = t.progress_ending(now) {
                return t.finish(reason, 0);
            }
            wait = wait.min(e.deadline.saturating_sub(now));
        }
        if t.ready() {
            wait = 0;
        }

        // 4. Wait.
        let events = |i: bool, o: bool| {
            (if i { sys::POLLIN } else { 0 }) | (if o { sys::POLLOUT } else { 0 })
        };
        // A side with nothing to wait for stays in the set with no events
        // until it reports POLLHUP: POLLERR still reaches us, so a peer that
        // resets while the other direction is stalled ends the tunnel.
        let watch = |fd: sys::Fd, ev: i16, hup: bool| {
            if ev == 0 && !hup {
                sys::PollFd { fd, events: 0, revents: 0 }
            } else {
                sys::pollfd(fd, ev)
            }
        };
        let mut fds = [
            watch(
                client.fd(),
                events(t.c2b.poll_in(t.closing), t.b2c.poll_out()),
                t.client_hup,
            ),
            watch(
                backend.fd(),
                events(t.b2c.poll_in(t.closing), t.c2b.poll_out()),
                t.backend_hup,
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
                    // Quiet for a while: give the pipes and the buffers'
                    // pages back.
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
            if hup && pfd.events == 0 {
                match side {
                    Side::Client => t.client_hup = true,
                    Side::Backend => t.backend_hup = true,
                }
            }
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
