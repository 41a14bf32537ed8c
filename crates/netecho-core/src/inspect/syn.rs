//! The SYN as the server's kernel saved it (`TCP_SAVED_SYN`: the IP header,
//! then the TCP header with its options), read into what the path may have
//! changed: TTL or hop limit, DSCP, ECN, DF, the window and the options in
//! the order they came.
//!
//! Untrusted bytes: every length is checked before it is used, and random
//! input is an error, never a panic (the property test below).

use serde::{Deserialize, Serialize};

/// IPv4 header fields (RFC 791), offsets from the header's start.
mod ipv4 {
    use std::ops::Range;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOS: usize = 1;
    pub(super) const FLAGS_FRAG: Range<usize> = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    /// The header without options.
    pub(super) const MIN_LEN: usize = 20;
    /// Don't Fragment in the flags and fragment offset word.
    pub(super) const DF: u16 = 0x4000;
}

/// IPv6 header fields (RFC 8200).
mod ipv6 {
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    /// The fixed header; extension headers follow it.
    pub(super) const LEN: usize = 40;
}

/// TCP header fields (RFC 9293).
mod tcp {
    use std::ops::Range;
    pub(super) const DATA_OFFSET: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: Range<usize> = 14..16;
    /// The header without options.
    pub(super) const MIN_LEN: usize = 20;
    pub(super) const FLAG_SYN: u8 = 0x02;
    pub(super) const FLAG_ECE: u8 = 0x40;
    pub(super) const FLAG_CWR: u8 = 0x80;
}

/// The IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;

/// TCP option kinds (IANA "TCP Option Kind Numbers").
mod kind {
    pub(super) const EOL: u8 = 0;
    pub(super) const NOP: u8 = 1;
    pub(super) const MSS: u8 = 2;
    pub(super) const WSCALE: u8 = 3;
    pub(super) const SACK_PERMITTED: u8 = 4;
    pub(super) const SACK: u8 = 5;
    pub(super) const TIMESTAMPS: u8 = 8;
    pub(super) const MPTCP: u8 = 30;
    pub(super) const TFO: u8 = 34;
    /// RFC 6994 experimental option; TFO before its kind was assigned used
    /// it with the magic 0xF989.
    pub(super) const EXPERIMENTAL: u8 = 254;
}

/// The magic of TFO carried in the experimental option (RFC 7413, 4.1.1).
const TFO_EXP_MAGIC: u16 = 0xF989;

/// One TCP option as it arrived. Padding (NOP, end of list) is left out:
/// a box that re-pads options changes nothing a peer acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TcpOption {
    /// Maximum segment size.
    Mss { value: u16 },
    /// Window scale: the shift count.
    Wscale { value: u8 },
    /// SACK permitted.
    SackPermitted,
    /// A SACK block list (never in a SYN from a sane stack).
    Sack,
    /// Timestamps.
    Timestamps { tsval: u32, tsecr: u32 },
    /// TCP Fast Open, with the cookie's length (0: a cookie request).
    Tfo { cookie_len: u8 },
    /// Multipath TCP, with its subtype (0: MP_CAPABLE).
    Mptcp { subtype: u8 },
    /// Anything else, by its kind number and total length.
    Unknown { code: u8, len: u8 },
}

impl TcpOption {
    /// The option's name, as findings and `--json` say it.
    pub fn name(&self) -> String {
        match self {
            TcpOption::Mss { .. } => "mss".into(),
            TcpOption::Wscale { .. } => "wscale".into(),
            TcpOption::SackPermitted => "sack_permitted".into(),
            TcpOption::Sack => "sack".into(),
            TcpOption::Timestamps { .. } => "timestamps".into(),
            TcpOption::Tfo { .. } => "tfo".into(),
            TcpOption::Mptcp { .. } => "mptcp".into(),
            TcpOption::Unknown { code, .. } => format!("option {code}"),
        }
    }
}

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

/// Parses the bytes `TCP_SAVED_SYN` returned.
pub fn parse(b: &[u8]) -> Result<Syn, SynError> {
    let first = *b.first().ok_or(SynError::Short(0))?;
    let short = || SynError::Short(b.len());
    let (ip_version, tos, ttl, df, tcp_at) = match first >> 4 {
        4 => {
            let ihl = usize::from(b[ipv4::VER_IHL] & 0x0f) * 4;
            if ihl < ipv4::MIN_LEN || b.len() < ihl {
                return Err(short());
            }
            if b[ipv4::PROTOCOL] != IPPROTO_TCP {
                return Err(SynError::NotTcp(b[ipv4::PROTOCOL]));
            }
            let flags =
                u16::from_be_bytes([b[ipv4::FLAGS_FRAG.start], b[ipv4::FLAGS_FRAG.end - 1]]);
            (
                4,
                b[ipv4::TOS],
                b[ipv4::TTL],
                Some(flags & ipv4::DF != 0),
                ihl,
            )
        }
        6 => {
            if b.len() < ipv6::LEN {
                return Err(short());
            }
            if b[ipv6::NEXT_HEADER] != IPPROTO_TCP {
                return Err(SynError::NotTcp(b[ipv6::NEXT_HEADER]));
            }
            let tclass = (b[0] << 4) | (b[1] >> 4);
            (6, tclass, b[ipv6::HOP_LIMIT], None, ipv6::LEN)
        }
        v => return Err(SynError::Version(v)),
    };
    let t = &b[tcp_at..];
    if t.len() < tcp::MIN_LEN {
        return Err(short());
    }
    let doff = usize::from(t[tcp::DATA_OFFSET] >> 4) * 4;
    if doff < tcp::MIN_LEN || t.len() < doff {
        return Err(short());
    }
    let flags = t[tcp::FLAGS];
    if flags & tcp::FLAG_SYN == 0 {
        return Err(SynError::NotSyn);
    }
    let window = u16::from_be_bytes([t[tcp::WINDOW.start], t[tcp::WINDOW.end - 1]]);
    Ok(Syn {
        ip_version,
        ttl,
        dscp: tos >> 2,
        ecn: tos & 0b11,
        df,
        ecn_setup: flags & (tcp::FLAG_ECE | tcp::FLAG_CWR) == tcp::FLAG_ECE | tcp::FLAG_CWR,
        window,
        options: parse_options(&t[tcp::MIN_LEN..doff])?,
    })
}

/// The TCP options, padding left out, in order.
pub fn parse_options(mut o: &[u8]) -> Result<Vec<TcpOption>, SynError> {
    let mut out = Vec::new();
    while let Some(&k) = o.first() {
        match k {
            kind::EOL => break,
            kind::NOP => {
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let len = usize::from(*o.get(1).ok_or(SynError::BadOptions)?);
        if len < 2 || len > o.len() {
            return Err(SynError::BadOptions);
        }
        let body = &o[2..len];
        let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        out.push(match (k, body.len()) {
            (kind::MSS, 2) => TcpOption::Mss { value: be16(body) },
            (kind::WSCALE, 1) => TcpOption::Wscale { value: body[0] },
            (kind::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (kind::SACK, _) => TcpOption::Sack,
            (kind::TIMESTAMPS, 8) => TcpOption::Timestamps {
                tsval: be32(&body[..4]),
                tsecr: be32(&body[4..]),
            },
            (kind::TFO, n) => TcpOption::Tfo {
                cookie_len: n as u8,
            },
            (kind::EXPERIMENTAL, n) if n >= 2 && be16(body) == TFO_EXP_MAGIC => TcpOption::Tfo {
                cookie_len: (n - 2) as u8,
            },
            (kind::MPTCP, n) if n >= 1 => TcpOption::Mptcp {
                subtype: body[0] >> 4,
            },
            _ => TcpOption::Unknown {
                code: k,
                len: len as u8,
            },
        });
        o = &o[len..];
    }
    Ok(out)
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
    fn tfo_mptcp_and_unknown_options_are_named() {
        let o = [
            34, 2, 254, 6, 0xf9, 0x89, 1, 2, 30, 4, 0x01, 0x81, 77, 3, 9, 0, 2, 4, 1, 0,
        ];
        assert_eq!(
            parse_options(&o).unwrap(),
            vec![
                TcpOption::Tfo { cookie_len: 0 },
                TcpOption::Tfo { cookie_len: 2 },
                TcpOption::Mptcp { subtype: 0 },
                TcpOption::Unknown { code: 77, len: 3 },
            ],
            "the end of list stops the walk"
        );
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
        assert_eq!(parse_options(&[2, 9, 1]), Err(SynError::BadOptions));
        assert_eq!(parse_options(&[2, 1]), Err(SynError::BadOptions));
        assert_eq!(parse_options(&[2]), Err(SynError::BadOptions));
    }

    #[test]
    fn the_json_names_each_option_by_kind() {
        let v = serde_json::to_string(&TcpOption::Mss { value: 1200 }).unwrap();
        assert_eq!(v, r#"{"kind":"mss","value":1200}"#);
        let v = serde_json::to_string(&TcpOption::SackPermitted).unwrap();
        assert_eq!(v, r#"{"kind":"sack_permitted"}"#);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse(&b);
            let _ = parse_options(&b);
        }
    }
}
