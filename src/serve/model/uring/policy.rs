//! How a buffer-path connection receives, as pure code: one multishot
//! receive while its client keeps up, single receives of one buffer each
//! once it has been paused for backpressure, waiting after the ring ran
//! dry, and when it must spill its buffers for the others. The worker
//! turns the answers into requests (`plain.rs`); nothing here builds one.

/// What to submit for a connection's next receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arm {
    /// Nothing now.
    Nothing,
    /// One receive of at most this many bytes into one provided buffer.
    Single(u32),
    /// One multishot receive: a buffer per arrival until cancelled.
    Multi,
}

/// What the receive policy is told about a connection whose receive is
/// not in flight.
#[derive(Debug, Clone, Copy)]
pub(super) struct Want {
    /// Bytes the core lets it read now (0: paused, or the FIN was read).
    pub(super) read: usize,
    /// Nothing held and no send in flight: every byte read was echoed.
    pub(super) drained: bool,
    /// Provided buffers it holds.
    pub(super) bufs: usize,
    /// Some buffer is back in the ring.
    pub(super) buffers_back: bool,
    /// It is about to move to its pipe: it takes no more buffers.
    pub(super) switching: bool,
}

/// A connection's receive mode and its part in sharing the ring.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Receive {
    /// The last receive ended with ENOBUFS: re-arm once a buffer is back.
    pub(super) starved: bool,
    /// Receive one buffer at a time. Set when the connection is paused for
    /// backpressure: a client that sends faster than it reads would otherwise
    /// take a burst of buffers at every multishot re-arm, and single
    /// receives keep it to `held_cap`. Cleared once the client has caught up.
    single: bool,
    /// In single mode, the last receive found the socket's queue empty and
    /// everything is echoed: a multishot receive would not burst now.
    caught_up: bool,
    /// Paused with buffers held and asked to spill them: done as soon as
    /// no send is in flight (one is cancelled for it).
    pub(super) spill_wanted: bool,
    /// In the worker's list of connections that may be asked to spill.
    pub(super) listed: bool,
}

impl Receive {
    /// Its receive in flight is cancelled for backpressure: from now on,
    /// one buffer at a time.
    pub(super) fn paused(&mut self) {
        self.single = true;
    }

    /// A receive brought `n` bytes at offset `off` of a `size`-byte buffer.
    /// A single receive that did not fill its buffer found the socket's
    /// queue empty: the client is not ahead of us.
    pub(super) fn received(&mut self, off: u32, n: u32, size: u32) {
        self.caught_up = self.single && off.saturating_add(n) < size;
    }

    /// What to submit, its receive not being in flight; `held_cap` buffers
    /// at most for single receives, of at most `buf_size` bytes each.
    pub(super) fn arm(&mut self, w: Want, held_cap: usize, buf_size: u32) -> Arm {
        // The client has caught up: back to one multishot receive, which
        // costs one submission for many messages instead of one each.
        if w.drained && self.single && self.caught_up {
            self.single = false;
            self.caught_up = false;
        }
        if w.read == 0 || (self.starved && !w.buffers_back) || w.switching {
            return Arm::Nothing;
        }
        let arm = if self.single && w.bufs < held_cap {
            // No more than the room left: a spilling connection copies
            // what it receives into its spill's spare room.
            Arm::Single(buf_size.min(u32::try_from(w.read).unwrap_or(u32::MAX)))
        } else if !self.single && w.drained {
            // Multishot: re-armed only once the echo is all sent.
            Arm::Multi
        } else {
            Arm::Nothing
        };
        if arm != Arm::Nothing {
            self.starved = false;
        }
        arm
    }

    /// Whether to list it among the connections asked to spill when the
    /// ring runs low: it holds buffers while its reading is paused
    /// (`paused`) or while its echo waits for the client (`sending`).
    pub(super) fn should_list(&self, bufs: usize, paused: bool, sending: bool) -> bool {
        !self.listed && !self.spill_wanted && bufs > 0 && (paused || sending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u32 = 1024;
    const CAP: usize = 2;

    fn want(read: usize, drained: bool, bufs: usize) -> Want {
        Want {
            read,
            drained,
            bufs,
            buffers_back: true,
            switching: false,
        }
    }

    #[test]
    fn multishot_while_the_client_keeps_up_and_only_once_drained() {
        let mut r = Receive::default();
        assert_eq!(r.arm(want(100, true, 0), CAP, SIZE), Arm::Multi);
        assert_eq!(
            r.arm(want(100, false, 1), CAP, SIZE),
            Arm::Nothing,
            "echo still held: re-armed once it is sent"
        );
        assert_eq!(r.arm(want(0, true, 0), CAP, SIZE), Arm::Nothing);
    }

    #[test]
    fn a_paused_connection_takes_one_buffer_at_a_time_up_to_the_cap() {
        let mut r = Receive::default();
        r.paused();
        assert_eq!(r.arm(want(100, false, 1), CAP, SIZE), Arm::Single(100));
        assert_eq!(r.arm(want(1 << 20, false, 1), CAP, SIZE), Arm::Single(SIZE));
        assert_eq!(r.arm(want(100, false, CAP), CAP, SIZE), Arm::Nothing);
        // Caught up (a receive short of its buffer) and drained: multishot.
        r.received(0, 10, SIZE);
        assert_eq!(r.arm(want(100, true, 0), CAP, SIZE), Arm::Multi);
    }

    #[test]
    fn a_full_buffer_means_the_client_is_still_ahead() {
        let mut r = Receive::default();
        r.paused();
        r.received(SIZE - 10, 10, SIZE);
        assert_eq!(r.arm(want(100, true, 0), CAP, SIZE), Arm::Single(100));
    }

    #[test]
    fn a_starved_connection_waits_for_a_buffer_to_come_back() {
        let mut r = Receive {
            starved: true,
            ..Receive::default()
        };
        let dry = Want {
            buffers_back: false,
            ..want(100, true, 0)
        };
        assert_eq!(r.arm(dry, CAP, SIZE), Arm::Nothing);
        assert!(r.starved);
        assert_eq!(r.arm(want(100, true, 0), CAP, SIZE), Arm::Multi);
        assert!(!r.starved, "armed again: no longer waiting");
    }

    #[test]
    fn a_connection_about_to_splice_takes_no_buffer() {
        let mut r = Receive::default();
        let w = Want {
            switching: true,
            ..want(100, true, 0)
        };
        assert_eq!(r.arm(w, CAP, SIZE), Arm::Nothing);
    }

    #[test]
    fn only_holders_of_buffers_that_wait_are_listed_once() {
        let mut r = Receive::default();
        assert!(!r.should_list(0, true, true), "holds nothing");
        assert!(!r.should_list(1, false, false), "reading and nothing waits");
        assert!(r.should_list(1, true, false), "paused");
        assert!(
            r.should_list(1, false, true),
            "its echo waits for the client"
        );
        r.listed = true;
        assert!(!r.should_list(1, true, false), "listed already");
        r.listed = false;
        r.spill_wanted = true;
        assert!(!r.should_list(1, true, false), "already asked to spill");
    }
}
