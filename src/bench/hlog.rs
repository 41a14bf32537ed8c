//! `bench --hist-out FILE` and `bench merge FILE...`: latency histograms in
//! HdrHistogram's interval log format, so runs from many machines combine
//! exactly (histograms added, percentiles recomputed; never averaged).
//!
//! The format is the one HdrHistogram's `HistogramLogWriter` writes and its
//! `HistogramLogReader` (Java, Python, Go, C ports) reads: comment lines, a
//! `#[StartTime: …]` and `#[BaseTime: …]` header in seconds since the epoch,
//! then one line per interval, `start,length,max,histogram`, where the
//! start is seconds after BaseTime, the max is in milliseconds (values are
//! recorded in nanoseconds, divided by 10^6 as jHiccup and wrk2 logs do)
//! and the histogram is V2-encoded, deflate-compressed and base64.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry, LogIteratorError};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::Serialize;

use super::hist;
use super::text::{self, micros, round3};
use crate::error::{Error, Result};

/// Recorded values are nanoseconds; the `Interval_Max` column is in
/// milliseconds, as HdrHistogram's own tools expect by default.
const MAX_VALUE_DIVISOR: f64 = 1e6;

/// Writes `hist`, the latency of the measured window that began at `start`
/// and lasted `length`, as a one-interval log in `path`, line for line as
/// HdrHistogram's Java `HistogramLogWriter` lays one out.
pub(crate) fn write(
    path: &Path,
    hist: &Histogram<u64>,
    start: SystemTime,
    length: Duration,
    about: &str,
) -> Result<()> {
    let mut encoded = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut encoded)
        .map_err(|e| Error::Io {
            what: "encoding the histogram",
            source: io::Error::other(e.to_string()),
        })?;
    let epoch = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let text = format!(
        "#[netecho {version} bench {about}]\n\
         #[Latency in nanoseconds; Interval_Max in milliseconds]\n\
         #[Histogram log format version 1.3]\n\
         #[StartTime: {epoch:.3} (seconds since epoch)]\n\
         #[BaseTime: {epoch:.3} (seconds since epoch)]\n\
         \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n\
         {:.3},{:.3},{:.3},{}\n",
        0.0,
        length.as_secs_f64(),
        hist.max() as f64 / MAX_VALUE_DIVISOR,
        base64::engine::general_purpose::STANDARD.encode(&encoded),
        version = env!("CARGO_PKG_VERSION"),
    );
    std::fs::write(path, text).map_err(|e| Error::Io {
        what: "writing the --hist-out file",
        source: e,
    })
}

/// One run's log read back: every interval added into one histogram.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) hist: Histogram<u64>,
    /// From the start of the first interval to the end of the last.
    pub(crate) length: Duration,
}

/// Reads an interval log (netecho's or any HdrHistogram writer's).
pub(crate) fn read(path: &Path) -> Result<Run> {
    // A file that is not a log is a failed check (exit 1), not a usage error.
    let bad = |why: String| Error::InvalidOption(format!("{}: {why}", path.display()));
    let text = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut hist = empty()?;
    let mut span: Option<(Duration, Duration)> = None;
    let mut intervals = 0usize;
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&text) {
        let entry = entry.map_err(|e| {
            let LogIteratorError::ParseError { offset } = e;
            bad(format!(
                "not an HdrHistogram interval log (unreadable from byte {offset})"
            ))
        })?;
        let LogEntry::Interval(h) = entry else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(h.encoded_histogram())
            .map_err(|e| bad(format!("interval {}: bad base64: {e}", intervals + 1)))?;
        let one: Histogram<u64> = deserializer
            .deserialize(&mut io::Cursor::new(bytes))
            .map_err(|e| bad(format!("interval {}: bad histogram: {e}", intervals + 1)))?;
        hist.add(&one)
            .map_err(|e| bad(format!("interval {}: {e}", intervals + 1)))?;
        let (start, end) = (h.start_timestamp(), h.start_timestamp() + h.duration());
        span = Some(match span {
            None => (start, end),
            Some((s, e)) => (s.min(start), e.max(end)),
        });
        intervals += 1;
    }
    let Some((start, end)) = span else {
        return Err(bad("no histogram in it".into()));
    };
    Ok(Run {
        hist,
        length: end - start,
    })
}

/// A histogram with the bounds of a bench run's, wide enough for any log
/// (it grows to fit a larger value).
fn empty() -> Result<Histogram<u64>> {
    let mut h = hist::latency("creating the latency histogram")?;
    h.auto(true);
    Ok(h)
}

/// Options of `netecho bench merge`.
#[derive(Debug, clap::Args)]
pub(crate) struct MergeOpt {
    /// HdrHistogram interval logs, from `bench --hist-out` on any machine.
    #[arg(value_name = "FILE", required = true)]
    pub(crate) files: Vec<PathBuf>,

    /// Print one JSON object on stdout instead of the summary (the keys of
    /// `bench --json`).
    #[arg(long)]
    pub(crate) json: bool,
}

/// What a merge of runs measured; the keys are those of `bench --json`.
#[derive(Debug, Serialize)]
pub(crate) struct MergeSummary {
    /// How many logs were merged.
    pub(crate) runs: usize,
    /// The longest run's measured seconds (the runs are taken to overlap).
    pub(crate) duration_s: f64,
    pub(crate) requests: u64,
    /// The runs' rates added: each run's requests over its own length.
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
}

impl MergeSummary {
    /// Adds the runs' histograms and draws every figure from the sum.
    pub(crate) fn of(runs: &[Run]) -> Result<MergeSummary> {
        let mut hist = empty()?;
        let mut rps = 0.0;
        let mut longest = Duration::ZERO;
        for r in runs {
            hist.add(&r.hist).map_err(|e| Error::Io {
                what: "adding histograms",
                source: io::Error::other(e.to_string()),
            })?;
            if !r.length.is_zero() {
                rps += r.hist.len() as f64 / r.length.as_secs_f64();
            }
            longest = longest.max(r.length);
        }
        let requests = hist.len();
        let q = |quantile: f64| {
            if requests == 0 {
                0.0
            } else {
                micros(hist.value_at_quantile(quantile))
            }
        };
        Ok(MergeSummary {
            runs: runs.len(),
            duration_s: round3(longest.as_secs_f64()),
            requests,
            rps: round3(rps),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if requests == 0 {
                0.0
            } else {
                micros(hist.max())
            },
            mean_us: if requests == 0 {
                0.0
            } else {
                round3(hist.mean() / 1e3)
            },
        })
    }

    fn print_human(&self) -> Result<()> {
        let out = format!(
            "bench merge of {} runs\n  requests  {} in {:.3} s: {} req/s\n{}\n",
            self.runs,
            text::thousands(self.requests),
            self.duration_s,
            text::thousands(self.rps.round() as u64),
            text::latency_line(
                self.p50_us,
                self.p90_us,
                self.p99_us,
                self.p999_us,
                self.max_us,
                self.mean_us
            )
        );
        text::print_stdout(&out)
    }
}

/// Runs `netecho bench merge`.
pub(crate) fn merge(opt: &MergeOpt) -> Result<()> {
    let runs = opt
        .files
        .iter()
        .map(|f| read(f))
        .collect::<Result<Vec<Run>>>()?;
    let summary = MergeSummary::of(&runs)?;
    if opt.json {
        text::print_json(&summary)
    } else {
        summary.print_human()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = empty().unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn a_written_log_reads_back_as_the_same_histogram() {
        let dir = std::env::temp_dir().join(format!("netecho-hlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("one.hlog");
        let h = hist(&[1_000, 2_000, 3_000, 50_000, 1_000_000]);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        write(&path, &h, start, Duration::from_millis(2500), "test").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("#[StartTime: 1700000000.000 (seconds since epoch)]"),
            "{text}"
        );
        assert!(
            text.contains("#[BaseTime: 1700000000.000 (seconds since epoch)]"),
            "{text}"
        );
        assert!(
            text.contains("\"StartTimestamp\",\"Interval_Length\""),
            "{text}"
        );
        // Compressed V2 ("HISTFAAA" is the base64 of its cookie 0x1c849304).
        assert!(text.contains(",HISTFAAA"), "{text}");
        // The max column is in milliseconds: 1 ms.
        assert!(text.contains("0.000,2.500,1.000,HISTFAAA"), "{text}");
        let back = read(&path).unwrap();
        assert_eq!(back.hist, h);
        assert_eq!(back.length, Duration::from_millis(2500));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn merging_adds_histograms_and_rates() {
        let a = Run {
            hist: hist(&[10_000; 100]),
            length: Duration::from_secs(1),
        };
        let b = Run {
            hist: hist(&[30_000; 300]),
            length: Duration::from_secs(2),
        };
        let m = MergeSummary::of(&[a, b]).unwrap();
        assert_eq!(m.requests, 400);
        assert_eq!(m.rps, 250.0);
        assert_eq!(m.duration_s, 2.0);
        // 3/4 of the samples are 30 µs: the median is b's, not the mean of
        // the two medians (20 µs).
        assert!((m.p50_us - 30.0).abs() < 0.1, "{}", m.p50_us);
        assert!((m.mean_us - 25.0).abs() < 0.1, "{}", m.mean_us);
    }

    #[test]
    fn garbage_is_one_clear_error() {
        let dir = std::env::temp_dir().join(format!("netecho-hlog-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.hlog");
        std::fs::write(&path, "hello\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:", path.display())), "{e}");
        std::fs::write(&path, "#[BaseTime: 1.000 (seconds since epoch)]\n").unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("no histogram")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
