//! The network primitives every client-side subcommand shares: resolving
//! `HOST:PORT`, connecting with one-line errors, a connected UDP socket, the
//! size limits, the bytes of each message ([`pattern`]) and the client
//! side of TLS ([`tls`]).
//!
//! `client`, `ping` and `bench` all use these, and `serve` its UDP limit;
//! this module imports only [`crate::error`], never a subcommand.

pub(crate) mod pattern;
pub(crate) mod source;
pub(crate) mod tls;

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use crate::error::{Error, Result};

/// Largest TCP message: each connection holds one copy, so 50 connections
/// at this size already hold 800 MiB.
pub(crate) const MAX_TCP_SIZE: usize = 16 * 1024 * 1024;
/// Largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IP header bytes).
pub(crate) const MAX_UDP_SIZE: usize = netecho_core::udp::MAX_UDP_SIZE;

/// Resolves `HOST:PORT`, with the same messages for every subcommand.
pub(crate) fn resolve(target: &str) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            target: target.to_string(),
            reason: if target
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                "expected HOST:PORT with a port 0-65535".to_string()
            } else {
                e.to_string()
            },
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Resolve {
            target: target.to_string(),
            reason: "no address found".into(),
        });
    }
    Ok(addrs)
}

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
