//! The zero-copy lane: a direction's bytes through a pipe with splice(2)
//! (see the module documentation of [`crate::tunnel`]).

use super::dir::Dir;
use crate::sys::{self, Errno, Fd};

/// Pipe capacity when the kernel cannot tell (16 pages).
pub(super) const DEFAULT_PIPE_CAP: usize = 16 * 4096;

/// A direction that fills its pipe in one splice asks for a pipe this large
/// (fewer system calls per byte); refused past the per-user pipe limits,
/// which then keeps the default.
pub(super) const BULK_PIPE_CAP: usize = 256 * 1024;

/// True when descriptor `fd` is in the last eighth (at least 64) of the
/// process's descriptor limit: too close to leave to pipes.
pub(crate) fn near_fd_limit(fd: Fd) -> bool {
    let Some(limit) = sys::max_open_files() else {
        return false;
    };
    let reserve = (limit / 8).max(64);
    u64::try_from(fd).map_or(true, |f| f.saturating_add(reserve) >= limit)
}

impl Dir<'_> {
    /// Write from the pipe to `fd`; None when the kernel cannot (splice is
    /// then off for this direction).
    pub(super) fn flush_pipe(&mut self, fd: Fd) -> Option<Result<bool, Errno>> {
        let from = self.pipe.as_ref()?.read_end();
        let hup = core::mem::replace(&mut self.dst_hup, false);
        Some(match sys::splice(from, fd, self.in_pipe) {
            // The pipe holds bytes: it cannot be at its end.
            sys::FdIo::Done(0) => Err(sys::EIO),
            sys::FdIo::Done(n) => {
                let n = n.min(self.in_pipe);
                self.in_pipe -= n;
                self.count_written(n);
                self.pipe_full = false;
                if self.in_pipe > 0 {
                    self.writable = false;
                }
                Ok(true)
            }
            sys::FdIo::WouldBlock => {
                self.writable = false;
                if hup {
                    Err(sys::EPIPE)
                } else {
                    Ok(false)
                }
            }
            sys::FdIo::Failed(e) if e == sys::EINVAL || e == sys::ENOSYS => {
                self.splice_off = true;
                self.dst_hup = hup;
                return None;
            }
            sys::FdIo::Failed(e) => Err(e),
        })
    }

    /// Move the pipe's bytes (as many as fit) into the empty buffer, after
    /// splice turned out unusable; the pipe is closed once empty.
    pub(super) fn unpipe(&mut self) -> Result<(), Errno> {
        let Some(from) = self.pipe.as_ref().map(sys::Pipe::read_end) else {
            return Err(sys::EIO);
        };
        let room = self.buf.room();
        let want = room.len().min(self.in_pipe);
        match sys::read(from, room.get_mut(..want).unwrap_or(&mut [])) {
            sys::FdIo::Done(n) if n > 0 => {
                let n = n.min(self.in_pipe);
                self.buf.commit(n);
                self.in_pipe -= n;
                self.pipe_full = false;
                if self.in_pipe == 0 {
                    self.pipe = None;
                }
                Ok(())
            }
            sys::FdIo::Failed(e) => Err(e),
            // The pipe holds bytes but gives none: should not happen.
            _ => Err(sys::EIO),
        }
    }

    /// Splice from the source socket `fd` into the pipe (made here if
    /// needed). None when splice cannot be used (then it is off for this
    /// direction and the pipe is empty and gone): use the buffer.
    pub(super) fn fill_pipe(&mut self, fd: Fd, hup: bool) -> Option<Result<bool, Errno>> {
        let allowance = self.splice_allowance();
        if self.pipe.is_none() {
            match sys::pipe() {
                Ok(p) if near_fd_limit(p.write_end()) => {
                    self.splice_off = true;
                    return None;
                }
                Ok(p) => {
                    self.pipe_cap = p.capacity().unwrap_or(DEFAULT_PIPE_CAP);
                    self.pipe_grown = false;
                    self.pipe = Some(p);
                    self.pipes = self.pipes.saturating_add(1);
                }
                Err(_) => {
                    self.splice_off = true;
                    return None;
                }
            }
        }
        let to = self.pipe.as_ref()?.write_end();
        // WebSocket: payload bytes only, up to the end of the frame.
        let pipe_room = self.pipe_cap.saturating_sub(self.in_pipe);
        let room = pipe_room.min(allowance);
        if room == 0 {
            return Some(Ok(false));
        }
        Some(match sys::splice(fd, to, room) {
            // Some older kernels answer 0 rather than AGAIN when the pipe's
            // slots are used up: only an empty pipe's 0 is end of input.
            sys::FdIo::Done(0) if self.in_pipe > 0 => {
                self.pipe_full = true;
                Ok(false)
            }
            sys::FdIo::Done(0) => {
                self.eof = true;
                self.readable = false;
                Ok(true)
            }
            sys::FdIo::Done(n) => {
                let n = n.min(room);
                self.in_pipe += n;
                self.read = self.read.saturating_add(n as u64);
                self.spliced = self.spliced.saturating_add(n as u64);
                if let Some(w) = self.ws.as_mut() {
                    let _ = w.tracker.skip(n);
                }
                self.hup_again = 0;
                // Filled the pipe: the socket likely has more; read again
                // (once the pipe has room) without polling first. Edge-
                // triggered: a short splice may have stopped at the pipe's
                // slots, not at the socket's end, and no new edge would
                // come for bytes already there: read until AGAIN.
                self.readable = n == room || self.edge;
                if n == pipe_room && n == self.in_pipe && !self.pipe_grown {
                    // Bulk traffic: a bigger pipe, if the kernel allows.
                    self.pipe_grown = true;
                    if let Some(Ok(cap)) = self.pipe.as_ref().map(|p| p.set_capacity(BULK_PIPE_CAP)) {
                        self.pipe_cap = cap.max(self.in_pipe);
                    }
                }
                Ok(true)
            }
            sys::FdIo::WouldBlock if self.in_pipe > 0 => {
                self.pipe_full = true;
                Ok(false)
            }
            sys::FdIo::WouldBlock => Ok(self.again(hup)),
            sys::FdIo::Failed(e) if e == sys::EINVAL || e == sys::ENOSYS => {
                self.splice_off = true;
                if self.in_pipe == 0 {
                    self.pipe = None;
                    return None;
                }
                Ok(false)
            }
            sys::FdIo::Failed(e) => Err(e),
        })
    }

    /// Close the pipe if it is empty (the tunnel is quiet).
    pub(super) fn release_pipe(&mut self) {
        if self.in_pipe == 0 {
            self.pipe = None;
            self.pipe_full = false;
        }
        self.buf.release();
    }
}
