//! UDP echoes that are not the one awaited, as `ping --udp` and `bench
//! --udp` both count them: each socket has one request in flight, numbered
//! upward, and an echo that matches one of its last [`WINDOW`] earlier
//! requests is *late* (that request had timed out, and was counted lost)
//! or *duplicated* (it had been answered: a path or server sent it twice).
//! An echo like none of them is a mismatch. Pure bookkeeping, no I/O.

/// How many earlier requests of one socket a stray echo is looked for
/// among: an echo of an older one is a mismatch.
pub(crate) const WINDOW: u64 = 64;

/// What an echo of an earlier request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stray {
    /// Its request timed out before it came.
    Late,
    /// Its request had been answered already.
    Duplicated,
}

/// The last [`WINDOW`] requests of one socket and which were answered.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Recent {
    /// The request after the last one that ended.
    next: u64,
    /// Bit k: request `next - 1 - k` was answered.
    answered: u64,
}

impl Recent {
    /// Request `n` (after every one that ended before) ended, answered by
    /// its echo or not (timed out, mismatched).
    pub(crate) fn ended(&mut self, n: u64, answered: bool) {
        let gap = (n + 1).saturating_sub(self.next);
        self.answered = self.answered.checked_shl(gap as u32).unwrap_or(0) | u64::from(answered);
        self.next = self.next.max(n + 1);
    }

    /// The requests an echo may be a stray of while request `current` is
    /// in flight, newest first.
    pub(crate) fn earlier(current: u64) -> impl Iterator<Item = u64> {
        (current.saturating_sub(WINDOW)..current).rev()
    }

    /// What an echo of request `r`, one of [`Recent::earlier`], is.
    pub(crate) fn stray(&self, r: u64) -> Stray {
        let k = self.next.saturating_sub(1).saturating_sub(r);
        if r < self.next && k < WINDOW && self.answered >> k & 1 == 1 {
            Stray::Duplicated
        } else {
            Stray::Late
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_of_an_answered_request_is_a_duplicate_else_late() {
        let mut r = Recent::default();
        for n in 1..=100 {
            // Every third request timed out.
            r.ended(n, n % 3 != 0);
        }
        assert_eq!(r.stray(100), Stray::Duplicated);
        assert_eq!(r.stray(99), Stray::Late);
        assert_eq!(r.stray(98), Stray::Duplicated);
        assert_eq!(r.stray(100 - WINDOW + 2), Stray::Duplicated);
        let window: Vec<u64> = Recent::earlier(101).collect();
        assert_eq!(window.len() as u64, WINDOW);
        assert_eq!((window[0], window[63]), (100, 101 - WINDOW));
        assert_eq!(Recent::earlier(3).collect::<Vec<_>>(), vec![2, 1, 0]);
    }

    #[test]
    fn a_gap_in_the_numbers_forgets_what_it_skipped() {
        let mut r = Recent::default();
        r.ended(0, true);
        r.ended(5, false);
        assert_eq!(r.stray(0), Stray::Duplicated);
        assert_eq!(r.stray(3), Stray::Late);
        r.ended(500, true);
        assert_eq!(r.stray(0), Stray::Late, "out of the window");
        assert_eq!(r.stray(500), Stray::Duplicated);
    }
}
