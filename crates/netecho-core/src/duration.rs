//! The one duration grammar of netecho: every flag and every fault key
//! that takes a duration reads it here, so `--idle-timeout 2` and
//! `--fault latency=2` mean the same and are refused in the same words.
//! A bare number is seconds (fractions allowed); otherwise units as
//! `250ms`, `2s`, `1m`, `1h`, `1m30s`, read by `humantime`.

use std::time::Duration;

/// Longest duration anything takes: 30 years is "forever" for a run, and
/// far below what `Instant + Duration` can hold.
pub const MAX: Duration = Duration::from_secs(1_000_000_000);

/// Why a text is not a duration. Its words follow the text quoted by the
/// caller: `'2 parsecs' is not a duration (…)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// A number below zero, or not finite.
    #[error("is not a duration >= 0")]
    Negative,
    /// Neither a number nor a number with units.
    #[error("is not a duration (a number of seconds, or with units: 250ms, 2s, 1m)")]
    NotDuration,
    /// Longer than [`MAX`].
    #[error("is too long")]
    TooLong,
}

/// Parses a duration: a bare number is seconds, else units (`250ms`).
/// Spaces around it are ignored.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    let d = match t.parse::<f64>() {
        Ok(v) if !v.is_finite() || v < 0.0 => return Err(DurationError::Negative),
        Ok(v) if v > MAX.as_secs_f64() => return Err(DurationError::TooLong),
        Ok(v) => Duration::from_secs_f64(v),
        Err(_) => humantime::parse_duration(t).map_err(|_| DurationError::NotDuration)?,
    };
    if d > MAX {
        return Err(DurationError::TooLong);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds_and_units_are_read() {
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(" 50ms "), Ok(Duration::from_millis(50)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert_eq!(parse("-3"), Err(DurationError::Negative));
        assert_eq!(parse("nan"), Err(DurationError::Negative));
        assert_eq!(parse("2 parsecs"), Err(DurationError::NotDuration));
        assert_eq!(parse("1e12"), Err(DurationError::TooLong));
        assert_eq!(parse("40000years"), Err(DurationError::TooLong));
        assert!(DurationError::NotDuration.to_string().contains("250ms"));
    }
}
