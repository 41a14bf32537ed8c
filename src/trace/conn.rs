//! Following connections segment by segment: which side sent a segment,
//! its numbers relative to each side's ISN, and where it stands in the
//! three-way handshake or the four-way close. Pure: fed parsed segments.

use std::collections::HashMap;
use std::net::SocketAddr;

use netecho_core::wire::packet::{Segment, flags};
use netecho_core::wire::seq::{Relative, SeqNumber, Side};

/// Connections followed at once; past this, finished ones are forgotten
/// (and, if none is finished, all of them), so memory stays bounded.
pub(crate) const MAX_CONNS: usize = 16 * 1024;

/// What is known about one connection.
#[derive(Debug, Default, Clone)]
struct Conn {
    /// ISNs, for `J+n` / `K+n`.
    rel: Relative,
    /// Handshake steps seen: 0 none, 1 SYN, 2 SYN-ACK, 3 done.
    handshake: u8,
    /// Sequence number of each side's FIN (client, server).
    fin: [Option<SeqNumber>; 2],
    /// Whether each side's FIN has been acknowledged.
    fin_acked: [bool; 2],
    /// Who sent the first FIN: it ends in TIME-WAIT.
    first_fin: Option<Side>,
    /// Both FINs crossed: each side ends in TIME-WAIT.
    simultaneous: bool,
    /// Closed or reset: a new SYN on the same 4-tuple starts afresh.
    done: bool,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// One segment, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Described {
    /// Who sent it.
    pub(crate) from: Side,
    /// The segment line (no timestamp).
    pub(crate) line: String,
    /// Handshake or close annotations, possibly none.
    pub(crate) notes: Vec<String>,
}

/// Follows every connection to or from one server port.
#[derive(Debug)]
pub(crate) struct Tracker {
    /// The server's port: a segment to it comes from the client.
    port: u16,
    /// Show absolute sequence numbers instead of `J+n`.
    absolute: bool,
    /// Keyed by (client, server) endpoints.
    conns: HashMap<(SocketAddr, SocketAddr), Conn>,
}

impl Tracker {
    /// A tracker for segments to and from `port`.
    pub(crate) fn new(port: u16, absolute: bool) -> Tracker {
        Tracker {
            port,
            absolute,
            conns: HashMap::new(),
        }
    }

    /// Describes one segment and moves its connection along.
    pub(crate) fn observe(&mut self, seg: &Segment) -> Described {
        let from = if seg.dst.port() == self.port {
            Side::Client
        } else if seg.src.port() == self.port {
            Side::Server
        } else {
            // Not on our port (a filter would not pass it): call the sender
            // the client so it is still shown.
            Side::Client
        };
        let key = match from {
            Side::Client => (seg.src, seg.dst),
            Side::Server => (seg.dst, seg.src),
        };
        if !self.conns.contains_key(&key) && self.conns.len() >= MAX_CONNS {
            self.conns.retain(|_, c| !c.done);
            if self.conns.len() >= MAX_CONNS {
                self.conns.clear();
            }
        }
        let conn = self.conns.entry(key).or_default();
        let syn = seg.has(flags::SYN);
        let ack = seg.has(flags::ACK);
        if syn && !ack && from == Side::Client && conn.done {
            *conn = Conn::default();
        }
        let mut notes = Vec::new();
        let (me, peer) = (from, from.peer());
        let name = me.name();
        let pname = peer.name();

        // The handshake.
        if syn {
            conn.rel.set_isn(me, seg.seq);
            if !ack && me == Side::Client {
                conn.handshake = 1;
                notes.push("handshake 1/3: client SYN seq=J (client: SYN-SENT)".to_string());
                if let Some(o) = seg.offers {
                    notes.push(format!("client offers: {o}"));
                }
            } else if ack && me == Side::Server {
                conn.handshake = 2;
                notes.push(format!(
                    "handshake 2/3: server SYN-ACK seq=K ack={} (server: SYN-RECEIVED)",
                    conn.rel.show(Side::Client, seg.ack)
                ));
                if let Some(o) = seg.offers {
                    notes.push(format!("server offers: {o}"));
                }
            }
        } else if ack
            && me == Side::Client
            && conn.handshake == 2
            && conn
                .rel
                .isn(Side::Server)
                .is_some_and(|k| SeqNumber(seg.ack) == k + 1)
        {
            conn.handshake = 3;
            notes.push("handshake 3/3: client ACK ack=K+1 (both sides: ESTABLISHED)".to_string());
        }

        // The close, in the order the notes read: an ACK of the peer's FIN
        // first (it may ride on our own FIN), then our FIN.
        if seg.has(flags::RST) {
            conn.done = true;
            notes.push(format!(
                "reset: {name} RST aborts the connection (no close handshake, no TIME-WAIT)"
            ));
        }
        let acks_peer_fin = ack
            && !conn.fin_acked[idx(peer)]
            && conn.fin[idx(peer)].is_some_and(|f| SeqNumber(seg.ack) == f + 1);
        let fin_seq = SeqNumber(seg.seq) + seg.len;
        let new_fin = seg.has(flags::FIN) && conn.fin[idx(me)] != Some(fin_seq);
        if acks_peer_fin {
            conn.fin_acked[idx(peer)] = true;
        }
        let ack_shown = conn.rel.show(peer, seg.ack);
        let fin_shown = conn.rel.show(me, fin_seq.0);
        if new_fin {
            conn.fin[idx(me)] = Some(fin_seq);
            match conn.first_fin {
                None => {
                    conn.first_fin = Some(me);
                    notes.push(format!(
                        "close 1/4: {name} FIN seq={fin_shown} ({name}: FIN-WAIT-1; it closes first, so it will end in TIME-WAIT)"
                    ));
                }
                Some(_) if acks_peer_fin => notes.push(format!(
                    "close 2/4 + 3/4: {name} FIN-ACK seq={fin_shown} ack={ack_shown} acknowledges the {pname}'s FIN and sends its own ({name}: LAST-ACK)"
                )),
                Some(_) if conn.fin_acked[idx(peer)] => notes.push(format!(
                    "close 3/4: {name} FIN seq={fin_shown} ({name}: LAST-ACK)"
                )),
                Some(_) => {
                    conn.simultaneous = true;
                    notes.push(format!(
                        "simultaneous close: {name} FIN seq={fin_shown} crosses the {pname}'s FIN ({name}: CLOSING; both sides will end in TIME-WAIT)"
                    ));
                }
            }
        } else if acks_peer_fin {
            if conn.simultaneous {
                notes.push(format!(
                    "simultaneous close: {name} ACK ack={ack_shown} of the {pname}'s FIN ({pname}: TIME-WAIT)"
                ));
            } else if conn.first_fin == Some(peer) {
                notes.push(format!(
                    "close 2/4: {name} ACK ack={ack_shown} ({pname}: FIN-WAIT-2, {name}: CLOSE-WAIT)"
                ));
            } else {
                notes.push(format!(
                    "close 4/4: {name} ACK ack={ack_shown} ({pname}: CLOSED; {name} sent the first FIN, so {name} stays in TIME-WAIT for 2*MSL, 60 s on Linux)"
                ));
            }
        }
        if conn.fin_acked == [true, true] {
            conn.done = true;
        }

        let seq = if self.absolute {
            seg.seq.to_string()
        } else {
            conn.rel.show(me, seg.seq)
        };
        let ack_field = if !ack {
            String::new()
        } else if self.absolute {
            format!(" ack={}", seg.ack)
        } else {
            format!(" ack={ack_shown}")
        };
        let line = format!(
            "{name} {} -> {pname} {} {:<8} seq={seq}{ack_field} win={} len={}",
            seg.src,
            seg.dst,
            flag_names(seg.flags),
            seg.window,
            seg.len
        );
        Described {
            from: me,
            line,
            notes,
        }
    }
}

/// `SYN`, `SYN-ACK`, `PSH,ACK`, `FIN,ACK`, `RST`...
pub(crate) fn flag_names(f: u8) -> String {
    if f & (flags::SYN | flags::ACK) == flags::SYN | flags::ACK {
        let rest = f & !(flags::SYN | flags::ACK);
        return if rest == 0 {
            "SYN-ACK".into()
        } else {
            format!("SYN-ACK,{}", flag_names(rest))
        };
    }
    let names = [
        (flags::SYN, "SYN"),
        (flags::FIN, "FIN"),
        (flags::RST, "RST"),
        (flags::PSH, "PSH"),
        (flags::ACK, "ACK"),
        (flags::URG, "URG"),
        (flags::ECE, "ECE"),
        (flags::CWR, "CWR"),
    ];
    let list: Vec<&str> = names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flags::*;

    const C: &str = "127.0.0.1:40000";
    const S: &str = "127.0.0.1:6666";

    fn seg(from_client: bool, fl: u8, seq: u32, ack: u32, len: u32) -> Segment {
        let (a, b) = if from_client { (C, S) } else { (S, C) };
        Segment {
            src: a.parse().unwrap(),
            dst: b.parse().unwrap(),
            seq,
            ack,
            flags: fl,
            window: 512,
            len,
            offers: None,
        }
    }

    /// What each side's SYN offered is a note beside its handshake step.
    #[test]
    fn the_handshake_says_what_each_syn_offered() {
        use netecho_core::wire::packet::Offers;
        let mut t = Tracker::new(6666, false);
        let offer = |mss| Offers {
            mss: Some(mss),
            wscale: Some(7),
            sack_permitted: true,
            ..Offers::default()
        };
        let syn = Segment {
            offers: Some(offer(1460)),
            ..seg(true, SYN, 1, 0, 0)
        };
        let syn_ack = Segment {
            offers: Some(offer(1200)),
            ..seg(false, SYN | ACK, 9, 2, 0)
        };
        assert_eq!(
            t.observe(&syn).notes[1],
            "client offers: mss 1460, sack_permitted, wscale 7"
        );
        assert_eq!(
            t.observe(&syn_ack).notes[1],
            "server offers: mss 1200, sack_permitted, wscale 7"
        );
    }

    /// The classic exchange: handshake, 6 bytes each way, client closes
    /// first, with ISNs on both sides of the wrap.
    #[test]
    fn handshake_data_and_close() {
        let (j, k) = (u32::MAX - 2, 7000);
        let mut t = Tracker::new(6666, false);
        let run = [
            seg(true, SYN, j, 0, 0),
            seg(false, SYN | ACK, k, j.wrapping_add(1), 0),
            seg(true, ACK, j.wrapping_add(1), k + 1, 0),
            seg(true, PSH | ACK, j.wrapping_add(1), k + 1, 6),
            seg(false, ACK, k + 1, j.wrapping_add(7), 0),
            seg(false, PSH | ACK, k + 1, j.wrapping_add(7), 6),
            seg(true, FIN | ACK, j.wrapping_add(7), k + 7, 0),
            seg(false, ACK, k + 7, j.wrapping_add(8), 0),
            seg(false, FIN | ACK, k + 7, j.wrapping_add(8), 0),
            seg(true, ACK, j.wrapping_add(8), k + 8, 0),
        ];
        let d: Vec<Described> = run.iter().map(|s| t.observe(s)).collect();
        assert_eq!(
            d[0].notes,
            ["handshake 1/3: client SYN seq=J (client: SYN-SENT)"]
        );
        assert!(
            d[0].line
                .starts_with("client 127.0.0.1:40000 -> server 127.0.0.1:6666 SYN ")
        );
        assert!(d[1].notes[0].starts_with("handshake 2/3: server SYN-ACK seq=K ack=J+1"));
        assert!(d[1].line.contains("SYN-ACK  seq=K ack=J+1 win=512 len=0"));
        assert!(d[2].notes[0].starts_with("handshake 3/3: client ACK ack=K+1"));
        assert!(
            d[3].notes.is_empty() && d[3].line.contains("PSH,ACK  seq=J+1 ack=K+1 win=512 len=6")
        );
        assert!(d[6].notes[0].starts_with("close 1/4: client FIN seq=J+7"));
        assert!(d[7].notes[0].starts_with("close 2/4: server ACK ack=J+8"));
        assert!(d[8].notes[0].starts_with("close 3/4: server FIN seq=K+7"));
        assert!(d[9].notes[0].starts_with("close 4/4: client ACK ack=K+8"));
        assert!(d[9].notes[0].contains("client stays in TIME-WAIT"));
    }

    #[test]
    fn server_closing_first_and_piggybacked_ack() {
        let mut t = Tracker::new(6666, true);
        t.observe(&seg(true, SYN, 100, 0, 0));
        t.observe(&seg(false, SYN | ACK, 500, 101, 0));
        t.observe(&seg(true, ACK, 101, 501, 0));
        let a = t.observe(&seg(false, FIN | ACK, 501, 101, 0));
        assert!(a.notes[0].starts_with("close 1/4: server FIN seq=K+1"));
        let b = t.observe(&seg(true, FIN | ACK, 101, 502, 0));
        assert!(
            b.notes[0].starts_with("close 2/4 + 3/4: client FIN-ACK"),
            "{b:?}"
        );
        assert!(b.line.contains("seq=101 ack=502"), "absolute: {}", b.line);
        let c = t.observe(&seg(false, ACK, 502, 102, 0));
        assert!(c.notes[0].contains("server stays in TIME-WAIT"));
    }

    #[test]
    fn simultaneous_close_and_reset() {
        let mut t = Tracker::new(6666, false);
        t.observe(&seg(true, SYN, 1, 0, 0));
        t.observe(&seg(false, SYN | ACK, 9, 2, 0));
        t.observe(&seg(true, FIN | ACK, 2, 10, 0));
        let x = t.observe(&seg(false, FIN | ACK, 10, 2, 0));
        assert!(x.notes[0].starts_with("simultaneous close"));
        let r = t.observe(&seg(true, RST, 3, 0, 0));
        assert!(r.notes[0].starts_with("reset: client RST"));
    }

    #[test]
    fn mid_connection_capture_shows_absolute_numbers() {
        let mut t = Tracker::new(6666, false);
        let d = t.observe(&seg(true, PSH | ACK, 1234, 5678, 3));
        assert!(d.line.contains("seq=1234 ack=5678"), "{}", d.line);
        assert!(d.notes.is_empty());
    }

    #[test]
    fn flag_spelling() {
        assert_eq!(flag_names(SYN | ACK), "SYN-ACK");
        assert_eq!(flag_names(SYN | ACK | ECE), "SYN-ACK,ECE");
        assert_eq!(flag_names(FIN | PSH | ACK), "FIN,PSH,ACK");
        assert_eq!(flag_names(0), "none");
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Tracker::new(6666, false);
        for p in 0..(MAX_CONNS as u32 + 10) {
            let mut s = seg(true, SYN, p, 0, 0);
            s.src.set_port((p % 60000) as u16 + 1);
            s.src
                .set_ip(std::net::IpAddr::from((p / 60000 + 1).to_be_bytes()));
            t.observe(&s);
        }
        assert!(t.conns.len() <= MAX_CONNS);
    }
}
