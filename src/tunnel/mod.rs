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
//! # Turns, and who drives them
//!
//! A tunnel ([`Tunnel`]) is a state machine over caller-owned state: it
//! owns no descriptor and never waits. Its driver feeds it what a wait
//! reported ([`Tunnel::mark`]: readable, writable, hang-up, error per side)
//! and turns it ([`Tunnel::turn`]) when something was reported or its
//! deadline came; each turn (1) runs a few passes of "flush, read, flush"
//! for both directions without waiting, (2) checks the end conditions and
//! the timers (should_stop every tick, idle timeout, pings, lifetime, the
//! quiet release of pipes and buffer memory after [`QUIET_MS`]), then (3)
//! says what to wait for ([`Wait`]) or that the tunnel ended
//! ([`Turn::Done`]). Two drivers share it:
//!
//! - the threaded loop ([`run`]), for tunnels that stay on their httpd
//!   worker (TLS, HTTP/2, filters): poll() on the two descriptors, POLLIN
//!   on a source only when it is not known readable, not at EOF and its
//!   buffer has room; POLLOUT on a destination only when bytes are pending
//!   and the last write could not take them all. A descriptor with nothing
//!   to wait for is left out of the poll set entirely (`fd = -1`), so a
//!   hung-up socket (POLLHUP is reported whatever the events) cannot wake
//!   the loop for nothing. When work is still possible without waiting (a
//!   source with hidden input), the wait is 0, so the other direction and
//!   the timers are served too;
//! - the reactor ([`crate::reactor`]), for plain-socket tunnels that left
//!   their worker: epoll, edge-triggered, both descriptors registered once
//!   for reading and writing; a tunnel made with `edge` reads a spliced
//!   source until it answers AGAIN (a short splice may have stopped at the
//!   pipe, and no new edge would come for bytes already there), and its
//!   buffers come from a pool only while bytes are pending.
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
//! [`FrameTracker`](crate::frames::FrameTracker) (client→backend: masked
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
//! ([`FrameTracker::skip`](crate::frames::FrameTracker::skip)), and the next header is read once the pipe has
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
//!   arrives ([`FrameTracker::held`](crate::frames::FrameTracker::held)) and taken out of the buffer whole;
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

use crate::sys::{Errno, Fd, FdIo, Socket};

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

/// A plain socket in non-blocking mode ([`crate::sys::Socket`]), read and
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
    /// WebSocket: a message longer than [`Config::max_message_size`]
    /// (Close 1009 to its sender, 1001 to the other side).
    MessageTooBig,
    /// WebSocket: the client sent messages faster than
    /// [`Config::max_message_rate`] allows (Close 1008 to it, 1001 to the
    /// backend).
    RateLimited,
    /// The tunnel reached [`Config::max_lifetime_ms`] (WebSocket: Close 1001
    /// to both sides).
    Lifetime,
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
            EndReason::MessageTooBig => c"message-too-big",
            EndReason::RateLimited => c"rate-limited",
            EndReason::Lifetime => c"lifetime",
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
    /// Payload bytes of the largest data message (all its fragments) each
    /// side sent (a message cut by a limit counts up to its announced size).
    pub largest_message_from_client: u64,
    /// The same for the backend.
    pub largest_message_from_backend: u64,
    /// Round trips of the tunnel's Pings to the client (ms): the last one
    /// and the largest; None before the first answer.
    pub ping_rtt_client_last_ms: Option<u32>,
    /// See above.
    pub ping_rtt_client_max_ms: Option<u32>,
    /// The same for the backend.
    pub ping_rtt_backend_last_ms: Option<u32>,
    /// See above.
    pub ping_rtt_backend_max_ms: Option<u32>,
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
    /// WebSocket: a message (all its fragments) longer than this, from
    /// either side, ends the tunnel at its header, before any of it is
    /// relayed ([`EndReason::MessageTooBig`]). None: no limit.
    pub max_message_size: Option<u64>,
    /// WebSocket: the client's messages (and control frames but the
    /// module's own Pongs) per second, and the burst (a token bucket);
    /// faster ends the tunnel ([`EndReason::RateLimited`]). None: no limit.
    pub max_message_rate: Option<(u32, u32)>,
    /// End the tunnel this long after it began, at a random moment within
    /// the last tenth ([`EndReason::Lifetime`]). None: never.
    pub max_lifetime_ms: Option<u64>,
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
            max_message_size: None,
            max_message_rate: None,
            max_lifetime_ms: None,
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

mod buffer;
mod dir;
mod engine;
mod splice;
mod ws;

pub use buffer::{BufPool, Buffer};
pub(crate) use splice::near_fd_limit;
pub use engine::{run, run_in, Tunnel, TunnelState, Turn, Wait, QUIET_MS};

#[cfg(test)]
mod tests;
