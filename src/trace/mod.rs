//! `netecho trace`: every TCP segment (and UDP datagram) to or from one
//! port, one line each, with the handshake and the close annotated as the
//! textbooks draw them; live, or from a capture file (`-r`).
//!
//! ```text
//!   0.000000 client 127.0.0.1:40522 -> server 127.0.0.1:6666 SYN      seq=J win=65495 len=0
//!            | handshake 1/3: client SYN seq=J (client: SYN-SENT)
//!   0.000015 server 127.0.0.1:6666 -> client 127.0.0.1:40522 SYN-ACK  seq=K ack=J+1 win=65483 len=0
//!            | handshake 2/3: server SYN-ACK seq=K ack=J+1 (server: SYN-RECEIVED)
//! ```
//!
//! # Layout
//! - [`capture`]: the AF_PACKET socket and its in-kernel BPF filter;
//! - [`conn`]: per-connection tracking and the handshake/close notes;
//! - [`udp`]: datagrams and their echoes;
//! - [`payload`]: `-A` and `-X`;
//! - [`svg`]: `--svg`, the sequence diagram.
//!
//! The wire formats are pure and live in `netecho_core::wire`: the
//! Ethernet → IPv4/IPv6 → TCP/UDP parser (`packet`), wrap-around sequence
//! numbers and `J+n`/`K+n` (`seq`), the `--write` pcap writer (`pcap`) and
//! the `-r` pcap/pcapng reader (`file`).
//!
//! The server side is the end whose port is `--port`; the other end is the
//! client. On loopback every frame passes the capture point twice (sent,
//! then received); the sent copy is dropped so each segment prints once,
//! as libpcap does.

pub(crate) mod capture;
pub(crate) mod conn;
pub(crate) mod payload;
pub(crate) mod svg;
pub(crate) mod udp;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use tracing::debug;

use crate::error::{Error, Result};
use crate::sys::stop;
use capture::Capture;
use conn::Tracker;
use netecho_core::wire::file::CaptureFile;
use netecho_core::wire::packet::{self, Proto, link};
use netecho_core::wire::pcap::PcapWriter;
use payload::Dump;
use udp::Echoes;

/// Frames taken from the capture per call of [`Tracer::pump`].
pub(crate) const PUMP_BATCH: usize = 256;

/// The port traced when none is given: netecho's own.
pub(crate) const DEFAULT_PORT: u16 = 6666;
/// The interface traced when none is given.
pub(crate) const DEFAULT_IFACE: &str = "lo";
/// How long one wait for a packet lasts before the stop flag and
/// `--count` are looked at again.
const WAIT: Duration = Duration::from_millis(200);
/// Records of a file looked through for its first SYN when `-r` comes
/// without `--port`.
const GUESS_PORT_WITHIN: usize = 10_000;

/// Options of `netecho trace`.
#[derive(Debug, Args)]
pub(crate) struct Opt {
    /// Port of the server side: TCP segments and UDP datagrams to or from
    /// it are shown (default 6666; with --read, the port the file's first
    /// SYN went to).
    #[arg(long, short = 'p')]
    pub(crate) port: Option<u16>,

    /// Only packets to or from this address (either direction).
    #[arg(long, value_name = "ADDR")]
    pub(crate) host: Option<IpAddr>,

    /// Interface to capture on; `any` captures on every Ethernet and
    /// loopback interface at once.
    #[arg(long, short = 'i', default_value = DEFAULT_IFACE, value_name = "IF")]
    pub(crate) iface: String,

    /// Read packets from this capture file (pcap or pcapng, as tcpdump,
    /// tshark and Wireshark write them) instead of capturing live.
    #[arg(long, short = 'r', value_name = "FILE", conflicts_with_all = ["iface", "write"])]
    pub(crate) read: Option<PathBuf>,

    /// Stop after this many packets (default: until Ctrl-C/SIGTERM, or
    /// the end of the --read file).
    #[arg(long, short = 'c', value_name = "N", value_parser = crate::args::parse_positive)]
    pub(crate) count: Option<usize>,

    /// Show absolute sequence numbers instead of J+n / K+n.
    #[arg(long)]
    pub(crate) absolute: bool,

    /// Show each packet's data as text (printable bytes; others as '.').
    #[arg(short = 'A', conflicts_with = "hex")]
    pub(crate) ascii: bool,

    /// Show each packet's data in hex and as text, 16 bytes a line.
    #[arg(short = 'X')]
    pub(crate) hex: bool,

    /// With -A or -X, show at most this many bytes of each packet's data.
    #[arg(long, value_name = "BYTES", default_value_t = payload::DEFAULT_LEN,
          value_parser = crate::args::parse_positive)]
    pub(crate) payload_len: usize,

    /// Also save the packets to this pcap file (tcpdump, tshark, Wireshark).
    #[arg(long, short = 'w', value_name = "FILE.pcap")]
    pub(crate) write: Option<PathBuf>,

    /// At the end, also draw the TCP segments as a sequence diagram into
    /// this SVG file (one line per endpoint, one arrow per segment, the TCP
    /// states where they change; the first 2000 segments).
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) svg: Option<PathBuf>,
}

/// Which packets are shown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filter {
    /// The server's port; one end must have it.
    pub(crate) port: u16,
    /// With `--host`: one end must have this address.
    pub(crate) host: Option<IpAddr>,
}

/// Runs `netecho trace` until `--count` packets, a signal, or the end of
/// the `--read` file.
pub(crate) fn run(opt: Opt) -> Result<()> {
    stop::install().map_err(Error::io("installing the SIGINT/SIGTERM handler"))?;
    let dump = match (opt.ascii, opt.hex) {
        (true, _) => Some((Dump::Ascii, opt.payload_len)),
        (_, true) => Some((Dump::Hex, opt.payload_len)),
        _ => None,
    };
    let mut tracer = match &opt.read {
        Some(path) => {
            let port = match opt.port {
                Some(p) => p,
                None => guess_port(path)?,
            };
            Tracer::new(None, port, opt.absolute)
        }
        None => {
            let port = opt.port.unwrap_or(DEFAULT_PORT);
            Tracer::open(&opt.iface, port, opt.absolute)?
        }
    };
    tracer.filter.host = opt.host;
    tracer.dump = dump;
    if let Some(path) = &opt.write {
        tracer.write_to(path)?;
    }
    if opt.svg.is_some() {
        tracer.diagram = Some(Vec::new());
    }
    let port = tracer.filter.port;
    let mut out = io::stdout().lock();
    let host = opt
        .host
        .map(|h| format!(" to or from {h}"))
        .unwrap_or_default();
    let source = match &opt.read {
        Some(p) => format!("in {}", p.display()),
        None => format!("on {}", opt.iface),
    };
    let header = format!(
        "tracing TCP port {port} (and UDP){host} {source} (client = the other end; seq/ack {}){}",
        if opt.absolute {
            "absolute"
        } else {
            "relative to the client's ISN J and the server's ISN K"
        },
        match (opt.count, &opt.read) {
            (Some(n), _) => format!(", stopping after {n} packets"),
            (None, Some(_)) => String::new(),
            (None, None) => ", Ctrl-C to stop".to_string(),
        }
    );
    if writeln!(out, "{header}")
        .and_then(|()| out.flush())
        .is_err()
    {
        return Ok(());
    }
    let room = |t: &Tracer| {
        opt.count
            .map_or(usize::MAX, |c| c.saturating_sub(t.segments))
    };
    let mut damaged = None;
    if let Some(path) = &opt.read {
        let f = File::open(path).map_err(|e| file_error(path, &e.to_string()))?;
        let mut reader = CaptureFile::new(f).map_err(|e| file_error(path, &e.0))?;
        while room(&tracer) > 0 && !stop::requested() {
            let rec = match reader.next_record() {
                None => break,
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    damaged = Some(file_error(path, &e.0));
                    break;
                }
            };
            let first = *tracer.first_ts.get_or_insert(rec.ts);
            let t = rec.ts.saturating_sub(first).as_secs_f64();
            if let Some(lines) = tracer.show(t, rec.link, &rec.data)
                && !print(&mut out, &lines)
            {
                break;
            }
        }
    } else {
        while !stop::requested() && room(&tracer) > 0 {
            let lines = tracer.pump(WAIT, room(&tracer))?;
            if !print(&mut out, &lines) {
                // Stdout closed (`| head`): stop quietly.
                break;
            }
        }
    }
    let _ = print(&mut out, &tracer.unanswered());
    tracer.finish()?;
    if let (Some(path), Some(segs)) = (&opt.svg, &tracer.diagram) {
        let svg = svg::render(segs, port, opt.absolute);
        std::fs::write(path, svg).map_err(Error::io("writing the SVG file"))?;
        if tracer.tcp_segments > segs.len() {
            eprintln!(
                "netecho: the diagram shows the first {} of {} segments",
                segs.len(),
                tracer.tcp_segments
            );
        }
    }
    let drops = tracer
        .capture
        .as_ref()
        .and_then(Capture::stats)
        .map(|(_, d)| format!(", {d} dropped by the kernel"))
        .unwrap_or_default();
    eprintln!("netecho: {} packets{drops}", tracer.segments);
    match damaged {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `FILE: why`, as one line; exit status 1, as tcpdump's for a file it
/// cannot read: the command line was right, the file was not a capture.
fn file_error(path: &Path, why: &str) -> Error {
    Error::Failed(format!("--read {}: {why}", path.display()))
}

/// Writes lines; false once stdout is closed.
fn print(out: &mut impl Write, lines: &[String]) -> bool {
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}

/// The server port of a capture file: where its first SYN (or, without
/// one, its first UDP datagram) went; else [`DEFAULT_PORT`].
fn guess_port(path: &Path) -> Result<u16> {
    let f = File::open(path).map_err(|e| file_error(path, &e.to_string()))?;
    let mut reader = CaptureFile::new(f).map_err(|e| file_error(path, &e.0))?;
    let mut udp = None;
    for _ in 0..GUESS_PORT_WITHIN {
        let Some(Ok(rec)) = reader.next_record() else {
            break;
        };
        match packet::parse_link(rec.link, &rec.data).map(|p| p.proto) {
            Ok(Proto::Tcp(s)) if s.has(packet::flags::SYN) && !s.has(packet::flags::ACK) => {
                return Ok(s.dst.port());
            }
            Ok(Proto::Udp(d)) if udp.is_none() => udp = Some(d.dst.port()),
            _ => {}
        }
    }
    Ok(udp.unwrap_or(DEFAULT_PORT))
}

/// A capture (or a file's packets), its connection tracker and its
/// optional pcap file: what `trace` runs and `lab` drives step by step.
pub(crate) struct Tracer {
    /// The filtered packet socket; `None` when reading a file.
    capture: Option<Capture>,
    /// Which packets are shown.
    pub(crate) filter: Filter,
    /// Handshake and close state per connection.
    tracker: Tracker,
    /// UDP datagrams waiting for their echo.
    echoes: Echoes,
    /// `-A`/`-X` and how many bytes.
    pub(crate) dump: Option<(Dump, usize)>,
    /// The `--write` file.
    pcap: Option<PcapWriter<BufWriter<File>>>,
    /// Live timestamps count from here.
    start: Instant,
    /// A file's timestamps count from its first packet's.
    first_ts: Option<Duration>,
    /// Packets shown so far.
    pub(crate) segments: usize,
    /// TCP segments shown so far (the diagram's share).
    tcp_segments: usize,
    /// With `--svg`: the segments for the diagram (at most
    /// [`svg::MAX_SEGMENTS`]).
    pub(crate) diagram: Option<Vec<svg::Captured>>,
}

impl Tracer {
    /// Opens the capture; errors say when CAP_NET_RAW is missing.
    pub(crate) fn open(iface: &str, port: u16, absolute: bool) -> Result<Tracer> {
        Ok(Tracer::new(
            Some(Capture::open(iface, port)?),
            port,
            absolute,
        ))
    }

    /// A tracer around a capture, or none for a file's packets.
    fn new(capture: Option<Capture>, port: u16, absolute: bool) -> Tracer {
        Tracer {
            capture,
            filter: Filter { port, host: None },
            tracker: Tracker::new(port, absolute),
            echoes: Echoes::new(port),
            dump: None,
            pcap: None,
            start: Instant::now(),
            first_ts: None,
            segments: 0,
            tcp_segments: 0,
            diagram: None,
        }
    }

    /// Starts saving every shown packet to a pcap file.
    pub(crate) fn write_to(&mut self, path: &Path) -> Result<()> {
        let what = "creating the pcap file";
        let file = File::create(path).map_err(Error::io(what))?;
        let w = PcapWriter::new(BufWriter::new(file), capture::SNAPLEN as u32)
            .map_err(Error::io(what))?;
        self.pcap = Some(w);
        Ok(())
    }

    /// The lines for one packet of link type `link` seen at `t` seconds,
    /// or `None` when it is not shown (filtered out, not TCP or UDP).
    pub(crate) fn show(&mut self, t: f64, link: u32, data: &[u8]) -> Option<Vec<String>> {
        let p = match packet::parse_link(link, data) {
            Ok(p) => p,
            Err(e) => {
                debug!("skipping a packet: {e}");
                return None;
            }
        };
        let (src, dst) = match p.proto {
            Proto::Tcp(s) => (s.src, s.dst),
            Proto::Udp(d) => (d.src, d.dst),
        };
        let f = self.filter;
        if (src.port() != f.port && dst.port() != f.port)
            || f.host.is_some_and(|h| src.ip() != h && dst.ip() != h)
        {
            return None;
        }
        let body = data.get(p.payload.clone()).unwrap_or_default();
        let mut lines = Vec::new();
        match p.proto {
            Proto::Tcp(seg) => {
                if let Some(d) = &mut self.diagram
                    && d.len() < svg::MAX_SEGMENTS
                {
                    d.push(svg::Captured { t, seg });
                }
                self.tcp_segments += 1;
                let d = self.tracker.observe(&seg);
                lines.push(format!("{t:10.6} {}", d.line));
                for n in d.notes {
                    lines.push(format!("{:10} | {n}", ""));
                }
            }
            Proto::Udp(dg) => {
                let l = self.echoes.observe(t, &dg, body);
                lines.push(format!("{t:10.6} {l}"));
            }
        }
        if let Some((how, max)) = self.dump {
            lines.extend(payload::lines(how, body, max));
        }
        self.segments += 1;
        Some(lines)
    }

    /// The notes for the UDP datagrams whose echo never came, for the end.
    pub(crate) fn unanswered(&self) -> Vec<String> {
        self.echoes
            .unanswered()
            .into_iter()
            .map(|(c, s, t, len)| {
                format!("no echo came back for the datagram {c} -> {s} at {t:.6} ({len} bytes)")
            })
            .collect()
    }

    /// Reads what arrives within `wait` (then whatever is already queued),
    /// at most `room` packets and at most [`PUMP_BATCH`] per call, and
    /// returns their lines and notes. The cap keeps output flowing and Ctrl-C
    /// heard under a steady stream of packets, which would otherwise keep
    /// the queue from ever being empty.
    pub(crate) fn pump(&mut self, wait: Duration, room: usize) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut shown = 0;
        let mut timeout = wait;
        let mut taken = 0;
        let Some(mut capture) = self.capture.take() else {
            return Ok(lines);
        };
        let result = (|| {
            while shown < room && taken < PUMP_BATCH {
                taken += 1;
                let Some(frame) = capture.next(timeout)? else {
                    break;
                };
                // Once something arrived, only take what is already queued.
                timeout = Duration::ZERO;
                if frame.duplicate || !frame.ethernet {
                    continue;
                }
                let t = self.start.elapsed().as_secs_f64();
                let Some(l) = self.show(t, link::ETHERNET, frame.data) else {
                    continue;
                };
                if let Some(p) = &mut self.pcap {
                    p.write(frame.ts, frame.data, frame.orig_len)
                        .map_err(Error::io("writing the pcap file"))?;
                }
                lines.extend(l);
                shown += 1;
            }
            if shown == 0
                && let Some(p) = &mut self.pcap
            {
                // Idle: a good moment to get the file on disk.
                p.flush().map_err(Error::io("writing the pcap file"))?;
            }
            Ok(())
        })();
        self.capture = Some(capture);
        result.map(|()| lines)
    }

    /// Flushes the pcap file.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if let Some(p) = &mut self.pcap {
            p.flush().map_err(Error::io("writing the pcap file"))?;
        }
        Ok(())
    }
}
