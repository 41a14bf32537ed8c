//! `--metrics ADDR:PORT`: Prometheus text at `/metrics`, rendered by
//! prometheus-client from the shared [`Stats`] on every scrape, so counts
//! made by forked children are included.
//!
//! Two formats, as client_golang negotiates them: OpenMetrics for a scraper
//! whose `Accept` asks for it (Prometheus does), the classic text format
//! 0.0.4 for everyone else (curl, `promtool check metrics`, older
//! scrapers). They differ in a counter's family name: OpenMetrics names the
//! family `x` and its sample `x_total`, the classic format names both
//! `x_total`, and a classic parser reads an OpenMetrics page as samples
//! without HELP or TYPE.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::serve::contract::End;
use crate::serve::service::stats::Failure;
use crate::serve::service::stats::{Stats, UdpDrop};

/// How often an idle metrics thread looks whether the sockets were handed
/// over (then the new process answers every scrape).
const HANDOVER_CHECK_MS: u16 = 200;
/// A slow or silent scraper cannot hold the metrics thread longer than this.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request larger than this (line and headers) is answered with an error:
/// a scrape is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;

/// Reads the shared counters at scrape time.
#[derive(Debug)]
struct StatsCollector(&'static Stats);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut e,
            "netecho_connections",
            "TCP connections accepted and served",
            load(&s.accepted),
        )?;
        let g = ConstGauge::new(load(&s.active) as i64);
        g.encode(e.encode_descriptor(
            "netecho_connections_active",
            "TCP connections being served now",
            None,
            g.metric_type(),
        )?)?;
        {
            let c = ConstCounter::new(0u64);
            let mut fam = e.encode_descriptor(
                "netecho_connections_rejected",
                "TCP connections accepted then closed at once, by limit",
                None,
                c.metric_type(),
            )?;
            for (reason, v) in [
                ("max_conns", load(&s.rejected)),
                ("max_conns_per_ip", load(&s.rejected_per_ip)),
            ] {
                ConstCounter::new(v).encode(fam.encode_family(&[("reason", reason)])?)?;
            }
        }
        let g = ConstGauge::new(s.per_ip.tracked() as i64);
        g.encode(e.encode_descriptor(
            "netecho_per_ip_tracked",
            "client addresses with connections counted for --max-conns-per-ip now",
            None,
            g.metric_type(),
        )?)?;
        counter(
            &mut e,
            "netecho_bytes_echoed",
            "bytes echoed back over TCP",
            s.bytes.sum(),
        )?;
        counter(
            &mut e,
            "netecho_idle_timeouts",
            "connections closed after --idle-timeout",
            load(&s.idle_timeouts),
        )?;
        counter(
            &mut e,
            "netecho_stall_timeouts",
            "connections closed after --stall-timeout",
            load(&s.stall_timeouts),
        )?;
        counter(
            &mut e,
            "netecho_udp_datagrams",
            "UDP datagrams echoed",
            s.udp_datagrams.sum(),
        )?;
        counter(
            &mut e,
            "netecho_udp_bytes",
            "UDP bytes echoed",
            s.udp_bytes.sum(),
        )?;
        if s.pooled.load(Ordering::Relaxed) {
            let g = ConstGauge::new(0i64);
            let mut fam = e.encode_descriptor(
                "netecho_workers",
                "prefork and prethread pool workers, by state",
                None,
                g.metric_type(),
            )?;
            for (state, v) in [("busy", load(&s.pool_busy)), ("idle", load(&s.pool_idle))] {
                ConstGauge::new(v as i64).encode(fam.encode_family(&[("state", state)])?)?;
            }
            counter(
                &mut e,
                "netecho_workers_started",
                "prefork and prethread pool workers started since the server did",
                load(&s.pool_started),
            )?;
        }
        {
            let c = ConstCounter::new(0u64);
            let mut fam = e.encode_descriptor(
                "netecho_connections_closed",
                "TCP connections closed, by reason (the same reasons in every model)",
                None,
                c.metric_type(),
            )?;
            for (i, reason) in End::LABELS.iter().enumerate() {
                let v = load(&s.closed[i]);
                ConstCounter::new(v).encode(fam.encode_family(&[("reason", *reason)])?)?;
            }
        }
        {
            let c = ConstCounter::new(0u64);
            let mut fam = e.encode_descriptor(
                "netecho_tls_handshake_failures",
                "TLS handshakes that failed (the connection was closed), by reason",
                None,
                c.metric_type(),
            )?;
            for (i, reason) in Failure::LABELS.iter().enumerate() {
                let v = load(&s.tls_handshake_failures[i]);
                ConstCounter::new(v).encode(fam.encode_family(&[("reason", *reason)])?)?;
            }
        }
        let c = ConstCounter::new(0u64);
        let mut fam = e.encode_descriptor(
            "netecho_udp_dropped",
            "UDP datagrams not echoed, by reason",
            None,
            c.metric_type(),
        )?;
        for why in UdpDrop::ALL {
            let v = load(&s.udp_dropped[why as usize]);
            ConstCounter::new(v).encode(fam.encode_family(&[("reason", why.name())])?)?;
        }
        Ok(())
    }
}

/// Renders the metrics page.
pub(crate) fn render(stats: &'static Stats) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(stats)));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The classic text format (0.0.4) of an OpenMetrics page from
/// [`render`]: counter families take their samples' `_total` name in HELP
/// and TYPE, and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
pub(crate) fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out += renamed.as_deref().unwrap_or(line);
        out.push('\n');
    }
    out
}

/// Serves `/metrics` until the process ends, one scrape at a time (scrapes
/// are rare and small; a thread per scraper would be a DoS surface).
pub(crate) fn serve(listener: TcpListener, stats: &'static Stats) {
    let _ = listener.set_nonblocking(true);
    while !stats.handed_over.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(HANDOVER_CHECK_MS)) {
            // Nothing to take: look at the handover flag again.
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("poll on the metrics listener failed: {e}");
                std::thread::sleep(crate::serve::blocking::accept::RESOURCE_PAUSE);
                continue;
            }
        }
        match listener.accept() {
            Ok((c, _)) => {
                // The accepted socket inherits nothing of the listener's
                // O_NONBLOCK on Linux; say so anyway for `answer`'s reads.
                let _ = c.set_nonblocking(false);
                let _ = answer(c, stats);
            }
            // Another process sharing the socket took it (a handover).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => crate::serve::blocking::accept::handle_accept_error(&e),
        }
    }
}

/// Reads the request line and headers, up to the blank line, within
/// [`SCRAPE_TIMEOUT`] in all (a client dripping one byte a second cannot
/// hold the metrics thread) and [`MAX_REQUEST`] bytes. Returns the request
/// line and whether an `Accept` header asks for OpenMetrics.
fn read_request(mut conn: &TcpStream) -> std::io::Result<(String, bool)> {
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && !req.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || req.len() > MAX_REQUEST {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut buf)? {
            0 => break,
            n => req.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&req);
    let mut lines = head.lines();
    let request = lines.next().unwrap_or("").to_owned();
    let openmetrics = lines.any(|h| {
        h.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    });
    Ok((request, openmetrics))
}

fn answer(conn: TcpStream, stats: &'static Stats) -> std::io::Result<()> {
    conn.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let (request, openmetrics) = read_request(&conn)?;
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") | ("HEAD", "/metrics") if openmetrics => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(stats),
        ),
        ("GET", "/metrics") | ("HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            to_text_format(&render(stats)),
        ),
        ("GET", _) | ("HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "netecho serves /metrics only\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_string(),
        ),
    };
    let mut w = &conn;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        w.write_all(body.as_bytes())?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_every_counter_with_its_value() {
        let s: &'static Stats = Box::leak(Box::default());
        s.accepted.store(7, Ordering::Relaxed);
        s.active.store(2, Ordering::Relaxed);
        s.rejected.store(3, Ordering::Relaxed);
        s.bytes.add(1000);
        s.udp_drop(UdpDrop::SourceRate);
        let page = render(s);
        for line in [
            "netecho_connections_total 7",
            "netecho_connections_active 2",
            "netecho_connections_rejected_total{reason=\"max_conns\"} 3",
            "netecho_bytes_echoed_total 1000",
            "netecho_idle_timeouts_total 0",
            "netecho_udp_datagrams_total 0",
            "netecho_udp_dropped_total{reason=\"source_rate\"} 1",
        ] {
            assert!(
                page.lines().any(|l| l == line),
                "missing {line:?} in:\n{page}"
            );
        }
    }

    #[test]
    fn text_format_names_counter_families_as_their_samples() {
        let s: &'static Stats = Box::leak(Box::default());
        s.accepted.store(7, Ordering::Relaxed);
        let om = render(s);
        assert!(om.contains("# TYPE netecho_connections counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = to_text_format(&om);
        assert!(
            text.contains("# TYPE netecho_connections_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP netecho_connections_total "), "{text}");
        assert!(text.contains("\nnetecho_connections_total 7\n"), "{text}");
        // Gauges keep their name; nothing OpenMetrics-only is left.
        assert!(
            text.contains("# TYPE netecho_connections_active gauge\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Every sample line is kept, in order.
        let samples = |p: &str| {
            p.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(samples(&om), samples(&text));
    }
}
