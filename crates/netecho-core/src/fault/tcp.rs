//! The TCP faults as decisions: for one connection, what of the kept echo
//! may be sent now, when the next may go, whether reading may begin, and
//! when and how the connection ends. No I/O: the caller passes the clock
//! and performs the answer, beside the connection core
//! ([`crate::contract::Conn`]) that keeps the bytes and the deadlines.
//!
//! Every limit is a cap on the next send, so they compose: latency holds
//! bytes until their due time, `slice` caps a send and `slice-delay` spaces
//! them, `bandwidth` is a schedule (byte k of a busy stretch may go k/rate
//! after it began), and the `*-after` thresholds cap the total so that
//! exactly N bytes go out before the end.
//!
//! Every wait is a deadline, not a pause after a send: a caller woken late
//! (a busy machine) finds the schedule where it should be and catches up,
//! so lateness does not add up over a transfer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::{Effects, EndAfter, Kind};

/// One send under `bandwidth` is at most this share of a second of it:
/// small enough that a transfer's rate is steady, large enough for few
/// wake-ups (50 a second).
const SENDS_PER_SECOND: u64 = 50;

/// How far behind its schedule a `bandwidth` connection may fall and still
/// catch up: a caller woken up to this late sends what it missed at once.
/// Longer behind (an idle connection), the schedule restarts this far back,
/// so a connection that was idle gets about this much of its rate (and one
/// send) at once.
const PACE_SLACK: Duration = Duration::from_millis(50);

/// What the caller may do with the kept echo now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send at most this many bytes of the kept echo's front.
    Send(usize),
    /// Send nothing before this time.
    Wait(Instant),
    /// Nothing kept: nothing to send.
    Idle,
    /// The connection ends this way now (every byte before it was sent).
    End(EndAfter),
}

/// Whether the caller may read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadGate {
    Open,
    /// Not before this time (`accept-delay`).
    At(Instant),
    /// Never again (`stall-after` reached).
    Shut,
}

/// One connection's faults. See the module documentation.
#[derive(Debug)]
pub struct Shaper {
    e: Effects,
    rng: SmallRng,
    /// Reading may begin at this time (`accept-delay`).
    open_at: Instant,
    /// Bytes read so far: the stream offset of the next byte read.
    read: u64,
    /// Bytes sent so far: the stream offset of the next byte sent.
    sent: u64,
    /// Echo held by latency: (due time, stream offset its read ended at),
    /// in order, due times never decreasing (bytes never overtake).
    held: VecDeque<(Instant, u64)>,
    /// `bandwidth` schedule: `paced` bytes sent since `paced_from`, so the
    /// next may go at `paced_from + paced / rate`.
    paced_from: Instant,
    paced: u64,
    /// `slice-delay`: no piece before this time.
    next_piece: Option<Instant>,
    /// `corrupt`: the stream offset of the next byte to corrupt.
    next_corrupt: Option<u64>,
    /// Faults that took effect and are not yet reported ([`Shaper::applied`]).
    applied: Vec<Kind>,
    /// Each per-connection kind is reported once.
    reported: [bool; Kind::ALL.len()],
}

impl Shaper {
    /// The faults of a connection accepted at `now`; `seed` makes its
    /// jitter and corruption reproducible.
    pub fn new(now: Instant, e: Effects, seed: u64) -> Shaper {
        let mut rng = SmallRng::seed_from_u64(seed);
        let next_corrupt = e.corrupt.and_then(|p| gap(&mut rng, p));
        let mut s = Shaper {
            e,
            rng,
            open_at: now + e.accept_delay.unwrap_or_default(),
            read: 0,
            sent: 0,
            held: VecDeque::new(),
            paced_from: now,
            paced: 0,
            next_piece: None,
            next_corrupt,
            applied: Vec::new(),
            reported: [false; Kind::ALL.len()],
        };
        if e.accept_delay.is_some_and(|d| !d.is_zero()) {
            s.report(Kind::AcceptDelay);
        }
        s
    }

    /// Bytes echoed so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    fn report(&mut self, k: Kind) {
        if k == Kind::Corrupt || !std::mem::replace(&mut self.reported[k.index()], true) {
            self.applied.push(k);
        }
    }

    /// The faults that took effect since the last call, to count and log:
    /// each per-connection fault once, `corrupt` once per flipped byte.
    pub fn applied(&mut self) -> Vec<Kind> {
        std::mem::take(&mut self.applied)
    }

    /// The threshold of `reset-after`, `close-after` or `stall-after`, if
    /// any, and whether it was reached.
    fn ended(&self) -> Option<EndAfter> {
        self.e
            .end_after
            .and_then(|(how, n)| (self.sent >= n).then_some(how))
    }

    /// Whether the caller may read now.
    pub fn read_gate(&self, now: Instant) -> ReadGate {
        if self.ended() == Some(EndAfter::Stall) {
            ReadGate::Shut
        } else if now < self.open_at {
            ReadGate::At(self.open_at)
        } else {
            ReadGate::Open
        }
    }

    /// A read at `now` brought `bytes`, about to be kept as echo: flips the
    /// bits `corrupt-at` and `corrupt` ask for in them and files their due
    /// time. Returns the stream offsets of the bytes flipped.
    pub fn on_read(&mut self, now: Instant, bytes: &mut [u8]) -> Vec<u64> {
        let start = self.read;
        let end = start + bytes.len() as u64;
        let mut flipped = Vec::new();
        if let Some(at) = self.e.corrupt_at
            && (start..end).contains(&at)
        {
            flipped.push(at);
        }
        while let Some(at) = self.next_corrupt.filter(|at| *at < end) {
            if !flipped.contains(&at) {
                flipped.push(at);
            }
            let p = self.e.corrupt.unwrap_or(0.0);
            self.next_corrupt = gap(&mut self.rng, p).and_then(|g| at.checked_add(g + 1));
        }
        for at in &flipped {
            let bit = 1u8 << self.rng.random_range(0..8u32);
            bytes[(at - start) as usize] ^= bit;
            self.report(Kind::Corrupt);
        }
        self.read = end;
        if let Some(hold) = self.e.hold(&mut self.rng) {
            let due = (now + hold).max(self.held.back().map_or(now, |(d, _)| *d));
            self.held.push_back((due, end));
        }
        flipped
    }

    /// What may be done with `kept` bytes of echo at `now`.
    pub fn verdict(&mut self, now: Instant, kept: usize) -> Verdict {
        if let Some(how) = self.ended() {
            self.report(match how {
                EndAfter::Reset => Kind::Reset,
                EndAfter::Close => Kind::Close,
                EndAfter::Stall => Kind::Stall,
            });
            return Verdict::End(how);
        }
        if kept == 0 {
            return Verdict::Idle;
        }
        let mut n = kept as u64;
        if self.e.latency.is_some() {
            // Bytes whose due time has come.
            let ready = self
                .held
                .iter()
                .take_while(|(due, _)| *due <= now)
                .last()
                .map_or(self.sent, |(_, upto)| *upto);
            if ready > self.sent {
                n = n.min(ready - self.sent);
            } else if let Some((due, _)) = self.held.iter().find(|(_, upto)| *upto > self.sent) {
                let due = *due;
                self.report(Kind::Latency);
                return Verdict::Wait(due);
            }
        }
        if let Some((_, limit)) = self.e.end_after {
            n = n.min(limit - self.sent);
        }
        if let Some(slice) = self.e.slice {
            if let Some(at) = self.next_piece.filter(|at| *at > now) {
                return Verdict::Wait(at);
            }
            if n > slice as u64 {
                self.report(Kind::Slice);
            }
            n = n.min(slice as u64);
        }
        if let Some(rate) = self.e.bandwidth {
            let at = self.paced_from + at_rate(self.paced, rate);
            if at > now {
                self.report(Kind::Bandwidth);
                return Verdict::Wait(at);
            }
            n = n.min((rate / SENDS_PER_SECOND).max(1));
        }
        Verdict::Send(n as usize)
    }

    /// A send at `now` took `n` bytes of the kept echo.
    pub fn on_sent(&mut self, now: Instant, n: usize) {
        self.sent += n as u64;
        if let Some(rate) = self.e.bandwidth {
            let at = self.paced_from + at_rate(self.paced, rate);
            if at + PACE_SLACK < now {
                // Idle, or woken too late to catch up in full.
                self.paced_from = now.checked_sub(PACE_SLACK).unwrap_or(now);
                self.paced = 0;
            }
            self.paced += n as u64;
        }
        if let Some(d) = self.e.slice_delay.filter(|d| !d.is_zero()) {
            self.next_piece = Some(now + d);
        }
        while self
            .held
            .front()
            .is_some_and(|(_, upto)| *upto <= self.sent)
        {
            self.held.pop_front();
        }
    }
}

/// How long `bytes` take at `rate` bytes a second, to the nanosecond.
fn at_rate(bytes: u64, rate: u64) -> Duration {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// How many bytes pass before the next one corrupted with probability `p`
/// each (a geometric draw); `None` when none ever is.
fn gap(rng: &mut SmallRng, p: f64) -> Option<u64> {
    if p <= 0.0 {
        return None;
    }
    if p >= 1.0 {
        return Some(0);
    }
    let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    Some((u.ln() / (1.0 - p).ln()).floor().min(u64::MAX as f64 / 2.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn shaper(spec: &str, now: Instant) -> Shaper {
        Shaper::new(now, Fault::parse(spec).unwrap().effects, 7)
    }

    /// Drives a shaper the way a model does, the socket taking whatever is
    /// allowed: returns (time, bytes) of every send, until `kept` is echoed
    /// or the verdict is an end.
    fn run(
        s: &mut Shaper,
        t0: Instant,
        mut kept: usize,
    ) -> (Vec<(Duration, usize)>, Option<EndAfter>) {
        let mut now = t0;
        let mut sends = Vec::new();
        for _ in 0..1_000_000 {
            match s.verdict(now, kept) {
                Verdict::Send(n) => {
                    assert!(n > 0 && n <= kept);
                    sends.push((now - t0, n));
                    s.on_sent(now, n);
                    kept -= n;
                }
                Verdict::Wait(at) => {
                    assert!(at > now, "a wait must be in the future");
                    now = at;
                }
                Verdict::Idle => return (sends, None),
                Verdict::End(how) => return (sends, Some(how)),
            }
        }
        panic!("no end");
    }

    #[test]
    fn latency_holds_each_echo_from_its_arrival() {
        let t0 = Instant::now();
        let mut s = shaper("latency=50ms", t0);
        s.on_read(t0, &mut [0; 10]);
        assert_eq!(s.verdict(t0 + ms(49), 10), Verdict::Wait(t0 + ms(50)));
        s.on_read(t0 + ms(20), &mut [0; 5]);
        assert_eq!(s.verdict(t0 + ms(50), 15), Verdict::Send(10));
        s.on_sent(t0 + ms(50), 10);
        assert_eq!(s.verdict(t0 + ms(50), 5), Verdict::Wait(t0 + ms(70)));
        assert_eq!(s.verdict(t0 + ms(70), 5), Verdict::Send(5));
        assert_eq!(s.applied(), vec![Kind::Latency]);
    }

    #[test]
    fn jitter_stays_within_its_band_and_never_reorders() {
        let t0 = Instant::now();
        let mut s = shaper("latency=50ms,jitter=10ms", t0);
        for i in 0..1000u64 {
            s.on_read(t0 + ms(i), &mut [0; 1]);
        }
        let mut last = t0;
        for (i, (due, _)) in s.held.iter().enumerate() {
            let arrival = t0 + ms(i as u64);
            assert!(*due >= last, "due times go back");
            assert!(*due >= arrival + ms(40) && *due <= arrival + ms(60) + ms(20));
            last = *due;
        }
    }

    #[test]
    fn bandwidth_paces_a_transfer_at_its_rate() {
        let t0 = Instant::now();
        let mut s = shaper("bandwidth=1MiB/s", t0);
        let (sends, end) = run(&mut s, t0, 4 << 20);
        assert_eq!(end, None);
        let took = sends.last().unwrap().0.as_secs_f64();
        assert!(
            (3.9..=4.1).contains(&took),
            "4 MiB at 1 MiB/s took {took} s"
        );
    }

    /// A caller woken 7 ms late at every wait (a busy machine) still moves
    /// 4 MiB at 1 MiB/s in 4 s: the schedule is kept, lateness caught up.
    #[test]
    fn bandwidth_catches_up_after_late_wakes() {
        let t0 = Instant::now();
        let mut s = shaper("bandwidth=1MiB/s", t0);
        let (mut now, mut kept) = (t0, 4usize << 20);
        while kept > 0 {
            match s.verdict(now, kept) {
                Verdict::Send(n) => {
                    s.on_sent(now, n);
                    kept -= n;
                }
                Verdict::Wait(at) => now = at + ms(7),
                other => panic!("{other:?}"),
            }
        }
        let took = (now - t0).as_secs_f64();
        assert!((3.95..=4.05).contains(&took), "took {took} s");
        // Idle for a second, then a burst of about the slack's worth.
        let later = now + Duration::from_secs(1);
        let (sends, _) = run(&mut s, later, 1 << 20);
        let at_once: usize = sends
            .iter()
            .filter(|(d, _)| d.is_zero())
            .map(|(_, n)| n)
            .sum();
        assert!(at_once <= 80 << 10, "{at_once} bytes at once after idling");
    }

    #[test]
    fn slices_are_small_and_spaced() {
        let t0 = Instant::now();
        let mut s = shaper("slice=16,slice-delay=5ms", t0);
        let (sends, _) = run(&mut s, t0, 100);
        assert_eq!(
            sends.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [16, 16, 16, 16, 16, 16, 4]
        );
        for w in sends.windows(2) {
            assert_eq!(w[1].0 - w[0].0, ms(5));
        }
    }

    #[test]
    fn each_end_comes_after_exactly_its_bytes() {
        for (spec, how) in [
            ("reset-after=4KiB", EndAfter::Reset),
            ("close-after=4KiB", EndAfter::Close),
            ("stall-after=4KiB", EndAfter::Stall),
        ] {
            let t0 = Instant::now();
            let mut s = shaper(spec, t0);
            let (sends, end) = run(&mut s, t0, 10_000);
            assert_eq!(sends.iter().map(|(_, n)| n).sum::<usize>(), 4096, "{spec}");
            assert_eq!(end, Some(how), "{spec}");
        }
        let t0 = Instant::now();
        let mut s = shaper("stall-after=10", t0);
        assert_eq!(s.read_gate(t0), ReadGate::Open);
        run(&mut s, t0, 100);
        assert_eq!(s.read_gate(t0), ReadGate::Shut);
        // Fewer bytes than the threshold: no end.
        let mut s = shaper("reset-after=4KiB", t0);
        assert_eq!(run(&mut s, t0, 100).1, None);
    }

    #[test]
    fn accept_delay_holds_the_first_read() {
        let t0 = Instant::now();
        let s = shaper("accept-delay=2s", t0);
        assert_eq!(s.read_gate(t0 + ms(1999)), ReadGate::At(t0 + ms(2000)));
        assert_eq!(s.read_gate(t0 + ms(2000)), ReadGate::Open);
    }

    #[test]
    fn corrupt_at_flips_one_bit_of_that_byte_whatever_the_reads() {
        let t0 = Instant::now();
        for split in [1usize, 7, 100, 101, 150] {
            let mut s = shaper("corrupt-at=100", t0);
            let mut data = [0u8; 200];
            let (a, b) = data.split_at_mut(split);
            let mut flipped = s.on_read(t0, a);
            flipped.extend(s.on_read(t0, b));
            assert_eq!(flipped, [100]);
            assert_eq!(data.iter().position(|b| *b != 0), Some(100));
            assert_eq!(data[100].count_ones(), 1);
            assert_eq!(s.applied(), [Kind::Corrupt]);
        }
    }

    #[test]
    fn corrupt_rate_flips_about_that_share() {
        let t0 = Instant::now();
        let mut s = shaper("corrupt=1%", t0);
        let mut data = vec![0u8; 1_000_000];
        for chunk in data.chunks_mut(4096) {
            s.on_read(t0, chunk);
        }
        let n = data.iter().filter(|b| **b != 0).count();
        // Binomial(1e6, 0.01): sd ~ 99.5; 6 sigma ~ 600.
        assert!((9_400..=10_600).contains(&n), "{n} bytes flipped");
    }
}
