//! The SYN as the server's kernel saved it (`TCP_SAVED_SYN`: the IP header,
//! then the TCP header with its options), read into what the path may have
//! changed: TTL or hop limit, DSCP, ECN, DF, the window and the options in
//! the order they came.
//!
//! Untrusted bytes: every length is checked before it is used, and random
//! input is an error, never a panic (the property test below).

use serde::{Deserialize, Serialize};

use crate::wire::options::{self, TcpOption};
use crate::wire::packet::{IPPROTO_TCP, Ipv4Packet, Ipv6Packet, TcpSegment, flags};

/// What the path left of a SYN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syn {
    /// 4 or 6.
    pub ip_version: u8,
    /// TTL (IPv4) or hop limit (IPv6) on arrival.
    pub ttl: u8,
    /// The DSCP, the upper six bits of the TOS or traffic class.
    pub dscp: u8,
    /// The ECN field, its lower two bits (0 not ECN-capable, 1 and 2 ECT, 3 CE).
    pub ecn: u8,
    /// Don't Fragment (IPv4 only; IPv6 routers never fragment).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub df: Option<bool>,
    /// The SYN asked for ECN (ECE and CWR set, RFC 3168).
    pub ecn_setup: bool,
    /// The window field, unscaled (a SYN's window is never scaled).
    pub window: u16,
    /// The options in the order they came, padding left out.
    pub options: Vec<TcpOption>,
}

/// Why saved SYN bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SynError {
    #[error("the saved SYN is {0} bytes, too short for its headers")]
    Short(usize),
    #[error("the saved SYN's IP version is {0}, not 4 or 6")]
    Version(u8),
    #[error("the saved SYN carries protocol {0}, not TCP")]
    NotTcp(u8),
    #[error("the saved segment is not a SYN")]
    NotSyn,
    #[error("the saved SYN's TCP options are malformed")]
    BadOptions,
}

/// Parses the bytes `TCP_SAVED_SYN` returned: the headers through
/// `wire`'s checked views, which look at headers only (the saved bytes stop
/// before any data a TFO SYN carried, though the length fields count it).
pub fn parse(b: &[u8]) -> Result<Syn, SynError> {
    let first = *b.first().ok_or(SynError::Short(0))?;
    let short = |_| SynError::Short(b.len());
    let (ip_version, tos, ttl, df, tcp) = match first >> 4 {
        4 => {
            let ip = Ipv4Packet::new_header_checked(b).map_err(short)?;
            if ip.protocol() != IPPROTO_TCP {
                return Err(SynError::NotTcp(ip.protocol()));
            }
            let df = Some(ip.dont_fragment());
            (4, ip.tos(), ip.ttl(), df, ip.after_header())
        }
        6 => {
            let ip = Ipv6Packet::new_header_checked(b).map_err(short)?;
            if ip.next_header() != IPPROTO_TCP {
                return Err(SynError::NotTcp(ip.next_header()));
            }
            let (tclass, hops) = (ip.traffic_class(), ip.hop_limit());
            (6, tclass, hops, None, ip.after_header())
        }
        v => return Err(SynError::Version(v)),
    };
    let t = TcpSegment::new_checked(tcp).map_err(short)?;
    let f = t.flags();
    if f & flags::SYN == 0 {
        return Err(SynError::NotSyn);
    }
    Ok(Syn {
        ip_version,
        ttl,
        dscp: tos >> 2,
        ecn: tos & 0b11,
        df,
        ecn_setup: f & (flags::ECE | flags::CWR) == flags::ECE | flags::CWR,
        window: t.window(),
        options: options::parse(t.options()).map_err(|_| SynError::BadOptions)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Linux SYN as tcpdump shows it: 10.0.0.1 → 10.0.0.2, TTL 64, DF,
    /// DSCP 0, options mss 1460, sackOK, TS val 1 ecr 0, nop, wscale 7.
    fn linux_v4_syn() -> Vec<u8> {
        let mut b = vec![
            0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0, 0, 10, 0, 0, 1, 10, 0,
            0, 2,
        ];
        b.extend_from_slice(&[
            0x9c, 0x40, 0x1a, 0x0a, 0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0xc2, 0xfa, 0xf0, 0, 0, 0, 0,
        ]);
        b.extend_from_slice(&[
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        b
    }

    #[test]
    fn a_linux_ipv4_syn_reads_as_tcpdump_shows_it() {
        let s = parse(&linux_v4_syn()).unwrap();
        assert_eq!(s.ip_version, 4);
        assert_eq!(s.ttl, 64);
        assert_eq!((s.dscp, s.ecn), (0, 0));
        assert_eq!(s.df, Some(true));
        assert!(s.ecn_setup, "flags 0xc2 are SYN+ECE+CWR");
        assert_eq!(s.window, 64240);
        assert_eq!(
            s.options,
            vec![
                TcpOption::Mss { value: 1460 },
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 1, tsecr: 0 },
                TcpOption::Wscale { value: 7 },
            ]
        );
    }

    #[test]
    fn dscp_and_ecn_split_the_tos_byte() {
        let mut b = linux_v4_syn();
        b[1] = (46 << 2) | 0b10; // EF, ECT(0)
        let s = parse(&b).unwrap();
        assert_eq!((s.dscp, s.ecn), (46, 2));
    }

    #[test]
    fn an_ipv6_syn_gives_hop_limit_and_traffic_class_and_no_df() {
        let mut b = vec![0u8; 40];
        b[0] = 0x60 | (0xb8 >> 4); // version 6, traffic class 0xb8 (EF)
        b[1] = (0xb8 & 0x0f) << 4;
        b[6] = 6;
        b[7] = 61;
        b.extend_from_slice(&[
            0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        b.extend_from_slice(&[2, 4, 0x04, 0xb0]);
        let s = parse(&b).unwrap();
        assert_eq!(
            (s.ip_version, s.ttl, s.dscp, s.ecn, s.df),
            (6, 61, 46, 0, None)
        );
        assert!(!s.ecn_setup);
        assert_eq!(s.options, vec![TcpOption::Mss { value: 1200 }]);
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert_eq!(parse(&[]), Err(SynError::Short(0)));
        assert_eq!(parse(&[0x45; 10]), Err(SynError::Short(10)));
        assert_eq!(parse(&[0x15; 60]), Err(SynError::Version(1)));
        let mut udp = linux_v4_syn();
        udp[9] = 17;
        assert_eq!(parse(&udp), Err(SynError::NotTcp(17)));
        let mut ack = linux_v4_syn();
        ack[20 + 13] = 0x10;
        assert_eq!(parse(&ack), Err(SynError::NotSyn));
        let mut bad = linux_v4_syn();
        bad[40 + 1] = 30; // the MSS option runs past the header
        assert_eq!(parse(&bad), Err(SynError::BadOptions));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse(&b);
        }
    }
}
