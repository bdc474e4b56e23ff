//! The per-child reactor: tunnels that left their httpd worker.
//!
//! Once the 101 is out, a tunnel whose two ends are plain sockets is handed
//! over ([`Adoption`]): the shim dups both descriptors and passes them,
//! with the bytes httpd's filters had already read, to this reactor, and
//! the worker goes back to serving requests. One thread per httpd child
//! runs [`Reactor::run`]: epoll, edge-triggered, each descriptor registered
//! once for reading and writing; each tunnel is the engine of
//! [`crate::tunnel`] ([`Tunnel`]), the same state machine the threaded
//! tunnels run, turned whenever one of its descriptors reports something
//! or its next deadline (idle timeout, ping, close wait, drain moment,
//! quiet release) comes.
//!
//! Memory: a tunnel is one heap block (its state, ~1 KiB); its two buffers
//! take blocks from the reactor's [`BufPool`] only while bytes are pending
//! and give them back at the end of the turn; pipes (splice) exist only
//! while bytes flow. Nothing is mapped per tunnel.
//!
//! Other threads talk to the reactor through [`Shared`] only: a wake-up
//! pipe that carries handed-over tunnels (as the addresses the ffi layer
//! makes of them) and a zero for "look at the flags", and atomics (tunnel
//! count, stop mode, quit).

use alloc::boxed::Box;
use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use crate::sys::{self, Errno, Fd, Socket};
use crate::tunnel::{BufPool, Buffer, Config, EndReason, Stats, Stop, Tunnel, Turn};

/// Size of a pooled buffer block (and the most bytes a side may have
/// pending at hand-over).
pub const BLOCK: usize = 64 * 1024;

/// Idle blocks the reactor keeps for reuse.
const KEEP_BLOCKS: usize = 32;

/// The tunnels never ask should_stop on their own: the reactor pokes them
/// when the stop mode changes or a drain moment comes.
const NEVER_MS: u64 = u64::MAX / 4;

/// The loop looks at the flags at least this often, events or not.
const MAX_WAIT_MS: u64 = 1000;

/// Epoll token of the wake-up pipe.
const WAKE: u64 = u64::MAX;

/// What runs when a handed-over tunnel has ended (its descriptors closed),
/// on the reactor's thread: its figures and how long it ran.
pub trait Finish {
    /// Called exactly once per adopted tunnel.
    fn finish(self, stats: &Stats, duration_ms: u64);
}

impl<F: FnOnce(&Stats, u64)> Finish for F {
    fn finish(self, stats: &Stats, duration_ms: u64) {
        self(stats, duration_ms)
    }
}

/// A tunnel handed over to the reactor.
pub struct Adoption<E: Finish> {
    /// The client's socket (the reactor's own descriptor; closed by it).
    pub client: Fd,
    /// The backend's.
    pub backend: Fd,
    /// Bytes read from the client, not yet relayed (see [`Buffer::owned`],
    /// with [`BLOCK`]).
    pub client_buf: Buffer<'static>,
    /// Bytes read from the backend, not yet relayed.
    pub backend_buf: Buffer<'static>,
    /// Its settings (tick_ms is not used).
    pub cfg: Config,
    /// ProxyWebsocketDrain in ms (0: none).
    pub drain_ms: u64,
    /// Spreads the drain moments.
    pub seed: u32,
    /// Runs when it ends.
    pub finish: E,
}

/// How the child is going away (the order matters: a later stop may only
/// make it harder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum StopMode {
    /// Not going away.
    Running = 0,
    /// Graceful restart or stop: drain windows run.
    Graceful = 1,
    /// Hard stop: Close 1001 now, gone within half a second.
    Hard = 2,
    /// Cut everything now.
    Now = 3,
}

impl StopMode {
    fn from_u8(v: u8) -> StopMode {
        match v {
            0 => StopMode::Running,
            1 => StopMode::Graceful,
            2 => StopMode::Hard,
            _ => StopMode::Now,
        }
    }
}

/// What the reactor shares with the other threads of the process.
#[derive(Debug)]
pub struct Shared {
    wake_read: Fd,
    wake_write: Fd,
    tunnels: AtomicUsize,
    running: AtomicBool,
    quitting: AtomicBool,
    stop: AtomicU8,
}

impl Shared {
    /// The wake-up pipe: its read end non-blocking (the reactor drains it),
    /// its write end blocking (a post never fails for a full pipe).
    pub fn new() -> Result<Shared, Errno> {
        let p = sys::pipe()?;
        let flags = sys::get_flags(p.write_end())?;
        sys::set_flags(p.write_end(), flags & !sys::O_NONBLOCK)?;
        let (r, w) = p.into_raw();
        Ok(Shared {
            wake_read: r,
            wake_write: w,
            tunnels: AtomicUsize::new(0),
            running: AtomicBool::new(false),
            quitting: AtomicBool::new(false),
            stop: AtomicU8::new(StopMode::Running as u8),
        })
    }

    /// Send one word to the reactor (0: "look at the flags"). False when
    /// the pipe is broken.
    pub fn post(&self, msg: usize) -> bool {
        let bytes = msg.to_ne_bytes();
        loop {
            match sys::write(self.wake_write, &bytes) {
                sys::FdIo::Done(n) if n == bytes.len() => return true,
                sys::FdIo::Failed(e) if e == sys::EINTR => continue,
                // Writes of a word are atomic: nothing else can happen but
                // a failure.
                _ => return false,
            }
        }
    }

    /// Count a tunnel about to be posted (before the post, so that
    /// [`tunnels`](Self::tunnels) never misses one in flight).
    pub fn count_one(&self) {
        self.tunnels.fetch_add(1, Ordering::SeqCst);
    }

    /// Take back a count whose post failed.
    pub fn uncount_one(&self) {
        self.tunnels.fetch_sub(1, Ordering::SeqCst);
    }

    /// Tunnels adopted (or in flight) and not yet finished.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }

    /// The reactor runs and does not quit.
    pub fn accepting(&self) -> bool {
        self.running.load(Ordering::SeqCst) && !self.quitting.load(Ordering::SeqCst)
    }

    /// See `wst_reactor_can_take` in the contract header.
    pub fn can_take(&self, highest_fd: Fd) -> bool {
        self.accepting()
            && StopMode::from_u8(self.stop.load(Ordering::SeqCst)) < StopMode::Hard
            && !crate::tunnel::near_fd_limit(highest_fd)
    }

    /// The child is going away; only ever harder.
    pub fn stop(&self, how: Stop) {
        let mode = match how {
            Stop::No => return,
            Stop::GoingAway => StopMode::Graceful,
            Stop::Shutdown => StopMode::Hard,
            Stop::Now => StopMode::Now,
        };
        self.stop.fetch_max(mode as u8, Ordering::SeqCst);
        self.post(0);
    }

    /// End every tunnel and return from [`Reactor::run`].
    pub fn quit(&self) {
        self.quitting.store(true, Ordering::SeqCst);
        self.post(0);
    }

    fn mode(&self) -> StopMode {
        StopMode::from_u8(self.stop.load(Ordering::SeqCst))
    }

    /// Words posted so far, read without waiting (into `out`, cleared).
    fn take_posts(&self, out: &mut Vec<usize>) {
        out.clear();
        const W: usize = core::mem::size_of::<usize>();
        let mut buf = [0u8; 64 * W];
        loop {
            match sys::read(self.wake_read, &mut buf) {
                sys::FdIo::Done(n) if n > 0 => {
                    for word in buf.get(..n).unwrap_or(&[]).chunks_exact(W) {
                        let mut b = [0u8; W];
                        b.copy_from_slice(word);
                        if out.try_reserve(1).is_ok() {
                            out.push(usize::from_ne_bytes(b));
                        }
                    }
                    if n < buf.len() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        sys::close(self.wake_read);
        sys::close(self.wake_write);
    }
}

/// One tunnel the reactor holds.
struct Slot<E: Finish> {
    tunnel: Tunnel<'static, 'static>,
    client: Socket,
    backend: Socket,
    cfg: Config,
    drain_ms: u64,
    seed: u32,
    started: u64,
    finish: Option<E>,
    /// Distinguishes this tunnel from earlier ones in the same slot.
    gen: u32,
    /// The timer set for it (u64::MAX: none).
    deadline: u64,
    /// When the stop mode next changes the answer for it (u64::MAX: never).
    stop_at: u64,
    /// Has events to handle this round.
    dirty: bool,
}

/// The reactor thread's state.
pub struct Reactor<E: Finish> {
    epoll: sys::Epoll,
    slots: Vec<Option<Box<Slot<E>>>>,
    free: Vec<u32>,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    pool: BufPool,
    gen: u32,
    mode: StopMode,
    stop_since: u64,
    dirty: Vec<u32>,
    posts: Vec<usize>,
}

/// A drain's answer for a tunnel at `now`, and when it next changes.
fn drain_answer(mode: StopMode, since: u64, drain_ms: u64, seed: u32, now: u64) -> (Stop, u64) {
    match mode {
        StopMode::Running => (Stop::No, u64::MAX),
        StopMode::Now => (Stop::Now, u64::MAX),
        StopMode::Hard => (Stop::Shutdown, u64::MAX),
        StopMode::Graceful if drain_ms == 0 => (Stop::No, u64::MAX),
        StopMode::Graceful => {
            // A moment spread over the window but its end, which is left
            // for the Close handshakes (as the threaded tunnels do).
            let margin = (drain_ms / 10).max(600);
            let span = drain_ms.saturating_sub(margin).max(1);
            let moment = since.saturating_add(u64::from(seed) % span);
            let end = since.saturating_add(drain_ms);
            if now >= end {
                (Stop::Now, u64::MAX)
            } else if now >= moment {
                (Stop::GoingAway, end)
            } else {
                (Stop::No, moment)
            }
        }
    }
}

fn now_ms() -> u64 {
    sys::monotonic_ms().unwrap_or(0)
}

/// epoll's bits as poll's, for [`Tunnel::mark`].
fn poll_bits(ev: u32) -> i16 {
    let mut r = 0;
    if ev & (sys::EPOLLIN | sys::EPOLLRDHUP) != 0 {
        r |= sys::POLLIN;
    }
    if ev & sys::EPOLLRDHUP != 0 {
        r |= sys::POLLRDHUP;
    }
    if ev & sys::EPOLLOUT != 0 {
        r |= sys::POLLOUT;
    }
    if ev & sys::EPOLLERR != 0 {
        r |= sys::POLLERR;
    }
    if ev & sys::EPOLLHUP != 0 {
        r |= sys::POLLHUP;
    }
    r
}

impl<E: Finish> Reactor<E> {
    /// A reactor listening to `shared`'s wake-up pipe.
    pub fn new(shared: &Shared) -> Result<Self, Errno> {
        let epoll = sys::Epoll::new()?;
        epoll.add(shared.wake_read, sys::EPOLLIN, WAKE)?;
        Ok(Reactor {
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            pool: BufPool::new(BLOCK, KEEP_BLOCKS),
            gen: 0,
            mode: StopMode::Running,
            stop_since: 0,
            dirty: Vec::new(),
            posts: Vec::new(),
        })
    }

    /// Tunnels held.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// No tunnel held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The loop, until [`Shared::quit`]: every tunnel then ends (reason
    /// [`EndReason::Stopped`]) and its finish runs. `decode` turns a posted
    /// word (not 0) back into the tunnel it stands for.
    pub fn run<D>(&mut self, shared: &Shared, mut decode: D)
    where
        D: FnMut(usize) -> Option<Adoption<E>>,
    {
        let _ = sys::block_all_signals();
        shared.running.store(true, Ordering::SeqCst);
        let mut events = [sys::EpollEvent::default(); sys::EPOLL_BATCH];
        let mut failed = None;
        loop {
            let now = now_ms();
            self.fire_timers(now);
            self.turn_dirty(now, shared);
            if shared.quitting.load(Ordering::SeqCst) {
                break;
            }
            let next = self.timers.peek().map_or(u64::MAX, |Reverse((at, _, _))| *at);
            let timeout = next.saturating_sub(now).min(MAX_WAIT_MS);
            let n = match self.epoll.wait(&mut events, timeout as core::ffi::c_int) {
                Ok(n) => n,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let now = now_ms();
            let mut woken = false;
            for ev in events.iter().take(n) {
                if ev.token == WAKE {
                    woken = true;
                    continue;
                }
                self.mark(ev.token, ev.events, now, shared);
            }
            if woken {
                self.wake(shared, &mut decode, now);
            }
            self.turn_dirty(now, shared);
        }
        // Quitting (or epoll broke): end what is left, then whatever was
        // posted meanwhile.
        shared.running.store(false, Ordering::SeqCst);
        let now = now_ms();
        let reason = if failed.is_some() { EndReason::PollError } else { EndReason::Stopped };
        for idx in 0..self.slots.len() {
            if let Some(Some(slot)) = self.slots.get(idx) {
                let stats = slot.tunnel.end(reason, failed.unwrap_or(0));
                self.end(idx as u32, stats, now, shared);
            }
        }
        shared.take_posts(&mut self.posts);
        for word in core::mem::take(&mut self.posts) {
            if let Some(a) = (word != 0).then(|| decode(word)).flatten() {
                self.refuse(a, shared);
            }
        }
    }

    /// Turn every tunnel that has something to handle.
    fn turn_dirty(&mut self, now: u64, shared: &Shared) {
        let mut dirty = core::mem::take(&mut self.dirty);
        for idx in dirty.drain(..) {
            self.turn(idx, now, shared);
        }
        // Turns may have made more dirty (none do today); keep both.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    fn slot_mut(&mut self, idx: u32) -> Option<&mut Slot<E>> {
        self.slots.get_mut(idx as usize)?.as_deref_mut()
    }

    /// An event for a tunnel's descriptor: note it, turn the tunnel later
    /// this round (once, whatever both descriptors reported).
    fn mark(&mut self, token: u64, ev: u32, now: u64, shared: &Shared) {
        let idx = (token >> 1) as u32;
        let side = if token & 1 == 0 {
            crate::tunnel::Side::Client
        } else {
            crate::tunnel::Side::Backend
        };
        let Some(slot) = self.slot_mut(idx) else {
            return;
        };
        let fd = match side {
            crate::tunnel::Side::Client => slot.client.fd(),
            crate::tunnel::Side::Backend => slot.backend.fd(),
        };
        let ended = slot.tunnel.mark(side, fd, poll_bits(ev), sys::POLLIN | sys::POLLOUT);
        let first = !slot.dirty;
        slot.dirty = true;
        if let Some(stats) = ended {
            // Ended by an error: finished now (a later event finds no slot;
            // its index may still be in this round's dirty list, where the
            // slot is then empty or another tunnel's, turned for nothing).
            slot.dirty = false;
            self.end(idx, stats, now, shared);
            return;
        }
        if first && self.dirty.try_reserve(1).is_ok() {
            self.dirty.push(idx);
        }
    }

    /// The wake-up pipe spoke: new tunnels, a stop, a quit.
    fn wake<D>(&mut self, shared: &Shared, decode: &mut D, now: u64)
    where
        D: FnMut(usize) -> Option<Adoption<E>>,
    {
        shared.take_posts(&mut self.posts);
        let posts = core::mem::take(&mut self.posts);
        for &word in &posts {
            if word != 0 {
                if let Some(a) = decode(word) {
                    self.adopt(a, now, shared);
                }
            }
        }
        self.posts = posts;
        let mode = shared.mode();
        if mode > self.mode {
            if self.mode == StopMode::Running {
                self.stop_since = now;
            }
            self.mode = mode;
            // Every tunnel asks the new answer at once.
            for idx in 0..self.slots.len() as u32 {
                if let Some(slot) = self.slot_mut(idx) {
                    slot.stop_at = now;
                    if !slot.dirty {
                        slot.dirty = true;
                        if self.dirty.try_reserve(1).is_ok() {
                            self.dirty.push(idx);
                        }
                    }
                }
            }
        }
    }

    fn adopt(&mut self, a: Adoption<E>, now: u64, shared: &Shared) {
        if sys::set_nonblocking(a.client).is_err() || sys::set_nonblocking(a.backend).is_err() {
            self.refuse(a, shared);
            return;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.slots.try_reserve(1).is_err() || self.free.try_reserve(1).is_err() {
                    self.refuse(a, shared);
                    return;
                }
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.gen = self.gen.wrapping_add(1);
        let mut cfg = a.cfg;
        cfg.tick_ms = NEVER_MS;
        let mut tunnel = Tunnel::new(a.client_buf, a.backend_buf, &cfg, now, true);
        // The first turn asks the stop mode (a tunnel adopted while the
        // child drains gets its moment).
        tunnel.poke();
        let slot = Slot {
            tunnel,
            client: Socket::new(a.client),
            backend: Socket::new(a.backend),
            cfg,
            drain_ms: a.drain_ms,
            seed: a.seed,
            started: now,
            finish: Some(a.finish),
            gen: self.gen,
            deadline: u64::MAX,
            stop_at: u64::MAX,
            dirty: false,
        };
        let mut boxed = Vec::new();
        if boxed.try_reserve_exact(1).is_err() {
            // No memory for the slot: the tunnel ends as it came.
            let stats = slot.tunnel.end(EndReason::Stopped, sys::ENOMEM);
            self.free.push(idx);
            finish_now(slot, stats, now, shared);
            return;
        }
        boxed.push(slot);
        let Some(slot) = boxed.pop().map(Box::new) else {
            return;
        };
        let (cfd, bfd) = (slot.client.fd(), slot.backend.fd());
        if let Some(s) = self.slots.get_mut(idx as usize) {
            *s = Some(slot);
        }
        let interest = sys::EPOLLIN | sys::EPOLLOUT | sys::EPOLLRDHUP | sys::EPOLLET;
        let token = u64::from(idx) << 1;
        if let Err(e) = self
            .epoll
            .add(cfd, interest, token)
            .and_then(|()| self.epoll.add(bfd, interest, token | 1))
        {
            if let Some(slot) = self.slot_mut(idx) {
                let stats = slot.tunnel.end(EndReason::PollError, e);
                self.end(idx, stats, now, shared);
            }
            return;
        }
        self.turn(idx, now, shared);
    }

    /// A tunnel that cannot be held: closed, finished as stopped.
    fn refuse(&mut self, a: Adoption<E>, shared: &Shared) {
        let cfg = a.cfg;
        let t = Tunnel::new(a.client_buf, a.backend_buf, &cfg, 0, true);
        let stats = t.end(EndReason::Stopped, 0);
        for fd in [a.client, a.backend] {
            sys::shutdown_both(fd);
            sys::close(fd);
        }
        a.finish.finish(&stats, 0);
        shared.uncount_one();
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((at, idx, gen))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slot_mut(idx) else {
                continue;
            };
            if slot.gen != gen || slot.deadline != at {
                continue;
            }
            slot.deadline = u64::MAX;
            if !slot.dirty {
                slot.dirty = true;
                if self.dirty.try_reserve(1).is_ok() {
                    self.dirty.push(idx);
                }
            }
        }
    }

    fn turn(&mut self, idx: u32, now: u64, shared: &Shared) {
        let (mode, since) = (self.mode, self.stop_since);
        let Some(slot) = self.slots.get_mut(idx as usize).and_then(|s| s.as_deref_mut()) else {
            return;
        };
        slot.dirty = false;
        if now >= slot.stop_at {
            slot.tunnel.poke();
        }
        if !slot.tunnel.provide(&mut self.pool) {
            let stats = slot.tunnel.end(EndReason::Stopped, sys::ENOMEM);
            self.end(idx, stats, now, shared);
            return;
        }
        let (drain_ms, seed) = (slot.drain_ms, slot.seed);
        let mut stop_at = slot.stop_at;
        let mut should_stop = || {
            let (answer, next) = drain_answer(mode, since, drain_ms, seed, now);
            stop_at = next;
            answer
        };
        let turned = slot
            .tunnel
            .turn(now, &mut slot.client, &mut slot.backend, &slot.cfg, &mut should_stop);
        slot.stop_at = stop_at;
        slot.tunnel.reclaim(&mut self.pool);
        match turned {
            Turn::Done(stats) => self.end(idx, stats, now, shared),
            Turn::Wait(w) => {
                let at = now.saturating_add(w.timeout_ms).min(slot.stop_at);
                if at < slot.deadline && at < NEVER_MS {
                    slot.deadline = at;
                    let gen = slot.gen;
                    if self.timers.try_reserve(1).is_ok() {
                        self.timers.push(Reverse((at, idx, gen)));
                    }
                }
            }
        }
    }

    fn end(&mut self, idx: u32, stats: Stats, now: u64, shared: &Shared) {
        let Some(slot) = self.slots.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        let _ = self.epoll.delete(slot.client.fd());
        let _ = self.epoll.delete(slot.backend.fd());
        let _ = self.free.try_reserve(1);
        self.free.push(idx);
        let mut slot = *slot;
        slot.tunnel.reclaim(&mut self.pool);
        finish_now(slot, stats, now, shared);
    }
}

/// Close a tunnel's descriptors, run its finish, take it off the count.
fn finish_now<E: Finish>(mut slot: Slot<E>, stats: Stats, now: u64, shared: &Shared) {
    for fd in [slot.client.fd(), slot.backend.fd()] {
        sys::shutdown_both(fd);
        sys::close(fd);
    }
    let duration = now.saturating_sub(slot.started);
    if let Some(f) = slot.finish.take() {
        f.finish(&stats, duration);
    }
    drop(slot);
    shared.uncount_one();
}
