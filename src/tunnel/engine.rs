//! The tunnel's state machine ([`Tunnel`]) and the threaded poll loop
//! that drives it ([`run`]).

use super::buffer::Buffer;
use super::dir::{Broke, Bucket, Dir};
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

/// A direction's buffer and pipe go back after the tunnel has been quiet
/// this long (a lent buffer's pages to the kernel, a pooled one's block
/// at the end of every turn anyway).
pub const QUIET_MS: u64 = 250;

/// What a tunnel waits for after a [`Tunnel::turn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// poll() events to ask for on the client's descriptor (0: none).
    pub client: i16,
    /// The same for the backend's.
    pub backend: i16,
    /// poll() reported POLLHUP for the client's descriptor while nothing
    /// was asked of it: leave it out of the poll set (no busy loop).
    pub client_hup: bool,
    /// The same for the backend's.
    pub backend_hup: bool,
    /// Turn again after this long at the latest (ms), events or not.
    pub timeout_ms: u64,
}

/// What a turn ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Wait for this, then [`Tunnel::mark`] what happened and turn again.
    Wait(Wait),
    /// The tunnel ended; its figures.
    Done(Stats),
}

/// One tunnel's state: a state machine fed readiness ([`Tunnel::mark`])
/// and turned ([`Tunnel::turn`]) by its driver: the threaded poll loop
/// ([`run`]) or the reactor ([`crate::reactor`]). It owns no descriptor
/// and does no waiting itself.
pub struct Tunnel<'a, 'b> {
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
    /// When bytes last moved (traffic; see [`Dir::traffic`]).
    pub(super) last_activity: u64,
    /// When should_stop is asked next.
    pub(super) next_tick: u64,
    /// When [`Config::max_lifetime_ms`] ends it (u64::MAX: never).
    pub(super) lifetime_end: u64,
}

impl<'a, 'b> Tunnel<'a, 'b> {
    /// A tunnel made at `now`. `edge`: its driver reports readiness
    /// edge-triggered (epoll with EPOLLET): a source is then read until it
    /// answers AGAIN rather than trusting a short splice.
    pub fn new(client_buf: Buffer<'a>, backend_buf: Buffer<'b>, cfg: &Config, now: u64, edge: bool) -> Self {
        let ws = cfg.websocket;
        let limit = cfg.max_message_size;
        let bucket = cfg.max_message_rate.map(|(rate, burst)| Bucket::new(rate, burst, now));
        let mut c2b = Dir::new(client_buf, ws.then_some(true), limit, bucket);
        let mut b2c = Dir::new(backend_buf, ws.then_some(false), limit, None);
        c2b.edge = edge;
        b2c.edge = edge;
        // The lifetime ends at a random moment within its last tenth.
        let lifetime_end = cfg.max_lifetime_ms.map_or(u64::MAX, |l| {
            let jitter = Rng::new(cfg.random_seed ^ 0x5bd1_e995).next() % (l / 10).max(1);
            now.saturating_add(l.saturating_sub(jitter))
        });
        Tunnel {
            c2b,
            b2c,
            closed_first: None,
            closing: false,
            polls: 0,
            client_hup: false,
            backend_hup: false,
            ending: None,
            rng: Rng::new(cfg.random_seed),
            pings_sent: 0,
            ping_round: now,
            last_activity: now,
            next_tick: now,
            lifetime_end,
        }
    }
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

    /// Its figures as they stand, ended with `reason` by its driver (a
    /// reactor that quits: [`EndReason::Stopped`]; a failed wait:
    /// [`EndReason::PollError`]).
    pub fn end(&self, reason: EndReason, os_error: Errno) -> Stats {
        self.finish(reason, os_error)
    }

    /// Ask should_stop at the next turn, whatever the tick.
    pub fn poke(&mut self) {
        self.next_tick = 0;
    }

    /// Bytes read and not yet written, both directions.
    pub fn pending(&self) -> usize {
        self.c2b.pending().saturating_add(self.b2c.pending())
    }

    /// Pooled buffers: take their blocks for a turn (false: no memory).
    pub fn provide(&mut self, pool: &mut BufPool) -> bool {
        self.c2b.buf.provide(pool) && self.b2c.buf.provide(pool)
    }

    /// Pooled buffers: give empty ones back after a turn.
    pub fn reclaim(&mut self, pool: &mut BufPool) {
        self.c2b.buf.reclaim(pool);
        self.b2c.buf.reclaim(pool);
    }

    /// What a wait reported for `side`'s descriptor `fd`: `revents` (poll
    /// bits) of the events `asked`. Some(stats) when that ends the tunnel
    /// (POLLERR, POLLNVAL).
    pub fn mark(&mut self, side: Side, fd: sys::Fd, revents: i16, asked: i16) -> Option<Stats> {
        if revents == 0 {
            return None;
        }
        if revents & (sys::POLLNVAL | sys::POLLERR) != 0 {
            let e = if revents & sys::POLLNVAL != 0 {
                sys::EBADF
            } else {
                sys::socket_error(fd)
            };
            return Some(self.fail((side, e)));
        }
        let hup = revents & sys::POLLHUP != 0;
        if hup || revents & sys::POLLRDHUP != 0 {
            // Edge-triggered drivers: the end of input is sticky (see
            // Dir::fin_seen); poll() reports it level-triggered anyway.
            match side {
                Side::Client => self.c2b.fin_seen |= self.c2b.edge,
                Side::Backend => self.b2c.fin_seen |= self.b2c.edge,
            }
        }
        if hup && asked == 0 {
            match side {
                Side::Client => self.client_hup = true,
                Side::Backend => self.backend_hup = true,
            }
        }
        let readable = asked & sys::POLLIN != 0 && (revents & sys::POLLIN != 0 || hup);
        let writable = asked & sys::POLLOUT != 0 && (revents & sys::POLLOUT != 0 || hup);
        let (src_of_side, dst_of_side) = match side {
            Side::Client => (&mut self.c2b.readable, &mut self.b2c.writable),
            Side::Backend => (&mut self.b2c.readable, &mut self.c2b.writable),
        };
        if readable {
            *src_of_side = true;
        }
        if writable {
            *dst_of_side = true;
        }
        let (src_hup, dst_hup) = match side {
            Side::Client => (&mut self.c2b.src_hup, &mut self.b2c.dst_hup),
            Side::Backend => (&mut self.b2c.src_hup, &mut self.c2b.dst_hup),
        };
        if readable {
            *src_hup = hup;
        }
        if writable {
            *dst_hup = hup;
        }
        None
    }

    /// Move what can be moved without waiting, apply the end conditions
    /// and the timers, and say what to wait for next (or that the tunnel
    /// ended). `now`: monotonic ms. `should_stop` is asked at the first
    /// turn, then every `cfg.tick_ms`, and after [`poke`](Self::poke).
    pub fn turn<C, B, F, R>(
        &mut self,
        now: u64,
        client: &mut C,
        backend: &mut B,
        cfg: &Config,
        should_stop: &mut F,
    ) -> Turn
    where
        C: Endpoint + ?Sized,
        B: Endpoint + ?Sized,
        F: FnMut() -> R,
        R: Into<Stop>,
    {
        match self.turn_inner(now, client, backend, cfg, should_stop) {
            Ok(w) => Turn::Wait(w),
            Err(s) => Turn::Done(s),
        }
    }

    // The Err is the tunnel's end, once per tunnel: its size is of no
    // consequence (the Ok path is the hot one).
    #[allow(clippy::result_large_err)]
    fn turn_inner<C, B, F, R>(
        &mut self,
        now: u64,
        client: &mut C,
        backend: &mut B,
        cfg: &Config,
        should_stop: &mut F,
    ) -> Result<Wait, Stats>
    where
        C: Endpoint + ?Sized,
        B: Endpoint + ?Sized,
        F: FnMut() -> R,
        R: Into<Stop>,
    {
        let ws = cfg.websocket;
        let tick = cfg.tick_ms.max(1);
        let ping_interval = cfg.ping_interval_ms.filter(|_| ws);

        // 1. Move bytes without waiting.
        self.c2b.now = now;
        self.b2c.now = now;
        let moved_before = self.moved();
        let ending = self.ending.is_some();
        for _ in 0..PASSES_PER_ROUND {
            let mut progress = step(&mut self.c2b, client, backend, Side::Client, self.closing, ending)
                .map_err(|f| self.fail(f))?;
            progress |= step(&mut self.b2c, backend, client, Side::Backend, self.closing, ending)
                .map_err(|f| self.fail(f))?;
            if !progress || !self.ready() {
                break;
            }
        }
        let moved = self.moved() != moved_before;

        // 2. End of input, half-close, end of the tunnel.
        if self.closed_first.is_none() {
            if self.c2b.eof {
                self.closed_first = Some(Side::Client);
            } else if self.b2c.eof {
                self.closed_first = Some(Side::Backend);
            }
        }
        if moved {
            self.last_activity = now;
        }
        if ws {
            self.ws_update(now);
            self.limits(now, cfg);
        }
        if ws && self.ending.is_none() && self.c2b.close_handshake_done() && self.b2c.close_handshake_done() {
            // Both peers' Close frames went through whole: the close
            // handshake is over, and the server side closes the TCP
            // connections (RFC 6455 §7.1.1) rather than wait for the client.
            return Err(self.finish(EndReason::Closed, 0));
        }
        if cfg.half_close {
            // While ending, a failed shutdown only ends that direction.
            if let Err(f) = propagate_eof(&mut self.c2b, backend, Side::Backend) {
                if self.ending.is_none() {
                    return Err(self.fail(f));
                }
                self.c2b.shut = true;
            }
            if let Err(f) = propagate_eof(&mut self.b2c, client, Side::Client) {
                if self.ending.is_none() {
                    return Err(self.fail(f));
                }
                self.b2c.shut = true;
            }
            if self.c2b.shut && self.b2c.shut {
                let reason = self.ending.map_or(EndReason::Closed, |e| e.reason);
                return Err(self.finish(reason, 0));
            }
        } else if self.ending.is_none() {
            if !self.closing && (self.c2b.eof || self.b2c.eof) {
                self.closing = true;
                self.last_activity = now;
                self.stop_pinging();
            }
            if self.closing && !self.c2b.wants_flush() && !self.b2c.wants_flush() {
                return Err(self.finish(EndReason::Closed, 0));
            }
        }

        // 3. Timers.
        if now >= self.next_tick {
            match should_stop().into() {
                Stop::No => {}
                Stop::GoingAway if ws => {
                    self.start_ending(EndReason::GoingAway, now, cfg.close_wait_ms, true);
                }
                Stop::Shutdown if ws => {
                    let wait = cfg.close_wait_ms.min(SHUTDOWN_CLOSE_MS);
                    self.start_ending(EndReason::GoingAway, now, wait, false);
                }
                Stop::Now | Stop::GoingAway | Stop::Shutdown => {
                    return Err(self.finish(EndReason::Stopped, 0));
                }
            }
            self.next_tick = now.saturating_add(tick);
        }
        if self.ending.is_none() && !self.closing && now >= self.lifetime_end {
            if !ws {
                return Err(self.finish(EndReason::Lifetime, 0));
            }
            self.start_ending(EndReason::Lifetime, now, cfg.close_wait_ms, true);
        }
        let mut wait = self.next_tick.saturating_sub(now);
        if self.ending.is_none() && !self.closing {
            wait = wait.min(self.lifetime_end.saturating_sub(now));
        }
        if self.ending.is_none() {
            let limit = if self.closing {
                Some(cfg.idle_timeout_ms.map_or(cfg.close_linger_ms, |i| i.min(cfg.close_linger_ms)))
            } else {
                cfg.idle_timeout_ms
            };
            if let Some(limit) = limit {
                let deadline = self.last_activity.saturating_add(limit);
                if now < deadline {
                    wait = wait.min(deadline - now);
                } else if ws && cfg.idle_close_frame && !self.closing {
                    self.start_ending(EndReason::Idle, now, cfg.close_wait_ms, false);
                } else {
                    return Err(self.finish(EndReason::Idle, 0));
                }
            }
        }
        if let Some(interval) = ping_interval.filter(|_| !self.closing && self.ending.is_none()) {
            if self.pings(now, self.last_activity, interval) {
                self.start_ending(EndReason::PingTimeout, now, cfg.close_wait_ms, false);
            } else {
                wait = wait.min(self.ping_wake(self.last_activity, interval).saturating_sub(now));
            }
        }
        if let Some(e) = self.ending {
            if let Some(reason) = self.progress_ending(now) {
                return Err(self.finish(reason, 0));
            }
            wait = wait.min(e.deadline.saturating_sub(now));
        }
        // Quiet for a while: give the pipes and the buffers' memory back.
        if self.c2b.holds() || self.b2c.holds() {
            let at = self.last_activity.saturating_add(QUIET_MS);
            if now >= at {
                self.c2b.release_pipe();
                self.b2c.release_pipe();
            } else {
                wait = wait.min(at - now);
            }
        }
        if self.ready() {
            wait = 0;
        }

        // 4. What to wait for.
        let events = |i: bool, o: bool| (if i { sys::POLLIN } else { 0 }) | (if o { sys::POLLOUT } else { 0 });
        Ok(Wait {
            client: events(self.c2b.poll_in(self.closing), self.b2c.poll_out()),
            backend: events(self.b2c.poll_in(self.closing), self.c2b.poll_out()),
            client_hup: self.client_hup,
            backend_hup: self.backend_hup,
            timeout_ms: wait,
        })
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
    let stats = drive(t, clock, client, backend, cfg, should_stop);
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
    *state = None;
    state.get_or_insert_with(|| TunnelState(Tunnel::new(client_buf, backend_buf, cfg, now, false)))
}

/// The threaded driver: turn, poll() the two descriptors for what the
/// turn asked, mark what came, until the tunnel ends.
fn drive<'a, C, B, F, R>(
    t: &mut Tunnel<'a, 'a>,
    mut clock: Clock,
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
    loop {
        let w = match t.turn(clock.now(), client, backend, cfg, &mut should_stop) {
            Turn::Done(stats) => return stats,
            Turn::Wait(w) => w,
        };
        let mut fds = [
            watch(client.fd(), w.client, w.client_hup),
            watch(backend.fd(), w.backend, w.backend_hup),
        ];
        let timeout = i32::try_from(w.timeout_ms).unwrap_or(i32::MAX);
        t.polls = t.polls.saturating_add(1);
        match sys::poll(&mut fds, timeout) {
            Err(e) if e == sys::EINTR => continue,
            Err(e) => return t.finish(EndReason::PollError, e),
            Ok(0) => {
                clock.slept(w.timeout_ms);
                continue;
            }
            Ok(_) => {}
        }
        for (pfd, side) in fds.iter().zip([Side::Client, Side::Backend]) {
            if pfd.fd < 0 {
                continue;
            }
            if let Some(stats) = t.mark(side, pfd.fd, pfd.revents, pfd.events) {
                return stats;
            }
        }
    }
}
