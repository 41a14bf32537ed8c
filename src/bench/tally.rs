//! The run's results: what one worker measured ([`Tally`]), merged into
//! one at the end. The input it was measured against is [`super::plan`].

use std::time::Instant;

use hdrhistogram::Histogram;

use super::hist;
use super::interval;
use super::plan::Plan;
use crate::error::Result;

/// What one worker measured; merged into one at the end.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Latency of every recorded request, in nanoseconds.
    pub(crate) hist: Histogram<u64>,
    /// Any request that failed: mismatch, early close, reset, timeout (TCP).
    pub(crate) errors: u64,
    /// Echoes with a wrong byte (a subset of `errors`).
    pub(crate) mismatches: u64,
    /// UDP datagrams with no echo within the timeout.
    pub(crate) lost: u64,
    /// UDP echoes that came after their timeout (already counted as lost).
    pub(crate) late: u64,
    /// UDP echoes that came a second time for an answered request.
    pub(crate) duplicated: u64,
    /// Open loop: requests due in the measured window that were never sent
    /// because the connection was still waiting for an earlier echo.
    pub(crate) unfinished: u64,
    /// Requests sent (warm-up included) and never answered: still waiting
    /// when the run ended, after its grace ([`super::plan::DRAIN`]) for late echoes.
    pub(crate) unanswered: u64,
    /// When the last recorded request completed.
    pub(crate) last_done: Option<Instant>,
    /// When the worker stopped.
    pub(crate) stopped: Option<Instant>,
    /// `--interval`: this worker's open interval.
    pub(crate) window: Option<interval::Window>,
    /// `--tls --new-conn`: latency of every recorded handshake (ns).
    pub(crate) handshakes: Histogram<u64>,
    /// Of those, resumed ones.
    pub(crate) resumed: u64,
}

impl Tally {
    /// An empty tally.
    pub(crate) fn new() -> Result<Tally> {
        Ok(Tally {
            hist: hist::latency("creating the latency histogram")?,
            errors: 0,
            mismatches: 0,
            lost: 0,
            late: 0,
            duplicated: 0,
            unfinished: 0,
            unanswered: 0,
            last_done: None,
            stopped: None,
            window: None,
            handshakes: hist::latency("creating the handshake histogram")?,
            resumed: 0,
        })
    }

    /// A worker's empty tally, cut into intervals if the run is.
    pub(crate) fn for_plan(plan: &Plan, slot: usize) -> Result<Tally> {
        let mut t = Tally::new()?;
        if let Some(board) = &plan.intervals {
            t.window = Some(interval::Window::new(slot, board.cut)?);
        }
        Ok(t)
    }

    /// Hands the intervals this worker has closed to the main thread: call
    /// it every turn of the loop, so a worker with no echoes still moves on.
    pub(crate) fn tick(&mut self, plan: &Plan, now: Instant) {
        if let (Some(w), Some(board)) = (self.window.as_mut(), plan.intervals.as_ref()) {
            w.roll(now);
            board.report(w);
        }
    }

    /// Records one request's latency, `now - due`.
    pub(crate) fn record(&mut self, due: Instant, now: Instant) {
        let ns = hist::clamp(now.saturating_duration_since(due));
        self.hist.saturating_record(ns);
        if let Some(w) = &mut self.window {
            w.record(ns, now);
        }
        self.last_done = Some(now);
    }

    /// Adds another worker's tally to this one.
    pub(crate) fn merge(&mut self, other: Tally) {
        // Same bounds on both sides, so adding cannot fail; if it ever did,
        // the error count says so rather than a panic.
        if self.hist.add(&other.hist).is_err() {
            self.errors += 1;
        }
        if self.handshakes.add(&other.handshakes).is_err() {
            self.errors += 1;
        }
        self.resumed += other.resumed;
        self.errors += other.errors;
        self.mismatches += other.mismatches;
        self.lost += other.lost;
        self.late += other.late;
        self.duplicated += other.duplicated;
        self.unfinished += other.unfinished;
        self.unanswered += other.unanswered;
        self.last_done = self.last_done.max(other.last_done);
        self.stopped = self.stopped.max(other.stopped);
    }
}
