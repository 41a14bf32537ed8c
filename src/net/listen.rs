//! An address `serve` listens on, as given: `HOST:PORT`, the host a name
//! or an address, read with the targets' one reading of `HOST:PORT`
//! ([`super::target::split_host_port`]), the port 0-65535 (0: the kernel
//! picks one). A name is resolved now, so a typo is a usage error.

use std::net::{SocketAddr, ToSocketAddrs};

use super::target::{bracketed, parse_listen_port, split_host_port};

/// An address to listen on as given. A name stands for every address it
/// resolves to (`localhost:7000` is 127.0.0.1:7000 and [::1]:7000), as in
/// nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenAddr {
    /// As the user typed it, for messages.
    pub(crate) shown: String,
    /// Whether the host was a name (else one address literal).
    pub(crate) named: bool,
    /// What it stands for; never empty.
    pub(crate) addrs: Vec<SocketAddr>,
}

/// Parses an address to listen on: `ADDR:PORT`, `[V6ADDR]:PORT` or
/// `NAME:PORT` (a clap value parser: the error is the one line to show).
pub(crate) fn parse_listen_all(s: &str) -> Result<ListenAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(ListenAddr {
            shown: s.to_string(),
            named: false,
            addrs: vec![a],
        });
    }
    let (host, port) = split_host_port(s)?;
    let Some(port) = port else {
        return Err(format!(
            "the port is missing: expected {}:PORT",
            bracketed(&host)
        ));
    };
    let port = parse_listen_port(port)?;
    let mut addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .collect();
    // getaddrinfo lists an address once per socket type; bind each once.
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(*a));
    if addrs.is_empty() {
        return Err(format!("'{host}' has no address"));
    }
    Ok(ListenAddr {
        shown: s.to_string(),
        named: true,
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_or_say_why() {
        let one = |s: &str| parse_listen_all(s).unwrap().addrs;
        assert_eq!(one("127.0.0.1:0"), vec!["127.0.0.1:0".parse().unwrap()]);
        assert_eq!(one("[::1]:6666"), vec!["[::1]:6666".parse().unwrap()]);
        assert!(
            one("localhost:7000")
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7000)
        );
        assert!(one("localhost:0").iter().all(|a| a.port() == 0));
        let err = |s: &str| parse_listen_all(s).unwrap_err();
        assert!(err("127.0.0.1:99999").contains("out of range 0-65535"));
        assert!(err("localhost:x").contains("not a number"));
        assert!(err("1:2:3:80").contains("brackets"));
        assert!(err("no-such-host.invalid:80").contains("cannot resolve"));
        assert_eq!(err("6666"), "the port is missing: expected 6666:PORT");
        assert_eq!(err("::1"), "the port is missing: expected [::1]:PORT");
        assert_eq!(err("[::1]"), "the port is missing: expected [::1]:PORT");
    }
}
