//! TCP options (RFC 9293 section 3.2), walked from hostile bytes: the one
//! option parser, for `trace`'s SYN offers ([`super::packet::Offers`]) and
//! the inspect service's saved SYN (`inspect::syn`).

use serde::{Deserialize, Serialize};

/// TCP options that cannot be walked: a length byte missing, below 2 or
/// past the end. Its own type, so this walk depends on nothing of the
/// packet views that use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed TCP options")
    }
}

impl std::error::Error for Malformed {}

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

/// The options of a TCP header (the bytes between its fixed 20 and its data
/// offset), padding left out, in order. An option whose length byte is
/// missing, below 2 or past the end is [`Malformed`].
pub fn parse(mut o: &[u8]) -> Result<Vec<TcpOption>, Malformed> {
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
        let len = usize::from(*o.get(1).ok_or(Malformed)?);
        if len < 2 || len > o.len() {
            return Err(Malformed);
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

    #[test]
    fn tfo_mptcp_and_unknown_options_are_named() {
        let o = [
            34, 2, 254, 6, 0xf9, 0x89, 1, 2, 30, 4, 0x01, 0x81, 77, 3, 9, 0, 2, 4, 1, 0,
        ];
        assert_eq!(
            parse(&o).unwrap(),
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
    fn bad_lengths_are_malformed() {
        assert_eq!(parse(&[2, 9, 1]), Err(Malformed));
        assert_eq!(parse(&[2, 1]), Err(Malformed));
        assert_eq!(parse(&[2]), Err(Malformed));
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
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..60)) {
            let _ = parse(&b);
        }
    }
}
