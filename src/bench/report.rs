//! The end of a run: the human summary, the `--json` object, and the
//! verdict (the exit status) drawn from the same figures.

use std::time::Instant;

use serde::Serialize;

use super::plan::Plan;
use super::tally::Tally;
use super::text::{latency_line, micros, print_json, print_stdout, round3, thousands};
use super::tls::Figures;
use crate::error::{Error, Result};
use crate::words::{count, noun};

/// Below this share of `--rate`, the summary says the rate was not held.
const RATE_SHORTFALL: f64 = 0.95;
/// Above this share of its threads' time on CPU, the summary warns that the
/// generator itself may have set the pace.
const BUSY_GENERATOR: f64 = 0.9;

/// What the run was asked to do, known before anything is connected: the
/// head of every summary, a failed run's too.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) target: String,
    /// `tcp`, `tls` or `udp`.
    pub(crate) proto: &'static str,
    /// `closed`, `open`, `new-conn`, `hold` or `stream`.
    pub(crate) mode: &'static str,
    pub(crate) connections: usize,
    pub(crate) threads: usize,
    pub(crate) size: usize,
    pub(crate) rate: Option<f64>,
}

/// Everything a run measured; `--json` prints it as one object, on every
/// path: a run that could not start has zero figures and an `error`.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) target: String,
    /// `tcp`, `tls` or `udp`.
    pub(crate) proto: &'static str,
    /// `closed` (one request in flight per connection, sent at once),
    /// `open` (`--rate`), `new-conn`, `hold` or `stream`.
    pub(crate) mode: &'static str,
    pub(crate) connections: usize,
    pub(crate) threads: usize,
    pub(crate) size: usize,
    /// Requested rate (`--rate`), requests per second in total.
    pub(crate) rate: Option<f64>,
    /// Seconds measured: from the end of the warm-up to the end of the run.
    pub(crate) duration_s: f64,
    /// Requests echoed correctly and recorded (warm-up excluded).
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    /// Megabytes (10^6 bytes) per second of echoed payload, each way.
    pub(crate) mbps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
    /// Failed requests: mismatches, early closes, resets, timeouts (TCP).
    pub(crate) errors: u64,
    pub(crate) mismatches: u64,
    /// UDP datagrams with no echo within `--timeout` (0 for TCP).
    pub(crate) lost: u64,
    /// UDP echoes that came after their timeout (already counted as lost).
    pub(crate) late: u64,
    /// UDP echoes that came a second time (a path or server duplicating).
    pub(crate) duplicated: u64,
    /// Requests sent and never answered: still waiting when the run ended
    /// (after a grace of up to 1 s for late echoes). Any is a failure.
    pub(crate) unanswered: u64,
    /// Open loop: requests due in the measured window that were never
    /// sent, their connection still waiting for an earlier echo.
    pub(crate) unfinished: u64,
    /// SIGINT or SIGTERM ended the run early: the figures cover only what
    /// ran, and the run counts as failed.
    pub(crate) interrupted: bool,
    /// Why the run failed before or while measuring (refused, a worker's
    /// system error); `null` otherwise.
    pub(crate) error: Option<String>,
    /// CPU seconds (user + system) the bench process used, warm-up and
    /// connection setup included: near `threads` × `duration_s` means the
    /// generator, not the server, may have set the pace.
    pub(crate) cpu_s: f64,
    /// Wall-clock seconds of the whole run, warm-up included: `cpu_s`
    /// compares against `threads` times this.
    pub(crate) wall_s: f64,
    /// `--tls`: the handshakes, apart from the echo figures above.
    #[serde(flatten)]
    pub(crate) tls: Option<Figures>,
}

impl Summary {
    /// Draws the figures from the merged tally; `tls` are the handshake
    /// figures of a `--tls` run.
    pub(crate) fn new(
        plan: &Plan,
        shape: &Shape,
        t: &Tally,
        tls: Option<Figures>,
        interrupted: bool,
    ) -> Summary {
        let until = match plan.settings.budget {
            // With -n the run is over when the last request came back.
            Some(_) => t.last_done.or(t.stopped).unwrap_or_else(Instant::now),
            None => t.stopped.unwrap_or_else(Instant::now),
        };
        let duration_s = until
            .saturating_duration_since(plan.warmup_end)
            .as_secs_f64();
        let requests = t.hist.len();
        let per_sec = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let q = |quantile: f64| {
            if requests == 0 {
                0.0
            } else {
                micros(t.hist.value_at_quantile(quantile))
            }
        };
        let mut s = Summary::failed(shape, None, interrupted);
        s.threads = plan.settings.threads;
        s.duration_s = round3(duration_s);
        s.requests = requests;
        s.rps = round3(per_sec(requests as f64));
        s.mbps = round3(per_sec(requests as f64 * shape.size as f64) / 1e6);
        s.p50_us = q(0.50);
        s.p90_us = q(0.90);
        s.p99_us = q(0.99);
        s.p999_us = q(0.999);
        if requests > 0 {
            s.max_us = micros(t.hist.max());
            s.mean_us = round3(t.hist.mean() / 1e3);
        }
        s.errors = t.errors;
        s.mismatches = t.mismatches;
        s.lost = t.lost;
        s.late = t.late;
        s.duplicated = t.duplicated;
        s.unanswered = t.unanswered;
        s.unfinished = t.unfinished;
        s.wall_s = round3(until.saturating_duration_since(plan.start).as_secs_f64());
        s.tls = tls;
        s
    }

    /// The summary of a run that measured nothing: zero figures, and why.
    pub(crate) fn failed(shape: &Shape, error: Option<String>, interrupted: bool) -> Summary {
        Summary {
            target: shape.target.clone(),
            proto: shape.proto,
            mode: shape.mode,
            connections: shape.connections,
            threads: shape.threads,
            size: shape.size,
            rate: shape.rate,
            duration_s: 0.0,
            requests: 0,
            rps: 0.0,
            mbps: 0.0,
            p50_us: 0.0,
            p90_us: 0.0,
            p99_us: 0.0,
            p999_us: 0.0,
            max_us: 0.0,
            mean_us: 0.0,
            errors: 0,
            mismatches: 0,
            lost: 0,
            late: 0,
            duplicated: 0,
            unanswered: 0,
            unfinished: 0,
            interrupted,
            error,
            cpu_s: round3(cpu_seconds()),
            wall_s: 0.0,
            tls: None,
        }
    }

    /// Prints exactly one JSON object and a newline on stdout.
    pub(crate) fn print_json(&self) -> Result<()> {
        print_json(self)
    }

    /// Prints the summary for a person.
    pub(crate) fn print_human(&self) -> Result<()> {
        let mode = match self.mode {
            "open" => format!(
                "open loop at {} req/s",
                thousands(self.rate.unwrap_or(0.0).round() as u64)
            ),
            "new-conn" => "a new connection per request".to_string(),
            "hold" => "one echo per connection, then held open".to_string(),
            _ => "closed loop".to_string(),
        };
        let mut out = String::new();
        out += &format!(
            "bench {} ({}, {}, {}, {} B messages, {})\n",
            self.target,
            self.proto,
            mode,
            count(self.connections as u64, "connection", "connections"),
            self.size,
            count(self.threads as u64, "thread", "threads")
        );
        out += &format!(
            "  requests  {} in {:.3} s: {} req/s, {:.2} MB/s each way\n",
            thousands(self.requests),
            self.duration_s,
            thousands(self.rps.round() as u64),
            self.mbps
        );
        out += &latency_line(
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.mean_us,
        );
        out += "\n";
        if let Some(tls) = &self.tls {
            out += &tls.human();
        }
        out += &format!(
            "  errors    {} ({} {})",
            thousands(self.errors),
            thousands(self.mismatches),
            noun(self.mismatches, "mismatch", "mismatches")
        );
        if self.proto == "udp" {
            out += &format!(
                ", {} lost ({:.2} %), {} late",
                thousands(self.lost),
                self.loss_percent(),
                thousands(self.late)
            );
            if self.duplicated > 0 {
                out += &format!(", {} duplicated", thousands(self.duplicated));
            }
        }
        if self.unanswered > 0 {
            out += &format!(", {} sent and never answered", thousands(self.unanswered));
        }
        if self.unfinished > 0 {
            out += &format!(
                ", {} due but not sent by the end",
                thousands(self.unfinished)
            );
        }
        out += "\n";
        if self.interrupted {
            out += "  stopped   interrupted by a signal: the figures cover only the time it ran\n";
        }
        out += &format!("  cpu       {:.2} s used by the bench\n", self.cpu_s);
        if let Some(rate) = self.rate
            && self.rps < rate * RATE_SHORTFALL
        {
            out += &format!(
                "  note      asked for {} req/s, got {}: requests queued, and their \
                 latency counts the wait\n",
                thousands(rate.round() as u64),
                thousands(self.rps.round() as u64)
            );
        }
        if self.cpu_s > self.wall_s * self.threads as f64 * BUSY_GENERATOR {
            out += &format!(
                "  note      the bench kept its {} threads {:.0} % busy: it may be the \
                 bottleneck (try --threads, or another machine)\n",
                self.threads,
                100.0 * self.cpu_s / (self.wall_s * self.threads as f64)
            );
        }
        print_stdout(&out)
    }

    /// Lost datagrams as a share of those sent in the measured window.
    fn loss_percent(&self) -> f64 {
        let sent = self.requests + self.lost + self.mismatches;
        if sent == 0 {
            0.0
        } else {
            100.0 * self.lost as f64 / sent as f64
        }
    }

    /// `Ok` when the run was whole and every request came back right; else
    /// the one-line error (exit status 1).
    pub(crate) fn verdict(&self, first_error: Option<String>) -> Result<()> {
        let mut what = Vec::new();
        if self.interrupted {
            what.push("interrupted by a signal".to_string());
        }
        if self.errors > 0 {
            let errors = noun(self.errors, "error", "errors");
            what.push(format!("{} {errors}", thousands(self.errors)));
        }
        if self.lost > 0 {
            let datagrams = noun(self.lost, "datagram", "datagrams");
            what.push(format!("{} {datagrams} lost", thousands(self.lost)));
        }
        if self.unanswered > 0 {
            what.push(format!(
                "{} {} sent and never answered",
                thousands(self.unanswered),
                noun(self.unanswered, "request", "requests")
            ));
        }
        if what.is_empty() && self.requests == 0 && self.mode != "stream" {
            what.push("no request was answered".to_string());
        }
        if what.is_empty() {
            return Ok(());
        }
        let first = first_error.map(|l| format!("; first: {l}"));
        Err(Error::BenchFailed(format!(
            "{}{}",
            what.join(", "),
            first.unwrap_or_default()
        )))
    }
}

/// The summary as the last line of an `--interval --json` stream: the same
/// object as without `--interval`, with `"type":"summary"` first.
pub(crate) fn print_summary_json(summary: &Summary) -> Result<()> {
    #[derive(Serialize)]
    struct Tagged<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        summary: &'a Summary,
    }
    print_json(&Tagged {
        kind: "summary",
        summary,
    })
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}
