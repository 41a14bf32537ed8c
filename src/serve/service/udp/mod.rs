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

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::net::MAX_UDP_SIZE;
use crate::serve::service::faults::{self, FaultSet};
use crate::serve::service::stats::{FaultKind, Stats};

/// Receive timeout, so a worker notices the server stopping.
const RECV_TICK: Duration = Duration::from_millis(250);

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
    let fd = sock.as_raw_fd();
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
        let mut from: libc::sockaddr_storage = unsafe_zeroed_storage();
        let mut from_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are valid for writes of the lengths
        // given, and outlive the call.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            // Timeout (to re-check `stopping`), a signal, or an ICMP error
            // queued by an earlier send: none of them ends the loop.
            continue;
        }
        let len = n as usize;
        let Some(src) = to_socket_addr(&from) else {
            continue;
        };
        let now = Instant::now();
        let held = len.min(buf.len());
        match policy.check(src, &buf[..held], len, now) {
            Ok(()) => {
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
            Err(why) => stats.udp_drop(why),
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

fn unsafe_zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Converts what `recvfrom` wrote into a `SocketAddr`.
fn to_socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
