//! `--max-conns-per-ip`: how many connections each client address has open
//! now, counted in memory shared by every process of the server (the forking
//! models count in their children).
//!
//! Each slot is one atomic word holding an address's key and its count,
//! changed only by compare-and-swap, so:
//! - no lock: a process killed at any instant (SIGKILL at the drain
//!   deadline, a crash) leaves every word whole, and nobody waits on it;
//! - an address whose count falls to zero frees its slot in the same CAS,
//!   so the table holds only addresses with connections open now, however
//!   many addresses came and went before;
//! - an address lives in one of the [`WINDOW`] slots from its hashed home
//!   slot, and every operation reads that window and nothing else: O(1)
//!   whatever the history. (The table this replaces kept every key forever,
//!   so after 4,096 distinct addresses each new one scanned all slots under
//!   a spinlock a dead process could leave held.)
//!
//! Concurrent first connections from one address may land it in two slots
//! of its window. Counts are then summed over the window, admissions go to
//! the first slot and releases to the last, and an inserter that finds the
//! address elsewhere after its insert gives its count back and tries again;
//! so the limit is exact, and a duplicate never grows and drains away.

use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in the table: this many client addresses with connections open at
/// once are each limited. A new address whose window is full is refused:
/// a table an attacker filled must not switch the limit off (it did, when a
/// full window meant "not limited": one idle connection from each of about
/// 4,200 addresses, and new addresses were unlimited). 16,384 slots of 8
/// bytes: filling them takes more open connections than a forking model
/// serves at once.
pub(crate) const PER_IP_SLOTS: usize = 16_384;
/// IPv6 clients are counted per prefix of this many bits unless
/// `--per-ip-v6-prefix` says otherwise: one host has a whole /64 to pick
/// source addresses from.
pub(crate) const V6_PREFIX_BITS: u32 = 64;
/// Slots an address may occupy, from its home slot on.
pub(crate) const WINDOW: usize = 16;
/// Low bits of a word: the count.
const COUNT_BITS: u32 = 24;
/// The largest count a word holds; a larger `--max-conns-per-ip` acts as this.
pub(crate) const MAX_COUNT: u64 = (1 << COUNT_BITS) - 1;
/// An empty slot.
const EMPTY: u64 = 0;
/// The table's shape, part of [`crate::serve::service::stats::Stats::layout`]:
/// a process reading another's table must find addresses where it put them.
pub(crate) const SHAPE: (usize, usize, u32) = (PER_IP_SLOTS, WINDOW, COUNT_BITS);

/// The table, `#[repr(C)]` inside the shared [`crate::serve::service::stats::Stats`]
/// mapping. All-zero is a valid, empty table (with a zero hash seed).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct PerIp {
    /// Secret mixed into every address's hash, chosen when the server
    /// starts and shared with its children, so a client cannot pick
    /// addresses that crowd one window.
    seed: AtomicU64,
    /// `--per-ip-v6-prefix`: IPv6 clients are counted per prefix of this
    /// many bits (0, a fresh table's value, stands for [`V6_PREFIX_BITS`]).
    v6_prefix: AtomicU64,
    /// `key << COUNT_BITS | count`, or [`EMPTY`]; a key is never zero, and
    /// a count is never zero in a used slot.
    slots: [AtomicU64; PER_IP_SLOTS],
}

impl Default for PerIp {
    fn default() -> Self {
        let t = PerIp {
            seed: AtomicU64::new(0),
            v6_prefix: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(EMPTY)),
        };
        t.reseed();
        t
    }
}

/// Bits of an [`IpKey`] that hold the home slot.
const HOME_BITS: u32 = 14;
const _: () = assert!(PER_IP_SLOTS <= 1 << HOME_BITS);

/// Where a client is counted: its key and home slot in the table, packed
/// in one word (`key << HOME_BITS | home`; the key is never zero, so
/// neither is the word). A connection's [`crate::serve::admission::Permit`]
/// keeps this rather than the client's address: 8 bytes instead of an
/// `IpAddr`'s 17, and the release hashes nothing. Valid for the table (its
/// seed and IPv6 prefix) it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpKey(NonZeroU64);

impl IpKey {
    fn new(key: u64, home: usize) -> IpKey {
        // The key has 64 - COUNT_BITS bits and its low bit set; the home
        // slot is below PER_IP_SLOTS: both fit, and the word is not zero.
        IpKey(NonZeroU64::new(key << HOME_BITS | home as u64).expect("a key is never zero"))
    }

    /// The word, for a holder that packs flags beside it: below 2^54.
    pub(crate) fn get(self) -> u64 {
        self.0.get()
    }

    /// The key [`IpKey::get`] gave (`None` for 0).
    pub(crate) fn from_word(w: u64) -> Option<IpKey> {
        NonZeroU64::new(w).map(IpKey)
    }

    fn parts(self) -> (u64, usize) {
        let w = self.0.get();
        (w >> HOME_BITS, (w & ((1 << HOME_BITS) - 1)) as usize)
    }
}

/// Where an address's words are, in window order.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The first slot holding the key, and its word.
    first: Option<(usize, u64)>,
    /// The last slot holding the key, and its word.
    last: Option<(usize, u64)>,
    /// The key's count summed over the window.
    sum: u64,
    /// The first empty slot.
    free: Option<usize>,
}

impl PerIp {
    /// Picks a new hash seed. Only while the table is empty: the parent
    /// calls it once, before any child exists.
    pub(crate) fn reseed(&self) {
        let seed = RandomState::new().hash_one(std::process::id());
        self.seed.store(seed, Ordering::Relaxed);
    }

    /// Counts IPv6 clients per prefix of `bits` (1 to 128) from now on.
    /// Only while the table is empty: the parent calls it once, at start.
    pub(crate) fn set_v6_prefix(&self, bits: u8) {
        self.v6_prefix
            .store(u64::from(bits.clamp(1, 128)), Ordering::Relaxed);
    }

    /// The IPv6 prefix length clients are counted by.
    fn v6_bits(&self) -> u32 {
        match self.v6_prefix.load(Ordering::Relaxed) {
            0 => V6_PREFIX_BITS,
            b => b.min(128) as u32,
        }
    }

    /// The address's key (never zero) and home slot. An IPv4-mapped IPv6
    /// address is the IPv4 client it stands for; an IPv6 address is its
    /// prefix of [`PerIp::v6_bits`].
    fn locate(&self, ip: IpAddr) -> (u64, usize) {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(
                || {
                    // 1 to 128 bits: the shift is 0 to 127.
                    let mask = u128::MAX << (128 - self.v6_bits());
                    IpAddr::V6((u128::from(v6) & mask).into())
                },
                IpAddr::V4,
            ),
            v4 => v4,
        };
        // SipHash with fixed keys and a secret first word: the same in every
        // process of the server, unpredictable outside it.
        let mut h = DefaultHasher::new();
        self.seed.load(Ordering::Relaxed).hash(&mut h);
        ip.hash(&mut h);
        let h = h.finish();
        let key = (h >> COUNT_BITS) | 1;
        (key, (h as usize) % PER_IP_SLOTS)
    }

    fn slot(&self, home: usize, k: usize) -> (usize, &AtomicU64) {
        let i = (home + k) % PER_IP_SLOTS;
        (i, &self.slots[i])
    }

    /// Reads the address's window once.
    fn scan(&self, key: u64, home: usize) -> Seen {
        let mut seen = Seen {
            first: None,
            last: None,
            sum: 0,
            free: None,
        };
        for k in 0..WINDOW {
            let (i, slot) = self.slot(home, k);
            let w = slot.load(Ordering::Acquire);
            if w == EMPTY {
                seen.free.get_or_insert(i);
            } else if w >> COUNT_BITS == key {
                seen.first.get_or_insert((i, w));
                seen.last = Some((i, w));
                seen.sum += w & MAX_COUNT;
            }
        }
        seen
    }

    /// Counts one more connection from `ip` unless it already has `max`.
    pub(crate) fn admit(&self, ip: IpAddr, max: u64) -> bool {
        self.admit_racing(ip, max, || {})
    }

    /// [`PerIp::admit`], running `race` between inserting a new address and
    /// re-reading its window: what another process may do at that instant,
    /// for the tests to do deterministically.
    fn admit_racing(&self, ip: IpAddr, max: u64, mut race: impl FnMut()) -> bool {
        let max = max.min(MAX_COUNT);
        let (key, home) = self.locate(ip);
        loop {
            let seen = self.scan(key, home);
            if seen.sum >= max {
                return false;
            }
            if let Some((i, w)) = seen.first {
                if cas(&self.slots[i], w, w + 1) {
                    return true;
                }
                continue;
            }
            let Some(i) = seen.free else {
                // A full window refuses the newcomer: it cannot be counted,
                // and an uncounted address would be unlimited.
                return false;
            };
            if !cas(&self.slots[i], EMPTY, key << COUNT_BITS | 1) {
                continue;
            }
            race();
            // Did another process insert the same address meanwhile? Then
            // back off: give one count back (to the last slot, which may be
            // ours: counts are interchangeable) and count again, against
            // the limit. Of two racing inserters the earlier one, whose
            // re-read came before the other's insert, keeps its count.
            let again = self.scan(key, home);
            let ours_alone =
                again.first.map(|(j, _)| j) == Some(i) && again.last.map(|(j, _)| j) == Some(i);
            if ours_alone {
                return true;
            }
            self.release(ip);
        }
    }

    /// Gives back a connection counted by [`PerIp::admit`]; frees the slot
    /// when it was the address's last.
    pub(crate) fn release(&self, ip: IpAddr) {
        self.release_key(self.key(ip));
    }

    /// Where `ip` is counted, for a later [`PerIp::release_key`].
    pub(crate) fn key(&self, ip: IpAddr) -> IpKey {
        let (key, home) = self.locate(ip);
        IpKey::new(key, home)
    }

    /// [`PerIp::release`] of the address `k` was made from.
    pub(crate) fn release_key(&self, k: IpKey) {
        let (key, home) = k.parts();
        loop {
            let Some((i, w)) = self.scan(key, home).last else {
                // Not counted: a release without an admission, harmless.
                return;
            };
            let next = if w & MAX_COUNT <= 1 { EMPTY } else { w - 1 };
            if cas(&self.slots[i], w, next) {
                return;
            }
        }
    }

    /// Connections counted for `ip` now.
    pub(crate) fn count(&self, ip: IpAddr) -> u64 {
        let (key, home) = self.locate(ip);
        self.scan(key, home).sum
    }

    /// Addresses with connections counted now (slots in use), for metrics.
    pub(crate) fn tracked(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != EMPTY)
            .count()
    }
}

/// One compare-and-swap; AcqRel so that what a process read of the table
/// before changing it is ordered with what others changed.
fn cas(slot: &AtomicU64, old: u64, new: u64) -> bool {
    slot.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn v4(i: u32) -> IpAddr {
        let [_, a, b, c] = (i + 0x0001_0000).to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(127, a, b, c))
    }

    #[test]
    fn per_ip_limit_counts_each_address_apart() {
        let t = PerIp::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert!(t.admit(a, 2));
        assert!(t.admit(a_mapped, 2), "mapped v4 is the same client");
        assert!(!t.admit(a, 2));
        assert!(t.admit(b, 2));
        assert_eq!(t.count(a), 2);
        t.release(a);
        assert!(t.admit(a, 2));
        assert_eq!(t.count(b), 1);
    }

    #[test]
    fn a_key_releases_what_its_address_would() {
        let t = PerIp::default();
        let a = v4(7);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for ip in [a, v6] {
            assert!(t.admit(ip, 2));
            assert!(t.admit(ip, 2));
            let k = t.key(ip);
            assert_eq!(k, t.key(ip), "the same address, the same key");
            assert!(k.get() < 1 << 54, "room for a holder's flags");
            assert_eq!(IpKey::from_word(k.get()), Some(k));
            t.release_key(k);
            assert_eq!(t.count(ip), 1);
            t.release_key(k);
            assert_eq!(t.count(ip), 0);
        }
        assert_eq!(t.tracked(), 0);
        let other: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(t.key(v6), t.key(other), "one /64, one client");
        assert_ne!(t.key(a), t.key(v4(8)));
    }

    #[test]
    fn a_slot_is_freed_when_its_count_reaches_zero() {
        let t = PerIp::default();
        let a = v4(1);
        assert!(t.admit(a, 3));
        assert!(t.admit(a, 3));
        assert_eq!(t.tracked(), 1);
        t.release(a);
        assert_eq!(t.tracked(), 1);
        t.release(a);
        assert_eq!(t.tracked(), 0, "freed at zero");
        t.release(a);
        assert_eq!(t.count(a), 0, "an extra release is harmless");
    }

    #[test]
    fn ten_thousand_addresses_leave_the_table_empty_and_the_limit_exact() {
        let t = PerIp::default();
        for i in 0..10_000 {
            let ip = v4(i);
            assert!(t.admit(ip, 1), "address {i}");
            assert!(!t.admit(ip, 1), "address {i}: the limit still holds");
            t.release(ip);
            assert_eq!(t.tracked(), 0, "address {i}");
        }
        // With 1,000 open at once the table holds exactly those.
        for i in 0..1000 {
            assert!(t.admit(v4(20_000 + i), 1));
        }
        assert_eq!(t.tracked(), 1000);
        let new = v4(30_000);
        assert!(t.admit(new, 1), "the 11,001st new address");
        assert!(!t.admit(new, 1));
    }

    #[test]
    fn a_full_window_refuses_newcomers_and_releases_stay_balanced() {
        let t = PerIp::default();
        // More addresses open at once than slots: some are refused.
        let n = PER_IP_SLOTS as u32 + 500;
        let admitted: Vec<u32> = (0..n).filter(|&i| t.admit(v4(i), 1)).collect();
        let tracked = t.tracked();
        assert_eq!(admitted.len(), tracked, "every admitted address is counted");
        assert!(
            tracked > PER_IP_SLOTS * 3 / 4,
            "the table is used: {tracked}"
        );
        // Whoever got in is still held to the limit.
        assert!(admitted.iter().all(|&i| !t.admit(v4(i), 1)));
        for i in admitted {
            t.release(v4(i));
        }
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn an_ipv6_client_is_limited_per_slash_64() {
        let t = PerIp::default();
        let host =
            |low: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, low));
        assert!(t.admit(host(1), 2));
        assert!(t.admit(host(2), 2));
        assert!(
            !t.admit(host(3), 2),
            "a third address of the /64 is over the limit"
        );
        let other = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(t.admit(other, 2), "another /64 is another client");
    }

    #[test]
    fn threads_racing_on_one_address_never_exceed_the_limit_or_leak() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 20_000;
        const MAX: u64 = 3;
        let t = Arc::new(PerIp::default());
        let ip = v4(7);
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut admitted = 0;
                    for _ in 0..ROUNDS {
                        if t.admit(ip, MAX) {
                            admitted += 1;
                            assert!(t.count(ip) <= MAX, "over the limit");
                            t.release(ip);
                        }
                    }
                    admitted
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(admitted > 0);
        assert_eq!(t.count(ip), 0);
        assert_eq!(t.tracked(), 0, "no slot left behind");
    }

    /// Two addresses sharing a window, and threads opening and closing
    /// "connections" from both as fast as they can: never more open than the
    /// limit, as the holders themselves count them, and nothing left over.
    /// (A stress test: the rarest race is made deterministic in
    /// `the_later_of_two_racing_inserts_backs_off`.)
    #[test]
    fn racing_addresses_in_one_window_hold_the_limit_exactly() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 200_000;
        // One: two racing inserts of a first connection would be two open.
        const MAX: u64 = 1;
        let t = Arc::new(PerIp::default());
        let start = Arc::new(std::sync::Barrier::new(THREADS));
        let a = v4(0);
        let home_a = t.locate(a).1;
        let b = (1..200_000)
            .map(v4)
            .find(|&ip| {
                let h = t.locate(ip).1;
                (h + PER_IP_SLOTS - home_a) % PER_IP_SLOTS < 3
                    || (home_a + PER_IP_SLOTS - h) % PER_IP_SLOTS < 3
            })
            .expect("an address whose window overlaps");
        let held: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let handles: Vec<_> = (0..THREADS)
            .map(|n| {
                let (t, held) = (Arc::clone(&t), Arc::clone(&held));
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    for r in 0..ROUNDS {
                        let which = (n + r) % 2;
                        let ip = [a, b][which];
                        if t.admit(ip, MAX) {
                            let now = held[which].fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= MAX, "{now} open from {ip}, limit {MAX}");
                            held[which].fetch_sub(1, Ordering::SeqCst);
                            t.release(ip);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!((t.count(a), t.count(b)), (0, 0));
        assert_eq!(t.tracked(), 0, "no slot left behind");
    }

    /// The race the re-read is for: another process inserted the same new
    /// address in another slot of its window (a slot before ours was freed
    /// between our read and its) and kept it. With a limit of one, ours
    /// must back off.
    #[test]
    fn the_later_of_two_racing_inserts_backs_off() {
        let t = PerIp::default();
        let ip = v4(9);
        let (key, home) = t.locate(ip);
        let theirs = (home + WINDOW - 1) % PER_IP_SLOTS;
        let admitted = t.admit_racing(ip, 1, || {
            t.slots[theirs].store(key << COUNT_BITS | 1, Ordering::Relaxed);
        });
        assert!(!admitted, "two open with a limit of one");
        assert_eq!(t.count(ip), 1, "theirs is still counted");
        assert_eq!(t.tracked(), 1, "ours is gone");
        // With room for both, ours backs off and is counted again, once.
        let t = PerIp::default();
        let (key, home) = t.locate(ip);
        let theirs = (home + WINDOW - 1) % PER_IP_SLOTS;
        let mut once = true;
        assert!(t.admit_racing(ip, 2, || {
            if std::mem::take(&mut once) {
                t.slots[theirs].store(key << COUNT_BITS | 1, Ordering::Relaxed);
            }
        }));
        assert_eq!(t.count(ip), 2);
        assert_eq!(t.tracked(), 1, "one slot holds both");
    }

    #[test]
    fn a_duplicate_entry_is_summed_and_drains_away() {
        let t = PerIp::default();
        let ip = v4(3);
        let (key, home) = t.locate(ip);
        // What two racing first connections can leave: the address twice.
        t.slots[(home + 2) % PER_IP_SLOTS].store(key << COUNT_BITS | 1, Ordering::Relaxed);
        t.slots[(home + 5) % PER_IP_SLOTS].store(key << COUNT_BITS | 1, Ordering::Relaxed);
        assert_eq!(t.count(ip), 2);
        assert!(!t.admit(ip, 2), "the limit counts both");
        assert!(t.admit(ip, 3));
        assert_eq!(
            t.slots[(home + 2) % PER_IP_SLOTS].load(Ordering::Relaxed) & MAX_COUNT,
            2,
            "admissions go to the first"
        );
        t.release(ip);
        assert_eq!(t.tracked(), 1, "releases drain the last first");
        t.release(ip);
        t.release(ip);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn a_limit_past_what_a_word_holds_still_admits() {
        let t = PerIp::default();
        assert!(t.admit(v4(1), u64::MAX));
        assert_eq!(t.count(v4(1)), 1);
    }
}
