//! The server a client-side subcommand talks to, as users type it: `HOST:PORT`
//! (`[V6ADDR]:PORT` for IPv6 literals) or, as nc users do, `HOST PORT`
//! (where a bare `::1` needs no brackets). Pure parsing: names are resolved
//! at connect time ([`super::resolve_target`]), and each mistake is named
//! in one line (`'[::1]' has no port: give [::1]:PORT or ::1 PORT`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Which address family to use (`-4`, `-6`, or whichever resolves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Family {
    #[default]
    Any,
    V4,
    V6,
}

impl Family {
    /// The family asked for by `-4`/`-6` (clap makes them exclusive).
    pub(crate) fn from_flags(v4: bool, v6: bool) -> Family {
        match (v4, v6) {
            (true, _) => Family::V4,
            (_, true) => Family::V6,
            _ => Family::Any,
        }
    }

    /// Whether `ip` is of this family.
    pub(crate) fn admits(self, ip: IpAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }
}

/// A host (a name, or an IP literal without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for Target {
    /// `HOST:PORT`, with brackets around an IPv6 literal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", bracketed(&self.host), self.port)
    }
}

/// A host as it goes before `:PORT`: an IPv6 literal in brackets.
pub(super) fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Parses a port: 1-65535 (nothing can be connected at port 0).
fn parse_port(s: &str) -> Result<u16, String> {
    match port_in(s, 1)? {
        0 => Err("port 0 cannot be connected to; give a port 1-65535".into()),
        p => Ok(p),
    }
}

/// Parses a port to listen on: 0-65535 (0: the kernel picks one).
pub(super) fn parse_listen_port(s: &str) -> Result<u16, String> {
    port_in(s, 0)
}

/// A port number up to 65535; `low` (0 or 1) is only the lower bound the
/// messages name.
fn port_in(s: &str, low: u16) -> Result<u16, String> {
    match s.trim().parse::<u64>() {
        Ok(p) => u16::try_from(p).map_err(|_| format!("port {p} is out of range {low}-65535")),
        Err(_) => Err(format!("port '{s}' is not a number {low}-65535")),
    }
}

/// Checks a host without a port: a name, an IPv4 literal, or an IPv6
/// literal with or without brackets. Returns it without brackets.
fn parse_host(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the host is missing".into());
    }
    if let Some(inner) = s.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(format!("'{s}' has an unclosed '['"));
        };
        return match inner.parse::<Ipv6Addr>() {
            Ok(_) => Ok(inner.to_string()),
            Err(_) => Err(format!(
                "'{s}': only IPv6 addresses go in brackets, and '{inner}' is not one"
            )),
        };
    }
    if s.contains(':') {
        return match s.parse::<Ipv6Addr>() {
            Ok(_) => Ok(s.to_string()),
            Err(_) => Err(format!("'{s}' is neither a host name nor an IP address")),
        };
    }
    if s.contains(['/', ' ', ']']) {
        return Err(format!("'{s}' is neither a host name nor an IP address"));
    }
    Ok(s.to_string())
}

/// Parses the target from the first positional argument and, if given,
/// the second (the port, nc style).
pub(crate) fn parse(first: &str, port: Option<&str>) -> Result<Target, String> {
    let first = first.trim();
    if let Some(port) = port {
        // `HOST PORT`: the first is a host alone. A port in both places is
        // a mistake, not a choice to make silently.
        if let Ok(sa) = first.parse::<std::net::SocketAddr>() {
            return Err(format!(
                "'{first}' already has a port ({}); give HOST:PORT or HOST PORT, not both",
                sa.port()
            ));
        }
        if let Some((h, p)) = first.rsplit_once(':')
            && !h.contains(':')
            && p.parse::<u16>().is_ok()
        {
            return Err(format!(
                "'{first}' already has a port ({p}); give HOST:PORT or HOST PORT, not both"
            ));
        }
        return Ok(Target {
            host: parse_host(first)?,
            port: parse_port(port)?,
        });
    }
    let (host, port) = split_host_port(first)?;
    let Some(port) = port else {
        return Err(format!(
            "'{first}' has no port: give {}:PORT or {host} PORT",
            bracketed(&host)
        ));
    };
    Ok(Target {
        host,
        port: parse_port(port)?,
    })
}

/// Splits one argument, `HOST:PORT` or `[V6ADDR]:PORT`, into the host
/// (checked, brackets removed) and the port's text, `None` when there is
/// none (the caller names what to type: `client`'s targets may give it
/// apart, `serve --listen`'s may not). The one reading of `HOST:PORT`, for
/// targets and listen addresses ([`super::listen`]) alike.
pub(super) fn split_host_port(first: &str) -> Result<(String, Option<&str>), String> {
    // `[V6]:PORT`
    if let Some(rest) = first.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(format!("'{first}' has an unclosed '['"));
        };
        let host = parse_host(&format!("[{inner}]"))?;
        if after.is_empty() {
            return Ok((host, None));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("'{first}': expected [IPV6]:PORT, e.g. [::1]:6666"));
        };
        return Ok((host, Some(port)));
    }
    if first.parse::<Ipv6Addr>().is_ok() {
        return Ok((first.to_string(), None));
    }
    let Some((host, port)) = first.rsplit_once(':') else {
        return Ok((parse_host(first)?, None));
    };
    if host.contains(':') {
        return Err(format!(
            "'{first}': an IPv6 address with a port goes in brackets, e.g. [::1]:6666"
        ));
    }
    if host.is_empty() {
        return Err(format!(
            "'{first}': the host is missing (expected HOST:PORT)"
        ));
    }
    Ok((parse_host(host)?, Some(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(first: &str, port: Option<&str>) -> String {
        parse(first, port)
            .unwrap_or_else(|e| panic!("{first} {port:?}: {e}"))
            .to_string()
    }

    fn err(first: &str, port: Option<&str>) -> String {
        match parse(first, port) {
            Ok(t) => panic!("{first} {port:?} parsed as {t}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_way_users_type_a_target() {
        assert_eq!(ok("127.0.0.1:7", None), "127.0.0.1:7");
        assert_eq!(ok("localhost:6666", None), "localhost:6666");
        assert_eq!(ok("[::1]:7", None), "[::1]:7");
        assert_eq!(ok("127.0.0.1", Some("7")), "127.0.0.1:7");
        assert_eq!(ok("localhost", Some("7")), "localhost:7");
        assert_eq!(ok("::1", Some("7")), "[::1]:7");
        assert_eq!(ok("[::1]", Some("7")), "[::1]:7");
        assert_eq!(ok("fe80::1", Some("65535")), "[fe80::1]:65535");
    }

    #[test]
    fn each_mistake_is_named() {
        for (first, port, why) in [
            (
                "[::1]",
                None,
                "'[::1]' has no port: give [::1]:PORT or ::1 PORT",
            ),
            (
                "::1",
                None,
                "'::1' has no port: give [::1]:PORT or ::1 PORT",
            ),
            ("::1:80", None, "give [::1:80]:PORT"),
            ("1:2:3:80", None, "goes in brackets"),
            ("localhost", None, "'localhost' has no port"),
            (":80", None, "host is missing"),
            ("127.0.0.1:99999", None, "out of range"),
            ("127.0.0.1:0", None, "port 0"),
            ("127.0.0.1:x", None, "not a number"),
            ("[::1", None, "unclosed"),
            ("[::1]80", None, "expected [IPV6]:PORT"),
            ("[localhost]:80", None, "only IPv6 addresses go in brackets"),
            ("127.0.0.1:80", Some("80"), "not both"),
            ("[::1]:80", Some("80"), "not both"),
            ("localhost", Some("http"), "not a number"),
            ("", Some("80"), "host is missing"),
            ("a b", Some("80"), "neither a host name"),
            ("1:2:3", Some("80"), "neither a host name"),
        ] {
            let e = err(first, port);
            assert!(e.contains(why), "{first} {port:?}: {e}");
        }
    }

    #[test]
    fn families_admit_their_addresses() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert!(Family::V4.admits(v4) && !Family::V4.admits(v6));
        assert!(Family::V6.admits(v6) && !Family::V6.admits(v4));
        assert!(Family::Any.admits(v4) && Family::Any.admits(v6));
        assert_eq!(Family::from_flags(false, true), Family::V6);
    }
}
