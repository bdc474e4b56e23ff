//! The tunnel's state machine ([`Tunnel`]) and the threaded poll loop
//! that drives it ([`run`]).

use super::buffer::Buffer;
use super::dir::{Broke, Dir};
use super::ws::{Ending, Rng};
use super::*;
use crate::sys::{self, Errno};


/// Monotonic milliseconds; should the clock be unreadable, time is
/// counted from the poll timeouts that expired.
pub(super) struct Clock {
    pub(super) fallback: u64,
}

impl Clock {
    pub(super) fn now(&self) -> u64 {
        sys::monotonic_ms().unwrap_or(self.fallback)
    }

    pub(super) fn slept(&mut self, ms: u64) {
        self.fallback = self.fallback.saturating_add(ms);
    }
}

/// Passes of "flush, read, flush" per round before the timers and poll()
/// get their turn.
pub(super) const PASSES_PER_ROUND: usize = 16;

pub(super) fn other(side: Side) -> Side {
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
pub(super) fn step<S, D>(
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
pub(super) fn propagate_eof<D: Endpoint + ?Sized>(
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

pub(super) struct Tunnel<'a, 'b> {
    pub(super) c2b: Dir<'a>,
    pub(super) b2c: Dir<'b>,
    pub(super) closed_first: Option<Side>,
    pub(super) closing: bool,
    pub(super) polls: u64,
    /// poll() reported POLLHUP for this side's descriptor while nothing was
    /// asked of it: it is left out of later poll sets (no busy loop).
    pub(super) client_hup: bool,
    pub(super) backend_hup: bool,
    /// WebSocket: the tunnel's own Close 1001s are under way.
    pub(super) ending: Option<Ending>,
    pub(super) rng: Rng,
    pub(super) pings_sent: u32,
    /// When the last round of Pings began.
    pub(super) ping_round: u64,
}

impl Tunnel<'_, '_> {
    pub(super) fn moved(&self) -> u64 {
        self.c2b.traffic().wrapping_add(self.b2c.traffic())
    }

    pub(super) fn ready(&self) -> bool {
        self.c2b.ready(self.closing) || self.b2c.ready(self.closing)
    }


    pub(super) fn finish(&self, reason: EndReason, os_error: Errno) -> Stats {
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

    pub(super) fn fail(&mut self, (side, e): (Side, Errno)) -> Stats {
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
pub(super) fn init<'s, 'a>(
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
pub(super) fn drive<'a, C, B, F, R>(
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

