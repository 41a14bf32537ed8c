//! What the inspect service tells a client about its connection or
//! datagram, as one JSON object; and the rule that keeps a UDP report no
//! larger than the datagram that asked for it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::syn::Syn;

/// The report on one TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpReport {
    /// Always `tcp`.
    pub proto: String,
    /// The client's address and port as the server saw them.
    pub peer: SocketAddr,
    /// The server address the connection reached.
    pub local: SocketAddr,
    /// The SYN as it arrived; absent when the kernel kept none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub syn: Option<Syn>,
    /// Why `syn` is absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub syn_error: Option<String>,
    /// The server side's view of the connection (`TCP_INFO`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tcp_info: Option<TcpInfoSeen>,
}

/// The parts of the server's `TCP_INFO` a path can change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpInfoSeen {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// The MSS the server sends with (the client's, after the path).
    pub snd_mss: u32,
    /// The MSS the server advertised.
    pub advmss: u32,
    /// Options both sides agreed on: `timestamps`, `sack`, `wscale`, `ecn`.
    pub options: Vec<String>,
    /// The window scale the client asked for (if `wscale` was agreed).
    pub snd_wscale: u8,
    /// The window scale the server asked for.
    pub rcv_wscale: u8,
}

/// The report on one UDP datagram. Every field but `proto` and `cut` may be
/// left out to fit the reply into the request ([`udp_reply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpReport {
    /// Always `udp`.
    pub proto: String,
    /// True when fields were left out to keep the reply no larger than the
    /// request: the client should send a larger datagram.
    pub cut: bool,
    /// The datagram's length.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub len: Option<usize>,
    /// The client's address and port as the server saw them.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peer: Option<SocketAddr>,
    /// The server address the datagram reached.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub local: Option<std::net::IpAddr>,
    /// TTL (IPv4) or hop limit (IPv6) on arrival.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ttl: Option<u8>,
    /// The DSCP on arrival.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dscp: Option<u8>,
    /// The ECN field on arrival.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ecn: Option<u8>,
}

/// The reply to a datagram of `request_len` bytes: the report as JSON, no
/// longer than the request. Fields are left out, least useful first
/// (`local`, `len`, then DSCP and ECN, TTL, the peer), with `cut` set; when
/// not even `{"proto":"udp","cut":true}` fits, there is no reply at all.
/// So the inspect port never sends more bytes than it received.
pub fn udp_reply(report: &UdpReport, request_len: usize) -> Option<Vec<u8>> {
    let mut r = report.clone();
    let fits = |r: &UdpReport| {
        serde_json::to_vec(r)
            .ok()
            .filter(|v| v.len() <= request_len)
    };
    if let Some(v) = fits(&r) {
        return Some(v);
    }
    r.cut = true;
    let drops: [fn(&mut UdpReport); 5] = [
        |r| r.local = None,
        |r| r.len = None,
        |r| (r.dscp, r.ecn) = (None, None),
        |r| r.ttl = None,
        |r| r.peer = None,
    ];
    for drop in drops {
        if let Some(v) = fits(&r) {
            return Some(v);
        }
        drop(&mut r);
    }
    fits(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> UdpReport {
        UdpReport {
            proto: "udp".into(),
            cut: false,
            len: Some(512),
            peer: Some("[2001:db8::1]:40000".parse().unwrap()),
            local: Some("2001:db8::2".parse().unwrap()),
            ttl: Some(62),
            dscp: Some(46),
            ecn: Some(0),
        }
    }

    #[test]
    fn a_report_that_fits_goes_whole() {
        let v = udp_reply(&full(), 512).unwrap();
        let back: UdpReport = serde_json::from_slice(&v).unwrap();
        assert_eq!(back, full());
    }

    #[test]
    fn a_small_request_gets_a_cut_report_never_larger() {
        let whole = serde_json::to_vec(&full()).unwrap().len();
        let mut seen_cut = 0;
        for n in 0..=whole + 10 {
            match udp_reply(&full(), n) {
                Some(v) => {
                    assert!(v.len() <= n, "{} bytes answered {n}", v.len());
                    let back: UdpReport = serde_json::from_slice(&v).unwrap();
                    assert_eq!(back.cut, n < whole, "at {n}");
                    seen_cut += usize::from(back.cut);
                }
                None => assert!(n < 26, "no reply to {n} bytes"),
            }
        }
        assert!(seen_cut > 0);
        // The TTL outlives DSCP when space is short.
        let v = udp_reply(&full(), whole - 40).unwrap();
        let back: UdpReport = serde_json::from_slice(&v).unwrap();
        assert!(
            back.cut && back.ttl.is_some() && back.dscp.is_none(),
            "{back:?}"
        );
    }
}
