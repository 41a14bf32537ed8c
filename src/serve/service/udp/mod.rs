//! UDP echo (RFC 862 section 2): each datagram is sent back, whole, to its
//! source — with the protections an echo service on a real network needs.
//!
//! - Never truncated: a datagram larger than `--udp-max-size` is detected
//!   with MSG_TRUNC and dropped (xinetd and NetBSD inetd truncate silently).
//! - No reflection amplification: the reply is exactly the request.
//! - No loops, as BSD inetd: no reply to port 0 or the ports of the other
//!   small services (7 echo, 9 discard, 13 daytime, 19 chargen, 37 time), nor
//!   to broadcast, multicast or unspecified sources. And, past what inetd
//!   does, no reply to bytes that keep coming back from where we just sent
//!   them: two echo servers and any number of spoofed datagrams stop after
//!   [`LOOP_BOUNCES`](policy::LOOP_BOUNCES) bounces instead of ping-ponging forever (every reply
//!   is remembered, not only the last, so alternating payloads are caught).
//! - Rate limits: a token bucket per source (`--udp-rate`, burst 2×) so one
//!   flooder cannot starve other sources, and a global one
//!   (`--udp-global-rate`) of which sources already known keep a reserve, so
//!   a spoofed flood cannot starve them either; each decision costs the same
//!   whatever the flood ([`policy`]).
//!
//! Every drop is counted by reason in [`Stats::udp_dropped`].
//!
//! With `--fault`, a datagram the policy lets through then meets its faults
//! (drop, duplicate, reorder, truncate, latency): the decision is the
//! connection core's ([`netecho_core::fault::udp::decide`]), echoes it
//! holds back wait in [`held`] until due.

mod held;

use netecho_core::udp as policy;

pub(crate) use policy::{Config, DEFAULT_GLOBAL_RATE, DEFAULT_RATE, Policy};

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::net::MAX_UDP_SIZE;
use crate::serve::service::faults::{self, FaultSet};
use crate::serve::service::stats::{FaultKind, Stats};

/// Receive timeout, so a worker (of the echo or the inspect port) notices
/// the server stopping.
pub(crate) const RECV_TICK: Duration = Duration::from_millis(250);

/// Binds a UDP socket on each address (`[::]` dual-stack, as for TCP).
pub(crate) fn bind_all(addrs: &[SocketAddr], v6_only: bool) -> Result<Vec<UdpSocket>> {
    addrs.iter().map(|a| bind(*a, v6_only)).collect()
}

/// `v6_only`: `[::]` serves IPv6 clients alone (`serve -6`), else both.
fn bind(addr: SocketAddr, v6_only: bool) -> Result<UdpSocket> {
    let fail = |source: io::Error| match source.raw_os_error() {
        Some(libc::EADDRINUSE) => Error::AddrInUse(addr),
        Some(libc::EACCES) | Some(libc::EPERM) => Error::BindPermission(addr),
        _ => Error::Bind { addr, source },
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    if let SocketAddr::V6(v6) = addr
        && v6.ip().is_unspecified()
    {
        sock.set_only_v6(v6_only).map_err(fail)?;
    }
    sock.bind(&addr.into()).map_err(fail)?;
    Ok(sock.into())
}

/// Serves UDP echo on `sock` until the server stops. Several workers may
/// share one socket (the kernel hands each datagram to one of them) and one
/// policy, which takes no lock they all share.
pub(crate) fn serve(sock: &UdpSocket, policy: &Policy, stats: &Stats, faults: Option<&FaultSet>) {
    let _ = sock.set_read_timeout(Some(RECV_TICK));
    let faults = faults.filter(|f| f.faults.any_udp());
    let mut rng = faults.map(FaultSet::rng);
    let local = sock.local_addr().ok();
    let mut waiting = held::Held::default();
    // One byte more than the largest datagram, so MSG_TRUNC's length is
    // checked against a buffer that could hold any legal one.
    let mut buf = vec![0u8; MAX_UDP_SIZE + 1];
    // The receive timeout in force: a setsockopt only when it must change
    // (something held comes due sooner), not one per datagram.
    let mut timeout = RECV_TICK;
    while !stats.stopping() {
        if faults.is_some() {
            let now = Instant::now();
            while let Some((payload, to)) = waiting.pop_due(now) {
                reply(sock, &payload, to, stats);
            }
            let wait = waiting
                .next_due()
                .map_or(RECV_TICK, |d| {
                    d.saturating_duration_since(now).min(RECV_TICK)
                })
                .max(Duration::from_millis(1));
            if wait != timeout {
                let _ = sock.set_read_timeout(Some(wait));
                timeout = wait;
            }
        }
        let Some(Datagram { len, src, at: now }) =
            receive(sock, &mut buf, policy, stats, None, |_| {})
        else {
            continue;
        };
        let picked = match (faults, rng.as_mut(), local) {
            (Some(f), Some(r), Some(local)) => f.pick_udp(src, local, r).map(|e| (e, r)),
            _ => None,
        };
        match picked {
            // The reply is exactly the request: reflection factor 1.
            None => reply(sock, &buf[..len], src, stats),
            Some((e, r)) => {
                let fate = netecho_core::fault::udp::decide(&e, len, r);
                faults::count(stats, src, &fate.applied);
                for copy in fate.copies {
                    let payload = &buf[..copy.len];
                    if copy.delay.is_zero() {
                        reply(sock, payload, src, stats);
                    } else if !waiting.hold(now + copy.delay, payload, src) {
                        faults::count(stats, src, &[FaultKind::Drop]);
                    }
                }
            }
        }
    }
}

/// A datagram [`receive`] let through.
pub(crate) struct Datagram {
    /// Its length, all of it in the buffer (the policy drops any larger
    /// than `--udp-max-size`, which the buffer exceeds).
    pub(crate) len: usize,
    /// Where it came from, as the socket gave it (IPv4 clients of a
    /// dual-stack socket as mapped addresses): the reply goes there.
    pub(crate) src: SocketAddr,
    /// When it was received.
    pub(crate) at: Instant,
}

/// The receive step of every UDP loop (the echo, the inspect port): one
/// datagram into `buf`, waiting at most the socket's receive timeout, with
/// MSG_TRUNC so its real length is seen (a datagram longer than the buffer
/// is dropped by the policy, never cut), then the policy's check; a drop is
/// counted by its reason. `cmsg`, when given, is room for the ancillary
/// data the socket asked for, each message handed to `on_cmsg`. `None`
/// also on a timeout (to re-check `stopping`), a signal, or an ICMP error
/// queued by an earlier send: none of them ends the loop.
pub(crate) fn receive(
    sock: &UdpSocket,
    buf: &mut [u8],
    policy: &Policy,
    stats: &Stats,
    cmsg: Option<&mut [u8]>,
    mut on_cmsg: impl FnMut(ControlMessageOwned),
) -> Option<Datagram> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg =
        recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, cmsg, MsgFlags::MSG_TRUNC).ok()?;
    let len = msg.bytes;
    let src = msg.address.as_ref().and_then(to_socket_addr)?;
    if let Ok(cmsgs) = msg.cmsgs() {
        cmsgs.for_each(&mut on_cmsg);
    }
    let at = Instant::now();
    let held = len.min(buf.len());
    match policy.check(src, &buf[..held], len, at) {
        Ok(()) => Some(Datagram { len, src, at }),
        Err(why) => {
            stats.udp_drop(why);
            None
        }
    }
}

/// Sends one echo and counts it.
fn reply(sock: &UdpSocket, payload: &[u8], to: SocketAddr, stats: &Stats) {
    if sock.send_to(payload, to).is_ok() {
        stats.udp_datagrams.add(1);
        stats.udp_bytes.add(payload.len() as u64);
    }
}

/// The source `recvmsg` gave, as a `SocketAddr` (IPv4 or IPv6 only).
fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}
