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

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::StatusCode;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::serve::contract::End;
use crate::serve::service::draining::Draining;
use crate::serve::service::stats::Failure;
use crate::serve::service::stats::{FaultKind, Stats, UdpDrop};

/// How often the metrics server looks whether the sockets were handed over
/// (then the new process answers every scrape).
const HANDOVER_CHECK: Duration = Duration::from_millis(200);
/// A scraper's request head must arrive within this.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection to the metrics server lasts longer than this.
const CONN_TIMEOUT: Duration = Duration::from_secs(30);
/// A request head larger than this is answered 431: a scrape is a few
/// hundred bytes. (hyper's smallest read buffer, 8 KiB.)
const MAX_REQUEST: usize = 8 * 1024;
/// A request body larger than this is answered 413.
const MAX_BODY: usize = 64 * 1024;
/// Connections kept at once; a new one past this closes the oldest.
const MAX_CONNS: usize = 64;

/// Reads the shared counters at scrape time, and the clients older
/// processes still serve after a hand-over.
#[derive(Debug)]
struct StatsCollector(&'static Stats, &'static Draining);

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
        let g = ConstGauge::new(self.1.held(None, true).active as i64);
        g.encode(e.encode_descriptor(
            "netecho_connections_draining",
            "TCP connections the processes a SIGHUP hand-over replaced still serve, \
             counted toward the limits",
            None,
            g.metric_type(),
        )?)?;
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
        let c = ConstCounter::new(0u64);
        let mut fam = e.encode_descriptor(
            "netecho_faults",
            "faults applied on purpose (--fault), by fault: per connection, per corrupted byte, per datagram",
            None,
            c.metric_type(),
        )?;
        for kind in FaultKind::ALL {
            let v = load(&s.faults[kind.index()]);
            ConstCounter::new(v).encode(fam.encode_family(&[("fault", kind.label())])?)?;
        }
        Ok(())
    }
}

/// Renders the metrics page.
pub(crate) fn render(stats: &'static Stats, draining: &'static Draining) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(stats, draining)));
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

/// Serves `/metrics` until the process ends or hands its sockets over, with
/// hyper on a one-thread tokio runtime: each scraper is a task of its own,
/// so silent or slow connections cost a little memory each and never delay
/// another scrape.
pub(crate) fn serve(listener: TcpListener, stats: &'static Stats, draining: &'static Draining) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("cannot start the metrics server: {e}");
            return;
        }
    };
    rt.block_on(accept_scrapers(listener, stats, draining));
}

/// Accepts scrapers and keeps at most [`MAX_CONNS`] connections: past that
/// the oldest is closed to make room, so however many idle sockets someone
/// opens, a new scraper is always served.
async fn accept_scrapers(
    listener: TcpListener,
    stats: &'static Stats,
    draining: &'static Draining,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot serve metrics: {e}");
            return;
        }
    };
    let mut conns: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
    let mut check = tokio::time::interval(HANDOVER_CHECK);
    while !stats.handed_over.load(Ordering::SeqCst) {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    conns.retain(|c| !c.is_finished());
                    if conns.len() >= MAX_CONNS
                        && let Some(oldest) = conns.pop_front()
                    {
                        oldest.abort();
                    }
                    conns.push_back(tokio::spawn(scraper(conn, stats, draining)).abort_handle());
                }
                // Another process sharing the socket took it (a handover).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    use crate::serve::blocking::accept::{AcceptError, classify};
                    if let AcceptError::Pause(d) = classify(&e) {
                        tokio::time::sleep(d).await;
                    }
                }
            },
            // Look at the handover flag again.
            _ = check.tick() => {}
        }
    }
}

/// One scraper's connection: the request head within [`SCRAPE_TIMEOUT`],
/// the whole exchange within [`CONN_TIMEOUT`]. hyper answers what is not
/// HTTP with 400 and a head over [`MAX_REQUEST`] with 431; a body is read
/// and dropped before the answer, so the answer is never followed by a reset.
async fn scraper(conn: tokio::net::TcpStream, stats: &'static Stats, draining: &'static Draining) {
    let service = hyper::service::service_fn(move |req| answer(req, stats, draining));
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(SCRAPE_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(false)
        .title_case_headers(true)
        .serve_connection(hyper_util::rt::TokioIo::new(conn), service);
    // A timeout or a broken connection ends only this scraper.
    let _ = tokio::time::timeout(CONN_TIMEOUT, http).await;
}

type Page = http_body_util::Full<hyper::body::Bytes>;

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    stats: &'static Stats,
    draining: &'static Draining,
) -> Result<hyper::Response<Page>, Infallible> {
    use http_body_util::BodyExt;
    let (head, body) = req.into_parts();
    // A scrape has no body; one that came is read to its end (up to
    // MAX_BODY) so closing after the answer does not reset it.
    if http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .is_err()
    {
        return Ok(reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            "a scrape has no body\n".into(),
        ));
    }
    let openmetrics = head.headers.get_all(hyper::header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let page = matches!(head.method, hyper::Method::GET | hyper::Method::HEAD);
    Ok(match (page, head.uri.path()) {
        (true, "/metrics") if openmetrics => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(stats, draining),
        ),
        (true, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            to_text_format(&render(stats, draining)),
        ),
        (true, _) => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "netecho serves /metrics only\n".into(),
        ),
        (false, _) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        ),
    })
}

/// A response with `status`, its type and its body (hyper leaves the body
/// out of an answer to HEAD and sets its length).
fn reply(status: StatusCode, ctype: &'static str, body: String) -> hyper::Response<Page> {
    let mut r = hyper::Response::new(Page::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
    }
    r
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
        let page = render(s, Box::leak(Box::default()));
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
        let om = render(s, Box::leak(Box::default()));
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
