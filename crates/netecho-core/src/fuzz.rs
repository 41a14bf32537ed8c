//! Entry points for the cargo-fuzz targets in `fuzz/` that reach this
//! crate's state machines and wire parsers: each takes the fuzzer's bytes, drives the code
//! with them and panics when an invariant breaks. Compiled for the fuzz
//! targets (feature `fuzz`) and for this crate's tests, which replay the
//! committed seed corpus on stable, so a crash the fuzzers found stays
//! fixed without nightly. Never part of the product.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

mod tls_records;
pub use tls_records::tls_records;

use crate::contract::{Conn, End, Next, Timeouts};
use crate::pending::{PENDING_CAP, Pending};
use crate::udp::{self, LOOP_PORTS, MAX_UDP_SIZE, Policy, UdpDrop};
use crate::wire::packet::{Segment, build_frame, parse_frame};
use crate::wire::pcap::{self, PcapWriter};

// Linux's values of the errors models meet (this crate links no libc).
const EPIPE: i32 = 32;
const ECONNABORTED: i32 = 103;
const ECONNRESET: i32 = 104;
const ENOBUFS: i32 = 105;
const ETIMEDOUT: i32 = 110;

/// Reads the fuzzer's bytes as a stream of small numbers; zeros once they
/// run out, so every input decodes to something.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A datagram stream through the UDP policy: whatever the sources, sizes
/// and timing, it never panics, refuses what it must, and never answers a
/// source more than its bucket allows, nor all sources more than the
/// global one.
pub fn udp_policy(data: &[u8]) {
    let mut b = Bytes(data);
    let cfg = udp::Config {
        max_size: usize::from(b.u16()).min(MAX_UDP_SIZE),
        rate: u32::from(b.u8()),
        global_rate: u32::from(b.u16()),
    };
    let t0 = Instant::now();
    let p = Policy::new(cfg, t0);
    let mut now = t0;
    let mut answered = std::collections::HashMap::<SocketAddr, u64>::new();
    let mut all = 0u64;
    let payload_pool: Vec<u8> = (0..=255u8).collect();
    while !b.is_empty() {
        now += Duration::from_micros(u64::from(b.u16()) * 16);
        let from = source(b.u8(), b.u8());
        let len = usize::from(b.u16());
        let plen = usize::from(b.u8());
        let payload = &payload_pool[..plen.min(len)];
        let verdict = p.check(from, payload, len, now);
        if len > cfg.max_size {
            assert_eq!(verdict, Err(UdpDrop::TooBig));
        } else if LOOP_PORTS.contains(&from.port()) {
            assert_eq!(verdict, Err(UdpDrop::LoopPort));
        }
        if verdict.is_ok() {
            let n = answered.entry(from).or_default();
            *n += 1;
            all += 1;
            let secs = (now - t0).as_secs_f64();
            let bound = |rate: u32| {
                let rate = f64::from(rate.max(1));
                (2.0 * rate + rate * secs).ceil() as u64 + 1
            };
            assert!(
                *n <= bound(cfg.rate),
                "{from} answered {n} times in {secs}s"
            );
            assert!(all <= bound(cfg.global_rate), "{all} answered in {secs}s");
        }
    }
}

/// One of a few dozen sources: IPv4, IPv6, mapped, broadcast, multicast,
/// unspecified, on ordinary and small-service ports.
fn source(which: u8, port: u8) -> SocketAddr {
    let ip = match which % 8 {
        0 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, which / 8)),
        1 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::from(which),
        )),
        2 => IpAddr::V6(Ipv4Addr::new(127, 0, 0, which / 8).to_ipv6_mapped()),
        3 => IpAddr::V4(Ipv4Addr::BROADCAST),
        4 => IpAddr::V4(Ipv4Addr::new(224, 0, 0, which / 8)),
        5 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        6 => IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
        _ => IpAddr::V4(Ipv4Addr::new(10, 0, which, 1)),
    };
    let port = match port % 4 {
        0 => LOOP_PORTS[usize::from(port / 4) % LOOP_PORTS.len()],
        _ => 40_000 + u16::from(port),
    };
    SocketAddr::new(ip, port)
}

/// A connection core driven by random events — reads of any size, sends
/// the kernel takes any part of, writes straight through, the client's
/// FIN, errors of every kind, timers, the drain deadline — checked after
/// each against a plain queue, as its property test does: nothing lost,
/// duplicated or reordered; the cap never exceeded; our FIN only after
/// everything; a close reason, once set, never changes; a timer ends the
/// connection exactly when its deadline has passed.
pub fn conn_events(data: &[u8]) {
    let mut b = Bytes(data);
    let t = Timeouts {
        idle: secs_or_off(b.u8()),
        send: secs_or_off(b.u8()),
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut c = Conn::new(now, Pending::new());
    // Bytes the client sent, not yet read; everything it sent; what came
    // back; its FIN is queued; our FIN went out.
    let mut wire = std::collections::VecDeque::<u8>::new();
    let (mut sent, mut echoed) = (Vec::<u8>::new(), Vec::<u8>::new());
    let (mut fin_queued, mut shut) = (false, false);
    let mut closed: Option<End> = None;
    // How much of `echoed` is checked against `sent` already: each byte is
    // compared once, so a long input costs linear time.
    let mut checked = 0;
    while !b.is_empty() {
        let op = b.u8();
        let n = usize::from(b.u16());
        now += Duration::from_millis(u64::from(b.u8()) * 50);
        match op % 9 {
            0 if !fin_queued && sent.len() + n <= MAX_STREAM => {
                let from = sent.len();
                sent.extend((from..from + n).map(byte_at));
                wire.extend(&sent[from..]);
            }
            1 => fin_queued = true,
            2 | 3 => {
                if let Next::Io { read, .. } = c.next()
                    && read > 0
                {
                    if wire.is_empty() && fin_queued {
                        c.on_fin();
                    } else if !wire.is_empty() {
                        let k = n.max(1).min(read).min(wire.len());
                        let bytes: Vec<u8> = wire.drain(..k).collect();
                        let mut through = 0;
                        if op % 9 == 3 && c.write_through() {
                            through = usize::from(b.u16()).min(bytes.len());
                            echoed.extend_from_slice(&bytes[..through]);
                        }
                        c.on_read(now, &bytes[..], through);
                    }
                }
            }
            4 => match c.next() {
                Next::Io { send: true, .. } => {
                    let front = c.store().as_slice();
                    let k = n.min(front.len());
                    echoed.extend_from_slice(&front[..k]);
                    c.on_sent(now, k);
                }
                Next::ShutWrite => {
                    assert!(c.read_closed() && c.store().as_slice().is_empty());
                    shut = true;
                    c.on_shut(Ok(()));
                }
                _ => {}
            },
            5 => {
                let e = error(b.u8());
                let retry = c.on_error(&e);
                assert_eq!(retry, crate::contract::classify(&e).is_none());
            }
            6 => {
                let before = c.deadline(&t);
                let fired = c.on_timer(now, &t);
                match before {
                    Some((at, end)) => {
                        assert_eq!(fired, at <= now, "timer at {at:?}, now {now:?}");
                        if fired {
                            assert_eq!(c.next(), Next::Close(closed.unwrap_or(end)));
                        }
                    }
                    None => assert!(!fired, "fired with no deadline"),
                }
            }
            7 => c.stop(),
            _ => {
                if let Some((_, end)) = c.deadline(&t) {
                    // Echo kept: only the send timeout may end it; none: idle.
                    let kept = !c.store().as_slice().is_empty();
                    assert_eq!(end, if kept { End::Stall } else { End::Idle });
                }
            }
        }
        let kept = c.store().len();
        assert!(kept <= PENDING_CAP, "kept {kept}, past the cap");
        let read_so_far = sent.len() - wire.len();
        assert!(echoed.len() <= read_so_far, "echoed more than was read");
        assert_eq!(
            echoed[checked..],
            sent[checked..echoed.len()],
            "echo differs"
        );
        checked = echoed.len();
        assert_eq!(
            c.store().as_slice(),
            &sent[echoed.len()..read_so_far],
            "kept bytes lost, duplicated or reordered"
        );
        if shut {
            assert!(fin_queued && wire.is_empty());
            assert_eq!(echoed, sent, "our FIN before the echo");
        }
        if let Next::Close(end) = c.next() {
            assert_eq!(*closed.get_or_insert(end), end, "the close reason changed");
        } else {
            assert_eq!(closed, None, "a closed connection came back");
        }
    }
}

/// The most one `conn_events` client sends: sixteen times the core's cap,
/// enough for every backpressure path, small enough to fuzz fast.
const MAX_STREAM: usize = 16 * PENDING_CAP;

/// The client's byte at offset `i` of its stream: a hash of the offset, so
/// a block moved, lost or repeated anywhere shows (a short-period pattern
/// would hide a shift by its period).
fn byte_at(i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// A timeout from one byte: 0 is off, else that many seconds.
fn secs_or_off(b: u8) -> Option<Duration> {
    (b != 0).then(|| Duration::from_secs(u64::from(b)))
}

/// One of the socket errors models meet.
fn error(b: u8) -> io::Error {
    match b % 8 {
        0 => io::ErrorKind::WouldBlock.into(),
        1 => io::ErrorKind::Interrupted.into(),
        2 => io::Error::from_raw_os_error(ECONNRESET),
        3 => io::Error::from_raw_os_error(EPIPE),
        4 => io::Error::from_raw_os_error(ECONNABORTED),
        5 => io::Error::from_raw_os_error(ETIMEDOUT),
        6 => io::Error::from_raw_os_error(ENOBUFS),
        _ => io::Error::other("not an OS error"),
    }
}

/// An Ethernet frame from a capture: parsing never panics, and a frame that
/// parses rebuilds (without options) into one that parses the same.
pub fn packet(data: &[u8]) {
    let Ok(seg) = parse_frame(data) else {
        return;
    };
    let payload = vec![0u8; seg.len as usize];
    let again = parse_frame(&build_frame(&seg, &payload));
    // The rebuilt frame has no options, so a SYN's offers are gone from it.
    let expected = Segment {
        offers: None,
        ..seg
    };
    assert_eq!(again, Ok(expected), "rebuilt frame parses differently");
}

/// Records of any length, time and claimed wire length, written with
/// `trace`'s pcap writer and read back as libpcap would: every field as
/// written, cut to the snap length, the wire length never below the bytes
/// handed over (as far as 32 bits go), nothing before or after.
pub fn pcap_round_trip(data: &[u8]) {
    let mut b = Bytes(data);
    let snaplen = u32::from(b.u16());
    let mut out = Vec::new();
    let mut w = PcapWriter::new(&mut out, snaplen).expect("writing to a Vec");
    let mut want = Vec::new();
    while !b.is_empty() {
        let secs = u64::from(b.u32()) << (b.u8() % 8);
        let ts = Duration::new(secs, b.u32() % 1_000_000_000);
        let len = usize::from(b.u16());
        let orig = usize::from(b.u16()) * usize::from(b.u8() % 4);
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        w.write(ts, &bytes, orig).expect("writing to a Vec");
        want.push((ts, bytes, orig));
    }
    w.flush().expect("flushing a Vec");
    let u32at = |o: usize| u32::from_ne_bytes(out[o..o + 4].try_into().expect("4 bytes"));
    assert_eq!(u32at(0), pcap::MAGIC);
    assert_eq!(u32at(16), snaplen);
    assert_eq!(u32at(20), pcap::LINKTYPE_ETHERNET);
    let mut at = pcap::FILE_HEADER_LEN;
    for (ts, bytes, orig) in want {
        assert!(
            out.len() >= at + pcap::RECORD_HEADER_LEN,
            "record header cut"
        );
        let (sec, usec, incl, wire) = (u32at(at), u32at(at + 4), u32at(at + 8), u32at(at + 12));
        assert_eq!(sec, u32::try_from(ts.as_secs()).unwrap_or(u32::MAX));
        assert_eq!(usec, ts.subsec_micros());
        assert!(usec < 1_000_000);
        let kept = bytes.len().min(snaplen as usize);
        assert_eq!(incl as usize, kept, "cut to the snap length");
        let full = orig.max(bytes.len());
        assert_eq!(wire as usize, full.min(u32::MAX as usize), "wire length");
        at += pcap::RECORD_HEADER_LEN;
        assert_eq!(&out[at..at + kept], &bytes[..kept]);
        at += kept;
    }
    assert_eq!(at, out.len(), "bytes after the last record");
}

/// The SYN a server's kernel saved (`TCP_SAVED_SYN`), as `serve
/// --inspect-listen` reads it: parsing never panics; a SYN that parses has
/// fields in range, at most one option per two option bytes, survives the
/// JSON report's round trip, and reads the same with bytes after its
/// headers (the parser looks at headers only).
pub fn saved_syn(data: &[u8]) {
    use crate::inspect::syn::{Syn, parse};
    let Ok(syn) = parse(data) else {
        return;
    };
    assert!(
        matches!(syn.ip_version, 4 | 6),
        "version {}",
        syn.ip_version
    );
    assert_eq!(syn.df.is_some(), syn.ip_version == 4, "DF is IPv4's alone");
    assert!(syn.dscp < 64 && syn.ecn < 4, "{} {}", syn.dscp, syn.ecn);
    // 40 option bytes at most (a data offset of 15 words), and every
    // option kept is at least two bytes (padding is left out).
    assert!(syn.options.len() <= 20, "{} options", syn.options.len());
    let json = serde_json::to_string(&syn).expect("a Syn serializes");
    let back: Syn = serde_json::from_str(&json).expect("its JSON reads back");
    assert_eq!(back, syn, "JSON round trip: {json}");
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"payload after the headers");
    assert_eq!(
        parse(&longer),
        Ok(syn),
        "bytes after the headers changed it"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs `f` on every file of the committed seed corpus `fuzz/corpus/NAME`
    /// (crash reproducers are kept there too, so they stay fixed).
    fn corpus(name: &str, f: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(name);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.unwrap().path();
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "empty corpus {}", dir.display());
    }

    #[test]
    fn udp_policy_corpus() {
        corpus("udp_policy", udp_policy);
    }

    #[test]
    fn conn_events_corpus() {
        corpus("conn_events", conn_events);
    }

    #[test]
    fn packet_corpus() {
        corpus("packet", packet);
    }

    #[test]
    fn pcap_round_trip_corpus() {
        corpus("pcap_round_trip", pcap_round_trip);
    }

    #[test]
    fn saved_syn_corpus() {
        corpus("saved_syn", saved_syn);
    }

    #[test]
    fn empty_and_short_inputs_decode() {
        for f in [udp_policy, conn_events, packet, pcap_round_trip, saved_syn] {
            f(&[]);
            f(&[0]);
            f(&[0xff; 7]);
        }
    }
}
