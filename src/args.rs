//! Value parsers for the command line: durations, sizes, counts, rates,
//! addresses. Each says what is wrong in one line (`invalid address
//! '127.0.0.1:99999': port must be 0-65535`), so the library only ever sees
//! values it can use.
//!
//! One grammar for every subcommand:
//! - a duration is a number of seconds (`2`, `0.5`) or a number with units
//!   (`250ms`, `2s`, `1m`, `1m30s`), read by `humantime`;
//! - a size is a number of bytes (`64`) or a number with a binary unit
//!   (`1k` = `1KiB` = 1024, `64KiB`, `1MiB`), read by `netecho_core::size`;
//! - a count or a rate is a number, optionally with a decimal unit
//!   (`10k` = 10,000, `1.5M`), a rate optionally followed by `/s`;
//! - an address is `HOST:PORT`, the host a name (`localhost`), an IPv4
//!   address or an IPv6 address in brackets (`[::1]:6666`): read by
//!   `net` (`net::target`, `net::listen`), which resolves names.
//!
//! This module imports nothing else of the crate, so every subcommand's
//! `Opt` can use it without an import circle. Where a limit belongs to a
//! subcommand (the largest UDP payload, `bench --rate`'s bounds, `ping -i`'s
//! shortest interval), the subcommand passes it in and gets a parser back.

use std::time::Duration;

/// Parses a duration: a bare number is seconds (fractions allowed), else
/// units as `250ms`, `2s`, `1m`, `1h`, `1m30s` (the one grammar, shared
/// with `--fault`: [`netecho_core::duration`]).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    netecho_core::duration::parse(s).map_err(|e| format!("'{s}' {e}"))
}

/// Like [`parse_duration`] but zero is refused.
pub(crate) fn parse_duration_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

/// A parser of a duration of at least `min` (`ping -i`, `watch
/// --interval`).
pub(crate) fn duration_at_least(
    min: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let d = parse_duration(s)?;
        if d < min {
            return Err(format!(
                "'{s}' is below the shortest interval, {}",
                humantime::format_duration(min)
            ));
        }
        Ok(d)
    }
}

/// A parser of a duration from `min` to `max` (`watch --interval`).
pub(crate) fn duration_between(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let d = duration_at_least(min)(s)?;
        if d > max {
            return Err(format!(
                "'{s}' is above the longest interval, {}",
                humantime::format_duration(max)
            ));
        }
        Ok(d)
    }
}

/// Parses a number of bytes: `64`, `1k` (1024), `64KiB`, `1MiB` (the one
/// grammar, shared with `--fault`: [`netecho_core::size`]).
fn parse_bytes(s: &str) -> Result<u64, String> {
    netecho_core::size::parse(s).map_err(|e| format!("'{s}' {e}"))
}

/// A parser of a size from `min` to `max` bytes (`ping -s`, `bench -s`,
/// `serve --udp-max-size`); `what` names the upper limit in the message
/// ("the largest UDP payload").
pub(crate) fn size_between(
    min: usize,
    max: usize,
    what: &'static str,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let n = parse_bytes(s)?;
        if n < min as u64 {
            // Spelled here: args imports nothing of the crate (layout test).
            let bytes = if min == 1 { "byte" } else { "bytes" };
            return Err(format!("'{s}' is below the smallest size, {min} {bytes}"));
        }
        if n > max as u64 {
            return Err(format!("'{s}' is larger than {what}, {max} bytes"));
        }
        Ok(n as usize)
    }
}

/// Parses a number with an optional decimal unit: `250`, `10k`, `1.5M`.
fn parse_decimal(s: &str) -> Option<u64> {
    let t = s.trim();
    if t.starts_with('-') {
        return None;
    }
    parse_size::Config::new()
        .with_decimal()
        .with_byte_suffix(parse_size::ByteSuffix::Deny)
        .parse_size(t)
        .ok()
}

/// Parses a whole number of at least 1 (connections, workers, threads):
/// `8`, `10k`.
pub(crate) fn parse_positive(s: &str) -> Result<usize, String> {
    match parse_decimal(s).map(usize::try_from) {
        Some(Ok(0)) => Err("must be at least 1".into()),
        Some(Ok(n)) => Ok(n),
        _ => Err(format!("'{s}' is not a positive whole number")),
    }
}

/// Parses an IPv6 prefix length (`--per-ip-v6-prefix`): a whole number of
/// bits from 1 to 128.
pub(crate) fn parse_v6_prefix(s: &str) -> Result<u8, String> {
    match parse_decimal(s) {
        Some(n @ 1..=128) => Ok(n as u8),
        Some(_) => Err("an IPv6 prefix is 1 to 128 bits".into()),
        None => Err(format!("'{s}' is not a whole number of bits")),
    }
}

/// Parses a count of requests or probes (`bench -n`, `ping -c`): a whole
/// number of at least 1, as [`parse_positive`] but 64 bits wide everywhere.
pub(crate) fn parse_count(s: &str) -> Result<u64, String> {
    match parse_decimal(s) {
        Some(0) => Err("must be at least 1".into()),
        Some(n) => Ok(n),
        None => Err(format!("'{s}' is not a positive whole number")),
    }
}

/// Parses a byte of an IP header (`ping --ttl`, `--tos`): decimal (184)
/// or hexadecimal (0xb8), 0 to 255; `--ttl` also refuses 0.
pub(crate) fn parse_header_byte(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => t.parse::<u8>().ok(),
    };
    v.ok_or_else(|| format!("'{s}' is not a number from 0 to 255 (decimal, or hex as 0xb8)"))
}

/// As [`parse_header_byte`], at least 1: a TTL of 0 is never sent.
pub(crate) fn parse_ttl(s: &str) -> Result<u8, String> {
    match parse_header_byte(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// Parses a rate: a number per second, fractions and decimal units
/// allowed (`0.5`, `100`, `10k`), optionally followed by `/s`.
fn parse_per_second(s: &str) -> Option<f64> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    if let Ok(v) = t.parse::<f64>() {
        return (v.is_finite() && v >= 0.0).then_some(v);
    }
    parse_decimal(t).map(|n| n as f64)
}

/// Parses a rate limit (`serve --udp-rate`): a whole number of at least 1
/// per second (`100`, `10k`, `10k/s`). Not [`request_rate_between`], which
/// sets a load's pace.
pub(crate) fn parse_rate_limit(s: &str) -> Result<u32, String> {
    match parse_per_second(s) {
        Some(v) if v.fract() != 0.0 => Err(format!("'{s}' is not a whole number per second")),
        Some(v) if v < 1.0 => Err("must be at least 1 per second".into()),
        Some(v) if v > f64::from(u32::MAX) => {
            Err(format!("'{s}' is above the highest rate, {}/s", u32::MAX))
        }
        Some(v) => Ok(v as u32),
        None => Err(format!(
            "'{s}' is not a rate (a number per second: 100, 10k, 10k/s)"
        )),
    }
}

/// A parser of an offered load (`bench --rate`): requests per second,
/// fractions and units allowed (`0.5`, `20k`, `20k/s`), from `min` to `max`.
pub(crate) fn request_rate_between(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v = parse_per_second(s).ok_or_else(|| {
            format!("'{s}' is not a number of requests per second (100, 0.5, 20k, 20k/s)")
        })?;
        if v < min {
            return Err(format!(
                "'{s}' is below the lowest rate, {min} requests per second"
            ));
        }
        if v > max {
            return Err(format!("'{s}' is above the highest rate, {max:.0}/s"));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_are_decimal_or_hex_and_fit_a_byte() {
        assert_eq!(parse_header_byte("184"), Ok(184));
        assert_eq!(parse_header_byte("0xb8"), Ok(184));
        assert_eq!(parse_header_byte("0"), Ok(0));
        for bad in ["256", "-1", "0x100", "ef", ""] {
            assert!(parse_header_byte(bad).is_err(), "{bad}");
        }
        assert!(parse_ttl("0").is_err());
        assert_eq!(parse_ttl("255"), Ok(255));
    }

    #[test]
    fn durations_are_seconds_or_carry_units() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("1"), Duration::from_secs(1));
        assert_eq!(d("1.5"), Duration::from_millis(1500));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("2s"), Duration::from_secs(2));
        assert_eq!(d("1m"), Duration::from_secs(60));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("nan").is_err());
        assert!(parse_duration("2 parsecs").unwrap_err().contains("250ms"));
        assert!(parse_duration("1e12").unwrap_err().contains("too long"));
        assert!(parse_duration_nonzero("0").is_err());
        assert!(parse_duration_nonzero("0ms").is_err());
    }

    #[test]
    fn intervals_below_the_shortest_say_which_it_is() {
        let parse_interval = duration_at_least(Duration::from_millis(1));
        assert_eq!(
            parse_interval("0.0005").unwrap_err(),
            "'0.0005' is below the shortest interval, 1ms"
        );
        assert_eq!(parse_interval("200ms").unwrap(), Duration::from_millis(200));
    }

    #[test]
    fn sizes_take_binary_units() {
        let size = size_between(1, 16 << 20, "the largest message");
        assert_eq!(size("64").unwrap(), 64);
        assert_eq!(size("1k").unwrap(), 1024);
        assert_eq!(size("1KiB").unwrap(), 1024);
        assert_eq!(size("64KiB").unwrap(), 65536);
        assert_eq!(size("1MiB").unwrap(), 1 << 20);
        assert_eq!(
            size("0").unwrap_err(),
            "'0' is below the smallest size, 1 byte"
        );
        assert_eq!(
            size("17MiB").unwrap_err(),
            "'17MiB' is larger than the largest message, 16777216 bytes"
        );
        assert!(size("-1").is_err());
        assert!(size("lots").unwrap_err().contains("64KiB"));
        let udp = size_between(0, 65_507, "the largest UDP payload");
        assert_eq!(udp("0").unwrap(), 0);
        assert_eq!(
            udp("65508").unwrap_err(),
            "'65508' is larger than the largest UDP payload, 65507 bytes"
        );
    }

    #[test]
    fn counts_refuse_zero_negative_and_garbage() {
        assert_eq!(parse_positive("8").unwrap(), 8);
        assert_eq!(parse_positive("10k").unwrap(), 10_000);
        assert_eq!(parse_count("1M").unwrap(), 1_000_000);
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("-1").is_err());
        assert!(parse_positive("ten").is_err());
        assert!(parse_count("1KB").is_err());
    }

    #[test]
    fn the_two_rates_keep_their_own_syntax() {
        // A rate limit is a whole number; an offered load may be a fraction.
        assert_eq!(parse_rate_limit("100").unwrap(), 100);
        assert_eq!(parse_rate_limit("10k").unwrap(), 10_000);
        assert_eq!(parse_rate_limit("10k/s").unwrap(), 10_000);
        assert!(parse_rate_limit("0.5").is_err());
        assert!(parse_rate_limit("0").unwrap_err().contains("per second"));
        let rate = request_rate_between(0.001, 1e8);
        assert_eq!(rate("0.5").unwrap(), 0.5);
        assert_eq!(rate("20k/s").unwrap(), 20_000.0);
        assert_eq!(
            rate("0").unwrap_err(),
            "'0' is below the lowest rate, 0.001 requests per second"
        );
        assert_eq!(
            rate("1e9").unwrap_err(),
            "'1e9' is above the highest rate, 100000000/s"
        );
        assert!(rate("-1").is_err());
    }
}
