//! `netecho ping HOST:PORT`: one probe at a time, one line per probe with
//! its round-trip time, and a summary (sent, received, loss, min / avg /
//! median / max / stddev) at the end or on Ctrl-C.
//!
//! Unlike echoping, every probe's payload is unique (its sequence number
//! and a pattern drawn from it) and checked byte for byte, so a late echo of
//! an earlier probe, a flipped byte or a short echo is a failed probe, not a
//! round-trip time; and the exit status says whether every probe came back.
//! TCP mode keeps one connection (reconnecting after a failure, since the
//! stream is then out of step); `--new-conn` connects for every probe and
//! counts the connect in the time. With `--tls` the probes go over one TLS
//! connection; its handshake is timed and reported apart (in the first
//! lines, and per probe with `--new-conn`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use clap::Args;

use crate::args::{duration_at_least, parse_count, parse_duration_nonzero, size_between};
use crate::error::{Error, Result};
use crate::net::tls::{Connector, TlsOpt, describe};
use crate::net::{self, MAX_TCP_SIZE, MAX_UDP_SIZE, pattern};
use crate::sys::stop;

/// Shortest `-i`: a probe per millisecond is already a flood.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// Probe size when `-s` is not given, as `ping`'s 56 + 8 header bytes.
pub(crate) const DEFAULT_SIZE: usize = 64;
/// Pattern stream of ping payloads, apart from bench's connection ids.
const PING_STREAM: u64 = u64::MAX;
/// Bytes of the sequence number at the head of each payload (big-endian, so
/// it reads plainly in a packet capture).
const SEQ_BYTES: usize = 8;
/// How many earlier probes a stray UDP echo is matched against before it
/// is called a mismatch.
const LATE_WINDOW: u64 = 64;
/// Longest single sleep between probes, so Ctrl-C is noticed quickly.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

/// Options of `netecho ping`.
#[derive(Debug, Args)]
pub(crate) struct Opt {
    /// The echo server, as HOST:PORT ([v6addr]:PORT for IPv6 literals).
    #[arg(value_name = "HOST:PORT")]
    pub(crate) target: String,

    /// Stop after this many probes (default: until Ctrl-C or SIGTERM).
    #[arg(short = 'c', long = "count", value_name = "COUNT", value_parser = parse_count,
          allow_negative_numbers = true)]
    pub(crate) count: Option<u64>,

    /// Time between probes: seconds (0.2), or with units (200ms, 2s); at
    /// least 1ms.
    #[arg(short = 'i', long = "interval", value_name = "DURATION", default_value = "1s",
          value_parser = duration_at_least(MIN_INTERVAL), allow_negative_numbers = true)]
    pub(crate) interval: Duration,

    /// Bytes per probe: 64, 1k (1024), 64KiB, 1MiB; at most 16MiB (TCP) or
    /// 65507 (UDP).
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value_t = DEFAULT_SIZE,
          value_parser = size_between(1, MAX_TCP_SIZE, "the largest probe"),
          allow_negative_numbers = true)]
    pub(crate) size: usize,

    /// Probe with UDP datagrams instead of a TCP stream.
    #[arg(long)]
    pub(crate) udp: bool,

    /// How long a probe (and a connect) may take before it counts as lost.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration_nonzero,
          allow_negative_numbers = true)]
    pub(crate) timeout: Duration,

    /// A new TCP connection per probe; the time includes the connect.
    #[arg(long = "new-conn", conflicts_with = "udp")]
    pub(crate) new_conn: bool,

    #[command(flatten)]
    pub(crate) tls: TlsOpt,
}

/// How one probe ended.
#[derive(Debug)]
enum Outcome {
    /// The whole payload came back intact, after this long.
    Echoed(Duration),
    /// It did not; the text says why, for the probe's line.
    Failed(Failure),
    /// Ctrl-C arrived while it was out: not counted.
    Interrupted,
}

#[derive(Debug)]
enum Failure {
    Timeout,
    Mismatch {
        at: usize,
        stream_at: Option<u64>,
    },
    /// A UDP echo whose length differs from the probe's.
    Length {
        got: usize,
        sent: usize,
    },
    Closed {
        got: usize,
    },
    Reset,
    Connect(Error),
    Io(io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "timed out"),
            Failure::Mismatch { at, stream_at } => {
                write!(f, "mismatch at byte {at}")?;
                match stream_at {
                    Some(s) => write!(f, " (byte {s} of the connection)"),
                    None => Ok(()),
                }
            }
            Failure::Length { got, sent } => {
                write!(f, "echo of {got} bytes for a probe of {sent}")
            }
            Failure::Closed { got } => {
                write!(
                    f,
                    "connection closed by the server after {got} bytes of the echo"
                )
            }
            Failure::Reset => write!(f, "connection reset by the server"),
            Failure::Connect(e) => write!(f, "{e}"),
            Failure::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A probe's TCP stream, plain or under TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The socket underneath, for its timeouts.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Connects a probe stream: TCP, then the TLS handshake with `tls`, each
/// within `timeout`; the handshake's duration comes back with it.
fn open_stream(
    target: &str,
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&Connector>,
) -> Result<(Stream, Option<(Duration, String)>)> {
    wrap_stream(net::connect_one(target, addr, timeout)?, timeout, tls)
}

/// A connected socket as a probe stream, after the TLS handshake with
/// `tls` (within `timeout`).
fn wrap_stream(
    mut s: TcpStream,
    timeout: Duration,
    tls: Option<&Connector>,
) -> Result<(Stream, Option<(Duration, String)>)> {
    // Probes are written whole; Nagle would only add delay.
    let _ = s.set_nodelay(true);
    match tls {
        None => Ok((Stream::Plain(s), None)),
        Some(c) => {
            let (conn, took) = c.handshake(&mut s, timeout)?;
            let about = describe(&conn);
            let stream = rustls::StreamOwned::new(conn, s);
            Ok((Stream::Tls(Box::new(stream)), Some((took, about))))
        }
    }
}

/// The transport, kept between probes.
enum Link {
    Tcp {
        stream: Option<Stream>,
        /// Bytes echoed on `stream` so far, for the mismatch offset.
        offset: u64,
    },
    Udp {
        sock: UdpSocket,
    },
}

/// Runs `netecho ping`.
pub(crate) fn run(opt: Opt) -> Result<()> {
    let max_size = if opt.udp { MAX_UDP_SIZE } else { MAX_TCP_SIZE };
    if opt.size > max_size {
        return Err(Error::InvalidOption(format!(
            "--size {} is above the largest {} probe, {max_size} bytes",
            opt.size,
            if opt.udp { "UDP" } else { "TCP" }
        )));
    }
    let tls = Connector::from_opt(&opt.tls, &opt.target, false)?;
    if tls.is_some() && opt.udp {
        return Err(Error::InvalidOption("--tls is for TCP, not --udp".into()));
    }
    stop::install().map_err(Error::io("installing signal handlers"))?;
    let addrs = net::resolve(&opt.target)?;
    // The first connect decides the address; a refused or unreachable
    // server is one line and exit 1 before any probe.
    let mut stats = Stats::default();
    let mut first_handshake = None;
    let (addr, mut link) = if opt.udp {
        let addr = addrs[0];
        let sock = net::udp_socket(addr).map_err(Error::io("opening a UDP socket"))?;
        (addr, Link::Udp { sock })
    } else {
        let s = net::connect_any(&opt.target, &addrs, opt.timeout)?;
        let addr = s
            .peer_addr()
            .map_err(Error::io("reading the server's address"))?;
        // The first handshake, like the first connect, is a one-line error
        // before any probe (a certificate that does not verify...).
        let (s, hs) = wrap_stream(s, opt.timeout, tls.as_ref())?;
        if let Some((took, _)) = &hs {
            stats.handshakes_ms.push(took.as_secs_f64() * 1e3);
        }
        first_handshake = hs;
        let stream = if opt.new_conn { None } else { Some(s) };
        (addr, Link::Tcp { stream, offset: 0 })
    };

    let proto = match (opt.udp, tls.is_some()) {
        (true, _) => "udp",
        (false, true) => "tls",
        (false, false) => "tcp",
    };
    let mut out = Out::default();
    out.line(&format!(
        "PING {} ({addr}, {proto}): {} bytes per probe",
        opt.target, opt.size
    ));
    if let Some((took, about)) = first_handshake {
        out.line(&format!(
            "TLS handshake with {addr}: {about}, time={:.3} ms",
            took.as_secs_f64() * 1e3
        ));
    }

    let start = Instant::now();
    let mut payload = vec![0u8; opt.size];
    let mut seq: u64 = 0;
    while !stop::requested() && !out.closed && opt.count.is_none_or(|c| seq < c) {
        seq += 1;
        fill_payload(seq, &mut payload);
        let mut handshake = None;
        let outcome = match &mut link {
            Link::Tcp { stream, offset } => tcp_probe(
                &opt,
                addr,
                tls.as_ref(),
                (stream, offset),
                &mut handshake,
                &payload,
            ),
            Link::Udp { sock } => udp_probe(sock, &opt, seq, &payload, &mut stats.late),
        };
        let handshake_note = match handshake {
            Some(took) => {
                stats.handshakes_ms.push(took.as_secs_f64() * 1e3);
                format!(" handshake={:.3} ms", took.as_secs_f64() * 1e3)
            }
            None => String::new(),
        };
        match outcome {
            Outcome::Echoed(rtt) => {
                stats.rtts_ms.push(rtt.as_secs_f64() * 1e3);
                out.line(&format!(
                    "{} bytes from {addr}: seq={seq} time={:.3} ms{handshake_note}",
                    opt.size,
                    rtt.as_secs_f64() * 1e3
                ));
            }
            Outcome::Failed(why) => {
                let line = format!("seq={seq}: {why}");
                out.line(&format!("from {addr}: {line}"));
                stats.failed += 1;
                stats.first_failure.get_or_insert(line);
            }
            Outcome::Interrupted => {
                seq -= 1;
                break;
            }
        }
        if opt.count.is_some_and(|c| seq >= c) {
            break;
        }
        sleep_until(
            start
                + opt
                    .interval
                    .saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX)),
        );
    }
    stats.sent = seq;
    stats.elapsed = start.elapsed();
    for line in stats.summary(&opt.target) {
        out.line(&line);
    }
    match stats.first_failure {
        Some(first) => Err(Error::PingFailed {
            failed: stats.failed,
            sent: stats.sent,
            first,
        }),
        None => Ok(()),
    }
}

/// Probe `seq`'s payload: the sequence number, then the pattern.
fn fill_payload(seq: u64, buf: &mut [u8]) {
    let head = buf.len().min(SEQ_BYTES);
    pattern::fill(PING_STREAM, seq, &mut buf[head..]);
    buf[..head].copy_from_slice(&seq.to_be_bytes()[SEQ_BYTES - head..]);
}

/// One TCP probe: connect (and handshake, with `tls`) if needed, write,
/// read the echo back and check it. A handshake's duration is left in
/// `handshake`.
fn tcp_probe(
    opt: &Opt,
    addr: SocketAddr,
    tls: Option<&Connector>,
    (stream, offset): (&mut Option<Stream>, &mut u64),
    handshake: &mut Option<Duration>,
    payload: &[u8],
) -> Outcome {
    let mut t0 = Instant::now();
    let deadline = t0 + opt.timeout;
    let reconnect = stream.is_none() && !opt.new_conn;
    if stream.is_none() {
        match open_stream(&opt.target, addr, opt.timeout, tls) {
            Ok((s, hs)) => {
                *handshake = hs.map(|(took, _)| took);
                *stream = Some(s);
                *offset = 0;
            }
            Err(e) => return Outcome::Failed(Failure::Connect(e)),
        }
    }
    let Some(s) = stream.as_mut() else {
        return Outcome::Failed(Failure::Timeout);
    };
    // Only --new-conn counts the connect in a probe's time; the first probe
    // and the one after a failure time the exchange alone.
    if reconnect {
        t0 = Instant::now();
    }
    let outcome = exchange(s, payload, deadline, *offset);
    match &outcome {
        Outcome::Echoed(_) => {
            *offset += payload.len() as u64;
            if opt.new_conn {
                *stream = None;
            }
        }
        // The stream is out of step with the probes: start afresh.
        Outcome::Failed(_) | Outcome::Interrupted => *stream = None,
    }
    match outcome {
        Outcome::Echoed(_) => Outcome::Echoed(t0.elapsed()),
        other => other,
    }
}

/// Writes `payload` and reads exactly its length back by `deadline`.
fn exchange(s: &mut Stream, payload: &[u8], deadline: Instant, base: u64) -> Outcome {
    let mut written = 0;
    let mut got = 0;
    let mut buf = vec![0u8; payload.len().min(64 * 1024)];
    // Write and read in turns, so a probe larger than the socket buffers
    // cannot deadlock with a server that echoes as it reads.
    while got < payload.len() {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Outcome::Failed(Failure::Timeout);
        };
        if written < payload.len() {
            let _ = s
                .tcp()
                .set_write_timeout(Some(left.min(Duration::from_millis(10))));
            match s.write(&payload[written..]) {
                Ok(0) => return Outcome::Failed(Failure::Closed { got }),
                Ok(n) => written += n,
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if stop::requested() {
                        return Outcome::Interrupted;
                    }
                }
                Err(e) => return Outcome::Failed(io_failure(e)),
            }
        }
        let wait = if written < payload.len() {
            Duration::from_millis(1).min(left)
        } else {
            left
        };
        let _ = s.tcp().set_read_timeout(Some(wait));
        let n = match s.read(&mut buf) {
            Ok(0) => return Outcome::Failed(Failure::Closed { got }),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if stop::requested() {
                    return Outcome::Interrupted;
                }
                continue;
            }
            Err(e) => return Outcome::Failed(io_failure(e)),
        };
        let want = &payload[got..written];
        if let Some(at) = pattern::first_difference(want, &buf[..n]) {
            let at = got + at;
            return Outcome::Failed(Failure::Mismatch {
                at,
                stream_at: Some(base + at as u64),
            });
        }
        if n > want.len() {
            let at = written;
            return Outcome::Failed(Failure::Mismatch {
                at,
                stream_at: Some(base + at as u64),
            });
        }
        got += n;
    }
    Outcome::Echoed(Duration::ZERO)
}

/// A read or write timeout, as the OS reports it.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn io_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Failure::Reset,
        // TLS: the TCP stream ended without close_notify.
        io::ErrorKind::UnexpectedEof => Failure::Closed { got: 0 },
        _ => Failure::Io(e),
    }
}

/// One UDP probe: send, then take datagrams until ours or the deadline.
fn udp_probe(sock: &UdpSocket, opt: &Opt, seq: u64, payload: &[u8], late: &mut u64) -> Outcome {
    let t0 = Instant::now();
    let deadline = t0 + opt.timeout;
    loop {
        match sock.send(payload) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if stop::requested() {
                    return Outcome::Interrupted;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Outcome::Failed(Failure::Connect(Error::Refused(opt.target.clone())));
            }
            Err(e) => return Outcome::Failed(Failure::Io(e)),
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut earlier = vec![0u8; payload.len()];
    loop {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Outcome::Failed(Failure::Timeout);
        };
        let _ = sock.set_read_timeout(Some(left));
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if stop::requested() {
                    return Outcome::Interrupted;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Outcome::Failed(Failure::Connect(Error::Refused(opt.target.clone())));
            }
            Err(e) => return Outcome::Failed(Failure::Io(e)),
        };
        let got = &buf[..n];
        if got == payload {
            return Outcome::Echoed(t0.elapsed());
        }
        // An echo of an earlier probe that timed out: already counted.
        let is_late = n == payload.len()
            && (seq.saturating_sub(LATE_WINDOW).max(1)..seq).any(|s| {
                fill_payload(s, &mut earlier);
                earlier == got
            });
        if is_late {
            *late += 1;
            continue;
        }
        return Outcome::Failed(match pattern::first_difference(payload, got) {
            Some(at) => Failure::Mismatch {
                at,
                stream_at: None,
            },
            None => Failure::Length {
                got: n,
                sent: payload.len(),
            },
        });
    }
}

/// Sleeps until `t`, waking early when the user asks to stop.
fn sleep_until(t: Instant) {
    loop {
        if stop::requested() {
            return;
        }
        let now = Instant::now();
        if now >= t {
            return;
        }
        std::thread::sleep((t - now).min(SLEEP_SLICE));
    }
}

/// Stdout, line by line; a reader that went away (`| head`) ends the run
/// quietly instead of as an error.
#[derive(Default)]
struct Out {
    closed: bool,
}

impl Out {
    fn line(&mut self, text: &str) {
        if self.closed {
            return;
        }
        let mut out = io::stdout().lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            self.closed = true;
        }
    }
}

/// What the summary is made of.
#[derive(Debug, Default)]
struct Stats {
    sent: u64,
    failed: u64,
    /// UDP echoes that came back after their probe had timed out.
    late: u64,
    rtts_ms: Vec<f64>,
    /// `--tls`: every handshake's duration (the first connection's too).
    handshakes_ms: Vec<f64>,
    first_failure: Option<String>,
    elapsed: Duration,
}

impl Stats {
    /// The closing lines, as `ping` prints them.
    fn summary(&self, target: &str) -> Vec<String> {
        let received = self.rtts_ms.len() as u64;
        let loss = if self.sent == 0 {
            0.0
        } else {
            100.0 * (self.sent - received) as f64 / self.sent as f64
        };
        let mut lines = vec![format!("--- {target} netecho ping statistics ---")];
        let mut counts = format!(
            "{} probes sent, {received} received, {loss:.1}% loss, time {:.0} ms",
            self.sent,
            self.elapsed.as_secs_f64() * 1e3
        );
        if self.late > 0 {
            counts += &format!(", {} late echoes", self.late);
        }
        lines.push(counts);
        if let Some(s) = spread(&self.rtts_ms) {
            lines.push(format!(
                "rtt min/avg/median/max/stddev = {:.3}/{:.3}/{:.3}/{:.3}/{:.3} ms",
                s.min, s.avg, s.median, s.max, s.stddev
            ));
        }
        if let Some(s) = spread(&self.handshakes_ms) {
            lines.push(format!(
                "handshake min/avg/median/max/stddev = {:.3}/{:.3}/{:.3}/{:.3}/{:.3} ms ({} handshakes)",
                s.min,
                s.avg,
                s.median,
                s.max,
                s.stddev,
                self.handshakes_ms.len()
            ));
        }
        lines
    }
}

/// Min, average, median, max and standard deviation of a sample.
#[derive(Debug, PartialEq)]
struct Spread {
    min: f64,
    avg: f64,
    median: f64,
    max: f64,
    stddev: f64,
}

fn spread(xs: &[f64]) -> Option<Spread> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let avg = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n as f64;
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        min: v[0],
        avg,
        median,
        max: v[n - 1],
        stddev: var.sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_a_small_sample() {
        let s = spread(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 10.0);
        assert_eq!(s.median, 2.5);
        assert_eq!(s.avg, 4.0);
        assert!((s.stddev - 3.535_533_9).abs() < 1e-6);
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn payloads_carry_the_sequence_number_and_differ() {
        let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
        fill_payload(3, &mut a);
        fill_payload(4, &mut b);
        assert_eq!(a[..8], 3u64.to_be_bytes());
        assert_ne!(a[8..], b[8..]);
        let mut tiny = [0u8; 2];
        fill_payload(0x0102, &mut tiny);
        assert_eq!(tiny, [1, 2]);
    }

    #[test]
    fn intervals_below_a_millisecond_are_refused() {
        let parse_interval = crate::args::duration_at_least(MIN_INTERVAL);
        assert!(parse_interval("0.0005").is_err());
        assert_eq!(parse_interval("0.001").unwrap(), MIN_INTERVAL);
        assert!(parse_interval("-1").is_err());
    }
}
