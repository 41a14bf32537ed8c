//! Datagram echoes a fault holds back (`latency`, `jitter`, `reorder`):
//! kept in time order per UDP worker and sent when due. Bounded: past
//! [`MAX_HELD`] a new one is dropped rather than kept (counted as a `drop`
//! fault), so a flood cannot grow the server's memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Instant;

/// Most echoes held at once by one worker.
pub(crate) const MAX_HELD: usize = 4096;

/// One held echo: (due, arrival order, payload, destination); the order
/// keeps echoes due at the same time in the order they came.
type Entry = (Instant, u64, Vec<u8>, SocketAddr);

/// The held echoes of one worker.
#[derive(Debug, Default)]
pub(crate) struct Held {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Held {
    /// Holds `payload` for `to` until `due`; false if full (not kept).
    pub(crate) fn hold(&mut self, due: Instant, payload: &[u8], to: SocketAddr) -> bool {
        if self.heap.len() >= MAX_HELD {
            return false;
        }
        self.seq += 1;
        self.heap
            .push(Reverse((due, self.seq, payload.to_vec(), to)));
        true
    }

    /// When the first held echo is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, ..))| *due)
    }

    /// The next echo due at `now` or before.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Vec<u8>, SocketAddr)> {
        match self.heap.peek() {
            Some(Reverse((due, ..))) if *due <= now => {
                self.heap.pop().map(|Reverse((_, _, p, to))| (p, to))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn echoes_come_out_in_due_order_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut h = Held::default();
        assert!(h.hold(t0 + Duration::from_millis(20), b"late", to));
        assert!(h.hold(t0 + Duration::from_millis(10), b"soon", to));
        assert_eq!(h.next_due(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(h.pop_due(t0), None);
        let later = t0 + Duration::from_millis(30);
        assert_eq!(h.pop_due(later).unwrap().0, b"soon");
        assert_eq!(h.pop_due(later).unwrap().0, b"late");
        for _ in 0..MAX_HELD {
            assert!(h.hold(t0, b"x", to));
        }
        assert!(!h.hold(t0, b"x", to));
    }
}
