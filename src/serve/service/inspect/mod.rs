//! `--inspect-listen`: a port that tells a client what the path did to its
//! connection. On TCP ([`tcp`]) the server writes one JSON line describing
//! the connection as it arrived — the peer address, the SYN the kernel kept
//! (TTL, DSCP, ECN, DF, options, window) and its own `TCP_INFO` — and
//! closes; on UDP ([`udp`]) it answers each datagram with one JSON
//! datagram (source, TTL or hop limit, TOS), never larger than the request
//! and under the UDP echo's per-source rate limit, so the port amplifies
//! nothing. The reports themselves are built and cut by
//! `netecho_core::inspect`; these modules only do the sockets. Both run
//! in the sidecar process, beside UDP echo and metrics.

pub(crate) mod tcp;
pub(crate) mod udp;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;

use crate::error::{Error, Result};
use crate::net::target::Family;
use crate::serve::service::listen;
use crate::serve::service::udp as udp_echo;
use crate::sys::sockopt;

/// How many times a port picked by the kernel for TCP is tried for UDP
/// before giving up (another program may hold that UDP port).
const PORT_TRIES: usize = 16;

/// One inspect address: its TCP listener and its UDP socket, same port.
#[derive(Debug)]
pub(crate) struct Port {
    pub(crate) tcp: TcpListener,
    pub(crate) udp: UdpSocket,
}

/// Binds every `--inspect-listen` address, TCP and UDP on one port (port
/// 0: a port free for both).
/// `family`: `-6` makes `[::]` refuse IPv4 clients, as for the echo.
pub(crate) fn bind_all(addrs: &[SocketAddr], family: Family) -> Result<Vec<Port>> {
    addrs.iter().map(|&a| bind(a, family)).collect()
}

fn bind(addr: SocketAddr, family: Family) -> Result<Port> {
    let mut last = None;
    for _ in 0..PORT_TRIES {
        let tcp = listen::bind_in(addr, family)?;
        let at = tcp.local_addr().map_err(Error::io("inspect listener"))?;
        match udp_echo::bind_all(&[at], family == Family::V6) {
            Ok(mut u) => return prepare(tcp, u.remove(0)),
            // The kernel's port was free for TCP only: pick another.
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(Error::AddrInUse(addr)))
}

/// Sets up a pair bound here or passed by a handover: the listener keeps
/// SYNs and blocks in accept (its thread does nothing else), the UDP
/// socket gets each datagram's TTL and TOS.
pub(crate) fn prepare(tcp: TcpListener, udp: UdpSocket) -> Result<Port> {
    sockopt::save_syn(tcp.as_fd()).map_err(Error::io("TCP_SAVE_SYN on the inspect listener"))?;
    tcp.set_nonblocking(false)
        .map_err(Error::io("inspect listener"))?;
    udp::want_ancillary(&udp).map_err(Error::io("inspect UDP socket options"))?;
    Ok(Port { tcp, udp })
}
