//! `wst_reactor_*`: the contract's per-child reactor over
//! [`crate::reactor`]. A `wst_reactor` is a heap block holding the
//! [`Shared`] part, which any thread may use, and a pointer to the
//! [`Reactor`], which only the thread in `wst_reactor_run` touches (and
//! `wst_reactor_destroy` after it). A handed-over tunnel travels to the
//! reactor's thread as the address of a heap [`Adoption`], one word
//! through the wake-up pipe.

use alloc::boxed::Box;
use core::ffi::{c_int, c_void};

use super::contract::{
    wst_async_end_fn, wst_async_tunnel, wst_reactor, wst_status, wst_stop, wst_tunnel_stats,
};
use super::tunnel::{config_from_c, stats_to_c, stop_from_c};
use crate::reactor::{Adoption, Finish, Reactor, Shared, BLOCK};
use crate::tunnel::{Buffer, Stats};

/// WST_ASYNC_PENDING_MAX.
const PENDING_MAX: usize = super::contract::WST_ASYNC_PENDING_MAX as usize;

/// The shim's end callback and its context.
struct CFinish {
    end: unsafe extern "C" fn(*mut c_void, *const wst_tunnel_stats, u64),
    ctx: *mut c_void,
}

impl Finish for CFinish {
    fn finish(self, stats: &Stats, duration_ms: u64) {
        let c = stats_to_c(stats);
        // SAFETY: the callback and its context are the shim's, given to
        // wst_reactor_adopt, which says they are called exactly once with a
        // stats struct valid for the call (this one, on our stack).
        unsafe { (self.end)(self.ctx, &c, duration_ms) }
    }
}

/// What a `wst_reactor` points to.
struct Handle {
    shared: Shared,
    core: *mut Reactor<CFinish>,
}

fn handle<'a>(r: *const wst_reactor) -> Option<&'a Handle> {
    // SAFETY: a non-NULL r is what wst_reactor_create returned and not yet
    // destroyed (contract); only &Handle is made from it outside run and
    // destroy, and Handle's shared part is thread-safe (atomics, a pipe).
    unsafe { r.cast::<Handle>().as_ref() }
}

/// See wstunnel_core.h.
#[no_mangle]
pub extern "C" fn wst_reactor_create() -> *mut wst_reactor {
    let Ok(shared) = Shared::new() else {
        return core::ptr::null_mut();
    };
    let Ok(core) = Reactor::new(&shared) else {
        return core::ptr::null_mut();
    };
    let h = Handle {
        shared,
        core: Box::into_raw(Box::new(core)),
    };
    Box::into_raw(Box::new(h)).cast()
}

/// See wstunnel_core.h.
///
/// # Safety
/// `r` is NULL or a live reactor, run by one thread at a time, once.
#[no_mangle]
pub unsafe extern "C" fn wst_reactor_run(r: *mut wst_reactor) {
    let Some(h) = handle(r) else {
        return;
    };
    // SAFETY: core was made by wst_reactor_create and only this thread
    // uses it while run runs (contract: one thread runs it; destroy comes
    // after run returned).
    let core = unsafe { &mut *h.core };
    core.run(&h.shared, |word| {
        // SAFETY: every non-zero word posted is the address of a heap
        // Adoption that wst_reactor_adopt leaked for this reactor, posted
        // once, so it is taken back exactly once, here.
        let a = unsafe { Box::from_raw(word as *mut Adoption<CFinish>) };
        Some(*a)
    });
}

/// See wstunnel_core.h.
#[no_mangle]
pub extern "C" fn wst_reactor_can_take(r: *const wst_reactor, highest_fd: c_int) -> c_int {
    handle(r).is_some_and(|h| h.shared.can_take(highest_fd)).into()
}

/// The pending bytes as a reactor buffer.
///
/// # Safety
/// A non-NULL `ptr` points to `len` readable bytes.
unsafe fn pending(ptr: *const u8, len: usize) -> Option<Buffer<'static>> {
    if len == 0 {
        return Buffer::owned(&[], BLOCK);
    }
    if ptr.is_null() || len > PENDING_MAX {
        return None;
    }
    // SAFETY: the caller's guarantee: ptr is valid for len bytes during the
    // call; they are copied before it returns.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    // More than a pool block: a block of its own, freed once written.
    Buffer::owned(bytes, BLOCK.max(len))
}

/// See wstunnel_core.h.
///
/// # Safety
/// `r` is NULL or a live reactor; `t` is NULL or a valid wst_async_tunnel
/// whose pending pointers are valid for their lengths during the call and
/// whose end callback may be called once, later, on another thread, with
/// end_ctx.
#[no_mangle]
pub unsafe extern "C" fn wst_reactor_adopt(
    r: *mut wst_reactor,
    t: *const wst_async_tunnel,
) -> wst_status {
    let Some(h) = handle(r) else {
        return wst_status::WST_ERR_ARG;
    };
    // SAFETY: t is non-NULL here? checked by as_ref; valid per the contract.
    let Some(t) = (unsafe { t.as_ref() }) else {
        return wst_status::WST_ERR_ARG;
    };
    let end: wst_async_end_fn = t.end;
    let Some(end) = end else {
        return wst_status::WST_ERR_ARG;
    };
    if t.client_fd < 0 || t.backend_fd < 0 || t.client_fd == t.backend_fd || t.drain_ms < 0 {
        return wst_status::WST_ERR_ARG;
    }
    if t.to_backend_len > PENDING_MAX || t.to_client_len > PENDING_MAX {
        return wst_status::WST_ERR_ARG;
    }
    if !h.shared.accepting() {
        return wst_status::WST_ERR_SPACE;
    }
    // SAFETY: the pointers and lengths are the caller's (contract).
    let (Some(client_buf), Some(backend_buf)) = (unsafe { pending(t.to_backend, t.to_backend_len) }, unsafe {
        pending(t.to_client, t.to_client_len)
    }) else {
        return wst_status::WST_ERR_SPACE;
    };
    let a = Adoption {
        client: t.client_fd,
        backend: t.backend_fd,
        client_buf,
        backend_buf,
        cfg: config_from_c(&t.cfg),
        drain_ms: u64::try_from(t.drain_ms).unwrap_or(0),
        seed: t.cfg.random_seed,
        finish: CFinish { end, ctx: t.end_ctx },
    };
    let word = Box::into_raw(Box::new(a)) as usize;
    h.shared.count_one();
    if !h.shared.post(word) {
        h.shared.uncount_one();
        // SAFETY: the word was not posted: the Adoption is still ours, and
        // dropping it closes nothing (descriptors stay the caller's).
        drop(unsafe { Box::from_raw(word as *mut Adoption<CFinish>) });
        return wst_status::WST_ERR_SPACE;
    }
    wst_status::WST_OK
}

/// See wstunnel_core.h.
#[no_mangle]
pub extern "C" fn wst_reactor_stop(r: *mut wst_reactor, how: wst_stop) {
    if let Some(h) = handle(r) {
        h.shared.stop(stop_from_c(how));
    }
}

/// See wstunnel_core.h.
#[no_mangle]
pub extern "C" fn wst_reactor_tunnels(r: *const wst_reactor) -> usize {
    handle(r).map_or(0, |h| h.shared.tunnels())
}

/// See wstunnel_core.h.
#[no_mangle]
pub extern "C" fn wst_reactor_quit(r: *mut wst_reactor) {
    if let Some(h) = handle(r) {
        h.shared.quit();
    }
}

/// See wstunnel_core.h.
///
/// # Safety
/// `r` is NULL or a live reactor whose run has returned (or never ran, with
/// nothing adopted); nothing uses it afterwards.
#[no_mangle]
pub unsafe extern "C" fn wst_reactor_destroy(r: *mut wst_reactor) {
    if r.is_null() {
        return;
    }
    // SAFETY: r came from wst_reactor_create (Box<Handle>), is destroyed
    // once, and nobody else uses it now (contract).
    let h = unsafe { Box::from_raw(r.cast::<Handle>()) };
    // SAFETY: core came from Box::into_raw in create; run has returned.
    drop(unsafe { Box::from_raw(h.core) });
    drop(h);
}

exports_match_contract! {
    wst_reactor_create: unsafe extern "C" fn() -> *mut wst_reactor;
    wst_reactor_run: unsafe extern "C" fn(*mut wst_reactor);
    wst_reactor_can_take: unsafe extern "C" fn(*const wst_reactor, c_int) -> c_int;
    wst_reactor_adopt: unsafe extern "C" fn(*mut wst_reactor, *const wst_async_tunnel) -> wst_status;
    wst_reactor_stop: unsafe extern "C" fn(*mut wst_reactor, wst_stop);
    wst_reactor_tunnels: unsafe extern "C" fn(*const wst_reactor) -> usize;
    wst_reactor_quit: unsafe extern "C" fn(*mut wst_reactor);
    wst_reactor_destroy: unsafe extern "C" fn(*mut wst_reactor);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::contract::{wst_end_reason, wst_tunnel_config};
    use std::io::{Read, Write};
    use std::os::unix::io::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    struct Ended(mpsc::Sender<(wst_tunnel_stats, u64)>);

    unsafe extern "C" fn on_end(ctx: *mut c_void, st: *const wst_tunnel_stats, ms: u64) {
        let b = unsafe { Box::from_raw(ctx.cast::<Ended>()) };
        let _ = b.0.send((unsafe { *st }, ms));
    }

    struct Run {
        r: *mut wst_reactor,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Run {
        fn start() -> Run {
            let r = wst_reactor_create();
            assert!(!r.is_null());
            let addr = r as usize;
            let thread = std::thread::spawn(move || unsafe { wst_reactor_run(addr as *mut wst_reactor) });
            let t0 = Instant::now();
            while wst_reactor_can_take(r, 10) == 0 {
                assert!(t0.elapsed() < Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(5));
            }
            Run { r, thread: Some(thread) }
        }

        /// Adopt (client, backend) far ends; returns the near ends and the
        /// end channel.
        fn adopt(&self, cfg: wst_tunnel_config, drain_ms: c_int, to_backend: &[u8])
            -> (UnixStream, UnixStream, mpsc::Receiver<(wst_tunnel_stats, u64)>) {
            let (c_near, c_far) = UnixStream::pair().unwrap();
            let (b_near, b_far) = UnixStream::pair().unwrap();
            let (c_far, b_far) = (c_far.into_raw_fd(), b_far.into_raw_fd());
            let rx = self.adopt_fds(c_far, b_far, cfg, drain_ms, to_backend);
            (c_near, b_near, rx)
        }

        fn adopt_tcp(&self, cfg: wst_tunnel_config)
            -> (std::net::TcpStream, std::net::TcpStream, mpsc::Receiver<(wst_tunnel_stats, u64)>) {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let pair = || {
                let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (b, _) = l.accept().unwrap();
                (a, b)
            };
            let (c_near, c_far) = pair();
            let (b_near, b_far) = pair();
            let rx = self.adopt_fds(c_far.into_raw_fd(), b_far.into_raw_fd(), cfg, 0, b"");
            (c_near, b_near, rx)
        }

        fn adopt_fds(&self, c_far: c_int, b_far: c_int, cfg: wst_tunnel_config, drain_ms: c_int,
            to_backend: &[u8]) -> mpsc::Receiver<(wst_tunnel_stats, u64)> {
            let (tx, rx) = mpsc::channel();
            let t = wst_async_tunnel {
                client_fd: c_far,
                backend_fd: b_far,
                to_backend: to_backend.as_ptr(),
                to_backend_len: to_backend.len(),
                to_client: core::ptr::null(),
                to_client_len: 0,
                cfg,
                drain_ms,
                end: Some(on_end),
                end_ctx: Box::into_raw(Box::new(Ended(tx))).cast(),
            };
            assert_eq!(unsafe { wst_reactor_adopt(self.r, &t) }, wst_status::WST_OK);
            rx
        }
    }

    impl Drop for Run {
        fn drop(&mut self) {
            wst_reactor_quit(self.r);
            self.thread.take().unwrap().join().unwrap();
            unsafe { wst_reactor_destroy(self.r) };
        }
    }

    fn cfg(websocket: bool, idle_ms: i32) -> wst_tunnel_config {
        let mut c: wst_tunnel_config = unsafe { core::mem::zeroed() };
        c.idle_timeout_ms = idle_ms;
        c.half_close = 1;
        c.websocket = websocket.into();
        c.idle_close_frame = websocket.into();
        c
    }

    #[test]
    fn relays_both_ways_with_pending_bytes_and_half_close() {
        let run = Run::start();
        let (mut c, mut b, rx) = run.adopt(cfg(false, 0), 0, b"early ");
        c.write_all(b"hello").unwrap();
        let mut got = [0u8; 11];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"early hello");
        b.write_all(b"back").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"back");
        assert_eq!(wst_reactor_tunnels(run.r), 1);
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        b.write_all(b"after").unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"after");
        drop(b);
        let (st, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(st.reason, wst_end_reason::WST_END_CLOSED);
        assert_eq!(st.bytes_from_client, 11);
        assert_eq!(st.bytes_to_client, 9);
        assert_eq!(st.closed_first, 1);
        let t0 = Instant::now();
        while wst_reactor_tunnels(run.r) != 0 {
            assert!(t0.elapsed() < Duration::from_secs(2));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn data_and_fin_arriving_together_end_the_tunnel() {
        let run = Run::start();
        for _ in 0..200 {
            // Client side: bytes and FIN at once, after the first turn.
            let (mut c, mut b, rx) = run.adopt_tcp(cfg(false, 0));
            c.write_all(b"!").unwrap();
            let mut one = [0u8; 1];
            b.read_exact(&mut one).unwrap();
            c.write_all(b"last words").unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            b.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"last words");
            // Backend side too.
            b.write_all(b"bye").unwrap();
            drop(b);
            let mut got = Vec::new();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"bye");
            let (st, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(st.reason, wst_end_reason::WST_END_CLOSED);
        }
    }

    #[test]
    fn pending_bytes_larger_than_a_block() {
        let run = Run::start();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut c, mut b, _rx) = run.adopt(cfg(false, 0), 0, &big);
        let mut got = vec![0u8; big.len()];
        b.read_exact(&mut got).unwrap();
        assert!(got == big);
        // Then the pool's blocks: more traffic both ways.
        for i in 0..50u8 {
            let m = vec![i; 70_000];
            c.write_all(&m).unwrap();
            let mut got = vec![0u8; m.len()];
            b.read_exact(&mut got).unwrap();
            assert!(got == m);
        }
    }

    #[test]
    fn many_tunnels_idle_timeout_and_quit() {
        let run = Run::start();
        let mut held = Vec::new();
        for i in 0..200 {
            let idle = if i % 2 == 0 { 200 } else { 0 };
            held.push(run.adopt(cfg(false, idle), 0, b""));
        }
        for (c, b, _) in held.iter_mut() {
            c.write_all(b"x").unwrap();
            let mut one = [0u8; 1];
            b.read_exact(&mut one).unwrap();
        }
        // Half of them end on their idle timeout.
        let t0 = Instant::now();
        while wst_reactor_tunnels(run.r) != 100 {
            assert!(t0.elapsed() < Duration::from_secs(5), "{}", wst_reactor_tunnels(run.r));
            std::thread::sleep(Duration::from_millis(10));
        }
        for (i, (_, _, rx)) in held.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(rx.try_recv().unwrap().0.reason, wst_end_reason::WST_END_IDLE);
            }
        }
        drop(run);
        for (i, (_, _, rx)) in held.iter().enumerate() {
            if i % 2 == 1 {
                assert_eq!(rx.try_recv().unwrap().0.reason, wst_end_reason::WST_END_STOPPED);
            }
        }
    }

    #[test]
    fn hard_stop_sends_close_1001_within_half_a_second() {
        let run = Run::start();
        let (mut c, mut b, rx) = run.adopt(cfg(true, 0), 0, b"");
        // A masked text frame from the client goes through.
        let frame = [0x81u8, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        c.write_all(&frame).unwrap();
        let mut got = [0u8; 8];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, frame);
        let t0 = Instant::now();
        wst_reactor_stop(run.r, wst_stop::WST_STOP_SHUTDOWN);
        let mut close = [0u8; 4];
        c.read_exact(&mut close).unwrap();
        assert_eq!(close, [0x88, 0x02, 0x03, 0xe9]);
        let (st, _) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert!(t0.elapsed() < Duration::from_millis(900), "{:?}", t0.elapsed());
        assert_eq!(st.reason, wst_end_reason::WST_END_GOING_AWAY);
        let mut masked = [0u8; 8];
        b.read_exact(&mut masked).unwrap();
        assert_eq!(masked[0], 0x88);
    }

    #[test]
    fn graceful_stop_keeps_tunnels_without_drain_and_closes_drained_ones_in_the_window() {
        let run = Run::start();
        let (mut c1, mut b1, rx1) = run.adopt(cfg(true, 0), 0, b"");
        let (mut c2, _b2, rx2) = run.adopt(cfg(true, 0), 1500, b"");
        let t0 = Instant::now();
        wst_reactor_stop(run.r, wst_stop::WST_STOP_GOING_AWAY);
        let mut close = [0u8; 4];
        c2.read_exact(&mut close).unwrap();
        assert_eq!(close, [0x88, 0x02, 0x03, 0xe9]);
        assert!(t0.elapsed() < Duration::from_millis(1500));
        let (st, _) = rx2.recv_timeout(Duration::from_secs(3)).unwrap();
        assert!(t0.elapsed() < Duration::from_millis(2200), "{:?} {:?}", t0.elapsed(), st.reason);
        assert!(matches!(st.reason, wst_end_reason::WST_END_GOING_AWAY | wst_end_reason::WST_END_STOPPED));
        // The other one still relays.
        let frame = [0x81u8, 0x81, 9, 9, 9, 9, b'a' ^ 9];
        c1.write_all(&frame).unwrap();
        let mut got = [0u8; 7];
        b1.read_exact(&mut got).unwrap();
        assert_eq!(got, frame);
        assert!(rx1.try_recv().is_err());
    }
}
