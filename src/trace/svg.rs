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
use netecho_core::wire::packet::{Segment, flags};
use netecho_core::wire::seq::{Relative, SeqNumber, Side};

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
/// Font size of every text, in pixels.
pub(crate) const FONT: f64 = 12.0;
/// Width of one character of the monospace font, rounded up from the
/// 0.6 em of DejaVu Sans Mono and Liberation Mono, so lanes sized with it
/// hold their text in any of them.
pub(crate) const CHAR_W: f64 = 7.5;
/// The time lane at the left: times end here.
const TIME_END: f64 = 90.0;
/// Width of a state lane: the longest state name, `SYN-RECEIVED`.
const STATE_W: f64 = 12.0 * CHAR_W;
/// Space between a lane and the next, or a line and its lane.
const PAD: f64 = 10.0;
/// The narrowest gap between a connection's client and server lines.
const MIN_GAP: f64 = 260.0;
/// Vertical room one state name takes in its lane.
const STATE_LINE: f64 = FONT + 4.0;

/// Where a connection's column puts things, left to right: client state
/// lane, client line, labels, server line, server state lane.
struct Columns {
    /// Between the client and server lines: the longest label and padding.
    gap: f64,
}

impl Columns {
    /// Width of one connection's column.
    fn pair(&self) -> f64 {
        PAD + STATE_W + PAD + self.gap + PAD + STATE_W + 2.0 * PAD
    }

    /// The client line of column `col`.
    fn client_x(&self, col: usize) -> f64 {
        TIME_END + PAD + col as f64 * self.pair() + PAD + STATE_W + PAD
    }
}

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

/// One arrow to draw, worked out before the layout (whose width depends
/// on the longest label).
struct Arrow {
    /// Seconds since the capture began.
    t: f64,
    /// Its connection's column.
    col: usize,
    /// Who sent it.
    from: Side,
    /// `FIN,ACK seq=J+6 ack=K+6 len=0`.
    label: String,
    /// The states entered, `(side, state)`, already filtered to changes.
    states: Vec<(Side, &'static str)>,
}

/// The diagram of `segs`, for server port `port`; `absolute` shows raw
/// sequence numbers instead of J+n / K+n.
///
/// Every text has a lane of its own, so none can overlap another at any
/// number of segments: the times in a column at the left, each side's
/// states beside its line (a state that would touch the one above it in
/// the lane moves down), one label per row centred between the lines,
/// the lines as far apart as the longest label needs.
pub(crate) fn render(segs: &[Captured], port: u16, absolute: bool) -> String {
    let mut conns: HashMap<(SocketAddr, SocketAddr), Conn> = HashMap::new();
    let mut order: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut left_out = 0usize;
    let mut arrows = Vec::new();
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
        let mut states = Vec::new();
        for (side, st) in transitions(c, me, seg) {
            if c.state[idx(side)] != Some(st) {
                c.state[idx(side)] = Some(st);
                states.push((side, st));
            }
        }
        arrows.push(Arrow {
            t: cap.t,
            col: c.col,
            from: me,
            label,
            states,
        });
    }
    let longest = arrows.iter().map(|a| a.label.len()).max().unwrap_or(0);
    let cols = Columns {
        gap: MIN_GAP.max(longest as f64 * CHAR_W + 4.0 * PAD),
    };
    let mut body = String::new();
    // Per column and side, the lowest baseline written in its state lane.
    let mut lane_bottom: HashMap<(usize, usize), f64> = HashMap::new();
    let mut bottom = TOP;
    for (row, a) in arrows.iter().enumerate() {
        let x_client = cols.client_x(a.col);
        let x = |s: Side| match s {
            Side::Client => x_client,
            Side::Server => x_client + cols.gap,
        };
        let y = TOP + row as f64 * ROW;
        let (x1, x2) = (x(a.from), x(a.from.peer()));
        let _ = writeln!(
            body,
            r#"<text class="time" x="{TIME_END:.1}" y="{:.1}">{:.6}</text>"#,
            y + 4.0,
            a.t
        );
        let _ = writeln!(
            body,
            r#"<line class="seg" x1="{x1:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{:.1}" marker-end="url(#head)"/>"#,
            y + DROP
        );
        let _ = writeln!(
            body,
            r#"<text class="label" x="{:.1}" y="{:.1}">{}</text>"#,
            (x1 + x2) / 2.0,
            y + DROP / 2.0 - 4.0,
            esc(&a.label)
        );
        for &(side, st) in &a.states {
            let (tx, anchor) = match side {
                Side::Client => (x(side) - PAD, "end"),
                Side::Server => (x(side) + PAD, "start"),
            };
            // The sender's state at the arrow's tail, the receiver's where
            // the arrow reaches it; below the lane's last one if that is
            // closer than a line.
            let want = if side == a.from { y } else { y + DROP } + 4.0;
            let lane = lane_bottom.entry((a.col, idx(side))).or_insert(f64::MIN);
            let ty = want.max(*lane + STATE_LINE);
            *lane = ty;
            bottom = bottom.max(ty);
            let _ = writeln!(
                body,
                r#"<text class="state" x="{tx:.1}" y="{ty:.1}" text-anchor="{anchor}">{st}</text>"#
            );
        }
    }
    let rows_end = TOP + arrows.len() as f64 * ROW;
    let height = rows_end.max(bottom + ROW) + 40.0;
    let width = TIME_END + PAD + order.len().max(1) as f64 * cols.pair();
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}">"#
    );
    let _ = writeln!(
        svg,
        concat!(
            "<style>text{{font-family:'DejaVu Sans Mono','Liberation Mono',monospace;font-size:{}px}}",
            ".time{{text-anchor:end;fill:#666}}.label{{text-anchor:middle;fill:#000}}",
            ".state{{fill:#a0522d;font-weight:bold}}.end{{text-anchor:middle;font-weight:bold}}",
            ".seg{{stroke:#1f4e99;stroke-width:1.5}}.life{{stroke:#999;stroke-dasharray:4 3}}</style>"
        ),
        FONT
    );
    svg.push_str(concat!(
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
        let xc = cols.client_x(i);
        for (x, name, addr) in [(xc, "client", client), (xc + cols.gap, "server", server)] {
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
                offers: None,
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

    /// A text's box, `(left, top, right, bottom)`, from its position, anchor
    /// and length, with the font's ascent (0.8 em) and descent (0.2 em) and
    /// `char_w` per character: what the overlap checks measure.
    fn text_box(x: f64, y: f64, anchor: &str, chars: usize, char_w: f64) -> [f64; 4] {
        let w = chars as f64 * char_w;
        let left = match anchor {
            "end" => x - w,
            "middle" => x - w / 2.0,
            _ => x,
        };
        [left, y - 0.8 * FONT, left + w, y + 0.2 * FONT]
    }

    /// Every text's box in `svg`, with its content.
    fn boxes(svg: &str) -> Vec<([f64; 4], String)> {
        svg.split("<text")
            .skip(1)
            .map(|t| {
                let (attrs, rest) = t.split_once('>').unwrap();
                let content = rest.split_once("</text>").unwrap().0;
                let attr = |name: &str| {
                    attrs
                        .split_once(&format!(" {name}=\""))
                        .map(|(_, v)| v.split_once('"').unwrap().0.to_string())
                };
                let num = |name: &str| attr(name).unwrap().parse::<f64>().unwrap();
                let anchor = attr("text-anchor").unwrap_or_else(|| {
                    match attr("class").as_deref() {
                        Some("time") => "end",
                        Some("label" | "end") => "middle",
                        _ => "start",
                    }
                    .to_string()
                });
                let chars = content
                    .replace("&amp;", "&")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .chars()
                    .count();
                (
                    text_box(num("x"), num("y"), &anchor, chars, CHAR_W),
                    content.to_string(),
                )
            })
            .collect()
    }

    /// Pairs of texts whose boxes intersect.
    fn overlaps(svg: &str) -> Vec<String> {
        let b = boxes(svg);
        let mut out = Vec::new();
        for i in 0..b.len() {
            for j in i + 1..b.len() {
                let (p, q) = (b[i].0, b[j].0);
                if p[0] < q[2] && q[0] < p[2] && p[1] < q[3] && q[1] < p[3] {
                    out.push(format!("{:?} {p:?} / {:?} {q:?}", b[i].1, b[j].1));
                }
            }
        }
        out
    }

    /// Many segments over three connections, some with long absolute
    /// numbers, with every state change and a simultaneous close: no two
    /// texts touch, relative or absolute.
    #[test]
    fn no_text_overlaps_another() {
        use flags::*;
        let mut segs = Vec::new();
        let mut t = 0.0;
        for (n, port) in [40000u16, 40001, 40002].into_iter().enumerate() {
            let mut conn = exchange();
            conn.extend((0..15).map(|i| {
                seg(
                    0.9,
                    i % 2 == 0,
                    PSH | ACK,
                    u32::MAX - i,
                    4_000_000_000,
                    65_000,
                )
            }));
            if n == 2 {
                conn.truncate(3);
                conn.push(seg(0.3, true, FIN | ACK, 1001, 5001, 0));
                conn.push(seg(0.3, false, FIN | ACK, 5001, 1001, 0));
                conn.push(seg(0.4, true, ACK, 1002, 5002, 0));
                conn.push(seg(0.4, false, RST, 5002, 1002, 0));
            }
            for mut c in conn {
                t += 123.456789;
                c.t = t;
                if c.seg.src.port() == 40000 {
                    c.seg.src.set_port(port);
                } else {
                    c.seg.dst.set_port(port);
                }
                segs.push(c);
            }
        }
        assert!(segs.len() >= 40);
        for absolute in [false, true] {
            let svg = render(&segs, 6666, absolute);
            assert_eq!(boxes(&svg).len(), svg.matches("<text").count());
            let o = overlaps(&svg);
            assert!(o.is_empty(), "{} overlaps, first: {}", o.len(), o[0]);
        }
        // The check itself finds an overlap where there is one.
        let bad = r#"<text class="time" x="90" y="10">1.000000</text><text x="50" y="12">SYN-SENT</text>"#;
        assert_eq!(overlaps(bad).len(), 1);
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
