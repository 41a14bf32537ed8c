//! What the path changed: what the client knows it sent, set against what
//! the server reports it saw, one [`Finding`] per difference.
//!
//! The client knows its own source address and port, the TTL and TOS it
//! set (or the system default it reads back), the MSS it advertised and
//! which SYN options its kernel sends. What neither end can know is left
//! out and said: [`Undetermined`].

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;
use serde_json::{Value, json};

use super::report::{TcpReport, UdpReport};
use crate::wire::options::TcpOption;

/// The initial TTLs operating systems use (Linux and macOS 64, Windows
/// 128, network gear 255): a TTL seen is guessed to have started at the
/// smallest of them not below it.
pub const USUAL_TTLS: [u8; 3] = [64, 128, 255];

/// What a finding is about, as `--json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The source address or port was rewritten.
    Nat,
    /// Routers decremented the TTL or hop limit.
    Hops,
    /// The MSS option was changed (clamped).
    Mss,
    /// The DSCP was rewritten.
    Dscp,
    /// The ECN field or the SYN's ECN request was changed.
    Ecn,
    /// A TCP option sent did not arrive.
    OptionRemoved,
    /// A TCP option arrived that was not sent.
    OptionAdded,
    /// The window scale shift was changed.
    Wscale,
}

/// One difference between what was sent and what arrived.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub sent: Value,
    pub seen: Value,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// The sentence for a person (in `--json` too, so a program that
    /// reads the findings, such as `lab middlebox`, can show them).
    pub words: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.proto, self.words)
    }
}

/// A question the reports could not answer, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undetermined {
    pub proto: &'static str,
    pub what: String,
}

impl fmt::Display for Undetermined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: not determined: {}", self.proto, self.what)
    }
}

/// The client's TTL or hop limit: the one it set or read back, or unknown
/// (then guessed from [`USUAL_TTLS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentTtl {
    Known(u8),
    Unknown,
}

/// What the client's SYN carried, as far as the client can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentTcp {
    /// The connection's local address.
    pub src: SocketAddr,
    pub ttl: SentTtl,
    /// The DSCP set with `--tos` (0 without).
    pub dscp: u8,
    /// The MSS advertised (`TCP_INFO`'s advmss), if known.
    pub mss: Option<u16>,
    /// The window scale asked for, if known.
    pub wscale: Option<u8>,
    /// The names of the options the kernel puts in its SYN
    /// ([`TcpOption::name`]).
    pub options: Vec<String>,
    /// Whether the SYN asked for ECN (net.ipv4.tcp_ecn = 1).
    pub ecn_setup: bool,
}

/// What the client's datagram carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentUdp {
    pub src: SocketAddr,
    pub ttl: SentTtl,
    pub dscp: u8,
    pub ecn: u8,
}

/// The findings and the open questions of one side (TCP or UDP).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub undetermined: Vec<Undetermined>,
}

impl Outcome {
    fn found(&mut self, proto: &'static str, kind: Kind, sent: Value, seen: Value, words: String) {
        self.findings.push(Finding {
            kind,
            sent,
            seen,
            proto,
            words,
        });
    }

    fn unknown(&mut self, proto: &'static str, what: impl Into<String>) {
        self.undetermined.push(Undetermined {
            proto,
            what: what.into(),
        });
    }

    fn nat(&mut self, proto: &'static str, sent: SocketAddr, seen: SocketAddr) {
        let (a, b) = (canonical(sent), canonical(seen));
        if a == b {
            return;
        }
        let what = match (a.ip() != b.ip(), a.port() != b.port()) {
            (true, true) => "source address and port rewritten",
            (true, false) => "source address rewritten",
            _ => "source port rewritten",
        };
        self.found(
            proto,
            Kind::Nat,
            json!(a.to_string()),
            json!(b.to_string()),
            format!("{what} (NAT): sent from {a}, seen as {b}"),
        );
    }

    fn hops(&mut self, proto: &'static str, sent: SentTtl, seen: u8) {
        let (start, how) = match sent {
            SentTtl::Known(t) => (t, ""),
            SentTtl::Unknown => (guess_initial_ttl(seen), ", initial TTL guessed"),
        };
        if seen > start {
            self.found(
                proto,
                Kind::Hops,
                json!(start),
                json!(seen),
                format!("TTL rose on the way: sent {start}, seen {seen} (a box rewrote it)"),
            );
        } else if seen < start {
            let n = start - seen;
            let routers = if n == 1 { "router" } else { "routers" };
            self.found(
                proto,
                Kind::Hops,
                json!(start),
                json!(seen),
                format!("{n} hops on the way ({n} {routers} decremented the TTL: sent {start}, seen {seen}{how})"),
            );
        }
    }

    fn field(&mut self, proto: &'static str, kind: Kind, name: &str, sent: u8, seen: u8) {
        if sent != seen {
            self.found(
                proto,
                kind,
                json!(sent),
                json!(seen),
                format!("{name} rewritten: sent {sent}, seen {seen}"),
            );
        }
    }
}

/// The TTL a packet seen with `seen` most likely started with.
pub fn guess_initial_ttl(seen: u8) -> u8 {
    USUAL_TTLS.into_iter().find(|&t| t >= seen).unwrap_or(255)
}

/// An IPv4 client seen on a dual-stack socket shows as `::ffff:a.b.c.d`.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// What the path did to a TCP connection.
pub fn tcp(sent: &SentTcp, seen: &TcpReport) -> Outcome {
    const P: &str = "tcp";
    let mut out = Outcome::default();
    out.nat(P, sent.src, seen.peer);
    let Some(syn) = &seen.syn else {
        let why = seen
            .syn_error
            .as_deref()
            .unwrap_or("the server kept no SYN");
        out.unknown(P, format!("hops, DSCP, ECN, MSS and SYN options ({why})"));
        return out;
    };
    out.hops(P, sent.ttl, syn.ttl);
    out.field(P, Kind::Dscp, "DSCP", sent.dscp, syn.dscp);
    // The kernel owns a TCP socket's ECN bits, and sends a SYN not-ECT.
    out.field(P, Kind::Ecn, "ECN field", 0, syn.ecn);
    if sent.ecn_setup != syn.ecn_setup {
        let say = |on: bool| if on { "ECE+CWR" } else { "none" };
        out.found(
            P,
            Kind::Ecn,
            json!(say(sent.ecn_setup)),
            json!(say(syn.ecn_setup)),
            format!(
                "ECN request rewritten: the SYN's ECN flags sent {}, seen {}",
                say(sent.ecn_setup),
                say(syn.ecn_setup)
            ),
        );
    }
    let seen_names: Vec<String> = syn.options.iter().map(TcpOption::name).collect();
    for name in &sent.options {
        if !seen_names.contains(name) {
            out.found(
                P,
                Kind::OptionRemoved,
                json!(name),
                Value::Null,
                format!("option {name} removed: sent, not seen"),
            );
        }
    }
    for name in &seen_names {
        if !sent.options.contains(name) {
            out.found(
                P,
                Kind::OptionAdded,
                Value::Null,
                json!(name),
                format!("option {name} added: seen, not sent"),
            );
        }
    }
    let seen_mss = syn.options.iter().find_map(|o| match o {
        TcpOption::Mss { value } => Some(*value),
        _ => None,
    });
    match (sent.mss, seen_mss) {
        (Some(a), Some(b)) if a != b => out.found(
            P,
            Kind::Mss,
            json!(a),
            json!(b),
            format!(
                "MSS changed ({}): sent {a}, seen {b}",
                if b < a { "clamped" } else { "raised" }
            ),
        ),
        (None, Some(_)) => out.unknown(P, "whether the MSS changed (the client's own is unknown)"),
        _ => {}
    }
    let seen_ws = syn.options.iter().find_map(|o| match o {
        TcpOption::Wscale { value } => Some(*value),
        _ => None,
    });
    if let (Some(a), Some(b)) = (sent.wscale, seen_ws)
        && a != b
    {
        out.found(
            P,
            Kind::Wscale,
            json!(a),
            json!(b),
            format!("window scale changed: sent {a}, seen {b}"),
        );
    }
    out
}

/// What the path did to a datagram.
pub fn udp(sent: &SentUdp, seen: &UdpReport) -> Outcome {
    const P: &str = "udp";
    let mut out = Outcome::default();
    match seen.peer {
        Some(peer) => out.nat(P, sent.src, peer),
        None => out.unknown(P, "the source address (the report was cut)"),
    }
    match seen.ttl {
        Some(ttl) => out.hops(P, sent.ttl, ttl),
        None => out.unknown(P, "hops (the server did not get the TTL)"),
    }
    match (seen.dscp, seen.ecn) {
        (Some(dscp), Some(ecn)) => {
            out.field(P, Kind::Dscp, "DSCP", sent.dscp, dscp);
            out.field(P, Kind::Ecn, "ECN field", sent.ecn, ecn);
        }
        _ => out.unknown(P, "DSCP and ECN (the server did not get the TOS)"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::syn::Syn;

    fn sent_tcp() -> SentTcp {
        SentTcp {
            src: "10.1.0.2:40000".parse().unwrap(),
            ttl: SentTtl::Known(64),
            dscp: 0,
            mss: Some(1460),
            wscale: Some(7),
            options: ["mss", "sack_permitted", "timestamps", "wscale"]
                .map(String::from)
                .to_vec(),
            ecn_setup: false,
        }
    }

    fn seen_tcp() -> TcpReport {
        TcpReport {
            proto: "tcp".into(),
            peer: "10.1.0.2:40000".parse().unwrap(),
            local: "10.2.0.2:7".parse().unwrap(),
            syn: Some(Syn {
                ip_version: 4,
                ttl: 64,
                dscp: 0,
                ecn: 0,
                df: Some(true),
                ecn_setup: false,
                window: 64240,
                options: vec![
                    TcpOption::Mss { value: 1460 },
                    TcpOption::SackPermitted,
                    TcpOption::Timestamps { tsval: 1, tsecr: 0 },
                    TcpOption::Wscale { value: 7 },
                ],
            }),
            syn_error: None,
            tcp_info: None,
        }
    }

    fn kinds(o: &Outcome) -> Vec<Kind> {
        o.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn an_untouched_connection_has_no_finding() {
        let o = tcp(&sent_tcp(), &seen_tcp());
        assert_eq!(o, Outcome::default());
    }

    #[test]
    fn a_dual_stack_view_of_the_same_address_is_no_nat() {
        let mut seen = seen_tcp();
        seen.peer = "[::ffff:10.1.0.2]:40000".parse().unwrap();
        assert!(tcp(&sent_tcp(), &seen).findings.is_empty());
    }

    #[test]
    fn each_change_is_one_finding_with_what_was_sent_and_seen() {
        let mut seen = seen_tcp();
        seen.peer = "10.9.0.1:51000".parse().unwrap();
        let syn = seen.syn.as_mut().unwrap();
        syn.ttl = 62;
        syn.dscp = 0;
        syn.options = vec![
            TcpOption::Mss { value: 1200 },
            TcpOption::Wscale { value: 2 },
        ];
        let mut sent = sent_tcp();
        sent.dscp = 46;
        let o = tcp(&sent, &seen);
        assert_eq!(
            kinds(&o),
            vec![
                Kind::Nat,
                Kind::Hops,
                Kind::Dscp,
                Kind::OptionRemoved,
                Kind::OptionRemoved,
                Kind::Mss,
                Kind::Wscale
            ]
        );
        let mss = &o.findings[5];
        assert_eq!(
            (mss.sent.clone(), mss.seen.clone()),
            (json!(1460), json!(1200))
        );
        assert_eq!(
            mss.to_string(),
            "tcp: MSS changed (clamped): sent 1460, seen 1200"
        );
        assert_eq!(
            o.findings[1].to_string(),
            "tcp: 2 hops on the way (2 routers decremented the TTL: sent 64, seen 62)"
        );
        assert_eq!(
            serde_json::to_value(&o.findings[0]).unwrap(),
            json!({"kind": "nat", "sent": "10.1.0.2:40000", "seen": "10.9.0.1:51000", "proto": "tcp",
                   "words": "source address and port rewritten (NAT): sent from 10.1.0.2:40000, \
                             seen as 10.9.0.1:51000"})
        );
    }

    #[test]
    fn an_unknown_initial_ttl_is_guessed_from_the_usual_ones() {
        assert_eq!(guess_initial_ttl(64), 64);
        assert_eq!(guess_initial_ttl(57), 64);
        assert_eq!(guess_initial_ttl(65), 128);
        assert_eq!(guess_initial_ttl(250), 255);
        let mut sent = sent_tcp();
        sent.ttl = SentTtl::Unknown;
        let mut seen = seen_tcp();
        seen.syn.as_mut().unwrap().ttl = 125;
        let o = tcp(&sent, &seen);
        assert_eq!(kinds(&o), vec![Kind::Hops]);
        assert!(o.findings[0].words.contains("guessed"), "{}", o.findings[0]);
        assert_eq!(o.findings[0].sent, json!(128));
    }

    #[test]
    fn no_saved_syn_leaves_the_syn_questions_open() {
        let mut seen = seen_tcp();
        seen.syn = None;
        seen.syn_error = Some("SYN cookies were in use".into());
        let o = tcp(&sent_tcp(), &seen);
        assert!(o.findings.is_empty());
        assert_eq!(o.undetermined.len(), 1);
        assert!(o.undetermined[0].to_string().contains("SYN cookies"));
    }

    #[test]
    fn an_added_option_and_a_stripped_ecn_request_are_found() {
        let mut sent = sent_tcp();
        sent.ecn_setup = true;
        let mut seen = seen_tcp();
        seen.syn
            .as_mut()
            .unwrap()
            .options
            .push(TcpOption::Mptcp { subtype: 0 });
        let o = tcp(&sent, &seen);
        assert_eq!(kinds(&o), vec![Kind::Ecn, Kind::OptionAdded]);
        assert_eq!(o.findings[1].seen, json!("mptcp"));
    }

    #[test]
    fn udp_finds_nat_hops_dscp_and_ecn_and_says_what_a_cut_report_hid() {
        let sent = SentUdp {
            src: "10.1.0.2:40000".parse().unwrap(),
            ttl: SentTtl::Known(64),
            dscp: 10,
            ecn: 1,
        };
        let mut seen = UdpReport {
            proto: "udp".into(),
            cut: false,
            len: Some(512),
            peer: Some("10.9.0.1:40000".parse().unwrap()),
            local: None,
            ttl: Some(63),
            dscp: Some(0),
            ecn: Some(1),
        };
        let o = udp(&sent, &seen);
        assert_eq!(kinds(&o), vec![Kind::Nat, Kind::Hops, Kind::Dscp]);
        assert!(
            o.findings[0]
                .words
                .starts_with("source address rewritten (NAT)")
        );
        seen = UdpReport {
            cut: true,
            peer: None,
            ttl: None,
            dscp: None,
            ecn: None,
            ..seen
        };
        let o = udp(&sent, &seen);
        assert!(o.findings.is_empty());
        assert_eq!(o.undetermined.len(), 3);
    }
}
