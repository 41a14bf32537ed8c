//! The UDP side of the inspect port: each datagram is answered with the
//! report on it, cut to the datagram's own length, under the UDP echo's
//! policy (rate limits, loop ports, bad sources).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;

use netecho_core::inspect::report::{UdpReport, udp_reply};
use nix::sys::socket::{ControlMessageOwned, setsockopt, sockopt};

use crate::net::MAX_UDP_SIZE;
use crate::serve::service::stats::Stats;
use crate::serve::service::udp::{self as udp_echo, Datagram, Policy, RECV_TICK};

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

/// Serves the socket until the server stops: the UDP echo's receive step
/// and policy, then the report on the datagram in place of its echo.
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
        let mut seen = Seen::default();
        let got = udp_echo::receive(sock, &mut buf, policy, stats, Some(&mut cmsg), |c| {
            seen.note(c)
        });
        let Some(Datagram { len, src, .. }) = got else {
            continue;
        };
        // Never more bytes than came in: reflection factor at most 1.
        if let Some(reply) = udp_reply(&seen.report(src, len), len) {
            let _ = sock.send_to(&reply, src);
        }
    }
}

/// What a datagram's ancillary data said.
#[derive(Default)]
struct Seen {
    ttl: Option<u8>,
    tos: Option<u8>,
    local: Option<IpAddr>,
}

impl Seen {
    fn note(&mut self, c: ControlMessageOwned) {
        match c {
            ControlMessageOwned::Ipv4Ttl(t) => self.ttl = u8::try_from(t).ok(),
            ControlMessageOwned::Ipv6HopLimit(t) => self.ttl = u8::try_from(t).ok(),
            ControlMessageOwned::Ipv4Tos(t) => self.tos = Some(t),
            ControlMessageOwned::Ipv6TClass(t) => self.tos = u8::try_from(t).ok(),
            ControlMessageOwned::Ipv4PacketInfo(p) => {
                self.local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
            }
            ControlMessageOwned::Ipv6PacketInfo(p) => {
                self.local = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)).to_canonical());
            }
            _ => {}
        }
    }

    /// The report on a datagram of `len` bytes from `src` (an IPv4 client
    /// of a dual-stack socket as its IPv4 address).
    fn report(self, src: SocketAddr, len: usize) -> UdpReport {
        UdpReport {
            proto: "udp".into(),
            cut: false,
            len: Some(len),
            peer: Some(SocketAddr::new(src.ip().to_canonical(), src.port())),
            local: self.local,
            ttl: self.ttl,
            dscp: self.tos.map(|t| t >> 2),
            ecn: self.tos.map(|t| t & 0b11),
        }
    }
}
