//! The provided-buffer ring's bookkeeping, as pure code: which buffers the
//! kernel still has, where its next bytes go in each (incremental
//! consumption), who holds each buffer, and when one goes back to the
//! kernel. [`super::bufs::Pool`] owns the memory and publishes what this
//! ledger says; nothing here touches a ring, so it is tested without one.

/// One buffer's bookkeeping ([`Ledger::take`], [`Ledger::release`]).
#[derive(Debug, Clone, Copy, Default)]
struct BufState {
    /// Bytes the kernel has filled so far: the next piece starts here.
    next: u32,
    /// Holders: pieces taken and not yet released, and sends in flight
    /// from it ([`Ledger::hold`]).
    refs: u32,
    /// The kernel has finished with it: it is out of the ring, and goes
    /// back once nothing holds it.
    out: bool,
}

/// Per-buffer state of a provided-buffer ring of `count` buffers.
#[derive(Debug)]
pub(super) struct Ledger {
    /// The kernel consumes buffers incrementally (`IOU_PBUF_RING_INC`): a
    /// 64-byte message takes 64 bytes of a buffer, not all of it.
    pub(super) incremental: bool,
    /// Buffers in the ring right now (given to the kernel, not finished by
    /// it): a buffer the kernel is part-way through counts as in the ring.
    pub(super) free: usize,
    state: Vec<BufState>,
}

impl Ledger {
    /// `count` buffers, none yet given to the kernel.
    pub(super) fn new(count: u16, incremental: bool) -> Ledger {
        Ledger {
            incremental,
            free: 0,
            state: vec![BufState::default(); usize::from(count)],
        }
    }

    /// Buffers in the ring, in all.
    pub(super) fn count(&self) -> usize {
        self.state.len()
    }

    /// True if `bid` names one of our buffers: a kernel result is checked
    /// before it is used as an index.
    pub(super) fn owns(&self, bid: u16) -> bool {
        usize::from(bid) < self.state.len()
    }

    /// More than half of the ring is out of the kernel's hands.
    pub(super) fn low(&self) -> bool {
        self.free <= self.count() / 2
    }

    /// Records a completion that used buffer `bid`: `len` bytes, and
    /// `more` if the kernel keeps filling the rest of it
    /// (`IORING_CQE_F_BUF_MORE`). Returns where in the buffer those bytes
    /// start, or `None` if `bid` is not ours. The piece holds the buffer
    /// until [`Ledger::release`].
    pub(super) fn take(&mut self, bid: u16, len: usize, more: bool) -> Option<u32> {
        let incremental = self.incremental;
        let st = self.state.get_mut(usize::from(bid))?;
        let at = st.next;
        st.next = st
            .next
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        st.refs += 1;
        // An incremental ring does not use a buffer up on an empty
        // completion (socket receives never post one with a buffer; this is
        // defence): it stays the kernel's, whatever the flag says.
        let empty = incremental && len == 0;
        let done = !more && !empty;
        if done && !st.out {
            st.out = true;
            self.free = self.free.saturating_sub(1);
        }
        Some(at)
    }

    /// One more holder of buffer `bid`, already held by a piece: a send
    /// from it, which lets go with [`Ledger::release`] at its completion.
    pub(super) fn hold(&mut self, bid: u16) {
        if let Some(st) = self.state.get_mut(usize::from(bid)) {
            st.refs += 1;
        }
    }

    /// Lets go of one holder of buffer `bid`. True when the buffer must
    /// now go back to the kernel: it is done with it and nothing holds it.
    #[must_use]
    pub(super) fn release(&mut self, bid: u16) -> bool {
        let Some(st) = self.state.get_mut(usize::from(bid)) else {
            return false;
        };
        st.refs = st.refs.saturating_sub(1);
        if st.refs == 0 && st.out {
            *st = BufState::default();
            return true;
        }
        false
    }

    /// Buffer `bid` was given (whole, from its start) to the kernel.
    pub(super) fn published(&mut self) {
        self.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger of four buffers, all given to the kernel, as the pool
    /// leaves it at start.
    fn ledger(incremental: bool) -> Ledger {
        let mut l = Ledger::new(4, incremental);
        for _ in 0..4 {
            l.published();
        }
        l
    }

    /// Releases `bid` and, like the pool, publishes it when told to.
    fn release(l: &mut Ledger, bid: u16) {
        if l.release(bid) {
            l.published();
        }
    }

    #[test]
    fn pieces_of_one_buffer_follow_each_other_and_it_returns_after_the_last() {
        let mut l = ledger(true);
        assert_eq!(l.free, 4);
        assert_eq!(l.take(2, 10, true), Some(0));
        assert_eq!(l.take(2, 20, true), Some(10));
        assert_eq!(l.free, 4, "a buffer part-way through is still the kernel's");
        assert_eq!(l.take(2, 34, false), Some(30));
        assert_eq!(l.free, 3, "the kernel is done with it");
        release(&mut l, 2);
        release(&mut l, 2);
        assert_eq!(l.free, 3, "one piece still holds it");
        release(&mut l, 2);
        assert_eq!(l.free, 4, "back in the ring once the last piece goes");
        assert_eq!(l.take(2, 5, false), Some(0), "published again whole");
    }

    #[test]
    fn a_send_in_flight_keeps_its_buffer_out_of_the_ring() {
        let mut l = ledger(false);
        assert_eq!(l.take(1, 64, false), Some(0));
        l.hold(1);
        assert!(!l.release(1), "the piece is echoed, the send not complete");
        assert_eq!(l.free, 3);
        assert!(l.release(1), "the send completed: back to the kernel");
    }

    #[test]
    fn an_empty_completion_leaves_an_incremental_buffer_with_the_kernel() {
        let mut l = ledger(true);
        assert_eq!(l.take(1, 0, false), Some(0));
        assert!(!l.release(1), "still the kernel's: never published twice");
        assert_eq!(l.free, 4);
        assert_eq!(l.take(1, 8, true), Some(0), "nothing was consumed");
        // Whole buffers: an empty completion uses the buffer up.
        let mut l = ledger(false);
        assert_eq!(l.take(1, 0, false), Some(0));
        assert_eq!(l.free, 3);
        assert!(l.release(1));
    }

    #[test]
    fn a_buffer_not_ours_is_refused_and_never_published() {
        let mut l = ledger(false);
        assert_eq!(l.take(4, 1, false), None);
        assert!(!l.release(4));
        l.hold(4);
        assert_eq!(l.free, 4);
        assert_eq!(l.take(0, 64, false), Some(0));
        assert!(l.release(0));
        assert!(!l.release(0), "released more often than taken: once only");
    }

    #[test]
    fn the_ring_is_low_once_half_of_it_is_out() {
        let mut l = ledger(false);
        assert!(!l.low());
        l.take(0, 1, false);
        assert!(!l.low());
        l.take(1, 1, false);
        assert!(l.low());
    }
}
