//! Connection deadlines for the models that run their own event loop
//! (epoll, io_uring): one min-heap per worker, filed lazily.
//!
//! # The timer rule, the same in every model
//! A connection's idle or stall timeout fires at its deadline, as exactly as
//! the loop's wait allows (milliseconds), and never needs per-tick work over
//! all connections: traffic only stamps the connection core's clocks
//! ([`super::conn::Conn`]); the heap holds one entry per connection, at the
//! earliest deadline it may have. When an entry comes due, the loop asks
//! the core ([`super::conn::Conn::on_timer`]): if traffic moved the deadline
//! on, the connection is filed again at its new deadline, once per timeout
//! period at most. The loop sleeps until the heap's first entry.
//! (tokio arms one `Sleep` per connection by the same rule.)
//!
//! Replaced a hashed wheel with 250 ms ticks, which fired up to two ticks
//! late; a heap costs O(log n) per filing, and a connection is filed at
//! most once per timeout period plus once when echo starts waiting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines of connections named by keys `K` (slot and generation).
#[derive(Debug)]
pub(crate) struct Timers<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// Files `key` at `at` unless it already has an entry due no later;
    /// `armed` is the connection's own note of its earliest entry.
    pub(crate) fn file(&mut self, armed: &mut Option<Instant>, at: Instant, key: K) {
        if armed.is_none_or(|a| at < a) {
            self.heap.push(Reverse((at, key)));
            *armed = Some(at);
        }
    }

    /// When the first entry comes due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the next entry due at `now` or before. The caller drops it if
    /// the connection is gone or its `armed` note differs (a sooner entry
    /// was filed and already handled), and otherwise clears `armed` and
    /// files the connection again if it lives on.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Entries filed, live or stale.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is filed.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_come_due_in_deadline_order_and_not_before() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::default();
        let (mut a, mut b) = (None, None);
        t.file(&mut a, t0 + ms(30), 1u32);
        t.file(&mut b, t0 + ms(10), 2u32);
        assert_eq!(t.next_due(), Some(t0 + ms(10)));
        assert_eq!(t.pop_due(t0 + ms(9)), None);
        assert_eq!(t.pop_due(t0 + ms(40)), Some((t0 + ms(10), 2)));
        assert_eq!(t.pop_due(t0 + ms(40)), Some((t0 + ms(30), 1)));
        assert!(t.is_empty());
    }

    #[test]
    fn a_later_deadline_files_nothing_a_sooner_one_files_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Timers::default();
        let mut armed = None;
        t.file(&mut armed, t0 + s(300), 7u32);
        // Traffic moved the idle deadline on: the entry stays, fires early,
        // and the caller files again then.
        t.file(&mut armed, t0 + s(301), 7);
        assert_eq!(t.len(), 1);
        // Echo waits: the stall deadline is sooner.
        t.file(&mut armed, t0 + s(60), 7);
        t.file(&mut armed, t0 + s(61), 7);
        assert_eq!(t.len(), 2);
        assert_eq!(armed, Some(t0 + s(60)));
        // The sooner entry is the live one; the older is recognised as stale.
        let (at, _) = t.pop_due(t0 + s(1000)).unwrap();
        assert_eq!(Some(at), armed);
        let (at, _) = t.pop_due(t0 + s(1000)).unwrap();
        assert_ne!(Some(at), armed);
    }
}
