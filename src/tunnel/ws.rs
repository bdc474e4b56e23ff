//! WebSocket tunnels: the tunnel's own Close 1001 and keep-alive Pings.

use super::dir::Dir;
use super::engine::Tunnel;
use super::{EndReason, WsStats, MIN_WS_SPLICE};
use crate::frames::{self, FrameTracker, CLOSE_GOING_AWAY, MAX_HEADER_LEN, MAX_PONG_TOKEN};

/// Close codes of the limits (RFC 6455 §7.4.1).
pub(super) const CLOSE_POLICY: u16 = 1008;
/// See [`CLOSE_POLICY`].
pub(super) const CLOSE_TOO_BIG: u16 = 1009;

/// Where a direction stands with the Close 1001 the tunnel sends when it
/// ends a WebSocket tunnel itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CloseOut {
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
pub(super) enum PingOut {
    None,
    /// To be put in at the next frame boundary (given up at `since` plus
    /// the interval).
    Due { since: u64, token: [u8; 8] },
    /// Put in at `at`; the answer is watched for on the other direction.
    Sent { at: u64, pongs: u32 },
}

/// A direction's WebSocket state.
pub(super) struct Frames {
    pub(super) tracker: FrameTracker,
    /// Bytes of the tunnel's own Pongs taken out of the stream.
    pub(super) swallowed: u64,
    pub(super) own_pongs: u32,
    pub(super) close: CloseOut,
    pub(super) ping: PingOut,
    /// Data messages when a Close of ours went in (later ones are not
    /// relayed).
    pub(super) sealed_messages: Option<u64>,
    /// The code of the Close of ours this direction gets (1001 but for the
    /// side that broke a limit: 1009, 1008).
    pub(super) close_code: u16,
    /// A limit was broken: the stream was cut at a frame boundary and from
    /// then on the source is read and dropped (the Close of ours goes in at
    /// the cut, whatever the tracker's position in the dropped bytes).
    pub(super) dropping: bool,
    /// Which limit, for the tunnel to act on.
    pub(super) broke: Option<EndReason>,
    /// Payload bytes of the data message under way, and the largest.
    pub(super) message_size: u64,
    pub(super) largest: u64,
    /// Round trips of the Pings sent into this direction (ms).
    pub(super) rtt_last: Option<u32>,
    pub(super) rtt_max: Option<u32>,
}

impl Frames {
    pub(super) fn new(masked: bool) -> Self {
        Frames {
            tracker: FrameTracker::new(masked),
            swallowed: 0,
            own_pongs: 0,
            close: CloseOut::None,
            ping: PingOut::None,
            sealed_messages: None,
            close_code: CLOSE_GOING_AWAY,
            dropping: false,
            broke: None,
            message_size: 0,
            largest: 0,
            rtt_last: None,
            rtt_max: None,
        }
    }

    /// A Close of ours went in, or a limit cut the stream: the source is
    /// read but not relayed.
    pub(super) fn sealed(&self) -> bool {
        self.close == CloseOut::Sent || self.dropping
    }

    pub(super) fn messages(&self) -> u64 {
        self.sealed_messages
            .unwrap_or_else(|| self.tracker.messages())
    }

    pub(super) fn close_code(&self) -> Option<u16> {
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
    pub(super) fn splice_allowance(&self) -> usize {
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
/// Mask keys and ping tokens (splitmix64): they need to be unpredictable
/// to the peers only as far as the seed is.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u32) -> Self {
        Rng(u64::from(seed) ^ 0x6A09_E667_F3BC_C908)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn key(&mut self) -> [u8; 4] {
        let [a, b, c, d, ..] = self.next().to_be_bytes();
        [a, b, c, d]
    }

    pub(super) fn token(&mut self) -> [u8; 8] {
        self.next().to_be_bytes()
    }
}

/// The tunnel ends a WebSocket tunnel itself: Close 1001 both ways.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ending {
    pub(super) reason: EndReason,
    /// End then, whatever is left.
    pub(super) deadline: u64,
    /// Also wait for each side's answering Close (or its end of input).
    pub(super) wait_answers: bool,
}

/// Ending: put the Close in direction `d` if it stands at a frame
/// boundary, or decide it never will.
pub(super) fn close_step(d: &mut Dir<'_>, rng: &mut Rng) {
    let Some(w) = d.ws.as_mut() else {
        return;
    };
    if w.close != CloseOut::Pending {
        return;
    }
    let t = w.tracker;
    let code = w.close_code;
    if w.dropping {
        // Cut at a boundary: the output stream stands at one.
        if d.abandoned || d.shut {
            w.close = CloseOut::Skipped;
            return;
        }
    } else {
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
    }
    let mask = t.masked().then(|| rng.key());
    if d.inject(|b| frames::write_close(b, code, mask)) {
        if let Some(w) = d.ws.as_mut() {
            if w.sealed_messages.is_none() {
                w.sealed_messages = Some(w.tracker.messages());
            }
            w.close = CloseOut::Sent;
        }
    }
}

/// A Ping may go into `d` (towards its destination), its answer being
/// watched for on `o` (from that destination): both streams in sync and
/// open, no Close from either side, and room in `o` for a whole Pong.
pub(super) fn ping_possible(d: &Dir<'_>, o: &Dir<'_>) -> bool {
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
        && o.buf.capacity() >= MAX_HEADER_LEN + MAX_PONG_TOKEN
}

/// The Ping due in `d`, put in if `d` stands at a frame boundary; the
/// answer is then expected on `o`. True when it went in.
pub(super) fn ping_step(d: &mut Dir<'_>, o: &mut Dir<'_>, rng: &mut Rng, now: u64) -> bool {
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
        w.ping = PingOut::Sent { at: now, pongs: ow.own_pongs };
        ow.tracker.expect_pong(&token);
    }
    true
}

/// The Ping sent into `d` was answered on `o`, or can no longer be: done.
pub(super) fn ping_resolve(d: &mut Dir<'_>, o: &Dir<'_>, now: u64) {
    let answered = o.ws.as_ref().is_none_or(|ow| {
        !ow.tracker.pong_expected() || ow.tracker.lost_sync().is_some()
    });
    let own_pongs = o.ws.as_ref().map_or(0, |ow| ow.own_pongs);
    if let Some(w) = d.ws.as_mut() {
        if let PingOut::Sent { at, pongs } = w.ping {
            if answered {
                w.ping = PingOut::None;
                if own_pongs > pongs {
                    // Answered by its Pong: the round trip.
                    let rtt = u32::try_from(now.saturating_sub(at)).unwrap_or(u32::MAX);
                    w.rtt_last = Some(rtt);
                    w.rtt_max = Some(w.rtt_max.map_or(rtt, |m| m.max(rtt)));
                }
            }
        }
    }
}

impl Tunnel<'_, '_> {
    pub(super) fn ws_stats(&self) -> WsStats {
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
            largest_message_from_client: c.largest,
            largest_message_from_backend: b.largest,
            ping_rtt_client_last_ms: b.rtt_last,
            ping_rtt_client_max_ms: b.rtt_max,
            ping_rtt_backend_last_ms: c.rtt_last,
            ping_rtt_backend_max_ms: c.rtt_max,
        }
    }

    /// WebSocket: what the last reads changed for the Pings.
    pub(super) fn ws_update(&mut self, now: u64) {
        let (c_eof, b_eof) = (self.c2b.eof, self.b2c.eof);
        for (w, eof) in [(self.c2b.ws.as_mut(), c_eof), (self.b2c.ws.as_mut(), b_eof)] {
            // A stream that ended brings no answer: its held bytes go on.
            if let Some(w) = w.filter(|_| eof) {
                w.tracker.cancel_pong();
            }
        }
        ping_resolve(&mut self.c2b, &self.b2c, now);
        ping_resolve(&mut self.b2c, &self.c2b, now);
    }

    /// A direction that broke a limit (cut, see [`Dir::track`]) ends the
    /// tunnel: Close 1001 into it (at the cut), 1009 or 1008 back to its
    /// sender.
    pub(super) fn limits(&mut self, now: u64, cfg: &super::Config) {
        let c = self.c2b.ws.as_ref().and_then(|w| w.broke);
        let b = self.b2c.ws.as_ref().and_then(|w| w.broke);
        let Some(why) = c.or(b) else {
            return;
        };
        let code = if why == EndReason::RateLimited { CLOSE_POLICY } else { CLOSE_TOO_BIG };
        let fresh = self.ending.is_none();
        self.start_ending(why, now, cfg.close_wait_ms, false);
        if fresh {
            // Back to the sender: the opposite direction.
            let back = if c.is_some() { self.b2c.ws.as_mut() } else { self.c2b.ws.as_mut() };
            if let Some(w) = back {
                w.close_code = code;
            }
        }
        for w in [self.c2b.ws.as_mut(), self.b2c.ws.as_mut()].into_iter().flatten() {
            w.broke = None;
        }
    }

    /// No more Pings (closing or ending): none due, no answer awaited.
    pub(super) fn stop_pinging(&mut self) {
        for w in [self.c2b.ws.as_mut(), self.b2c.ws.as_mut()].into_iter().flatten() {
            w.ping = PingOut::None;
            w.tracker.cancel_pong();
        }
    }

    /// WebSocket keep-alive, once per round while neither closing nor
    /// ending: true when a pinged side did not answer in time.
    pub(super) fn pings(&mut self, now: u64, last_activity: u64, interval: u64) -> bool {
        let mut idle = true;
        for w in [self.c2b.ws.as_mut(), self.b2c.ws.as_mut()] {
            let Some(w) = w else {
                return false;
            };
            match w.ping {
                PingOut::Sent { at, .. } if now >= at.saturating_add(interval) => return true,
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
    pub(super) fn ping_wake(&self, last_activity: u64, interval: u64) -> u64 {
        let mut wake = u64::MAX;
        let mut idle = true;
        for w in [self.c2b.ws.as_ref(), self.b2c.ws.as_ref()].into_iter().flatten() {
            match w.ping {
                PingOut::Due { since: at, .. } | PingOut::Sent { at, .. } => {
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
    pub(super) fn start_ending(&mut self, reason: EndReason, now: u64, wait_ms: u64, wait_answers: bool) {
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
    pub(super) fn progress_ending(&mut self, now: u64) -> Option<EndReason> {
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
