//! How many workers a pool (prefork, prethread) should start or retire, as
//! a pure function of what the scoreboard shows and the time, which is
//! passed in: no clock, no syscall, no thread here, so every rule below is
//! unit-tested step by step against a simulated clock.
//!
//! The rules, after Apache's prefork MPM (MinSpareServers, MaxSpareServers,
//! the spawn rate that doubles each second up to a cap):
//! - never fewer than `min_workers` (`--workers`), never more than
//!   `max_workers` (one more than `--max-conns`: the extra idle worker is
//!   the one that accepts and turns away a client over the limit);
//! - keep at least `min_spare` idle workers, plus one for every client
//!   waiting in the listen backlog;
//! - start at most `rate` workers per [`WINDOW`]; the rate doubles (1, 2,
//!   4 … [`MAX_RATE`]) while the demand uses all of it, and falls back to 1
//!   after a window without shortage, so a burst does not become a fork
//!   storm and a worker that dies at once is restarted once a second, not in
//!   a loop;
//! - when clients took every worker started in the last window, demand is
//!   outrunning the pool (clients that connect one after another never
//!   queue more than one deep): start a full window's rate, not only what is
//!   missing now;
//! - more than `max_spare` idle workers for a whole [`RETIRE_EVERY`]: retire
//!   a quarter of the excess (at least one) each [`RETIRE_EVERY`], so a
//!   burst's 200 workers are back in the band in about 20 s, not three
//!   minutes, and a short lull between bursts retires nothing. Only idle
//!   workers are retired; the driver makes a worker that takes a client
//!   meanwhile finish it first.

use std::time::{Duration, Instant};

/// One window of the start rate: at most `rate` workers start per window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// The cap of the doubling start rate, per [`WINDOW`]. Apache's is 32 for
/// its heavier processes; a netecho worker forks in well under a
/// millisecond, and 64 takes a fresh pool to 300 workers in about 8 s.
pub const MAX_RATE: usize = 64;
/// How long an excess of idle workers must last before one retires, and the
/// pause between two retirements.
pub const RETIRE_EVERY: Duration = Duration::from_secs(1);
/// Each retirement takes this fraction (1/N) of the excess, at least one.
pub const RETIRE_SHARE: usize = 4;
/// Default `--min-spare`: one idle worker to take the next client at once
/// and one to take the client after it while the pool grows.
pub const DEFAULT_MIN_SPARE: usize = 2;
/// Default `--max-spare`: idle workers beyond this are retired. Eight is
/// Apache's MaxSpareServers (10) rounded to what a small machine needs.
pub const DEFAULT_MAX_SPARE: usize = 8;
/// The least time between two pool log lines (grew/shrank), so a burst
/// logs a handful of lines, not one per window.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// The pool's bounds, from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--workers`: started at once, and the size below which the pool
    /// never shrinks.
    pub min_workers: usize,
    /// The most workers alive at once, retiring ones included.
    pub max_workers: usize,
    /// `--min-spare`: fewer idle workers than this starts more.
    pub min_spare: usize,
    /// `--max-spare`: more idle workers than this retires some.
    pub max_spare: usize,
}

impl Limits {
    /// The bounds for a pool serving at most `max_conns` clients at once:
    /// one worker more than that, so an idle one is there to turn away the
    /// next client (counted as rejected, as in every model).
    pub fn new(workers: usize, max_conns: usize, spare: Spare) -> Limits {
        Limits {
            min_workers: workers,
            max_workers: (max_conns + 1).max(workers),
            min_spare: spare.min,
            max_spare: spare.max.max(spare.min),
        }
    }
}

/// `--min-spare` and `--max-spare`: the band of idle workers kept ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spare {
    /// Start workers while fewer than this are idle.
    pub min: usize,
    /// Retire workers while more than this are idle.
    pub max: usize,
}

impl Default for Spare {
    fn default() -> Spare {
        Spare {
            min: DEFAULT_MIN_SPARE,
            max: DEFAULT_MAX_SPARE,
        }
    }
}

/// What the scoreboard and the listeners show at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Workers alive and not asked to retire.
    pub live: usize,
    /// Of those, the ones serving a client.
    pub busy: usize,
    /// Workers asked to retire that have not exited yet (they finish the
    /// client they hold first).
    pub retiring: usize,
    /// Connections waiting in the listen backlogs for a worker.
    pub queued: usize,
}

impl Counts {
    /// Workers alive, waiting for a client.
    pub fn idle(&self) -> usize {
        self.live.saturating_sub(self.busy)
    }
}

/// What to do now, and when to look again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Workers to start now.
    pub start: usize,
    /// Idle workers to retire now.
    pub retire: usize,
    /// When a decision could change without any event: the next window
    /// while workers are missing, or the next retirement. `None`: only an
    /// event (a worker busy, one dead, a client queued) changes anything.
    pub wake: Option<Instant>,
}

/// The sizing state carried from one decision to the next.
#[derive(Debug, Clone)]
pub struct Sizer {
    limits: Limits,
    /// Workers the current window may start (1, 2, 4 … [`MAX_RATE`]).
    rate: usize,
    /// When the next window opens (`None`: open now).
    next_start: Option<Instant>,
    /// Workers started by the last batch, 0 after a calm window.
    last_started: usize,
    /// Clients present (busy + queued) at the last batch: their growth
    /// since tells whether demand outran that batch.
    present_then: usize,
    /// Since when more than `max_spare` workers have been idle.
    excess_since: Option<Instant>,
    /// The earliest next retirement.
    next_retire: Option<Instant>,
}

impl Sizer {
    /// A pool whose first `limits.min_workers` the driver starts itself
    /// (at once, outside the rate).
    pub fn new(limits: Limits) -> Sizer {
        Sizer {
            limits,
            rate: 1,
            next_start: None,
            last_started: 0,
            present_then: 0,
            excess_since: None,
            next_retire: None,
        }
    }

    /// The bounds this pool keeps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decides what to do at `now`, given `c`. The driver must then start
    /// `start` workers and ask `retire` idle ones to leave.
    pub fn plan(&mut self, c: Counts, now: Instant) -> Plan {
        let l = self.limits;
        let idle = c.idle();
        let room = l.max_workers.saturating_sub(c.live + c.retiring);
        let missing = l
            .min_workers
            .saturating_sub(c.live)
            .max((c.queued + l.min_spare).saturating_sub(idle));
        let window_open = self.next_start.is_none_or(|t| now >= t);
        let mut plan = Plan::default();

        if missing > 0 {
            // Short of workers: retire nothing; start some if there is room.
            self.excess_since = None;
            if room == 0 {
                return plan;
            }
            if !window_open {
                plan.wake = self.next_start;
                return plan;
            }
            let present = c.busy + c.queued;
            let outrun = self.last_started > 0
                && present.saturating_sub(self.present_then) >= self.last_started;
            let demand = if outrun {
                missing.max(2 * self.last_started)
            } else {
                missing
            };
            plan.start = demand.min(self.rate).min(room);
            if demand >= self.rate {
                self.rate = (2 * self.rate).min(MAX_RATE);
            }
            self.last_started = plan.start;
            self.present_then = present;
            let next = now + WINDOW;
            self.next_start = Some(next);
            if room > plan.start {
                plan.wake = Some(next);
            }
            return plan;
        }
        if window_open && missing == 0 {
            // A calm window: the next shortage starts slowly again.
            self.rate = 1;
            self.last_started = 0;
            self.next_start = None;
        }

        let excess = idle
            .saturating_sub(l.max_spare)
            .min(c.live.saturating_sub(l.min_workers));
        if excess == 0 {
            self.excess_since = None;
            return plan;
        }
        let since = *self.excess_since.get_or_insert(now);
        let due = (since + RETIRE_EVERY).max(self.next_retire.unwrap_or(now));
        if now < due {
            plan.wake = Some(due);
            return plan;
        }
        plan.retire = (excess / RETIRE_SHARE).max(1);
        self.next_retire = Some(now + RETIRE_EVERY);
        if excess > plan.retire {
            plan.wake = self.next_retire;
        }
        plan
    }
}

/// The pool's log lines, at most one per [`LOG_EVERY`]: starts and
/// retirements are added up between two lines.
#[derive(Debug, Default)]
pub struct Log {
    started: usize,
    retired: usize,
    next: Option<Instant>,
}

/// One line to log: what changed since the last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Workers started since the last line.
    pub started: usize,
    /// Workers asked to retire since the last line.
    pub retired: usize,
}

impl Log {
    /// Records `plan`; returns what to log now, if anything.
    pub fn note(&mut self, plan: &Plan, now: Instant) -> Option<Change> {
        self.started += plan.start;
        self.retired += plan.retire;
        if self.started + self.retired == 0 || self.next.is_some_and(|t| now < t) {
            return None;
        }
        self.next = Some(now + LOG_EVERY);
        let change = Change {
            started: self.started,
            retired: self.retired,
        };
        self.started = 0;
        self.retired = 0;
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits(min: usize, max_conns: usize, spare: (usize, usize)) -> Limits {
        Limits::new(
            min,
            max_conns,
            Spare {
                min: spare.0,
                max: spare.1,
            },
        )
    }

    fn counts(live: usize, busy: usize) -> Counts {
        Counts {
            live,
            busy,
            ..Counts::default()
        }
    }

    /// A pool driven by a simulated clock and simulated clients: `waiting`
    /// clients are queued until an idle worker takes one; workers start
    /// idle; retiring workers are idle and leave at the next step.
    struct Sim {
        sizer: Sizer,
        now: Instant,
        live: usize,
        busy: usize,
        queued: usize,
        retiring: usize,
        /// Workers started at each step, for the rate checks.
        starts: Vec<(Instant, usize)>,
    }

    impl Sim {
        fn new(l: Limits) -> Sim {
            Sim {
                sizer: Sizer::new(l),
                now: Instant::now(),
                live: l.min_workers,
                busy: 0,
                queued: 0,
                retiring: 0,
                starts: Vec::new(),
            }
        }

        fn counts(&self) -> Counts {
            Counts {
                live: self.live,
                busy: self.busy,
                retiring: self.retiring,
                queued: self.queued,
            }
        }

        /// Idle workers take queued clients.
        fn settle(&mut self) {
            let take = self.queued.min(self.live - self.busy);
            self.busy += take;
            self.queued -= take;
        }

        /// One decision at the current time, applied.
        fn step(&mut self) -> Plan {
            self.retiring = 0;
            self.settle();
            let p = self.sizer.plan(self.counts(), self.now);
            assert!(p.start == 0 || p.retire == 0, "start and retire at once");
            assert!(
                self.live + self.retiring + p.start <= self.sizer.limits().max_workers,
                "over max_workers"
            );
            assert!(p.retire <= self.live - self.busy, "retired a busy worker");
            self.live += p.start;
            self.live -= p.retire;
            self.retiring = p.retire;
            if p.start > 0 {
                self.starts.push((self.now, p.start));
            }
            self.settle();
            p
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
        }

        /// Steps every `tick` for `d`.
        fn run(&mut self, d: Duration, tick: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.step();
                self.advance(tick);
            }
        }
    }

    #[test]
    fn a_pool_at_rest_does_nothing_and_sleeps() {
        let mut s = Sizer::new(limits(2, 256, (2, 8)));
        let p = s.plan(counts(2, 0), Instant::now());
        assert_eq!(p, Plan::default());
        // Idle exactly at the bounds of the band: still nothing.
        let mut s = Sizer::new(limits(2, 256, (2, 8)));
        assert_eq!(s.plan(counts(10, 2), Instant::now()), Plan::default());
    }

    #[test]
    fn one_busy_worker_below_the_spare_band_starts_one_at_once() {
        let mut s = Sizer::new(limits(2, 256, (2, 8)));
        let t = Instant::now();
        let p = s.plan(counts(2, 1), t);
        assert_eq!(p.start, 1);
        // Next window only once a second has passed.
        let p = s.plan(counts(3, 2), t + 500 * MS);
        assert_eq!(p.start, 0);
        assert_eq!(p.wake, Some(t + WINDOW));
    }

    #[test]
    fn a_burst_grows_at_a_doubling_rate_up_to_the_cap() {
        let mut sim = Sim::new(limits(2, 1024, (2, 8)));
        sim.queued = 300;
        // Decide at each window; clients are taken at once.
        for _ in 0..12 {
            sim.step();
            sim.advance(WINDOW);
        }
        let per_window: Vec<usize> = sim.starts.iter().map(|&(_, n)| n).collect();
        assert_eq!(&per_window[..8], &[1, 2, 4, 8, 16, 32, 64, 64]);
        assert!(per_window.iter().all(|&n| n <= MAX_RATE));
        assert_eq!(sim.queued, 0, "every client served");
        assert_eq!(sim.busy, 300);
        // 300 clients and 2 spares, not more.
        assert_eq!(sim.live, 302);
    }

    #[test]
    fn no_window_starts_more_than_the_rate_allows() {
        let mut sim = Sim::new(limits(2, 1024, (2, 8)));
        sim.queued = 500;
        // Decisions every 10 ms: events do not buy extra starts.
        sim.run(Duration::from_secs(15), 10 * MS);
        for w in sim.starts.windows(2) {
            assert!(w[1].0 - w[0].0 >= WINDOW, "two batches in one window");
        }
        assert!(sim.starts.iter().all(|&(_, n)| n <= MAX_RATE));
        assert_eq!(sim.queued, 0);
    }

    #[test]
    fn clients_arriving_one_by_one_still_get_a_doubling_rate() {
        // Each client connects once the previous one is served (as a test
        // that pings each connection before opening the next): the backlog
        // never holds more than one, yet the pool must not grow linearly.
        let mut sim = Sim::new(limits(2, 1024, (2, 8)));
        let mut served = 0;
        let start = sim.now;
        while served < 200 {
            sim.settle();
            if sim.queued == 0 {
                // The previous client is served: the next one connects.
                sim.queued = 1;
                served = sim.busy;
                sim.settle();
                continue;
            }
            // Stuck behind a full pool: time passes until a decision.
            sim.step();
            if sim.queued > 0 {
                sim.advance(10 * MS);
            }
            assert!(sim.now - start < Duration::from_secs(30), "too slow");
        }
        let took = sim.now - start;
        assert!(took <= Duration::from_secs(10), "200 clients took {took:?}");
    }

    #[test]
    fn a_dead_worker_is_replaced_by_one_not_by_the_rate() {
        let l = limits(2, 256, (1, 1));
        let mut s = Sizer::new(l);
        let t = Instant::now();
        // Below the minimum: one missing, one started.
        assert_eq!(s.plan(counts(1, 0), t).start, 1);
        // It died too; next window, one again (the rate grew, the need not).
        assert_eq!(s.plan(counts(1, 0), t + WINDOW).start, 1);
        assert_eq!(s.plan(counts(1, 0), t + 2 * WINDOW).start, 1);
    }

    #[test]
    fn a_worker_that_dies_at_once_is_restarted_once_a_window() {
        let l = limits(4, 256, (1, 8));
        let mut s = Sizer::new(l);
        let t = Instant::now();
        let mut started = 0;
        // A decision every ms for 5 s, each seeing one worker short.
        for ms in 0..5000u32 {
            started += s.plan(counts(3, 0), t + ms * MS).start;
        }
        assert_eq!(started, 5);
    }

    #[test]
    fn the_pool_never_passes_max_workers_and_keeps_one_to_turn_clients_away() {
        let l = limits(2, 10, (2, 8));
        assert_eq!(l.max_workers, 11);
        let mut sim = Sim::new(l);
        sim.queued = 50;
        sim.run(Duration::from_secs(20), 100 * MS);
        assert_eq!(sim.live, 11);
        // (The simulation lets all 11 serve; the real server admits 10.)
        let mut s = Sizer::new(l);
        let p = s.plan(
            Counts {
                live: 11,
                busy: 10,
                retiring: 0,
                queued: 40,
            },
            Instant::now(),
        );
        assert_eq!(p, Plan::default(), "full: nothing to start, no wake-up");
        // Retiring workers still count against the cap.
        let p = s.plan(
            Counts {
                live: 9,
                busy: 9,
                retiring: 2,
                queued: 3,
            },
            Instant::now(),
        );
        assert_eq!(p.start, 0);
    }

    #[test]
    fn after_a_burst_the_pool_shrinks_gradually_into_the_band_within_60_s() {
        let l = limits(2, 1024, (2, 8));
        let mut sim = Sim::new(l);
        sim.queued = 200;
        sim.run(Duration::from_secs(15), 100 * MS);
        assert_eq!(sim.busy, 200);
        // Every client leaves.
        sim.busy = 0;
        let left = sim.now;
        let mut sizes = Vec::new();
        let mut last = sim.live;
        while sim.live > l.max_spare {
            sim.step();
            assert!(sim.live <= last, "grew while idle");
            assert!(
                last - sim.live <= (last - l.max_spare).div_ceil(RETIRE_SHARE),
                "retired more than a share at once"
            );
            if sim.live != last {
                sizes.push(sim.live);
            }
            last = sim.live;
            sim.advance(100 * MS);
            assert!(sim.now - left < Duration::from_secs(60), "{sizes:?}");
        }
        let took = sim.now - left;
        assert!(took >= 10 * RETIRE_EVERY, "too abrupt: {took:?} {sizes:?}");
        // Then it stays there.
        sim.run(Duration::from_secs(30), 100 * MS);
        assert_eq!(sim.live, l.max_spare);
    }

    #[test]
    fn a_short_lull_retires_nothing() {
        let l = limits(2, 256, (2, 8));
        let mut s = Sizer::new(l);
        let t = Instant::now();
        assert_eq!(s.plan(counts(40, 0), t).retire, 0);
        let p = s.plan(counts(40, 0), t + 900 * MS);
        assert_eq!(p.retire, 0);
        assert_eq!(p.wake, Some(t + RETIRE_EVERY));
        // The clients come back: the excess clock starts over.
        assert_eq!(s.plan(counts(40, 35), t + 950 * MS).retire, 0);
        assert_eq!(s.plan(counts(40, 0), t + 1100 * MS).retire, 0);
        assert_eq!(s.plan(counts(40, 0), t + 2100 * MS).retire, 8);
        // And no second retirement within RETIRE_EVERY.
        assert_eq!(s.plan(counts(32, 0), t + 2500 * MS).retire, 0);
        assert_eq!(s.plan(counts(32, 0), t + 3100 * MS).retire, 6);
    }

    #[test]
    fn never_below_the_minimum_size_whatever_is_idle() {
        let l = limits(16, 256, (1, 2));
        let mut s = Sizer::new(l);
        let t = Instant::now();
        for k in 0..10u32 {
            assert_eq!(s.plan(counts(16, 0), t + k * WINDOW).retire, 0);
        }
        assert_eq!(s.plan(counts(17, 0), t + 20 * WINDOW).retire, 0);
        assert_eq!(s.plan(counts(17, 0), t + 21 * WINDOW).retire, 1);
    }

    #[test]
    fn the_rate_falls_back_to_one_after_a_calm_window() {
        let mut sim = Sim::new(limits(2, 1024, (2, 8)));
        sim.queued = 30;
        sim.run(Duration::from_secs(6), 100 * MS);
        assert_eq!(sim.queued, 0);
        sim.run(Duration::from_secs(2), 100 * MS);
        sim.starts.clear();
        sim.queued = 30;
        sim.run(Duration::from_secs(1), 100 * MS);
        assert_eq!(sim.starts.first().map(|&(_, n)| n), Some(1));
    }

    /// Exhaustive over small pools: whatever the counts and the history, a
    /// plan never breaks a bound.
    #[test]
    fn every_plan_keeps_every_bound() {
        for min in 1..4 {
            for max_conns in 1..8 {
                for smin in 1..4 {
                    for smax in smin..5 {
                        let l = limits(min, max_conns, (smin, smax));
                        let mut s = Sizer::new(l);
                        let t = Instant::now();
                        let mut k = 0u32;
                        for live in 0..=l.max_workers {
                            for busy in 0..=live.min(max_conns) {
                                for retiring in 0..=(l.max_workers - live) {
                                    for queued in [0, 1, 5] {
                                        k += 1;
                                        let c = Counts {
                                            live,
                                            busy,
                                            retiring,
                                            queued,
                                        };
                                        let now = t + k * 300 * MS;
                                        let p = s.plan(c, now);
                                        let ctx = format!("{l:?} {c:?} {p:?}");
                                        assert!(p.start == 0 || p.retire == 0, "{ctx}");
                                        assert!(
                                            live + retiring + p.start <= l.max_workers,
                                            "{ctx}"
                                        );
                                        assert!(p.start <= MAX_RATE, "{ctx}");
                                        assert!(
                                            live - p.retire >= l.min_workers.min(live),
                                            "{ctx}"
                                        );
                                        assert!(
                                            p.retire == 0 || c.idle() - p.retire >= l.max_spare,
                                            "{ctx}"
                                        );
                                        assert!(p.wake.is_none_or(|w| w > now), "{ctx}");
                                        // Something missing and room for it:
                                        // started now or a wake-up is set.
                                        let missing = min > live || c.idle() < smin + queued;
                                        if missing && live + retiring < l.max_workers {
                                            assert!(p.start > 0 || p.wake.is_some(), "{ctx}");
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_log_says_at_once_then_adds_up() {
        let mut log = Log::default();
        let t = Instant::now();
        let grow = |n| Plan {
            start: n,
            ..Plan::default()
        };
        assert_eq!(log.note(&Plan::default(), t), None);
        assert_eq!(
            log.note(&grow(1), t),
            Some(Change {
                started: 1,
                retired: 0
            })
        );
        assert_eq!(log.note(&grow(2), t + WINDOW), None);
        assert_eq!(log.note(&grow(4), t + 2 * WINDOW), None);
        let shrink = Plan {
            retire: 3,
            ..Plan::default()
        };
        assert_eq!(
            log.note(&shrink, t + LOG_EVERY),
            Some(Change {
                started: 6,
                retired: 3
            })
        );
        assert_eq!(log.note(&Plan::default(), t + 3 * LOG_EVERY), None);
    }
}
