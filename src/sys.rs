//! The OS layer: safe wrappers over the few libc calls the tunnel makes,
//! and [`Socket`], a plain socket read and written directly. It uses
//! nothing of the crate but `libc`: the layers above ([`crate::tunnel`],
//! [`crate::ffi`]) call down into it, never the other way round. With
//! [`crate::ffi`], the only module allowed `unsafe` code.
//!
//! Only functions that glibc 2.12 already exports under their old symbol
//! versions are used: `poll`, `read`, `send`, `write`, `shutdown`,
//! `getsockopt`, `syscall`, `__errno_location`, `splice` (GLIBC_2.5),
//! `pipe2` (GLIBC_2.9), `close`, `getrlimit`, `epoll_create1` (GLIBC_2.9),
//! `epoll_ctl` and `epoll_wait` (GLIBC_2.3.2), `malloc`, `realloc`,
//! `posix_memalign` and `free`. The signal mask is set with
//! `syscall(SYS_rt_sigprocmask)`: glibc 2.32+ versions `pthread_sigmask`
//! GLIBC_2.32. The monotonic clock is
//! read with `syscall(SYS_clock_gettime)`, not `clock_gettime()`, because
//! glibc before 2.17 keeps that function in librt and newer ones version it
//! GLIBC_2.17; `fcntl` is a `syscall(SYS_fcntl)` too, because i386 glibc
//! 2.28+ versions `fcntl` GLIBC_2.28. (`memcpy`, which the compiler emits
//! for struct copies, is GLIBC_2.14 on x86_64: the link step must bind it
//! to GLIBC_2.2.5 for the whole archive.)
//!
//! The wrappers take plain descriptor numbers. Misusing one (a descriptor
//! that is not the caller's) cannot break memory safety, only the I/O of
//! that descriptor, so they are safe functions; every buffer is a slice.

use core::ffi::{c_int, c_long, c_void};

/// A file descriptor.
pub type Fd = c_int;

/// An `errno` value.
pub type Errno = c_int;

/// `poll()` event bits, re-exported so the tunnel needs no `libc` import.
pub const POLLIN: i16 = libc::POLLIN;
/// Writable.
pub const POLLOUT: i16 = libc::POLLOUT;
/// Error condition (always reported).
pub const POLLERR: i16 = libc::POLLERR;
/// Hang-up (always reported).
pub const POLLHUP: i16 = libc::POLLHUP;
/// Descriptor not open (always reported).
pub const POLLNVAL: i16 = libc::POLLNVAL;
/// The peer shut its writing side (Linux; epoll reports it as EPOLLRDHUP).
pub const POLLRDHUP: i16 = libc::POLLRDHUP;

/// errno values the tunnel names.
pub const EAGAIN: Errno = libc::EAGAIN;
/// See [`EAGAIN`].
pub const EBADF: Errno = libc::EBADF;
/// See [`EAGAIN`].
pub const EINTR: Errno = libc::EINTR;
/// See [`EAGAIN`].
pub const EIO: Errno = libc::EIO;
/// See [`EAGAIN`].
pub const EPIPE: Errno = libc::EPIPE;
/// See [`EAGAIN`].
pub const EINVAL: Errno = libc::EINVAL;
/// See [`EAGAIN`].
pub const ENOSYS: Errno = libc::ENOSYS;
/// See [`EAGAIN`].
pub const ENOMEM: Errno = libc::ENOMEM;

/// The non-blocking flag of [`get_flags`] / [`set_flags`].
pub const O_NONBLOCK: c_int = libc::O_NONBLOCK;

/// One entry of a `poll()` set: `fd < 0` entries are ignored by the kernel
/// (and report nothing, not even POLLHUP).
pub type PollFd = libc::pollfd;

/// A `poll()` entry for `fd` waiting on `events` (an unused entry when
/// `events` is 0, so that POLLHUP/POLLERR cannot wake us for it).
pub fn pollfd(fd: Fd, events: i16) -> PollFd {
    PollFd {
        fd: if events == 0 { -1 } else { fd },
        events,
        revents: 0,
    }
}

/// The calling thread's `errno`.
pub fn errno() -> Errno {
    // SAFETY: __errno_location() always returns a valid pointer to the
    // calling thread's errno; reading it is a plain load.
    unsafe { *libc::__errno_location() }
}

fn is_would_block(e: Errno) -> bool {
    e == libc::EAGAIN || e == libc::EWOULDBLOCK
}

/// Outcome of a non-blocking read or write on a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdIo {
    /// This many bytes moved (0 on a read means end of input).
    Done(usize),
    /// EAGAIN/EWOULDBLOCK.
    WouldBlock,
    /// Any other failure.
    Failed(Errno),
}

/// `read(fd, buf)`, retried on EINTR.
pub fn read(fd: Fd, buf: &mut [u8]) -> FdIo {
    loop {
        // SAFETY: buf is a valid, exclusively borrowed region of buf.len()
        // bytes for the duration of the call; read() writes at most that many.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast::<c_void>(), buf.len()) };
        if let Ok(n) = usize::try_from(r) {
            return FdIo::Done(n.min(buf.len()));
        }
        let e = errno();
        if e == libc::EINTR {
            continue;
        }
        return if is_would_block(e) {
            FdIo::WouldBlock
        } else {
            FdIo::Failed(e)
        };
    }
}

/// `send(fd, buf, MSG_NOSIGNAL)` (no SIGPIPE on a closed peer), falling back
/// to `write()` when fd is not a socket; retried on EINTR.
pub fn write(fd: Fd, buf: &[u8]) -> FdIo {
    let mut use_write = false;
    loop {
        let r = if use_write {
            // SAFETY: buf is a valid region of buf.len() bytes; write() only reads it.
            unsafe { libc::write(fd, buf.as_ptr().cast::<c_void>(), buf.len()) }
        } else {
            // SAFETY: as above; send() only reads buf.
            unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast::<c_void>(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            }
        };
        if let Ok(n) = usize::try_from(r) {
            return FdIo::Done(n.min(buf.len()));
        }
        let e = errno();
        if e == libc::EINTR {
            continue;
        }
        if e == libc::ENOTSOCK && !use_write {
            use_write = true;
            continue;
        }
        return if is_would_block(e) {
            FdIo::WouldBlock
        } else {
            FdIo::Failed(e)
        };
    }
}

/// `shutdown(fd, SHUT_WR)`.
pub fn shutdown_write(fd: Fd) -> Result<(), Errno> {
    // SAFETY: shutdown() takes no pointer; any descriptor value is accepted
    // (an invalid one gives EBADF/ENOTSOCK).
    let r = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// A plain socket, in non-blocking mode, read and written directly (its
/// owner opens and closes it). The tunnel adapts it to its `Endpoint`.
#[derive(Debug)]
pub struct Socket {
    fd: Fd,
}

impl Socket {
    /// Wrap `fd`, which the caller has put in non-blocking mode.
    pub fn new(fd: Fd) -> Self {
        Socket { fd }
    }

    /// Its descriptor.
    #[inline]
    pub fn fd(&self) -> Fd {
        self.fd
    }

    /// [`read()`] from it.
    #[inline]
    pub fn read_some(&self, buf: &mut [u8]) -> FdIo {
        read(self.fd, buf)
    }

    /// [`write()`] to it (no SIGPIPE).
    #[inline]
    pub fn write_some(&self, buf: &[u8]) -> FdIo {
        write(self.fd, buf)
    }

    /// [`shutdown_write()`] it.
    #[inline]
    pub fn shut_write(&self) -> Result<(), Errno> {
        shutdown_write(self.fd)
    }
}

/// `fcntl(fd, F_GETFL)`, as a raw system call: on i386, glibc 2.28 and
/// later version the `fcntl` symbol GLIBC_2.28, which glibc 2.12 lacks.
pub fn get_flags(fd: Fd) -> Result<c_int, Errno> {
    // SAFETY: fcntl(F_GETFL) takes no third argument and touches no memory
    // of ours; a bad descriptor gives -1/EBADF.
    let r = unsafe { libc::syscall(libc::SYS_fcntl, fd as c_long, libc::F_GETFL as c_long) };
    if r < 0 {
        Err(errno())
    } else {
        c_int::try_from(r).map_err(|_| EIO)
    }
}

/// `fcntl(fd, F_SETFL, flags)`, as a raw system call (see [`get_flags`]).
pub fn set_flags(fd: Fd, flags: c_int) -> Result<(), Errno> {
    // SAFETY: fcntl(F_SETFL) takes an int argument and touches no memory of
    // ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd as c_long,
            libc::F_SETFL as c_long,
            flags as c_long,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Put fd in non-blocking mode; returns its previous flags (to restore with
/// [`set_flags`]).
pub fn set_nonblocking(fd: Fd) -> Result<c_int, Errno> {
    let old = get_flags(fd)?;
    if old & libc::O_NONBLOCK == 0 {
        set_flags(fd, old | libc::O_NONBLOCK)?;
    }
    Ok(old)
}

/// The pending error of a socket (`SO_ERROR`, which this clears), or 0.
pub fn socket_error(fd: Fd) -> Errno {
    let mut err: c_int = 0;
    let mut len = core::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: err and len are valid, writable locals; len holds err's size,
    // so getsockopt() writes at most that many bytes into err.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut c_int).cast::<c_void>(),
            &mut len,
        )
    };
    if r == 0 {
        err
    } else {
        0
    }
}

/// `poll(fds, timeout_ms)`: the number of entries with events, or errno
/// (EINTR included: the caller decides).
pub fn poll(fds: &mut [PollFd], timeout_ms: c_int) -> Result<usize, Errno> {
    // SAFETY: fds is a valid, exclusively borrowed array of fds.len()
    // pollfd structures; poll() writes only their revents fields.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    match usize::try_from(r) {
        Ok(n) => Ok(n),
        Err(_) => Err(errno()),
    }
}

/// A pipe made by [`pipe`], both ends non-blocking and close-on-exec;
/// closed on drop.
#[derive(Debug)]
pub struct Pipe {
    read_end: Fd,
    write_end: Fd,
}

impl Pipe {
    /// Its two descriptors (read end, write end), now the caller's to close.
    pub fn into_raw(self) -> (Fd, Fd) {
        let ends = (self.read_end, self.write_end);
        core::mem::forget(self);
        ends
    }

    /// The end to read (or splice) from.
    pub fn read_end(&self) -> Fd {
        self.read_end
    }

    /// The end to write (or splice) into.
    pub fn write_end(&self) -> Fd {
        self.write_end
    }

    /// Its capacity in bytes (`F_GETPIPE_SZ`, Linux 2.6.35+), or None when
    /// the kernel cannot say (then it is 16 pages).
    pub fn capacity(&self) -> Option<usize> {
        // SAFETY: fcntl(F_GETPIPE_SZ) takes no third argument and touches no
        // memory of ours; raw system call for the reason given at get_flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fcntl,
                self.write_end as c_long,
                libc::F_GETPIPE_SZ as c_long,
            )
        };
        usize::try_from(r).ok().filter(|&n| n > 0)
    }

    /// Ask for a capacity of `bytes` (`F_SETPIPE_SZ`, Linux 2.6.35+): the
    /// capacity now, or errno (EPERM past the per-user limits, EINVAL on
    /// older kernels, EBUSY if the pipe holds more than that).
    pub fn set_capacity(&self, bytes: usize) -> Result<usize, Errno> {
        // SAFETY: fcntl(F_SETPIPE_SZ) takes an int argument and touches no
        // memory of ours; raw system call for the reason given at get_flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fcntl,
                self.write_end as c_long,
                libc::F_SETPIPE_SZ as c_long,
                c_long::try_from(bytes).unwrap_or(c_long::MAX),
            )
        };
        usize::try_from(r).map_err(|_| errno())
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: both descriptors were made by pipe2() for this value alone
        // and are closed exactly once, here.
        unsafe {
            libc::close(self.read_end);
            libc::close(self.write_end);
        }
    }
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`), if finite.
// rlim_t is 32 bits on i686, 64 on x86_64.
#[allow(clippy::useless_conversion)]
pub fn max_open_files() -> Option<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: l is a valid, writable rlimit for getrlimit() to fill in.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    if r != 0 || l.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(u64::from(l.rlim_cur))
}

/// A new non-blocking pipe (`pipe2(O_NONBLOCK | O_CLOEXEC)`).
pub fn pipe() -> Result<Pipe, Errno> {
    let mut fds: [c_int; 2] = [-1, -1];
    // SAFETY: fds is a valid, writable array of two ints, which is what
    // pipe2() fills in.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if r != 0 {
        return Err(errno());
    }
    let [read_end, write_end] = fds;
    Ok(Pipe {
        read_end,
        write_end,
    })
}

/// `splice(from, NULL, to, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)`,
/// retried on EINTR: moves up to `len` bytes between a socket and a pipe
/// inside the kernel. `Done(0)` means end of input when reading a socket.
/// (A socket written this way raises SIGPIPE when its peer is gone, as
/// splice has no MSG_NOSIGNAL: httpd ignores SIGPIPE.)
pub fn splice(from: Fd, to: Fd, len: usize) -> FdIo {
    loop {
        // SAFETY: splice() takes no pointer but the two offsets, which are
        // NULL (use and advance the descriptors' own positions); it moves
        // data only between the two descriptors.
        let r = unsafe {
            libc::splice(
                from,
                core::ptr::null_mut(),
                to,
                core::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if let Ok(n) = usize::try_from(r) {
            return FdIo::Done(n.min(len));
        }
        let e = errno();
        if e == libc::EINTR {
            continue;
        }
        return if is_would_block(e) {
            FdIo::WouldBlock
        } else {
            FdIo::Failed(e)
        };
    }
}

/// Give the whole pages inside `buf` back to the kernel
/// (`madvise(MADV_DONTNEED)`): they read as zeros afterwards and take no
/// memory until written again. Partial pages at either end are left alone,
/// so this never touches memory outside `buf`. Best effort: an error only
/// means the memory stays resident.
pub fn discard_pages(buf: &mut [u8]) {
    const PAGE: usize = 4096;
    let start = buf.as_mut_ptr() as usize;
    let Some(end) = start.checked_add(buf.len()) else {
        return;
    };
    let Some(first) = start.checked_add(PAGE - 1).map(|a| a & !(PAGE - 1)) else {
        return;
    };
    let last = end & !(PAGE - 1);
    if last <= first {
        return;
    }
    // SAFETY: [first, last) is whole pages inside `buf`, which we borrow
    // mutably: MADV_DONTNEED only replaces their contents with zeros (a
    // write through our exclusive borrow), no other object shares them.
    unsafe {
        libc::madvise(first as *mut core::ffi::c_void, last - first, libc::MADV_DONTNEED);
    }
}

/// The kernel's own `struct timespec` for the legacy clock_gettime system
/// call: two longs on both i386 and x86_64 (independent of how the libc
/// crate defines `timespec` for 64-bit time on 32-bit targets).
#[repr(C)]
struct KernelTimespec {
    tv_sec: c_long,
    tv_nsec: c_long,
}

/// Milliseconds of CLOCK_MONOTONIC, or None when the clock cannot be read.
pub fn monotonic_ms() -> Option<u64> {
    let mut ts = KernelTimespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: SYS_clock_gettime(clockid, struct timespec *) writes one
    // kernel timespec (two longs, matching KernelTimespec) through the
    // pointer, which points to a valid, writable local.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC as c_long,
            &mut ts as *mut KernelTimespec,
        )
    };
    if r != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000))
}

/// Test helper: make closing this TCP socket send a RST (SO_LINGER 0).
#[cfg(test)]
pub fn set_linger_zero(fd: Fd) -> Result<(), Errno> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: l is a valid local of the size passed; setsockopt() only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast::<c_void>(),
            core::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Close a descriptor (errors are of no use to the caller: the descriptor
/// is gone either way on Linux).
pub fn close(fd: Fd) {
    if fd >= 0 {
        // SAFETY: close() takes no pointer; the caller owns fd.
        unsafe {
            libc::close(fd);
        }
    }
}

/// `shutdown(fd, SHUT_RDWR)`: ends the connection for every descriptor of
/// the socket (a copy leaked into a forked child cannot hold it open).
pub fn shutdown_both(fd: Fd) {
    // SAFETY: shutdown() takes no pointer.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Block every signal on the calling thread (the reactor's: httpd's
/// handlers run on its own threads). `rt_sigprocmask` directly: see the
/// module documentation.
pub fn block_all_signals() -> Result<(), Errno> {
    let all: [u64; 1] = [u64::MAX];
    // SAFETY: the set is 8 readable bytes (the kernel's sigset size on
    // x86_64 and i386, passed as the last argument); no old set is asked
    // for (NULL).
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK as c_long,
            all.as_ptr(),
            core::ptr::null_mut::<c_void>(),
            8 as c_long,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// epoll interest and event bits.
pub const EPOLLIN: u32 = libc::EPOLLIN as u32;
/// See [`EPOLLIN`].
pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;
/// See [`EPOLLIN`].
pub const EPOLLERR: u32 = libc::EPOLLERR as u32;
/// See [`EPOLLIN`].
pub const EPOLLHUP: u32 = libc::EPOLLHUP as u32;
/// See [`EPOLLIN`].
pub const EPOLLRDHUP: u32 = libc::EPOLLRDHUP as u32;
/// See [`EPOLLIN`].
pub const EPOLLET: u32 = libc::EPOLLET as u32;

/// An epoll instance (close-on-exec), closed on drop.
#[derive(Debug)]
pub struct Epoll {
    fd: Fd,
}

/// One event as [`Epoll::wait`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpollEvent {
    /// The bits that happened.
    pub events: u32,
    /// What was registered with the descriptor.
    pub token: u64,
}

/// Most events one [`Epoll::wait`] reports.
pub const EPOLL_BATCH: usize = 256;

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> Result<Epoll, Errno> {
        // SAFETY: epoll_create1 takes no pointer.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            Err(errno())
        } else {
            Ok(Epoll { fd })
        }
    }

    fn ctl(&self, op: c_int, fd: Fd, events: u32, token: u64) -> Result<(), Errno> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event for the call to read (EPOLL_CTL_DEL
        // ignores it; kernels before 2.6.9 wanted it non-NULL anyway).
        let r = unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) };
        if r == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }

    /// Watch `fd` for `events`, reported with `token`.
    pub fn add(&self, fd: Fd, events: u32, token: u64) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Stop watching `fd`.
    pub fn delete(&self, fd: Fd) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Wait up to `timeout_ms` (-1: no limit) for events, into `out`;
    /// how many came (0 on EINTR).
    pub fn wait(&self, out: &mut [EpollEvent], timeout_ms: c_int) -> Result<usize, Errno> {
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_BATCH];
        let max = out.len().min(EPOLL_BATCH);
        // SAFETY: raw has room for max (<= EPOLL_BATCH) events, which is what
        // the kernel may write.
        let r = unsafe { libc::epoll_wait(self.fd, raw.as_mut_ptr(), max as c_int, timeout_ms) };
        let Ok(n) = usize::try_from(r) else {
            let e = errno();
            return if e == EINTR { Ok(0) } else { Err(e) };
        };
        for (o, e) in out.iter_mut().zip(raw.iter()).take(n) {
            // Copies out of the (packed on x86_64) kernel struct.
            let (events, token) = (e.events, e.u64);
            *o = EpollEvent { events, token };
        }
        Ok(n.min(max))
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        close(self.fd);
    }
}

/// glibc's allocator as Rust's: the reactor's tunnels and buffers. Blocks
/// aligned beyond what malloc guarantees (8 bytes on i386 glibc 2.12, 16 on
/// x86_64) come from posix_memalign.
#[cfg(not(test))]
pub struct Malloc;

#[cfg(not(test))]
const MALLOC_ALIGN: usize = 2 * core::mem::size_of::<usize>();

// SAFETY: malloc/realloc/posix_memalign return blocks of at least the size
// asked for, aligned as asked for (malloc's own alignment covers alignments
// up to MALLOC_ALIGN), or NULL; free() takes any of them back.
#[cfg(not(test))]
unsafe impl core::alloc::GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: malloc has no precondition.
            return unsafe { libc::malloc(layout.size()) }.cast();
        }
        let mut p: *mut c_void = core::ptr::null_mut();
        // SAFETY: p is a valid place for the result; the alignment is a
        // power of two larger than a pointer (Layout's guarantee, checked
        // above).
        let r = unsafe { libc::posix_memalign(&mut p, layout.align(), layout.size()) };
        if r == 0 {
            p.cast()
        } else {
            core::ptr::null_mut()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: core::alloc::Layout) {
        // SAFETY: ptr came from alloc/realloc above (GlobalAlloc's contract).
        unsafe { libc::free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: core::alloc::Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: ptr came from malloc (alloc above, this alignment).
            return unsafe { libc::realloc(ptr.cast(), new_size) }.cast();
        }
        // SAFETY: the caller's layout and new_size follow GlobalAlloc's
        // contract; new_layout is valid because the old one was.
        unsafe {
            let new_layout = core::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(not(test))]
#[global_allocator]
static GLOBAL: Malloc = Malloc;

/// Test helper: a new non-blocking timerfd, a descriptor splice(2)
/// refuses (EINVAL) on current kernels.
#[cfg(test)]
pub fn timerfd() -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: timerfd_create takes no pointer.
    let fd = unsafe {
        libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fd is a fresh descriptor, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn discarded_pages_read_as_zeros_and_the_edges_are_kept() {
        // Three pages and a bit, starting mid-page: only the whole pages
        // inside are given back.
        let mut mem = vec![7u8; 5 * 4096];
        let base = mem.as_ptr() as usize;
        let skew = (4096 - base % 4096) % 4096 + 100;
        let region = &mut mem[skew..skew + 3 * 4096];
        discard_pages(region);
        let first = 4096 - 100;
        assert!(region[..first].iter().all(|&b| b == 7), "head kept");
        assert!(region[first..first + 2 * 4096].iter().all(|&b| b == 0), "whole pages zeroed");
        assert!(region[first + 2 * 4096..].iter().all(|&b| b == 7), "tail kept");
        assert!(mem[..skew].iter().all(|&b| b == 7) && mem[skew + 3 * 4096..].iter().all(|&b| b == 7));
        // Less than a page: nothing happens.
        let mut small = vec![9u8; 4000];
        discard_pages(&mut small);
        assert!(small.iter().all(|&b| b == 9));
    }

    #[test]
    fn clock_moves_forward() {
        let a = monotonic_ms().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = monotonic_ms().unwrap();
        assert!(b >= a + 15, "{a} {b}");
    }

    #[test]
    fn read_write_nonblocking_and_flags() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let old = set_nonblocking(fd).unwrap();
        assert_eq!(old & libc::O_NONBLOCK, 0);
        let mut buf = [0u8; 8];
        assert_eq!(read(fd, &mut buf), FdIo::WouldBlock);
        b.write_all(b"hey").unwrap();
        assert_eq!(read(fd, &mut buf), FdIo::Done(3));
        assert_eq!(write(fd, b"xy"), FdIo::Done(2));
        assert_eq!(shutdown_write(fd), Ok(()));
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut b, &mut got).unwrap();
        assert_eq!(got, b"xy");
        drop(b);
        assert_eq!(read(fd, &mut buf), FdIo::Done(0));
        assert!(matches!(write(fd, b"z"), FdIo::Failed(libc::EPIPE)));
        set_flags(fd, old).unwrap();
        assert_eq!(get_flags(fd).unwrap() & libc::O_NONBLOCK, 0);
        assert_eq!(socket_error(fd), 0);
    }

    #[test]
    fn pipe_and_splice() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let p = pipe().unwrap();
        assert!(p.capacity().unwrap() >= 4096);
        if let Ok(n) = p.set_capacity(1 << 18) {
            assert_eq!(p.capacity(), Some(n));
            assert!(n >= 1 << 18);
        }
        assert!(max_open_files().unwrap_or(u64::MAX) > p.write_end() as u64);
        assert_eq!(splice(a.as_raw_fd(), p.write_end(), 100), FdIo::WouldBlock);
        b.write_all(b"spliced").unwrap();
        assert_eq!(splice(a.as_raw_fd(), p.write_end(), 100), FdIo::Done(7));
        assert_eq!(splice(p.read_end(), c.as_raw_fd(), 7), FdIo::Done(7));
        let mut got = [0u8; 7];
        std::io::Read::read_exact(&mut d, &mut got).unwrap();
        assert_eq!(&got, b"spliced");
        drop(b);
        assert_eq!(splice(a.as_raw_fd(), p.write_end(), 100), FdIo::Done(0));
        assert_eq!(splice(-1, p.write_end(), 1), FdIo::Failed(libc::EBADF));
        let (r, w) = (p.read_end(), p.write_end());
        drop(p);
        assert_eq!(get_flags(r), Err(libc::EBADF));
        assert_eq!(get_flags(w), Err(libc::EBADF));
    }

    #[test]
    fn bad_descriptors() {
        let mut buf = [0u8; 4];
        assert_eq!(read(-1, &mut buf), FdIo::Failed(libc::EBADF));
        assert_eq!(write(-1, b"x"), FdIo::Failed(libc::EBADF));
        assert_eq!(get_flags(-1), Err(libc::EBADF));
        let mut fds = [pollfd(5, 0)];
        assert_eq!(fds[0].fd, -1);
        assert_eq!(poll(&mut fds, 0), Ok(0));
    }
}
