//! What `ping` prints: a line per probe and the closing summary, as text
//! (ping(8)'s layout) or, with `--json`, one JSON object per line: one per
//! probe (`"type":"probe"`) and one summary (`"type":"summary"`) at the
//! end, also after Ctrl-C or a failure to start. The figures are kept in
//! constant memory, so a run without `-c` can go on for days.

use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::words::count;

/// Stdout, line by line; a reader that went away (`| head`) ends the run
/// quietly instead of as an error.
pub(crate) struct Out {
    pub(crate) closed: bool,
    pub(crate) json: bool,
}

impl Out {
    pub(crate) fn new(json: bool) -> Out {
        Out {
            closed: false,
            json,
        }
    }

    fn write(&mut self, text: &str) {
        if self.closed {
            return;
        }
        let mut out = io::stdout().lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            self.closed = true;
        }
    }

    /// A line of the text output (nothing with `--json`).
    pub(crate) fn line(&mut self, text: &str) {
        if !self.json {
            self.write(text);
        }
    }

    /// An object of the `--json` output (nothing without it).
    pub(crate) fn object(&mut self, v: &Value) {
        if self.json {
            self.write(&v.to_string());
        }
    }
}

/// Min, average, median, max and standard deviation of a sample, kept in
/// constant memory: exact sums, the median from a histogram (3 significant
/// digits, far finer than the microseconds shown).
pub(crate) struct Sample {
    n: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    /// Nanoseconds.
    hist: Option<Histogram<u64>>,
}

impl Default for Sample {
    fn default() -> Sample {
        Sample {
            n: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: 0.0,
            // Auto-resizing, 3 significant digits: creation cannot fail.
            hist: Histogram::new(3).ok(),
        }
    }
}

/// The five figures of a sample, in milliseconds.
#[derive(Debug, PartialEq)]
pub(crate) struct Spread {
    pub(crate) min: f64,
    pub(crate) avg: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
    pub(crate) stddev: f64,
}

impl Sample {
    pub(crate) fn add(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1e3;
        self.n += 1;
        self.sum += ms;
        self.sum_sq += ms * ms;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
        if let Some(h) = &mut self.hist {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
            let _ = h.record(ns);
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.n
    }

    pub(crate) fn spread(&self) -> Option<Spread> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        let avg = self.sum / n;
        let var = (self.sum_sq / n - avg * avg).max(0.0);
        let median = self
            .hist
            .as_ref()
            .map_or(avg, |h| h.value_at_quantile(0.5) as f64 / 1e6)
            .clamp(self.min, self.max);
        Some(Spread {
            min: self.min,
            avg,
            median,
            max: self.max,
            stddev: var.sqrt(),
        })
    }
}

fn spread_json(s: Option<Spread>) -> Value {
    match s {
        Some(s) => json!({
            "min": s.min, "avg": s.avg, "median": s.median, "max": s.max, "stddev": s.stddev,
        }),
        None => Value::Null,
    }
}

/// What the summary is made of.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    /// UDP echoes that came back after their probe had timed out, or twice.
    pub(crate) strays: super::probe::Strays,
    pub(crate) rtt: Sample,
    /// `--tls`: every handshake's duration (the first connection's too).
    pub(crate) handshakes: Sample,
    pub(crate) first_failure: Option<String>,
    pub(crate) elapsed: Duration,
    /// Ctrl-C or SIGTERM ended the run.
    pub(crate) interrupted: bool,
}

impl Stats {
    pub(crate) fn received(&self) -> u64 {
        self.rtt.count()
    }

    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * (self.sent - self.received()) as f64 / self.sent as f64
        }
    }

    /// The closing lines, as `ping` prints them.
    pub(crate) fn summary(&self, target: &str) -> Vec<String> {
        let mut lines = vec![format!("--- {target} netecho ping statistics ---")];
        let mut counts = format!(
            "{} sent, {} received, {:.1}% loss, time {:.0} ms",
            count(self.sent, "probe", "probes"),
            self.received(),
            self.loss_pct(),
            self.elapsed.as_secs_f64() * 1e3
        );
        if self.strays.late > 0 {
            counts += &format!(", {} late", count(self.strays.late, "echo", "echoes"));
        }
        if self.strays.duplicated > 0 {
            counts += &format!(
                ", {} duplicated",
                count(self.strays.duplicated, "echo", "echoes")
            );
        }
        lines.push(counts);
        if let Some(s) = self.rtt.spread() {
            lines.push(format!(
                "rtt min/avg/median/max/stddev = {:.3}/{:.3}/{:.3}/{:.3}/{:.3} ms",
                s.min, s.avg, s.median, s.max, s.stddev
            ));
        }
        if let Some(s) = self.handshakes.spread() {
            lines.push(format!(
                "handshake min/avg/median/max/stddev = {:.3}/{:.3}/{:.3}/{:.3}/{:.3} ms ({})",
                s.min,
                s.avg,
                s.median,
                s.max,
                s.stddev,
                count(self.handshakes.count(), "handshake", "handshakes")
            ));
        }
        lines
    }

    /// The `--json` summary object; `error` is the line of a failure that
    /// ended the run before or between probes.
    pub(crate) fn summary_json(&self, target: &str, error: Option<&str>) -> Value {
        json!({
            "type": "summary",
            "target": target,
            "sent": self.sent,
            "received": self.received(),
            "lost": self.sent - self.received(),
            "loss_pct": self.loss_pct(),
            "late": self.strays.late,
            "duplicated": self.strays.duplicated,
            "time_ms": self.elapsed.as_secs_f64() * 1e3,
            "rtt_ms": spread_json(self.rtt.spread()),
            "handshake_ms": spread_json(self.handshakes.spread()),
            "interrupted": self.interrupted,
            "error": error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_a_small_sample() {
        let mut s = Sample::default();
        for ms in [3, 1, 2, 10] {
            s.add(Duration::from_millis(ms));
        }
        let sp = s.spread().unwrap();
        assert!((sp.min - 1.0).abs() < 1e-9);
        assert!((sp.max - 10.0).abs() < 1e-9);
        assert!((sp.avg - 4.0).abs() < 1e-9);
        assert!((sp.median - 2.0).abs() < 0.01, "{}", sp.median);
        assert!((sp.stddev - 3.535_533_9).abs() < 1e-6);
        assert_eq!(Sample::default().spread(), None);
    }
}
