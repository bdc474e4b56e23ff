//! One direction of the tunnel: its state (readable, eof, writable, shut),
//! reading into the buffer, writing out of it, WebSocket tracking of what
//! passes.

use super::buffer::Buffer;
use super::splice::DEFAULT_PIPE_CAP;
use super::ws::Frames;
use super::{EndReason, Endpoint, Io};
use crate::frames;
use crate::sys::{self, Errno, Fd};

/// Reads of a source with hidden input per pass, before the flush.
pub(super) const FILLS_PER_PASS: usize = 8;

/// Which endpoint of a direction failed.
pub(super) enum Broke {
    Src(Errno),
    Dst(Errno),
}

pub(super) struct Dir<'a> {
    pub(super) buf: Buffer<'a>,
    pub(super) readable: bool,
    /// The last poll reported POLLHUP for the source.
    pub(super) src_hup: bool,
    /// Reads that answered AGAIN right after a POLLHUP, in a row.
    pub(super) hup_again: u8,
    pub(super) eof: bool,
    pub(super) writable: bool,
    /// The last poll reported POLLHUP for the destination.
    pub(super) dst_hup: bool,
    pub(super) shut: bool,
    /// While closing without half-close: this direction gave up flushing.
    pub(super) abandoned: bool,
    /// The zero-copy path: the pipe (while in use), the bytes in it, its
    /// capacity.
    pub(super) pipe: Option<sys::Pipe>,
    pub(super) in_pipe: usize,
    pub(super) pipe_cap: usize,
    /// A splice into the pipe answered AGAIN while it held bytes: it may
    /// be full; the source is read again after the next write out of it.
    pub(super) pipe_full: bool,
    /// splice is not to be used (any more) in this direction.
    pub(super) splice_off: bool,
    /// The pipe was asked to grow already.
    pub(super) pipe_grown: bool,
    pub(super) read: u64,
    pub(super) written: u64,
    pub(super) spliced: u64,
    pub(super) pipes: u64,
    /// WebSocket tracking (None: a plain tunnel).
    pub(super) ws: Option<Frames>,
    /// The last bytes the tunnel put in itself, as a range of the output
    /// stream (`written` coordinates), and how many of such bytes were
    /// written: they are not traffic.
    pub(super) inj_from: u64,
    pub(super) inj_to: u64,
    pub(super) injected_written: u64,
    /// Readiness comes edge-triggered: see [`super::Tunnel::new`].
    pub(super) edge: bool,
    /// Edge-triggered: the source's peer ended its input (EPOLLRDHUP or
    /// EPOLLHUP came). Its end of input comes after the data: the source is
    /// read until it says so, since no later edge would tell.
    pub(super) fin_seen: bool,
    /// WebSocket: [`super::Config::max_message_size`].
    pub(super) limit: Option<u64>,
    /// WebSocket, client→backend: [`super::Config::max_message_rate`].
    pub(super) bucket: Option<Bucket>,
    /// The time of the turn under way (ms), for the bucket.
    pub(super) now: u64,
}

/// A token bucket in thousandths of a message.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    milli: u64,
    cap: u64,
    per_sec: u64,
    last: u64,
}

impl Bucket {
    pub(super) fn new(per_sec: u32, burst: u32, now: u64) -> Self {
        let cap = u64::from(burst.max(1)).saturating_mul(1000);
        Bucket {
            milli: cap,
            cap,
            per_sec: u64::from(per_sec),
            last: now,
        }
    }

    /// One message at `now`: false when the bucket is empty.
    pub(super) fn take(&mut self, now: u64) -> bool {
        let refill = now.saturating_sub(self.last).saturating_mul(self.per_sec);
        self.milli = self.milli.saturating_add(refill).min(self.cap);
        self.last = self.last.max(now);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

impl<'a> Dir<'a> {
    /// `ws`: track the frames (`Some(masked)`: whether this direction's
    /// frames are masked, i.e. it comes from the client). Not inlined: see
    /// [`init`].
    #[inline(never)]
    pub(super) fn new(buf: Buffer<'a>, ws: Option<bool>, limit: Option<u64>, bucket: Option<Bucket>) -> Self {
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
            edge: false,
            fin_seen: false,
            limit: limit.filter(|_| ws.is_some()),
            bucket: bucket.filter(|_| ws.is_some()),
            now: 0,
        };
        // The bytes already pending are frames too.
        let pending = d.buf.len();
        d.track(pending);
        d
    }

    pub(super) fn can_read(&self, closing: bool) -> bool {
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
    pub(super) fn splice_allowance(&self) -> usize {
        self.ws.as_ref().map_or(usize::MAX, Frames::splice_allowance)
    }

    /// A pipe, or buffer memory, worth giving back when quiet.
    pub(super) fn holds(&self) -> bool {
        self.pipe.is_some() || self.buf.holds()
    }

    /// Bytes read and not yet written.
    pub(super) fn pending(&self) -> usize {
        self.buf.len().saturating_add(self.in_pipe)
    }

    /// WebSocket: this direction's source sent a Close frame, the frame has
    /// passed whole (nothing may follow it) and every byte of it is written.
    pub(super) fn close_handshake_done(&self) -> bool {
        self.ws
            .as_ref()
            .is_some_and(|w| w.tracker.close_seen() && w.tracker.at_boundary())
            && self.pending() == 0
    }

    /// The last pending bytes that may not be written yet (they may be the
    /// start of the tunnel's own Pong).
    pub(super) fn held(&self) -> usize {
        self.ws.as_ref().map_or(0, |w| {
            let held = w.tracker.held();
            if (self.limit.is_some() || self.bucket.is_some()) && !w.dropping {
                // With a limit, a header is relayed only whole: the stream
                // can then be cut in front of it.
                held.max(w.tracker.partial_header())
            } else {
                held
            }
        })
    }

    /// Pending bytes that may be written now.
    pub(super) fn sendable(&self) -> usize {
        self.pending().saturating_sub(self.held())
    }

    pub(super) fn ready(&self, closing: bool) -> bool {
        (self.readable && self.can_read(closing)) || (self.writable && self.wants_flush())
    }

    pub(super) fn wants_flush(&self) -> bool {
        self.sendable() > 0 && !self.abandoned
    }

    /// Bytes moved that are traffic: read (but not the tunnel's own Pongs)
    /// and written (but not what the tunnel put in itself).
    pub(super) fn traffic(&self) -> u64 {
        let swallowed = self.ws.as_ref().map_or(0, |w| w.swallowed);
        self.read
            .wrapping_sub(swallowed)
            .wrapping_add(self.written)
            .wrapping_sub(self.injected_written)
    }

    /// `n` more bytes were written.
    pub(super) fn count_written(&mut self, n: usize) {
        let from = self.written;
        let to = from.saturating_add(n as u64);
        let ours = to.min(self.inj_to).saturating_sub(from.max(self.inj_from));
        self.injected_written = self.injected_written.saturating_add(ours);
        self.written = to;
    }

    /// Show the last `n` pending bytes (just read) to the tracker, taking
    /// the tunnel's own Pongs out of the buffer.
    pub(super) fn track(&mut self, n: usize) {
        let Some(w) = self.ws.as_mut() else {
            return;
        };
        let mut end = self.buf.end;
        let mut pos = end.saturating_sub(n).max(self.buf.start);
        while pos < end {
            let Some(bytes) = self.buf.data().get(pos..end) else {
                break;
            };
            let f = w.tracker.feed(bytes);
            if f.consumed == 0 {
                break;
            }
            pos = pos.saturating_add(f.consumed);
            let mut cut = None;
            if let Some(h) = f.header.filter(|h| !h.opcode.is_control()) {
                w.message_size = if h.opcode == frames::Opcode::Continuation {
                    w.message_size.saturating_add(h.payload_len)
                } else {
                    h.payload_len
                };
                w.largest = w.largest.max(w.message_size);
                if self.limit.is_some_and(|l| w.message_size > l) {
                    // In front of this header, none of it relayed (held).
                    cut = Some((pos.saturating_sub(usize::from(h.header_len)), EndReason::MessageTooBig));
                }
            }
            if let (Some(e), Some(b), None) = (f.end, self.bucket.as_mut(), cut) {
                let counts = if e.header.opcode.is_control() { !e.own_pong } else { e.message_end };
                if counts && !b.take(self.now) {
                    // After this frame: it went by, nothing after it will.
                    cut = Some((pos, EndReason::RateLimited));
                }
            }
            if let Some((at, why)) = cut {
                // The rest is seen by the tracker (for the peer's Close)
                // but never relayed; the Close of ours goes in at the cut.
                w.sealed_messages = Some(w.tracker.messages());
                let mut rest = self.buf.data().get(pos..end).unwrap_or(&[]);
                while !rest.is_empty() {
                    let f = w.tracker.feed(rest);
                    rest = rest.get(f.consumed.max(1)..).unwrap_or(&[]);
                }
                w.tracker.cancel_pong();
                w.dropping = true;
                w.broke = Some(why);
                self.buf.truncate(at);
                return;
            }
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
    pub(super) fn inject<F>(&mut self, build: F) -> bool
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

    pub(super) fn poll_in(&self, closing: bool) -> bool {
        !self.readable && self.can_read(closing)
    }

    pub(super) fn poll_out(&self) -> bool {
        !self.writable && self.wants_flush()
    }

    /// Write pending bytes (`dst_fd`: the destination's splice socket).
    /// Ok(true) when some moved.
    pub(super) fn flush<D: Endpoint + ?Sized>(
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


    /// The source has nothing now. True when that ends its input: POLLHUP
    /// yet nothing to read, twice, means it has ended even if it does not
    /// say so. (Once is allowed: a raw endpoint's filter drain ends with
    /// AGAIN.)
    pub(super) fn again(&mut self, hup: bool) -> bool {
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


    /// Read into the buffer, or splice into the pipe when `fds` (the source
    /// and destination sockets) allow it. Ok(true) when bytes came or EOF
    /// was seen.
    pub(super) fn fill<S: Endpoint + ?Sized>(
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
                self.readable = src.hidden_input() || n == cap || self.fin_seen;
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
    pub(super) fn pass<S, D>(&mut self, src: &mut S, dst: &mut D, closing: bool) -> Result<bool, Broke>
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
