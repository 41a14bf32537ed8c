//! `netecho ping HOST:PORT` (or `HOST PORT`): one probe at a time, one line
//! per probe with its round-trip time, and a summary (sent, received, loss,
//! min / avg / median / max / stddev) at the end or on Ctrl-C.
//!
//! Unlike echoping, every probe's payload is unique (its sequence number
//! and a pattern drawn from it) and checked byte for byte, so a late echo of
//! an earlier probe, a flipped byte or a short echo is a failed probe, not a
//! round-trip time; and the exit status says whether every probe came back.
//! As ping(8) does, probes go on when the service is down (each one lost,
//! with its line); `--wait` waits for it to come up first. TCP mode keeps
//! one connection (reconnecting after a failure, since the stream is then
//! out of step); `--new-conn` connects for every probe and counts the
//! connect in the time. With `--tls` the probes go over one TLS
//! connection; its handshake is timed and reported apart (in the first
//! lines, and per probe with `--new-conn`). [`probe`] does one probe,
//! [`report`] prints; [`inspect`] is `--inspect`, what the path changed.

mod inspect;
mod probe;
mod report;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::args::{duration_at_least, parse_count, parse_duration_nonzero, size_between};
use crate::error::{Error, Result};
use crate::net::tls::{Connector, TlsOpt};
use crate::net::{self, MAX_TCP_SIZE, MAX_UDP_SIZE, TargetOpt};
use crate::sys::stop;
use probe::{Failure, Outcome, Stream};
use report::{Out, Stats};

/// Shortest `-i`: a probe per millisecond is already a flood.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// Probe size when `-s` is not given, as `ping`'s 56 + 8 header bytes.
pub(crate) const DEFAULT_SIZE: usize = 64;
/// Longest single sleep between probes, so Ctrl-C is noticed quickly.
const SLEEP_SLICE: Duration = Duration::from_millis(50);
/// `--wait`: how often a service that is not up yet is tried again.
const WAIT_RETRY: Duration = Duration::from_millis(100);

/// What `ping --help` says after the options.
const AFTER_HELP: &str = "\
Each probe's payload is unique and its echo is checked byte for byte. A probe \
is lost when its echo is late (--timeout), wrong, short, or cannot be sent \
(connection refused, reset...): each lost probe gets its own line saying why, \
and probing goes on, as ping(8) does when a host is down.

--json prints one JSON object per line instead of text: one per probe \
({\"type\":\"probe\",\"seq\":1,\"ok\":true,\"rtt_ms\":0.1,...} or \
{\"type\":\"probe\",\"seq\":2,\"ok\":false,\"error\":\"timeout\",\"message\":\"timed out\",...}) \
and one summary at the end ({\"type\":\"summary\",\"sent\":..,\"received\":..,\"lost\":..,\
\"rtt_ms\":{\"min\":..,\"avg\":..,\"median\":..,\"max\":..,\"stddev\":..},\"interrupted\":..,\"error\":..}), \
also when the run stops early.

Exit status: 0 every probe came back intact; 1 a probe was lost or \
mismatched, none was answered, --wait ran out, or the name did not resolve; \
2 a usage error. Ctrl-C or SIGTERM stops the run, prints the summary and \
exits as above (0 if every probe sent came back).";

/// Options of `netecho ping`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Opt {
    #[command(flatten)]
    pub(crate) target: TargetOpt,

    /// Stop after this many probes (default: until Ctrl-C or SIGTERM).
    #[arg(short = 'c', long = "count", value_name = "COUNT", value_parser = parse_count,
          allow_negative_numbers = true)]
    pub(crate) count: Option<u64>,

    /// Time between the starts of two probes: seconds (0.2), or with units
    /// (200ms, 2s); at least 1ms. A probe that takes longer delays the next.
    #[arg(short = 'i', long = "interval", value_name = "DURATION", default_value = "1s",
          value_parser = duration_at_least(MIN_INTERVAL), allow_negative_numbers = true)]
    pub(crate) interval: Duration,

    /// Bytes per probe: 64, 1k (1024), 64KiB, 1MiB (TCP: up to 16MiB;
    /// UDP: up to 65507).
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

    /// Before the first probe, wait up to this long for the service to come
    /// up (a TCP connect, or a UDP echo, tried every 100 ms); exit 1 if it
    /// does not.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_nonzero,
          allow_negative_numbers = true)]
    pub(crate) wait: Option<Duration>,

    /// A new TCP connection per probe; the time includes the connect.
    #[arg(long = "new-conn", conflicts_with = "udp")]
    pub(crate) new_conn: bool,

    /// One JSON object per line on stdout (one per probe, then a summary)
    /// instead of text.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) tls: TlsOpt,

    #[command(flatten)]
    pub(crate) inspect: inspect::InspectOpt,
}

/// Runs `netecho ping`.
pub(crate) fn run(opt: Opt) -> Result<()> {
    if opt.inspect.inspect {
        if opt.udp || opt.new_conn || opt.tls.tls {
            return Err(Error::Usage(
                "--inspect asks over TCP and UDP itself: drop --udp, --new-conn and --tls".into(),
            ));
        }
        return inspect::run(&opt.inspect, &opt.target, opt.timeout, opt.json);
    }
    let target = opt.target.target()?;
    let max_size = if opt.udp { MAX_UDP_SIZE } else { MAX_TCP_SIZE };
    if opt.size > max_size {
        return Err(Error::Usage(format!(
            "--size {} is above the largest {} probe, {max_size} bytes",
            opt.size,
            if opt.udp { "UDP" } else { "TCP" }
        )));
    }
    if opt.tls.tls && opt.udp {
        return Err(Error::Usage("--tls is for TCP, not --udp".into()));
    }
    let shown = target.to_string();
    let mut out = Out::new(opt.json);
    let mut stats = Stats::default();
    let result =
        setup(&opt, &target, &shown).and_then(|mut p| p.probe_all(&opt, &mut out, &mut stats));
    stats.interrupted = stop::requested();
    if let Err(e) = result {
        out.object(&stats.summary_json(&shown, Some(&e.to_string())));
        return Err(e);
    }
    for line in stats.summary(&shown) {
        out.line(&line);
    }
    out.object(&stats.summary_json(&shown, None));
    match stats.first_failure {
        Some(first) => Err(Error::PingFailed {
            failed: stats.failed,
            sent: stats.sent,
            first,
        }),
        None if stats.received() == 0 => Err(Error::NoAnswer),
        None => Ok(()),
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

/// A connection for probes and its handshake's time for the probe's line,
/// or why there is none (a lost probe).
type Opened = std::result::Result<(Stream, Option<Duration>), Failure>;

/// A run's fixed parts and its transport.
struct Pinger {
    shown: String,
    addrs: Vec<SocketAddr>,
    /// The address probes go to (the last one connected).
    addr: SocketAddr,
    tls: Option<Connector>,
    link: Link,
    /// A TLS handshake has succeeded once: until then a failed handshake
    /// (a certificate that does not verify...) ends the run instead of
    /// counting as a lost probe.
    handshaken: bool,
}

/// Resolves the target and opens the UDP socket; TCP connects at the
/// first probe (or during `--wait`).
fn setup(opt: &Opt, target: &net::target::Target, shown: &str) -> Result<Pinger> {
    let tls = Connector::from_opt(&opt.tls, shown, false)?;
    stop::install().map_err(Error::io("installing signal handlers"))?;
    let addrs = net::resolve_target(target, opt.target.family())?;
    let addr = addrs[0];
    let link = if opt.udp {
        let sock = net::udp_socket(addr).map_err(Error::io("opening a UDP socket"))?;
        Link::Udp { sock }
    } else {
        Link::Tcp {
            stream: None,
            offset: 0,
        }
    };
    Ok(Pinger {
        shown: shown.to_string(),
        addrs,
        addr,
        tls,
        link,
        handshaken: false,
    })
}

impl Pinger {
    fn proto(&self) -> &'static str {
        match (&self.link, self.tls.is_some()) {
            (Link::Udp { .. }, _) => "udp",
            (Link::Tcp { .. }, true) => "tls",
            (Link::Tcp { .. }, false) => "tcp",
        }
    }

    fn probe_all(&mut self, opt: &Opt, out: &mut Out, stats: &mut Stats) -> Result<()> {
        if let Some(wait) = opt.wait {
            self.wait_up(opt, wait, out, stats)?;
        }
        out.line(&format!(
            "PING {} ({}, {}): {} bytes per probe",
            self.shown,
            self.addr,
            self.proto(),
            opt.size
        ));
        let start = Instant::now();
        let mut payload = vec![0u8; opt.size];
        let mut seq: u64 = 0;
        while !stop::requested() && !out.closed && opt.count.is_none_or(|c| seq < c) {
            seq += 1;
            probe::fill_payload(seq, &mut payload);
            let mut handshake = None;
            let outcome = match &self.link {
                Link::Tcp { .. } => self.tcp_probe(opt, &payload, &mut handshake, out, stats)?,
                Link::Udp { sock } => probe::udp_probe(
                    sock,
                    &self.shown,
                    opt.timeout,
                    (seq, &payload),
                    &mut stats.strays,
                ),
            };
            let hs_ms = handshake.map(|d: Duration| d.as_secs_f64() * 1e3);
            let note = hs_ms.map_or_else(String::new, |ms| format!(" handshake={ms:.3} ms"));
            match outcome {
                Outcome::Echoed(rtt) => {
                    stats.rtt.add(rtt);
                    let ms = rtt.as_secs_f64() * 1e3;
                    out.line(&format!(
                        "{} bytes from {}: seq={seq} time={ms:.3} ms{note}",
                        opt.size, self.addr
                    ));
                    out.object(&json!({
                        "type": "probe", "seq": seq, "ok": true, "bytes": opt.size,
                        "addr": self.addr.to_string(), "rtt_ms": ms, "handshake_ms": hs_ms,
                    }));
                }
                Outcome::Failed(why) => {
                    let line = format!("seq={seq}: {why}");
                    out.line(&format!("from {}: {line}", self.addr));
                    out.object(&json!({
                        "type": "probe", "seq": seq, "ok": false, "bytes": opt.size,
                        "addr": self.addr.to_string(), "error": why.kind(),
                        "message": why.to_string(),
                    }));
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
            let next = u32::try_from(seq)
                .ok()
                .and_then(|n| opt.interval.checked_mul(n))
                .and_then(|d| start.checked_add(d));
            match next {
                Some(t) => sleep_until(t),
                // Beyond any clock: the next probe would never come.
                None => break,
            }
        }
        stats.sent = seq;
        stats.elapsed = start.elapsed();
        Ok(())
    }

    /// Connects (and shakes hands) for a TCP probe. A failed connect is a
    /// lost probe; a failed first handshake ends the run.
    /// The handshake's duration comes back with the stream; the first
    /// handshake also gets its own line.
    fn open(&mut self, timeout: Duration, out: &mut Out, stats: &mut Stats) -> Result<Opened> {
        let (sock, addr) = match probe::connect(&self.shown, &self.addrs, timeout) {
            Ok(c) => c,
            Err(e) => return Ok(Err(Failure::Connect(e))),
        };
        self.addr = addr;
        match probe::wrap_stream(sock, timeout, self.tls.as_ref()) {
            Ok((stream, hs)) => {
                let took = hs.as_ref().map(|h| h.0);
                if let Some((took, about)) = hs {
                    stats.handshakes.add(took);
                    if !self.handshaken {
                        out.line(&format!(
                            "TLS handshake with {addr}: {about}, time={:.3} ms",
                            took.as_secs_f64() * 1e3
                        ));
                    }
                    self.handshaken = true;
                }
                Ok(Ok((stream, took)))
            }
            Err(e) if self.tls.is_some() && !self.handshaken => Err(e),
            Err(e) => Ok(Err(Failure::Connect(e))),
        }
    }

    /// One TCP probe: connect (and handshake) if needed, then the exchange.
    /// A handshake's duration (not the first one's, unless each probe
    /// connects) is left in `handshake`.
    fn tcp_probe(
        &mut self,
        opt: &Opt,
        payload: &[u8],
        handshake: &mut Option<Duration>,
        out: &mut Out,
        stats: &mut Stats,
    ) -> Result<Outcome> {
        let mut t0 = Instant::now();
        let Link::Tcp { stream, .. } = &self.link else {
            return Ok(Outcome::Failed(Failure::Timeout));
        };
        if stream.is_none() {
            let first = !self.handshaken;
            let s = match self.open(opt.timeout, out, stats)? {
                // The first handshake has its own line; with --new-conn
                // every probe's line has its own handshake's time.
                Ok((s, took)) => {
                    if opt.new_conn || !first {
                        *handshake = took;
                    }
                    s
                }
                Err(f) => return Ok(Outcome::Failed(f)),
            };
            if let Link::Tcp { stream, offset } = &mut self.link {
                *stream = Some(s);
                *offset = 0;
            }
            // Only --new-conn counts the connect in a probe's time; the
            // first probe and the one after a failure time the exchange.
            if !opt.new_conn {
                t0 = Instant::now();
            }
        }
        let Link::Tcp { stream, offset } = &mut self.link else {
            return Ok(Outcome::Failed(Failure::Timeout));
        };
        let Some(s) = stream.as_mut() else {
            return Ok(Outcome::Failed(Failure::Timeout));
        };
        let deadline = t0.checked_add(opt.timeout).unwrap_or(t0);
        let outcome = probe::exchange(s, payload, deadline, *offset);
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
        Ok(match outcome {
            Outcome::Echoed(_) => Outcome::Echoed(t0.elapsed()),
            other => other,
        })
    }

    /// `--wait`: tries the service every [`WAIT_RETRY`] until it answers
    /// (a TCP connection is then kept for the first probe) or `wait` has
    /// passed.
    fn wait_up(
        &mut self,
        opt: &Opt,
        wait: Duration,
        out: &mut Out,
        stats: &mut Stats,
    ) -> Result<()> {
        let start = Instant::now();
        let mut payload = vec![0u8; opt.size];
        probe::fill_payload(0, &mut payload);
        loop {
            let try_for = wait.saturating_sub(start.elapsed()).min(opt.timeout);
            let last = match &self.link {
                Link::Udp { sock } => {
                    let mut strays = probe::Strays::default();
                    match probe::udp_probe(
                        sock,
                        &self.shown,
                        try_for.min(WAIT_RETRY).max(Duration::from_millis(1)),
                        (0, &payload),
                        &mut strays,
                    ) {
                        Outcome::Echoed(_) => return Ok(()),
                        Outcome::Interrupted => return Ok(()),
                        Outcome::Failed(f) => f.to_string(),
                    }
                }
                Link::Tcp { .. } => {
                    match self.open(try_for.max(Duration::from_millis(1)), out, stats)? {
                        Ok((s, _)) => {
                            if !opt.new_conn
                                && let Link::Tcp { stream, offset } = &mut self.link
                            {
                                *stream = Some(s);
                                *offset = 0;
                            }
                            return Ok(());
                        }
                        Err(f) => f.to_string(),
                    }
                }
            };
            if start.elapsed() >= wait {
                return Err(Error::NotUp {
                    target: self.shown.clone(),
                    after: wait,
                    last,
                });
            }
            sleep_until(Instant::now() + WAIT_RETRY);
            if stop::requested() {
                return Ok(());
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_below_a_millisecond_are_refused() {
        let parse_interval = duration_at_least(MIN_INTERVAL);
        assert!(parse_interval("0.0005").is_err());
        assert_eq!(parse_interval("0.001").unwrap(), MIN_INTERVAL);
        assert!(parse_interval("-1").is_err());
    }
}
