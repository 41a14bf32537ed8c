//! The UDP side of the inspect port: each datagram is answered with the
//! report on it, cut to the datagram's own length, under the UDP echo's
//! policy (rate limits, loop ports, bad sources).

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use netecho_core::inspect::report::{UdpReport, udp_reply};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};

use crate::net::MAX_UDP_SIZE;
use crate::serve::service::stats::Stats;
use crate::serve::service::udp::Policy;

/// Receive timeout, so the loop notices the server stopping.
const RECV_TICK: Duration = Duration::from_millis(250);

/// Asks for each datagram's TTL or hop limit, TOS or traffic class and
/// destination address. A dual-stack socket takes both families' options
/// (IPv4 ones apply to mapped clients); the ones a socket's family refuses
/// are skipped, and a datagram without them reports those fields absent.
pub(crate) fn want_ancillary(sock: &UdpSocket) -> std::io::Result<()> {
    let fd = sock.as_fd();
    let v4 = [
        setsockopt(&fd, sockopt::Ipv4RecvTtl, &true),
        setsockopt(&fd, sockopt::IpRecvTos, &true),
        setsockopt(&fd, sockopt::Ipv4PacketInfo, &true),
    ];
    let v6 = [
        setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true),
        setsockopt(&fd, sockopt::Ipv6RecvTClass, &true),
        setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true),
    ];
    if v4.iter().all(Result::is_ok) || v6.iter().all(Result::is_ok) {
        Ok(())
    } else {
        let e = v4.into_iter().chain(v6).find_map(Result::err);
        Err(e.map_or_else(std::io::Error::last_os_error, Into::into))
    }
}

/// Serves the socket until the server stops.
pub(crate) fn serve(sock: &UdpSocket, policy: &Policy, stats: &Stats) {
    let _ = sock.set_read_timeout(Some(RECV_TICK));
    let mut buf = vec![0u8; MAX_UDP_SIZE + 1];
    let mut cmsg = nix::cmsg_space!(
        libc::c_int,
        libc::c_int,
        libc::in_pktinfo,
        libc::c_int,
        libc::c_int,
        libc::in6_pktinfo
    );
    while !stats.stopping() {
        let Some((len, report)) = receive(sock, &mut buf, &mut cmsg) else {
            continue;
        };
        let Some(src) = report.peer else { continue };
        let held = len.min(buf.len());
        match policy.check(src, &buf[..held], len, Instant::now()) {
            Ok(()) => {
                // Never more bytes than came in: reflection factor at most 1.
                if let Some(reply) = udp_reply(&report, len) {
                    let _ = sock.send_to(&reply, src);
                }
            }
            Err(why) => stats.udp_drop(why),
        }
    }
}

/// One datagram: its real length (MSG_TRUNC) and the report on it.
fn receive(sock: &UdpSocket, buf: &mut [u8], cmsg: &mut [u8]) -> Option<(usize, UdpReport)> {
    let mut iov = [IoSliceMut::new(buf)];
    // Timeout (to re-check `stopping`), a signal, or an ICMP error queued
    // by an earlier send: none ends the loop, the caller tries again.
    let msg =
        recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::MSG_TRUNC)
            .ok()?;
    let len = msg.bytes;
    let peer = msg.address.and_then(|a| to_socket_addr(&a))?;
    let mut r = UdpReport {
        proto: "udp".into(),
        cut: false,
        len: Some(len),
        peer: Some(SocketAddr::new(peer.ip().to_canonical(), peer.port())),
        local: None,
        ttl: None,
        dscp: None,
        ecn: None,
    };
    let mut tos = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4Ttl(t) => r.ttl = u8::try_from(t).ok(),
                ControlMessageOwned::Ipv6HopLimit(t) => r.ttl = u8::try_from(t).ok(),
                ControlMessageOwned::Ipv4Tos(t) => tos = Some(t),
                ControlMessageOwned::Ipv6TClass(t) => tos = u8::try_from(t).ok(),
                ControlMessageOwned::Ipv4PacketInfo(p) => {
                    r.local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
                }
                ControlMessageOwned::Ipv6PacketInfo(p) => {
                    r.local = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)).to_canonical());
                }
                _ => {}
            }
        }
    }
    if let Some(t) = tos {
        (r.dscp, r.ecn) = (Some(t >> 2), Some(t & 0b11));
    }
    Some((len, r))
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}
