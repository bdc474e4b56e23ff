//! A direction's buffer: the caller's memory or, for the reactor's tunnels,
//! memory taken from a [`BufPool`] only while bytes are pending.

use crate::sys;

/// A direction's buffer: the caller's memory, and how many bytes at its
/// start are already pending (to be written before anything read later).
#[derive(Debug)]
pub struct Buffer<'a> {
    pub(super) data: &'a mut [u8],
    pub(super) start: usize,
    pub(super) end: usize,
    /// Bytes were put in since the pages were last given back.
    pub(super) touched: bool,
}

impl<'a> Buffer<'a> {
    /// None when `data` is empty (that direction could never move a byte)
    /// or `pending > data.len()`.
    pub fn new(data: &'a mut [u8], pending: usize) -> Option<Self> {
        if data.is_empty() || pending > data.len() {
            return None;
        }
        Some(Buffer {
            data,
            start: 0,
            end: pending,
            touched: true,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub(super) fn is_full(&self) -> bool {
        self.len() >= self.data.len()
    }

    pub(super) fn pending(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or(&[])
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The free room after the pending bytes (moving them to the front
    /// first when the room at the end is used up).
    pub(super) fn room(&mut self) -> &mut [u8] {
        if self.end >= self.data.len() && self.start > 0 && self.start <= self.end {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.data.get_mut(self.end..).unwrap_or(&mut [])
    }

    pub(super) fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.data.len());
        self.touched = true;
    }

    /// When empty, give its pages back to the kernel (see
    /// [`sys::discard_pages`]): an idle tunnel then holds no resident
    /// memory for its buffers, whatever passed through them before.
    pub(super) fn release(&mut self) {
        if self.touched && self.len() == 0 {
            sys::discard_pages(self.data);
            self.touched = false;
        }
    }

    /// Take the `len` pending bytes at index `at` of `data` out, moving the
    /// ones after them down. False (nothing changed) unless they are all
    /// pending.
    pub(super) fn remove(&mut self, at: usize, len: usize) -> bool {
        let Some(to) = at.checked_add(len) else {
            return false;
        };
        if at < self.start || to > self.end {
            return false;
        }
        self.data.copy_within(to..self.end, at);
        self.end -= len;
        true
    }
}
