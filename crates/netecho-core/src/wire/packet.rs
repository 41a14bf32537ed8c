//! Ethernet → IPv4/IPv6 → TCP, parsed from hostile bytes without I/O and
//! without panics.
//!
//! Each layer is a zero-copy wrapper in smoltcp's style: `new_checked`
//! verifies every length the accessors will rely on, so the accessors
//! themselves cannot index out of bounds; field offsets are named ranges.
//! [`parse_frame`] chains the layers into the [`Segment`] `trace` prints.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use super::options::{self, TcpOption};

/// A header field's byte range.
type Field = Range<usize>;

/// Why a frame is not a TCP segment this program can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than a header, or than a length field says.
    Truncated,
    /// A field holds a value no valid packet has.
    Malformed,
    /// Not IPv4 or IPv6 (ARP, ...), or IP but not TCP.
    NotTcp,
    /// A later IPv4 fragment: it carries no TCP header.
    Fragment,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "truncated packet",
            ParseError::Malformed => "malformed packet",
            ParseError::NotTcp => "not a TCP segment",
            ParseError::Fragment => "IPv4 fragment without a TCP header",
        })
    }
}

/// Ethernet II header layout.
mod eth {
    use super::Field;
    #[cfg(test)]
    pub const DST: Field = 0..6;
    #[cfg(test)]
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const HEADER_LEN: usize = 14;
    pub const TYPE_IPV4: u16 = 0x0800;
    pub const TYPE_IPV6: u16 = 0x86dd;
}

/// IPv4 header layout (RFC 791).
mod ipv4 {
    use super::Field;
    pub const VER_IHL: usize = 0;
    /// Type of service: DSCP in the upper six bits, ECN in the lower two.
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Field = 2..4;
    pub const FLAGS_FRAG: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
    pub const MIN_HEADER_LEN: usize = 20;
    /// More-fragments flag and the 13-bit fragment offset.
    #[cfg(test)]
    pub const MF_OR_OFFSET: u16 = 0x3fff;
    /// Just the offset.
    pub const OFFSET: u16 = 0x1fff;
    /// Don't Fragment.
    pub const DF: u16 = 0x4000;
}

/// IPv6 fixed header layout (RFC 8200).
mod ipv6 {
    use super::Field;
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
    pub const HEADER_LEN: usize = 40;
}

/// TCP header layout (RFC 793 section 3.1).
mod tcp {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const MIN_HEADER_LEN: usize = 20;
}

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;

fn be16(b: &[u8], f: Field) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[f]);
    u16::from_be_bytes(a)
}

fn be32(b: &[u8], f: Field) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    u32::from_be_bytes(a)
}

/// An Ethernet II frame.
#[derive(Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps bytes that hold at least a full header.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < eth::HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    /// Destination MAC.
    #[cfg(test)]
    pub fn dst(&self) -> &[u8] {
        &self.buffer.as_ref()[eth::DST]
    }

    /// Source MAC.
    #[cfg(test)]
    pub fn src(&self) -> &[u8] {
        &self.buffer.as_ref()[eth::SRC]
    }

    /// What the payload is (0x0800 IPv4, 0x86dd IPv6).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), eth::ETHERTYPE)
    }

    /// Everything after the header.
    #[cfg(test)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[eth::HEADER_LEN..]
    }
}

/// An IPv4 packet.
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks the version, that the header length fits, and that the total
    /// length covers the header and fits in the bytes we have (Ethernet may
    /// pad short packets: bytes past the total length are ignored).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let p = Self::new_header_checked(buffer)?;
        let (hl, tl) = (p.header_len(), p.total_len());
        if tl < hl {
            return Err(ParseError::Malformed);
        }
        if p.buffer.as_ref().len() < tl {
            return Err(ParseError::Truncated);
        }
        Ok(p)
    }

    /// Checks the version and that the header, options included, fits, and
    /// nothing of the total length: for bytes that hold headers but not the
    /// data the length counts (a saved SYN, `TCP_SAVED_SYN`). The payload is
    /// then what the bytes hold of it.
    pub fn new_header_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < ipv4::MIN_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if b[ipv4::VER_IHL] >> 4 != 4 {
            return Err(ParseError::Malformed);
        }
        let p = Ipv4Packet { buffer };
        if p.header_len() < ipv4::MIN_HEADER_LEN {
            return Err(ParseError::Malformed);
        }
        if p.buffer.as_ref().len() < p.header_len() {
            return Err(ParseError::Truncated);
        }
        Ok(p)
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[ipv4::VER_IHL] & 0x0f) * 4
    }

    /// Header plus payload, as the header says.
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), ipv4::TOTAL_LEN))
    }

    /// The protocol of the payload (6 for TCP).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[ipv4::PROTOCOL]
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[ipv4::TOS]
    }

    /// Time to live, as it arrived.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[ipv4::TTL]
    }

    /// Don't Fragment.
    pub fn dont_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), ipv4::FLAGS_FRAG) & ipv4::DF != 0
    }

    /// True for any fragment but the first.
    pub fn is_later_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), ipv4::FLAGS_FRAG) & ipv4::OFFSET != 0
    }

    /// True for any part of a fragmented packet.
    #[cfg(test)]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), ipv4::FLAGS_FRAG) & ipv4::MF_OR_OFFSET != 0
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buffer.as_ref(), ipv4::SRC))
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buffer.as_ref(), ipv4::DST))
    }

    /// The payload, without Ethernet padding (of a header-checked view,
    /// what the bytes hold of it).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let hl = self.header_len();
        &b[hl..self.total_len().clamp(hl, b.len())]
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// Everything after the header, whatever the total length says (a
    /// saved SYN's TCP header), borrowed from the bytes, not the view.
    pub fn after_header(&self) -> &'a [u8] {
        &self.buffer[self.header_len()..]
    }
}

/// An IPv6 packet (fixed header only: a TCP segment behind extension
/// headers is reported as not TCP, as most capture filters do).
#[derive(Debug)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks the version and that the payload length fits.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let p = Self::new_header_checked(buffer)?;
        if p.buffer.as_ref().len() - ipv6::HEADER_LEN < p.payload_len() {
            return Err(ParseError::Truncated);
        }
        Ok(p)
    }

    /// Checks the version and that the fixed header fits, and nothing of
    /// the payload length (as [`Ipv4Packet::new_header_checked`]).
    pub fn new_header_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < ipv6::HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if b[ipv6::VERSION] >> 4 != 6 {
            return Err(ParseError::Malformed);
        }
        Ok(Ipv6Packet { buffer })
    }

    /// Payload length in bytes, as the header says.
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), ipv6::PAYLOAD_LEN))
    }

    /// The next header (6 for TCP directly behind the fixed header).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ipv6::NEXT_HEADER]
    }

    /// The traffic class (DSCP and ECN, as IPv4's TOS): the eight bits
    /// after the version nibble.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[ipv6::VERSION] << 4) | (b[ipv6::VERSION + 1] >> 4)
    }

    /// Hop limit, as it arrived.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[ipv6::HOP_LIMIT]
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[ipv6::SRC]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[ipv6::DST]);
        Ipv6Addr::from(a)
    }

    /// The payload, without padding (of a header-checked view, what the
    /// bytes hold of it).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[ipv6::HEADER_LEN..(ipv6::HEADER_LEN + self.payload_len()).min(b.len())]
    }
}

impl<'a> Ipv6Packet<&'a [u8]> {
    /// Everything after the fixed header, whatever the payload length says
    /// (as [`Ipv4Packet::after_header`]).
    pub fn after_header(&self) -> &'a [u8] {
        &self.buffer[ipv6::HEADER_LEN..]
    }
}

/// TCP flag bits (RFC 793, RFC 3168 for ECE/CWR).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// A TCP segment.
#[derive(Debug)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Checks that the header, options included, fits.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < tcp::MIN_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let s = TcpSegment { buffer };
        if s.header_len() < tcp::MIN_HEADER_LEN {
            return Err(ParseError::Malformed);
        }
        if s.buffer.as_ref().len() < s.header_len() {
            return Err(ParseError::Truncated);
        }
        Ok(s)
    }

    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[tcp::DATA_OFF] >> 4) * 4
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp::DST_PORT)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), tcp::SEQ_NUM)
    }

    /// Acknowledgment number (meaningful with ACK set).
    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), tcp::ACK_NUM)
    }

    /// The flag bits, see [`flags`].
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[tcp::FLAGS]
    }

    /// The advertised window, before window scaling.
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp::WINDOW)
    }

    /// The options: the header's bytes past its fixed part, padding and all
    /// (walk them with [`options::parse`]).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[tcp::MIN_HEADER_LEN..self.header_len()]
    }

    /// The data carried.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// What `trace` needs of one captured segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag bits, see [`flags`].
    pub flags: u8,
    /// Window field as sent (unscaled).
    pub window: u16,
    /// Bytes of data.
    pub len: u32,
    /// A SYN's options (what this side offers for the connection); `None`
    /// on other segments, and on a SYN without options or with malformed ones.
    pub offers: Option<Offers>,
}

/// What a SYN or SYN-ACK offered in its options, for `trace` to show beside
/// the handshake (the inspect service reports the same from the server's
/// saved SYN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offers {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: bool,
    pub tfo: bool,
    pub mptcp: bool,
    /// Options of other kinds.
    pub others: u8,
}

impl Offers {
    /// Summarizes parsed options; `None` when there are none.
    pub fn of(options: &[TcpOption]) -> Option<Offers> {
        if options.is_empty() {
            return None;
        }
        let mut o = Offers::default();
        for opt in options {
            match opt {
                TcpOption::Mss { value } => o.mss = Some(*value),
                TcpOption::Wscale { value } => o.wscale = Some(*value),
                TcpOption::SackPermitted => o.sack_permitted = true,
                TcpOption::Timestamps { .. } => o.timestamps = true,
                TcpOption::Tfo { .. } => o.tfo = true,
                TcpOption::Mptcp { .. } => o.mptcp = true,
                TcpOption::Sack | TcpOption::Unknown { .. } => {
                    o.others = o.others.saturating_add(1)
                }
            }
        }
        Some(o)
    }
}

impl std::fmt::Display for Offers {
    /// `mss 1460, sack_permitted, timestamps, wscale 7`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = self.mss {
            parts.push(format!("mss {m}"));
        }
        let flags = [
            (self.sack_permitted, "sack_permitted"),
            (self.timestamps, "timestamps"),
            (self.tfo, "tfo"),
            (self.mptcp, "mptcp"),
        ];
        parts.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| n.to_string()),
        );
        if let Some(w) = self.wscale {
            parts.push(format!("wscale {w}"));
        }
        if self.others > 0 {
            parts.push(format!("{} other option(s)", self.others));
        }
        f.write_str(&parts.join(", "))
    }
}

impl Segment {
    /// Is flag `f` set?
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Parses one Ethernet frame down to its TCP segment.
pub fn parse_frame(bytes: &[u8]) -> Result<Segment, ParseError> {
    match parse_link(link::ETHERNET, bytes)?.proto {
        Proto::Tcp(s) => Ok(s),
        Proto::Udp(_) => Err(ParseError::NotTcp),
    }
}

/// Link-layer header types (the pcap `LINKTYPE_*` numbers) that
/// [`parse_link`] takes apart.
pub mod link {
    /// BSD loopback: a 4-byte address family in the writer's byte order.
    pub const NULL: u32 = 0;
    /// Ethernet II (and Linux loopback, which fakes an Ethernet header).
    pub const ETHERNET: u32 = 1;
    /// Bare IPv4 or IPv6, told apart by the version nibble.
    pub const RAW: u32 = 101;
    /// OpenBSD loopback: like NULL, in network byte order.
    pub const LOOP: u32 = 108;
    /// Linux "cooked" capture v1 (`tcpdump -i any` before libpcap 1.10).
    pub const LINUX_SLL: u32 = 113;
    /// Bare IPv4.
    pub const IPV4: u32 = 228;
    /// Bare IPv6.
    pub const IPV6: u32 = 229;
    /// Linux "cooked" capture v2 (`tcpdump -i any` since libpcap 1.10).
    pub const LINUX_SLL2: u32 = 276;
    /// Length of the SLL header; its protocol field is its last 2 bytes.
    pub const SLL_LEN: usize = 16;
    /// Length of the SLL2 header; its protocol field is its first 2 bytes.
    pub const SLL2_LEN: usize = 20;
}

/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// UDP header length (RFC 768).
const UDP_HEADER_LEN: usize = 8;

/// A UDP datagram: what `trace` shows of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Bytes of data.
    pub len: u32,
}

/// The transport part of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A TCP segment.
    Tcp(Segment),
    /// A UDP datagram.
    Udp(Datagram),
}

/// A parsed packet: its transport header and where its data lies in the
/// bytes given to [`parse_link`] (for `-A`/`-X`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// TCP or UDP.
    pub proto: Proto,
    /// The data's byte range in the packet.
    pub payload: Range<usize>,
}

/// Parses a packet of link type `linktype` (one of [`link`]) down to its
/// TCP segment or UDP datagram.
pub fn parse_link(linktype: u32, bytes: &[u8]) -> Result<Parsed, ParseError> {
    let (ethertype, off) = match linktype {
        link::ETHERNET => (
            EthernetFrame::new_checked(bytes)?.ethertype(),
            eth::HEADER_LEN,
        ),
        link::NULL | link::LOOP => {
            let b: [u8; 4] = bytes
                .get(..4)
                .ok_or(ParseError::Truncated)?
                .try_into()
                .map_err(|_| ParseError::Truncated)?;
            // The family is in the writer's byte order: either way round,
            // 2 is IPv4 and 24, 28 or 30 are IPv6 (BSDs disagree).
            let fam = u32::from_le_bytes(b).min(u32::from_be_bytes(b));
            match fam {
                2 => (eth::TYPE_IPV4, 4),
                24 | 28 | 30 => (eth::TYPE_IPV6, 4),
                _ => return Err(ParseError::NotTcp),
            }
        }
        link::RAW | link::IPV4 | link::IPV6 => match bytes.first().map(|b| b >> 4) {
            Some(4) => (eth::TYPE_IPV4, 0),
            Some(6) => (eth::TYPE_IPV6, 0),
            Some(_) => return Err(ParseError::Malformed),
            None => return Err(ParseError::Truncated),
        },
        link::LINUX_SLL => {
            let p = bytes
                .get(link::SLL_LEN - 2..link::SLL_LEN)
                .ok_or(ParseError::Truncated)?;
            (u16::from_be_bytes([p[0], p[1]]), link::SLL_LEN)
        }
        link::LINUX_SLL2 => {
            let p = bytes.get(..2).ok_or(ParseError::Truncated)?;
            if bytes.len() < link::SLL2_LEN {
                return Err(ParseError::Truncated);
            }
            (u16::from_be_bytes([p[0], p[1]]), link::SLL2_LEN)
        }
        _ => return Err(ParseError::NotTcp),
    };
    parse_network(ethertype, bytes, off)
}

/// Parses the IP packet at `off` in `bytes`, of the given ethertype.
pub fn parse_network(ethertype: u16, bytes: &[u8], off: usize) -> Result<Parsed, ParseError> {
    let net = bytes.get(off..).ok_or(ParseError::Truncated)?;
    let (src, dst, proto, ip_payload) = match ethertype {
        eth::TYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(net)?;
            if ip.protocol() != IPPROTO_TCP && ip.protocol() != IPPROTO_UDP {
                return Err(ParseError::NotTcp);
            }
            if ip.is_later_fragment() {
                return Err(ParseError::Fragment);
            }
            let at = off + ip.header_len();
            (
                IpAddr::V4(ip.src()),
                IpAddr::V4(ip.dst()),
                ip.protocol(),
                at..at + ip.payload().len(),
            )
        }
        eth::TYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(net)?;
            if ip.next_header() != IPPROTO_TCP && ip.next_header() != IPPROTO_UDP {
                return Err(ParseError::NotTcp);
            }
            let at = off + ipv6::HEADER_LEN;
            (
                IpAddr::V6(ip.src()),
                IpAddr::V6(ip.dst()),
                ip.next_header(),
                at..at + ip.payload().len(),
            )
        }
        _ => return Err(ParseError::NotTcp),
    };
    let body = &bytes[ip_payload.clone()];
    if proto == IPPROTO_TCP {
        let seg = segment(src, dst, body)?;
        let start = ip_payload.end - seg.len as usize;
        return Ok(Parsed {
            proto: Proto::Tcp(seg),
            payload: start..ip_payload.end,
        });
    }
    if body.len() < UDP_HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
    let udp_len = usize::from(port(4));
    if udp_len < UDP_HEADER_LEN {
        return Err(ParseError::Malformed);
    }
    if udp_len > body.len() {
        return Err(ParseError::Truncated);
    }
    let start = ip_payload.start + UDP_HEADER_LEN;
    let end = ip_payload.start + udp_len;
    Ok(Parsed {
        proto: Proto::Udp(Datagram {
            src: SocketAddr::new(src, port(0)),
            dst: SocketAddr::new(dst, port(2)),
            len: (udp_len - UDP_HEADER_LEN) as u32,
        }),
        payload: start..end,
    })
}

fn segment(src: IpAddr, dst: IpAddr, bytes: &[u8]) -> Result<Segment, ParseError> {
    let t = TcpSegment::new_checked(bytes)?;
    let offers = if t.flags() & flags::SYN != 0 {
        options::parse(t.options())
            .ok()
            .and_then(|o| Offers::of(&o))
    } else {
        None
    };
    Ok(Segment {
        src: SocketAddr::new(src, t.src_port()),
        dst: SocketAddr::new(dst, t.dst_port()),
        seq: t.seq(),
        ack: t.ack(),
        flags: t.flags(),
        window: t.window(),
        // A slice of a captured frame is far below 4 GiB.
        len: u32::try_from(t.payload().len()).unwrap_or(u32::MAX),
        offers,
    })
}

/// Builds frames for tests (here, the property tests and the `packet` fuzz
/// target's round trip): an Ethernet frame holding one TCP segment over
/// IPv4 or IPv6, checksums left zero.
pub fn build_frame(seg: &Segment, payload: &[u8]) -> Vec<u8> {
    let mut tcp_hdr = vec![0u8; tcp::MIN_HEADER_LEN];
    tcp_hdr[tcp::SRC_PORT].copy_from_slice(&seg.src.port().to_be_bytes());
    tcp_hdr[tcp::DST_PORT].copy_from_slice(&seg.dst.port().to_be_bytes());
    tcp_hdr[tcp::SEQ_NUM].copy_from_slice(&seg.seq.to_be_bytes());
    tcp_hdr[tcp::ACK_NUM].copy_from_slice(&seg.ack.to_be_bytes());
    tcp_hdr[tcp::DATA_OFF] = 5 << 4;
    tcp_hdr[tcp::FLAGS] = seg.flags;
    tcp_hdr[tcp::WINDOW].copy_from_slice(&seg.window.to_be_bytes());
    tcp_hdr.extend_from_slice(payload);
    let mut f = vec![0u8; eth::HEADER_LEN];
    match (seg.src.ip(), seg.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[eth::ETHERTYPE].copy_from_slice(&eth::TYPE_IPV4.to_be_bytes());
            let mut ip = vec![0u8; ipv4::MIN_HEADER_LEN];
            ip[ipv4::VER_IHL] = 0x45;
            let total = (ipv4::MIN_HEADER_LEN + tcp_hdr.len()) as u16;
            ip[ipv4::TOTAL_LEN].copy_from_slice(&total.to_be_bytes());
            ip[ipv4::TTL] = 64;
            ip[ipv4::PROTOCOL] = IPPROTO_TCP;
            ip[ipv4::SRC].copy_from_slice(&s.octets());
            ip[ipv4::DST].copy_from_slice(&d.octets());
            f.extend_from_slice(&ip);
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            f[eth::ETHERTYPE].copy_from_slice(&eth::TYPE_IPV6.to_be_bytes());
            let mut ip = vec![0u8; ipv6::HEADER_LEN];
            ip[ipv6::VERSION] = 0x60;
            ip[ipv6::PAYLOAD_LEN].copy_from_slice(&(tcp_hdr.len() as u16).to_be_bytes());
            ip[ipv6::NEXT_HEADER] = IPPROTO_TCP;
            ip[ipv6::HOP_LIMIT] = 64;
            ip[ipv6::SRC].copy_from_slice(&v6(s).octets());
            ip[ipv6::DST].copy_from_slice(&v6(d).octets());
            f.extend_from_slice(&ip);
        }
    }
    f.extend_from_slice(&tcp_hdr);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(src: &str, dst: &str, flags: u8) -> Segment {
        Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq: 0xfffffff0,
            ack: 17,
            flags,
            window: 65495,
            len: 0,
            offers: None,
        }
    }

    #[test]
    fn ipv4_round_trip() {
        let s = seg("127.0.0.1:40000", "127.0.0.1:6666", flags::SYN);
        assert_eq!(parse_frame(&build_frame(&s, b"")), Ok(s));
        let d = Segment { len: 5, ..s };
        assert_eq!(parse_frame(&build_frame(&s, b"hello")), Ok(d));
    }

    #[test]
    fn ipv6_round_trip() {
        let s = seg("[::1]:40000", "[::1]:6666", flags::SYN | flags::ACK);
        assert_eq!(
            parse_frame(&build_frame(&s, b"x")),
            Ok(Segment { len: 1, ..s })
        );
    }

    #[test]
    fn a_syn_carries_what_its_options_offer() {
        let mut b = vec![
            0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        // Ports 40000 -> 7, SYN, data offset 10 words.
        b.extend_from_slice(&[
            0x9c, 0x40, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
        ]);
        b.extend_from_slice(&[
            2, 4, 0x04, 0xb0, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        let Proto::Tcp(s) = parse_link(link::RAW, &b).unwrap().proto else {
            panic!("not TCP");
        };
        let o = s.offers.expect("a SYN with options");
        assert_eq!((o.mss, o.wscale), (Some(1200), Some(7)));
        assert_eq!(
            o.to_string(),
            "mss 1200, sack_permitted, timestamps, wscale 7"
        );
        // The same options on a segment that is not a SYN offer nothing.
        b[20 + 13] = flags::ACK;
        let Proto::Tcp(s) = parse_link(link::RAW, &b).unwrap().proto else {
            panic!("not TCP");
        };
        assert_eq!(s.offers, None);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let s = seg("10.0.0.1:1", "10.0.0.2:2", flags::ACK);
        let mut f = build_frame(&s, b"");
        f.extend_from_slice(&[0; 6]);
        assert_eq!(parse_frame(&f).map(|x| x.len), Ok(0));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let s = seg("127.0.0.1:40000", "127.0.0.1:6666", flags::PSH | flags::ACK);
        for f in [
            build_frame(&s, b"abc"),
            build_frame(&seg("[::1]:1", "[::1]:2", 0), b"abc"),
        ] {
            for cut in 0..f.len() {
                assert!(parse_frame(&f[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn lies_in_length_fields_are_caught() {
        let s = seg("127.0.0.1:40000", "127.0.0.1:6666", flags::ACK);
        let good = build_frame(&s, b"abc");
        let mut f = good.clone();
        f[14] = 0x44; // IHL 4: shorter than the minimum header
        assert_eq!(parse_frame(&f), Err(ParseError::Malformed));
        let mut f = good.clone();
        f[14 + 2..14 + 4].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(ParseError::Truncated));
        let mut f = good.clone();
        f[14 + 2..14 + 4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(ParseError::Malformed));
        let mut f = good.clone();
        f[14 + 20 + 12] = 0xf0; // data offset 60 bytes, beyond the frame
        assert_eq!(parse_frame(&f), Err(ParseError::Truncated));
        let mut f = good.clone();
        f[14 + 20 + 12] = 0x20; // data offset 8 bytes
        assert_eq!(parse_frame(&f), Err(ParseError::Malformed));
        let mut f = good.clone();
        f[14 + 9] = 1; // ICMP
        assert_eq!(parse_frame(&f), Err(ParseError::NotTcp));
        let mut f = good.clone();
        f[14 + 9] = 17; // UDP: not a segment, though it parses as a datagram
        assert!(parse_frame(&f).is_err());
        let mut f = good;
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x10; // fragment offset 16
        assert_eq!(parse_frame(&f), Err(ParseError::Fragment));
    }

    #[test]
    fn accessors_of_a_checked_frame() {
        let f = build_frame(&seg("127.0.0.1:1", "127.0.0.1:2", 0), b"");
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!((e.src(), e.dst()), (&[0u8; 6][..], &[0u8; 6][..]));
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert!(!ip.is_fragment());
        let t = TcpSegment::new_checked(ip.payload()).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.header_len()), (1, 2, 20));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_frame(&bytes);
        }

        #[test]
        fn random_bytes_behind_a_valid_ip_header_never_panic(
            v6 in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..80),
            cut in 0usize..200,
        ) {
            let s = if v6 { seg("[::1]:1", "[::1]:2", 0) } else { seg("127.0.0.1:1", "127.0.0.1:2", 0) };
            let mut f = build_frame(&s, b"");
            let ip_end = if v6 { 14 + 40 } else { 14 + 20 };
            f.truncate(ip_end);
            f.extend_from_slice(&tail);
            // Make the IP length fields agree with the random tail
            // sometimes, so the TCP parser gets exercised.
            if v6 {
                f[14 + 4..14 + 6].copy_from_slice(&(tail.len() as u16).to_be_bytes());
            } else {
                f[14 + 2..14 + 4].copy_from_slice(&((20 + tail.len()) as u16).to_be_bytes());
            }
            let cut = cut.min(f.len());
            let _ = parse_frame(&f[..cut]);
            if let Ok(seg) = parse_frame(&f) {
                prop_assert!(seg.len as usize <= tail.len());
            }
        }

        #[test]
        fn valid_frames_parse_back(
            seq in any::<u32>(), ack in any::<u32>(), fl in any::<u8>(), win in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            sp in 1u16.., dp in 1u16.., v6 in any::<bool>(),
        ) {
            let (a, b) = if v6 { ("::1", "::2") } else { ("10.1.2.3", "10.4.5.6") };
            let s = Segment {
                src: SocketAddr::new(a.parse().unwrap(), sp),
                dst: SocketAddr::new(b.parse().unwrap(), dp),
                seq, ack, flags: fl, window: win, len: payload.len() as u32, offers: None,
            };
            let f = build_frame(&s, &payload);
            prop_assert_eq!(parse_frame(&f), Ok(s));
            for cut in 0..f.len() {
                prop_assert!(parse_frame(&f[..cut]).is_err());
            }
        }
    }
}
