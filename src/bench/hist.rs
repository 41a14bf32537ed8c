//! The latency histogram, made in one place: every figure of bench (the
//! run, each interval, the handshakes, `--hist-out`, `bench merge`, the
//! model floors) is drawn from histograms with these bounds, so any two
//! can be added exactly.

use hdrhistogram::Histogram;

use crate::error::{Error, Result};

/// Highest latency the histogram tells apart (1 hour, in nanoseconds); a
/// longer one is recorded as this.
pub(crate) const MAX_LATENCY_NS: u64 = 3_600_000_000_000;
/// Significant figures of every latency figure (0.1 % resolution).
pub(crate) const SIGFIG: u8 = 3;

/// An empty latency histogram (nanoseconds, 1 ns to 1 hour); `what` names
/// it in the error, which with these constant bounds cannot happen.
pub(crate) fn latency(what: &'static str) -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGFIG).map_err(|e| Error::Io {
        what,
        source: std::io::Error::other(e.to_string()),
    })
}

/// `ns` nanoseconds as a histogram value: at least 1, the histogram's floor.
pub(crate) fn clamp(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}
