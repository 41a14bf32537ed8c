//! `bench --interval SECS`: the run cut into intervals, a line (or a JSON
//! object) per interval as it ends, so a long run can be watched and a
//! stall dated, as iperf3's `--json-stream` does.
//!
//! # Exact by construction
//! An interval holds the requests that *completed* in it, and only recorded
//! ones (due after the warm-up), so interval 0 starts when the warm-up ends
//! and no warm-up request is in any interval. Every recorded latency goes
//! into the run's histogram and into exactly one interval's: requests that
//! come back after the last full interval (a `-d` that is not a multiple of
//! SECS, echoes landing after the end) fall into the last one, which is
//! printed with its real, shorter length. So the intervals' requests add up
//! to the summary's, always.
//!
//! # Shape
//! All of it is pure, with the clock passed in:
//! - a worker's [`Window`] takes its latencies with their completion times
//!   and closes an interval when a later time comes;
//! - the main thread's [`Collector`] adds the workers' closed intervals and
//!   releases interval k once every worker has moved past it (or ended);
//! - [`Board`] is the collector behind a lock in the shared plan, and
//!   [`Line`] the figures of one interval, printed as text or JSON.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;

use super::hist;
use super::text::{self, micros, round3, thousands};
use crate::error::{Error, Result};

/// The shortest `--interval`: below it the lines would outpace the reader
/// and the per-interval percentiles would rest on too few requests.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// An empty latency histogram with the run's bounds.
fn histogram() -> Result<Histogram<u64>> {
    hist::latency("creating an interval histogram")
}

/// How the run is cut: where interval 0 starts, how long each is, and the
/// last one (`-d`), into which anything later falls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cut {
    pub(crate) origin: Instant,
    pub(crate) len: Duration,
    /// The last interval's number, with `-d`; `None` with `-n`.
    pub(crate) last: Option<u64>,
}

impl Cut {
    /// The intervals of a run measured from `origin`, `duration` long
    /// (`None` with `-n`), `len` each.
    pub(crate) fn new(origin: Instant, len: Duration, duration: Option<Duration>) -> Cut {
        let last = duration.map(|d| last_index(d, len));
        Cut { origin, len, last }
    }

    /// The interval `now` falls in.
    pub(crate) fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let k = u64::try_from(since / self.len.as_nanos().max(1)).unwrap_or(u64::MAX);
        self.last.map_or(k, |last| k.min(last))
    }
}

/// The number of the interval that holds the end of a `span` measured:
/// `ceil(span / len) - 1`, so an end exactly on a boundary closes the
/// interval before it rather than opening an empty one.
pub(crate) fn last_index(span: Duration, len: Duration) -> u64 {
    let n = span.as_nanos().div_ceil(len.as_nanos().max(1));
    u64::try_from(n.saturating_sub(1)).unwrap_or(u64::MAX)
}

/// One worker's interval finished: its number and latencies.
#[derive(Debug)]
pub(crate) struct Closed {
    pub(crate) index: u64,
    pub(crate) hist: Histogram<u64>,
}

/// One worker's open interval.
#[derive(Debug)]
pub(crate) struct Window {
    /// The worker's slot, which the collector waits for.
    pub(crate) slot: usize,
    cut: Cut,
    /// The interval being filled.
    index: u64,
    hist: Histogram<u64>,
    /// Closed and not yet handed to the collector.
    closed: Vec<Closed>,
    /// Whether `index` moved since the collector last heard.
    moved: bool,
}

impl Window {
    pub(crate) fn new(slot: usize, cut: Cut) -> Result<Window> {
        Ok(Window {
            slot,
            cut,
            index: 0,
            hist: histogram()?,
            closed: Vec::new(),
            moved: false,
        })
    }

    /// Moves to the interval of `now`, closing the open one if it is past.
    pub(crate) fn roll(&mut self, now: Instant) {
        let k = self.cut.index(now);
        if k <= self.index {
            return;
        }
        if !self.hist.is_empty() {
            // A copy with the same bounds, emptied: no fallible constructor
            // on a worker's hot path.
            let mut fresh = self.hist.clone();
            fresh.reset();
            let full = std::mem::replace(&mut self.hist, fresh);
            self.closed.push(Closed {
                index: self.index,
                hist: full,
            });
        }
        self.index = k;
        self.moved = true;
    }

    /// Records a latency of `ns` nanoseconds that completed at `now`.
    pub(crate) fn record(&mut self, ns: u64, now: Instant) {
        self.roll(now);
        self.hist.saturating_record(ns);
    }

    /// What the collector has not heard yet: closed intervals and the
    /// interval this worker is now in (all before it are final). `None` if
    /// nothing changed.
    pub(crate) fn news(&mut self) -> Option<(Vec<Closed>, u64)> {
        if !self.moved {
            return None;
        }
        self.moved = false;
        Some((std::mem::take(&mut self.closed), self.index))
    }

    /// The worker has ended: everything it holds, the open interval too.
    pub(crate) fn into_closed(mut self) -> Vec<Closed> {
        if !self.hist.is_empty() {
            self.closed.push(Closed {
                index: self.index,
                hist: self.hist,
            });
        }
        self.closed
    }
}

/// Adds the workers' intervals and releases each once it is complete.
#[derive(Debug)]
pub(crate) struct Collector {
    /// Per worker: the interval it is in (all before are final), or `None`
    /// once it has ended.
    reached: Vec<Option<u64>>,
    /// Intervals with latencies that are not released yet.
    pending: BTreeMap<u64, Histogram<u64>>,
    /// The next interval to release.
    next: u64,
}

impl Collector {
    pub(crate) fn new(workers: usize) -> Collector {
        Collector {
            reached: vec![Some(0); workers],
            pending: BTreeMap::new(),
            next: 0,
        }
    }

    /// Takes worker `slot`'s closed intervals; `reached` is the interval it
    /// is in now, `None` if it has ended.
    pub(crate) fn add(&mut self, slot: usize, closed: Vec<Closed>, reached: Option<u64>) {
        for c in closed {
            match self.pending.get_mut(&c.index) {
                // Same bounds on both sides: adding cannot fail.
                Some(h) => {
                    let _ = h.add(&c.hist);
                }
                None => {
                    self.pending.insert(c.index, c.hist);
                }
            }
        }
        if let Some(r) = self.reached.get_mut(slot) {
            *r = reached;
        }
    }

    /// Intervals every worker has moved past, in order, gaps as empty.
    pub(crate) fn ready(&mut self) -> Result<Vec<(u64, Histogram<u64>)>> {
        let upto = self.reached.iter().flatten().min().copied();
        match upto {
            Some(upto) => self.release(upto),
            // Every worker has ended: what is pending is all released.
            None => self.release(self.pending.keys().next_back().map_or(0, |k| k + 1)),
        }
    }

    /// The end of the run: every interval up to `last` (or the last with
    /// latencies, if later), whether workers said they ended or not.
    pub(crate) fn finish(&mut self, last: u64) -> Result<Vec<(u64, Histogram<u64>)>> {
        let top = self.pending.keys().next_back().copied().unwrap_or(0);
        self.release(last.max(top).saturating_add(1))
    }

    /// Releases intervals `next..upto`.
    fn release(&mut self, upto: u64) -> Result<Vec<(u64, Histogram<u64>)>> {
        let mut out = Vec::new();
        while self.next < upto {
            let hist = match self.pending.remove(&self.next) {
                Some(h) => h,
                None => histogram()?,
            };
            out.push((self.next, hist));
            self.next += 1;
        }
        Ok(out)
    }
}

/// The collector in the shared plan, and how the run is cut.
#[derive(Debug)]
pub(crate) struct Board {
    pub(crate) cut: Cut,
    collector: Mutex<Collector>,
    /// One JSON object per line instead of text.
    json: bool,
}

impl Board {
    pub(crate) fn new(cut: Cut, workers: usize, json: bool) -> Board {
        Board {
            cut,
            collector: Mutex::new(Collector::new(workers)),
            json,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collector> {
        self.collector.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker's news: taken at most once per interval per worker.
    pub(crate) fn report(&self, window: &mut Window) {
        if let Some((closed, reached)) = window.news() {
            self.lock().add(window.slot, closed, Some(reached));
        }
    }

    /// A worker's tally came back: its intervals are all final.
    pub(crate) fn ended(&self, window: Window) {
        let slot = window.slot;
        self.lock().add(slot, window.into_closed(), None);
    }

    /// Prints the intervals complete so far (main thread, at its tick).
    pub(crate) fn print_ready(&self, bar: Option<&ProgressBar>) -> Result<()> {
        let ready = self.lock().ready()?;
        self.print(ready, None, bar)
    }

    /// Prints every interval left; the last ends `measured` after the
    /// warm-up (the summary's duration).
    pub(crate) fn print_rest(&self, measured: Duration) -> Result<()> {
        let last = last_index(measured, self.cut.len);
        let rest = self.lock().finish(last)?;
        self.print(rest, Some((last, measured)), None)
    }

    fn print(
        &self,
        intervals: Vec<(u64, Histogram<u64>)>,
        end: Option<(u64, Duration)>,
        bar: Option<&ProgressBar>,
    ) -> Result<()> {
        let mut text = String::new();
        for (k, hist) in intervals {
            let from = self
                .cut
                .len
                .saturating_mul(u32::try_from(k).unwrap_or(u32::MAX));
            let mut until = from + self.cut.len;
            if let Some((last, measured)) = end
                && k == last
                && measured > from
            {
                until = measured;
            }
            let line = Line::new(k, from, until, &hist);
            if self.json {
                text.push_str(&line.json()?);
            } else {
                text.push_str(&line.human());
            }
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        match bar {
            Some(bar) => bar.suspend(|| text::print_stdout(&text)),
            None => text::print_stdout(&text),
        }
    }
}

/// The figures of one interval, as `--json` prints them.
#[derive(Debug, Serialize)]
pub(crate) struct Line {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) index: u64,
    /// Seconds after the warm-up's end.
    pub(crate) start_s: f64,
    pub(crate) end_s: f64,
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}

impl Line {
    pub(crate) fn new(index: u64, from: Duration, until: Duration, h: &Histogram<u64>) -> Line {
        let secs = until.saturating_sub(from).as_secs_f64();
        let requests = h.len();
        let q = |x: f64| {
            if requests == 0 {
                0.0
            } else {
                micros(h.value_at_quantile(x))
            }
        };
        Line {
            kind: "interval",
            index,
            start_s: round3(from.as_secs_f64()),
            end_s: round3(until.as_secs_f64()),
            requests,
            rps: if secs > 0.0 {
                round3(requests as f64 / secs)
            } else {
                0.0
            },
            p50_us: q(0.5),
            p99_us: q(0.99),
            max_us: if requests == 0 { 0.0 } else { micros(h.max()) },
        }
    }

    /// One line of text: the interval, its count and rate, its latency.
    pub(crate) fn human(&self) -> String {
        format!(
            "[{:7.3}-{:7.3} s] {:>10} requests {:>10} req/s  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            self.start_s,
            self.end_s,
            thousands(self.requests),
            thousands(self.rps.round() as u64),
            self.p50_us / 1e3,
            self.p99_us / 1e3,
            self.max_us / 1e3
        )
    }

    /// One JSON object, no newline.
    pub(crate) fn json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Io {
            what: "encoding an interval as JSON",
            source: std::io::Error::other(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cut(duration: Option<Duration>) -> (Instant, Cut) {
        let t0 = Instant::now();
        (t0, Cut::new(t0, 100 * MS, duration))
    }

    fn sum(released: &[(u64, Histogram<u64>)]) -> u64 {
        released.iter().map(|(_, h)| h.len()).sum()
    }

    #[test]
    fn the_last_index_closes_on_a_boundary() {
        assert_eq!(last_index(300 * MS, 100 * MS), 2);
        assert_eq!(last_index(301 * MS, 100 * MS), 3);
        assert_eq!(last_index(Duration::ZERO, 100 * MS), 0);
    }

    #[test]
    fn late_echoes_fall_into_the_last_interval() {
        let (t0, c) = cut(Some(250 * MS));
        assert_eq!(c.index(t0), 0);
        assert_eq!(c.index(t0 + 99 * MS), 0);
        assert_eq!(c.index(t0 + 100 * MS), 1);
        assert_eq!(c.index(t0 + 249 * MS), 2);
        assert_eq!(c.index(t0 + 900 * MS), 2);
        // -n: no last interval.
        let (t0, c) = cut(None);
        assert_eq!(c.index(t0 + 900 * MS), 9);
    }

    #[test]
    fn a_window_closes_an_interval_when_a_later_time_comes() {
        let (t0, c) = cut(None);
        let mut w = Window::new(0, c).unwrap();
        w.record(10, t0 + MS);
        w.record(20, t0 + 2 * MS);
        assert!(w.news().is_none(), "nothing closed yet");
        // Quiet through interval 1, then a request in interval 3.
        w.record(30, t0 + 350 * MS);
        let (closed, reached) = w.news().unwrap();
        assert_eq!(reached, 3);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].index, closed[0].hist.len()), (0, 2));
        w.roll(t0 + 360 * MS);
        assert!(w.news().is_none());
        let rest = w.into_closed();
        assert_eq!((rest[0].index, rest[0].hist.len()), (3, 1));
    }

    #[test]
    fn the_collector_waits_for_every_worker_and_fills_gaps() {
        let (t0, c) = cut(None);
        let mut a = Window::new(0, c).unwrap();
        let mut b = Window::new(1, c).unwrap();
        let mut col = Collector::new(2);
        a.record(5, t0 + MS);
        a.record(5, t0 + 250 * MS);
        let (closed, reached) = a.news().unwrap();
        col.add(0, closed, Some(reached));
        // Worker 1 has not moved past interval 0: nothing is released.
        assert!(col.ready().unwrap().is_empty());
        b.record(7, t0 + 50 * MS);
        b.roll(t0 + 120 * MS);
        let (closed, reached) = b.news().unwrap();
        col.add(1, closed, Some(reached));
        let out = col.ready().unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].1.len()), (0, 2));
        // Both end; worker 0's open interval 2 and the empty 1 come out.
        col.add(0, a.into_closed(), None);
        col.add(1, b.into_closed(), None);
        let out = col.finish(2).unwrap();
        assert_eq!(out.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(sum(&out), 1);
    }

    #[test]
    fn the_intervals_add_up_to_every_recorded_request() {
        // Three workers, completions spread unevenly, some after the end of
        // a 0.55 s run: the sum over intervals is the count recorded.
        let (t0, c) = cut(Some(550 * MS));
        let mut col = Collector::new(3);
        let mut windows: Vec<Window> = (0..3).map(|s| Window::new(s, c).unwrap()).collect();
        let mut recorded = 0u64;
        let mut released = Vec::new();
        for step in 0..700u64 {
            let now = t0 + Duration::from_micros(step * 997);
            for (s, w) in windows.iter_mut().enumerate() {
                if (step + s as u64).is_multiple_of(s as u64 + 1) {
                    w.record(1 + step, now);
                    recorded += 1;
                }
                w.roll(now);
                if let Some((closed, reached)) = w.news() {
                    col.add(s, closed, Some(reached));
                }
            }
            released.extend(col.ready().unwrap());
        }
        for w in windows {
            let slot = w.slot;
            col.add(slot, w.into_closed(), None);
        }
        released.extend(col.finish(last_index(550 * MS, 100 * MS)).unwrap());
        let order: Vec<u64> = released.iter().map(|(k, _)| *k).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
        assert_eq!(sum(&released), recorded);
    }

    #[test]
    fn a_line_has_its_rate_over_its_own_length() {
        let mut h = histogram().unwrap();
        for us in [10u64, 20, 30, 40] {
            h.record(us * 1000).unwrap();
        }
        let l = Line::new(2, 200 * MS, 250 * MS, &h);
        assert_eq!((l.requests, l.rps), (4, 80.0));
        assert_eq!(l.end_s, 0.25);
        assert!(l.p50_us >= 19.9 && l.p50_us <= 20.1, "{l:?}");
        assert!(l.human().contains("80 req/s"), "{}", l.human());
        assert!(l.json().unwrap().starts_with("{\"type\":\"interval\""));
    }
}
