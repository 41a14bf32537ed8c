//! The network primitives every client-side subcommand shares: resolving
//! `HOST:PORT`, connecting with one-line errors, a connected UDP socket, the
//! size limits, the bytes of each message ([`pattern`]), what a UDP echo
//! of an earlier request is ([`stray`]) and the client side of TLS
//! ([`tls`]).
//!
//! `client`, `ping` and `bench` all use these, and `serve` its UDP limit;
//! this module imports only [`crate::error`], never a subcommand.

pub(crate) mod listen;
pub(crate) mod pattern;
pub(crate) mod source;
pub(crate) mod stray;
pub(crate) mod target;
pub(crate) mod tls;

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use clap::Args;

use crate::error::{Error, Result};
use target::{Family, Target};

/// The server to talk to and the address family, as `client` and `ping`
/// take them: `HOST:PORT`, `[IPV6]:PORT`, or `HOST PORT` as nc users type
/// it, with `-4`/`-6`.
#[derive(Debug, Args)]
pub(crate) struct TargetOpt {
    /// The echo server: HOST:PORT, [IPV6]:PORT, or a host alone followed by
    /// PORT. HOST is a name (resolved through the system's resolver) or an
    /// IP address.
    #[arg(value_name = "HOST[:PORT]")]
    pub(crate) host: String,

    /// The port, when HOST is given without one (`127.0.0.1 6666`,
    /// `::1 6666`, `localhost 6666`).
    #[arg(value_name = "PORT")]
    pub(crate) port: Option<String>,

    /// Use IPv4 addresses only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub(crate) ipv4: bool,

    /// Use IPv6 addresses only.
    #[arg(short = '6', long = "ipv6")]
    pub(crate) ipv6: bool,
}

impl TargetOpt {
    /// The target, or a usage error (exit status 2) naming what is wrong.
    pub(crate) fn target(&self) -> Result<Target> {
        target::parse(&self.host, self.port.as_deref()).map_err(Error::Usage)
    }

    pub(crate) fn family(&self) -> Family {
        Family::from_flags(self.ipv4, self.ipv6)
    }
}

/// Resolves `target`, keeping the addresses of `family`, in the resolver's
/// order (which follows the system's preference, RFC 6724).
pub(crate) fn resolve_target(target: &Target, family: Family) -> Result<Vec<SocketAddr>> {
    let shown = target.to_string();
    let all: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            target: shown.clone(),
            reason: lookup_reason(&e),
        })?
        .collect();
    let addrs: Vec<SocketAddr> = all
        .iter()
        .copied()
        .filter(|a| family.admits(a.ip()))
        .collect();
    if addrs.is_empty() {
        let reason = match (all.is_empty(), family) {
            (false, Family::V4) => "it has only IPv6 addresses, and -4 asks for IPv4".to_string(),
            (false, Family::V6) => "it has only IPv4 addresses, and -6 asks for IPv6".to_string(),
            _ => "no address found".to_string(),
        };
        return Err(Error::Resolve {
            target: shown,
            reason,
        });
    }
    Ok(addrs)
}

/// The resolver's reason without std's "failed to lookup address
/// information: " prefix.
fn lookup_reason(e: &io::Error) -> String {
    let text = e.to_string();
    text.strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text)
        .to_string()
}

/// Largest TCP message: each connection holds one copy, so 50 connections
/// at this size already hold 800 MiB.
pub(crate) const MAX_TCP_SIZE: usize = 16 * 1024 * 1024;
/// Largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IP header bytes).
pub(crate) const MAX_UDP_SIZE: usize = netecho_core::udp::MAX_UDP_SIZE;

/// Connects to the first of `addrs` that answers.
pub(crate) fn connect_any(
    target: &str,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream> {
    let mut last = None;
    for &addr in addrs {
        match connect_one(target, addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Resolve {
        target: target.to_string(),
        reason: "no address found".into(),
    }))
}

/// One blocking connect, its failure in the user's words.
pub(crate) fn connect_one(target: &str, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| connect_error(target, timeout, e))
}

/// Names a connect failure: refused, timed out, or the OS's reason.
pub(crate) fn connect_error(target: &str, timeout: Duration, e: io::Error) -> Error {
    let target = target.to_string();
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::Refused(target),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::ConnectTimeout {
            target,
            after: timeout,
        },
        _ => Error::Connect { target, source: e },
    }
}

/// A UDP socket of the target's family, bound to any port and connected to
/// the target, so the kernel drops datagrams from anyone else.
pub(crate) fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(any)?;
    sock.connect(addr)?;
    Ok(sock)
}
