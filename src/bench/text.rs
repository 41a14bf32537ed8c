//! How bench writes figures for people and scripts: grouped digits,
//! milliseconds as ping prints them, the latency line, one JSON object per
//! line, and stdout writes that take a closed pipe calmly.

use std::io::{self, Write};

use serde::Serialize;

use crate::error::{Error, Result};

/// 1234567 as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Nanoseconds to microseconds, to 0.001 µs.
pub(crate) fn micros(ns: u64) -> f64 {
    round3(ns as f64 / 1e3)
}

/// Rounded to three decimals, as every figure in `--json`.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Microseconds as milliseconds with three decimals, as ping prints them.
pub(crate) fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1e3)
}

/// The summary's latency line (no newline), shared with the handshake
/// line and `bench merge`.
pub(crate) fn latency_line(p50: f64, p90: f64, p99: f64, p999: f64, max: f64, mean: f64) -> String {
    format!(
        "  latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
        ms(p50),
        ms(p90),
        ms(p99),
        ms(p999),
        ms(max),
        ms(mean)
    )
}

/// A number with as many decimals as its size deserves.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Prints exactly one JSON object and a newline on stdout.
pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string(value).map_err(|e| Error::Io {
        what: "encoding the JSON summary",
        source: io::Error::other(e),
    })?;
    print_stdout(&format!("{text}\n"))
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn print_stdout(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(Error::Io {
            what: "writing to stdout",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
