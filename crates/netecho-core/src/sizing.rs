//! How many workers a pool (prefork, prethread) should start or retire, as
//! a pure function of what the supervisor observes and the time, which is
//! passed in: no clock, no syscall, no thread here, so every rule below is
//! unit-tested step by step against a simulated clock.
//!
//! The pool sizes itself from the demand it can see, not from a spawn rate:
//! - the workers needed are the busy ones, plus one for every client
//!   waiting in the listeners' accept queues, plus `min_spare` idle ones,
//!   never fewer than `min_workers` (`--workers`) and never more than
//!   `max_workers` (one more than `--max-conns`: the extra idle worker is
//!   the one that accepts and turns away a client over the limit);
//! - what is missing starts **at once**, in one batch: a burst of clients
//!   is answered as fast as workers can be forked, not a few per second
//!   (the doubling spawn rate this replaces took 9 s to serve 300 clients);
//! - while clients still wait and the pool has room, it looks again within
//!   [`RECHECK`], so clients still arriving are seen without waiting for a
//!   worker to report;
//! - a worker that died without being asked is replaced at once, but while
//!   deaths keep coming the pool starts at most one batch per
//!   [`RESTART_EVERY`]: a worker that dies on start is a restart a second,
//!   not a fork loop;
//! - more than `max_spare` idle workers for a whole [`RETIRE_EVERY`]: a
//!   quarter of the excess (at least one) retires each [`RETIRE_EVERY`]
//!   (Apache's MaxSpareServers), so a short lull between bursts retires
//!   nothing;
//! - a worker idle for longer than `retire_idle` (`--worker-idle-timeout`,
//!   after php-fpm's `process_idle_timeout`) retires, as long as
//!   `min_spare` stay idle and `min_workers` stay alive: after a burst the
//!   pool settles at its spare minimum.
//!
//! Only idle workers are retired, the longest idle first; the driver makes
//! a worker that takes a client meanwhile finish it first.

use std::time::{Duration, Instant};

/// While clients wait in the accept queue and the pool has room, the
/// supervisor looks again this soon: clients still arriving after a batch
/// started are seen without waiting for a worker's wake-up.
pub const RECHECK: Duration = Duration::from_millis(20);
/// While workers die without being asked, batches of starts are this far
/// apart.
pub const RESTART_EVERY: Duration = Duration::from_secs(1);
/// How long an excess of idle workers (over `max_spare`) must last before
/// one retires, and the pause between two such retirements.
pub const RETIRE_EVERY: Duration = Duration::from_secs(1);
/// Each retirement over `max_spare` takes this fraction (1/N) of the
/// excess, at least one.
pub const RETIRE_SHARE: usize = 4;
/// Default `--min-spare`: one idle worker to take the next client at once
/// and one to take the client after it while the pool grows.
pub const DEFAULT_MIN_SPARE: usize = 2;
/// Default `--max-spare`: idle workers beyond this are retired. Eight is
/// Apache's MaxSpareServers (10) rounded to what a small machine needs.
pub const DEFAULT_MAX_SPARE: usize = 8;
/// Default `--worker-idle-timeout`: php-fpm's `process_idle_timeout`. Long
/// enough that bursts a few seconds apart find their workers still there.
pub const DEFAULT_RETIRE_IDLE: Duration = Duration::from_secs(10);
/// The least time between two pool log lines (grew/shrank), so a burst
/// logs a handful of lines, not one per batch.
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
    /// `--worker-idle-timeout`: a worker idle this long retires (`None`:
    /// never for that reason).
    pub retire_idle: Option<Duration>,
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
            retire_idle: spare.retire_idle,
        }
    }
}

/// `--min-spare`, `--max-spare` and `--worker-idle-timeout`: the idle
/// workers kept ready, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spare {
    /// Start workers while fewer than this are idle.
    pub min: usize,
    /// Retire workers while more than this are idle.
    pub max: usize,
    /// Retire a worker idle this long, down to `min` idle (`None`: never).
    pub retire_idle: Option<Duration>,
}

impl Default for Spare {
    fn default() -> Spare {
        Spare {
            min: DEFAULT_MIN_SPARE,
            max: DEFAULT_MAX_SPARE,
            retire_idle: Some(DEFAULT_RETIRE_IDLE),
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
    /// Connections waiting in the accept queues for a worker.
    pub queued: usize,
    /// Workers that exited without being asked since the last look.
    pub died: usize,
}

impl Counts {
    /// Workers alive, waiting for a client.
    pub fn idle(&self) -> usize {
        self.live.saturating_sub(self.busy)
    }

    /// Workers the demand calls for now: one per client served or waiting,
    /// plus the spare minimum, within the pool's bounds.
    pub fn wanted(&self, l: &Limits) -> usize {
        (self.busy + self.queued + l.min_spare)
            .min(l.max_workers)
            .max(l.min_workers)
    }
}

/// What to do now, and when to look again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Workers to start now.
    pub start: usize,
    /// Idle workers to retire now, the longest idle first.
    pub retire: usize,
    /// When a decision could change without any event: clients still
    /// queued, a held-back restart, the next retirement. `None`: only an
    /// event (a worker busy, one dead, a client queued) changes anything.
    pub wake: Option<Instant>,
}

/// The sizing state carried from one decision to the next.
#[derive(Debug, Clone)]
pub struct Sizer {
    limits: Limits,
    /// When the last worker death was seen.
    last_death: Option<Instant>,
    /// While deaths keep coming: no batch before this.
    next_start: Option<Instant>,
    /// Since when more than `max_spare` workers have been idle.
    excess_since: Option<Instant>,
    /// The earliest next retirement over `max_spare`.
    next_retire: Option<Instant>,
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Sizer {
    /// A pool whose first `limits.min_workers` the driver starts itself.
    pub fn new(limits: Limits) -> Sizer {
        Sizer {
            limits,
            last_death: None,
            next_start: None,
            excess_since: None,
            next_retire: None,
        }
    }

    /// The bounds this pool keeps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decides what to do at `now`, given `c` and, for each idle worker,
    /// when it became idle (any order). The driver must then start `start`
    /// workers and ask the `retire` longest-idle ones to leave.
    pub fn plan(&mut self, c: Counts, idle_since: &[Instant], now: Instant) -> Plan {
        let l = self.limits;
        if c.died > 0 {
            self.last_death = Some(now);
        }
        let room = l.max_workers.saturating_sub(c.live + c.retiring);
        let missing = c.wanted(&l).saturating_sub(c.live);
        if missing > 0 {
            self.excess_since = None;
            return self.grow(c, missing, room, now);
        }
        self.shrink(c, idle_since, now)
    }

    /// `missing` workers short, `room` for more under the cap.
    fn grow(&mut self, c: Counts, missing: usize, room: usize, now: Instant) -> Plan {
        let mut plan = Plan::default();
        if room == 0 {
            // Full, but retiring workers will leave (a prethread worker
            // says nothing when it does): look again soon.
            if c.retiring > 0 {
                plan.wake = Some(now + RECHECK);
            }
            return plan;
        }
        if let Some(t) = self.next_start.filter(|&t| now < t) {
            plan.wake = Some(t);
            return plan;
        }
        plan.start = missing.min(room);
        let dying = self
            .last_death
            .is_some_and(|d| now.saturating_duration_since(d) < RESTART_EVERY);
        self.next_start = dying.then_some(now + RESTART_EVERY);
        if c.queued > 0 && room > plan.start {
            plan.wake = Some(now + RECHECK);
        }
        plan
    }

    /// Nothing missing: retire what is idle beyond the band or too long.
    fn shrink(&mut self, c: Counts, idle_since: &[Instant], now: Instant) -> Plan {
        let l = self.limits;
        let mut plan = Plan::default();
        let idle = c.idle();
        // Whatever the rule, the pool keeps `min_spare` idle and
        // `min_workers` alive.
        let may = idle
            .saturating_sub(l.min_spare)
            .min(c.live.saturating_sub(l.min_workers));

        // Over `max_spare`: a share of the excess once it lasted.
        let excess = idle.saturating_sub(l.max_spare).min(may);
        let mut over = 0;
        if excess == 0 {
            self.excess_since = None;
        } else {
            let since = *self.excess_since.get_or_insert(now);
            let due = (since + RETIRE_EVERY).max(self.next_retire.unwrap_or(now));
            if now < due {
                plan.wake = Some(due);
            } else {
                over = (excess / RETIRE_SHARE).max(1);
                self.next_retire = Some(now + RETIRE_EVERY);
                if excess > over {
                    plan.wake = self.next_retire;
                }
            }
        }

        // Idle too long: every such worker, down to the floor.
        let mut long = 0;
        if let Some(limit) = l.retire_idle.filter(|_| may > 0) {
            let mut next = None;
            for &t in idle_since {
                if now.saturating_duration_since(t) >= limit {
                    long += 1;
                } else {
                    next = earliest(next, Some(t + limit));
                }
            }
            if long < may {
                plan.wake = earliest(plan.wake, next);
            }
        }
        plan.retire = over.max(long).min(may);
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
    const SEC: Duration = Duration::from_secs(1);

    fn limits(min: usize, max_conns: usize, spare: (usize, usize)) -> Limits {
        Limits::new(
            min,
            max_conns,
            Spare {
                min: spare.0,
                max: spare.1,
                retire_idle: Some(DEFAULT_RETIRE_IDLE),
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

    /// A pool driven by a simulated clock and simulated clients: `queued`
    /// clients wait until an idle worker takes one; workers start idle;
    /// retiring workers are idle and leave at the next step. Each idle
    /// worker remembers since when it is idle; a client goes to the one
    /// idle the shortest time, a retirement to the longest.
    struct Sim {
        sizer: Sizer,
        now: Instant,
        busy: usize,
        queued: usize,
        retiring: usize,
        /// When each idle worker became idle, oldest first.
        idle: Vec<Instant>,
        /// Workers started at each step.
        starts: Vec<(Instant, usize)>,
    }

    impl Sim {
        fn new(l: Limits) -> Sim {
            let now = Instant::now();
            Sim {
                sizer: Sizer::new(l),
                now,
                busy: 0,
                queued: 0,
                retiring: 0,
                idle: vec![now; l.min_workers],
                starts: Vec::new(),
            }
        }

        fn live(&self) -> usize {
            self.busy + self.idle.len()
        }

        fn counts(&self) -> Counts {
            Counts {
                live: self.live(),
                busy: self.busy,
                retiring: self.retiring,
                queued: self.queued,
                died: 0,
            }
        }

        /// Idle workers take queued clients.
        fn settle(&mut self) {
            let take = self.queued.min(self.idle.len());
            self.idle.truncate(self.idle.len() - take);
            self.busy += take;
            self.queued -= take;
        }

        /// `n` clients leave: their workers are idle from now.
        fn leave(&mut self, n: usize) {
            self.busy -= n;
            self.idle.extend(std::iter::repeat_n(self.now, n));
        }

        /// One decision at the current time, applied.
        fn step(&mut self) -> Plan {
            self.retiring = 0;
            self.settle();
            let live = self.live();
            let p = self.sizer.plan(self.counts(), &self.idle, self.now);
            let l = self.sizer.limits();
            assert!(p.start == 0 || p.retire == 0, "start and retire at once");
            assert!(live + p.start <= l.max_workers, "over max_workers");
            assert!(p.retire <= self.idle.len(), "retired a busy worker");
            assert!(
                p.retire == 0 || self.idle.len() - p.retire >= l.min_spare,
                "retired below the spare minimum"
            );
            self.idle.drain(..p.retire);
            self.retiring = p.retire;
            self.idle.extend(std::iter::repeat_n(self.now, p.start));
            if p.start > 0 {
                self.starts.push((self.now, p.start));
            }
            self.settle();
            p
        }

        /// Steps every `tick` for `d`.
        fn run(&mut self, d: Duration, tick: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.step();
                self.now += tick;
            }
        }
    }

    #[test]
    fn a_pool_at_rest_does_nothing_and_sleeps() {
        let t = Instant::now();
        let mut s = Sizer::new(limits(2, 256, (2, 8)));
        assert_eq!(s.plan(counts(2, 0), &[t; 2], t), Plan::default());
        // Idle exactly at the top of the band, for less than the idle
        // timeout: nothing now, a look when the first one reaches it.
        let mut s = Sizer::new(limits(2, 256, (2, 8)));
        let p = s.plan(counts(10, 2), &[t; 8], t);
        assert_eq!((p.start, p.retire), (0, 0));
        assert_eq!(p.wake, Some(t + DEFAULT_RETIRE_IDLE));
    }

    #[test]
    fn one_busy_worker_below_the_spare_band_starts_one_at_once_and_the_next_too() {
        let mut s = Sizer::new(limits(2, 256, (2, 8)));
        let t = Instant::now();
        assert_eq!(s.plan(counts(2, 1), &[t], t).start, 1);
        // No window, no rate: the next shortage a millisecond later too.
        assert_eq!(s.plan(counts(3, 2), &[t], t + MS).start, 1);
    }

    #[test]
    fn a_burst_is_met_in_one_batch() {
        let mut sim = Sim::new(limits(2, 1024, (2, 8)));
        sim.queued = 300;
        let p = sim.step();
        // 300 clients and 2 spares: 300 more than the 2 there.
        assert_eq!(p.start, 300);
        assert_eq!(sim.starts.len(), 1, "one batch");
        assert_eq!(sim.queued, 0, "every client taken");
        assert_eq!((sim.busy, sim.live()), (300, 302));
        // Nothing more to do at the next look.
        assert_eq!(sim.step().start, 0);
    }

    #[test]
    fn a_burst_over_max_conns_starts_up_to_the_cap_in_one_batch() {
        // The case: 15 clients against --max-conns 10.
        let l = limits(2, 10, (2, 8));
        assert_eq!(l.max_workers, 11);
        let mut s = Sizer::new(l);
        let t = Instant::now();
        let c = Counts {
            live: 2,
            busy: 2,
            queued: 13,
            ..Counts::default()
        };
        let p = s.plan(c, &[], t);
        assert_eq!(p.start, 9, "ten to serve, one to turn the rest away");
        assert_eq!(p.wake, None, "full: nothing to look for");
        // Full: nothing to start, no wake-up.
        let c = Counts {
            live: 11,
            busy: 10,
            queued: 40,
            ..Counts::default()
        };
        assert_eq!(s.plan(c, &[t], t + MS), Plan::default());
        // Retiring workers count against the cap; look again soon, as
        // their leaving wakes nobody.
        let c = Counts {
            live: 9,
            busy: 9,
            retiring: 2,
            queued: 3,
            died: 0,
        };
        let p = s.plan(c, &[], t + 2 * MS);
        assert_eq!(p.start, 0);
        assert_eq!(p.wake, Some(t + 2 * MS + RECHECK));
    }

    #[test]
    fn clients_still_arriving_are_looked_for_again_soon() {
        let mut s = Sizer::new(limits(2, 256, (2, 8)));
        let t = Instant::now();
        let c = Counts {
            live: 2,
            busy: 2,
            queued: 5,
            ..Counts::default()
        };
        let p = s.plan(c, &[], t);
        assert_eq!(p.start, 7);
        assert_eq!(p.wake, Some(t + RECHECK));
    }

    #[test]
    fn clients_arriving_one_by_one_each_find_a_worker_at_once() {
        // Each client connects once the previous one is served: the accept
        // queue never holds more than one, and none waits for a window.
        let mut sim = Sim::new(limits(2, 1024, (2, 8)));
        for k in 1..=200 {
            sim.queued = 1;
            sim.settle();
            assert_eq!(sim.queued, 0, "client {k} found no idle worker");
            sim.step();
        }
        assert_eq!((sim.busy, sim.live()), (200, 202));
    }

    #[test]
    fn a_dead_worker_is_replaced_at_once() {
        let mut s = Sizer::new(limits(2, 256, (1, 1)));
        let t = Instant::now();
        let c = Counts {
            live: 1,
            died: 1,
            ..Counts::default()
        };
        assert_eq!(s.plan(c, &[t], t).start, 1);
    }

    #[test]
    fn a_worker_that_dies_at_once_is_restarted_once_a_second() {
        let mut s = Sizer::new(limits(4, 256, (1, 8)));
        let t = Instant::now();
        let mut started = 0;
        let mut died = 0;
        // A decision every ms for 5 s; each worker started dies by the next.
        for ms in 0..5000u32 {
            let c = Counts {
                live: 3,
                died,
                ..Counts::default()
            };
            let p = s.plan(c, &[t; 3], t + ms * MS);
            started += p.start;
            died = p.start;
            if p.start == 0 && ms > 0 {
                assert!(p.wake.is_some(), "a held-back restart needs a wake-up");
            }
        }
        // The first start, its replacement at once (one death is no
        // loop), then one a second: at 1, 2, 3 and 4 s.
        assert_eq!(started, 6);
        // Deaths stop; a second later a burst is met at once again.
        let c = Counts {
            live: 4,
            busy: 4,
            queued: 50,
            ..Counts::default()
        };
        // 50 clients and one spare.
        assert_eq!(s.plan(c, &[], t + 7 * SEC).start, 51);
    }

    #[test]
    fn after_a_burst_the_pool_falls_back_into_the_spare_band() {
        let l = limits(2, 1024, (2, 8));
        let mut sim = Sim::new(l);
        sim.queued = 200;
        sim.step();
        assert_eq!(sim.busy, 200);
        // Every client leaves.
        sim.now += 100 * MS;
        sim.leave(200);
        let left = sim.now;
        let mut sizes = Vec::new();
        let mut last = sim.live();
        while sim.idle.len() > l.max_spare {
            sim.step();
            assert!(sim.live() <= last, "grew while idle");
            if sim.live() != last {
                sizes.push((sim.now - left, sim.live()));
            }
            last = sim.live();
            sim.now += 100 * MS;
            assert!(sim.now - left < 60 * SEC, "{sizes:?}");
        }
        let took = sim.now - left;
        // Over the band, a quarter a second: not all at once, and the idle
        // timeout takes the rest.
        assert!(took >= 5 * RETIRE_EVERY, "too abrupt: {took:?} {sizes:?}");
        assert!(took <= DEFAULT_RETIRE_IDLE + SEC, "{took:?} {sizes:?}");
        // Then, idle longer than the timeout, down to the spare minimum,
        // and it stays there.
        sim.run(30 * SEC, 100 * MS);
        assert_eq!(sim.live(), l.min_spare.max(l.min_workers));
        assert_eq!(sim.idle.len(), l.min_spare);
    }

    #[test]
    fn a_worker_idle_longer_than_the_timeout_retires_down_to_the_spare_minimum() {
        let l = limits(1, 256, (2, 8));
        let mut s = Sizer::new(l);
        let t = Instant::now();
        let d = DEFAULT_RETIRE_IDLE;
        // Five busy, five idle (within the band) since t, t+1s … t+4s.
        let idle: Vec<Instant> = (0..5u32).map(|k| t + k * SEC).collect();
        let c = counts(10, 5);
        let p = s.plan(c, &idle, t + d - MS);
        assert_eq!(p.retire, 0);
        assert_eq!(p.wake, Some(t + d), "wakes when the first is due");
        let p = s.plan(c, &idle, t + d);
        assert_eq!(p.retire, 1);
        assert_eq!(p.wake, Some(t + SEC + d));
        // All five overdue: three go, two stay.
        let p = s.plan(c, &idle, t + 20 * SEC);
        assert_eq!((p.retire, p.wake), (3, None));
        // Two idle: none go, however long.
        let p = s.plan(counts(7, 5), &idle[..2], t + 60 * SEC);
        assert_eq!(p, Plan::default());
        // 0 turns the rule off: the band alone decides.
        let mut off = l;
        off.retire_idle = None;
        let mut s = Sizer::new(off);
        assert_eq!(s.plan(c, &idle, t + 60 * SEC), Plan::default());
    }

    #[test]
    fn a_short_lull_retires_nothing() {
        let l = limits(2, 256, (2, 8));
        let mut s = Sizer::new(l);
        let t = Instant::now();
        let idle = |n| vec![t; n];
        assert_eq!(s.plan(counts(40, 0), &idle(40), t).retire, 0);
        let p = s.plan(counts(40, 0), &idle(40), t + 900 * MS);
        assert_eq!(p.retire, 0);
        assert_eq!(p.wake, Some(t + RETIRE_EVERY));
        // The clients come back: the excess clock starts over.
        assert_eq!(s.plan(counts(40, 35), &idle(5), t + 950 * MS).retire, 0);
        assert_eq!(s.plan(counts(40, 0), &idle(40), t + 1100 * MS).retire, 0);
        assert_eq!(s.plan(counts(40, 0), &idle(40), t + 2100 * MS).retire, 8);
        // And no second retirement within RETIRE_EVERY.
        assert_eq!(s.plan(counts(32, 0), &idle(32), t + 2500 * MS).retire, 0);
        assert_eq!(s.plan(counts(32, 0), &idle(32), t + 3100 * MS).retire, 6);
    }

    #[test]
    fn never_below_the_minimum_size_whatever_is_idle() {
        let l = limits(16, 256, (1, 2));
        let mut s = Sizer::new(l);
        let t = Instant::now();
        let idle = |n| vec![t; n];
        for k in 0..100u32 {
            assert_eq!(s.plan(counts(16, 0), &idle(16), t + k * SEC).retire, 0);
        }
        assert_eq!(s.plan(counts(17, 0), &idle(17), t + 100 * SEC).retire, 1);
    }

    /// Exhaustive over small pools: whatever the counts and the history, a
    /// plan never breaks a bound.
    #[test]
    fn every_plan_keeps_every_bound() {
        let t = Instant::now();
        for min in 1..4 {
            for max_conns in 1..8 {
                for smin in 1..4 {
                    for smax in smin..5 {
                        let l = limits(min, max_conns, (smin, smax));
                        let mut s = Sizer::new(l);
                        let mut k = 0u32;
                        for live in 0..=l.max_workers {
                            for busy in 0..=live.min(max_conns) {
                                for retiring in 0..=(l.max_workers - live) {
                                    for (queued, died) in [(0, 0), (1, 0), (5, 1)] {
                                        k += 1;
                                        let c = Counts {
                                            live,
                                            busy,
                                            retiring,
                                            queued,
                                            died,
                                        };
                                        let now = t + k * 700 * MS;
                                        // Half idle for long, half just now.
                                        let idle: Vec<Instant> = (0..c.idle())
                                            .map(|i| if i % 2 == 0 { t } else { now })
                                            .collect();
                                        let p = s.plan(c, &idle, now);
                                        let ctx = format!("{l:?} {c:?} {p:?}");
                                        assert!(p.start == 0 || p.retire == 0, "{ctx}");
                                        assert!(
                                            live + retiring + p.start <= l.max_workers,
                                            "{ctx}"
                                        );
                                        assert!(
                                            p.retire == 0 || live - p.retire >= l.min_workers,
                                            "{ctx}"
                                        );
                                        assert!(
                                            p.retire == 0 || c.idle() - p.retire >= smin,
                                            "{ctx}"
                                        );
                                        assert!(p.wake.is_none_or(|w| w > now), "{ctx}");
                                        // Something missing and room for it:
                                        // started now or a wake-up is set.
                                        let missing = c.wanted(&l) > live;
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
        assert_eq!(log.note(&grow(2), t + SEC), None);
        assert_eq!(log.note(&grow(4), t + 2 * SEC), None);
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
