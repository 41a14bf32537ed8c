//! `bench --source-addrs`: the local addresses connections come from.
//!
//! A TCP connection is named by its four-tuple, so one source address can
//! hold only as many connections to one server port as it has ephemeral
//! ports (about 28k by default, 64k at most). With N source addresses
//! (aliases, or any of 127.0.0.0/8 on loopback) one machine holds N times
//! that, which is how tcpkali and other load tools reach a million.
//!
//! Each socket is bound to its address before it connects, with
//! `IP_BIND_ADDRESS_NO_PORT`: without it `bind` would pick the port on its
//! own, unaware of the destination, and run out of ports at 64k for the
//! address whatever the servers; with it the port is chosen at `connect`,
//! where the kernel only needs the whole four-tuple to be unique.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The most addresses one `--source-addrs` may name: a /8 of IPv4 (all of
/// loopback), far beyond any sane alias list, small enough that a typo in
/// an IPv6 range is caught rather than taken.
pub(crate) const MAX_SOURCES: u128 = 1 << 24;

/// A list of address ranges, each `first..=first+count-1`, one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sources {
    /// `(first, count)` per range, addresses as numbers.
    ranges: Vec<(u128, u128)>,
    /// All IPv6 (else all IPv4).
    v6: bool,
    /// Addresses in all ranges.
    total: u128,
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(first, count)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", self.addr(first))?;
            if count > 1 {
                write!(f, "-{}", self.addr(first + count - 1))?;
            }
        }
        Ok(())
    }
}

/// One address as a number, and whether it is IPv6.
fn number(s: &str) -> Result<(u128, bool), String> {
    match s.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok((u128::from(u32::from(a)), false)),
        Ok(IpAddr::V6(a)) => Ok((u128::from(a), true)),
        Err(_) => Err(format!("'{}' is not an IP address", s.trim())),
    }
}

/// Parses `A-B` (a range, both ends included), `A/N` (a CIDR block), `A`,
/// or a comma list of those; IPv4 or IPv6, not both.
pub(crate) fn parse(s: &str) -> Result<Sources, String> {
    let mut ranges = Vec::new();
    let mut family: Option<bool> = None;
    let mut total: u128 = 0;
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!(
                "'{s}' has an empty item; expected A-B, A/N or A, comma separated"
            ));
        }
        let (first, count, v6) = if let Some((a, b)) = part.split_once('-') {
            let (a, va) = number(a)?;
            let (b, vb) = number(b)?;
            if va != vb {
                return Err(format!("'{part}' mixes IPv4 and IPv6"));
            }
            if b < a {
                return Err(format!("'{part}' ends before it starts"));
            }
            (a, b - a + 1, va)
        } else if let Some((a, bits)) = part.split_once('/') {
            let (a, v6) = number(a)?;
            let width = if v6 { 128 } else { 32 };
            let bits: u32 = bits
                .trim()
                .parse()
                .ok()
                .filter(|&b| b <= width)
                .ok_or_else(|| format!("'{part}' needs a prefix length 0-{width}"))?;
            let host = width - bits;
            if host >= 64 {
                return Err(format!("'{part}' is too large a block"));
            }
            let size = 1u128 << host;
            (a & !(size - 1), size, v6)
        } else {
            let (a, v6) = number(part)?;
            (a, 1, v6)
        };
        if *family.get_or_insert(v6) != v6 {
            return Err(format!("'{s}' mixes IPv4 and IPv6 addresses"));
        }
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(first))
        } else {
            IpAddr::V4(Ipv4Addr::from(first as u32))
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!("'{part}' is not a unicast address to connect from"));
        }
        total = total.saturating_add(count);
        if total > MAX_SOURCES {
            return Err(format!(
                "'{s}' names more than {MAX_SOURCES} addresses; give a smaller range"
            ));
        }
        ranges.push((first, count));
    }
    Ok(Sources {
        ranges,
        v6: family.unwrap_or(false),
        total,
    })
}

impl Sources {
    /// How many addresses there are.
    #[cfg(test)]
    fn count(&self) -> u128 {
        self.total
    }

    /// Whether they are IPv6 addresses.
    pub(crate) fn is_ipv6(&self) -> bool {
        self.v6
    }

    fn addr(&self, n: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            // In range: IPv4 numbers come from a u32 and stay below 2^32.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
        }
    }

    /// The address of connection `id`: round robin over all of them, so
    /// `N` connections over `K` addresses put `N/K` on each.
    pub(crate) fn pick(&self, id: u64) -> IpAddr {
        let mut n = u128::from(id) % self.total.max(1);
        for &(first, count) in &self.ranges {
            if n < count {
                return self.addr(first + n);
            }
            n -= count;
        }
        // Unreachable: n < total, the sum of the counts.
        self.addr(self.ranges.first().map_or(0, |r| r.0))
    }

    /// A TCP socket bound to connection `id`'s address, its port left for
    /// `connect` to choose.
    fn bound(&self, id: u64) -> io::Result<Socket> {
        let local = SocketAddr::new(self.pick(id), 0);
        let sock = Socket::new(
            Domain::for_address(local),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        setsockopt(&sock, sockopt::IpBindAddressNoPort, &true).map_err(io::Error::from)?;
        sock.bind(&SockAddr::from(local))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to {}: {e}", local.ip())))?;
        Ok(sock)
    }

    /// Connection `id` to `addr` from its source address, blocking for at
    /// most `timeout`.
    pub(crate) fn connect(
        &self,
        id: u64,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let sock = self.bound(id)?;
        sock.connect_timeout(&SockAddr::from(addr), timeout)?;
        Ok(sock.into())
    }

    /// Connection `id` to `addr` from its source address, non-blocking:
    /// the connect is under way when this returns (`bench --new-conn`,
    /// whose event loop sees it finish), as mio's own `connect` leaves it.
    pub(crate) fn connect_nonblocking(&self, id: u64, addr: SocketAddr) -> io::Result<TcpStream> {
        let sock = self.bound(id)?;
        sock.set_nonblocking(true)?;
        match sock.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(sock.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_a_block_and_a_list_parse() {
        let r = parse("127.0.0.2-127.0.0.20").unwrap();
        assert_eq!(r.count(), 19);
        assert_eq!(r.pick(0), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(r.pick(18), "127.0.0.20".parse::<IpAddr>().unwrap());
        assert_eq!(r.pick(19), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(r.to_string(), "127.0.0.2-127.0.0.20");
        let l = parse("10.0.0.1, 10.0.0.9").unwrap();
        assert_eq!(l.pick(1), "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(parse("127.0.0.0/30").unwrap().count(), 4);
        // A range across an octet carries.
        let r = parse("127.0.0.255-127.0.1.1").unwrap();
        assert_eq!(r.pick(1), "127.0.1.0".parse::<IpAddr>().unwrap());
        let v6 = parse("fd00::1-fd00::3,::1").unwrap();
        assert!(v6.is_ipv6());
        assert_eq!(v6.count(), 4);
        assert_eq!(v6.pick(3), "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn bad_ranges_say_why() {
        for (bad, why) in [
            ("127.0.0.5-127.0.0.2", "ends before it starts"),
            ("127.0.0.1-::1", "mixes IPv4 and IPv6"),
            ("127.0.0.1,::1", "mixes IPv4 and IPv6"),
            ("127.0.0.300", "not an IP address"),
            ("", "empty item"),
            ("127.0.0.1,", "empty item"),
            ("127.0.0.0/33", "prefix length 0-32"),
            ("10.0.0.0/7", "more than"),
            ("fd00::/64", "too large"),
            ("0.0.0.0", "not a unicast"),
            ("fd00::1-fd01::1", "more than"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_connection_comes_from_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let s = parse("127.0.0.2-127.0.0.3").unwrap();
        for id in 0..4u64 {
            let c = s.connect(id, addr, Duration::from_secs(2)).unwrap();
            let (_, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), s.pick(id));
            assert_eq!(c.local_addr().unwrap(), peer);
        }
        // IPv6 the same way, where the machine has it.
        if let Ok(l6) = std::net::TcpListener::bind("[::1]:0") {
            let six = parse("::1").unwrap();
            let c = six
                .connect(0, l6.local_addr().unwrap(), Duration::from_secs(2))
                .unwrap();
            let (_, peer) = l6.accept().unwrap();
            assert_eq!(c.local_addr().unwrap(), peer);
            assert!(peer.is_ipv6());
        }
        // Non-blocking (`bench --new-conn`): under way at once, from its
        // address once the listener takes it.
        for id in 0..2u64 {
            let c = s.connect_nonblocking(id, addr).unwrap();
            let (_, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), s.pick(id));
            assert_eq!(c.local_addr().unwrap(), peer);
        }
        // An address this machine does not have: the bind says so.
        let far = parse("192.0.2.1").unwrap();
        let e = far.connect(0, addr, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("cannot bind to 192.0.2.1"), "{e}");
    }
}
