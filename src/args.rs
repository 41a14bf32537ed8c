//! Value parsers for the command line: durations, sizes, counts, rates,
//! addresses. Each says what is wrong in one line (`invalid address
//! '127.0.0.1:99999': port must be 0-65535`), so the library only ever sees
//! values it can use.
//!
//! This module imports nothing else of the crate, so every subcommand's
//! `Opt` can use it without an import circle. Where a limit belongs to a
//! subcommand (the largest UDP payload, `bench --rate`'s bounds, `ping -i`'s
//! shortest interval), the subcommand passes it in and gets a parser back.

use std::net::SocketAddr;
use std::time::Duration;

/// Parses `ADDR:PORT` or `[V6ADDR]:PORT`, naming the part that is wrong.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected ADDR:PORT, e.g. 127.0.0.1:6666 or [::1]:6666".into());
    };
    match port.parse::<u32>() {
        Ok(p) if p > 65535 => return Err(format!("port {p} is out of range 0-65535")),
        Ok(_) => {}
        Err(_) => return Err(format!("port '{port}' is not a number 0-65535")),
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("IPv6 addresses go in brackets, e.g. [::1]:6666".into());
    }
    Err(format!(
        "'{host}' is not an IP address (use a numeric address such as 127.0.0.1 or [::1])"
    ))
}

/// Parses a whole number of at least 1 (sizes, connections, workers).
pub(crate) fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

/// Parses a count of requests or probes (`bench -n`, `ping -c`): a whole
/// number of at least 1, as [`parse_positive`] but 64 bits wide everywhere.
pub(crate) fn parse_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

/// A parser of a UDP size limit: 0 to `max` bytes, `max` being the largest
/// UDP payload.
pub(crate) fn udp_size_at_most(
    max: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        Ok(n) => Err(format!("{n} is larger than the largest UDP payload, {max}")),
        Err(_) => Err(format!("'{s}' is not a whole number of bytes")),
    }
}

/// Parses a rate limit (`serve --udp-rate`): a whole number of at least 1
/// per second. Not [`request_rate_between`], which sets a load's pace.
pub(crate) fn parse_rate_limit(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1 per second".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

/// A parser of an offered load (`bench --rate`): requests per second,
/// fractions allowed, from `min` to `max`.
pub(crate) fn request_rate_between(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number of requests per second"))?;
        if !v.is_finite() || v < min {
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

/// Parses a non-negative number of seconds (fractions allowed).
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("'{s}' must be a number of seconds >= 0"));
    }
    if v > 1e9 {
        return Err(format!("'{s}' seconds is too long"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Like [`parse_secs`] but 0 is refused.
pub(crate) fn parse_secs_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d.is_zero() {
        return Err("must be more than 0 seconds".into());
    }
    Ok(d)
}

/// A parser of an interval between probes (`ping -i`): seconds, at least
/// `min`.
pub(crate) fn interval_at_least(
    min: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let d = parse_secs(s)?;
        if d < min {
            return Err(format!(
                "'{s}' is below the shortest interval, {} s",
                min.as_secs_f64()
            ));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_or_say_why() {
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:6666").unwrap(),
            "[::1]:6666".parse().unwrap()
        );
        assert!(
            parse_listen("127.0.0.1:99999")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            parse_listen("127.0.0.1:x")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(parse_listen("::1:80").unwrap_err().contains("brackets"));
        assert!(
            parse_listen("localhost:80")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(parse_listen("6666").unwrap_err().contains("ADDR:PORT"));
    }

    #[test]
    fn limits_refuse_negative_and_garbage() {
        assert_eq!(parse_positive("8").unwrap(), 8);
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("-1").is_err());
        assert!(parse_positive("ten").is_err());
        assert_eq!(parse_secs("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_secs("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_secs("-3").is_err());
        assert!(parse_secs("nan").is_err());
        assert!(parse_secs_nonzero("0").is_err());
    }

    #[test]
    fn intervals_below_the_shortest_say_which_it_is() {
        let parse_interval = interval_at_least(Duration::from_millis(1));
        assert_eq!(
            parse_interval("0.0005").unwrap_err(),
            "'0.0005' is below the shortest interval, 0.001 s"
        );
    }

    #[test]
    fn the_two_rates_keep_their_own_syntax() {
        // A rate limit is a whole number; an offered load may be a fraction.
        assert_eq!(parse_rate_limit("100").unwrap(), 100);
        assert!(parse_rate_limit("0.5").is_err());
        assert!(parse_rate_limit("0").unwrap_err().contains("per second"));
        let rate = request_rate_between(0.001, 1e8);
        assert_eq!(rate("0.5").unwrap(), 0.5);
        assert_eq!(
            rate("0").unwrap_err(),
            "'0' is below the lowest rate, 0.001 requests per second"
        );
        assert_eq!(
            rate("1e9").unwrap_err(),
            "'1e9' is above the highest rate, 100000000/s"
        );
        let size = udp_size_at_most(65_507);
        assert_eq!(size("0").unwrap(), 0);
        assert_eq!(
            size("65508").unwrap_err(),
            "65508 is larger than the largest UDP payload, 65507"
        );
    }
}
