//! A direction's buffer: the caller's memory (threaded tunnels), or, for
//! the reactor's tunnels, a block taken from a [`BufPool`] only while bytes
//! are pending, so that an idle tunnel holds none.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::sys;

/// Where a buffer's bytes live.
#[derive(Debug)]
enum Store<'a> {
    /// The caller's memory, for the tunnel's whole life.
    Lent(&'a mut [u8]),
    /// A pool's block while bytes are pending (None between), of this size.
    Pooled(Option<Box<[u8]>>, usize),
}

/// A direction's buffer and how many bytes at its start are pending (to be
/// written before anything read later).
#[derive(Debug)]
pub struct Buffer<'a> {
    store: Store<'a>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Bytes were put in since the pages were last given back.
    touched: bool,
}

/// Blocks of one size for pooled buffers: taken when a direction has bytes
/// to hold, given back once they are written. At most `keep` idle blocks
/// are kept; the rest go back to the allocator.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<Box<[u8]>>,
    size: usize,
    keep: usize,
}

impl BufPool {
    /// A pool of `size`-byte blocks (> 0) keeping at most `keep` idle ones.
    pub fn new(size: usize, keep: usize) -> Self {
        BufPool {
            free: Vec::new(),
            size: size.max(1),
            keep,
        }
    }

    /// The size of its blocks.
    pub fn block_size(&self) -> usize {
        self.size
    }

    /// Idle blocks kept.
    pub fn idle(&self) -> usize {
        self.free.len()
    }

    /// A block, or None when no memory can be had.
    fn take(&mut self) -> Option<Box<[u8]>> {
        if let Some(b) = self.free.pop() {
            return Some(b);
        }
        let mut v = Vec::new();
        v.try_reserve_exact(self.size).ok()?;
        v.resize(self.size, 0);
        Some(v.into_boxed_slice())
    }

    fn give(&mut self, b: Box<[u8]>) {
        if self.free.len() < self.keep && b.len() == self.size && self.free.try_reserve(1).is_ok() {
            self.free.push(b);
        }
    }
}

impl<'a> Buffer<'a> {
    /// The caller's memory; None when `data` is empty (that direction could
    /// never move a byte) or `pending > data.len()`.
    pub fn new(data: &'a mut [u8], pending: usize) -> Option<Self> {
        if data.is_empty() || pending > data.len() {
            return None;
        }
        Some(Buffer {
            store: Store::Lent(data),
            start: 0,
            end: pending,
            touched: true,
        })
    }

    /// A pooled buffer holding a copy of `pending` (a block is taken only
    /// if it is not empty); None when it does not fit a block or no memory
    /// can be had.
    pub fn pooled(pending: &[u8], pool: &mut BufPool) -> Option<Buffer<'static>> {
        let size = pool.block_size();
        if pending.len() > size {
            return None;
        }
        let mut b = Buffer {
            store: Store::Pooled(None, size),
            start: 0,
            end: 0,
            touched: false,
        };
        if !pending.is_empty() {
            let mut block = pool.take()?;
            block.get_mut(..pending.len())?.copy_from_slice(pending);
            b.store = Store::Pooled(Some(block), size);
            b.end = pending.len();
            b.touched = true;
        }
        Some(b)
    }

    /// A buffer of `size` bytes for the pooled kind (taking pool blocks
    /// later), holding a copy of `pending` in a block of its own made here
    /// (on any thread: no pool is needed); None when `pending` does not fit
    /// or no memory can be had.
    pub fn owned(pending: &[u8], size: usize) -> Option<Buffer<'static>> {
        let mut pool = BufPool::new(size, 0);
        Buffer::pooled(pending, &mut pool)
    }

    /// Pooled: make sure a block is there (false: no memory). Lent: true.
    pub(super) fn provide(&mut self, pool: &mut BufPool) -> bool {
        match &mut self.store {
            Store::Lent(_) | Store::Pooled(Some(_), _) => true,
            Store::Pooled(slot @ None, _) => {
                *slot = pool.take();
                slot.is_some()
            }
        }
    }

    /// Pooled and empty: give the block back.
    pub(super) fn reclaim(&mut self, pool: &mut BufPool) {
        if self.len() != 0 {
            return;
        }
        if let Store::Pooled(slot, size) = &mut self.store {
            if let Some(b) = slot.take() {
                pool.give(b);
            }
            // A block of its own (pending bytes larger than a pool block)
            // is gone: from now on the pool's blocks are the size.
            *size = pool.block_size();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Holds memory worth giving back when the tunnel is quiet.
    pub(super) fn holds(&self) -> bool {
        match &self.store {
            Store::Lent(_) => self.touched,
            Store::Pooled(b, _) => b.is_some(),
        }
    }

    pub(super) fn data(&self) -> &[u8] {
        match &self.store {
            Store::Lent(d) => d,
            Store::Pooled(Some(b), _) => b,
            Store::Pooled(None, _) => &[],
        }
    }

    fn data_mut(&mut self) -> &mut [u8] {
        match &mut self.store {
            Store::Lent(d) => d,
            Store::Pooled(Some(b), _) => b,
            Store::Pooled(None, _) => &mut [],
        }
    }

    /// Its size (a pooled buffer's even while it has no block).
    pub(super) fn capacity(&self) -> usize {
        match &self.store {
            Store::Lent(d) => d.len(),
            Store::Pooled(_, size) => *size,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.capacity()
    }

    pub(crate) fn pending(&self) -> &[u8] {
        self.data().get(self.start..self.end).unwrap_or(&[])
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The free room after the pending bytes (moving them to the front
    /// first when the room at the end is used up). Empty for a pooled
    /// buffer without its block (see [`provide`](Self::provide)).
    pub(crate) fn room(&mut self) -> &mut [u8] {
        let (start, end) = (self.start, self.end);
        let data = self.data_mut();
        if end >= data.len() && start > 0 && start <= end {
            data.copy_within(start..end, 0);
            self.end -= start;
            self.start = 0;
        }
        let end = self.end;
        self.data_mut().get_mut(end..).unwrap_or(&mut [])
    }

    pub(super) fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.data().len());
        self.touched = true;
    }

    /// When empty, give its memory back: a lent buffer's pages to the
    /// kernel (see [`sys::discard_pages`]), so that an idle tunnel holds no
    /// resident memory for its buffers whatever passed through them before
    /// (a pooled one gives its block back at the end of every turn).
    pub(super) fn release(&mut self) {
        if self.touched && self.len() == 0 {
            if let Store::Lent(d) = &mut self.store {
                sys::discard_pages(d);
            }
            self.touched = false;
        }
    }

    /// Drop the pending bytes from index `at` of the data on (nothing when
    /// `at` is not within the pending bytes).
    pub(super) fn truncate(&mut self, at: usize) {
        if at >= self.start && at <= self.end {
            self.end = at;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
        }
    }

    /// Take the `len` pending bytes at index `at` of the data out, moving
    /// the ones after them down. False (nothing changed) unless they are all
    /// pending.
    pub(super) fn remove(&mut self, at: usize, len: usize) -> bool {
        let Some(to) = at.checked_add(len) else {
            return false;
        };
        if at < self.start || to > self.end {
            return false;
        }
        let end = self.end;
        self.data_mut().copy_within(to..end, at);
        self.end -= len;
        true
    }
}
