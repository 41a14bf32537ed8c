//! UDP echo (RFC 862 section 2): each datagram is sent back, whole, to its
//! source — with the protections an echo service on a real network needs.
//!
//! - Never truncated: a datagram larger than `--udp-max-size` is detected
//!   with MSG_TRUNC and dropped (xinetd and NetBSD inetd truncate silently).
//! - No reflection amplification: the reply is exactly the request.
//! - No loops, as BSD inetd: no reply to port 0 or the ports of the other
//!   small services (7 echo, 9 discard, 13 daytime, 19 chargen, 37 time), nor
//!   to broadcast, multicast or unspecified sources. And, past what inetd
//!   does, no reply to the same bytes coming back again and again from where
//!   we just sent them: two echo servers and one spoofed datagram stop after
//!   [`LOOP_BOUNCES`] bounces instead of ping-ponging forever.
//! - Rate limits: a token bucket per source (`--udp-rate`, burst 2×) so one
//!   flooder cannot starve other sources, and a global bucket.
//!
//! Every drop is counted by reason in [`Stats::udp_dropped`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::stats::{Stats, UdpDrop};
use crate::error::{Error, Result};
use crate::net::MAX_UDP_SIZE;

/// Source ports never answered: 0 and the small services a reply could loop with.
pub(crate) const LOOP_PORTS: [u16; 6] = [0, 7, 9, 13, 19, 37];
/// How long a sent reply is remembered for loop detection.
pub(crate) const LOOP_WINDOW: Duration = Duration::from_secs(1);
/// Identical bytes coming back from one address this many times within
/// [`LOOP_WINDOW`] is a loop, not a client; a client repeating itself once or
/// twice is still answered.
pub(crate) const LOOP_BOUNCES: u32 = 3;
/// Default `--udp-rate`: datagrams per second per source address.
pub(crate) const DEFAULT_RATE: u32 = 100;
/// Default `--udp-global-rate`: datagrams per second for all sources.
pub(crate) const DEFAULT_GLOBAL_RATE: u32 = 20_000;
/// Forget rate and loop state of sources idle this long.
const FORGET_AFTER: Duration = Duration::from_secs(10);
/// Sources remembered at once: spoofed random sources cannot grow the table
/// past this; when it is full, a new source waits for the next sweep.
pub(crate) const MAX_SOURCES: usize = 65_536;
/// Receive timeout, so a worker notices the server stopping.
const RECV_TICK: Duration = Duration::from_millis(250);

/// UDP settings from the command line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// Datagrams larger than this are dropped, never truncated.
    pub(crate) max_size: usize,
    /// Per-source datagrams per second (burst twice that).
    pub(crate) rate: u32,
    /// All-sources datagrams per second (burst twice that).
    pub(crate) global_rate: u32,
}

/// Binds a UDP socket on each address (`[::]` dual-stack, as for TCP).
pub(crate) fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<UdpSocket>> {
    addrs.iter().map(|a| bind(*a)).collect()
}

fn bind(addr: SocketAddr) -> Result<UdpSocket> {
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
        sock.set_only_v6(false).map_err(fail)?;
    }
    sock.bind(&addr.into()).map_err(fail)?;
    Ok(sock.into())
}

/// Prints `listening udp <addr>` per socket, as the TCP lines.
pub(crate) fn announce(sockets: &[UdpSocket]) -> Result<()> {
    let mut out = io::stdout().lock();
    for s in sockets {
        let addr = s.local_addr().map_err(Error::io("reading bound address"))?;
        let line = super::listen::Listening {
            kind: super::listen::ListenKind::Udp,
            addr,
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    Ok(())
}

/// A token bucket: `rate` tokens per second, up to `burst`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn new(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token if one is there.
    pub(crate) fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the policy knows about one source address.
#[derive(Debug)]
struct Source {
    bucket: Bucket,
    /// Hash of the last reply sent there, when, and how often it came back.
    last_reply: Option<(u64, Instant, u32)>,
    seen: Instant,
}

/// The decision for one datagram: pure policy, no I/O, so it is unit-tested.
#[derive(Debug)]
pub(crate) struct Policy {
    cfg: Config,
    global: Bucket,
    sources: HashMap<SocketAddr, Source>,
    last_sweep: Instant,
}

impl Policy {
    /// A policy with full buckets.
    pub(crate) fn new(cfg: Config, now: Instant) -> Self {
        Policy {
            cfg,
            global: Bucket::new(2.0 * f64::from(cfg.global_rate), now),
            sources: HashMap::new(),
            last_sweep: now,
        }
    }

    /// Decides whether a datagram of `len` bytes (its real length, as
    /// MSG_TRUNC reports it) from `from` gets a reply.
    pub(crate) fn check(
        &mut self,
        from: SocketAddr,
        payload: &[u8],
        len: usize,
        now: Instant,
    ) -> Result<(), UdpDrop> {
        if len > self.cfg.max_size {
            return Err(UdpDrop::TooBig);
        }
        if LOOP_PORTS.contains(&from.port()) {
            return Err(UdpDrop::LoopPort);
        }
        if bad_source(from.ip()) {
            return Err(UdpDrop::BadSource);
        }
        // The global bucket first: a flood of spoofed sources is stopped
        // before it can add entries to the table.
        let g = f64::from(self.cfg.global_rate);
        if !self.global.take(g, 2.0 * g, now) {
            return Err(UdpDrop::GlobalRate);
        }
        if now.duration_since(self.last_sweep) > FORGET_AFTER
            || (self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&from))
        {
            self.sources
                .retain(|_, s| now.duration_since(s.seen) < FORGET_AFTER);
            self.last_sweep = now;
            if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&from) {
                return Err(UdpDrop::SourceRate);
            }
        }
        let (rate, burst) = (f64::from(self.cfg.rate), 2.0 * f64::from(self.cfg.rate));
        let src = self.sources.entry(from).or_insert_with(|| Source {
            bucket: Bucket::new(burst, now),
            last_reply: None,
            seen: now,
        });
        src.seen = now;
        let h = digest(payload);
        if let Some((last, at, bounces)) = &mut src.last_reply
            && *last == h
            && now.duration_since(*at) < LOOP_WINDOW
        {
            *bounces += 1;
            if *bounces >= LOOP_BOUNCES {
                return Err(UdpDrop::Loop);
            }
        } else {
            src.last_reply = Some((h, now, 0));
        }
        if !src.bucket.take(rate, burst, now) {
            return Err(UdpDrop::SourceRate);
        }
        if let Some((_, at, _)) = &mut src.last_reply {
            *at = now;
        }
        Ok(())
    }
}

fn digest(payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// Broadcast, multicast and unspecified sources never get a reply: such a
/// source is forged, and a reply would go to many hosts or none.
pub(crate) fn bad_source(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    }
}

/// Serves UDP echo on `sock` until the server stops. Several workers may
/// share one socket (the kernel hands each datagram to one of them) and one
/// policy.
pub(crate) fn serve(sock: &UdpSocket, policy: &Mutex<Policy>, stats: &Stats) {
    let _ = sock.set_read_timeout(Some(RECV_TICK));
    // One byte more than the largest datagram, so MSG_TRUNC's length is
    // checked against a buffer that could hold any legal one.
    let mut buf = vec![0u8; MAX_UDP_SIZE + 1];
    let fd = sock.as_raw_fd();
    while !stats.stopping() {
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
        let verdict = match policy.lock() {
            Ok(mut p) => p.check(src, &buf[..held], len, now),
            Err(poisoned) => poisoned.into_inner().check(src, &buf[..held], len, now),
        };
        match verdict {
            Ok(()) => {
                // The reply is exactly the request: reflection factor 1.
                if sock.send_to(&buf[..len], src).is_ok() {
                    stats.udp_datagrams.fetch_add(1, Ordering::Relaxed);
                    stats.udp_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
            Err(why) => stats.udp_drop(why),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            max_size: MAX_UDP_SIZE,
            rate: 10,
            global_rate: 1000,
        }
    }

    #[test]
    fn small_service_ports_and_bad_sources_get_no_reply() {
        let now = Instant::now();
        let mut p = Policy::new(cfg(), now);
        for port in LOOP_PORTS {
            let from = SocketAddr::from(([127, 0, 0, 1], port));
            assert_eq!(p.check(from, b"x", 1, now), Err(UdpDrop::LoopPort));
        }
        for ip in [
            "255.255.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "::ffff:255.255.255.255",
            "ff02::1",
        ] {
            let from = SocketAddr::new(ip.parse().unwrap(), 40000);
            assert_eq!(p.check(from, b"x", 1, now), Err(UdpDrop::BadSource), "{ip}");
        }
        let ok = SocketAddr::from(([127, 0, 0, 1], 40000));
        assert_eq!(p.check(ok, b"x", 1, now), Ok(()));
    }

    #[test]
    fn oversize_is_dropped_not_truncated() {
        let now = Instant::now();
        let mut p = Policy::new(
            Config {
                max_size: 100,
                ..cfg()
            },
            now,
        );
        let from = SocketAddr::from(([127, 0, 0, 1], 40000));
        assert_eq!(p.check(from, &[0; 100], 100, now), Ok(()));
        assert_eq!(p.check(from, &[0; 101], 101, now), Err(UdpDrop::TooBig));
    }

    #[test]
    fn one_flooder_is_held_to_its_rate_others_are_served() {
        let t0 = Instant::now();
        let mut p = Policy::new(cfg(), t0);
        let flood = SocketAddr::from(([127, 0, 0, 2], 40000));
        let other = SocketAddr::from(([127, 0, 0, 3], 40000));
        let mut ok = 0;
        for i in 0..1000u32 {
            if p.check(flood, &i.to_be_bytes(), 4, t0).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 20, "burst is twice the rate");
        assert_eq!(p.check(other, b"hello", 5, t0), Ok(()));
        // One second later the flooder has earned `rate` more.
        let t1 = t0 + Duration::from_secs(1);
        let again = (0..100u32)
            .filter(|i| p.check(flood, &(5000 + i).to_be_bytes(), 4, t1).is_ok())
            .count();
        assert_eq!(again, 10);
    }

    #[test]
    fn bouncing_bytes_stop_after_a_few_rounds() {
        let t0 = Instant::now();
        let mut p = Policy::new(cfg(), t0);
        let peer = SocketAddr::from(([127, 0, 0, 1], 6667));
        let mut replies = 0;
        for i in 0..10u32 {
            let t = t0 + Duration::from_millis(u64::from(i));
            if p.check(peer, b"spoofed", 7, t).is_ok() {
                replies += 1;
            }
        }
        assert_eq!(replies, LOOP_BOUNCES, "the loop is cut");
        // Different bytes from the same peer are still answered.
        assert_eq!(
            p.check(peer, b"new", 3, t0 + Duration::from_millis(20)),
            Ok(())
        );
    }

    #[test]
    fn a_client_repeating_itself_slowly_is_answered() {
        let t0 = Instant::now();
        let mut p = Policy::new(cfg(), t0);
        let peer = SocketAddr::from(([127, 0, 0, 1], 50000));
        for i in 0..5u64 {
            let t = t0 + LOOP_WINDOW * (i as u32) + Duration::from_millis(10 * i);
            assert_eq!(p.check(peer, b"same", 4, t), Ok(()), "round {i}");
        }
    }
}
