//! A worker's provided-buffer ring: the entry ring shared with the kernel
//! and the buffers it points at. Every `unsafe` that touches that memory
//! lives in this file.

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

use super::{BGID, Tuning};

/// A provided-buffer ring: the entry ring shared with the kernel and the
/// buffers it points at, in one anonymous mapping that lives until the
/// worker is gone (and is leaked if the kernel might still use it).
pub(super) struct Pool {
    /// Start of the mapping: the page-aligned entry ring, buffers after it.
    base: NonNull<libc::c_void>,
    /// Bytes mapped.
    len: NonZeroUsize,
    /// Offset of the first buffer in the mapping.
    bufs_at: usize,
    /// Entries (and buffers), a power of two.
    pub(super) count: u16,
    /// Bytes per buffer.
    pub(super) size: u32,
    /// Our copy of the ring tail: entries published to the kernel so far.
    tail: u16,
    /// Buffers in the ring right now (given to the kernel, not yet used).
    pub(super) free: usize,
}

impl Pool {
    /// Maps the memory, registers the ring with `ring` and gives the kernel
    /// every buffer.
    pub(super) fn new(ring: &IoUring, tuning: Tuning) -> io::Result<Pool> {
        let page = page_size();
        let count = usize::from(tuning.bufs);
        let ring_bytes = (count * std::mem::size_of::<BufRingEntry>()).div_ceil(page) * page;
        let len = (tuning.buf_size as usize)
            .checked_mul(count)
            .and_then(|b| b.checked_add(ring_bytes))
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| io::Error::other("buffer ring size overflows"))?;
        // SAFETY: a fresh private anonymous mapping overlaps nothing; it is
        // zero-filled (every ring entry empty, tail 0) and page-aligned, as
        // the kernel requires of a buffer ring. `Drop` unmaps it.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        let mut pool = Pool {
            base,
            len,
            bufs_at: ring_bytes,
            count: tuning.bufs,
            size: tuning.buf_size,
            tail: 0,
            free: 0,
        };
        // SAFETY: the entry ring is `count` entries at the start of our
        // mapping, which stays mapped until the ring is gone: `Pool` is
        // dropped after its `IoUring` (field order, explicit drops), or leaked.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                pool.base.as_ptr() as u64,
                tuning.bufs,
                BGID,
                0,
            )
        }?;
        for bid in 0..tuning.bufs {
            pool.put(bid);
        }
        Ok(pool)
    }

    /// The entry ring, at the start of the mapping.
    fn entries(&self) -> *mut BufRingEntry {
        self.base.as_ptr().cast()
    }

    /// Address of buffer `bid` (checked by the callers: `bid < count`).
    pub(super) fn buf(&self, bid: u16) -> *mut u8 {
        let at = self.bufs_at + usize::from(bid) * self.size as usize;
        // SAFETY: `at + size <= len` for every `bid < count`, so the pointer
        // stays inside the mapping.
        unsafe { self.base.as_ptr().cast::<u8>().add(at) }
    }

    /// Bytes `off..off + len` of buffer `bid`, which a receive filled and
    /// which is held out of the ring (the caller's to read); empty if the
    /// range is not inside one of our buffers.
    pub(super) fn filled(&self, bid: u16, off: usize, len: usize) -> &[u8] {
        if !self.owns(bid) || off.checked_add(len).is_none_or(|e| e > self.size as usize) {
            return &[];
        }
        // SAFETY: the range lies inside buffer `bid` (checked above), inside
        // our mapping; the buffer is out of the ring, so the kernel does not
        // write it while this borrow of the pool lives.
        unsafe { std::slice::from_raw_parts(self.buf(bid).add(off), len) }
    }

    /// True if `bid` names one of our buffers: a kernel result is checked
    /// before it is used as an index.
    pub(super) fn owns(&self, bid: u16) -> bool {
        bid < self.count
    }

    /// Notes that the kernel took a buffer out of the ring.
    pub(super) fn take(&mut self) {
        self.free = self.free.saturating_sub(1);
    }

    /// Gives buffer `bid` back to the kernel.
    pub(super) fn put(&mut self, bid: u16) {
        if !self.owns(bid) {
            return;
        }
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot < count`, inside the entry ring. That entry lies past
        // the tail the kernel knows, so the kernel does not read it until we
        // publish the new tail below. The setters leave the `resv` field
        // (which is the ring tail in entry 0) untouched.
        let entry = unsafe { &mut *self.entries().add(slot) };
        entry.set_addr(self.buf(bid) as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 inside entry 0 of our live mapping,
        // 2-aligned; the kernel reads it with acquire semantics and only we
        // write it, so a release store publishes the entry written above.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
        self.free += 1;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours; it is dropped only once no request
        // can touch it any more (the ring is gone and nothing was in flight),
        // otherwise the pool is leaked instead.
        let _ = unsafe { munmap(self.base, self.len.get()) };
    }
}

/// The system page size (4 KiB if it cannot be read).
fn page_size() -> usize {
    const FALLBACK_PAGE: usize = 4096;
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(FALLBACK_PAGE)
}
