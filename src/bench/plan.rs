//! The run's input, shared by every bench worker: its settings, when to
//! send (the schedule), how many requests are left (`-n`), where errors are
//! logged and the progress counters. What a worker measured is apart, in
//! [`super::tally`].

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::interval;
use crate::net::source::Sources;
use crate::sys::stop;

/// Error lines printed in full; past this they are only counted, so a dead
/// server with 10,000 connections does not flood the terminal.
pub(crate) const MAX_ERROR_LINES: usize = 20;
/// How long, at most, the workers wait after the end of the run for the
/// echoes of requests already sent (never longer than `--timeout`): a
/// request still unanswered then is counted as unanswered, a failure.
pub(crate) const DRAIN: Duration = Duration::from_secs(1);
/// How far a worker's loop may sleep: it bounds how late the stop flag,
/// the end of the run and timeouts are noticed.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// The run's shape, as the command line gave it.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) addr: SocketAddr,
    pub(crate) conns: usize,
    pub(crate) threads: usize,
    pub(crate) size: usize,
    pub(crate) warmup: Duration,
    /// `None` with `-n`.
    pub(crate) duration: Option<Duration>,
    pub(crate) budget: Option<u64>,
    pub(crate) rate: Option<f64>,
    pub(crate) new_conn: bool,
    pub(crate) timeout: Duration,
    /// `--interval`: how long each interval is, and whether as JSON.
    pub(crate) interval: Option<Every>,
    /// `--hold`: one echo per connection, then idle to the end.
    pub(crate) hold: bool,
}

/// `--interval SECS` (and `--json`): see [`super::interval`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Every {
    pub(crate) len: Duration,
    pub(crate) json: bool,
}

/// A counter on its own cache line, so that threads bumping theirs do not
/// slow each other down.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Padded(pub AtomicU64);

/// Shared by all workers for the whole run.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) settings: Settings,
    /// When the first requests are due.
    pub(crate) start: Instant,
    /// Requests due before this are not recorded.
    pub(crate) warmup_end: Instant,
    /// No request due at or after this is sent (`None` with `-n`).
    pub(crate) end: Option<Instant>,
    /// Gap between two requests of one connection in the open loop.
    pub(crate) interval: Option<Duration>,
    /// Gap between the first requests of two connections in the open loop,
    /// so the connections do not all fire at once.
    pub(crate) stagger: Duration,
    /// Recorded requests handed out so far, against `-n`.
    issued: AtomicU64,
    /// Recorded requests answered per worker (warm-up excluded), for the
    /// progress line.
    progress: Vec<Padded>,
    /// Errors so far, for the progress line.
    errors: AtomicU64,
    /// Error lines waiting for the main thread to print them.
    log: Mutex<Vec<String>>,
    /// Error lines logged so far (printed or not).
    logged: AtomicU64,
    /// The first error line, for the final one-line verdict.
    first_error: Mutex<Option<String>>,
    /// `--interval`: the intervals the workers hand in.
    pub(crate) intervals: Option<interval::Board>,
    /// `--source-addrs` for the connections the workers open themselves
    /// (`--new-conn`); kept connections are opened from them at setup.
    sources: Option<Sources>,
    /// Connections opened by the workers so far: the next one binds
    /// address number `dialed` (round robin), whichever worker opens it.
    dialed: AtomicU64,
}

impl Plan {
    /// Fixes the schedule: the clock starts now.
    pub(crate) fn new(settings: Settings) -> Plan {
        let start = Instant::now();
        let warmup_end = start + settings.warmup;
        let end = settings.duration.map(|d| warmup_end + d);
        let (interval, stagger) = match settings.rate {
            Some(rate) => (
                Some(Duration::from_secs_f64(settings.conns as f64 / rate)),
                Duration::from_secs_f64(1.0 / rate),
            ),
            None => (None, Duration::ZERO),
        };
        let progress = (0..settings.threads).map(|_| Padded::default()).collect();
        let intervals = settings.interval.map(|every| {
            let cut = interval::Cut::new(warmup_end, every.len, settings.duration);
            interval::Board::new(cut, settings.threads, every.json)
        });
        Plan {
            settings,
            start,
            warmup_end,
            end,
            interval,
            stagger,
            issued: AtomicU64::new(0),
            progress,
            errors: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            logged: AtomicU64::new(0),
            first_error: Mutex::new(None),
            intervals,
            sources: None,
            dialed: AtomicU64::new(0),
        }
    }

    /// The plan with `--source-addrs` for the workers' own connects.
    pub(crate) fn with_sources(mut self, sources: Option<Sources>) -> Plan {
        self.sources = sources;
        self
    }

    /// The source addresses and the number of the next connection a worker
    /// opens, or `None` without `--source-addrs`.
    pub(crate) fn next_source(&self) -> Option<(&Sources, u64)> {
        let src = self.sources.as_ref()?;
        Some((src, self.dialed.fetch_add(1, Ordering::Relaxed)))
    }

    /// When connection `id` sends its first request.
    pub(crate) fn first_due(&self, id: u64) -> Instant {
        match self.interval {
            // Spread over one interval: connection i starts i/R seconds in.
            Some(interval) => {
                let offset = self
                    .stagger
                    .saturating_mul(u32::try_from(id).unwrap_or(u32::MAX));
                self.start + offset.min(interval)
            }
            None => self.start,
        }
    }

    /// Decides the request due at `due`, at `now`: `None` if it is not
    /// sent (the run is over for this connection, or it came due too late
    /// to be sent before the end), else whether it is recorded.
    pub(crate) fn admit(&self, due: Instant, now: Instant) -> Option<bool> {
        if stop::requested() || self.end.is_some_and(|end| due >= end || now >= end) {
            return None;
        }
        let record = due >= self.warmup_end;
        if record
            && let Some(budget) = self.settings.budget
            && self.issued.fetch_add(1, Ordering::Relaxed) >= budget
        {
            return None;
        }
        Some(record)
    }

    /// Whether no request may be sent any more at `now` (`-d` is over):
    /// the workers only wait for the echoes still owed, until [`Plan::drained`].
    pub(crate) fn ended(&self, now: Instant) -> bool {
        self.end.is_some_and(|end| now >= end)
    }

    /// When the workers stop waiting for the echoes still owed at the end:
    /// [`DRAIN`] after it, or `--timeout` if shorter. `None` with `-n`,
    /// whose run ends when every request is answered or timed out.
    pub(crate) fn drained(&self) -> Option<Instant> {
        self.end.map(|end| end + self.settings.timeout.min(DRAIN))
    }

    /// Open loop: a slot due at `due` that is not sent because the run
    /// ended first, counted among the unfinished if it was in the window.
    pub(crate) fn unsent(&self, due: Instant) -> u64 {
        let in_window =
            due >= self.warmup_end && self.end.is_none_or(|end| due < end) && !stop::requested();
        u64::from(self.interval.is_some() && in_window)
    }

    /// Publishes worker `slot`'s completed count for the progress line.
    pub(crate) fn set_progress(&self, slot: usize, done: u64) {
        if let Some(p) = self.progress.get(slot) {
            p.0.store(done, Ordering::Relaxed);
        }
    }

    /// Recorded requests answered so far by all workers (warm-up excluded).
    pub(crate) fn completed(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Errors so far.
    pub(crate) fn errors_so_far(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Records one error line; the main thread prints it at its next tick.
    pub(crate) fn log_error(&self, line: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let n = self.logged.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            *first = Some(line.clone());
        }
        if n < MAX_ERROR_LINES as u64 {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
        } else if n == MAX_ERROR_LINES as u64 {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push("further errors are counted but not shown".into());
        }
    }

    /// Prints the error lines logged since the last call, above the
    /// progress line when there is one.
    pub(crate) fn flush_log(&self, bar: Option<&ProgressBar>) {
        let lines = std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()));
        for line in lines {
            match bar {
                Some(bar) => bar.suspend(|| eprintln!("netecho: {line}")),
                None => eprintln!("netecho: {line}"),
            }
        }
    }

    /// The first error line of the run, if any.
    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// When one connection's requests are due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Due time of the next request in the open loop.
    next_due: Instant,
}

impl Pace {
    /// The schedule of connection `id`.
    pub(crate) fn new(plan: &Plan, id: u64) -> Pace {
        Pace {
            next_due: plan.first_due(id),
        }
    }

    /// Takes the due time of the next request. Closed loop: now. Open loop:
    /// the next slot of the schedule, even if it has passed (a queued
    /// request, whose latency still counts from its slot).
    pub(crate) fn take(&mut self, plan: &Plan, now: Instant) -> Instant {
        match plan.interval {
            Some(interval) => {
                if now >= plan.warmup_end && self.next_due < plan.warmup_end {
                    // Warm-up slots still unsent when it ends are dropped:
                    // they would not be recorded, and a backlog carried over
                    // would start the measured run behind schedule.
                    let behind = plan.warmup_end.duration_since(self.next_due).as_nanos();
                    let step = interval.as_nanos().max(1);
                    let skip = behind.div_ceil(step).saturating_mul(step);
                    self.next_due += Duration::from_nanos(u64::try_from(skip).unwrap_or(u64::MAX));
                }
                let due = self.next_due;
                self.next_due += interval;
                due
            }
            None => now,
        }
    }

    /// Open loop: slots that fell due in `[from, until)` and were never sent.
    pub(crate) fn missed(&self, plan: &Plan, from: Instant, until: Instant) -> u64 {
        let Some(interval) = plan.interval else {
            return 0;
        };
        let first = self.next_due.max(from);
        if first >= until || interval.is_zero() {
            return 0;
        }
        let span = until.duration_since(first).as_nanos();
        let step = interval.as_nanos().max(1);
        u64::try_from(span.div_ceil(step)).unwrap_or(u64::MAX)
    }
}

/// The end of a run for the connections (TCP) or sockets (UDP) `waiting`
/// for their next slot: they send no more, and each slot they would still
/// have had in the measured window counts as unfinished. Returns that
/// count and which of them to retire.
pub(crate) fn stop_waiting<'a>(
    plan: &Plan,
    waiting: impl Iterator<Item = (usize, &'a Pace)>,
) -> (u64, Vec<usize>) {
    let (from, until) = (plan.warmup_end, plan.end);
    let mut unfinished = 0u64;
    let mut retire = Vec::new();
    for (i, pace) in waiting {
        if let Some(until) = until {
            unfinished = unfinished.saturating_add(pace.missed(plan, from, until));
        }
        retire.push(i);
    }
    (unfinished, retire)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: Option<f64>, conns: usize) -> Plan {
        Plan::new(Settings {
            addr: "127.0.0.1:1".parse().unwrap(),
            conns,
            threads: 1,
            size: 64,
            warmup: Duration::from_secs(1),
            duration: Some(Duration::from_secs(3)),
            budget: None,
            rate,
            new_conn: false,
            timeout: Duration::from_secs(1),
            interval: None,
            hold: false,
        })
    }

    #[test]
    fn open_loop_spreads_the_rate_over_connections() {
        let p = plan(Some(1000.0), 10);
        // 1000/s over 10 connections: each sends every 10 ms, 1 ms apart.
        assert_eq!(p.interval, Some(Duration::from_millis(10)));
        assert_eq!(p.first_due(3) - p.start, Duration::from_millis(3));
        let mut pace = Pace::new(&p, 0);
        let late = p.start + Duration::from_millis(35);
        // A late connection still gets every slot, each with its own due time.
        assert_eq!(pace.take(&p, late), p.start);
        assert_eq!(pace.take(&p, late), p.start + Duration::from_millis(10));
        assert_eq!(pace.missed(&p, p.start, late), 2);
    }

    #[test]
    fn a_warmup_backlog_is_dropped_when_the_warmup_ends() {
        let p = plan(Some(1000.0), 10);
        let mut pace = Pace::new(&p, 0);
        // Far behind during the warm-up: the slot it is owed is still sent.
        let early = p.start + Duration::from_millis(500);
        assert_eq!(pace.take(&p, early), p.start);
        // Once the warm-up is over, the next slot is the first one after it.
        let after = p.warmup_end + Duration::from_millis(3);
        let due = pace.take(&p, after);
        assert!(due >= p.warmup_end && due < p.warmup_end + Duration::from_millis(10));
        assert_eq!(pace.take(&p, after), due + Duration::from_millis(10));
    }

    #[test]
    fn closed_loop_is_due_now() {
        let p = plan(None, 4);
        let mut pace = Pace::new(&p, 2);
        let now = p.start + Duration::from_millis(7);
        assert_eq!(pace.take(&p, now), now);
        assert_eq!(pace.missed(&p, p.start, now), 0);
    }

    #[test]
    fn warmup_requests_are_sent_but_not_recorded() {
        let p = plan(None, 1);
        assert_eq!(p.admit(p.start, p.start), Some(false));
        assert_eq!(p.admit(p.warmup_end, p.warmup_end), Some(true));
        let end = p.end.unwrap();
        assert_eq!(p.admit(end, end), None);
        // A slot due before the end but reached after it is not sent.
        assert_eq!(p.admit(p.warmup_end, end), None);
        // The echoes still owed are waited for, no longer than the timeout.
        assert_eq!(p.drained(), Some(end + Duration::from_secs(1)));
    }

    #[test]
    fn stopping_the_waiting_counts_their_slots_left_in_the_window() {
        // 100/s over 2 connections: each sends every 20 ms; the measured
        // window is 3 s after a 1 s warm-up.
        let p = plan(Some(100.0), 2);
        let end = p.end.unwrap();
        let mut a = Pace::new(&p, 0);
        let b = Pace::new(&p, 1);
        // `a` took every slot up to 100 ms before the end: 5 left.
        while a.take(&p, end) < end - Duration::from_millis(100) {}
        let (unfinished, retire) = stop_waiting(&p, [(0, &a), (7, &b)].into_iter());
        // `b` never sent: its 150 slots of the window (warm-up ones dropped).
        assert_eq!(
            unfinished,
            4 + 150,
            "a: {}",
            a.missed(&p, p.warmup_end, end)
        );
        assert_eq!(retire, vec![0, 7]);
        // Closed loop: nothing is due on a schedule, nothing unfinished.
        let closed = plan(None, 1);
        let pace = Pace::new(&closed, 0);
        assert_eq!(
            stop_waiting(&closed, [(0, &pace)].into_iter()),
            (0, vec![0])
        );
    }
}
