//! `netecho bench HOST:PORT`: load an echo server and measure it, with every
//! byte checked and latency taken as a user would feel it.
//!
//! # What makes the figures trustworthy
//! - Every message is unique to its connection and round
//!   ([`crate::net::pattern`]) and the echo is compared byte for byte,
//!   however the reads split; a wrong byte, an early close or a reset is an
//!   error with the connection and the byte offset, counted, and the exit
//!   status is non-zero.
//! - `--rate` runs an open loop: each request has a due time on a fixed
//!   schedule and its latency counts from that time, so a stalled server
//!   shows as latency rather than as fewer samples (no coordinated omission).
//! - The generator is a mio (epoll) loop per thread that does one write and
//!   one read per request when the server keeps up; `scripts/bench-vs-c.sh`
//!   compares its requests per CPU-second with a minimal C epoll generator.
//!
//! # Layout
//! - [`plan`]: what every worker shares: the schedule, the budget, the log;
//! - [`tcp`]: the worker of TCP and TLS (closed loop, open loop,
//!   `--new-conn`, `--hold`), generic over how bytes cross a connection;
//! - [`udp`]: the UDP worker (a timeout per datagram, losses counted);
//! - [`tls`]: TLS as that worker's transport (`--tls`; handshakes timed
//!   apart);
//! - [`timer`]: a timerfd, so the open loop sends on time to the microsecond;
//! - [`report`]: the human summary and the `--json` object;
//! - [`hlog`]: `--hist-out` and `bench merge`: HdrHistogram interval logs;
//! - [`interval`]: `--interval`, a line per interval that adds up exactly;
//! - [`models`]: `bench --models`, every server model on the workloads of
//!   `BENCHMARKING.md`, shared with `cargo bench --bench models`;
//! - [`spawn`]: servers under test as pinned child processes;
//! - [`procstat`]: a server tree's CPU and PSS from `/proc`;
//! - [`chart`]: `--chart`, the `--models` table as an SVG picture.

pub(crate) mod chart;
pub(crate) mod hist;
pub(crate) mod hlog;
pub(crate) mod interval;
pub(crate) mod limits;
pub mod models;
pub(crate) mod plan;
pub(crate) mod procstat;
pub(crate) mod report;
pub(crate) mod spawn;
pub(crate) mod stream;
pub(crate) mod tally;
pub(crate) mod tcp;
pub(crate) mod text;
pub(crate) mod timer;
pub(crate) mod tls;
pub(crate) mod udp;

use std::io::{self, IsTerminal};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{
    duration_at_least, parse_count, parse_duration, parse_duration_nonzero, parse_positive,
    request_rate_between, size_between,
};
use crate::error::{Error, Result};
use crate::net::source::{self, Sources};
use crate::net::tls::{Connector, TlsOpt};
use crate::net::{
    MAX_TCP_SIZE, MAX_UDP_SIZE, connect_any, connect_one, resolve_target, target, udp_socket,
};
use crate::sys::stop;
use plan::Plan;
use tally::Tally;

/// Connections when `-c` is not given: enough to keep a multi-core server
/// busy, as tcpkali and wrk default to tens.
pub(crate) const DEFAULT_CONNS: usize = 50;
/// Message size when `-s` is not given: a small request, where the cost per
/// message (syscalls, wake-ups) dominates.
pub(crate) const DEFAULT_SIZE: usize = 64;
/// Length of the measured run when neither `-d` nor `-n` is given.
pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Wait per datagram with `--udp` when `--timeout` is not given.
pub(crate) const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait per TCP request when `--timeout` is not given: long, because a TCP
/// echo that comes late is still an echo, but finite so `-n` always ends.
pub(crate) const DEFAULT_TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// The lowest `--rate`: one request per 1,000 s; slower schedules would
/// overflow the timers and measure nothing in a run.
pub(crate) const MIN_RATE: f64 = 0.001;
/// Highest `--rate`: beyond this the schedule's granularity (1 ns) and the
/// loop's wake-ups, not the server, would set the pace.
pub(crate) const MAX_RATE: f64 = 100_000_000.0;
/// The end of `bench --help`: what the exit status says.
const EXIT_STATUS: &str = "Exit status: 0 every request was answered with the bytes sent; \
1 the check failed (a mismatch, an error, a request lost or never answered, none answered at \
all, or the run was interrupted); 2 a usage error (options that cannot work together, or a \
limit of this machine the command line exceeds).";
/// How often the progress line is redrawn, and the main thread's tick.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// Options of `netecho bench`.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = EXIT_STATUS
)]
pub(crate) struct Opt {
    /// The echo server, as HOST:PORT ([v6addr]:PORT for IPv6 literals).
    #[arg(value_name = "HOST:PORT", required_unless_present = "models", value_parser = parse_target)]
    pub(crate) target: Option<target::Target>,

    /// Measure netecho's own server models instead of HOST:PORT: each is
    /// started on a loopback port, pinned to CPU 0 with the load on CPU 1,
    /// and run through the workloads of --workloads; the figure is server
    /// CPU per request. LIST is a comma list of models (default: all but
    /// auto), and may name the baselines: floor and floor-2t (loopback
    /// ping-pong with no server), c-epoll, c-splice and c-uring (small C
    /// servers, built with the C compiler if one is installed), or
    /// `baselines` for all five.
    #[arg(long, value_name = "LIST", num_args = 0..=1, default_missing_value = "all",
          value_parser = models::parse_models,
          conflicts_with_all = ["target", "conns", "size", "requests", "threads", "rate",
                                "new_conn", "udp", "timeout", "json"])]
    pub(crate) models: Option<models::ModelList>,

    /// With --models: the workloads to run, by name or number (default:
    /// all, or the environment variable NETECHO_BENCH_WORKLOADS): small (1,
    /// 64 B on 50 connections), large (2, 64 KiB on 8), connect (3, a new
    /// connection per request, 4 at a time), idle (4, memory per idle
    /// connection), many (5, 64 B on 300), bulk (6, 1 MiB on 8), stream
    /// (7, full duplex on 8).
    #[arg(long, value_name = "LIST", value_parser = models::parse_workloads,
          requires = "models", conflicts_with = "target")]
    pub(crate) workloads: Option<models::WorkloadList>,

    /// With --models: connections of the idle workload (memory per idle
    /// connection); fewer if the descriptor limit is lower.
    #[arg(long, value_name = "N", default_value_t = models::IDLE_CONNS, requires = "models",
          conflicts_with = "target",
          value_parser = parse_positive, allow_negative_numbers = true)]
    pub(crate) idle_conns: usize,

    /// With --models: also draw the table as an SVG chart in FILE.
    // `conflicts_with` as well: clap lets a `requires` go unmet when the
    // required flag conflicts with one given (--models with HOST:PORT).
    #[arg(
        long,
        value_name = "FILE.svg",
        requires = "models",
        conflicts_with = "target"
    )]
    pub(crate) chart: Option<PathBuf>,

    /// Connections (or UDP sockets), each with one request in flight. Checked
    /// before the run against the descriptor limit (ulimit -n), the local
    /// ports to one server address and memory.
    #[arg(short = 'c', long = "connections", value_name = "CONNS", default_value_t = DEFAULT_CONNS,
          value_parser = parse_positive, allow_negative_numbers = true)]
    pub(crate) conns: usize,

    /// Bytes per message: 64, 1k (1024), 64KiB, 1MiB; at most 16MiB over
    /// TCP, 65507 over UDP.
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value_t = DEFAULT_SIZE,
          value_parser = size_between(1, MAX_TCP_SIZE, "the largest message"),
          allow_negative_numbers = true)]
    pub(crate) size: usize,

    /// Measure for this long after the warm-up: seconds, or 500ms, 10s,
    /// 1m (default 10s; with --models, 3s per workload). Requests still out
    /// at the end get up to 1s more (never more than --timeout) for their
    /// echo; any still unanswered then fails the run.
    #[arg(short = 'd', long = "duration", value_name = "DURATION", value_parser = parse_duration_nonzero,
          allow_negative_numbers = true, conflicts_with = "requests")]
    pub(crate) duration: Option<Duration>,

    /// Measure this many requests after the warm-up, then stop.
    #[arg(short = 'n', long = "requests", value_name = "REQUESTS", value_parser = parse_count,
          allow_negative_numbers = true)]
    pub(crate) requests: Option<u64>,

    /// Run this long before measuring; its requests are not recorded nor
    /// shown in the progress line.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration,
          allow_negative_numbers = true)]
    pub(crate) warmup: Duration,

    /// Generator threads, each with an epoll loop (default: one per core;
    /// never more than connections, at most 1024).
    #[arg(long, value_name = "T", value_parser = parse_positive, allow_negative_numbers = true)]
    pub(crate) threads: Option<usize>,

    /// Open loop: RATE requests per second in total (1000, 0.5, 20k,
    /// 20k/s), spread evenly over the connections; latency counts from when
    /// each request was due, so a stalled server shows as latency. A
    /// request whose connection is still waiting for an earlier echo is
    /// sent late; the summary says if the rate was not held.
    #[arg(long, value_name = "RATE", value_parser = request_rate_between(MIN_RATE, MAX_RATE),
          allow_negative_numbers = true)]
    pub(crate) rate: Option<f64>,

    /// A new connection per request: connect, one message, close.
    #[arg(long = "new-conn")]
    pub(crate) new_conn: bool,

    /// UDP datagrams instead of a TCP stream.
    #[arg(long, conflicts_with = "new_conn")]
    pub(crate) udp: bool,

    /// Full duplex: each connection writes continuously while it reads its
    /// echo, every byte checked, for the warm-up and -d; prints MiB/s.
    #[arg(long, conflicts_with_all = ["models", "new_conn", "udp", "requests", "rate", "hist_out", "size", "tls", "hold", "interval"])]
    pub(crate) stream: bool,

    /// How long a request may wait for its echo before it counts as lost
    /// (UDP) or as an error (TCP). Default: 1s for UDP, 10s for TCP.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_nonzero, allow_negative_numbers = true)]
    pub(crate) timeout: Option<Duration>,

    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration_nonzero,
          allow_negative_numbers = true)]
    pub(crate) connect_timeout: Duration,

    /// Print one JSON object on stdout instead of the summary, whatever the
    /// outcome: a run that could not start has zero figures and an "error";
    /// one stopped by Ctrl-C or SIGTERM has "interrupted": true.
    #[arg(long)]
    pub(crate) json: bool,

    /// Also write the latency histogram to FILE as an HdrHistogram interval
    /// log (compressed V2, base64), which `bench merge` combines exactly
    /// with other runs' and HdrHistogram's own tools read.
    #[arg(long, value_name = "FILE", conflicts_with = "models")]
    pub(crate) hist_out: Option<PathBuf>,

    /// Also print a line per INTERVAL after the warm-up (requests,
    /// req/s, p50/p99/max of that interval); with --json, one object per
    /// line, "type":"interval" each and "type":"summary" last. The
    /// intervals' requests add up to the summary's.
    #[arg(long, value_name = "INTERVAL", value_parser = duration_at_least(interval::MIN_INTERVAL),
          conflicts_with = "models")]
    pub(crate) interval: Option<Duration>,

    /// Connect from these local addresses, round robin: a range
    /// (127.0.0.2-127.0.0.20), a block (127.0.0.0/16), one address, or a
    /// comma list; IPv4 or IPv6. Each address has its own 64k ports, so one
    /// machine can hold more connections to one server port; with
    /// --new-conn each new connection takes the next address, so the
    /// TIME_WAITs spread over them too.
    #[arg(long, value_name = "ADDRS", value_parser = source::parse,
          conflicts_with_all = ["models", "udp"])]
    pub(crate) source_addrs: Option<Sources>,

    /// Each connection echoes once, then stays open and idle until -d
    /// ends: many idle connections, for memory per connection (C1M). No
    /// warm-up; the open rate is printed on stderr. A connection whose one
    /// echo never came fails the run.
    #[arg(long, conflicts_with_all = ["models", "requests", "rate", "new_conn", "udp"])]
    pub(crate) hold: bool,

    /// Use IPv4 addresses of HOST only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub(crate) ipv4: bool,

    /// Use IPv6 addresses of HOST only.
    #[arg(short = '6', long = "ipv6")]
    pub(crate) ipv6: bool,

    #[command(flatten)]
    pub(crate) tls: TlsOpt,

    /// With --tls: a new connection per request (as --new-conn) that
    /// resumes the TLS session of an earlier one (rustls' ticket cache),
    /// so the handshakes measured are resumed ones.
    #[arg(long, requires = "tls", conflicts_with = "hold")]
    pub(crate) tls_resume: bool,

    #[command(subcommand)]
    pub(crate) command: Option<BenchCommand>,
}

/// What `netecho bench` can do besides loading a server.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Combine `--hist-out` logs of many runs and machines exactly
    /// (histograms added, percentiles recomputed) into one summary.
    Merge(hlog::MergeOpt),
}

/// Reads a `HOST:PORT` target as the command line is read (the name is
/// resolved at connect time), so that `[::1]` without a port is a usage
/// error naming what is missing; the run uses what was read, not the text.
fn parse_target(s: &str) -> std::result::Result<target::Target, String> {
    target::parse(s, None)
}

/// Runs `netecho bench`.
pub(crate) fn run(opt: Opt) -> Result<()> {
    if let Some(BenchCommand::Merge(merge)) = &opt.command {
        return hlog::merge(merge);
    }
    if let Some(list) = &opt.models {
        // `--tls` adds each model's TLS row; the other TLS flags are about
        // a server of the user's, which --models does not measure.
        if opt.tls.tls_ca.is_some() || opt.tls.insecure || opt.tls.sni.is_some() || opt.tls_resume {
            return Err(Error::Usage(
                "--models takes --tls alone (its servers' certificates are its own)".into(),
            ));
        }
        let options = models::Options {
            duration: opt.duration,
            warmup: opt.warmup,
            idle_conns: opt.idle_conns,
            tls: opt.tls.tls,
            workloads: opt.workloads.as_ref(),
            chart: opt.chart.as_deref(),
        };
        return models::run(&options, list);
    }
    let shape = shape_of(&opt);
    let done = match measure(&opt, &shape) {
        Ok(done) => done,
        Err(e) => {
            // `--json` promises one object on every path: a run that could
            // not start says why in it, with zero figures.
            if opt.json && !e.is_broken_pipe() {
                let failed =
                    report::Summary::failed(&shape, Some(e.to_string()), stop::requested());
                print_summary(&opt, &failed)?;
            }
            return Err(e);
        }
    };
    let Some(summary) = done.summary else {
        return done.failure.map_or(Ok(()), Err);
    };
    print_summary(&opt, &summary)?;
    match done.failure {
        Some(e) => Err(e),
        None => summary.verdict(done.first_error),
    }
}

/// The summary on stdout: text, one JSON object, or the `--interval
/// --json` stream's last line.
fn print_summary(opt: &Opt, summary: &report::Summary) -> Result<()> {
    if opt.json && opt.interval.is_some() {
        report::print_summary_json(summary)
    } else if opt.json {
        summary.print_json()
    } else if summary.requests == 0 && summary.error.is_some() {
        // Nothing measured: the error line on stderr says it all.
        Ok(())
    } else {
        summary.print_human()
    }
}

/// What the command line asks for, before anything is connected.
fn shape_of(opt: &Opt) -> report::Shape {
    report::Shape {
        target: opt
            .target
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        proto: match (opt.udp, opt.tls.tls) {
            (true, _) => "udp",
            (false, true) => "tls",
            (false, false) => "tcp",
        },
        mode: if opt.stream {
            "stream"
        } else if opt.new_conn || opt.tls_resume {
            "new-conn"
        } else if opt.hold {
            "hold"
        } else if opt.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        connections: opt.conns,
        threads: threads_of(opt),
        size: opt.size,
        rate: opt.rate,
    }
}

/// Generator threads: `--threads`, or one per core, never more than
/// connections.
fn threads_of(opt: &Opt) -> usize {
    opt.threads
        .unwrap_or_else(crate::serve::default_workers)
        .min(opt.conns)
}

/// Checks the options against each other and against this machine, sets
/// up and runs the load, and draws its summary. `Err` if the run could not
/// start; a worker's failure midway comes back beside the summary of what
/// was measured, with the run's first error line.
fn measure(opt: &Opt, shape: &report::Shape) -> Result<Measured> {
    let Some(to) = &opt.target else {
        return Err(Error::Usage("bench needs a HOST:PORT, or --models".into()));
    };
    let target = to.to_string();
    if opt.tls.tls && opt.udp {
        return Err(Error::Usage("--tls is for TCP, not --udp".into()));
    }
    let new_conn = opt.new_conn || opt.tls_resume;
    let max_size = if opt.udp { MAX_UDP_SIZE } else { MAX_TCP_SIZE };
    if opt.size > max_size {
        return Err(Error::Usage(format!(
            "--size {} is above the largest {} message, {max_size} bytes",
            opt.size,
            if opt.udp { "UDP" } else { "TCP" }
        )));
    }
    if opt.stream && opt.conns > stream::MAX_CONNS {
        return Err(Error::Usage(format!(
            "--stream drives at most {} connections (two threads each)",
            stream::MAX_CONNS
        )));
    }
    let threads = threads_of(opt);
    // Before anything is opened or allocated: one line naming the limit,
    // not an abort in the allocator or EMFILE midway.
    limits::check(
        &limits::Ask {
            conns: opt.conns,
            size: if opt.stream {
                2 * stream::CHUNK
            } else {
                opt.size
            },
            threads: opt.threads.unwrap_or(threads),
            tls: opt.tls.tls,
            sources: opt.source_addrs.is_some(),
        },
        &limits::Room::of_this_machine(),
    )
    .map_err(Error::Usage)?;
    let connector = Connector::from_opt(&opt.tls, &target, opt.tls_resume)?;
    if let Some(path) = &opt.hist_out {
        // Unwritable is one line now, not after the whole run; an existing
        // file is kept as it is until the run has its histogram.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    stop::install().map_err(Error::io("installing signal handlers"))?;
    let addrs = resolve_target(to, target::Family::from_flags(opt.ipv4, opt.ipv6))?;
    let timeout = opt.timeout.unwrap_or(if opt.udp {
        DEFAULT_UDP_TIMEOUT
    } else {
        DEFAULT_TCP_TIMEOUT
    });

    // Connect before the clock starts, so that a refused or unreachable
    // server is one clear line and connection setup is not measured (except
    // with --new-conn, where it is the point).
    let addrs = match &opt.source_addrs {
        Some(src) => same_family(&target, &addrs, src)?,
        None => addrs,
    };
    let connecting = Instant::now();
    let (addr, mut streams) = if opt.udp {
        (check_udp(&target, &addrs, timeout)?, Vec::new())
    } else {
        let first = match &opt.source_addrs {
            Some(src) => connect_from(src, 0, &target, addrs[0], opt.connect_timeout)?,
            None => connect_any(&target, &addrs, opt.connect_timeout)?,
        };
        let addr = first
            .peer_addr()
            .map_err(Error::io("reading the server's address"))?;
        if new_conn {
            drop(first);
            (addr, Vec::new())
        } else {
            let mut streams = Vec::with_capacity(opt.conns);
            streams.push(first);
            for id in 1..opt.conns {
                if stop::requested() {
                    break;
                }
                streams.push(match &opt.source_addrs {
                    Some(src) => connect_from(src, id as u64, &target, addr, opt.connect_timeout)?,
                    None => connect_one(&target, addr, opt.connect_timeout)?,
                });
            }
            (addr, streams)
        }
    };
    if stop::requested() {
        // Ctrl-C while connecting: the workers see the flag and end at once,
        // and the (empty) summary is still printed.
        streams.clear();
    }
    for s in &streams {
        // Each message is written whole; nothing to gain from Nagle.
        let _ = s.set_nodelay(true);
    }
    if opt.stream {
        return run_stream(streams, opt, shape);
    }
    let tls = match connector {
        Some(c) => {
            let (sessions, setup) = tls::handshake_all(&c, &mut streams, opt.connect_timeout)?;
            Some(Arc::new(tls::Setup::new(c, sessions, setup)))
        }
        None => None,
    };
    if opt.hold {
        // With --tls a connection is open once its handshake is over.
        let secs = connecting.elapsed().as_secs_f64();
        eprintln!(
            "netecho: {} connections open in {secs:.3} s ({} per second)",
            text::thousands(streams.len() as u64),
            text::thousands((streams.len() as f64 / secs.max(1e-9)).round() as u64)
        );
    }

    let plan = Arc::new(
        Plan::new(plan::Settings {
            addr,
            conns: opt.conns,
            threads,
            size: opt.size,
            warmup: if opt.hold { Duration::ZERO } else { opt.warmup },
            duration: match opt.requests {
                Some(_) => None,
                None => Some(opt.duration.unwrap_or(DEFAULT_DURATION)),
            },
            budget: opt.requests,
            rate: opt.rate,
            new_conn,
            timeout,
            interval: opt.interval.map(|len| plan::Every {
                len,
                json: opt.json,
            }),
            hold: opt.hold,
        })
        .with_sources(if new_conn {
            opt.source_addrs.clone()
        } else {
            None
        }),
    );

    // Connection `id` goes to thread `id % threads`.
    let mut per_thread: Vec<Vec<(u64, Option<TcpStream>)>> =
        (0..threads).map(|_| Vec::new()).collect();
    let mut taken = streams.drain(..);
    for id in 0..opt.conns {
        per_thread[id % threads].push((id as u64, taken.next()));
    }
    drop(taken);

    let udp = opt.udp;
    let mut results: Vec<Result<Tally>> = Vec::with_capacity(threads);
    if threads == 1 && !io::stderr().is_terminal() && opt.interval.is_none() {
        // One worker and no progress line to draw: run it on this thread. A
        // process that never starts a second thread also spares every send
        // and recv glibc's cancellation bookkeeping.
        for (slot, conns) in per_thread.into_iter().enumerate() {
            results.push(work(udp, tls.as_deref(), &plan, slot, conns));
        }
    } else {
        let mut workers: Vec<JoinHandle<Result<Tally>>> = Vec::with_capacity(threads);
        for (slot, conns) in per_thread.into_iter().enumerate() {
            let plan = Arc::clone(&plan);
            let tls = tls.clone();
            let started = std::thread::Builder::new()
                .name(format!("bench-{slot}"))
                .spawn(move || work(udp, tls.as_deref(), &plan, slot, conns));
            match started {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // The ones started end at once and are joined below.
                    stop::request();
                    results.push(Err(Error::Io {
                        what: "starting a bench thread",
                        source: e,
                    }));
                    break;
                }
            }
        }
        watch_progress(&plan, &workers);
        for w in workers {
            results.push(w.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    what: "a bench thread",
                    source: io::Error::other("stopped unexpectedly"),
                })
            }));
        }
    }

    let mut total = Tally::new()?;
    let mut failure = None;
    for r in results {
        match r {
            Ok(mut t) => {
                if let (Some(board), Some(w)) = (&plan.intervals, t.window.take()) {
                    board.ended(w);
                }
                total.merge(t)
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    plan.flush_log(None);
    let mut summary = report::Summary::new(&plan, shape, &total, None, stop::requested());
    summary.tls = tls
        .as_deref()
        .map(|setup| tls::figures(setup, &total, new_conn, summary.duration_s));
    summary.error = failure.as_ref().map(ToString::to_string);
    if let Some(path) = &opt.hist_out {
        let since = Instant::now().saturating_duration_since(plan.warmup_end);
        let start = SystemTime::now()
            .checked_sub(since)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let about = format!(
            "{} {} {} connections {} B",
            summary.target, summary.proto, summary.connections, summary.size
        );
        let length = Duration::from_secs_f64(summary.duration_s);
        hlog::write(path, &total.hist, start, length, &about)?;
    }
    if let Some(board) = &plan.intervals {
        board.print_rest(Duration::from_secs_f64(summary.duration_s))?;
    }
    Ok(Measured {
        summary: Some(summary),
        failure,
        first_error: plan.first_error(),
    })
}

/// One worker's run over its connections: UDP, TLS or plain TCP.
fn work(
    udp: bool,
    tls: Option<&tls::Setup>,
    plan: &Plan,
    slot: usize,
    conns: Vec<(u64, Option<TcpStream>)>,
) -> Result<Tally> {
    if udp {
        let ids = conns.into_iter().map(|(id, _)| id).collect();
        udp::run(plan, slot, ids)
    } else if let Some(setup) = tls {
        tls::run(setup, plan, slot, conns)
    } else {
        tcp::run(plan, slot, conns)
    }
}

/// What [`measure`] hands back for [`run`] to print and judge.
struct Measured {
    /// The summary to print; `None` if it is printed already (`--stream`).
    summary: Option<report::Summary>,
    /// Why the run failed midway, if it did.
    failure: Option<Error>,
    /// The run's first error line, for the verdict.
    first_error: Option<String>,
}

/// `--stream`: drives the connections with [`stream::run`] and prints the
/// rate; any byte that came back wrong is an error, and so is an
/// interrupted run.
fn run_stream(streams: Vec<TcpStream>, opt: &Opt, shape: &report::Shape) -> Result<Measured> {
    let window = opt.duration.unwrap_or(DEFAULT_DURATION);
    let conns = streams.len();
    let out = stream::run(streams, opt.warmup, window)?;
    let interrupted = stop::requested();
    let target = &shape.target;
    if opt.json {
        text::print_json(&serde_json::json!({
            "target": target,
            "mode": "stream",
            "connections": conns,
            "duration_s": out.secs,
            "bytes": out.bytes,
            "mib_per_s": out.mib_per_s(),
            "mismatches": out.mismatches,
            "interrupted": interrupted,
            "error": null,
        }))?;
    } else {
        let mut text = format!(
            "stream {target}: {conns} connections, {} MiB echoed and checked in {:.1} s: {:.1} MiB/s, {} mismatches\n",
            out.bytes / (1024 * 1024),
            out.secs,
            out.mib_per_s(),
            out.mismatches
        );
        if interrupted {
            text += "  stopped   interrupted by a signal: the figures cover only the time it ran\n";
        }
        text::print_stdout(&text)?;
    }
    let failure = if out.mismatches > 0 {
        Some(Error::BenchFailed(format!(
            "{} connections of {conns} did not get their stream back whole (first: {})",
            out.mismatches,
            out.first_failure.as_deref().unwrap_or("no detail")
        )))
    } else if interrupted {
        Some(Error::BenchFailed("interrupted by a signal".into()))
    } else {
        None
    };
    Ok(Measured {
        summary: None,
        failure,
        first_error: None,
    })
}

/// Shows a live progress line on a terminal (none otherwise) and prints the
/// workers' error lines as they come, until every worker has finished.
fn watch_progress(plan: &Plan, workers: &[JoinHandle<Result<Tally>>]) {
    let bar = io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(PROGRESS_TICK);
        bar
    });
    let mut last = (Instant::now(), 0u64);
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(PROGRESS_TICK);
        plan.flush_log(bar.as_ref());
        if let Some(board) = &plan.intervals {
            // stdout closed: the summary's own write reports it.
            let _ = board.print_ready(bar.as_ref());
        }
        if let Some(bar) = &bar {
            bar.set_message(progress_line(plan, Instant::now(), &mut last));
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// The progress line at `now`. The warm-up shows only its countdown; the
/// figures count recorded requests alone, from the end of the warm-up, as
/// the summary does. `last` is the previous (time, requests), for the rate.
fn progress_line(plan: &Plan, now: Instant, last: &mut (Instant, u64)) -> String {
    if now < plan.warmup_end {
        return format!(
            "warm-up, measuring in {:.1} s",
            plan.warmup_end.duration_since(now).as_secs_f64()
        );
    }
    let done = plan.completed();
    let since = now
        .duration_since(last.0.max(plan.warmup_end))
        .as_secs_f64();
    let rps = if since > 0.0 {
        done.saturating_sub(last.1) as f64 / since
    } else {
        0.0
    };
    *last = (now, done);
    let phase = if plan.ended(now) { "  ending" } else { "" };
    format!(
        "{:5.1} s  {} req/s  {} requests  {} errors{phase}",
        now.duration_since(plan.warmup_end).as_secs_f64(),
        text::thousands(rps.round() as u64),
        text::thousands(done),
        text::thousands(plan.errors_so_far())
    )
}

/// Probes a UDP target once: a port with nothing bound answers with an ICMP
/// error, which a connected socket reports as "refused". Silence is not an
/// error here: a lossy path is what `--udp` measures.
fn check_udp(target: &str, addrs: &[SocketAddr], timeout: Duration) -> Result<SocketAddr> {
    let addr = addrs[0];
    let sock = udp_socket(addr).map_err(Error::io("opening a UDP socket"))?;
    let probe = [0u8; 1];
    let _ = sock.set_read_timeout(Some(timeout.min(Duration::from_millis(200))));
    let mut buf = [0u8; 16];
    match sock.send(&probe).and_then(|_| sock.recv(&mut buf)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Err(Error::Refused(target.to_string()))
        }
        _ => Ok(addr),
    }
}

/// The server's addresses of the source addresses' family: a connection
/// from an IPv4 address cannot reach an IPv6 server.
fn same_family(target: &str, addrs: &[SocketAddr], src: &Sources) -> Result<Vec<SocketAddr>> {
    let kept: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| a.is_ipv6() == src.is_ipv6())
        .collect();
    if kept.is_empty() {
        return Err(Error::Usage(format!(
            "--source-addrs {src} are {} but {target} has no {} address",
            if src.is_ipv6() { "IPv6" } else { "IPv4" },
            if src.is_ipv6() { "IPv6" } else { "IPv4" },
        )));
    }
    Ok(kept)
}

/// Connection `id` from its `--source-addrs` address, its failure in the
/// user's words (a bind failure names the address).
fn connect_from(
    src: &Sources,
    id: u64,
    target: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    src.connect(id, addr, timeout)
        .map_err(|e| crate::net::connect_error(target, timeout, e))
}
