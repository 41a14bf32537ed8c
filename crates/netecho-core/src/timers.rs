//! Connection deadlines for the models that run their own event loop
//! (epoll, io_uring): one min-heap per worker, filed lazily.
//!
//! # The timer rule, the same in every model
//! A connection's idle or stall timeout fires at its deadline, as exactly as
//! the loop's wait allows (milliseconds), and never needs per-tick work over
//! all connections: traffic only stamps the connection core's clocks
//! ([`crate::contract::Conn`]); the heap holds one entry per connection, at the
//! earliest deadline it may have. When an entry comes due, the loop asks
//! the core ([`crate::contract::Conn::on_timer`]): if traffic moved the deadline
//! on, the connection is filed again at its new deadline, once per timeout
//! period at most. The loop sleeps until the heap's first entry.
//! (tokio arms one `Sleep` per connection by the same rule.)
//!
//! Replaced a hashed wheel with 250 ms ticks, which fired up to two ticks
//! late; a heap costs O(log n) per filing, and a connection is filed at
//! most once per timeout period plus once when echo starts waiting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Deadlines of connections named by keys `K` (slot and generation).
///
/// A connection that closes leaves its entry behind until it would have come
/// due (the idle timeout, 300 s by default); at a connection per request
/// that is millions of dead entries. [`Timers::forget`] counts them, and once
/// they outnumber the rest the heap is rebuilt without them, so it never
/// holds more than about twice the live entries (amortised O(1) per close).
///
/// An entry keeps its deadline as signed nanoseconds from the heap's own
/// epoch: 8 bytes where an `Instant` takes 16, exact both ways for ±292
/// years, so a key of two `u32` makes an entry 16 bytes. Every idle
/// connection that has echoed once has its entry (its stall deadline), so
/// that is server memory per connection.
#[derive(Debug)]
pub struct Timers<K> {
    /// What entries count from.
    epoch: Instant,
    heap: BinaryHeap<Entry<K>>,
    /// Entries of connections that closed, not yet dropped.
    stale: usize,
}

/// A heap entry: the deadline as nanoseconds from the epoch, and the key;
/// reversed, so the heap's top is the soonest.
type Entry<K> = Reverse<(i64, K)>;

/// Below this many entries a rebuild is not worth its pass.
const COMPACT_MIN: usize = 1024;

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            epoch: Instant::now(),
            heap: BinaryHeap::new(),
            stale: 0,
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// `at` as nanoseconds from the epoch (saturating past ±292 years).
    fn since_epoch(&self, at: Instant) -> i64 {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match at.checked_duration_since(self.epoch) {
            Some(d) => ns(d),
            None => -ns(self.epoch.duration_since(at)),
        }
    }

    /// The instant `since_epoch` made `ns` of.
    fn instant(&self, ns: i64) -> Instant {
        let d = Duration::from_nanos(ns.unsigned_abs());
        if ns >= 0 {
            self.epoch + d
        } else {
            self.epoch - d
        }
    }

    /// Files `key` at `at` unless it already has an entry due no later;
    /// `armed` is the connection's own note of its earliest entry.
    #[inline]
    pub fn file(&mut self, armed: &mut Option<Instant>, at: Instant, key: K) {
        if armed.is_none_or(|a| at < a) {
            self.push(at, key);
            *armed = Some(at);
        }
    }

    /// Adds an entry. Out of line: [`Timers::file`] runs at every turn of a
    /// connection and pushes about once per timeout period.
    #[inline(never)]
    fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((self.since_epoch(at), key)));
    }

    /// When the first entry comes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| self.instant(*at))
    }

    /// Takes the next entry due at `now` or before. The caller drops it if
    /// the connection is gone or its `armed` note differs (a sooner entry
    /// was filed and already handled), and otherwise clears `armed` and
    /// files the connection again if it lives on.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let now = self.since_epoch(now);
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self
                .heap
                .pop()
                .map(|Reverse((at, key))| (self.instant(at), key)),
            _ => None,
        }
    }

    /// The caller found the entry just popped dead (its connection closed):
    /// one fewer to count.
    pub fn dropped_stale(&mut self) {
        self.stale = self.stale.saturating_sub(1);
    }

    /// A connection whose note says `armed` closed: its entry is now dead.
    /// When dead entries are the majority, drops every entry whose key
    /// `live` no longer knows (one pass, then the heap's memory shrinks).
    pub fn forget(&mut self, armed: Option<Instant>, live: impl Fn(&K) -> bool) {
        if armed.is_some() {
            self.stale += 1;
        }
        if self.heap.len() >= COMPACT_MIN && self.stale * 2 > self.heap.len() {
            self.heap.retain(|Reverse((_, k))| live(k));
            self.heap.shrink_to_fit();
            self.stale = 0;
        }
    }

    /// Entries filed, live or stale.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is filed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
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
    fn a_deadline_comes_back_exactly_as_filed_even_before_the_epoch() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let ns = Duration::from_nanos;
        let early = t0.checked_sub(ns(1_234_567)).unwrap_or(t0);
        let (mut a, mut b) = (None, None);
        t.file(&mut a, early, 1u32);
        t.file(&mut b, t0 + Duration::from_secs(86_400) + ns(1), 2u32);
        assert_eq!(t.next_due(), Some(early));
        assert_eq!(t.pop_due(early), Some((early, 1)), "due at its own instant");
        assert_eq!(t.pop_due(t0), None);
        let late = b.unwrap();
        assert_eq!(t.pop_due(late), Some((late, 2)), "to the nanosecond");
    }

    #[test]
    fn an_entry_takes_16_bytes_with_a_key_of_two_u32() {
        let entry = std::mem::size_of::<Entry<(u32, u32)>>();
        assert_eq!(entry, 16, "a timer entry grew to {entry} bytes");
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

    #[test]
    fn entries_of_closed_connections_do_not_pile_up() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let mut live = std::collections::HashSet::new();
        // A connection per request for a long while: each one files its idle
        // deadline 300 s ahead, and closes long before it.
        for key in 0..100_000u32 {
            let mut armed = None;
            t.file(&mut armed, t0 + Duration::from_secs(300), key);
            live.insert(key);
            if key % 10 != 0 {
                live.remove(&key);
                t.forget(armed, |k| live.contains(k));
            }
            assert!(
                t.len() <= 2 * live.len() + COMPACT_MIN,
                "{} entries",
                t.len()
            );
        }
        // Every live connection still has its entry.
        let mut due = std::collections::HashSet::new();
        while let Some((_, k)) = t.pop_due(t0 + Duration::from_secs(301)) {
            due.insert(k);
        }
        assert!(live.iter().all(|k| due.contains(k)));
    }
}
