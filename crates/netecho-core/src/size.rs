//! The one size grammar of netecho: every flag and every fault key that
//! takes a size reads it here, so `ping -s 4KiB` and `--fault
//! reset-after=4KiB` mean the same and are refused in the same words. A
//! size is a number of bytes (`64`) or a number with a binary unit: `k`,
//! `K`, `KB` and `KiB` are all 1024, as in dd(1) and iperf3 (`1k`, `64KiB`,
//! `1MiB`), read by `parse-size`. A byte rate is a size per second, the
//! `/s` optional (`1MiB/s`, `64k`).

/// Why a text is not a size. Its words follow the text quoted by the
/// caller: `'lots' is not a size (…)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Neither a number of bytes nor a number with a binary unit.
    #[error("is not a size (bytes, or with units: 1k, 64KiB, 1MiB)")]
    NotSize,
    /// Not a size per second.
    #[error("is not a rate (bytes per second, or with units: 1MiB/s, 64k)")]
    NotRate,
    /// Zero where something must move.
    #[error("must be above 0")]
    Zero,
}

/// Parses a size: bytes, or with a binary unit (`4KiB`, `1k`). Spaces
/// around it are ignored.
pub fn parse(s: &str) -> Result<u64, SizeError> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|_| SizeError::NotSize)
}

/// Parses a size above zero.
pub fn parse_nonzero(s: &str) -> Result<u64, SizeError> {
    match parse(s)? {
        0 => Err(SizeError::Zero),
        n => Ok(n),
    }
}

/// Parses a rate of bytes per second above zero: a size, optionally
/// followed by `/s`.
pub fn parse_rate(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    parse_nonzero(t.strip_suffix("/s").unwrap_or(t)).map_err(|_| SizeError::NotRate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_or_binary_units() {
        assert_eq!(parse("64"), Ok(64));
        assert_eq!(parse(" 1k "), Ok(1024));
        assert_eq!(parse("4KiB"), Ok(4096));
        assert_eq!(parse("1MiB"), Ok(1 << 20));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("-1"), Err(SizeError::NotSize));
        assert_eq!(parse("lots"), Err(SizeError::NotSize));
        assert_eq!(parse_nonzero("0"), Err(SizeError::Zero));
    }

    #[test]
    fn rates_are_sizes_per_second() {
        assert_eq!(parse_rate("1MiB/s"), Ok(1 << 20));
        assert_eq!(parse_rate("64k"), Ok(64 << 10));
        assert_eq!(parse_rate("fast"), Err(SizeError::NotRate));
        assert_eq!(parse_rate("0/s"), Err(SizeError::NotRate));
    }
}
