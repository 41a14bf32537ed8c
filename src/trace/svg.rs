//! `trace --svg`: the captured segments as a sequence diagram, drawn the
//! way the textbooks and Wireshark's flow graph draw a connection: one
//! vertical line per endpoint, one slanted arrow per segment (labelled with
//! its flags, seq/ack and length), each side's TCP state written where it
//! changes, time running down the page. Several connections stand side by
//! side, each with its own pair of lines.
//!
//! Pure code: [`render`] turns captured segments into an SVG string, so
//! the drawing is tested without a capture. The states are inferred from
//! the segments (as the trace notes are), not read from the kernel.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::conn::flag_names;
use super::packet::{Segment, flags};
use super::seq::{Relative, SeqNumber, Side};

/// Most segments drawn; a longer capture is cut here (and says so), so a
/// bulk transfer does not become a diagram nobody can open.
pub(crate) const MAX_SEGMENTS: usize = 2000;
/// Most connections drawn side by side; segments of later ones are left
/// out (and counted in the title).
pub(crate) const MAX_CONNS: usize = 8;

/// Vertical distance between two segments' rows.
const ROW: f64 = 44.0;
/// How far down an arrow travels: the slant that shows time passing.
const DROP: f64 = 26.0;
/// Room above the first row (title, endpoint names).
const TOP: f64 = 90.0;
/// Left margin, where the times are written.
const LEFT: f64 = 90.0;
/// Distance between a connection's client and server lines.
const GAP: f64 = 340.0;
/// Width given to one connection (its two lines and the room beside).
const PAIR: f64 = GAP + 190.0;

/// One captured segment and when it was seen (seconds from the start).
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    /// Seconds since the capture began.
    pub(crate) t: f64,
    /// The segment.
    pub(crate) seg: Segment,
}

/// What the drawing tracks per connection: the ISNs and each side's state.
#[derive(Default)]
struct Conn {
    /// Its column (0 for the first connection seen).
    col: usize,
    /// For J+n / K+n.
    rel: Relative,
    /// State of client (0) and server (1), as last written.
    state: [Option<&'static str>; 2],
    /// Sequence number just past each side's FIN, once sent.
    fin: [Option<SeqNumber>; 2],
    /// Whether each side's FIN has been acknowledged.
    fin_acked: [bool; 2],
}

fn idx(s: Side) -> usize {
    match s {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// `&`, `<`, `>` and quotes made safe for SVG text and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The states each side enters with this segment, `(side, state)`, in
/// the order they happen. The sender's state is written at the arrow's
/// tail, the receiver's at its head. A receiver's CLOSE-WAIT is written
/// where it acknowledges the FIN (its kernel does that at once).
fn transitions(c: &mut Conn, me: Side, seg: &Segment) -> Vec<(Side, &'static str)> {
    let peer = me.peer();
    let mut out = Vec::new();
    let syn = seg.has(flags::SYN);
    let ack = seg.has(flags::ACK);
    let fin = seg.has(flags::FIN) && c.fin[idx(me)].is_none();
    if seg.has(flags::RST) {
        out.push((me, "CLOSED"));
        out.push((peer, "CLOSED"));
        return out;
    }
    if syn && !ack && me == Side::Client {
        out.push((me, "SYN-SENT"));
        out.push((peer, "SYN-RECEIVED"));
    } else if (syn && ack && me == Side::Server)
        || (ack && me == Side::Client && c.state[idx(peer)] == Some("SYN-RECEIVED"))
    {
        // The SYN-ACK establishes the client; the client's ACK the server.
        out.push((peer, "ESTABLISHED"));
    }
    let state = |c: &Conn, s: Side| c.state[idx(s)].unwrap_or("");
    let acks_peer_fin =
        ack && !c.fin_acked[idx(peer)] && c.fin[idx(peer)].is_some_and(|f| SeqNumber(seg.ack) == f);
    if acks_peer_fin {
        c.fin_acked[idx(peer)] = true;
        match state(c, peer) {
            "FIN-WAIT-1" if fin => out.push((peer, "TIME-WAIT")),
            "FIN-WAIT-1" => out.push((peer, "FIN-WAIT-2")),
            "CLOSING" => out.push((peer, "TIME-WAIT")),
            "LAST-ACK" => out.push((peer, "CLOSED")),
            _ => {}
        }
        if !fin && state(c, me) == "ESTABLISHED" {
            out.push((me, "CLOSE-WAIT"));
        }
    }
    if fin {
        c.fin[idx(me)] = Some(SeqNumber(seg.seq) + seg.len + 1);
        if acks_peer_fin || state(c, me) == "CLOSE-WAIT" {
            out.push((me, "LAST-ACK"));
            if state(c, peer) == "FIN-WAIT-2" {
                out.push((peer, "TIME-WAIT"));
            }
        } else if c.fin[idx(peer)].is_some() && !c.fin_acked[idx(peer)] {
            // Both FINs in flight: each side gets the other's FIN while
            // waiting for the ACK of its own.
            out.push((me, "CLOSING"));
            out.push((peer, "CLOSING"));
        } else {
            out.push((me, "FIN-WAIT-1"));
        }
    }
    out
}

/// The diagram of `segs`, for server port `port`; `absolute` shows raw
/// sequence numbers instead of J+n / K+n.
pub(crate) fn render(segs: &[Captured], port: u16, absolute: bool) -> String {
    let mut conns: HashMap<(SocketAddr, SocketAddr), Conn> = HashMap::new();
    let mut order: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut left_out = 0usize;
    let mut body = String::new();
    let mut row = 0usize;
    let drawn: Vec<&Captured> = segs.iter().take(MAX_SEGMENTS).collect();
    for cap in &drawn {
        let seg = &cap.seg;
        let me = if seg.src.port() == port && seg.dst.port() != port {
            Side::Server
        } else {
            Side::Client
        };
        let key = match me {
            Side::Client => (seg.src, seg.dst),
            Side::Server => (seg.dst, seg.src),
        };
        let next_col = order.len();
        let c = match conns.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(_) if next_col >= MAX_CONNS => {
                left_out += 1;
                continue;
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                order.push(key);
                e.insert(Conn {
                    col: next_col,
                    ..Conn::default()
                })
            }
        };
        if seg.has(flags::SYN) {
            c.rel.set_isn(me, seg.seq);
        }
        let x_client = LEFT + 40.0 + c.col as f64 * PAIR;
        let x = |s: Side| match s {
            Side::Client => x_client,
            Side::Server => x_client + GAP,
        };
        let y = TOP + row as f64 * ROW;
        row += 1;
        let (x1, x2) = (x(me), x(me.peer()));
        let _ = writeln!(
            body,
            r#"<text class="time" x="{:.1}" y="{:.1}">{:.6}</text>"#,
            LEFT - 8.0,
            y + 4.0,
            cap.t
        );
        let _ = writeln!(
            body,
            r#"<line class="seg" x1="{x1:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{:.1}" marker-end="url(#head)"/>"#,
            y + DROP
        );
        let seq = if absolute {
            seg.seq.to_string()
        } else {
            c.rel.show(me, seg.seq)
        };
        let ack = if !seg.has(flags::ACK) {
            String::new()
        } else if absolute {
            format!(" ack={}", seg.ack)
        } else {
            format!(" ack={}", c.rel.show(me.peer(), seg.ack))
        };
        let label = format!("{} seq={seq}{ack} len={}", flag_names(seg.flags), seg.len);
        let mid = (x1 + x2) / 2.0;
        let _ = writeln!(
            body,
            r#"<text class="label" x="{mid:.1}" y="{:.1}" transform="rotate({:.2} {mid:.1} {:.1})">{}</text>"#,
            y + DROP / 2.0 - 5.0,
            (DROP / (x2 - x1)).atan().to_degrees(),
            y + DROP / 2.0,
            esc(&label)
        );
        for (side, st) in transitions(c, me, seg) {
            if c.state[idx(side)] == Some(st) {
                continue;
            }
            c.state[idx(side)] = Some(st);
            let (tx, anchor) = match side {
                Side::Client => (x(side) - 8.0, "end"),
                Side::Server => (x(side) + 8.0, "start"),
            };
            // The receiver's state is written where the arrow reaches it.
            let ty = if side == me { y } else { y + DROP } + 4.0;
            let _ = writeln!(
                body,
                r#"<text class="state" x="{tx:.1}" y="{ty:.1}" text-anchor="{anchor}">{st}</text>"#
            );
        }
    }
    let height = TOP + row as f64 * ROW + 40.0;
    let width = LEFT + 40.0 + order.len().max(1) as f64 * PAIR;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}">"#
    );
    svg.push_str(concat!(
        "<style>text{font-family:monospace;font-size:12px}",
        ".time{text-anchor:end;fill:#666}.label{text-anchor:middle;fill:#000}",
        ".state{fill:#a0522d;font-weight:bold}.end{text-anchor:middle;font-weight:bold}",
        ".seg{stroke:#1f4e99;stroke-width:1.5}.life{stroke:#999;stroke-dasharray:4 3}</style>\n",
        "<defs><marker id=\"head\" markerWidth=\"10\" markerHeight=\"8\" refX=\"9\" refY=\"4\" orient=\"auto\">",
        "<path d=\"M0,0 L10,4 L0,8 z\" fill=\"#1f4e99\"/></marker></defs>\n",
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    ));
    let more = if segs.len() > MAX_SEGMENTS {
        format!(", first {MAX_SEGMENTS} of {}", segs.len())
    } else {
        String::new()
    };
    let skipped = if left_out > 0 {
        format!(", {left_out} segments of further connections left out")
    } else {
        String::new()
    };
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20">TCP port {port}: {} segments, time in seconds down the left{more}{skipped}</text>"#,
        drawn.len() - left_out
    );
    for (i, (client, server)) in order.iter().enumerate() {
        let xc = LEFT + 40.0 + i as f64 * PAIR;
        for (x, name, addr) in [(xc, "client", client), (xc + GAP, "server", server)] {
            let _ = writeln!(
                svg,
                r#"<text class="end" x="{x:.1}" y="50">{name}</text><text class="end" x="{x:.1}" y="65">{}</text>"#,
                esc(&addr.to_string())
            );
            let _ = writeln!(
                svg,
                r#"<line class="life" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}"/>"#,
                TOP - 15.0,
                height - 20.0
            );
        }
    }
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "127.0.0.1:40000";
    const S: &str = "127.0.0.1:6666";

    fn seg(t: f64, from_client: bool, f: u8, seq: u32, ack: u32, len: u32) -> Captured {
        let (src, dst) = if from_client { (C, S) } else { (S, C) };
        Captured {
            t,
            seg: Segment {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                seq,
                ack,
                flags: f,
                window: 100,
                len,
            },
        }
    }

    /// Handshake, 5 bytes each way, client closes first.
    fn exchange() -> Vec<Captured> {
        use flags::*;
        vec![
            seg(0.0, true, SYN, 1000, 0, 0),
            seg(0.1, false, SYN | ACK, 5000, 1001, 0),
            seg(0.2, true, ACK, 1001, 5001, 0),
            seg(0.3, true, PSH | ACK, 1001, 5001, 5),
            seg(0.4, false, PSH | ACK, 5001, 1006, 5),
            seg(0.5, true, FIN | ACK, 1006, 5006, 0),
            seg(0.6, false, ACK, 5006, 1007, 0),
            seg(0.7, false, FIN | ACK, 5006, 1007, 0),
            seg(0.8, true, ACK, 1007, 5007, 0),
        ]
    }

    /// The states written, in order, as (x > middle, name).
    fn states(svg: &str) -> Vec<String> {
        svg.lines()
            .filter(|l| l.contains(r#"class="state""#))
            .map(|l| {
                let name = l.rsplit_once("\">").unwrap().1.trim_end_matches("</text>");
                let side = if l.contains("\"end\"") {
                    "client"
                } else {
                    "server"
                };
                format!("{side} {name}")
            })
            .collect()
    }

    #[test]
    fn one_arrow_per_segment_with_relative_labels() {
        let svg = render(&exchange(), 6666, false);
        assert_eq!(svg.matches(r#"class="seg""#).count(), 9);
        assert!(svg.contains(">SYN seq=J len=0<"), "{svg}");
        assert!(svg.contains(">SYN-ACK seq=K ack=J+1 len=0<"));
        assert!(svg.contains(">PSH,ACK seq=J+1 ack=K+1 len=5<"));
        assert!(svg.contains(">FIN,ACK seq=J+6 ack=K+6 len=0<"));
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn absolute_numbers_on_request() {
        let svg = render(&exchange(), 6666, true);
        assert!(svg.contains(">SYN-ACK seq=5000 ack=1001 len=0<"), "{svg}");
    }

    #[test]
    fn states_follow_the_textbook() {
        let svg = render(&exchange(), 6666, false);
        assert_eq!(
            states(&svg),
            [
                "client SYN-SENT",
                "server SYN-RECEIVED",
                "client ESTABLISHED",
                "server ESTABLISHED",
                "client FIN-WAIT-1",
                "client FIN-WAIT-2",
                "server CLOSE-WAIT",
                "server LAST-ACK",
                "client TIME-WAIT",
                "server CLOSED",
            ]
        );
    }

    #[test]
    fn simultaneous_close_is_closing_on_both_sides() {
        use flags::*;
        let mut segs = exchange()[..3].to_vec();
        segs.push(seg(0.3, true, FIN | ACK, 1001, 5001, 0));
        segs.push(seg(0.3, false, FIN | ACK, 5001, 1001, 0));
        segs.push(seg(0.4, true, ACK, 1002, 5002, 0));
        segs.push(seg(0.4, false, ACK, 5002, 1002, 0));
        let st = states(&render(&segs, 6666, false));
        assert_eq!(
            &st[4..],
            [
                "client FIN-WAIT-1",
                "server CLOSING",
                "client CLOSING",
                "server TIME-WAIT",
                "client TIME-WAIT",
            ]
        );
    }

    #[test]
    fn connections_stand_side_by_side_and_text_is_escaped() {
        let mut segs = exchange();
        let mut other = exchange();
        for c in &mut other {
            if c.seg.src.port() == 40000 {
                c.seg.src.set_port(40001);
            } else {
                c.seg.dst.set_port(40001);
            }
        }
        segs.extend(other);
        let svg = render(&segs, 6666, false);
        assert_eq!(svg.matches(r#"class="life""#).count(), 4);
        assert_eq!(svg.matches(r#"class="seg""#).count(), 18);
        assert_eq!(esc("a<b&c"), "a&lt;b&amp;c");
    }
}
