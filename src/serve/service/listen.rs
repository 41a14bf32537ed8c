//! socket → bind → listen, and the `listening tcp <addr>` line scripts wait for.
//!
//! [`Listening`] is that line's one format, for every kind of socket serve
//! announces, and [`parse_listening`] reads it back: scripts, the benchmark
//! and the tests learn where a server listens from these lines.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::net::target::Family;

/// The default port when no `--listen` is given.
pub(crate) const DEFAULT_PORT: u16 = 6666;
/// Listen backlog: enough for bursts of hundreds of connects while every
/// worker is busy (the kernel caps it at net.core.somaxconn).
pub(crate) const BACKLOG: i32 = 1024;

/// The addresses a set of listeners ended up bound to.
pub(crate) fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

/// Binds every address (the default of `family` when `addrs` is empty).
/// Listeners are non-blocking: every model polls them.
pub(crate) fn bind_all(addrs: &[SocketAddr], family: Family) -> Result<Vec<TcpListener>> {
    let any = |ip: std::net::IpAddr| SocketAddr::from((ip, DEFAULT_PORT));
    match (addrs.is_empty(), family) {
        (true, Family::Any) => Ok(vec![bind_default()?]),
        (true, Family::V4) => Ok(vec![bind(any(Ipv4Addr::UNSPECIFIED.into()))?]),
        (true, Family::V6) => Ok(vec![bind_in(any(Ipv6Addr::UNSPECIFIED.into()), family)?]),
        (false, _) => addrs.iter().map(|a| bind_in(*a, family)).collect(),
    }
}

/// What a server is listening for, as its stdout announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenKind {
    /// TCP echo: `listening tcp 127.0.0.1:40123`.
    Tcp,
    /// TLS echo (`--tls-listen`): `listening tls 127.0.0.1:40124`.
    Tls,
    /// UDP echo (`--udp`): `listening udp 127.0.0.1:40123`.
    Udp,
    /// The inspect port (`--inspect-listen`), TCP and UDP:
    /// `listening inspect 127.0.0.1:40125`.
    Inspect,
    /// Prometheus metrics (`--metrics`):
    /// `listening metrics http://127.0.0.1:9100/metrics`.
    Metrics,
}

/// One `listening …` line. Its `Display` is the line as printed (without
/// the newline); [`parse_listening`] is its inverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub kind: ListenKind,
    /// The bound address, port 0 already replaced by the kernel's choice.
    pub addr: SocketAddr,
}

/// Every line starts with this.
const PREFIX: &str = "listening ";
/// The metrics address is printed as the URL to scrape.
const METRICS_SCHEME: &str = "http://";
const METRICS_PATH: &str = "/metrics";

impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        match self.kind {
            ListenKind::Tcp => write!(f, "{PREFIX}tcp {addr}"),
            ListenKind::Tls => write!(f, "{PREFIX}tls {addr}"),
            ListenKind::Udp => write!(f, "{PREFIX}udp {addr}"),
            ListenKind::Inspect => write!(f, "{PREFIX}inspect {addr}"),
            ListenKind::Metrics => {
                write!(f, "{PREFIX}metrics {METRICS_SCHEME}{addr}{METRICS_PATH}")
            }
        }
    }
}

/// Reads a line as [`Listening`] prints it (a trailing newline is allowed);
/// `None` for any other line, so callers can skip the lines they do not want.
pub fn parse_listening(line: &str) -> Option<Listening> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (word, rest) = line.strip_prefix(PREFIX)?.split_once(' ')?;
    let (kind, addr) = match word {
        "tcp" => (ListenKind::Tcp, rest),
        "tls" => (ListenKind::Tls, rest),
        "udp" => (ListenKind::Udp, rest),
        "inspect" => (ListenKind::Inspect, rest),
        "metrics" => (
            ListenKind::Metrics,
            rest.strip_prefix(METRICS_SCHEME)?
                .strip_suffix(METRICS_PATH)?,
        ),
        _ => return None,
    };
    Some(Listening {
        kind,
        addr: addr.parse().ok()?,
    })
}

/// Who can reach a socket bound to `ip`, in words for the start-up log
/// (`v6_only`: the socket refuses IPv4 clients, `-6`).
pub(crate) fn reach(ip: std::net::IpAddr, v6_only: bool) -> &'static str {
    match ip {
        std::net::IpAddr::V6(v6) if v6.is_unspecified() && v6_only => "every IPv6 interface",
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "every interface, IPv4 and IPv6",
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "every IPv4 interface",
        ip if ip.is_loopback() => "this host only (loopback)",
        _ => "the interface with this address",
    }
}

/// Sets TCP_NODELAY on every listener, bound here or passed in (systemd,
/// a hand-over). Linux copies it into each socket `accept` returns (the
/// child is cloned from the listener), so the event models need no
/// `setsockopt` per connection: one system call less for every client.
/// False if any listener refused it; the models then set it per
/// connection as before.
pub(crate) fn nodelay_for_accepted<'a>(
    listeners: impl IntoIterator<Item = &'a TcpListener>,
) -> bool {
    listeners
        .into_iter()
        .all(|l| socket2::SockRef::from(l).set_tcp_nodelay(true).is_ok())
}

/// `[::]:6666` as one dual-stack socket; `0.0.0.0:6666` where the kernel has
/// no IPv6.
fn bind_default() -> Result<TcpListener> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, DEFAULT_PORT));
    match bind(v6) {
        Err(Error::Bind { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
            ) =>
        {
            tracing::info!("IPv6 unavailable ({source}); listening on IPv4 only");
            bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)))
        }
        r => r,
    }
}

/// Creates, binds and listens on one socket. An unspecified IPv6 address
/// (`[::]`) is made dual-stack (IPV6_V6ONLY off) so IPv4 clients share it.
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener> {
    bind_in(addr, Family::Any)
}

/// [`bind`], `[::]` serving IPv6 clients alone when `family` is IPv6 (`-6`).
pub(crate) fn bind_in(addr: SocketAddr, family: Family) -> Result<TcpListener> {
    let fail = |source: io::Error| match source.raw_os_error() {
        Some(libc::EADDRINUSE) => Error::AddrInUse(addr),
        Some(libc::EACCES) | Some(libc::EPERM) => Error::BindPermission(addr),
        _ => Error::Bind { addr, source },
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    // SO_REUSEADDR lets a restarted server bind while old connections sit in
    // TIME-WAIT; it does not allow two listeners on one port.
    sock.set_reuse_address(true).map_err(fail)?;
    if let SocketAddr::V6(v6) = addr
        && v6.ip().is_unspecified()
    {
        sock.set_only_v6(family == Family::V6).map_err(fail)?;
    }
    sock.bind(&addr.into()).map_err(fail)?;
    sock.listen(BACKLOG).map_err(fail)?;
    sock.set_nonblocking(true).map_err(fail)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`nodelay_for_accepted`] relies on: a socket accepted from a
    /// listener with TCP_NODELAY has it too, over IPv4 and IPv6, and one
    /// accepted from a listener without it does not (so the check can fail).
    #[test]
    fn accepted_sockets_inherit_nodelay_from_their_listener() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = bind(addr.parse().unwrap()) else {
                continue; // no IPv6 on this machine
            };
            l.set_nonblocking(false).unwrap();
            let accepted = |l: &TcpListener| {
                let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (a, _) = l.accept().unwrap();
                a.nodelay().unwrap()
            };
            assert!(
                !accepted(&l),
                "{addr}: a plain listener's child has no TCP_NODELAY"
            );
            assert!(nodelay_for_accepted([&l]));
            assert!(
                accepted(&l),
                "{addr}: the child of a TCP_NODELAY listener lacks it"
            );
        }
    }

    fn at(kind: ListenKind, addr: &str) -> Listening {
        Listening {
            kind,
            addr: addr.parse().unwrap(),
        }
    }

    /// The lines exactly as scripts see them: this format is a promise.
    #[test]
    fn prints_the_documented_lines() {
        let cases = [
            (
                at(ListenKind::Tcp, "127.0.0.1:40123"),
                "listening tcp 127.0.0.1:40123",
            ),
            (at(ListenKind::Tcp, "[::]:6666"), "listening tcp [::]:6666"),
            (at(ListenKind::Udp, "[::1]:7"), "listening udp [::1]:7"),
            (
                at(ListenKind::Inspect, "127.0.0.1:7007"),
                "listening inspect 127.0.0.1:7007",
            ),
            (
                at(ListenKind::Tls, "127.0.0.1:6667"),
                "listening tls 127.0.0.1:6667",
            ),
            (at(ListenKind::Tls, "[::1]:443"), "listening tls [::1]:443"),
            (
                at(ListenKind::Metrics, "127.0.0.1:9100"),
                "listening metrics http://127.0.0.1:9100/metrics",
            ),
        ];
        for (listening, line) in cases {
            assert_eq!(listening.to_string(), line);
            assert_eq!(parse_listening(line), Some(listening), "{line}");
            assert_eq!(parse_listening(&format!("{line}\n")), Some(listening));
        }
    }

    #[test]
    fn other_lines_are_not_listening_lines() {
        for line in [
            "",
            "listening",
            "listening tcp",
            "listening tcp ",
            "listening tcp  127.0.0.1:1",
            "listening tcp 127.0.0.1:1 ",
            "listening tcp 127.0.0.1",
            "listening sctp 127.0.0.1:1",
            "listening tls",
            "listening tls 127.0.0.1",
            "listening tls http://127.0.0.1:1/metrics",
            "listening metrics 127.0.0.1:9100",
            "listening metrics http://127.0.0.1:9100/",
            " listening tcp 127.0.0.1:1",
            "serving model=epoll",
        ] {
            assert_eq!(parse_listening(line), None, "{line:?}");
        }
    }
}
