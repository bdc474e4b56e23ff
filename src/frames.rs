//! WebSocket (RFC 6455) frame boundaries in a tunnelled byte stream.
//!
//! The tunnel copies bytes and never changes them. A few features still need
//! to know where the frames are: a keep-alive Ping sent when a tunnel has
//! been silent, a `Close 1001` sent by the idle timeout or a graceful drain,
//! the message counts and close code in the per-tunnel figures. Each of them
//! may only put a frame into a stream *between* two frames, so that neither
//! side ever sees a byte it could not have got from a compliant peer; and
//! the Pongs that answer the module's own Pings must be taken out of the
//! stream, whole.
//!
//! [`FrameTracker`] follows one direction's stream (one tracker per
//! direction). It reads headers only and skips payloads, so it costs a few
//! branches per frame whatever the frame's size; it never allocates and it is
//! `Copy`. It accepts the stream in chunks split anywhere (down to one byte)
//! and, with [`FrameTracker::feed`], stops right after each frame header and
//! right after each frame's last byte, so the caller learns the exact
//! position of every frame in its own buffer.
//!
//! The `write_*` functions build the frames the module sends, into caller
//! buffers: frames towards the backend are masked (the module speaks as the
//! client there), frames towards the client are not.
//!
//! # What the tracker accepts
//!
//! Every stream a compliant peer can send, including fragmented messages
//! with control frames between the fragments, and RSV bits (extensions such
//! as permessage-deflate set RSV1; the tracker reports the bits and does not
//! judge them). Payload lengths not written in the minimal number of bytes
//! are accepted too: the frame's extent is still certain.
//!
//! The tracker *loses sync* (see [`Violation`]) on what would make the frame
//! layout or the message state uncertain: a reserved opcode, a control frame
//! that is fragmented or longer than 125 bytes, a mask bit that does not
//! match the direction, a 64-bit length with its most significant bit set,
//! a continuation frame outside a fragmented message, or a new data message
//! starting inside one. From then on it passes every byte without looking
//! and answers "not at a boundary" forever: the tunnel keeps relaying bytes
//! but never injects anything into that stream again. Nothing here panics,
//! whatever the input.
//!
//! # Integration with the tunnel
//!
//! Each direction `d` owns a buffer with pending bytes `[start, end)` and
//! keeps one more index, `fed`: the bytes `[start, fed)` have been given to
//! `d.tracker` (`FrameTracker::from_client()` for client→backend,
//! `FrameTracker::from_backend()` for backend→client). Rules:
//!
//! 1. Feed every byte as soon as it is read, before it is written on.
//! 2. Never write a byte past `fed - tracker.held()`: the last `held()` fed
//!    bytes may still turn out to be the module's own Pong.
//! 3. Inject only when `fed == end` (every pending byte has been fed) and
//!    [`FrameTracker::can_inject`] is true, by appending the whole frame at
//!    `end` (or writing it directly when nothing is pending). Injected bytes
//!    are *not* fed: move `fed` past them.
//!
//! ```text
//! after a read into d.buf:
//!     while d.fed < d.end:
//!         f = d.tracker.feed(&d.buf[d.fed..d.end]); d.fed += f.consumed
//!         if let Some(e) = f.end:
//!             if e.own_pong:                      // answer to our ping: drop it
//!                 n = e.header.frame_len()        // <= 30 bytes, all unsent
//!                 d.buf.remove(d.fed - n .. d.fed); d.fed -= n; d.end -= n
//!                 ping_answered[d's source side] = true
//!         if let Some(v) = f.violation: log once (tracker now passes bytes blindly)
//! flush d: write d.buf[d.start .. d.fed - d.tracker.held()]
//! figures: messages = d.tracker.messages(); close code = d.tracker.close_code()
//!
//! tunnel silent for the ping interval, no ping outstanding:
//!     token = 8 fresh bytes
//!     // to the client: into backend→client (b2c), unmasked; answer comes on c2b
//!     if b2c.fed == b2c.end && b2c.tracker.can_inject() && room(b2c) >= MAX_CONTROL_FRAME:
//!         b2c.end += write_ping(room(b2c), &token, None); b2c.fed = b2c.end
//!         c2b.tracker.expect_pong(&token)
//!     // to the backend: into c2b, masked with a fresh key; answer comes on b2c
//!     if c2b.fed == c2b.end && c2b.tracker.can_inject() && room(c2b) >= MAX_CONTROL_FRAME:
//!         c2b.end += write_ping(room(c2b), &token, Some(key)); c2b.fed = c2b.end
//!         b2c.tracker.expect_pong(&token)
//!     (a stream not at a boundary now gets its ping at a later round, or none)
//! no answer within the interval: close as below, both ways
//!
//! Close 1001 in direction d (idle timeout, graceful drain, dead ping):
//!     if d.tracker.close_seen(): the peer's own Close already went: send none
//!     else wait (bounded) until d.fed == d.end && d.tracker.can_inject(), then
//!         append write_close(room, CLOSE_GOING_AWAY, mask_if_towards_backend)
//!         and forward nothing more from d's source (read and discard, e.g.
//!         to see that peer's answering Close): nothing may follow a Close
//!     no boundary in time: end the connection without a Close frame
//! ```
//!
//! Ping tokens: a tracker matches the answer on the stream coming *from* the
//! side that was pinged, i.e. the ping sent into b2c is answered on c2b. A
//! matched Pong disarms the tracker; a Pong with another payload (the peer's
//! own, or an answer to the other side's ping) passes through untouched.

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// The longest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest control frame: header with mask key, and 125 bytes.
pub const MAX_CONTROL_FRAME: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;

/// The longest Pong payload [`FrameTracker::expect_pong`] can watch for.
pub const MAX_PONG_TOKEN: usize = 16;

/// Close status: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;

/// Close status: the endpoint is going away (idle timeout, server stop).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// A frame's opcode (the reserved values are never represented: they are
/// a [`Violation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0x0: a further fragment of a data message.
    Continuation,
    /// 0x1: the first (or only) frame of a text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: Close.
    Close,
    /// 0x9: Ping.
    Ping,
    /// 0xA: Pong.
    Pong,
}

impl Opcode {
    /// The opcode of the low four bits of `bits`, None when reserved.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits & 0x0F {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub const fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, Ping or Pong.
    pub const fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A complete frame header as it was on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// FIN: the last frame of its message (always set on control frames).
    pub fin: bool,
    /// RSV1..RSV3 as bits 2..0 (RSV1 = 4): set by extensions, not judged.
    pub rsv: u8,
    pub opcode: Opcode,
    /// The masking key, present exactly on client→server frames.
    pub mask: Option<[u8; 4]>,
    /// Payload bytes after the header (< 2^63).
    pub payload_len: u64,
    /// Header bytes: 2 + 0, 2 or 8 (length) + 0 or 4 (mask key).
    pub header_len: u8,
}

impl FrameHeader {
    /// Header and payload: the whole frame's size on the wire.
    pub const fn frame_len(&self) -> u64 {
        // payload_len < 2^63, header_len <= 14: no overflow.
        self.payload_len.saturating_add(self.header_len as u64)
    }
}

/// A frame that has just ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameEnd {
    pub header: FrameHeader,
    /// This frame completed a data message (a final Text, Binary or
    /// Continuation frame); [`FrameTracker::messages`] counted it.
    pub message_end: bool,
    /// This is the Pong announced with [`FrameTracker::expect_pong`]: the
    /// last `header.frame_len()` bytes fed are that frame, none of them has
    /// been released by [`FrameTracker::held`], and the caller should drop
    /// them. The tracker is disarmed.
    pub own_pong: bool,
}

/// Why a tracker lost sync. The byte that revealed it is the last one
/// [`Feed::consumed`] counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Violation {
    /// Opcode 0x3-0x7 or 0xB-0xF (the value).
    ReservedOpcode(u8),
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame with a payload longer than 125 bytes.
    ControlTooLong,
    /// The mask bit (the value given) is not what this direction requires.
    MaskMismatch { masked: bool },
    /// A 64-bit payload length with its most significant bit set.
    LengthOverflow,
    /// A continuation frame while no fragmented message was open.
    UnexpectedContinuation,
    /// A Text or Binary frame while a fragmented message was still open.
    UnfinishedMessage,
}

/// What one [`FrameTracker::feed`] call did.
///
/// `header` and `end` both describe the position right after the last
/// consumed byte; a frame with an empty payload gives both at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[must_use]
pub struct Feed {
    /// Bytes taken from the input, from its start. Less than all of it only
    /// when the call stopped at one of the events below; more than 0
    /// whenever the input was not empty.
    pub consumed: usize,
    /// A frame header has just completed.
    pub header: Option<FrameHeader>,
    /// A frame has just ended: the stream is at a frame boundary.
    pub end: Option<FrameEnd>,
    /// The stream has just become unreadable (reported once; see
    /// [`FrameTracker::lost_sync`] afterwards).
    pub violation: Option<Violation>,
}

/// Follows the frames of one direction of a WebSocket connection.
///
/// See the [module documentation](self) for what it accepts and how the
/// tunnel uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTracker {
    /// Frames in this direction must be masked (client→server).
    masked: bool,
    lost: Option<Violation>,
    /// The header being read: `hdr[..hdr_len]`.
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: u8,
    /// The opcode of the header being read (valid when `hdr_len >= 1`).
    opcode: Opcode,
    /// The frame whose payload is being skipped; None between frames and
    /// while a header is read.
    frame: Option<FrameHeader>,
    /// Payload bytes of `frame` still to come (> 0 while `frame` is Some).
    remaining: u64,
    /// Payload bytes of `frame` already seen.
    offset: u64,
    /// A data message has begun without FIN and its final frame has not
    /// ended yet.
    in_message: bool,
    close_seen: bool,
    close_code: Option<u16>,
    /// The first byte of the close code being read.
    close_hi: u8,
    /// The Pong payload announced by `expect_pong`, when `armed`.
    token: [u8; MAX_PONG_TOKEN],
    token_len: u8,
    armed: bool,
    /// The frame being read began while armed and is a Pong: hold it.
    candidate: bool,
    /// The current Pong has the token's length and matches it so far.
    matching: bool,
    frames: u64,
    messages: u64,
    pings: u64,
    pongs: u64,
}

/// The mask key byte for payload offset `off`.
const fn mask_byte(key: Option<[u8; 4]>, off: u64) -> u8 {
    match key {
        // Byte `off % 4` of the key, big-endian order.
        Some(k) => (u32::from_be_bytes(k) >> (24 - 8 * (off & 3) as u32)) as u8,
        None => 0,
    }
}

impl FrameTracker {
    /// A tracker at the start of a stream. `masked`: this direction's frames
    /// must carry a mask key (client→backend), or must not (backend→client).
    pub const fn new(masked: bool) -> Self {
        FrameTracker {
            masked,
            lost: None,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            opcode: Opcode::Continuation,
            frame: None,
            remaining: 0,
            offset: 0,
            in_message: false,
            close_seen: false,
            close_code: None,
            close_hi: 0,
            token: [0; MAX_PONG_TOKEN],
            token_len: 0,
            armed: false,
            candidate: false,
            matching: false,
            frames: 0,
            messages: 0,
            pings: 0,
            pongs: 0,
        }
    }

    /// For the client→backend stream (masked frames).
    pub const fn from_client() -> Self {
        Self::new(true)
    }

    /// For the backend→client stream (unmasked frames).
    pub const fn from_backend() -> Self {
        Self::new(false)
    }

    /// Whether this direction's frames must be masked.
    pub const fn masked(&self) -> bool {
        self.masked
    }

    /// Take the next bytes of the stream, from the start of `bytes`.
    ///
    /// Stops early right after a frame header completes, right after a
    /// frame ends, or at the byte that breaks the protocol; the caller feeds
    /// the rest (`&bytes[consumed..]`) in a next call. Once sync is lost,
    /// every byte is consumed and nothing is reported.
    pub fn feed(&mut self, bytes: &[u8]) -> Feed {
        let mut out = Feed::default();
        if self.lost.is_some() {
            out.consumed = bytes.len();
            return out;
        }
        let mut pos = 0usize;
        while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
            match self.frame {
                None => {
                    let b = rest.first().copied().unwrap_or(0);
                    pos += 1;
                    match self.header_byte(b) {
                        Err(v) => {
                            self.lost = Some(v);
                            out.violation = Some(v);
                            break;
                        }
                        Ok(None) => {}
                        Ok(Some(h)) => {
                            out.header = Some(h);
                            if h.payload_len == 0 {
                                out.end = Some(self.finish(h));
                            }
                            break;
                        }
                    }
                }
                Some(h) => {
                    let n =
                        usize::try_from(self.remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    if self.matching || (h.opcode == Opcode::Close && self.offset < 2) {
                        for (i, &b) in rest.iter().take(n).enumerate() {
                            if !self.inspect(&h, self.offset.saturating_add(i as u64), b) {
                                break;
                            }
                        }
                    }
                    pos += n;
                    self.offset = self.offset.saturating_add(n as u64);
                    self.remaining = self.remaining.saturating_sub(n as u64);
                    if self.remaining == 0 {
                        out.end = Some(self.finish(h));
                        break;
                    }
                }
            }
        }
        out.consumed = pos;
        out
    }

    /// One payload byte at offset `off` of the control frame `h`; false
    /// when no later byte of this frame is of interest.
    fn inspect(&mut self, h: &FrameHeader, off: u64, b: u8) -> bool {
        let v = b ^ mask_byte(h.mask, off);
        let mut more = false;
        if h.opcode == Opcode::Close {
            if off == 0 {
                self.close_hi = v;
                more = true;
            } else if off == 1 {
                self.close_code = Some(u16::from_be_bytes([self.close_hi, v]));
            }
        }
        if self.matching {
            let want = usize::try_from(off).ok().and_then(|i| self.token.get(i));
            if want == Some(&v) {
                more = true;
            } else {
                self.matching = false;
            }
        }
        more
    }

    fn hb(&self, i: usize) -> u8 {
        self.hdr.get(i).copied().unwrap_or(0)
    }

    /// One header byte. Ok(Some) when the header is complete.
    fn header_byte(&mut self, b: u8) -> Result<Option<FrameHeader>, Violation> {
        if let Some(slot) = self.hdr.get_mut(usize::from(self.hdr_len)) {
            *slot = b;
        }
        self.hdr_len = self.hdr_len.saturating_add(1);
        match self.hdr_len {
            1 => {
                let op = Opcode::from_bits(b).ok_or(Violation::ReservedOpcode(b & 0x0F))?;
                let fin = b & 0x80 != 0;
                if op.is_control() && !fin {
                    return Err(Violation::FragmentedControl);
                }
                match op {
                    Opcode::Continuation if !self.in_message => {
                        return Err(Violation::UnexpectedContinuation)
                    }
                    Opcode::Text | Opcode::Binary if self.in_message => {
                        return Err(Violation::UnfinishedMessage)
                    }
                    _ => {}
                }
                self.opcode = op;
                self.candidate = self.armed && op == Opcode::Pong;
                return Ok(None);
            }
            2 => {
                let masked = b & 0x80 != 0;
                if masked != self.masked {
                    return Err(Violation::MaskMismatch { masked });
                }
                if self.opcode.is_control() && usize::from(b & 0x7F) > MAX_CONTROL_PAYLOAD {
                    return Err(Violation::ControlTooLong);
                }
                // A Pong of another length is not ours: release it now.
                self.candidate = self.candidate && b & 0x7F == self.token_len;
            }
            3 if self.hb(1) & 0x7F == 127 && b & 0x80 != 0 => {
                return Err(Violation::LengthOverflow);
            }
            _ => {}
        }
        let len7 = self.hb(1) & 0x7F;
        let ext: u8 = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + ext + if self.masked { 4 } else { 0 };
        if self.hdr_len < need {
            return Ok(None);
        }
        let payload_len = match len7 {
            126 => u64::from(u16::from_be_bytes([self.hb(2), self.hb(3)])),
            127 => u64::from_be_bytes([
                self.hb(2),
                self.hb(3),
                self.hb(4),
                self.hb(5),
                self.hb(6),
                self.hb(7),
                self.hb(8),
                self.hb(9),
            ]),
            n => u64::from(n),
        };
        let k = usize::from(2 + ext);
        let mask = if self.masked {
            Some([self.hb(k), self.hb(k + 1), self.hb(k + 2), self.hb(k + 3)])
        } else {
            None
        };
        let b0 = self.hb(0);
        let h = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: self.opcode,
            mask,
            payload_len,
            header_len: need,
        };
        self.hdr_len = 0;
        match h.opcode {
            Opcode::Text | Opcode::Binary if !h.fin => self.in_message = true,
            Opcode::Close => {
                self.close_seen = true;
                self.close_code = None;
            }
            _ => {}
        }
        self.matching = self.candidate && self.armed && payload_len == u64::from(self.token_len);
        self.candidate = false;
        self.frame = Some(h);
        self.remaining = payload_len;
        self.offset = 0;
        Ok(Some(h))
    }

    /// The frame `h` has ended.
    fn finish(&mut self, h: FrameHeader) -> FrameEnd {
        self.frames = self.frames.saturating_add(1);
        let mut message_end = false;
        match h.opcode {
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                if h.fin {
                    message_end = true;
                    self.in_message = false;
                    self.messages = self.messages.saturating_add(1);
                }
            }
            Opcode::Ping => self.pings = self.pings.saturating_add(1),
            Opcode::Pong => self.pongs = self.pongs.saturating_add(1),
            Opcode::Close => {}
        }
        let own_pong = self.matching;
        if own_pong {
            self.armed = false;
        }
        self.matching = false;
        self.frame = None;
        self.remaining = 0;
        self.offset = 0;
        FrameEnd {
            header: h,
            message_end,
            own_pong,
        }
    }

    /// The bytes fed so far end exactly between two frames (also at the
    /// very start). False once sync is lost.
    pub const fn at_boundary(&self) -> bool {
        self.lost.is_none() && self.frame.is_none() && self.hdr_len == 0
    }

    /// A data message has begun with a non-final frame and its final frame
    /// has not ended yet: at a boundary, the stream is between fragments,
    /// where only control frames may be put.
    pub const fn in_fragmented_message(&self) -> bool {
        self.in_message
    }

    /// At a frame boundary outside any fragmented message: a whole new data
    /// message could start here.
    pub const fn at_message_boundary(&self) -> bool {
        self.at_boundary() && !self.in_message
    }

    /// A control frame (Ping, Close) may be put into the stream right after
    /// the bytes fed so far: at a frame boundary, in sync, and no Close has
    /// passed (nothing may follow a Close).
    pub const fn can_inject(&self) -> bool {
        self.at_boundary() && !self.close_seen
    }

    /// Why sync was lost, if it was.
    pub const fn lost_sync(&self) -> Option<Violation> {
        self.lost
    }

    /// Bytes of a frame header fed but not yet complete (0 between frames,
    /// in a payload, or once sync is lost).
    pub const fn partial_header(&self) -> usize {
        if self.lost.is_none() && self.frame.is_none() {
            self.hdr_len as usize
        } else {
            0
        }
    }

    /// The frame whose payload is being read, if any.
    pub const fn current_frame(&self) -> Option<FrameHeader> {
        self.frame
    }

    /// Payload bytes still to come in the current frame (0 between frames).
    pub const fn remaining_payload(&self) -> u64 {
        self.remaining
    }

    /// How many of the next bytes of the stream may pass without being
    /// looked at ([`skip`](Self::skip) instead of [`feed`](Self::feed)):
    /// the rest of the current frame's payload, unless the tracker reads
    /// that payload (a Close code not seen yet, a Pong being matched);
    /// everything once sync is lost; 0 between frames and in headers.
    pub fn skippable(&self) -> u64 {
        if self.lost.is_some() {
            return u64::MAX;
        }
        match self.frame {
            // A Pong being matched, or a Close whose code is still to come:
            // every byte is read.
            Some(h) if self.matching || (h.opcode == Opcode::Close && self.offset < 2) => 0,
            Some(_) => self.remaining,
            None => 0,
        }
    }

    /// Account for the next `n` bytes of the stream, which the caller moved
    /// without showing them (e.g. spliced); at most
    /// [`skippable`](Self::skippable) of them are taken (`consumed`). Reports
    /// the frame's end when they complete it, like [`feed`](Self::feed).
    pub fn skip(&mut self, n: usize) -> Feed {
        let mut out = Feed::default();
        let take = u64::try_from(n).unwrap_or(u64::MAX).min(self.skippable());
        out.consumed = usize::try_from(take).unwrap_or(n).min(n);
        if self.lost.is_some() || take == 0 {
            return out;
        }
        if let Some(h) = self.frame {
            self.offset = self.offset.saturating_add(take);
            self.remaining = self.remaining.saturating_sub(take);
            if self.remaining == 0 {
                out.end = Some(self.finish(h));
            }
        }
        out
    }

    /// How many of the last bytes fed must not be forwarded yet, because
    /// they may be the start of the Pong announced by
    /// [`expect_pong`](Self::expect_pong) (at most `MAX_HEADER_LEN +
    /// MAX_PONG_TOKEN`). Drops to 0 as soon as the frame is known not to be
    /// it; when it is, [`FrameEnd::own_pong`] says so. Always 0 when not
    /// armed or when the frame began before arming.
    pub fn held(&self) -> usize {
        if self.lost.is_some() {
            return 0;
        }
        match self.frame {
            Some(h) if self.matching => {
                usize::from(h.header_len).saturating_add(usize::try_from(self.offset).unwrap_or(0))
            }
            Some(_) => 0,
            None if self.candidate => usize::from(self.hdr_len),
            None => 0,
        }
    }

    /// Watch for a Pong whose payload is exactly `token` (the payload of a
    /// Ping the module sent the peer that writes this stream), from the next
    /// frame that begins on. False (and nothing changed) when `token` is
    /// longer than [`MAX_PONG_TOKEN`]. Replaces any earlier token: a frame
    /// already under way is no longer watched (its held bytes are released
    /// and it passes on, as an unsolicited Pong, which is legal).
    pub fn expect_pong(&mut self, token: &[u8]) -> bool {
        if token.len() > MAX_PONG_TOKEN {
            return false;
        }
        self.candidate = false;
        self.matching = false;
        self.token = [0; MAX_PONG_TOKEN];
        for (d, s) in self.token.iter_mut().zip(token) {
            *d = *s;
        }
        self.token_len = token.len() as u8;
        self.armed = true;
        true
    }

    /// Stop watching for the Pong (the bytes held, if any, are released).
    pub fn cancel_pong(&mut self) {
        self.armed = false;
        self.candidate = false;
        self.matching = false;
    }

    /// Armed by [`expect_pong`](Self::expect_pong) and not matched yet.
    pub const fn pong_expected(&self) -> bool {
        self.armed
    }

    /// Frames that ended.
    pub const fn frames(&self) -> u64 {
        self.frames
    }

    /// Data messages that ended (counted at their final frame's last byte).
    pub const fn messages(&self) -> u64 {
        self.messages
    }

    /// Ping frames that ended.
    pub const fn pings(&self) -> u64 {
        self.pings
    }

    /// Pong frames that ended, the module's own included.
    pub const fn pongs(&self) -> u64 {
        self.pongs
    }

    /// A Close frame has begun (its header is complete).
    pub const fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// The status code of the last Close frame, once its first two payload
    /// bytes have passed; None for a Close without a code.
    pub const fn close_code(&self) -> Option<u16> {
        self.close_code
    }
}

/// Why a frame could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteError {
    /// The buffer is shorter than the frame (`needed` bytes).
    BufferTooSmall { needed: usize },
    /// A control frame's payload is longer than 125 bytes.
    ControlTooLong,
    /// A control frame without FIN.
    FragmentedControl,
    /// A Close code an endpoint may not send (1005, 1006, 1015, < 1000,
    /// 1016-2999, >= 5000 and the unassigned 1004).
    InvalidCloseCode,
}

/// The header size of a frame with `payload_len` bytes, masked or not.
pub const fn header_len(payload_len: u64, masked: bool) -> usize {
    let len = if payload_len < 126 {
        2
    } else if payload_len <= 0xFFFF {
        4
    } else {
        10
    };
    if masked {
        len + 4
    } else {
        len
    }
}

/// Whether an endpoint may send `code` in a Close frame.
pub const fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Write one frame (minimal length encoding, RSV bits clear) at the start
/// of `buf`; the payload is masked with `mask` when given (frames towards
/// the backend). Returns the frame's size.
pub fn write_frame(
    buf: &mut [u8],
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Result<usize, WriteError> {
    if opcode.is_control() {
        if !fin {
            return Err(WriteError::FragmentedControl);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(WriteError::ControlTooLong);
        }
    }
    let len = payload.len() as u64;
    let hl = header_len(len, mask.is_some());
    let needed = hl.saturating_add(payload.len());
    let frame = match buf.get_mut(..needed) {
        Some(f) if needed >= hl => f,
        _ => return Err(WriteError::BufferTooSmall { needed }),
    };
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let mut n = 0usize;
    let mut put = |b: u8| {
        if let Some(slot) = hdr.get_mut(n) {
            *slot = b;
        }
        n += 1;
    };
    put(if fin { 0x80 } else { 0 } | opcode.bits());
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        put(m | len as u8);
    } else if len <= 0xFFFF {
        put(m | 126);
        for b in (len as u16).to_be_bytes() {
            put(b);
        }
    } else {
        put(m | 127);
        for b in len.to_be_bytes() {
            put(b);
        }
    }
    if let Some(k) = mask {
        for b in k {
            put(b);
        }
    }
    let (head, body) = frame.split_at_mut(hl);
    for (d, s) in head.iter_mut().zip(hdr.iter()) {
        *d = *s;
    }
    match mask {
        Some(k) => {
            for ((d, s), m) in body.iter_mut().zip(payload).zip(k.iter().cycle()) {
                *d = *s ^ *m;
            }
        }
        None => {
            for (d, s) in body.iter_mut().zip(payload) {
                *d = *s;
            }
        }
    }
    Ok(needed)
}

/// Write a Ping with `payload` (at most 125 bytes). See [`write_frame`].
pub fn write_ping(
    buf: &mut [u8],
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Result<usize, WriteError> {
    write_frame(buf, true, Opcode::Ping, payload, mask)
}

/// Write a Pong with `payload` (at most 125 bytes). See [`write_frame`].
pub fn write_pong(
    buf: &mut [u8],
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Result<usize, WriteError> {
    write_frame(buf, true, Opcode::Pong, payload, mask)
}

/// Write a Close with status `code` and no reason (4 bytes, or 8 masked).
/// See [`write_frame`].
pub fn write_close(buf: &mut [u8], code: u16, mask: Option<[u8; 4]>) -> Result<usize, WriteError> {
    if !valid_close_code(code) {
        return Err(WriteError::InvalidCloseCode);
    }
    write_frame(buf, true, Opcode::Close, &code.to_be_bytes(), mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    // ---- an encoder of our own, independent of write_frame ----

    /// A frame: first byte `b0` (FIN, RSV, opcode) as given, minimal length.
    fn enc(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut v = enc_hdr(b0, mask, payload.len() as u64);
        for (i, &b) in payload.iter().enumerate() {
            v.push(b ^ mask.map_or(0, |k| k[i % 4]));
        }
        v
    }

    /// A frame header only, for any payload length.
    fn enc_hdr(b0: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
        let m = if mask.is_some() { 0x80 } else { 0 };
        let mut v = vec![b0];
        if len < 126 {
            v.push(m | len as u8);
        } else if len < 65536 {
            v.push(m | 126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            v.push(m | 127);
            v.extend_from_slice(&len.to_be_bytes());
        }
        if let Some(k) = mask {
            v.extend_from_slice(&k);
        }
        v
    }

    fn unmask(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        payload
            .iter()
            .enumerate()
            .map(|(i, &b)| b ^ mask.map_or(0, |k| k[i % 4]))
            .collect()
    }

    /// One reported event at an absolute stream position.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Ev {
        pos: usize,
        header: Option<FrameHeader>,
        end: Option<FrameEnd>,
        violation: Option<Violation>,
    }

    /// Feed `stream` cut at `cuts` (ascending positions), looping over each
    /// chunk as a caller would; every event with its position.
    fn run(t: &mut FrameTracker, stream: &[u8], cuts: &[usize]) -> Vec<Ev> {
        let mut evs = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
            let chunk = &stream[from..to];
            let mut off = 0;
            while off < chunk.len() {
                let f = t.feed(&chunk[off..]);
                assert!(f.consumed > 0, "no progress");
                assert!(f.consumed <= chunk.len() - off);
                off += f.consumed;
                if f.header.is_some() || f.end.is_some() || f.violation.is_some() {
                    evs.push(Ev {
                        pos: from + off,
                        header: f.header,
                        end: f.end,
                        violation: f.violation,
                    });
                }
            }
            // An empty feed changes nothing and reports nothing.
            let before = *t;
            assert_eq!(t.feed(&[]), Feed::default());
            assert_eq!(*t, before);
            from = to;
        }
        evs
    }

    fn whole(masked: bool, stream: &[u8]) -> (FrameTracker, Vec<Ev>) {
        let mut t = FrameTracker::new(masked);
        let evs = run(&mut t, stream, &[]);
        (t, evs)
    }

    fn bytewise(masked: bool, stream: &[u8]) -> (FrameTracker, Vec<Ev>) {
        let mut t = FrameTracker::new(masked);
        let cuts: Vec<usize> = (1..stream.len()).collect();
        let evs = run(&mut t, stream, &cuts);
        (t, evs)
    }

    /// Whole, byte by byte, and every single split point give the same
    /// events and the same final state.
    fn check_split_invariant(masked: bool, stream: &[u8]) -> (FrameTracker, Vec<Ev>) {
        let (t0, e0) = whole(masked, stream);
        let (t1, e1) = bytewise(masked, stream);
        assert_eq!(e0, e1);
        assert_eq!(t0, t1);
        for cut in 0..=stream.len() {
            let mut t = FrameTracker::new(masked);
            assert_eq!(run(&mut t, stream, &[cut]), e0, "cut at {cut}");
            assert_eq!(t, t0);
        }
        (t0, e0)
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, pct: u64) -> bool {
            self.below(100) < pct
        }
        fn key(&mut self) -> [u8; 4] {
            (self.next() as u32).to_be_bytes()
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    // ---- RFC 6455 §5.7 examples ----

    #[test]
    fn rfc_examples_written_exactly() {
        let mut b = [0u8; 300];
        let n = write_frame(&mut b, true, Opcode::Text, b"Hello", None).unwrap();
        assert_eq!(&b[..n], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let n = write_frame(&mut b, true, Opcode::Text, b"Hello", Some(KEY)).unwrap();
        assert_eq!(
            &b[..n],
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        let n = write_frame(&mut b, false, Opcode::Text, b"Hel", None).unwrap();
        assert_eq!(&b[..n], &[0x01, 0x03, 0x48, 0x65, 0x6c]);
        let n = write_frame(&mut b, true, Opcode::Continuation, b"lo", None).unwrap();
        assert_eq!(&b[..n], &[0x80, 0x02, 0x6c, 0x6f]);
        let n = write_ping(&mut b, b"Hello", None).unwrap();
        assert_eq!(&b[..n], &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let n = write_pong(&mut b, b"Hello", Some(KEY)).unwrap();
        assert_eq!(
            &b[..n],
            &[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        let n = write_close(&mut b, CLOSE_GOING_AWAY, None).unwrap();
        assert_eq!(&b[..n], &[0x88, 0x02, 0x03, 0xe9]);
        let n = write_close(&mut b, CLOSE_GOING_AWAY, Some(KEY)).unwrap();
        assert_eq!(
            &b[..n],
            &[0x88, 0x82, 0x37, 0xfa, 0x21, 0x3d, 0x03 ^ 0x37, 0xe9 ^ 0xfa]
        );
        // 256 bytes binary: 0x82 0x7E 0x0100; 64 KiB: 0x82 0x7F 0x0000000000010000.
        let mut big = vec![0u8; 70_000];
        let n = write_frame(&mut big, true, Opcode::Binary, &[7u8; 256], None).unwrap();
        assert_eq!(n, 260);
        assert_eq!(&big[..4], &[0x82, 0x7e, 0x01, 0x00]);
        let n = write_frame(&mut big, true, Opcode::Binary, &[7u8; 65536], None).unwrap();
        assert_eq!(n, 65546);
        assert_eq!(&big[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        // Our test encoder agrees.
        assert_eq!(
            enc(0x81, Some(KEY), b"Hello"),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(&enc(0x82, None, &[7u8; 65536])[..], &big[..65546]);
    }

    #[test]
    fn rfc_examples_tracked() {
        let (t, e) = check_split_invariant(false, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let h = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: Opcode::Text,
            mask: None,
            payload_len: 5,
            header_len: 2,
        };
        assert_eq!(
            e,
            [
                Ev {
                    pos: 2,
                    header: Some(h),
                    end: None,
                    violation: None
                },
                Ev {
                    pos: 7,
                    header: None,
                    end: Some(FrameEnd {
                        header: h,
                        message_end: true,
                        own_pong: false
                    }),
                    violation: None
                },
            ]
        );
        assert_eq!((t.frames(), t.messages()), (1, 1));
        assert!(t.at_message_boundary() && t.can_inject());

        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (t, e) = check_split_invariant(true, &masked);
        let h = e[0].header.unwrap();
        assert_eq!(
            (e[0].pos, h.header_len, h.payload_len, h.mask),
            (6, 6, 5, Some(KEY))
        );
        assert_eq!(unmask(&masked[6..], h.mask), b"Hello");
        assert_eq!(t.messages(), 1);

        // Fragmented "Hello": inside the message between the fragments.
        let mut t = FrameTracker::from_backend();
        let f = t.feed(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!(f.consumed, 2);
        assert!(f.header.is_some_and(|h| !h.fin && h.opcode == Opcode::Text));
        let f = t.feed(&[0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!(f.consumed, 3);
        assert!(f.end.is_some_and(|e| !e.message_end));
        assert!(t.at_boundary() && t.in_fragmented_message() && !t.at_message_boundary());
        assert!(t.can_inject());
        assert_eq!((t.frames(), t.messages()), (1, 0));
        let f = t.feed(&[0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!(f.consumed, 2);
        let f = t.feed(&[0x6c, 0x6f]);
        assert_eq!(f.consumed, 2);
        assert!(f.end.is_some_and(|e| e.message_end));
        assert!(t.at_message_boundary());
        assert_eq!((t.frames(), t.messages()), (2, 1));

        // Unmasked Ping "Hello" and an empty frame: header and end at once.
        let (t, e) = check_split_invariant(
            false,
            &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x8a, 0x00],
        );
        assert_eq!(e.len(), 3);
        assert_eq!(e[2].pos, 9);
        assert!(e[2].header.is_some() && e[2].end.is_some());
        assert_eq!((t.pings(), t.pongs(), t.messages()), (1, 1, 0));
    }

    // ---- every length class ----

    #[test]
    fn every_length_class_any_split() {
        let mut rng = Rng(0x1234_5678);
        for &len in &[0usize, 1, 125, 126, 127, 200, 65535, 65536] {
            for &masked in &[false, true] {
                for &b0 in &[0x81u8, 0x82, 0xC2] {
                    let mask = masked.then(|| rng.key());
                    let payload = rng.bytes(len);
                    // Frame between two small frames, to see the neighbours too.
                    let mut s = enc(0x89, mask, b"a");
                    let start = s.len();
                    s.extend(enc(b0, mask, &payload));
                    let end = s.len();
                    s.extend(enc(0x8a, mask, b""));
                    let (t, e) = if len <= 200 {
                        check_split_invariant(masked, &s)
                    } else {
                        // Every split of the big frames is 2^17 runs: still
                        // quick (payloads are skipped), but do them once.
                        if b0 == 0x82 {
                            check_split_invariant(masked, &s)
                        } else {
                            let (t0, e0) = whole(masked, &s);
                            assert_eq!(bytewise(masked, &s), (t0, e0.clone()));
                            (t0, e0)
                        }
                    };
                    let hl = header_len(len as u64, masked);
                    let h = FrameHeader {
                        fin: true,
                        rsv: (b0 >> 4) & 7,
                        opcode: Opcode::from_bits(b0).unwrap(),
                        mask,
                        payload_len: len as u64,
                        header_len: hl as u8,
                    };
                    let mine: Vec<&Ev> = e
                        .iter()
                        .filter(|ev| ev.header == Some(h) || ev.end.is_some_and(|x| x.header == h))
                        .collect();
                    if len == 0 {
                        assert_eq!(mine.len(), 1);
                        assert_eq!(mine[0].pos, end);
                    } else {
                        assert_eq!(mine.len(), 2);
                        assert_eq!(mine[0].pos, start + hl);
                        assert_eq!(mine[1].pos, end);
                        assert_eq!(
                            mine[1].end.unwrap().header.frame_len(),
                            (end - start) as u64
                        );
                    }
                    assert_eq!(unmask(&s[start + hl..end], mask), payload);
                    assert_eq!(
                        (t.frames(), t.messages(), t.pings(), t.pongs()),
                        (3, 1, 1, 1)
                    );
                    assert!(t.at_boundary() && t.lost_sync().is_none());
                }
            }
        }
    }

    #[test]
    fn every_pair_of_split_points() {
        // Data, a control frame between fragments, a close with a code.
        let mut s = enc(0x01, Some(KEY), b"frag");
        s.extend(enc(0x89, Some([1, 2, 3, 4]), b"pi"));
        s.extend(enc(0x80, Some([5, 6, 7, 8]), &[9u8; 130]));
        s.extend(enc(
            0x88,
            Some([0xff, 0, 0xff, 0]),
            &[0x03, 0xe8, b'b', b'y', b'e'],
        ));
        let (t0, e0) = whole(true, &s);
        assert_eq!(e0.len(), 8);
        for a in 0..=s.len() {
            for b in a..=s.len() {
                let mut t = FrameTracker::from_client();
                assert_eq!(run(&mut t, &s, &[a, b]), e0);
                assert_eq!(t, t0);
            }
        }
        assert_eq!(t0.close_code(), Some(1000));
        assert_eq!((t0.frames(), t0.messages()), (4, 1));
    }

    #[test]
    fn length_above_4_gib() {
        let len = (1u64 << 32) + 5;
        let hdr = enc_hdr(0x82, None, len);
        assert_eq!(hdr, [0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 5]);
        let mut t = FrameTracker::from_backend();
        for (i, &b) in hdr.iter().enumerate() {
            let f = t.feed(&[b]);
            assert_eq!(f.consumed, 1);
            assert_eq!(f.header.is_some(), i == 9);
            assert!(!t.at_boundary());
        }
        assert_eq!(t.current_frame().unwrap().payload_len, len);
        assert_eq!(t.current_frame().unwrap().frame_len(), len + 10);
        // Skip 4 GiB + 5 bytes in 1 MiB chunks (payloads are not looked at).
        let chunk = vec![0u8; 1 << 20];
        let mut left = len;
        while left > chunk.len() as u64 {
            let f = t.feed(&chunk);
            assert_eq!((f.consumed, f.end), (chunk.len(), None));
            left -= chunk.len() as u64;
        }
        assert_eq!(t.remaining_payload(), 5);
        let f = t.feed(&[0, 0, 0, 0, 0, 0x81, 0x00]);
        assert_eq!(f.consumed, 5);
        assert_eq!(f.end.unwrap().header.payload_len, len);
        assert!(t.at_boundary());
        let f = t.feed(&[0x81, 0x00]);
        assert!(f.end.is_some_and(|e| e.message_end));
        assert_eq!(t.messages(), 2);

        // The largest legal length, header only.
        let mut t = FrameTracker::from_client();
        let f = t.feed(&enc_hdr(0x02, Some(KEY), i64::MAX as u64));
        assert_eq!(f.consumed, 14);
        let h = f.header.unwrap();
        assert_eq!(
            (h.payload_len, h.header_len, h.mask),
            (i64::MAX as u64, 14, Some(KEY))
        );
        assert_eq!(h.frame_len(), i64::MAX as u64 + 14);
        assert!(t.in_fragmented_message());
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        // 5 bytes written with the 16-bit and the 64-bit forms.
        let s = [
            0x81, 126, 0, 5, 1, 2, 3, 4, 5, 0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1, 9,
        ];
        let (t, e) = check_split_invariant(false, &s);
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].header.unwrap().header_len, 4);
        assert_eq!(e[2].header.unwrap().header_len, 10);
        assert_eq!(t.messages(), 2);
    }

    // ---- fragmentation and control frames ----

    #[test]
    fn fragments_with_interleaved_control_frames() {
        let k = Some(KEY);
        let parts: Vec<(Vec<u8>, bool, bool)> = vec![
            // (frame, in_fragmented_message after it, message_end)
            (enc(0x02, k, b"one"), true, false),
            (enc(0x89, k, b"p"), true, false),
            (enc(0x00, k, b"two"), true, false),
            (enc(0x8a, k, b""), true, false),
            (enc(0x00, k, b""), true, false),
            (enc(0x88, k, &[0x03, 0xe9]), true, false),
            (enc(0x80, k, b"end"), false, true),
            (enc(0xC1, k, b"deflated"), false, true), // RSV1, single frame
            (enc(0x41, k, b"x"), true, false),        // RSV1 on a first fragment
            (enc(0x80, k, b"y"), false, true),
        ];
        let s: Vec<u8> = parts.iter().flat_map(|p| p.0.clone()).collect();
        let (t, e) = check_split_invariant(true, &s);
        let ends: Vec<&FrameEnd> = e.iter().filter_map(|ev| ev.end.as_ref()).collect();
        assert_eq!(ends.len(), parts.len());
        for (end, part) in ends.iter().zip(&parts) {
            assert_eq!(end.message_end, part.2);
        }
        // State after each frame, fed frame by frame.
        let mut t2 = FrameTracker::from_client();
        for (frame, frag, _) in &parts {
            run(&mut t2, frame, &[]);
            assert!(t2.at_boundary());
            assert_eq!(t2.in_fragmented_message(), *frag);
            assert_eq!(t2.at_message_boundary(), !*frag);
        }
        assert_eq!(t2, t);
        assert_eq!(
            (t.frames(), t.messages(), t.pings(), t.pongs()),
            (10, 3, 1, 1)
        );
        assert!(t.close_seen() && !t.can_inject());
        assert_eq!(t.close_code(), Some(1001));
        assert_eq!(ends[7].header.rsv, 4);
    }

    // ---- close codes ----

    #[test]
    fn close_code_with_split_key_and_payload() {
        for &masked in &[false, true] {
            for code in [1000u16, 1001, 1011, 4999, 0x00ff, 0xff00] {
                let key = masked.then_some([0xA5, 0x5A, 0xC3, 0x3C]);
                let mut s = enc(0x81, key, b"hi");
                s.extend(enc(
                    0x88,
                    key,
                    &[&code.to_be_bytes()[..], b"reason"].concat(),
                ));
                let (t0, _) = whole(masked, &s);
                assert_eq!(t0.close_code(), Some(code));
                for a in 0..=s.len() {
                    for b in a..=s.len() {
                        let mut t = FrameTracker::new(masked);
                        run(&mut t, &s, &[a, b]);
                        assert_eq!(t.close_code(), Some(code));
                        assert!(t.close_seen());
                    }
                }
                // The code is known as soon as its two bytes passed.
                let close_start = 2 + 2 + if masked { 4 } else { 0 };
                let code_end = close_start + if masked { 8 } else { 4 };
                let mut t = FrameTracker::new(masked);
                run(&mut t, &s[..code_end - 1], &[]);
                assert!(t.close_seen());
                assert_eq!(t.close_code(), None);
                run(&mut t, &s[code_end - 1..code_end], &[]);
                assert_eq!(t.close_code(), Some(code));
            }
        }
    }

    #[test]
    fn close_without_code_and_later_close() {
        let mut t = FrameTracker::from_backend();
        run(&mut t, &enc(0x88, None, &[0x03, 0xe8]), &[]);
        assert_eq!(t.close_code(), Some(1000));
        // A second (non-compliant) Close: the last one counts.
        run(&mut t, &enc(0x88, None, b""), &[]);
        assert_eq!(t.close_code(), None);
        assert!(t.close_seen() && t.at_boundary() && !t.can_inject());
        run(&mut t, &enc(0x88, None, &[0x0f, 0xa0]), &[]);
        assert_eq!(t.close_code(), Some(4000));
        // A 1-byte close payload gives no code and no panic.
        let mut t = FrameTracker::from_backend();
        run(&mut t, &enc(0x88, None, &[0x03]), &[]);
        assert_eq!(t.close_code(), None);
        assert!(t.lost_sync().is_none());
    }

    // ---- violations ----

    #[test]
    fn violations_lose_sync() {
        use Violation::*;
        let cases: Vec<(bool, Vec<u8>, Violation, usize)> = vec![
            (false, vec![0x83, 0x00], ReservedOpcode(3), 1),
            (false, vec![0x87, 0x00], ReservedOpcode(7), 1),
            (false, vec![0x8b, 0x00], ReservedOpcode(0xb), 1),
            (true, vec![0x0f, 0x80], ReservedOpcode(0xf), 1),
            (false, vec![0x09, 0x00], FragmentedControl, 1),
            (false, vec![0x08, 0x00], FragmentedControl, 1),
            (false, vec![0x89, 0x7e, 0x00, 0x7e], ControlTooLong, 2),
            (
                false,
                vec![0x8a, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0x7e],
                ControlTooLong,
                2,
            ),
            (true, vec![0x88, 0xfe, 0x00, 0x7e], ControlTooLong, 2),
            (
                false,
                vec![0x81, 0x85, 1, 2, 3, 4, 5],
                MaskMismatch { masked: true },
                2,
            ),
            (
                true,
                vec![0x81, 0x05, 1, 2, 3, 4, 5],
                MaskMismatch { masked: false },
                2,
            ),
            (
                false,
                vec![0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0],
                LengthOverflow,
                3,
            ),
            (
                true,
                vec![0x82, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0],
                LengthOverflow,
                3,
            ),
            (false, vec![0x80, 0x00], UnexpectedContinuation, 1),
            (false, vec![0x00, 0x01, 0x61], UnexpectedContinuation, 1),
            (false, vec![0x01, 0x00, 0x82, 0x00], UnfinishedMessage, 3),
            (
                false,
                vec![0x02, 0x00, 0x89, 0x00, 0x01, 0x00],
                UnfinishedMessage,
                5,
            ),
        ];
        for (masked, bytes, v, at) in cases {
            // After a valid frame, so positions are relative to a prefix.
            let mut s = enc(0x82, masked.then_some(KEY), b"ok");
            let pre = s.len();
            s.extend(&bytes);
            s.extend([0x81, 0x00, 0x81, 0x80, 1, 2, 3, 4]); // more bytes after
            for cuts in [vec![], (1..s.len()).collect::<Vec<_>>()] {
                let mut t = FrameTracker::new(masked);
                let e = run(&mut t, &s, &cuts);
                let last = e.last().unwrap();
                assert_eq!(last.violation, Some(v), "{bytes:x?}");
                assert_eq!(last.pos, pre + at, "{bytes:x?}");
                assert_eq!(e.iter().filter(|x| x.violation.is_some()).count(), 1);
                assert_eq!(t.lost_sync(), Some(v));
                assert!(!t.at_boundary() && !t.can_inject() && !t.at_message_boundary());
                assert_eq!(t.held(), 0);
                // Lost: everything passes, nothing is reported.
                let f = t.feed(&[0x81, 0x00, 0x89]);
                assert_eq!(
                    f,
                    Feed {
                        consumed: 3,
                        ..Feed::default()
                    }
                );
            }
        }
        // Control frame of exactly 125 bytes and RSV bits are fine.
        let mut s = enc(0x89, None, &[1u8; 125]);
        s.extend(enc(0xF2, None, b"rsv"));
        let (t, e) = check_split_invariant(false, &s);
        assert!(t.lost_sync().is_none());
        assert_eq!(e[2].header.unwrap().rsv, 7);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(99);
        for round in 0..2000 {
            let len = rng.below(200) as usize;
            let mut s = rng.bytes(len);
            if round % 2 == 0 && !s.is_empty() {
                // Mostly-plausible first bytes.
                s[0] = [0x81, 0x82, 0x01, 0x89, 0x8a, 0x88][rng.below(6) as usize];
            }
            let masked = rng.chance(50);
            let mut t = FrameTracker::new(masked);
            if rng.chance(30) {
                let n = rng.below(17) as usize;
                t.expect_pong(&rng.bytes(n));
            }
            let mut cuts: Vec<usize> = (0..rng.below(10))
                .map(|_| rng.below(len as u64 + 1) as usize)
                .collect();
            cuts.sort();
            let e = run(&mut t, &s, &cuts);
            assert!(e.iter().filter(|x| x.violation.is_some()).count() <= 1);
            assert!(t.held() <= MAX_HEADER_LEN + MAX_PONG_TOKEN);
        }
    }

    // ---- own pong ----

    #[test]
    fn own_pong_is_held_then_reported() {
        let token = *b"\x01\x02\x03\x04\x05\x06\x07\x08";
        let key = Some([9, 8, 7, 6]);
        let own = enc(0x8a, key, &token);
        let mut s = enc(0x81, key, b"before");
        let start = s.len();
        s.extend(&own);
        let end = s.len();
        s.extend(enc(0x81, key, b"after"));
        for a in 0..=s.len() {
            for b in a..=s.len() {
                let mut t = FrameTracker::from_client();
                assert!(t.expect_pong(&token));
                let e = run(&mut t, &s, &[a, b]);
                let own_ev: Vec<&Ev> = e
                    .iter()
                    .filter(|x| x.end.is_some_and(|e| e.own_pong))
                    .collect();
                assert_eq!(own_ev.len(), 1);
                assert_eq!(own_ev[0].pos, end);
                assert_eq!(
                    own_ev[0].end.unwrap().header.frame_len() as usize,
                    own.len()
                );
                assert!(!t.pong_expected());
            }
        }
        // held() covers exactly the pong's bytes fed so far.
        let mut t = FrameTracker::from_client();
        t.expect_pong(&token);
        for i in 0..s.len() {
            let f = t.feed(&s[i..i + 1]);
            let fed = i + 1;
            let expect = if fed > start && fed < end {
                fed - start
            } else {
                0
            };
            assert_eq!(t.held(), expect, "after {fed}");
            assert_eq!(f.end.is_some_and(|e| e.own_pong), fed == end);
        }
        assert_eq!(t.pongs(), 1);
    }

    #[test]
    fn other_pongs_pass() {
        let token = *b"tok-1234";
        for (payload, b0, why) in [
            (&b"tok-1235"[..], 0x8a, "last byte differs"),
            (&b"Tok-1234"[..], 0x8a, "first byte differs"),
            (&b"tok-12345"[..], 0x8a, "longer"),
            (&b"tok-123"[..], 0x8a, "shorter"),
            (&b""[..], 0x8a, "empty"),
            (&b"tok-1234"[..], 0x89, "a ping"),
        ] {
            for masked in [false, true] {
                let mut t = FrameTracker::new(masked);
                t.expect_pong(&token);
                let s = enc(b0, masked.then_some(KEY), payload);
                let hl = header_len(payload.len() as u64, masked);
                for (i, &byte) in s.iter().enumerate() {
                    let f = t.feed(&[byte]);
                    assert!(!f.end.is_some_and(|e| e.own_pong), "{why}");
                    // Released as soon as it cannot be ours any more: at
                    // the first byte, the length byte, or the first payload
                    // byte that differs.
                    let differs_at = payload.iter().zip(&token).position(|(a, b)| a != b);
                    if b0 != 0x8a
                        || (i >= 1 && payload.len() != token.len())
                        || differs_at.is_some_and(|d| i >= hl + d)
                    {
                        assert_eq!(t.held(), 0, "{why} at {i}");
                    } else {
                        assert_eq!(t.held(), i + 1, "{why} at {i}");
                    }
                }
                assert_eq!(t.held(), 0);
                assert!(t.pong_expected(), "{why}");
            }
        }
        // Armed, then a violation inside a pong's header: nothing held.
        let mut t = FrameTracker::from_client();
        t.expect_pong(&token);
        run(&mut t, &[0x8a, 0x88, 1, 2], &[]);
        assert_eq!(t.held(), 4);
        let mut t2 = FrameTracker::from_client();
        t2.expect_pong(&token);
        run(&mut t2, &[0x8a], &[]);
        assert_eq!(t2.held(), 1);
        let e = run(&mut t2, &[0x08], &[]); // not masked: violation
        assert_eq!(t2.held(), 0);
        assert_eq!(
            e.last().unwrap().violation,
            Some(Violation::MaskMismatch { masked: false })
        );
        let e = run(&mut t, &[3, 4, b't' ^ 1], &[]);
        assert!(e[0].header.is_some());
        assert_eq!(t.held(), 7);
        // Re-armed mid-pong: that pong is released and passes on.
        t.expect_pong(b"other");
        assert_eq!(t.held(), 0);
        let e = run(&mut t, &enc(0x8a, Some([1, 2, 3, 4]), &token)[7..], &[]);
        assert!(!e.last().unwrap().end.unwrap().own_pong);
        assert!(t.pong_expected());
        // Violation while a candidate header is partly read.
        let mut t = FrameTracker::from_backend();
        t.expect_pong(&token);
        run(&mut t, &[0x8a], &[]);
        assert_eq!(t.held(), 1);
        let e = run(&mut t, &[0x88], &[]);
        assert!(e[0].violation.is_some());
        assert_eq!(t.held(), 0);
        // A pong that began before arming is never ours.
        let mut t = FrameTracker::from_backend();
        let s = enc(0x8a, None, &token);
        run(&mut t, &s[..1], &[]);
        t.expect_pong(&token);
        let e = run(&mut t, &s[1..], &[]);
        assert!(!e.last().unwrap().end.unwrap().own_pong);
        assert_eq!(t.held(), 0);
        // The next one is; then disarmed, a third identical one passes.
        let e = run(&mut t, &s, &[]);
        assert!(e.last().unwrap().end.unwrap().own_pong);
        let e = run(&mut t, &s, &[]);
        assert!(!e.last().unwrap().end.unwrap().own_pong);
        // Cancelled mid-frame: released.
        let mut t = FrameTracker::from_backend();
        t.expect_pong(&token);
        run(&mut t, &s[..5], &[]);
        assert_eq!(t.held(), 5);
        t.cancel_pong();
        assert_eq!(t.held(), 0);
        let e = run(&mut t, &s[5..], &[]);
        assert!(!e.last().unwrap().end.unwrap().own_pong);
        // Empty token; too long a token.
        let mut t = FrameTracker::from_backend();
        assert!(t.expect_pong(b""));
        let e = run(&mut t, &[0x8a, 0x00], &[]);
        assert!(e[0].end.unwrap().own_pong);
        assert!(!t.expect_pong(&[0u8; MAX_PONG_TOKEN + 1]));
        assert!(!t.pong_expected());
        assert!(t.expect_pong(&[0u8; MAX_PONG_TOKEN]));
    }

    // ---- builders ----

    #[test]
    fn builder_errors_and_round_trip() {
        let mut b = [0u8; MAX_CONTROL_FRAME];
        assert_eq!(
            write_ping(&mut b, &[0; 126], None),
            Err(WriteError::ControlTooLong)
        );
        assert_eq!(
            write_frame(&mut b, false, Opcode::Ping, b"", None),
            Err(WriteError::FragmentedControl)
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535] {
            assert_eq!(
                write_close(&mut b, code, None),
                Err(WriteError::InvalidCloseCode),
                "{code}"
            );
        }
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(write_close(&mut b, code, None).is_ok(), "{code}");
        }
        assert_eq!(
            write_close(&mut b[..3], 1001, None),
            Err(WriteError::BufferTooSmall { needed: 4 })
        );
        assert_eq!(
            write_ping(&mut b[..10], b"12345", Some(KEY)),
            Err(WriteError::BufferTooSmall { needed: 11 })
        );
        assert_eq!(
            write_ping(&mut b, &[0; 125], Some(KEY)),
            Ok(MAX_CONTROL_FRAME)
        );
        assert_eq!(header_len(125, false), 2);
        assert_eq!(header_len(126, false), 4);
        assert_eq!(header_len(65535, true), 8);
        assert_eq!(header_len(65536, true), 14);

        // What we write, the tracker reads back (payload unmasked intact).
        let mut rng = Rng(7);
        let mut big = vec![0u8; 70_000];
        for len in [0usize, 1, 4, 5, 125, 126, 65535, 65536] {
            for masked in [false, true] {
                let payload = rng.bytes(len);
                let key = masked.then(|| rng.key());
                let n = write_frame(&mut big, true, Opcode::Binary, &payload, key).unwrap();
                assert_eq!(&big[..n], &enc(0x82, key, &payload)[..]);
                let mut t = FrameTracker::new(masked);
                let f = t.feed(&big[..n]);
                let h = f.header.unwrap();
                assert_eq!(h.mask, key);
                assert_eq!(unmask(&big[h.header_len as usize..n], key), payload);
                if len > 0 {
                    let f2 = t.feed(&big[f.consumed..n]);
                    assert_eq!(f2.consumed, len);
                    assert!(f2.end.is_some());
                }
                assert!(t.at_message_boundary());
            }
        }
        // A close written masked is read back with its code.
        let n = write_close(&mut b, CLOSE_GOING_AWAY, Some([0xde, 0xad, 0xbe, 0xef])).unwrap();
        let mut t = FrameTracker::from_client();
        run(&mut t, &b[..n], &[1, 2, 5, 7]);
        assert_eq!(t.close_code(), Some(CLOSE_GOING_AWAY));
    }

    // ---- long random streams ----

    /// What a generated frame should be reported as.
    #[derive(Debug)]
    struct Want {
        start: usize,
        header: FrameHeader,
        message_end: bool,
        frag_after: bool,
    }

    /// A random valid stream: messages of 1-4 fragments of every length
    /// class, control frames between fragments and between messages, RSV1
    /// on some first frames, a Close now and then.
    fn gen_stream(
        rng: &mut Rng,
        masked: bool,
        messages: usize,
        big: bool,
    ) -> (Vec<u8>, Vec<Want>, Option<u16>) {
        let mut s = Vec::new();
        let mut want = Vec::new();
        let mut close = None;
        let push = |s: &mut Vec<u8>,
                    want: &mut Vec<Want>,
                    rng: &mut Rng,
                    b0: u8,
                    len: usize,
                    message_end: bool,
                    frag_after: bool| {
            let mask = masked.then(|| rng.key());
            // Random bytes for control payloads, a cheap pattern for data.
            let payload = if len <= 125 {
                rng.bytes(len)
            } else {
                vec![rng.next() as u8; len]
            };
            let start = s.len();
            s.extend(enc(b0, mask, &payload));
            want.push(Want {
                start,
                header: FrameHeader {
                    fin: b0 & 0x80 != 0,
                    rsv: (b0 >> 4) & 7,
                    opcode: Opcode::from_bits(b0).unwrap(),
                    mask,
                    payload_len: len as u64,
                    header_len: header_len(len as u64, masked) as u8,
                },
                message_end,
                frag_after,
            });
        };
        let data_len = |rng: &mut Rng| -> usize {
            if !big {
                return rng.below(140) as usize;
            }
            match rng.below(10) {
                0 => 0,
                1 => 125,
                2 => 126,
                3 => 65535,
                4 if rng.chance(20) => 65536 + rng.below(3000) as usize,
                5 => 126 + rng.below(2000) as usize,
                _ => rng.below(126) as usize,
            }
        };
        for _ in 0..messages {
            let frags = 1 + rng.below(4) as usize;
            for i in 0..frags {
                let last = i + 1 == frags;
                let op = if i == 0 { 1 + rng.below(2) as u8 } else { 0 };
                let rsv = if i == 0 && rng.chance(30) { 0x40 } else { 0 };
                let b0 = if last { 0x80 } else { 0 } | rsv | op;
                let len = data_len(rng);
                push(&mut s, &mut want, rng, b0, len, last, !last);
                // Control frames between fragments or after the message.
                while rng.chance(25) {
                    let (b0, len) = match rng.below(3) {
                        0 => (0x89, rng.below(126) as usize),
                        1 => (0x8a, rng.below(126) as usize),
                        _ => (
                            0x88,
                            if rng.chance(20) {
                                0
                            } else {
                                2 + rng.below(124) as usize
                            },
                        ),
                    };
                    let mask = masked.then(|| rng.key());
                    if b0 == 0x88 && len >= 2 {
                        let code = 1000 + rng.below(4000) as u16;
                        let mut p = code.to_be_bytes().to_vec();
                        p.extend(rng.bytes(len - 2));
                        let start = s.len();
                        s.extend(enc(0x88, mask, &p));
                        want.push(Want {
                            start,
                            header: FrameHeader {
                                fin: true,
                                rsv: 0,
                                opcode: Opcode::Close,
                                mask,
                                payload_len: len as u64,
                                header_len: header_len(len as u64, masked) as u8,
                            },
                            message_end: false,
                            frag_after: !last,
                        });
                        close = Some(code);
                    } else {
                        if b0 == 0x88 {
                            close = None;
                        }
                        push(&mut s, &mut want, rng, b0, len, false, !last);
                    }
                }
            }
        }
        (s, want, close)
    }

    #[test]
    fn long_random_streams() {
        let mut rng = Rng(0xC0FF_EE00_1234_5678);
        for round in 0..6 {
            let masked = round % 2 == 1;
            let (s, want, close) = gen_stream(&mut rng, masked, 400, true);
            // Expected events.
            let mut expect = Vec::new();
            for w in &want {
                let hl = w.header.header_len as usize;
                let end = FrameEnd {
                    header: w.header,
                    message_end: w.message_end,
                    own_pong: false,
                };
                if w.header.payload_len == 0 {
                    expect.push(Ev {
                        pos: w.start + hl,
                        header: Some(w.header),
                        end: Some(end),
                        violation: None,
                    });
                } else {
                    expect.push(Ev {
                        pos: w.start + hl,
                        header: Some(w.header),
                        end: None,
                        violation: None,
                    });
                    expect.push(Ev {
                        pos: w.start + w.header.frame_len() as usize,
                        header: None,
                        end: Some(end),
                        violation: None,
                    });
                }
            }
            // Boundaries, and whether they are inside a fragmented message.
            let mut boundary = std::collections::HashMap::new();
            boundary.insert(0usize, false);
            for w in &want {
                boundary.insert(w.start + w.header.frame_len() as usize, w.frag_after);
            }
            for split in 0..3 {
                let mut t = FrameTracker::new(masked);
                let mut cuts = Vec::new();
                if split == 0 {
                    // Small chunks where they matter: around every header
                    // and close code (payloads are skipped in one step).
                    for w in &want {
                        let mut c = w.start;
                        for _ in 0..3 {
                            c += 1 + rng.below(5) as usize;
                            cuts.push(c);
                        }
                    }
                    cuts.retain(|&c| c < s.len());
                    cuts.sort();
                    cuts.dedup();
                } else {
                    let mut p = 0usize;
                    loop {
                        p += if split == 1 {
                            1 + rng.below(300) as usize
                        } else {
                            1 + rng.below(70_000) as usize
                        };
                        if p >= s.len() {
                            break;
                        }
                        cuts.push(p);
                    }
                }
                // Feed chunk by chunk, checking the state at each cut.
                let mut evs = Vec::new();
                let mut from = 0;
                for &to in cuts.iter().chain(std::iter::once(&s.len())) {
                    for mut ev in run(&mut t, &s[from..to], &[]) {
                        ev.pos += from;
                        evs.push(ev);
                    }
                    match boundary.get(&to) {
                        Some(&frag) => {
                            assert!(t.at_boundary(), "at {to}");
                            assert_eq!(t.in_fragmented_message(), frag, "at {to}");
                        }
                        None => assert!(!t.at_boundary(), "at {to}"),
                    }
                    from = to;
                }
                assert_eq!(evs.len(), expect.len());
                for (a, b) in evs.iter().zip(&expect) {
                    assert_eq!(a, b);
                }
                let data = want
                    .iter()
                    .filter(|w| !w.header.opcode.is_control())
                    .count() as u64;
                let pings = want
                    .iter()
                    .filter(|w| w.header.opcode == Opcode::Ping)
                    .count() as u64;
                let pongs = want
                    .iter()
                    .filter(|w| w.header.opcode == Opcode::Pong)
                    .count() as u64;
                assert_eq!(t.frames(), want.len() as u64);
                assert_eq!(t.messages(), 400);
                assert!(data >= 400);
                assert_eq!((t.pings(), t.pongs()), (pings, pongs));
                assert_eq!(t.close_code(), close);
                assert!(t.at_message_boundary());
            }
        }
    }

    // ---- the tunnel's use: pings injected at boundaries, own pongs dropped ----

    /// One direction of a tunnel, as the module docs describe it: read in
    /// random chunks, feed, drop own pongs, flush only what is not held,
    /// inject pings (and finally a Close) at boundaries.
    #[test]
    fn simulated_tunnel_direction() {
        let mut rng = Rng(0xABCD_EF01);
        for round in 0..40 {
            let masked = round % 2 == 0; // client→backend when masked
            let token = (rng.next()).to_be_bytes();
            // Source: a random stream with our pongs and decoys spliced in
            // at frame boundaries.
            let (base, want, _) = gen_stream(&mut rng, masked, 60, round % 4 < 2);
            let mut bounds: Vec<usize> = vec![0];
            bounds.extend(want.iter().map(|w| w.start + w.header.frame_len() as usize));
            let mut src = Vec::new();
            let mut expected_out: Vec<u8> = Vec::new(); // source minus own pongs
            let mut own_count = 0;
            let mut prev = 0;
            for &bd in &bounds {
                src.extend(&base[prev..bd]);
                expected_out.extend(&base[prev..bd]);
                prev = bd;
                if rng.chance(15) {
                    let mask = masked.then(|| rng.key());
                    // Decoy: same length, one byte differs.
                    let mut d = token;
                    d[rng.below(8) as usize] ^= 1 << rng.below(8);
                    let f = enc(0x8a, mask, &d);
                    src.extend(&f);
                    expected_out.extend(&f);
                }
                if rng.chance(15) {
                    src.extend(enc(0x8a, masked.then(|| rng.key()), &token));
                    own_count += 1;
                }
            }
            // Tunnel state for this direction.
            let mut t = FrameTracker::new(masked);
            let mut buf: Vec<u8> = Vec::new(); // pending bytes
            let mut fed = 0usize;
            let mut out = Vec::new();
            let mut read = 0usize;
            let mut dropped = 0;
            let mut injected = 0u32;
            while read < src.len() || !buf.is_empty() {
                // Keep the tracker armed, as if a ping had been sent.
                if !t.pong_expected() {
                    t.expect_pong(&token);
                }
                // Read.
                let n = (1 + rng.below(200) as usize).min(src.len() - read);
                buf.extend(&src[read..read + n]);
                read += n;
                // Feed everything read.
                while fed < buf.len() {
                    let f = t.feed(&buf[fed..]);
                    fed += f.consumed;
                    assert!(f.violation.is_none());
                    if let Some(e) = f.end {
                        if e.own_pong {
                            let len = e.header.frame_len() as usize;
                            assert!(len <= fed, "own pong already partly flushed");
                            buf.drain(fed - len..fed);
                            fed -= len;
                            dropped += 1;
                            // As if the next ping went out at once.
                            t.expect_pong(&token);
                        }
                    }
                }
                // Inject a ping now and then, only where allowed.
                if fed == buf.len() && t.can_inject() && rng.chance(30) {
                    let mut f = [0u8; MAX_CONTROL_FRAME];
                    let payload = [b'I', b'N', b'J', injected as u8];
                    let n = write_ping(&mut f, &payload, masked.then(|| rng.key())).unwrap();
                    buf.extend(&f[..n]);
                    fed = buf.len();
                    injected += 1;
                }
                // Flush part of what may go.
                let may = fed - t.held();
                let w = if may == 0 {
                    0
                } else {
                    1 + rng.below(may as u64) as usize
                };
                out.extend(buf.drain(..w));
                fed -= w;
                if read == src.len() && fed == buf.len() && t.held() > 0 {
                    break; // a held partial frame at the very end (not here)
                }
            }
            assert_eq!(dropped, own_count);
            // Close 1001 at the end, at a boundary (the stream ends at one).
            assert!(t.at_boundary());
            let can_close = t.can_inject();
            if can_close {
                let mut f = [0u8; MAX_CONTROL_FRAME];
                let n = write_close(&mut f, CLOSE_GOING_AWAY, masked.then(|| rng.key())).unwrap();
                out.extend(&f[..n]);
            }
            // The receiver sees a valid stream: the source without our
            // pongs, plus our pings, plus our Close.
            let mut rx = FrameTracker::new(masked);
            let mut off = 0;
            let mut stripped: Vec<u8> = Vec::new();
            let mut pings_seen = 0u32;
            while off < out.len() {
                let start = off;
                let f = rx.feed(&out[off..]);
                off += f.consumed;
                assert!(f.violation.is_none());
                let h = f.header.unwrap();
                let end = start + h.frame_len() as usize;
                let payload = unmask(&out[start + h.header_len as usize..end], h.mask);
                let ours =
                    h.opcode == Opcode::Ping && payload.len() == 4 && payload.starts_with(b"INJ");
                if ours {
                    assert_eq!(payload[3], pings_seen as u8);
                    pings_seen += 1;
                } else if !(can_close && end == out.len()) {
                    stripped.extend(&out[start..end]);
                }
                if h.payload_len > 0 {
                    let f = rx.feed(&out[off..]);
                    off += f.consumed;
                    assert!(f.end.is_some());
                }
            }
            assert_eq!(pings_seen, injected);
            assert_eq!(stripped, expected_out);
            assert!(rx.lost_sync().is_none());
            if can_close {
                assert_eq!(rx.close_code(), Some(CLOSE_GOING_AWAY));
            }
            assert_eq!(rx.messages(), 60);
        }
    }

    #[test]
    fn skipping_payloads_is_feeding_them() {
        // Random streams, fed in random chunks with random parts of the
        // skippable payloads skipped instead: the same frames, messages,
        // boundaries and close code as feeding everything; a pong being
        // matched and a close code not read yet are never skippable.
        let mut rng = Rng(0x5EED_0F5C_1F00_0001);
        for round in 0..8 {
            let masked = round % 2 == 0;
            let (s, want, close) = gen_stream(&mut rng, masked, 200, round < 4);
            let mut t = FrameTracker::new(masked);
            let mut ends = 0usize;
            let mut skipped = 0u64;
            let mut pos = 0usize;
            while pos < s.len() {
                let k = t.skippable();
                if k > 0 && rng.chance(60) {
                    let n = (1 + rng.below(k.min(100_000))) as usize;
                    let n = n.min(s.len() - pos);
                    let f = t.skip(n);
                    assert_eq!(f.consumed, n);
                    skipped += n as u64;
                    pos += n;
                    ends += usize::from(f.end.is_some());
                    continue;
                }
                let to = (pos + 1 + rng.below(3000) as usize).min(s.len());
                let f = t.feed(&s[pos..to]);
                assert!(f.consumed > 0 && f.violation.is_none());
                pos += f.consumed;
                ends += usize::from(f.end.is_some());
            }
            assert!(skipped > 0);
            assert_eq!(ends, want.len());
            assert_eq!(t.frames(), want.len() as u64);
            assert_eq!(
                t.messages(),
                want.iter().filter(|w| w.message_end).count() as u64
            );
            assert_eq!(t.close_code(), close);
            assert!(t.at_boundary());
            assert_eq!(t.skippable(), 0);
        }
        // Close code bytes and a matched pong are read, not skipped.
        let mut t = FrameTracker::from_backend();
        let c = enc(0x88, None, b"\x03\xe9bye");
        let f = t.feed(&c[..2]);
        assert!(f.header.is_some());
        assert_eq!(t.skippable(), 0);
        assert_eq!(t.skip(5).consumed, 0);
        let f = t.feed(&c[2..4]);
        assert_eq!(f.consumed, 2);
        assert_eq!(t.close_code(), Some(1001));
        assert_eq!(t.skippable(), 3);
        let f = t.skip(10);
        assert_eq!(f.consumed, 3);
        assert!(f.end.is_some());
        let mut t = FrameTracker::from_backend();
        t.expect_pong(b"tok");
        let p = enc(0x8a, None, b"tok");
        let f = t.feed(&p[..3]);
        assert_eq!(f.consumed, 2);
        let f = t.feed(&p[2..3]);
        assert_eq!(f.consumed, 1);
        assert_eq!(t.skippable(), 0);
        let f = t.feed(&p[3..]);
        assert!(f.end.unwrap().own_pong);
        // Lost sync: everything may pass.
        let mut t = FrameTracker::from_backend();
        let _ = t.feed(&[0x83]);
        assert_eq!(t.skippable(), u64::MAX);
        assert_eq!(t.skip(1 << 20).consumed, 1 << 20);
    }

    #[test]
    fn tracker_is_small_and_copy() {
        fn is_copy<T: Copy>() {}
        is_copy::<FrameTracker>();
        is_copy::<Feed>();
        assert!(
            core::mem::size_of::<FrameTracker>() <= 160,
            "{}",
            core::mem::size_of::<FrameTracker>()
        );
    }
}
