//! `wst_tunnel_run`: the contract's tunnel, adapting the C endpoints (fd,
//! raw flag, ops callbacks, caller-owned buffers) to [`crate::tunnel`].
//!
//! What the C side must guarantee for `wst_endpoint_ops` (checked where it
//! can be, see `CEndpoint`):
//!  - `read` never blocks: WST_IO_OK with `0 < *n <= cap`; WST_IO_AGAIN
//!    when nothing is available now, having consumed whatever the socket
//!    had (else poll() wakes us again at once); WST_IO_EOF at the end of
//!    input (never AGAIN once the socket is at EOF); WST_IO_ERROR when the
//!    connection is dead, with `*os_error` saying what failed (an errno or
//!    an apr_status_t; 0 if the callback does not know).
//!    After OK the core calls `read` again without polling, until AGAIN.
//!    For a raw endpoint, `read` (if given) is only called until its first
//!    AGAIN, to drain what httpd's input filters already hold.
//!  - `write` is called as soon as bytes are pending, without waiting for
//!    POLLOUT first (it blocks anyway). It writes and flushes everything,
//!    blocking up to the connection's timeout: WST_IO_OK with `*n == len`,
//!    or WST_IO_ERROR. AGAIN is a breach of contract and ends the tunnel
//!    (os_error EAGAIN) rather than risk a busy loop; a short OK
//!    (`0 < *n < len`) is tolerated, the rest going out after POLLOUT.
//!    Never called for a raw endpoint.
//!  - `shutdown_write` sends FIN / TLS close_notify: WST_IO_OK or
//!    WST_IO_ERROR (only with half_close). Never called for a raw endpoint
//!    (the core calls shutdown(fd, SHUT_WR)).
//!  - no callback calls back into the core.
//!  - a raw endpoint's output filters hold nothing (are flushed) before the
//!    call: the core writes its socket directly. The core sets O_NONBLOCK on
//!    raw sockets and restores their flags before returning; it never
//!    closes a socket, and leaves a filtered endpoint's socket alone.

use core::ffi::{c_char, c_int, c_void};

use super::contract::{
    wst_end_reason, wst_endpoint, wst_io, wst_status, wst_stop, wst_tunnel_config,
    wst_tunnel_stats,
};
use crate::sys::{self, Socket};
use crate::tunnel::{
    self, Buffer, Config, EndReason, Endpoint, Io, Side, Stats, Stop, TunnelState, WsStats,
};

type ReadFn = unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize, *mut c_int) -> wst_io;
type WriteFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut usize, *mut c_int) -> wst_io;
type ShutdownFn = unsafe extern "C" fn(*mut c_void, *mut c_int) -> wst_io;

/// A `wst_endpoint` as an [`Endpoint`].
///
/// Filtered (`raw == 0`): every operation goes through the callbacks, and
/// the endpoint always may hold input poll() cannot see (TLS).
/// Raw: reads go through `ops->read` until it first answers AGAIN (draining
/// what httpd's input filters already hold), then straight to the socket
/// (or splice(2) from it, when the other end is raw too); writes and the
/// write shutdown always go straight to the socket.
struct CEndpoint {
    socket: Socket,
    raw: bool,
    draining: bool,
    ctx: *mut c_void,
    read: Option<ReadFn>,
    write: Option<WriteFn>,
    shutdown: Option<ShutdownFn>,
}

impl CEndpoint {
    /// Check and copy what the core needs from `ep`; None when it is
    /// unusable (negative fd, or a filtered endpoint without all three ops).
    ///
    /// # Safety
    /// `ep.ops` is NULL or points to a valid `wst_endpoint_ops`; the
    /// callbacks it holds, called with `ep.ctx`, behave as the contract says
    /// for as long as this value is used.
    unsafe fn new(ep: &wst_endpoint) -> Option<Self> {
        if ep.fd < 0 {
            return None;
        }
        let raw = ep.raw != 0;
        let ops = if ep.ops.is_null() {
            None
        } else {
            // SAFETY: non-null, and the caller guarantees it points to a
            // valid wst_endpoint_ops; the struct is Copy (three fn pointers).
            Some(unsafe { *ep.ops })
        };
        let (read, write, shutdown) = match ops {
            Some(o) => (o.read, o.write, o.shutdown_write),
            None => (None, None, None),
        };
        if !raw && (read.is_none() || write.is_none() || shutdown.is_none()) {
            return None;
        }
        Some(CEndpoint {
            socket: Socket::new(ep.fd),
            raw,
            draining: raw && read.is_some(),
            ctx: ep.ctx,
            read,
            write,
            shutdown,
        })
    }

    fn ops_read(&mut self, f: ReadFn, buf: &mut [u8]) -> Io {
        let cap = buf.len();
        let mut n: usize = 0;
        let mut err: c_int = 0;
        // SAFETY: f is the caller's non-NULL read callback, given its own
        // ctx; buf is a live, exclusively borrowed region of cap bytes, n
        // and err writable locals, all valid for the duration of the call.
        let r = unsafe { f(self.ctx, buf.as_mut_ptr(), cap, &mut n, &mut err) };
        match r {
            wst_io::WST_IO_OK if n == 0 => Io::Again,
            wst_io::WST_IO_OK if n <= cap => Io::Ok(n),
            wst_io::WST_IO_AGAIN => Io::Again,
            wst_io::WST_IO_EOF => Io::Eof,
            wst_io::WST_IO_ERROR => Io::Error(err),
            // More than asked for, or an unknown code: a broken callback.
            _ => Io::Error(sys::EIO),
        }
    }
}

impl Endpoint for CEndpoint {
    fn fd(&self) -> sys::Fd {
        self.socket.fd()
    }

    fn read(&mut self, buf: &mut [u8]) -> Io {
        match self.read {
            Some(f) if !self.raw || self.draining => {
                let r = self.ops_read(f, buf);
                if r == Io::Again {
                    // The filters are drained: a raw endpoint reads its
                    // socket from now on.
                    self.draining = false;
                }
                r
            }
            _ => self.socket.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> Io {
        let f = match self.write {
            Some(f) if !self.raw => f,
            _ => return self.socket.write(buf),
        };
        let len = buf.len();
        let mut n: usize = 0;
        let mut err: c_int = 0;
        // SAFETY: f is the caller's non-NULL write callback, given its own
        // ctx; buf is a live region of len bytes that the callback only
        // reads, n and err writable locals, valid for the call.
        let r = unsafe { f(self.ctx, buf.as_ptr(), len, &mut n, &mut err) };
        match r {
            wst_io::WST_IO_OK if n > 0 && n <= len => Io::Ok(n),
            // Filtered writes block until done: AGAIN would make us wait
            // for a POLLOUT that may already be there, forever.
            wst_io::WST_IO_AGAIN => Io::Error(sys::EAGAIN),
            wst_io::WST_IO_EOF => Io::Error(sys::EPIPE),
            wst_io::WST_IO_ERROR => Io::Error(err),
            _ => Io::Error(sys::EIO),
        }
    }

    fn shutdown_write(&mut self) -> Io {
        let f = match self.shutdown {
            Some(f) if !self.raw => f,
            _ => return self.socket.shutdown_write(),
        };
        let mut err: c_int = 0;
        // SAFETY: f is the caller's non-NULL shutdown callback, given its
        // own ctx and a writable local.
        let r = unsafe { f(self.ctx, &mut err) };
        if r == wst_io::WST_IO_ERROR {
            Io::Error(err)
        } else {
            Io::Ok(0)
        }
    }

    fn hidden_input(&self) -> bool {
        !self.raw || self.draining
    }

    /// A raw endpoint, once httpd's input filters are drained: its bytes
    /// may be spliced.
    fn splice_fd(&self) -> Option<sys::Fd> {
        if self.raw && !self.draining {
            Some(self.socket.fd())
        } else {
            None
        }
    }
}

/// The caller's buffer of `ep`, checked: non-NULL, `0 < cap <= isize::MAX`,
/// `len <= cap`. Returns (address, cap, len).
fn buffer_args(ep: &wst_endpoint) -> Option<(usize, usize, usize)> {
    if ep.buf.is_null()
        || ep.buf_cap == 0
        || ep.buf_len > ep.buf_cap
        || ep.buf_cap > isize::MAX as usize
    {
        return None;
    }
    let addr = ep.buf as usize;
    addr.checked_add(ep.buf_cap)?;
    Some((addr, ep.buf_cap, ep.buf_len))
}

pub(super) fn stats_to_c(s: &Stats) -> wst_tunnel_stats {
    wst_tunnel_stats {
        bytes_from_client: s.bytes_from_client,
        bytes_from_backend: s.bytes_from_backend,
        bytes_to_client: s.bytes_to_client,
        bytes_to_backend: s.bytes_to_backend,
        closed_first: match s.closed_first {
            None => 0,
            Some(Side::Client) => 1,
            Some(Side::Backend) => 2,
        },
        reason: match s.reason {
            EndReason::Closed => wst_end_reason::WST_END_CLOSED,
            EndReason::ClientError => wst_end_reason::WST_END_CLIENT_ERROR,
            EndReason::BackendError => wst_end_reason::WST_END_BACKEND_ERROR,
            EndReason::Idle => wst_end_reason::WST_END_IDLE,
            EndReason::Stopped => wst_end_reason::WST_END_STOPPED,
            EndReason::PollError => wst_end_reason::WST_END_POLL_ERROR,
            EndReason::PingTimeout => wst_end_reason::WST_END_PING_TIMEOUT,
            EndReason::GoingAway => wst_end_reason::WST_END_GOING_AWAY,
            EndReason::MessageTooBig => wst_end_reason::WST_END_MESSAGE_TOO_BIG,
            EndReason::RateLimited => wst_end_reason::WST_END_RATE_LIMITED,
            EndReason::Lifetime => wst_end_reason::WST_END_LIFETIME,
        },
        os_error: s.os_error,
        messages_from_client: s.ws.messages_from_client,
        messages_from_backend: s.ws.messages_from_backend,
        close_code_from_client: s.ws.close_code_from_client.map_or(-1, c_int::from),
        close_code_from_backend: s.ws.close_code_from_backend.map_or(-1, c_int::from),
        pings_sent: s.ws.pings_sent,
        pongs_consumed: s.ws.pongs_consumed,
        frames_lost_sync: c_int::from(s.ws.lost_sync_client)
            | (c_int::from(s.ws.lost_sync_backend) << 1),
        largest_message_from_client: s.ws.largest_message_from_client,
        largest_message_from_backend: s.ws.largest_message_from_backend,
        ping_rtt_client_last_ms: rtt_to_c(s.ws.ping_rtt_client_last_ms),
        ping_rtt_client_max_ms: rtt_to_c(s.ws.ping_rtt_client_max_ms),
        ping_rtt_backend_last_ms: rtt_to_c(s.ws.ping_rtt_backend_last_ms),
        ping_rtt_backend_max_ms: rtt_to_c(s.ws.ping_rtt_backend_max_ms),
    }
}

/// A round trip for C: -1 for none.
fn rtt_to_c(v: Option<u32>) -> c_int {
    v.map_or(-1, |ms| c_int::try_from(ms).unwrap_or(c_int::MAX))
}

/// What should_stop answered; a value outside the enum is taken as
/// WST_STOP_NOW.
pub(super) fn stop_from_c(v: wst_stop) -> Stop {
    match v {
        wst_stop::WST_STOP_NO => Stop::No,
        wst_stop::WST_STOP_GOING_AWAY => Stop::GoingAway,
        wst_stop::WST_STOP_SHUTDOWN => Stop::Shutdown,
        _ => Stop::Now,
    }
}

/// See `wst_end_reason_name` in the contract header.
#[no_mangle]
pub extern "C" fn wst_end_reason_name(reason: wst_end_reason) -> *const c_char {
    match end_reason_from_c(reason) {
        Some(r) => r.name().as_ptr(),
        None => c"unknown".as_ptr(),
    }
}

fn end_reason_from_c(r: wst_end_reason) -> Option<EndReason> {
    Some(match r {
        wst_end_reason::WST_END_CLOSED => EndReason::Closed,
        wst_end_reason::WST_END_CLIENT_ERROR => EndReason::ClientError,
        wst_end_reason::WST_END_BACKEND_ERROR => EndReason::BackendError,
        wst_end_reason::WST_END_IDLE => EndReason::Idle,
        wst_end_reason::WST_END_STOPPED => EndReason::Stopped,
        wst_end_reason::WST_END_POLL_ERROR => EndReason::PollError,
        wst_end_reason::WST_END_PING_TIMEOUT => EndReason::PingTimeout,
        wst_end_reason::WST_END_GOING_AWAY => EndReason::GoingAway,
        wst_end_reason::WST_END_MESSAGE_TOO_BIG => EndReason::MessageTooBig,
        wst_end_reason::WST_END_RATE_LIMITED => EndReason::RateLimited,
        wst_end_reason::WST_END_LIFETIME => EndReason::Lifetime,
        _ => return None,
    })
}

/// See `wst_tunnel_state_size` in the contract header.
#[no_mangle]
pub extern "C" fn wst_tunnel_state_size() -> usize {
    size_of::<Option<TunnelState<'static>>>()
}

/// The caller's memory for the tunnel's state, initialised to None; None
/// (use the stack) when there is none, or it is too small or misaligned.
///
/// # Safety
/// A non-NULL `mem` must be valid for reads and writes of `len` bytes, used
/// by nobody else for `'s`.
unsafe fn state_slot<'s, 'a>(mem: *mut c_void, len: usize) -> Option<&'s mut Option<TunnelState<'a>>> {
    let p = mem.cast::<Option<TunnelState<'a>>>();
    if p.is_null() || !p.is_aligned() || len < size_of::<Option<TunnelState<'a>>>() {
        return None;
    }
    // SAFETY: p is non-NULL, aligned and has room (checked), the memory is
    // the caller's to lend exclusively (contract); write() initialises it
    // without reading the old bytes, after which the reference is to a
    // valid value.
    unsafe {
        p.write(None);
        Some(&mut *p)
    }
}

/// The tunnel settings of a `wst_tunnel_config`.
pub(super) fn config_from_c(conf: &wst_tunnel_config) -> Config {
    let mut config = Config::new(conf.idle_timeout_ms, conf.tick_ms, conf.half_close != 0);
    config.max_lifetime_ms = u64::try_from(conf.max_lifetime_ms).ok().filter(|&v| v > 0);
    if conf.websocket == 0 {
        return config;
    }
    config = config.with_websocket(conf.ping_interval_ms, conf.idle_close_frame != 0, conf.random_seed);
    config.max_message_size = Some(conf.max_message_size).filter(|&v| v > 0);
    if let Ok(rate) = u32::try_from(conf.max_message_rate) {
        if rate > 0 {
            let burst = u32::try_from(conf.max_message_burst).ok().filter(|&b| b > 0).unwrap_or(rate);
            config.max_message_rate = Some((rate, burst));
        }
    }
    config
}

/// Stats of a tunnel that ended before moving anything.
fn early_failure(side: Side, e: sys::Errno) -> Stats {
    Stats {
        bytes_from_client: 0,
        bytes_from_backend: 0,
        bytes_to_client: 0,
        bytes_to_backend: 0,
        closed_first: Some(side),
        reason: match side {
            Side::Client => EndReason::ClientError,
            Side::Backend => EndReason::BackendError,
        },
        os_error: e,
        polls: 0,
        spliced: 0,
        pipes: 0,
        ws: WsStats::default(),
    }
}

/// See wstunnel_core.h. Arguments are checked (WST_ERR_ARG, nothing
/// written): all four pointers non-NULL, two distinct endpoints on distinct
/// non-negative fds, each buffer non-NULL with `0 < buf_cap`,
/// `buf_len <= buf_cap`, the two buffers disjoint, a filtered endpoint with
/// all three ops. A raw endpoint may have NULL ops or a NULL ops->read (no
/// filter drain then). The endpoints' `buf_len` fields are not updated.
///
/// # Safety
/// Every non-NULL pointer points to a valid object for the whole call:
/// each endpoint's buf to buf_cap writable bytes that nothing else touches
/// during the call, ops to a valid ops table whose callbacks follow the
/// contract (see the module documentation) with the endpoint's ctx, and
/// cfg->should_stop, if non-NULL, may be called with cfg->stop_ctx.
#[no_mangle]
pub unsafe extern "C" fn wst_tunnel_run(
    client: *mut wst_endpoint,
    backend: *mut wst_endpoint,
    cfg: *const wst_tunnel_config,
    stats: *mut wst_tunnel_stats,
) -> wst_status {
    if client.is_null()
        || backend.is_null()
        || cfg.is_null()
        || stats.is_null()
        || core::ptr::eq(client, backend)
    {
        return wst_status::WST_ERR_ARG;
    }
    // SAFETY: all three are non-NULL and, per the contract, point to valid
    // structs that nobody changes for the duration of the call. Borrowed,
    // not copied: this frame stays small (it is under the tunnel loop's for
    // the tunnel's whole life, and stack pages once touched stay resident).
    let (c, b, conf) = unsafe { (&*client, &*backend, &*cfg) };
    if c.fd == b.fd {
        return wst_status::WST_ERR_ARG;
    }
    let (Some((c_addr, c_cap, c_len)), Some((b_addr, b_cap, b_len))) =
        (buffer_args(c), buffer_args(b))
    else {
        return wst_status::WST_ERR_ARG;
    };
    // The two buffers become two &mut slices: they must not overlap.
    if c_addr < b_addr.saturating_add(b_cap) && b_addr < c_addr.saturating_add(c_cap) {
        return wst_status::WST_ERR_ARG;
    }
    // SAFETY: c.ops is NULL or valid and its callbacks follow the contract
    // with c.ctx (the caller's guarantee).
    let Some(mut cep) = (unsafe { CEndpoint::new(c) }) else {
        return wst_status::WST_ERR_ARG;
    };
    // SAFETY: as above, for the backend.
    let Some(mut bep) = (unsafe { CEndpoint::new(b) }) else {
        return wst_status::WST_ERR_ARG;
    };
    // SAFETY: c.buf is non-NULL, points to c_cap writable bytes owned by the
    // caller and untouched by anyone else during the call (contract), c_cap
    // <= isize::MAX and the region does not wrap (buffer_args), and it does
    // not overlap the backend buffer (checked above).
    let c_data = unsafe { core::slice::from_raw_parts_mut(c.buf, c_cap) };
    // SAFETY: as above, for the backend's buffer.
    let b_data = unsafe { core::slice::from_raw_parts_mut(b.buf, b_cap) };
    let (Some(c_buf), Some(b_buf)) = (Buffer::new(c_data, c_len), Buffer::new(b_data, b_len))
    else {
        return wst_status::WST_ERR_ARG;
    };

    let config = config_from_c(conf);
    let stop_fn = conf.should_stop;
    let stop_ctx = conf.stop_ctx;
    let should_stop = || match stop_fn {
        // SAFETY: the caller's non-NULL should_stop, given its stop_ctx.
        Some(f) => stop_from_c(unsafe { f(stop_ctx) }),
        None => Stop::No,
    };

    // Raw sockets are read and written directly, without blocking.
    let result = match (nonblocking(c), nonblocking(b)) {
        (Ok(cf), Ok(bf)) => {
            // SAFETY: conf.state/state_len come from the caller (contract:
            // NULL, or writable memory of state_len bytes that nobody else
            // uses during the call); state_slot checks size and alignment.
            let s = match unsafe { state_slot(conf.state, conf.state_len) } {
                Some(slot) => tunnel::run_in(slot, &mut cep, c_buf, &mut bep, b_buf, &config, should_stop),
                None => tunnel::run(&mut cep, c_buf, &mut bep, b_buf, &config, should_stop),
            };
            restore(c.fd, cf);
            restore(b.fd, bf);
            s
        }
        (Err(e), bf) => {
            if let Ok(bf) = bf {
                restore(b.fd, bf);
            }
            early_failure(Side::Client, e)
        }
        (Ok(cf), Err(e)) => {
            restore(c.fd, cf);
            early_failure(Side::Backend, e)
        }
    };
    // SAFETY: stats is non-NULL and points to a valid, writable
    // wst_tunnel_stats (contract); it is plain data.
    unsafe { stats.write(stats_to_c(&result)) };
    wst_status::WST_OK
}

/// Put a raw endpoint's socket in non-blocking mode: the flags to restore
/// (None for a filtered endpoint, whose socket is left alone).
fn nonblocking(ep: &wst_endpoint) -> Result<Option<c_int>, sys::Errno> {
    if ep.raw == 0 {
        return Ok(None);
    }
    sys::set_nonblocking(ep.fd).map(Some)
}

fn restore(fd: sys::Fd, flags: Option<c_int>) {
    if let Some(f) = flags {
        // Nothing useful to do if this fails: the fd is about to be closed.
        let _ = sys::set_flags(fd, f);
    }
}

exports_match_contract! {
    wst_tunnel_state_size: unsafe extern "C" fn() -> usize;
    wst_end_reason_name: unsafe extern "C" fn(wst_end_reason) -> *const c_char;
    wst_tunnel_run: unsafe extern "C" fn(
        *mut wst_endpoint,
        *mut wst_endpoint,
        *const wst_tunnel_config,
        *mut wst_tunnel_stats,
    ) -> wst_status;
}

#[cfg(test)]
mod tests {
    //! Through the C export, with C-style callbacks.
    use super::*;
    use crate::ffi::contract::{wst_end_reason, wst_endpoint_ops};
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    /// What the callbacks see behind ctx.
    #[derive(Default)]
    struct Ctx {
        fd: i32,
        raw: bool,
        /// Bytes "already buffered in httpd's input filters".
        pre: Vec<u8>,
        pre_pos: usize,
        drained: bool,
        ops_reads: usize,
        reads_after_again: usize,
        ops_writes: usize,
        shutdowns: usize,
    }

    unsafe extern "C" fn cb_read(
        ctx: *mut c_void,
        buf: *mut u8,
        cap: usize,
        n: *mut usize,
        _os_error: *mut c_int,
    ) -> wst_io {
        // SAFETY: ctx is the test's live Ctx, used by this thread only; buf
        // is valid for cap bytes and n for one write (the core's contract).
        let (c, out, n) = unsafe {
            (
                &mut *ctx.cast::<Ctx>(),
                std::slice::from_raw_parts_mut(buf, cap),
                &mut *n,
            )
        };
        c.ops_reads += 1;
        if c.drained {
            c.reads_after_again += 1;
        }
        if c.pre_pos < c.pre.len() {
            let k = cap.min(5).min(c.pre.len() - c.pre_pos);
            out[..k].copy_from_slice(&c.pre[c.pre_pos..c.pre_pos + k]);
            c.pre_pos += k;
            *n = k;
            return wst_io::WST_IO_OK;
        }
        if c.raw {
            c.drained = true;
            return wst_io::WST_IO_AGAIN;
        }
        match sys::read(c.fd, out) {
            sys::FdIo::Done(0) => wst_io::WST_IO_EOF,
            sys::FdIo::Done(k) => {
                *n = k;
                wst_io::WST_IO_OK
            }
            sys::FdIo::WouldBlock => wst_io::WST_IO_AGAIN,
            sys::FdIo::Failed(_) => wst_io::WST_IO_ERROR,
        }
    }

    unsafe extern "C" fn cb_write(
        ctx: *mut c_void,
        buf: *const u8,
        len: usize,
        n: *mut usize,
        _os_error: *mut c_int,
    ) -> wst_io {
        // SAFETY: as in cb_read; buf is valid for len bytes.
        let (c, data, n) = unsafe {
            (
                &mut *ctx.cast::<Ctx>(),
                std::slice::from_raw_parts(buf, len),
                &mut *n,
            )
        };
        c.ops_writes += 1;
        let mut off = 0;
        while off < len {
            match sys::write(c.fd, &data[off..]) {
                sys::FdIo::Done(k) => off += k,
                sys::FdIo::WouldBlock => {
                    let mut fds = [sys::pollfd(c.fd, sys::POLLOUT)];
                    let _ = sys::poll(&mut fds, 1000);
                }
                sys::FdIo::Failed(_) => return wst_io::WST_IO_ERROR,
            }
        }
        *n = len;
        wst_io::WST_IO_OK
    }

    unsafe extern "C" fn cb_shutdown(ctx: *mut c_void, _os_error: *mut c_int) -> wst_io {
        // SAFETY: as in cb_read.
        let c = unsafe { &mut *ctx.cast::<Ctx>() };
        c.shutdowns += 1;
        match sys::shutdown_write(c.fd) {
            Ok(()) => wst_io::WST_IO_OK,
            Err(_) => wst_io::WST_IO_ERROR,
        }
    }

    unsafe extern "C" fn cb_stop(ctx: *mut c_void) -> wst_stop {
        // SAFETY: ctx is the test's AtomicBool, alive for the whole run.
        let flag = unsafe { &*ctx.cast::<AtomicBool>() };
        if flag.load(Ordering::Relaxed) {
            wst_stop::WST_STOP_NOW
        } else {
            wst_stop::WST_STOP_NO
        }
    }

    static OPS: wst_endpoint_ops = wst_endpoint_ops {
        read: Some(cb_read),
        write: Some(cb_write),
        shutdown_write: Some(cb_shutdown),
    };

    struct Side {
        ctx: Ctx,
        buf: Vec<u8>,
        initial: usize,
        ops: *const wst_endpoint_ops,
    }

    impl Side {
        fn new(
            fd: i32,
            raw: bool,
            pre: &[u8],
            initial: &[u8],
            cap: usize,
            ops: *const wst_endpoint_ops,
        ) -> Self {
            let mut buf = vec![0u8; cap];
            buf[..initial.len()].copy_from_slice(initial);
            Side {
                ctx: Ctx {
                    fd,
                    raw,
                    pre: pre.to_vec(),
                    ..Ctx::default()
                },
                buf,
                initial: initial.len(),
                ops,
            }
        }
        fn endpoint(&mut self) -> wst_endpoint {
            wst_endpoint {
                fd: self.ctx.fd,
                raw: c_int::from(self.ctx.raw),
                ctx: (&mut self.ctx as *mut Ctx).cast::<c_void>(),
                ops: self.ops,
                buf: self.buf.as_mut_ptr(),
                buf_cap: self.buf.len(),
                buf_len: self.initial,
            }
        }
    }

    struct Done {
        status: wst_status,
        stats: wst_tunnel_stats,
        client: Ctx,
        backend: Ctx,
    }

    /// The pointers are only used by the thread that runs the tunnel.
    struct SendPtr(*const wst_endpoint_ops);
    // SAFETY: it points to the immutable static OPS (or is NULL).
    unsafe impl Send for SendPtr {}

    fn run_in_thread(
        cfd: i32,
        bfd: i32,
        c: (bool, &'static [u8], &'static [u8], usize),
        b: (bool, &'static [u8], &'static [u8], usize, bool),
        cfg: (c_int, c_int, c_int),
        stop: Arc<AtomicBool>,
    ) -> thread::JoinHandle<Done> {
        let ops = SendPtr(&OPS);
        thread::spawn(move || {
            let ops = ops;
            let mut cs = Side::new(cfd, c.0, c.1, c.2, c.3, ops.0);
            let b_ops = if b.4 { ops.0 } else { core::ptr::null() };
            let mut bs = Side::new(bfd, b.0, b.1, b.2, b.3, b_ops);
            let mut cep = cs.endpoint();
            let mut bep = bs.endpoint();
            // Every other tunnel keeps its state in memory of the caller's
            // (as the shim does), the others on the stack; a few get memory
            // too small or misaligned, which falls back to the stack.
            static RUNS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
            let run = RUNS.fetch_add(1, Ordering::Relaxed);
            let words = wst_tunnel_state_size().div_ceil(8) + 1;
            let mut mem = vec![0xa5a5_a5a5_a5a5_a5a5u64; words];
            let (state, state_len) = match run % 4 {
                1 | 3 => (mem.as_mut_ptr().cast::<c_void>(), words * 8),
                2 if run % 8 == 2 => (mem.as_mut_ptr().cast::<c_void>(), 8),
                2 => (mem.as_mut_ptr().cast::<u8>().wrapping_add(1).cast::<c_void>(), words * 8 - 1),
                _ => (core::ptr::null_mut(), 0),
            };
            let conf = wst_tunnel_config {
                idle_timeout_ms: cfg.0,
                tick_ms: cfg.1,
                half_close: cfg.2,
                stop_ctx: Arc::as_ptr(&stop).cast_mut().cast::<c_void>(),
                should_stop: Some(cb_stop),
                state,
                state_len,
                ..Default::default()
            };
            let mut stats = wst_tunnel_stats::default();
            // SAFETY: every pointer is valid for the call: the endpoints,
            // their buffers and ctx live in this frame, OPS is static, and
            // stop outlives the call.
            let status = unsafe { wst_tunnel_run(&mut cep, &mut bep, &conf, &mut stats) };
            Done {
                status,
                stats,
                client: cs.ctx,
                backend: bs.ctx,
            }
        })
    }

    fn nonblocking(fd: i32) -> bool {
        sys::get_flags(fd).unwrap() & libc::O_NONBLOCK != 0
    }

    #[test]
    fn raw_endpoints_drain_then_use_the_socket() {
        let (mut cfar, cnear) = UnixStream::pair().unwrap();
        let (mut bfar, bnear) = UnixStream::pair().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = run_in_thread(
            cnear.as_raw_fd(),
            bnear.as_raw_fd(),
            (true, b"PIPELINED", b"", 4096),
            (true, b"", b"TAIL", 4096, false),
            (0, 100, 1),
            stop,
        );
        cfar.write_all(b"+more").unwrap();
        cfar.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        bfar.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        bfar.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"PIPELINED+more");
        bfar.write_all(b"+reply").unwrap();
        bfar.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        cfar.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        cfar.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"TAIL+reply");
        let d = t.join().unwrap();
        assert_eq!(d.status, wst_status::WST_OK);
        assert_eq!(d.stats.reason, wst_end_reason::WST_END_CLOSED);
        assert_eq!(d.stats.bytes_from_client, 14);
        assert_eq!(d.stats.bytes_to_backend, 14);
        assert_eq!(d.stats.bytes_from_backend, 10);
        assert_eq!(d.stats.bytes_to_client, 10);
        assert_eq!(d.stats.closed_first, 1);
        assert_eq!(d.stats.os_error, 0);
        // Drained through ops until AGAIN, then never again; raw writes and
        // shutdowns went to the socket.
        assert!(d.client.drained);
        assert_eq!(d.client.reads_after_again, 0);
        assert_eq!(d.client.ops_writes + d.client.shutdowns, 0);
        // The original (blocking) mode is back.
        assert!(!nonblocking(cnear.as_raw_fd()));
        assert!(!nonblocking(bnear.as_raw_fd()));
    }

    #[test]
    fn filtered_endpoints_go_through_ops() {
        let (cfar, cnear) = UnixStream::pair().unwrap();
        let (bfar, bnear) = UnixStream::pair().unwrap();
        cnear.set_nonblocking(true).unwrap();
        bnear.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = run_in_thread(
            cnear.as_raw_fd(),
            bnear.as_raw_fd(),
            (false, b"TLS-held ", b"", 1000),
            (false, b"", b"", 3000, true),
            (0, 0, 1),
            stop,
        );
        let cdata: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let bdata: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
        let spawn_writer = |mut s: UnixStream, d: Vec<u8>| {
            thread::spawn(move || {
                s.write_all(&d).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
            })
        };
        let spawn_reader = |mut s: UnixStream| {
            thread::spawn(move || {
                let mut v = Vec::new();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.read_to_end(&mut v).unwrap();
                v
            })
        };
        let cw = spawn_writer(cfar.try_clone().unwrap(), cdata.clone());
        let bw = spawn_writer(bfar.try_clone().unwrap(), bdata.clone());
        let cr = spawn_reader(cfar);
        let br = spawn_reader(bfar);
        cw.join().unwrap();
        bw.join().unwrap();
        let got_b = br.join().unwrap();
        assert_eq!(&got_b[..9], b"TLS-held ");
        assert!(got_b[9..] == cdata[..]);
        assert!(cr.join().unwrap() == bdata);
        let d = t.join().unwrap();
        assert_eq!(d.status, wst_status::WST_OK);
        assert_eq!(d.stats.reason, wst_end_reason::WST_END_CLOSED);
        assert_eq!(d.stats.bytes_to_backend, cdata.len() as u64 + 9);
        assert_eq!(d.stats.bytes_to_client, bdata.len() as u64);
        assert!(d.client.ops_writes > 0 && d.backend.ops_writes > 0);
        assert_eq!((d.client.shutdowns, d.backend.shutdowns), (1, 1));
        // A filtered endpoint's socket is left as it was.
        assert!(nonblocking(cnear.as_raw_fd()));
    }

    #[test]
    fn should_stop_callback_and_idle() {
        let (_cfar, cnear) = UnixStream::pair().unwrap();
        let (_bfar, bnear) = UnixStream::pair().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = run_in_thread(
            cnear.as_raw_fd(),
            bnear.as_raw_fd(),
            (true, b"", b"", 64),
            (true, b"", b"", 64, false),
            (0, 20, 0),
            stop.clone(),
        );
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let d = t.join().unwrap();
        assert_eq!(d.status, wst_status::WST_OK);
        assert_eq!(d.stats.reason, wst_end_reason::WST_END_STOPPED);
        assert_eq!(d.stats.closed_first, 0);

        let t = run_in_thread(
            cnear.as_raw_fd(),
            bnear.as_raw_fd(),
            (true, b"", b"", 64),
            (true, b"", b"", 64, false),
            (50, 0, 0),
            Arc::new(AtomicBool::new(false)),
        );
        let d = t.join().unwrap();
        assert_eq!(d.stats.reason, wst_end_reason::WST_END_IDLE);
    }

    #[test]
    fn bad_arguments_write_nothing() {
        let (_a, cnear) = UnixStream::pair().unwrap();
        let (_b, bnear) = UnixStream::pair().unwrap();
        let mut cbuf = [0u8; 64];
        let mut bbuf = [0u8; 64];
        let good = |fd: i32, buf: &mut [u8], raw: c_int| wst_endpoint {
            fd,
            raw,
            ctx: core::ptr::null_mut(),
            ops: &OPS,
            buf: buf.as_mut_ptr(),
            buf_cap: buf.len(),
            buf_len: 0,
        };
        let conf = wst_tunnel_config::default();
        let sentinel = wst_tunnel_stats {
            closed_first: 77,
            ..Default::default()
        };
        let cfd = cnear.as_raw_fd();
        let bfd = bnear.as_raw_fd();
        let check = |mut c: wst_endpoint, mut b: wst_endpoint| {
            let mut stats = sentinel;
            // SAFETY: all pointers are valid or deliberately bad in ways the
            // function must reject before using them.
            let st = unsafe { wst_tunnel_run(&mut c, &mut b, &conf, &mut stats) };
            assert_eq!(st, wst_status::WST_ERR_ARG);
            assert_eq!(stats.closed_first, 77);
        };
        let c0 = good(cfd, &mut cbuf, 1);
        let b0 = good(bfd, &mut bbuf, 1);
        check(
            wst_endpoint {
                buf: core::ptr::null_mut(),
                ..c0
            },
            b0,
        );
        check(c0, wst_endpoint { buf_cap: 0, ..b0 });
        check(wst_endpoint { buf_len: 65, ..c0 }, b0);
        check(c0, wst_endpoint { fd: -1, ..b0 });
        check(c0, wst_endpoint { fd: cfd, ..b0 });
        check(
            c0,
            wst_endpoint {
                buf: cbuf_ptr_offset(&c0, 10),
                buf_cap: 20,
                ..b0
            },
        );
        check(
            wst_endpoint {
                raw: 0,
                ops: core::ptr::null(),
                ..c0
            },
            b0,
        );
        static PARTIAL: wst_endpoint_ops = wst_endpoint_ops {
            read: Some(cb_read),
            write: None,
            shutdown_write: Some(cb_shutdown),
        };
        check(
            c0,
            wst_endpoint {
                raw: 0,
                ops: &PARTIAL,
                ..b0
            },
        );
        let mut stats = sentinel;
        let mut c = c0;
        let mut b = b0;
        // SAFETY: NULL and aliased arguments are rejected before any use.
        unsafe {
            assert_eq!(
                wst_tunnel_run(core::ptr::null_mut(), &mut b, &conf, &mut stats),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_tunnel_run(&mut c, core::ptr::null_mut(), &conf, &mut stats),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_tunnel_run(&mut c, &mut b, core::ptr::null(), &mut stats),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_tunnel_run(&mut c, &mut b, &conf, core::ptr::null_mut()),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_tunnel_run(&mut c, &mut c, &conf, &mut stats),
                wst_status::WST_ERR_ARG
            );
        }
        assert_eq!(stats.closed_first, 77);
        // A raw endpoint may come without ops (no drain): that is valid,
        // and a bad fd there is reported in the stats, not as an argument
        // error.
        let mut c = wst_endpoint {
            ops: core::ptr::null(),
            ..c0
        };
        let mut b = wst_endpoint {
            fd: 1_000_000,
            ops: core::ptr::null(),
            ..b0
        };
        let mut stats = sentinel;
        // SAFETY: valid pointers; the buffers outlive the call.
        let st = unsafe { wst_tunnel_run(&mut c, &mut b, &conf, &mut stats) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(stats.reason, wst_end_reason::WST_END_BACKEND_ERROR);
        assert_eq!(stats.os_error, libc::EBADF);
        assert!(!nonblocking(cfd));
    }

    unsafe extern "C" fn cb_stop_value(ctx: *mut c_void) -> wst_stop {
        // SAFETY: ctx is the test's AtomicI32, alive for the whole run.
        let v = unsafe { &*ctx.cast::<std::sync::atomic::AtomicI32>() };
        wst_stop(v.load(Ordering::Relaxed).unsigned_abs())
    }

    /// A WebSocket tunnel between two raw endpoints (no ops), through the
    /// export; should_stop answers what `stop` holds.
    fn run_ws_in_thread(
        cfd: i32,
        bfd: i32,
        idle_timeout_ms: c_int,
        ping_interval_ms: c_int,
        idle_close_frame: c_int,
        stop: Arc<std::sync::atomic::AtomicI32>,
    ) -> thread::JoinHandle<(wst_status, wst_tunnel_stats)> {
        thread::spawn(move || {
            let mut cbuf = vec![0u8; 4096];
            let mut bbuf = vec![0u8; 4096];
            let ep = |fd: i32, buf: &mut Vec<u8>| wst_endpoint {
                fd,
                raw: 1,
                ctx: core::ptr::null_mut(),
                ops: core::ptr::null(),
                buf: buf.as_mut_ptr(),
                buf_cap: buf.len(),
                buf_len: 0,
            };
            let mut cep = ep(cfd, &mut cbuf);
            let mut bep = ep(bfd, &mut bbuf);
            let mut state_mem = vec![0u64; wst_tunnel_state_size().div_ceil(8)];
            let conf = wst_tunnel_config {
                idle_timeout_ms,
                tick_ms: 20,
                half_close: 0,
                stop_ctx: Arc::as_ptr(&stop).cast_mut().cast::<c_void>(),
                should_stop: Some(cb_stop_value),
                websocket: 1,
                ping_interval_ms,
                idle_close_frame,
                random_seed: 0x5eed,
                // The shim's way: the state in memory of the caller's.
                state: state_mem.as_mut_ptr().cast::<c_void>(),
                state_len: state_mem.len() * 8,
                max_message_size: 0,
                max_message_rate: 0,
                max_message_burst: 0,
                max_lifetime_ms: 0,
            };
            let mut stats = wst_tunnel_stats::default();
            // SAFETY: every pointer is valid for the call: the endpoints and
            // their buffers live in this frame, stop outlives the call.
            let status = unsafe { wst_tunnel_run(&mut cep, &mut bep, &conf, &mut stats) };
            (status, stats)
        })
    }

    fn read_all(mut s: UnixStream) -> Vec<u8> {
        let mut v = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read_to_end(&mut v).unwrap();
        v
    }

    /// A masked frame from the client.
    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x11, 0x22, 0x33, 0x44];
        let mut v = vec![b0, 0x80 | payload.len() as u8];
        v.extend(key);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        v
    }

    /// The payload of the masked frame `f` (short lengths only).
    fn unmasked(f: &[u8]) -> Vec<u8> {
        f[6..].iter().enumerate().map(|(i, b)| b ^ f[2 + i % 4]).collect()
    }

    #[test]
    fn websocket_idle_close_figures_and_lost_sync() {
        // Counts, the idle Close 1001 (masked towards the backend), and a
        // backend that breaks the protocol: it gets its Close, the client
        // gets its bytes untouched and no Close (no boundary is known).
        let (mut cfar, cnear) = UnixStream::pair().unwrap();
        let (mut bfar, bnear) = UnixStream::pair().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let t = run_ws_in_thread(cnear.as_raw_fd(), bnear.as_raw_fd(), 300, 0, 1, stop);
        let mut up = masked(0x81, b"one");
        up.extend(masked(0x01, b"tw"));
        up.extend(masked(0x80, b"o"));
        cfar.write_all(&up).unwrap();
        let mut down = vec![0x82, 3, 1, 2, 3];
        down.extend([0x8f, 0x01, 0xff]); // reserved opcode 0xF
        bfar.write_all(&down).unwrap();
        let (st, stats) = t.join().unwrap();
        drop((cnear, bnear));
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(stats.reason, wst_end_reason::WST_END_IDLE);
        assert_eq!(stats.messages_from_client, 2);
        assert_eq!(stats.messages_from_backend, 1);
        assert_eq!(stats.close_code_from_client, -1);
        assert_eq!(stats.close_code_from_backend, -1);
        assert_eq!(stats.frames_lost_sync, 2);
        assert_eq!((stats.pings_sent, stats.pongs_consumed), (0, 0));
        let got_b = read_all(bfar);
        assert_eq!(&got_b[..up.len()], &up[..]);
        let close = &got_b[up.len()..];
        assert_eq!(close.len(), 8);
        assert_eq!(&close[..2], &[0x88, 0x82]);
        assert_eq!(unmasked(close), 1001u16.to_be_bytes());
        assert_eq!(read_all(cfar), down);
        assert_eq!(stats.bytes_to_backend, up.len() as u64 + 8);
        assert_eq!(stats.bytes_to_client, down.len() as u64);
    }

    #[test]
    fn websocket_going_away_through_should_stop() {
        let (mut cfar, cnear) = UnixStream::pair().unwrap();
        let (mut bfar, bnear) = UnixStream::pair().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let t = run_ws_in_thread(cnear.as_raw_fd(), bnear.as_raw_fd(), 0, 0, 0, stop.clone());
        thread::sleep(Duration::from_millis(50));
        stop.store(2, Ordering::Relaxed); // WST_STOP_GOING_AWAY
        let asked = std::time::Instant::now();
        // Both far ends get Close 1001 and answer it.
        cfar.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        bfar.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut c = [0u8; 4];
        cfar.read_exact(&mut c).unwrap();
        assert_eq!(c, [0x88, 2, 0x03, 0xe9]);
        let mut b = [0u8; 8];
        bfar.read_exact(&mut b).unwrap();
        assert_eq!(unmasked(&b), 1001u16.to_be_bytes());
        cfar.write_all(&masked(0x88, &1000u16.to_be_bytes())).unwrap();
        bfar.write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
        let (st, stats) = t.join().unwrap();
        assert!(asked.elapsed() < Duration::from_secs(1));
        drop((cnear, bnear));
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(stats.reason, wst_end_reason::WST_END_GOING_AWAY);
        assert_eq!(stats.close_code_from_client, 1000);
        assert_eq!(stats.close_code_from_backend, 1000);
        // The answers were not relayed: nothing after our Closes.
        assert!(read_all(cfar).is_empty());
        assert!(read_all(bfar).is_empty());
    }

    #[test]
    fn websocket_ping_timeout() {
        let (cfar, cnear) = UnixStream::pair().unwrap();
        let (bfar, bnear) = UnixStream::pair().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let t = run_ws_in_thread(cnear.as_raw_fd(), bnear.as_raw_fd(), 0, 100, 0, stop);
        let (st, stats) = t.join().unwrap();
        drop((cnear, bnear));
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(stats.reason, wst_end_reason::WST_END_PING_TIMEOUT);
        assert_eq!((stats.pings_sent, stats.pongs_consumed), (2, 0));
        // Each far end: a Ping with an 8-byte token, then Close 1001.
        let c = read_all(cfar);
        assert_eq!((c.len(), c[0], c[1]), (14, 0x89, 8));
        assert_eq!(&c[10..], &[0x88, 2, 0x03, 0xe9]);
        let b = read_all(bfar);
        assert_eq!((b.len(), b[0], b[1]), (22, 0x89, 0x88));
        assert_eq!(unmasked(&b[14..]), 1001u16.to_be_bytes());
    }

    fn cbuf_ptr_offset(c: &wst_endpoint, off: usize) -> *mut u8 {
        c.buf.wrapping_add(off)
    }

    #[test]
    fn end_reason_names_are_the_notes_words() {
        use core::ffi::CStr;
        let name = |r| {
            // SAFETY: the export returns a static NUL-terminated string.
            unsafe { CStr::from_ptr(super::wst_end_reason_name(r)) }.to_str().unwrap()
        };
        assert_eq!(name(wst_end_reason::WST_END_CLOSED), "closed");
        assert_eq!(name(wst_end_reason::WST_END_CLIENT_ERROR), "client-error");
        assert_eq!(name(wst_end_reason::WST_END_PING_TIMEOUT), "ping-timeout");
        assert_eq!(name(wst_end_reason::WST_END_GOING_AWAY), "going-away");
        assert_eq!(name(wst_end_reason(99)), "unknown");
    }
}
