//! `netecho bench --models`: every server model measured on the workloads of
//! `BENCHMARKING.md`, one after the other, on this machine, in one command.
//!
//! Each (server, workload) cell starts its own server on a free loopback
//! port, pinned to the first CPU this process may use, and drives it from
//! the second with the same TCP worker as `netecho bench HOST:PORT`
//! ([`super::tcp`]). The figure that counts is the server's CPU per request,
//! read from `/proc` ([`super::procstat`]), forked children included: it
//! does not depend on whether the load generator keeps up.
//!
//! `cargo bench --bench models` runs the same cells through [`measure`] and
//! adds its baselines (the kernel floor, a C epoll server) and ratios to them.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use clap::ValueEnum;

use super::plan::{self, Plan, Tally};
use super::report::thousands;
use super::{Opt, chart, pattern, procstat, spawn, stop, tcp};
use crate::error::{Error, Result};
use crate::serve::Model;

/// Models run when `--models` is given no list: every model a user can
/// pick except `auto`, which is one of them under another name.
pub const DEFAULT_MODELS: &[&str] = &[
    "iterative",
    "fork",
    "prefork",
    "thread",
    "prethread",
    "epoll",
    "tokio",
    "uring",
];
/// Measured seconds per workload when `-d` is not given: 300 clock ticks of
/// a busy server, so tick rounding stays under half a percent.
pub const DEFAULT_SECS: Duration = Duration::from_secs(3);

/// Workload 1's message: one small request, where syscalls dominate.
pub const SMALL_MSG: usize = 64;
/// Workload 2's message: where copying dominates.
pub const LARGE_MSG: usize = 64 * 1024;
/// Workload 1's connections, one message in flight on each.
pub const SMALL_CONNS: usize = 50;
/// Workload 2's connections.
pub const LARGE_CONNS: usize = 8;
/// Workload 3's connections open at once.
pub const CONNECT_PARALLEL: usize = 4;
/// Workload 4's idle connections (fewer if the descriptor limit is lower).
pub const IDLE_CONNS: usize = 10_000;
/// Descriptors left for everything but workload 4's connections (listeners,
/// pipes, epoll) in this process and in the server.
pub const FD_MARGIN: u64 = 100;
/// Connections workload 4 opens before it reads their echoes: well under
/// the listen backlog (1024), so the kernel never refuses one for a full
/// queue, and enough to keep the server busy between two of our reads.
const IDLE_BATCH: usize = 64;
/// Workload 4 gives up opening its connections after this long.
const IDLE_OPEN_LIMIT: Duration = Duration::from_secs(60);
/// Pause after the last idle connection is open and before PSS is read, for
/// anything the server does after echoing (a thread parking, a child settling).
pub const IDLE_SETTLE: Duration = Duration::from_millis(300);
/// Pause after workload 4's warm-up connection closes, before PSS is read.
const WARM_SETTLE: Duration = Duration::from_millis(100);
/// No echo for this long means the server is stuck: the cell fails.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// Connect timeout of the load's blocking connects (loopback answers in µs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the main thread looks at the load worker while it waits for
/// the measured window to open or close.
const WAIT_TICK: Duration = Duration::from_millis(20);

/// The four workloads of `BENCHMARKING.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// 64 B messages, 50 connections, one message in flight on each.
    Small,
    /// 64 KiB messages, 8 connections.
    Large,
    /// A new connection per 64 B request, 4 at a time.
    Connect,
    /// Connections used once, then held idle: memory per connection.
    Idle,
}

impl Workload {
    /// All of them, in table order.
    pub const ALL: [Workload; 4] = [
        Workload::Small,
        Workload::Large,
        Workload::Connect,
        Workload::Idle,
    ];

    /// The number `BENCHMARKING.md` gives it.
    pub fn number(self) -> usize {
        match self {
            Workload::Small => 1,
            Workload::Large => 2,
            Workload::Connect => 3,
            Workload::Idle => 4,
        }
    }

    /// Its one-word name, in tables and in `NETECHO_BENCH_WORKLOADS`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Large => "large",
            Workload::Connect => "connect",
            Workload::Idle => "idle",
        }
    }

    /// Accepts the number or the one-word name.
    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| s.trim() == w.name() || s.trim() == w.number().to_string())
    }

    /// Connections the server must serve at once.
    pub fn conns(self, idle_conns: usize) -> usize {
        match self {
            Workload::Small => SMALL_CONNS,
            Workload::Large => LARGE_CONNS,
            Workload::Connect => CONNECT_PARALLEL,
            Workload::Idle => idle_conns,
        }
    }

    /// What it does, in a few words.
    pub fn describe(self, idle_conns: usize) -> String {
        match self {
            Workload::Small => {
                format!("{SMALL_MSG} B messages, {SMALL_CONNS} connections, one in flight each")
            }
            Workload::Large => format!(
                "{} KiB messages, {LARGE_CONNS} connections, one in flight each",
                LARGE_MSG / 1024
            ),
            Workload::Connect => format!(
                "a new connection per request ({SMALL_MSG} B), {CONNECT_PARALLEL} at a time"
            ),
            Workload::Idle => format!(
                "{} connections used once ({SMALL_MSG} B round trip), then idle",
                thousands(idle_conns as u64)
            ),
        }
    }
}

/// What one row starts: a `netecho serve` model, or another echo server
/// that prints `listening tcp ADDR` the same way (the C baseline).
#[derive(Debug, Clone)]
pub enum Server {
    Model {
        /// The `netecho` binary to run.
        exe: PathBuf,
        /// A `--model` name.
        model: String,
    },
    Other {
        /// Its name in the tables.
        label: String,
        program: PathBuf,
    },
}

impl Server {
    /// Its name in the tables.
    pub fn label(&self) -> &str {
        match self {
            Server::Model { model, .. } => model,
            Server::Other { label, .. } => label,
        }
    }
}

/// How every cell is measured.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Measured window per throughput workload.
    pub window: Duration,
    /// Load before the window opens: lazy setup (thread spawns, page
    /// faults, the first forks) is done before counting starts.
    pub warmup: Duration,
    /// Workload 4's connections.
    pub idle_conns: usize,
    /// Where servers run; `None` leaves them to the scheduler (one CPU).
    pub server_cpu: Option<usize>,
    /// `/proc` CPU times are in these units per second.
    pub clk_tck: f64,
}

/// Figures of a throughput workload (1–3).
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Requests completed per second in the window.
    pub req_s: f64,
    /// Echoed megabytes (10^6, one direction) per second.
    pub mb_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Server CPU per request, microseconds.
    pub cpu_us: f64,
}

/// Figures of workload 4.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Connections held open when PSS was read.
    pub conns: f64,
    /// Seconds to open them all (each with one round trip).
    pub open_s: f64,
    /// Processes summed: the server and its children.
    pub procs: f64,
    pub pss_before_kib: f64,
    pub pss_after_kib: f64,
    /// (after − before) / conns.
    pub kib_per_conn: f64,
    /// Server CPU per connection opened and used once, microseconds.
    pub cpu_us_per_conn: f64,
}

/// What one cell measured.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Traffic(Traffic),
    Memory(Memory),
}

/// Why a cell has no figures.
#[derive(Debug, Clone)]
pub enum Skip {
    /// The model cannot serve the workload by design.
    NotApplicable(String),
    /// It was run and failed.
    Failed(String),
}

/// The extra `serve` flags a model gets for a workload and the note that
/// says so, or why the workload does not apply to it.
pub fn plan_flags(
    server: &Server,
    w: Workload,
    idle_conns: usize,
) -> std::result::Result<(Vec<String>, String), String> {
    let Server::Model { model, .. } = server else {
        return Ok((Vec::new(), String::new()));
    };
    let conns = w.conns(idle_conns);
    let one = vec!["--workers".to_string(), "1".to_string()];
    match (model.as_str(), w) {
        ("iterative", Workload::Small | Workload::Large) => Err(format!(
            "serves one client at a time; the workload keeps {conns} connections busy"
        )),
        ("iterative" | "prefork" | "prethread", Workload::Idle) => Err(format!(
            "serves at most --workers clients at once; {conns} idle ones would need {conns} workers"
        )),
        // One worker per connection, still all on the server's one CPU.
        ("prefork" | "prethread", Workload::Small | Workload::Large) => Ok((
            vec!["--workers".into(), conns.to_string()],
            format!("--workers {conns}"),
        )),
        (_, Workload::Idle) => {
            let mut args = one;
            args.extend(["--max-conns".to_string(), conns.to_string()]);
            Ok((args, format!("--max-conns {conns}")))
        }
        _ => Ok((one, String::new())),
    }
}

/// Measures one cell: starts the server, drives one workload, stops the
/// server. On success, the second value notes the flags that differ from
/// the usual ones and an unclean exit, if any.
pub fn measure(
    server: &Server,
    w: Workload,
    setup: &Setup,
) -> std::result::Result<(Outcome, String), Skip> {
    let (extra, note) = plan_flags(server, w, setup.idle_conns).map_err(Skip::NotApplicable)?;
    let (prog, args): (&Path, Vec<String>) = match server {
        Server::Model { exe, model } => {
            let mut args: Vec<String> = [
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--model",
                model,
                "--idle-timeout",
                "0",
                "--drain-timeout",
                "1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra);
            (exe, args)
        }
        Server::Other { program, .. } => (program, Vec::new()),
    };
    let running = spawn::start(prog, &args, setup.server_cpu).map_err(fail)?;
    let (pid, addr) = (running.pid, running.addr);
    let outcome = match w {
        Workload::Small => traffic(addr, pid, SMALL_CONNS, SMALL_MSG, false, setup),
        Workload::Large => traffic(addr, pid, LARGE_CONNS, LARGE_MSG, false, setup),
        Workload::Connect => traffic(addr, pid, CONNECT_PARALLEL, SMALL_MSG, true, setup),
        Workload::Idle => idle(addr, pid, setup).map(Outcome::Memory),
    };
    let tail = running.stderr_tail();
    let exit_note = spawn::stop(running);
    let outcome = outcome.map_err(|e| {
        Skip::Failed(match &exit_note {
            Some(n) => format!("{e} ({n})"),
            None => format!("{e}{tail}"),
        })
    })?;
    let notes: Vec<String> = [Some(note), exit_note].into_iter().flatten().collect();
    let notes: Vec<&str> = notes
        .iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .collect();
    Ok((outcome, notes.join("; ")))
}

/// An error as a failed cell.
fn fail(e: Error) -> Skip {
    Skip::Failed(e.to_string())
}

/// Workloads 1–3 through `bench`'s own TCP worker, on one thread: `conns`
/// connections of `size`-byte messages (`new_conn`: a connection per
/// request). The CPU of process `server` (forked children included) is read
/// when the window opens and closes. Public for the benchmark's peer rows
/// (socat, ncat, xinetd), which must be measured the same way.
pub fn traffic(
    addr: SocketAddr,
    server: i32,
    conns: usize,
    size: usize,
    new_conn: bool,
    setup: &Setup,
) -> Result<Outcome> {
    let mut list = Vec::with_capacity(conns);
    for id in 0..conns {
        let sock = if new_conn {
            None
        } else {
            let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .map_err(|e| Error::Measure(format!("cannot connect to the server: {e}")))?;
            // Each message is written whole; nothing to gain from Nagle.
            let _ = s.set_nodelay(true);
            Some(s)
        };
        list.push((id as u64, sock));
    }
    let plan = Plan::new(plan::Settings {
        addr,
        conns,
        threads: 1,
        size,
        warmup: setup.warmup,
        duration: Some(setup.window),
        budget: None,
        rate: None,
        new_conn,
        timeout: STALL_LIMIT,
    });
    let (open, close, tally) = thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("models-load".into())
            .spawn_scoped(scope, || tcp::run(&plan, 0, list))
            .map_err(Error::io("starting the load thread"))?;
        let open = sample_at(plan.warmup_end, &worker, server, setup.clk_tck);
        let close = match (&open, plan.end) {
            (Ok(_), Some(end)) => sample_at(end, &worker, server, setup.clk_tck),
            (Ok(_), None) => Err(Error::Measure("the window has no end".into())),
            (Err(_), _) => Err(Error::Measure("the window never opened".into())),
        };
        let tally = worker.join().unwrap_or_else(|_| {
            Err(Error::Measure(
                "the load thread stopped unexpectedly".into(),
            ))
        });
        Ok::<_, Error>((open, close, tally))
    })?;
    let tally: Tally = tally?;
    if tally.errors > 0 {
        return Err(Error::Measure(format!(
            "{} failed requests; first: {}",
            tally.errors,
            plan.first_error().unwrap_or_default()
        )));
    }
    if stop::requested() {
        return Err(Error::Measure("interrupted".into()));
    }
    let (t0, cpu0) = open?;
    let (t1, cpu1) = close?;
    let requests = tally.hist.len();
    if requests == 0 {
        return Err(Error::Measure("no request completed in the window".into()));
    }
    let secs = t1.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    let us = |q: f64| tally.hist.value_at_quantile(q) as f64 / 1e3;
    Ok(Outcome::Traffic(Traffic {
        req_s: requests as f64 / secs,
        mb_s: requests as f64 * size as f64 / secs / 1e6,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        cpu_us: cpu1.saturating_sub(cpu0) as f64 / 1e3 / requests as f64,
    }))
}

/// Waits until `at` (or until the worker has ended early), then reads the
/// server's CPU: one edge of the measured window.
fn sample_at(
    at: Instant,
    worker: &thread::ScopedJoinHandle<'_, Result<Tally>>,
    server: i32,
    clk_tck: f64,
) -> Result<(Instant, u64)> {
    loop {
        let now = Instant::now();
        if now >= at {
            break;
        }
        if worker.is_finished() {
            return Err(Error::Measure("the load stopped before the window".into()));
        }
        thread::sleep(at.duration_since(now).min(WAIT_TICK));
    }
    let cpu = procstat::tree_cpu_ns(server, clk_tck)?;
    Ok((Instant::now(), cpu))
}

/// Workload 4: opens `idle_conns` connections, one checked round trip on
/// each, holds them all, and reads the server's PSS before and after.
fn idle(addr: SocketAddr, server: i32, setup: &Setup) -> Result<Memory> {
    let conns = setup.idle_conns;
    // One connection first, so one-time setup (a runtime, a first thread
    // stack, lazily mapped code) is in the "before" figure, not per connection.
    drop(open_batch(addr, 0, 1)?);
    thread::sleep(WARM_SETTLE);
    let (pss_before, _) = procstat::tree_pss_kib(server)?;
    let cpu_before = procstat::tree_cpu_ns(server, setup.clk_tck)?;
    let mut held: Vec<TcpStream> = Vec::with_capacity(conns);
    let t0 = Instant::now();
    while held.len() < conns {
        if stop::requested() {
            return Err(Error::Measure("interrupted".into()));
        }
        if t0.elapsed() > IDLE_OPEN_LIMIT {
            return Err(Error::Measure(format!(
                "only {} of {conns} connections open after {} s",
                held.len(),
                IDLE_OPEN_LIMIT.as_secs()
            )));
        }
        let n = IDLE_BATCH.min(conns - held.len());
        held.extend(open_batch(addr, held.len() as u64 + 1, n)?);
    }
    let open_s = t0.elapsed().as_secs_f64();
    thread::sleep(IDLE_SETTLE);
    let cpu_after = procstat::tree_cpu_ns(server, setup.clk_tck)?;
    let (pss_after, procs) = procstat::tree_pss_kib(server)?;
    let n = held.len().max(1) as f64;
    drop(held);
    Ok(Memory {
        conns: conns as f64,
        open_s,
        procs: procs as f64,
        pss_before_kib: pss_before as f64,
        pss_after_kib: pss_after as f64,
        kib_per_conn: (pss_after as f64 - pss_before as f64) / n,
        cpu_us_per_conn: cpu_after.saturating_sub(cpu_before) as f64 / 1e3 / n,
    })
}

/// Opens `n` connections (ids from `first`), writes one 64 B message on
/// each, then reads every echo back and checks it. All the connects and
/// writes go out before the first read, so the server has `n` clients to
/// serve at once rather than one round trip at a time.
fn open_batch(addr: SocketAddr, first: u64, n: usize) -> Result<Vec<TcpStream>> {
    let broken = |what: &str, id: u64, e: io::Error| {
        Error::Measure(format!("idle connection {id}: {what}: {e}"))
    };
    let mut socks = Vec::with_capacity(n);
    let mut msg = [0u8; SMALL_MSG];
    for id in first..first + n as u64 {
        let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| broken("connect", id, e))?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(STALL_LIMIT))
            .and_then(|()| s.set_write_timeout(Some(STALL_LIMIT)))
            .map_err(|e| broken("socket timeout", id, e))?;
        pattern::fill(id, 0, &mut msg);
        s.write_all(&msg).map_err(|e| broken("write", id, e))?;
        socks.push(s);
    }
    let mut back = [0u8; SMALL_MSG];
    for (id, s) in (first..).zip(socks.iter_mut()) {
        pattern::fill(id, 0, &mut msg);
        s.read_exact(&mut back).map_err(|e| broken("echo", id, e))?;
        if let Some(at) = pattern::first_difference(&msg, &back) {
            return Err(Error::Measure(format!(
                "idle connection {id}: echo mismatch at byte {at}"
            )));
        }
    }
    Ok(socks)
}

/// Workload 4's connections under a descriptor limit: this process and the
/// server each hold one per connection, plus [`FD_MARGIN`] of their own.
pub fn idle_conns_within(wanted: usize, nofile_soft: u64) -> usize {
    let room = nofile_soft.saturating_sub(FD_MARGIN);
    wanted.min(usize::try_from(room).unwrap_or(wanted)).max(1)
}

/// The list `--models` takes: model names separated by commas, or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelList(pub Vec<String>);

/// Parses `--models`: `serve --model` names separated by commas, `all` for
/// [`DEFAULT_MODELS`]; an unknown name is refused with the known ones.
pub fn parse_models(s: &str) -> std::result::Result<ModelList, String> {
    let mut out: Vec<String> = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            out.extend(DEFAULT_MODELS.iter().map(|m| m.to_string()));
        } else if Model::from_str(name, false).is_ok() {
            out.push(name.to_string());
        } else {
            let known: Vec<String> = Model::value_variants()
                .iter()
                .filter_map(|m| m.to_possible_value().map(|v| v.get_name().to_string()))
                .collect();
            return Err(format!(
                "unknown model '{name}'; known: all, {}",
                known.join(", ")
            ));
        }
    }
    if out.is_empty() {
        return Err("no model named; e.g. --models thread,epoll".into());
    }
    let mut seen = Vec::with_capacity(out.len());
    out.retain(|m| {
        let first = !seen.contains(m);
        seen.push(m.clone());
        first
    });
    Ok(ModelList(out))
}

/// One measured (or skipped) cell of the `--models` table.
pub struct Row {
    pub model: String,
    pub workload: Workload,
    pub cell: std::result::Result<(Outcome, String), Skip>,
}

/// Runs `netecho bench --models`: every cell, one table row as each ends,
/// then the chart if `--chart` asked for one.
pub fn run(opt: &Opt, models: &ModelList) -> Result<()> {
    let (soft, _) = super::raise_nofile_limit();
    stop::install().map_err(Error::io("installing signal handlers"))?;
    let cpus = spawn::allowed_cpus()?;
    // Two CPUs or more: the server gets the first, the load the second, so
    // `--workers 1` compares one core against one core. With one, both share
    // it and the figures still compare the models with each other.
    let (server_cpu, load_cpu) = match (cpus.first(), cpus.get(1)) {
        (Some(&s), Some(&l)) => (Some(s), Some(l)),
        _ => (None, None),
    };
    if let Some(cpu) = load_cpu {
        spawn::pin_current_thread(cpu)?;
    }
    let exe = std::env::current_exe().map_err(Error::io("finding the netecho binary"))?;
    let setup = Setup {
        window: opt.duration.unwrap_or(DEFAULT_SECS),
        warmup: opt.warmup,
        idle_conns: idle_conns_within(opt.idle_conns, soft),
        server_cpu,
        clk_tck: procstat::clock_ticks(),
    };
    let mut out = io::stdout().lock();
    let header = header_lines(&setup, &exe, load_cpu, opt.idle_conns);
    print_lines(&mut out, &header)?;
    let mut rows = Vec::new();
    'models: for model in &models.0 {
        let server = Server::Model {
            exe: exe.clone(),
            model: model.clone(),
        };
        for w in Workload::ALL {
            if stop::requested() {
                break 'models;
            }
            let row = Row {
                model: model.clone(),
                workload: w,
                cell: measure(&server, w, &setup),
            };
            print_lines(&mut out, &[row_line(&row).trim_end().to_string()])?;
            rows.push(row);
        }
    }
    print_lines(&mut out, &[legend()])?;
    if stop::requested() {
        return Err(Error::BenchFailed(
            "interrupted before every model was measured".into(),
        ));
    }
    if let Some(path) = &opt.chart {
        let subtitle = format!(
            "netecho bench --models, {:.1} s per workload, server {}",
            setup.window.as_secs_f64(),
            match (server_cpu, load_cpu) {
                (Some(s), Some(l)) => format!("on CPU {s}, load on CPU {l}"),
                _ => "and load sharing one CPU".into(),
            }
        );
        chart::write_svg(path, &subtitle, &chart_panels(&rows, setup.idle_conns))?;
        print_lines(&mut out, &[format!("chart: {}", path.display())])?;
    }
    Ok(())
}

/// Width of the model column.
const MODEL_COL: usize = 10;

/// The lines above the table: how it was measured, and the column heads.
fn header_lines(setup: &Setup, exe: &Path, load_cpu: Option<usize>, asked: usize) -> Vec<String> {
    let mut lines = vec![format!(
        "netecho bench --models: {:.1} s per workload after {:.1} s warm-up; {}",
        setup.window.as_secs_f64(),
        setup.warmup.as_secs_f64(),
        match (setup.server_cpu, load_cpu) {
            (Some(s), Some(l)) => format!("server pinned to CPU {s}, load to CPU {l}"),
            _ => "one CPU: server and load share it (figures compare, not absolute)".into(),
        }
    )];
    lines.push(format!(
        "server: {} serve --listen 127.0.0.1:0 --model M --workers 1 --idle-timeout 0 --drain-timeout 1 (other flags in the note)",
        exe.display()
    ));
    for w in Workload::ALL {
        lines.push(format!(
            "  {:<8} {}",
            w.name(),
            w.describe(setup.idle_conns)
        ));
    }
    if setup.idle_conns < asked {
        lines.push(format!(
            "  (idle reduced from {} to {} connections by the descriptor limit)",
            thousands(asked as u64),
            thousands(setup.idle_conns as u64)
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<MODEL_COL$} {:<8} {:>10} {:>9} {:>9} {:>11} {:>9}  note",
        "model", "workload", "req/s", "MB/s", "p99 us", "CPU us/req", "KiB/conn"
    ));
    lines
}

/// One row of the table.
fn row_line(r: &Row) -> String {
    let head = format!("{:<MODEL_COL$} {:<8}", r.model, r.workload.name());
    match &r.cell {
        Err(Skip::NotApplicable(why)) => format!("{head} n/a: {why}"),
        Err(Skip::Failed(e)) => format!("{head} ERROR: {e}"),
        Ok((Outcome::Traffic(t), note)) => format!(
            "{head} {:>10} {:>9} {:>9} {:>11} {:>9}  {note}",
            thousands(t.req_s.round() as u64),
            num(t.mb_s),
            num(t.p99_us),
            num(t.cpu_us),
            "-"
        ),
        Ok((Outcome::Memory(m), note)) => {
            let mut extra = format!(
                "{:.0} process{}, PSS {:.0} -> {:.0} KiB",
                m.procs,
                if m.procs == 1.0 { "" } else { "es" },
                m.pss_before_kib,
                m.pss_after_kib
            );
            if !note.is_empty() {
                extra = format!("{note}; {extra}");
            }
            format!(
                "{head} {:>10} {:>9} {:>9} {:>11} {:>9}  {extra}",
                "-",
                "-",
                "-",
                "-",
                num(m.kib_per_conn)
            )
        }
    }
}

/// What the columns mean, printed under the table.
fn legend() -> String {
    format!(
        "(CPU us/req: the server's CPU per request, its threads and forked children included \
         (/proc/PID/stat utime+stime+cutime+cstime, live children's /proc/PID/task/*/schedstat); \
         KiB/conn: PSS of the server and its children (/proc/PID/smaps_rollup) {} ms after the \
         last idle connection opened, minus before the first, per connection; kernel socket \
         memory is not in PSS)",
        IDLE_SETTLE.as_millis()
    )
}

/// A number with as many decimals as its size deserves.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Writes lines to stdout; a reader that went away (`| head`) is not an error.
fn print_lines(out: &mut impl Write, lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::Io {
            what: "writing to stdout",
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The chart's panels: server CPU per request for each throughput workload,
/// then memory per idle connection; a bar per model, in table order.
fn chart_panels(rows: &[Row], idle_conns: usize) -> Vec<chart::Panel> {
    Workload::ALL
        .into_iter()
        .map(|w| {
            let bars = rows
                .iter()
                .filter(|r| r.workload == w)
                .map(|r| chart::Bar {
                    label: r.model.clone(),
                    value: match &r.cell {
                        Ok((Outcome::Traffic(t), _)) => Ok(t.cpu_us),
                        Ok((Outcome::Memory(m), _)) => Ok(m.kib_per_conn),
                        Err(Skip::NotApplicable(_)) => Err("n/a".to_string()),
                        Err(Skip::Failed(_)) => Err("error".to_string()),
                    },
                })
                .collect();
            let (title, unit) = match w {
                Workload::Idle => (
                    format!(
                        "Memory per idle connection ({} connections)",
                        thousands(idle_conns as u64)
                    ),
                    "KiB of server PSS per connection",
                ),
                _ => (
                    format!("Server CPU per request: {}", w.describe(idle_conns)),
                    "server CPU µs per request",
                ),
            };
            chart::Panel {
                title,
                unit: unit.to_string(),
                bars,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_expand_and_refuse_unknown_names() {
        assert_eq!(
            parse_models("thread, epoll").unwrap().0,
            vec!["thread", "epoll"]
        );
        assert_eq!(parse_models("all").unwrap().0.len(), DEFAULT_MODELS.len());
        assert_eq!(parse_models("epoll,epoll").unwrap().0, vec!["epoll"]);
        assert!(parse_models("auto").is_ok());
        let e = parse_models("thread,nope").unwrap_err();
        assert!(e.contains("'nope'") && e.contains("uring"), "{e}");
        assert!(parse_models(",").is_err());
    }

    #[test]
    fn workloads_parse_by_number_or_name() {
        assert_eq!(Workload::parse("2"), Some(Workload::Large));
        assert_eq!(Workload::parse(" idle "), Some(Workload::Idle));
        assert_eq!(Workload::parse("5"), None);
    }

    #[test]
    fn models_that_cannot_hold_the_load_are_not_applicable() {
        let m = |name: &str| Server::Model {
            exe: PathBuf::from("netecho"),
            model: name.into(),
        };
        assert!(plan_flags(&m("iterative"), Workload::Small, 10).is_err());
        assert!(plan_flags(&m("prefork"), Workload::Idle, 10).is_err());
        let (args, note) = plan_flags(&m("prethread"), Workload::Small, 10).unwrap();
        assert_eq!(args, ["--workers", "50"]);
        assert_eq!(note, "--workers 50");
        let (args, _) = plan_flags(&m("epoll"), Workload::Idle, 10).unwrap();
        assert_eq!(args, ["--workers", "1", "--max-conns", "10"]);
    }

    #[test]
    fn the_idle_workload_fits_the_descriptor_limit() {
        assert_eq!(idle_conns_within(10_000, 1024), 924);
        assert_eq!(idle_conns_within(200, 1_048_576), 200);
        assert_eq!(idle_conns_within(10_000, 0), 1);
    }
}
