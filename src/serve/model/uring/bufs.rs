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

use super::ledger::Ledger;
use super::tuning::{BGID, Tuning};

/// `IOU_PBUF_RING_INC` (include/uapi/linux/io_uring.h): consume provided
/// buffers incrementally.
const IOU_PBUF_RING_INC: u16 = 2;

/// The first release whose completions of one incremental buffer always
/// arrive in the order the kernel filled it. Before it (kernel commit
/// 687b2bae0eff, "io_uring: ensure deferred completions are flushed for
/// multishot", 6.15) a single receive's deferred completion could be posted
/// after a later multishot one into the same buffer, and the offsets this
/// pool keeps would hand a connection another client's bytes. Stable 6.12
/// and 6.14 trees got the fix later; without a way to tell, they get whole
/// buffers.
const INCREMENTAL_SINCE: (u32, u32) = (6, 15);

/// Whether this kernel's incremental buffers can be trusted
/// ([`INCREMENTAL_SINCE`]).
fn incremental_is_safe() -> bool {
    crate::sys::proc::kernel_release().is_some_and(|r| r >= INCREMENTAL_SINCE)
}

/// A provided-buffer ring: the entry ring shared with the kernel and the
/// buffers it points at, in one anonymous mapping that lives until the
/// worker is gone (and is leaked if the kernel might still use it). Which
/// buffer is whose is the [`Ledger`]'s business; this is its memory.
///
/// The mapping is populated when it is made, so the pool is resident from
/// the start: it is the worker's fixed memory, not any connection's. The
/// kernel fills buffers in ring order and (incrementally) from each
/// buffer's start on, so traffic walks the whole pool anyway — 10,000
/// 64-byte receives touch 625 KiB of it, 4 MiB of traffic all of it — and
/// a lazily touched pool only made that fixed cost show up as memory per
/// connection in the first minutes of a server's life. Recycling the same
/// pages instead (giving a buffer's pages back as it returns to the ring)
/// would cost a system call and a page fault per 4 KiB of traffic.
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
    /// Who holds each buffer, and how many the kernel has.
    pub(super) ledger: Ledger,
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
        // the kernel requires of a buffer ring. `Drop` unmaps it. Populated
        // at once (see above); the kernel does that as far as it can and
        // leaves the rest to faults, so it never fails the mapping.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
            )
        }?;
        let mut pool = Pool {
            base,
            len,
            bufs_at: ring_bytes,
            count: tuning.bufs,
            size: tuning.buf_size,
            tail: 0,
            ledger: Ledger::new(tuning.bufs, false),
        };
        // SAFETY: the entry ring is `count` entries at the start of our
        // mapping, which stays mapped until the ring is gone: `Pool` is
        // dropped after its `IoUring` (field order, explicit drops), or leaked.
        let register = |flags| unsafe {
            ring.submitter().register_buf_ring_with_flags(
                pool.base.as_ptr() as u64,
                tuning.bufs,
                BGID,
                flags,
            )
        };
        let want = incremental_is_safe();
        match register(if want { IOU_PBUF_RING_INC } else { 0 }) {
            Ok(()) => pool.ledger.incremental = want,
            // A kernel that refuses the flag (6.12 added it): whole buffers.
            Err(e) if want && e.raw_os_error() == Some(libc::EINVAL) => register(0)?,
            Err(e) => return Err(e),
        }
        for bid in 0..tuning.bufs {
            pool.publish(bid);
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

    /// Bytes `off..off + len` of buffer `bid`, which a receive filled (the
    /// caller's to read while its piece is held); empty if the range is not
    /// inside one of our buffers.
    pub(super) fn filled(&self, bid: u16, off: usize, len: usize) -> &[u8] {
        if !self.owns(bid) || off.checked_add(len).is_none_or(|e| e > self.size as usize) {
            return &[];
        }
        // SAFETY: the range lies inside buffer `bid` (checked above), inside
        // our mapping. The kernel filled it and writes a buffer only past
        // what it has filled (incremental consumption) or not at all until
        // we publish it again (which waits for every piece's release), so
        // it does not write these bytes while this borrow of the pool lives.
        unsafe { std::slice::from_raw_parts(self.buf(bid).add(off), len) }
    }

    /// True if `bid` names one of our buffers.
    pub(super) fn owns(&self, bid: u16) -> bool {
        self.ledger.owns(bid)
    }

    /// Buffers in the ring right now ([`Ledger::free`]).
    pub(super) fn free(&self) -> usize {
        self.ledger.free
    }

    /// Records a completion that used buffer `bid` ([`Ledger::take`]).
    pub(super) fn take(&mut self, bid: u16, len: usize, more: bool) -> Option<u32> {
        self.ledger.take(bid, len, more)
    }

    /// One more holder of buffer `bid`: a send in flight from it.
    pub(super) fn hold(&mut self, bid: u16) {
        self.ledger.hold(bid);
    }

    /// Lets go of one holder of buffer `bid`; the buffer goes back to the
    /// kernel once the kernel is done with it and nothing holds it.
    pub(super) fn release(&mut self, bid: u16) {
        if self.ledger.release(bid) {
            self.publish(bid);
        }
    }

    /// Gives buffer `bid` (whole, from its start) to the kernel.
    fn publish(&mut self, bid: u16) {
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
        self.ledger.published();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ring and pool of four 64-byte buffers, or `None` (SKIPPED)
    /// where io_uring is refused.
    fn pool() -> Option<(IoUring, Pool)> {
        let ring = match IoUring::new(8) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("SKIPPED: io_uring unavailable: {e}");
                return None;
            }
        };
        let tuning = Tuning {
            bufs: 4,
            buf_size: 64,
        };
        match Pool::new(&ring, tuning) {
            Ok(p) => Some((ring, p)),
            Err(e) => {
                eprintln!("SKIPPED: provided-buffer ring refused: {e}");
                None
            }
        }
    }

    #[test]
    fn pieces_of_one_buffer_follow_each_other_and_it_returns_after_the_last() {
        let Some((ring, mut p)) = pool() else {
            return;
        };
        assert_eq!(p.free(), 4);
        // Two pieces while the kernel keeps filling the buffer, then a last.
        assert_eq!(p.take(2, 10, true), Some(0));
        assert_eq!(p.take(2, 20, true), Some(10));
        assert_eq!(
            p.free(),
            4,
            "a buffer part-way through is still the kernel's"
        );
        assert_eq!(p.take(2, 34, false), Some(30));
        assert_eq!(p.free(), 3, "the kernel is done with it");
        p.release(2);
        p.release(2);
        assert_eq!(p.free(), 3, "one piece still holds it");
        p.release(2);
        assert_eq!(p.free(), 4, "back in the ring once the last piece goes");
        // Published again whole: the next piece starts at its beginning.
        assert_eq!(p.take(2, 5, false), Some(0));
        p.release(2);
        drop(ring);
    }

    #[test]
    fn an_empty_completion_leaves_an_incremental_buffer_with_the_kernel() {
        let Some((ring, mut p)) = pool() else {
            return;
        };
        assert_eq!(p.take(1, 0, false), Some(0));
        p.release(1);
        // Incremental: still the kernel's (not published twice); whole
        // buffers: out and back, so the count ends the same either way.
        assert_eq!(p.free(), 4);
        assert_eq!(p.take(1, 8, true), Some(0), "nothing was consumed");
        p.release(1);
        drop(ring);
    }

    #[test]
    fn a_buffer_not_ours_is_refused_and_never_published() {
        let Some((ring, mut p)) = pool() else {
            return;
        };
        assert_eq!(p.take(4, 1, false), None);
        p.release(4);
        assert_eq!(p.free(), 4);
        // Releasing more often than taken does not publish twice.
        assert_eq!(p.take(0, 64, false), Some(0));
        p.release(0);
        p.release(0);
        assert_eq!(p.free(), 4);
        drop(ring);
    }
}
