//! `netecho trace`: every TCP segment to or from one port, one line each,
//! with the handshake and the close annotated as the textbooks draw them.
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
//! - [`packet`]: Ethernet → IPv4/IPv6 → TCP parsing, pure and checked;
//! - [`seq`]: wrap-around sequence numbers and `J+n`/`K+n`;
//! - [`conn`]: per-connection tracking and the handshake/close notes;
//! - [`pcap`]: the `--write` file, in the classic pcap format.
//!
//! The server side is the end whose port is `--port`; the other end is the
//! client. On loopback every frame passes the capture point twice (sent,
//! then received); the sent copy is dropped so each segment prints once,
//! as libpcap does.

pub(crate) mod capture;
pub(crate) mod conn;
pub(crate) mod packet;
pub(crate) mod pcap;
pub(crate) mod seq;
pub(crate) mod svg;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use tracing::debug;

use crate::error::{Error, Result};
use crate::sys::stop;
use capture::Capture;
use conn::Tracker;
use pcap::PcapWriter;

/// Frames taken from the capture per call of [`Tracer::pump`].
pub(crate) const PUMP_BATCH: usize = 256;

/// The port traced when none is given: netecho's own.
pub(crate) const DEFAULT_PORT: u16 = 6666;
/// The interface traced when none is given.
pub(crate) const DEFAULT_IFACE: &str = "lo";
/// How long one wait for a packet lasts before the stop flag and
/// `--count` are looked at again.
const WAIT: Duration = Duration::from_millis(200);

/// Options of `netecho trace`.
#[derive(Debug, Args)]
pub(crate) struct Opt {
    /// TCP port of the server side (segments to or from it are shown).
    #[arg(long, short = 'p', default_value_t = DEFAULT_PORT)]
    pub(crate) port: u16,

    /// Interface to capture on.
    #[arg(long, short = 'i', default_value = DEFAULT_IFACE, value_name = "IF")]
    pub(crate) iface: String,

    /// Stop after this many segments (default: until Ctrl-C/SIGTERM).
    #[arg(long, short = 'c', value_name = "N", value_parser = crate::args::parse_positive)]
    pub(crate) count: Option<usize>,

    /// Show absolute sequence numbers instead of J+n / K+n.
    #[arg(long)]
    pub(crate) absolute: bool,

    /// Also save the segments to this pcap file (tcpdump, tshark, Wireshark).
    #[arg(long, short = 'w', value_name = "FILE.pcap")]
    pub(crate) write: Option<PathBuf>,

    /// At the end, also draw the segments as a sequence diagram into this
    /// SVG file (one line per endpoint, one arrow per segment, the TCP
    /// states where they change; the first 2000 segments).
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) svg: Option<PathBuf>,
}

/// Runs `netecho trace` until `--count` segments or a signal.
pub(crate) fn run(opt: Opt) -> Result<()> {
    stop::install().map_err(Error::io("installing the SIGINT/SIGTERM handler"))?;
    let mut tracer = Tracer::open(&opt.iface, opt.port, opt.absolute)?;
    if let Some(path) = &opt.write {
        tracer.write_to(path)?;
    }
    if opt.svg.is_some() {
        tracer.diagram = Some(Vec::new());
    }
    let mut out = io::stdout().lock();
    let header = format!(
        "tracing TCP port {} on {} (client = the other end; seq/ack {}){}",
        opt.port,
        opt.iface,
        if opt.absolute {
            "absolute"
        } else {
            "relative to the client's ISN J and the server's ISN K"
        },
        match opt.count {
            Some(n) => format!(", stopping after {n} segments"),
            None => ", Ctrl-C to stop".to_string(),
        }
    );
    if writeln!(out, "{header}")
        .and_then(|()| out.flush())
        .is_err()
    {
        return Ok(());
    }
    while !stop::requested() && opt.count.is_none_or(|c| tracer.segments < c) {
        let room = opt.count.map_or(usize::MAX, |c| c - tracer.segments);
        let lines = tracer.pump(WAIT, room)?;
        let mut ok = true;
        for l in &lines {
            ok &= writeln!(out, "{l}").is_ok();
        }
        if !ok || out.flush().is_err() {
            // Stdout closed (`| head`): stop quietly.
            break;
        }
    }
    tracer.finish()?;
    if let (Some(path), Some(segs)) = (&opt.svg, &tracer.diagram) {
        let svg = svg::render(segs, opt.port, opt.absolute);
        std::fs::write(path, svg).map_err(Error::io("writing the SVG file"))?;
        if tracer.segments > segs.len() {
            eprintln!(
                "netecho: the diagram shows the first {} of {} segments",
                segs.len(),
                tracer.segments
            );
        }
    }
    let drops = tracer
        .capture
        .stats()
        .map(|(_, d)| format!(", {d} dropped by the kernel"))
        .unwrap_or_default();
    eprintln!("netecho: {} segments{drops}", tracer.segments);
    Ok(())
}

/// A capture, its connection tracker and its optional pcap file: what
/// `trace` runs and `lab` drives step by step.
pub(crate) struct Tracer {
    /// The filtered packet socket.
    capture: Capture,
    /// Handshake and close state per connection.
    tracker: Tracker,
    /// The `--write` file.
    pcap: Option<PcapWriter<BufWriter<File>>>,
    /// Timestamps count from here.
    start: Instant,
    /// Segments shown so far.
    pub(crate) segments: usize,
    /// With `--svg`: the segments for the diagram (at most
    /// [`svg::MAX_SEGMENTS`]).
    pub(crate) diagram: Option<Vec<svg::Captured>>,
}

impl Tracer {
    /// Opens the capture; errors say when CAP_NET_RAW is missing.
    pub(crate) fn open(iface: &str, port: u16, absolute: bool) -> Result<Tracer> {
        Ok(Tracer {
            capture: Capture::open(iface, port)?,
            tracker: Tracker::new(port, absolute),
            pcap: None,
            start: Instant::now(),
            segments: 0,
            diagram: None,
        })
    }

    /// Starts saving every shown segment to a pcap file.
    pub(crate) fn write_to(&mut self, path: &std::path::Path) -> Result<()> {
        let what = "creating the pcap file";
        let file = File::create(path).map_err(Error::io(what))?;
        let w = PcapWriter::new(BufWriter::new(file), capture::SNAPLEN as u32)
            .map_err(Error::io(what))?;
        self.pcap = Some(w);
        Ok(())
    }

    /// Reads what arrives within `wait` (then whatever is already queued),
    /// at most `room` segments and at most [`PUMP_BATCH`] per call, and
    /// returns their lines and notes. The cap keeps output flowing and Ctrl-C
    /// heard under a steady stream of segments, which would otherwise keep
    /// the queue from ever being empty.
    pub(crate) fn pump(&mut self, wait: Duration, room: usize) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut shown = 0;
        let mut timeout = wait;
        let loopback = self.capture.loopback;
        let mut taken = 0;
        while shown < room && taken < PUMP_BATCH {
            taken += 1;
            let Some(frame) = self.capture.next(timeout)? else {
                break;
            };
            // Once something arrived, only take what is already queued.
            timeout = Duration::ZERO;
            if frame.outgoing && loopback {
                continue;
            }
            let seg = match packet::parse_frame(frame.data) {
                Ok(s) => s,
                Err(e) => {
                    debug!("skipping a frame: {e}");
                    continue;
                }
            };
            if let Some(p) = &mut self.pcap {
                p.write(frame.ts, frame.data, frame.orig_len)
                    .map_err(Error::io("writing the pcap file"))?;
            }
            let t = self.start.elapsed().as_secs_f64();
            if let Some(d) = &mut self.diagram
                && d.len() < svg::MAX_SEGMENTS
            {
                d.push(svg::Captured { t, seg });
            }
            let d = self.tracker.observe(&seg);
            lines.push(format!("{t:10.6} {}", d.line));
            for n in d.notes {
                lines.push(format!("{:10} | {n}", ""));
            }
            shown += 1;
            self.segments += 1;
        }
        if shown == 0
            && let Some(p) = &mut self.pcap
        {
            // Idle: a good moment to get the file on disk.
            p.flush().map_err(Error::io("writing the pcap file"))?;
        }
        Ok(lines)
    }

    /// Flushes the pcap file.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if let Some(p) = &mut self.pcap {
            p.flush().map_err(Error::io("writing the pcap file"))?;
        }
        Ok(())
    }
}
