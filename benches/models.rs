//! `cargo bench --bench models`: the model benchmark of `BENCHMARKING.md`.
//!
//! Absolute speed on these shared machines moves from run to run, so every
//! figure that counts is a ratio to a baseline measured in the same run, and
//! the bench builds its baselines itself:
//! - the **kernel floor**: one thread owning both ends of a loopback TCP
//!   connection does write/read/write/read of the message size; half its CPU
//!   per round trip is the least a server making a syscall per message can pay;
//! - **C epoll** (`benches/c/epoll_echo.c`, built with `cc -O2` into
//!   `target/netecho-bench/`): the practical bar for a one-core event loop.
//!
//! Each server runs pinned to the first CPU this process may use and the load
//! generator (this process) to the second, so a model with `--workers 1` is
//! one core against one core. The primary figure is **server CPU per
//! request**: utime+stime+cutime+cstime (`/proc/PID/stat` fields 14–17) of
//! the server and every live descendant, read when the measured window opens
//! and closes, divided by the requests completed in it. It does not depend on
//! whether the load generator keeps up; req/s, MB/s and latency are beside it.
//!
//! Environment (all optional):
//! - `NETECHO_BENCH_SECS` (3): measured seconds per cell, after a warm-up of
//!   min(1 s, that). Ticks are 10 ms, so shorter windows are for development;
//! - `NETECHO_BENCH_MODELS`: comma list of servers, from `c-epoll` and the
//!   `netecho serve --model` names (default: `c-epoll` and the eight models);
//! - `NETECHO_BENCH_WORKLOADS`: comma list of `1`–`4` (or `small`, `large`,
//!   `connect`, `idle`); default all four;
//! - `NETECHO_BENCH_REPEAT` (1): runs per cell; the tables show medians.
//!
//! The `netecho` under test is the binary cargo builds for benches
//! (`CARGO_BIN_EXE_netecho`, that is `target/release/netecho`): `cargo bench`
//! builds the package's binaries before it runs a bench, so no build step
//! happens here. Server stderr goes to `target/netecho-bench/logs/`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Errors here end one cell (an error row), never the bench; a message is all
/// a reader of the table needs.
type Res<T> = Result<T, String>;

/// The C baseline's name in `NETECHO_BENCH_MODELS` and in the tables.
const C_EPOLL: &str = "c-epoll";
/// Table order when `NETECHO_BENCH_MODELS` is unset: the baseline first, then
/// every model a user can pick except `auto` (today an alias of `thread`).
const DEFAULT_SERVERS: &[&str] = &[
    C_EPOLL,
    "iterative",
    "fork",
    "prefork",
    "thread",
    "prethread",
    "epoll",
    "tokio",
    "uring",
];
/// Every name `netecho serve --model` accepts, so a typo fails before any run.
const NETECHO_MODELS: &[&str] = &[
    "auto",
    "iterative",
    "fork",
    "prefork",
    "thread",
    "prethread",
    "epoll",
    "tokio",
    "uring",
];

/// Measured seconds per cell when `NETECHO_BENCH_SECS` is unset: 300 clock
/// ticks of a busy server, so tick rounding stays under half a percent.
const DEFAULT_SECS: f64 = 3.0;
/// Longest measured window accepted, so a typo cannot make a run of hours.
const MAX_SECS: f64 = 600.0;
/// Most repeats accepted, for the same reason.
const MAX_REPEAT: usize = 20;
/// Warm-up before each window: long enough for lazy setup (thread spawns,
/// page faults, the first forks) to be done before counting starts.
const MAX_WARMUP: Duration = Duration::from_secs(1);
/// The kernel floor's window: its clock counts nanoseconds of its own thread,
/// so one second is already far more than its resolution needs.
const FLOOR_WINDOW: Duration = Duration::from_secs(1);
/// Untimed round trips before the floor's window, to fault in its buffers.
const FLOOR_WARMUP: Duration = Duration::from_millis(100);

/// Workload 1's message: one small request, where syscalls dominate.
const SMALL_MSG: usize = 64;
/// Workload 2's message: where copying dominates.
const LARGE_MSG: usize = 64 * 1024;
/// Workload 1's connections, one message in flight on each.
const SMALL_CONNS: usize = 50;
/// Workload 2's connections.
const LARGE_CONNS: usize = 8;
/// Workload 3's connections open at once.
const CONNECT_PARALLEL: usize = 4;
/// Workload 4's idle connections (fewer if the descriptor limit is lower).
const IDLE_CONNS: usize = 10_000;
/// Connects in flight while workload 4 opens its connections: well under the
/// listen backlog (1024), so the kernel never refuses one for a full queue.
const IDLE_OPENING: usize = 64;
/// Workload 4 gives up opening its connections after this long.
const IDLE_OPEN_LIMIT: Duration = Duration::from_secs(60);
/// Pause after the last idle connection is open and before PSS is read, for
/// anything the server does after echoing (a thread parking, a child settling).
const IDLE_SETTLE: Duration = Duration::from_millis(300);
/// Pause after workload 4's warm-up connection closes, before PSS is read.
const WARM_SETTLE: Duration = Duration::from_millis(100);
/// Descriptors left for everything but workload 4's connections (listeners,
/// pipes, epoll, logs) in this process and in the server.
const FD_MARGIN: u64 = 100;

/// A server that has not printed its `listening tcp` line by then has failed.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed;
/// `fork` reaping ten thousand children needs a few seconds.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// No echo completed for this long means the server is stuck: an error row.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// The load loop's poll timeout: how often it looks at the clock when idle.
const POLL_TICK: Duration = Duration::from_millis(50);
/// Bound on requests in one cell, far above what a window can reach, so no
/// loop depends on the clock alone to stop.
const MAX_REQUESTS: u64 = 1_000_000_000;
/// Events taken per poll by the load generator.
const EVENTS: usize = 1024;

/// Period of the payload pattern. Prime, so that consecutive messages (which
/// start at different offsets) differ and a stale or reordered echo shows.
const PATTERN_PERIOD: usize = 251;
/// Highest latency the histograms hold (ns); anything slower is clamped.
const HIST_MAX_NS: u64 = 60_000_000_000;
/// Significant figures of the latency histograms.
const HIST_SIGFIG: u8 = 3;

/// The four workloads of `BENCHMARKING.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// 64 B messages, 50 connections, one message in flight on each.
    Small,
    /// 64 KiB messages, 8 connections.
    Large,
    /// A new connection per 64 B request, 4 at a time.
    Connect,
    /// 10,000 connections used once, then held idle: memory per connection.
    Idle,
}

impl Workload {
    /// All of them, in table order.
    const ALL: [Workload; 4] = [
        Workload::Small,
        Workload::Large,
        Workload::Connect,
        Workload::Idle,
    ];

    /// The number `BENCHMARKING.md` gives it.
    fn number(self) -> usize {
        match self {
            Workload::Small => 1,
            Workload::Large => 2,
            Workload::Connect => 3,
            Workload::Idle => 4,
        }
    }

    /// Accepts the number or a one-word name.
    fn parse(s: &str) -> Option<Workload> {
        match s.trim() {
            "1" | "small" => Some(Workload::Small),
            "2" | "large" => Some(Workload::Large),
            "3" | "connect" => Some(Workload::Connect),
            "4" | "idle" => Some(Workload::Idle),
            _ => None,
        }
    }

    /// Connections the server must serve at once.
    fn conns(self, cfg: &Config) -> usize {
        match self {
            Workload::Small => SMALL_CONNS,
            Workload::Large => LARGE_CONNS,
            Workload::Connect => CONNECT_PARALLEL,
            Workload::Idle => cfg.idle_conns,
        }
    }

    /// The table's heading.
    fn title(self, cfg: &Config) -> String {
        let n = self.number();
        match self {
            Workload::Small => format!(
                "Workload {n}: {SMALL_MSG} B messages, {SMALL_CONNS} connections, one in flight each"
            ),
            Workload::Large => format!(
                "Workload {n}: {} KiB messages, {LARGE_CONNS} connections, one in flight each",
                LARGE_MSG / 1024
            ),
            Workload::Connect => format!(
                "Workload {n}: new connection per request ({SMALL_MSG} B), {CONNECT_PARALLEL} at a time"
            ),
            Workload::Idle => format!(
                "Workload {n}: {} connections used once ({SMALL_MSG} B round trip), then idle",
                cfg.idle_conns
            ),
        }
    }
}

/// Everything the run was asked for and found about the machine.
struct Config {
    /// Measured window per cell.
    secs: Duration,
    /// Warm-up before each window.
    warmup: Duration,
    /// Runs per cell; the tables show medians.
    repeat: usize,
    /// Servers in table order.
    servers: Vec<String>,
    /// Workloads in table order.
    workloads: Vec<Workload>,
    /// Where servers run.
    server_cpu: usize,
    /// Where the load generator (this process) runs.
    load_cpu: usize,
    /// CPUs this process may use, counted before it pins itself (`nproc`).
    nproc: usize,
    /// The binary under test.
    netecho: PathBuf,
    /// Scratch space under `target/`: the C baseline and server logs.
    work_dir: PathBuf,
    /// `taskset`, when installed: the pinned command can then be copied by
    /// hand exactly as the bench ran it.
    taskset: Option<PathBuf>,
    /// Workload 4's connections after the descriptor limit.
    idle_conns: usize,
    /// RLIMIT_NOFILE after raising the soft limit (soft, hard).
    nofile: (u64, u64),
    /// `/proc` CPU times are in these units per second.
    clk_tck: f64,
}

impl Config {
    /// Reads the environment and the machine; an unusable setting is an error.
    fn from_env() -> Res<Config> {
        let secs = match std::env::var("NETECHO_BENCH_SECS") {
            Ok(s) => match s.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v <= MAX_SECS => v,
                _ => {
                    return Err(format!(
                        "NETECHO_BENCH_SECS={s}: want seconds in (0, {MAX_SECS}]"
                    ));
                }
            },
            Err(_) => DEFAULT_SECS,
        };
        let secs = Duration::from_secs_f64(secs);
        let repeat = match std::env::var("NETECHO_BENCH_REPEAT") {
            Ok(s) => match s.trim().parse::<usize>() {
                Ok(v) if (1..=MAX_REPEAT).contains(&v) => v,
                _ => return Err(format!("NETECHO_BENCH_REPEAT={s}: want 1-{MAX_REPEAT}")),
            },
            Err(_) => 1,
        };
        let servers: Vec<String> = match std::env::var("NETECHO_BENCH_MODELS") {
            Ok(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            Err(_) => DEFAULT_SERVERS.iter().map(|s| s.to_string()).collect(),
        };
        if let Some(bad) = servers
            .iter()
            .find(|s| *s != C_EPOLL && !NETECHO_MODELS.contains(&s.as_str()))
        {
            return Err(format!(
                "NETECHO_BENCH_MODELS: unknown server '{bad}'; known: {C_EPOLL}, {}",
                NETECHO_MODELS.join(", ")
            ));
        }
        let workloads = match std::env::var("NETECHO_BENCH_WORKLOADS") {
            Ok(s) => s
                .split(',')
                .filter(|w| !w.trim().is_empty())
                .map(|w| {
                    Workload::parse(w).ok_or_else(|| {
                        format!("NETECHO_BENCH_WORKLOADS: unknown workload '{w}'; known: 1-4 or small, large, connect, idle")
                    })
                })
                .collect::<Res<Vec<_>>>()?,
            Err(_) => Workload::ALL.to_vec(),
        };
        if servers.is_empty() || workloads.is_empty() {
            return Err(
                "nothing to run: empty NETECHO_BENCH_MODELS or NETECHO_BENCH_WORKLOADS".into(),
            );
        }
        let cpus = allowed_cpus()?;
        let server_cpu = cpus.first().copied().unwrap_or(0);
        // With one CPU the comparison still holds (same for every server),
        // only the absolute figures mean less; the header says so.
        let load_cpu = cpus.get(1).copied().unwrap_or(server_cpu);
        let netecho = PathBuf::from(env!("CARGO_BIN_EXE_netecho"));
        let target = netecho
            .parent()
            .and_then(Path::parent)
            .map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nofile = raise_nofile();
        let fd_room = nofile.0.saturating_sub(FD_MARGIN);
        let idle_conns = IDLE_CONNS.min(usize::try_from(fd_room).unwrap_or(IDLE_CONNS));
        // SAFETY: sysconf only reads a configuration value.
        let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(Config {
            secs,
            warmup: MAX_WARMUP.min(secs),
            repeat,
            servers,
            workloads,
            server_cpu,
            load_cpu,
            nproc: cpus.len(),
            netecho,
            work_dir: target.join("netecho-bench"),
            taskset: find_in_path("taskset"),
            idle_conns,
            nofile,
            clk_tck: if clk_tck > 0 { clk_tck as f64 } else { 100.0 },
        })
    }
}

fn main() -> ExitCode {
    // `cargo test --benches` runs bench binaries without `--bench`: a
    // multi-minute benchmark has no place in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("models: run it with `cargo bench --bench models`; nothing to do as a test");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("models bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the header, then one table per workload as soon as it is done.
fn run() -> Res<()> {
    let cfg = Config::from_env()?;
    // Everything this process does from here on (load, /proc reads, table
    // printing) stays off the server's CPU; the floor thread moves itself.
    pin_current_thread(cfg.load_cpu)?;
    fs::create_dir_all(cfg.work_dir.join("logs"))
        .map_err(|e| format!("creating {}: {e}", cfg.work_dir.display()))?;
    print_header(&cfg);
    let c_epoll = if cfg.servers.iter().any(|s| s == C_EPOLL) {
        build_c_epoll(&cfg)
    } else {
        Err("not run".into())
    };
    if cfg.servers.iter().any(|s| s == C_EPOLL) {
        match &c_epoll {
            Ok(path) => println!(
                "c-epoll:  {} (cc -O2 -Wall benches/c/epoll_echo.c), pinned like the models",
                path.display()
            ),
            Err(e) => println!("c-epoll:  {e}"),
        }
    }
    println!();
    for &w in &cfg.workloads {
        let mut rows = Vec::new();
        if matches!(w, Workload::Small | Workload::Large) {
            rows.push(floor_row(w, &cfg));
        }
        for server in &cfg.servers {
            rows.push(server_row(server, w, &cfg, &c_epoll));
        }
        print_table(w, &cfg, &rows);
    }
    Ok(())
}

/// What one cell measured.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Traffic(Traffic),
    Memory(Memory),
}

/// Figures of a throughput workload (1–3) or of the kernel floor.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    /// Requests completed per second in the window.
    req_s: f64,
    /// Echoed megabytes (10^6, one direction) per second.
    mb_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// Server CPU per request (for the floor: half a round trip's CPU).
    cpu_us: f64,
}

/// Figures of workload 4.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Connections held open when PSS was read.
    conns: f64,
    /// Seconds to open them all (each with one round trip).
    open_s: f64,
    /// Processes summed: the server and its children.
    procs: f64,
    pss_before_kib: f64,
    pss_after_kib: f64,
    /// (after − before) / conns.
    kib_per_conn: f64,
    /// Server CPU per connection opened and used once.
    cpu_us_per_conn: f64,
}

/// One line of a table.
struct Row {
    /// The server (or baseline) name.
    label: String,
    /// Flags the cell ran with that differ from the workload's usual ones.
    note: String,
    /// Median figures, or why there are none.
    cell: Result<Outcome, Skip>,
}

/// Why a row has no figures.
enum Skip {
    /// The model cannot serve the workload by design.
    NotApplicable(String),
    /// It was run and failed.
    Failed(String),
}

/// Measures the kernel floor for a workload's message size, `repeat` times.
fn floor_row(w: Workload, cfg: &Config) -> Row {
    let len = if w == Workload::Large {
        LARGE_MSG
    } else {
        SMALL_MSG
    };
    let mut samples = Vec::new();
    let mut failure = None;
    for _ in 0..cfg.repeat {
        match kernel_floor(len, FLOOR_WINDOW.min(cfg.secs), cfg.server_cpu) {
            Ok(t) => {
                eprintln!(
                    "[w{}] kernel floor: {:.0} round trips/s, {:.2} µs CPU per request",
                    w.number(),
                    t.req_s,
                    t.cpu_us
                );
                samples.push(Outcome::Traffic(t));
            }
            Err(e) => failure = Some(e),
        }
    }
    Row {
        label: "kernel floor".into(),
        note: "1 thread, both ends".into(),
        cell: match failure {
            Some(e) => Err(Skip::Failed(e)),
            None => median(&samples).ok_or(Skip::Failed("no sample".into())),
        },
    }
}

/// Runs one server on one workload `repeat` times.
fn server_row(server: &str, w: Workload, cfg: &Config, c_epoll: &Res<PathBuf>) -> Row {
    let (args, note) = match plan(server, w, cfg) {
        Ok(p) => p,
        Err(reason) => {
            return Row {
                label: server.into(),
                note: String::new(),
                cell: Err(Skip::NotApplicable(reason)),
            };
        }
    };
    let mut samples = Vec::new();
    let mut notes = vec![note];
    for _ in 0..cfg.repeat {
        let began = Instant::now();
        match run_cell(server, &args, w, cfg, c_epoll) {
            Ok((outcome, exit_note)) => {
                progress(server, w, &outcome, began.elapsed());
                notes.extend(exit_note);
                samples.push(outcome);
            }
            Err(e) => {
                eprintln!("[w{}] {server}: error: {e}", w.number());
                return Row {
                    label: server.into(),
                    note: String::new(),
                    cell: Err(Skip::Failed(e)),
                };
            }
        }
    }
    notes.retain(|n| !n.is_empty());
    notes.dedup();
    Row {
        label: server.into(),
        note: notes.join("; "),
        cell: median(&samples).ok_or(Skip::Failed("no sample".into())),
    }
}

/// One progress line on stderr per run, so a long run shows it is alive.
fn progress(server: &str, w: Workload, o: &Outcome, took: Duration) {
    let took = took.as_secs_f64();
    match o {
        Outcome::Traffic(t) => eprintln!(
            "[w{}] {server}: {:.0} req/s, {:.2} µs CPU per request ({took:.1} s)",
            w.number(),
            t.req_s,
            t.cpu_us
        ),
        Outcome::Memory(m) => eprintln!(
            "[w{}] {server}: {:.0} connections, {:.1} KiB each ({took:.1} s)",
            w.number(),
            m.conns,
            m.kib_per_conn
        ),
    }
}

/// The extra flags a server gets for a workload and the note that says so,
/// or why the workload does not apply to it.
fn plan(server: &str, w: Workload, cfg: &Config) -> Result<(Vec<String>, String), String> {
    if server == C_EPOLL {
        return Ok((Vec::new(), String::new()));
    }
    let conns = w.conns(cfg);
    let model = if server == "auto" { "thread" } else { server };
    let one = vec!["--workers".to_string(), "1".to_string()];
    match (model, w) {
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

/// Starts the server, drives one workload, stops the server. The second
/// value notes an unclean exit after figures were taken.
fn run_cell(
    server: &str,
    args: &[String],
    w: Workload,
    cfg: &Config,
    c_epoll: &Res<PathBuf>,
) -> Res<(Outcome, Option<String>)> {
    let running = start_server(server, args, w, cfg, c_epoll)?;
    let (pid, addr) = (running.pid, running.addr);
    let outcome = match w {
        Workload::Small => load_persistent(addr, pid, SMALL_CONNS, SMALL_MSG, cfg),
        Workload::Large => load_persistent(addr, pid, LARGE_CONNS, LARGE_MSG, cfg),
        Workload::Connect => load_connect(addr, pid, cfg),
        Workload::Idle => load_idle(addr, pid, cfg).map(Outcome::Memory),
    };
    let exit_note = stop_server(running);
    let outcome = outcome.map_err(|e| match &exit_note {
        Some(n) => format!("{e} ({n})"),
        None => e,
    })?;
    Ok((outcome, exit_note))
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// A server we started, in its own process group.
struct Running {
    child: Child,
    pid: i32,
    addr: SocketAddr,
}

/// Starts a server pinned to the server CPU and waits for its
/// `listening tcp ADDR` line.
fn start_server(
    server: &str,
    extra: &[String],
    w: Workload,
    cfg: &Config,
    c_epoll: &Res<PathBuf>,
) -> Res<Running> {
    let (prog, args): (PathBuf, Vec<String>) = if server == C_EPOLL {
        (c_epoll.clone()?, Vec::new())
    } else {
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--model",
            server,
            "--idle-timeout",
            "0",
            "--drain-timeout",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        (cfg.netecho.clone(), args)
    };
    let log = cfg
        .work_dir
        .join("logs")
        .join(format!("{server}-w{}.log", w.number()));
    let log_file = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let mut cmd = match &cfg.taskset {
        Some(taskset) => {
            let mut c = Command::new(taskset);
            c.arg("-c").arg(cfg.server_cpu.to_string()).arg(&prog);
            c
        }
        None => {
            let mut c = Command::new(&prog);
            let set = cpu_set(cfg.server_cpu);
            // SAFETY: the closure runs between fork and exec; it makes one
            // raw syscall on a set built before the fork, and
            // `last_os_error` only reads errno (no allocation, no lock).
            unsafe {
                c.pre_exec(move || {
                    let size = std::mem::size_of::<libc::cpu_set_t>();
                    if libc::sched_setaffinity(0, size, &set) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
            c
        }
    };
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .env("NETECHO_LOG", "warn")
        // Its own group, so a server that ignores SIGTERM is killed with
        // every child it forked, and nothing else.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", prog.display()))?;
    let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())?;
    let Some(stdout) = child.stdout.take() else {
        kill_group(pid);
        let _ = child.wait();
        return Err("server stdout not captured".into());
    };
    let (tx, rx) = mpsc::channel();
    // Reads stdout to its end so the server never blocks on a full pipe; it
    // ends when the server and its children have all closed it.
    thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line
                .strip_prefix("listening tcp ")
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(addr) => Ok(Running { child, pid, addr }),
        Err(_) => {
            kill_group(pid);
            let _ = child.wait();
            Err(format!(
                "no `listening tcp` line within {} s{}",
                READY_TIMEOUT.as_secs(),
                log_tail(&log)
            ))
        }
    }
}

/// SIGTERM, then waits; a server still running after [`STOP_TIMEOUT`] is
/// killed with its group. Returns a note unless it exited 0.
fn stop_server(mut r: Running) -> Option<String> {
    if let Err(e) = kill(Pid::from_raw(r.pid), Signal::SIGTERM) {
        kill_group(r.pid);
        let _ = r.child.wait();
        return Some(format!("SIGTERM failed: {e}"));
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match r.child.try_wait() {
            Ok(Some(status)) if status.success() => return None,
            Ok(Some(status)) => return Some(format!("server {status}")),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill_group(r.pid);
                let _ = r.child.wait();
                return Some(format!(
                    "still running {} s after SIGTERM; killed",
                    STOP_TIMEOUT.as_secs()
                ));
            }
            Err(e) => {
                kill_group(r.pid);
                let _ = r.child.wait();
                return Some(format!("waiting for the server: {e}"));
            }
        }
    }
}

/// SIGKILLs the process group of a server we started and have not reaped
/// (so the group id is still ours).
fn kill_group(pid: i32) {
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
}

/// The last line a server wrote to its log, to put in an error row.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!("; its stderr: {}", line.trim()),
        None => String::new(),
    }
}

/// Compiles `benches/c/epoll_echo.c` with the system `cc -O2` into
/// `target/netecho-bench/`, every run, so the baseline always matches its source.
fn build_c_epoll(cfg: &Config) -> Res<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/c/epoll_echo.c");
    let out = cfg.work_dir.join("epoll_echo");
    let result = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !result.status.success() {
        let err = String::from_utf8_lossy(&result.stderr);
        return Err(format!(
            "cc -O2 {} failed: {}",
            src.display(),
            err.lines().next().unwrap_or("")
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// /proc accounting
// ---------------------------------------------------------------------------

/// Every process's parent and CPU ticks (utime+stime+cutime+cstime).
fn scan_proc() -> HashMap<i32, (i32, u64)> {
    let mut all = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return all;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(stat) = read_stat(pid) {
            all.insert(pid, stat);
        }
    }
    all
}

/// Parent and CPU ticks from `/proc/PID/stat`; `None` if it has just exited.
fn read_stat(pid: i32) -> Option<(i32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted
    // from the last ')'. The rest starts at field 3, so field n is f[n - 3].
    let rest = text.get(text.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f
        .get(11..15)?
        .iter()
        .map(|v| v.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some((ppid, ticks))
}

/// The root and all its live descendants, found through parent links.
fn tree(root: i32, all: &HashMap<i32, (i32, u64)>) -> Vec<i32> {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, &(ppid, _)) in all {
        kids.entry(ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    // Each pid enters once (a process has one parent), so this ends.
    while let Some(&pid) = out.get(i) {
        if let Some(k) = kids.get(&pid) {
            out.extend(k);
        }
        i += 1;
    }
    out
}

/// CPU time (ns) of the server and its live descendants.
///
/// `/proc/PID/stat` truncates each process's utime and stime to whole 10 ms
/// ticks, so fifty forked children that each ran 5 ms in a window would add
/// up to nothing. Only the server's own line is read from there: its
/// utime+stime is the sum over all its threads, dead ones included, and its
/// cutime+cstime the sum over reaped children, each summed in ns and
/// truncated once. Live descendants (single-threaded workers and
/// per-connection children) are read from `/proc/PID/task/*/schedstat`, in
/// ns. A child reaped between two reads moves from one sum to the other; at
/// worst one child is counted once more or less, negligible against the
/// thousands of requests a window holds.
fn tree_cpu_ns(root: i32, clk_tck: f64) -> Res<u64> {
    let all = scan_proc();
    let Some(&(_, root_ticks)) = all.get(&root) else {
        return Err("server exited during the run".into());
    };
    let tick_ns = 1e9 / clk_tck;
    let mut total = (root_ticks as f64 * tick_ns) as u64;
    for pid in tree(root, &all).into_iter().skip(1) {
        total += match task_runtime_ns(pid) {
            Some(ns) => ns,
            // schedstat unavailable: the truncated ticks are all there is.
            None => all
                .get(&pid)
                .map_or(0, |&(_, t)| (t as f64 * tick_ns) as u64),
        };
    }
    Ok(total)
}

/// Run time (ns) of every live thread of a process, from the first field of
/// `/proc/PID/task/TID/schedstat`; `None` where the kernel does not keep it.
fn task_runtime_ns(pid: i32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let text = fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    // A kernel without schedstats prints zeros.
    (total > 0).then_some(total)
}

/// PSS (KiB) summed over the server and its live descendants, and how many
/// processes that is. PSS divides each shared page among its sharers, so
/// forked children's shared pages are not counted once per child.
fn tree_pss(root: i32) -> Res<(u64, usize)> {
    let all = scan_proc();
    if !all.contains_key(&root) {
        return Err("server exited during the run".into());
    }
    let pids = tree(root, &all);
    let mut total = 0;
    for &pid in &pids {
        total += pss_kib(pid).unwrap_or(0);
    }
    Ok((total, pids.len()))
}

/// The `Pss:` line of `/proc/PID/smaps_rollup`, in KiB.
fn pss_kib(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------
// Load generation
// ---------------------------------------------------------------------------

/// Bytes every message is cut from: message `k` on a connection starts at
/// offset `k % PATTERN_PERIOD`, so each echoed byte has one right value.
fn pattern(len: usize) -> Vec<u8> {
    (0..len + PATTERN_PERIOD)
        .map(|i| (i % PATTERN_PERIOD) as u8)
        .collect()
}

/// What one load loop sends and checks: messages of `len` bytes cut from
/// `pattern`, and a buffer to read echoes into.
struct Payload {
    len: usize,
    pattern: Vec<u8>,
    buf: Vec<u8>,
}

impl Payload {
    fn new(len: usize) -> Payload {
        Payload {
            len,
            pattern: pattern(len),
            buf: vec![0; len],
        }
    }
}

/// A latency histogram in nanoseconds.
fn histogram() -> Res<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG).map_err(|e| format!("histogram: {e:?}"))
}

/// Microseconds at a quantile.
fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Counts completions, opens and closes the measured window, and reads the
/// server's CPU at both ends of it.
struct Meter {
    /// The server whose process tree is charged.
    server: i32,
    /// `/proc` ticks per second.
    clk_tck: f64,
    /// Latency of requests completed in the window.
    hist: Histogram<u64>,
    /// Requests completed in the window.
    requests: u64,
    /// Echoed bytes of those requests.
    bytes: u64,
    /// Requests completed since the start, warm-up included: the count bound.
    total: u64,
    /// Warm-up ends (then the window opens) at this instant.
    warm_until: Instant,
    /// The window's length.
    window: Duration,
    /// Set when the window opens: its start and the server's CPU ns then.
    open: Option<(Instant, u64)>,
    /// Set when it closes: its length and the server's CPU ns then.
    closed: Option<(Duration, u64)>,
    /// The last completion, to notice a stuck server.
    last_progress: Instant,
}

impl Meter {
    fn new(server: i32, cfg: &Config) -> Res<Meter> {
        let now = Instant::now();
        Ok(Meter {
            server,
            clk_tck: cfg.clk_tck,
            hist: histogram()?,
            requests: 0,
            bytes: 0,
            total: 0,
            warm_until: now + cfg.warmup,
            window: cfg.secs,
            open: None,
            closed: None,
            last_progress: now,
        })
    }

    /// A request that began at `started` has completed now.
    fn record(&mut self, started: Instant, bytes: usize) {
        let now = Instant::now();
        self.total += 1;
        self.last_progress = now;
        if self.open.is_some() && self.closed.is_none() {
            let ns = u64::try_from((now - started).as_nanos()).unwrap_or(u64::MAX);
            self.hist.saturating_record(ns.max(1));
            self.requests += 1;
            self.bytes += bytes as u64;
        }
    }

    /// Opens or closes the window when its time comes; `Ok(false)` once it
    /// is closed (or the count bound is reached) and the load should stop.
    fn tick(&mut self) -> Res<bool> {
        let now = Instant::now();
        if now - self.last_progress > STALL_LIMIT {
            return Err(format!("no echo completed for {} s", STALL_LIMIT.as_secs()));
        }
        match self.open {
            None if now >= self.warm_until => {
                self.open = Some((now, tree_cpu_ns(self.server, self.clk_tck)?));
            }
            Some((start, _)) if now - start >= self.window || self.total >= MAX_REQUESTS => {
                self.closed = Some((now - start, tree_cpu_ns(self.server, self.clk_tck)?));
                return Ok(false);
            }
            _ => {}
        }
        Ok(self.total < MAX_REQUESTS || self.open.is_none())
    }

    /// The window's figures.
    fn finish(self) -> Res<Traffic> {
        let (Some((_, t0)), Some((elapsed, t1))) = (self.open, self.closed) else {
            return Err("the measured window never closed".into());
        };
        if self.requests == 0 {
            return Err("no request completed in the window".into());
        }
        let secs = elapsed.as_secs_f64();
        let cpu_us = t1.saturating_sub(t0) as f64 / 1000.0;
        Ok(Traffic {
            req_s: self.requests as f64 / secs,
            mb_s: self.bytes as f64 / secs / 1e6,
            p50_us: quantile_us(&self.hist, 0.5),
            p99_us: quantile_us(&self.hist, 0.99),
            p999_us: quantile_us(&self.hist, 0.999),
            cpu_us: cpu_us / self.requests as f64,
        })
    }
}

/// One client connection and the request in flight on it.
struct Client {
    stream: TcpStream,
    /// Set once the non-blocking connect has completed.
    connected: bool,
    /// Messages started on this connection (picks the pattern offset).
    seq: usize,
    /// Bytes of the current message written and echoed back.
    sent: usize,
    recvd: usize,
    /// When the current request began (for workload 3: before connect).
    started: Instant,
}

impl Client {
    /// Starts a non-blocking connect and registers for both directions.
    fn connect(addr: SocketAddr, registry: &Registry, token: Token, seq: usize) -> Res<Client> {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        // A 64 KiB message's tail must not wait for a delayed ACK (Nagle).
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("epoll register: {e}"))?;
        Ok(Client {
            stream,
            connected: false,
            seq,
            sent: 0,
            recvd: 0,
            started,
        })
    }

    /// Moves bytes after a readiness event. mio is edge-triggered: each
    /// direction is driven until it would block or has nothing left to do;
    /// a message's echo cannot arrive before it is written, so a fresh
    /// message is written without a read attempt. Returns `Ok(true)` when a
    /// message completed and `again` is false (the caller closes or parks
    /// the connection); with `again` the next message starts at once.
    fn on_event(
        &mut self,
        mut readable: bool,
        mut writable: bool,
        payload: &mut Payload,
        meter: &mut Meter,
        again: bool,
    ) -> Res<bool> {
        if !self.connected {
            if !is_connected(&self.stream)? {
                return Ok(false);
            }
            self.connected = true;
            writable = true;
        }
        let Payload { len, pattern, buf } = payload;
        let len = *len;
        loop {
            let offset = self.seq % PATTERN_PERIOD;
            let mut moved = false;
            while writable && self.sent < len {
                match self
                    .stream
                    .write(&pattern[offset + self.sent..offset + len])
                {
                    Ok(0) => return Err("the server stopped taking bytes".into()),
                    Ok(n) => {
                        self.sent += n;
                        moved = true;
                    }
                    // Socket buffer full: a writable event comes when it drains.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable = false,
                    // A signal: try again.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            while readable && self.recvd < self.sent {
                let want = (self.sent - self.recvd).min(buf.len());
                match self.stream.read(&mut buf[..want]) {
                    // EOF before the whole echo: the contract is broken.
                    Ok(0) => {
                        return Err(format!(
                            "the server closed the connection after {} of {len} echoed bytes",
                            self.recvd
                        ));
                    }
                    Ok(n) => {
                        let expect = &pattern[offset + self.recvd..offset + self.recvd + n];
                        if let Some(at) = buf[..n].iter().zip(expect).position(|(a, b)| a != b) {
                            return Err(format!(
                                "echo mismatch at byte {} of a {len}-byte message",
                                self.recvd + at
                            ));
                        }
                        self.recvd += n;
                        moved = true;
                    }
                    // Nothing more yet: a readable event comes with the next bytes.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => readable = false,
                    // A signal: try again.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            if self.recvd == len {
                meter.record(self.started, len);
                if !again {
                    return Ok(true);
                }
                self.seq += 1;
                self.sent = 0;
                self.recvd = 0;
                self.started = Instant::now();
                writable = true;
                continue;
            }
            if !moved {
                return Ok(false);
            }
        }
    }
}

/// Whether a non-blocking connect has completed; its error if it failed.
fn is_connected(s: &TcpStream) -> Res<bool> {
    match s.take_error() {
        Ok(Some(e)) | Err(e) => return Err(format!("connect: {e}")),
        Ok(None) => {}
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        // Still in progress: the next writable event tells.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(format!("connect: {e}")),
    }
}

/// Polls once, retrying on EINTR.
fn poll_once(poll: &mut Poll, events: &mut Events) -> Res<()> {
    match poll.poll(events, Some(POLL_TICK)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(format!("epoll_wait: {e}")),
    }
}

/// Workloads 1 and 2: `conns` connections, each with one message in flight
/// for as long as the window lasts.
fn load_persistent(
    addr: SocketAddr,
    server: i32,
    conns: usize,
    len: usize,
    cfg: &Config,
) -> Res<Outcome> {
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(EVENTS);
    let mut payload = Payload::new(len);
    let mut clients = (0..conns)
        .map(|i| Client::connect(addr, poll.registry(), Token(i), i))
        .collect::<Res<Vec<_>>>()?;
    let mut meter = Meter::new(server, cfg)?;
    loop {
        poll_once(&mut poll, &mut events)?;
        for ev in events.iter() {
            if let Some(c) = clients.get_mut(ev.token().0) {
                let (r, w) = (ev.is_readable(), ev.is_writable());
                c.on_event(r, w, &mut payload, &mut meter, true)?;
            }
        }
        if !meter.tick()? {
            break;
        }
    }
    // Closing them now, before SIGTERM, lets the server exit without a drain.
    drop(clients);
    meter.finish().map(Outcome::Traffic)
}

/// Workload 3: connect, one 64 B round trip, close; `CONNECT_PARALLEL` at a
/// time. Latency runs from before `connect` to the last echoed byte.
fn load_connect(addr: SocketAddr, server: i32, cfg: &Config) -> Res<Outcome> {
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(EVENTS);
    let mut payload = Payload::new(SMALL_MSG);
    let mut seq = 0;
    let mut slots = Vec::with_capacity(CONNECT_PARALLEL);
    for i in 0..CONNECT_PARALLEL {
        slots.push(Client::connect(addr, poll.registry(), Token(i), seq)?);
        seq += 1;
    }
    let mut meter = Meter::new(server, cfg)?;
    loop {
        poll_once(&mut poll, &mut events)?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = slots.get_mut(i) else { continue };
            let (r, w) = (ev.is_readable(), ev.is_writable());
            if c.on_event(r, w, &mut payload, &mut meter, false)? {
                let next = Client::connect(addr, poll.registry(), Token(i), seq)?;
                seq += 1;
                let mut done = std::mem::replace(c, next);
                // Deregistering first keeps mio's bookkeeping exact; the
                // drop then closes the socket (our FIN; we close first).
                let _ = poll.registry().deregister(&mut done.stream);
            }
        }
        if !meter.tick()? {
            break;
        }
    }
    drop(slots);
    meter.finish().map(Outcome::Traffic)
}

/// Workload 4: opens `idle_conns` connections, one round trip on each, holds
/// them all, and reads the server's PSS before and after.
fn load_idle(addr: SocketAddr, server: i32, cfg: &Config) -> Res<Memory> {
    let conns = cfg.idle_conns;
    // One connection first, so one-time setup (a runtime, a first thread
    // stack, lazily mapped code) is in the "before" figure, not per connection.
    warm_round_trip(addr)?;
    thread::sleep(WARM_SETTLE);
    let (pss_before, _) = tree_pss(server)?;
    let cpu_before = tree_cpu_ns(server, cfg.clk_tck)?;
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(EVENTS);
    let mut payload = Payload::new(SMALL_MSG);
    // Idle connections only count completions; no window here.
    let mut meter = Meter::new(server, cfg)?;
    let mut held = Vec::with_capacity(conns);
    let mut slots: Vec<Option<Client>> = Vec::with_capacity(IDLE_OPENING);
    let mut started = 0;
    for i in 0..IDLE_OPENING.min(conns) {
        slots.push(Some(Client::connect(
            addr,
            poll.registry(),
            Token(i),
            started,
        )?));
        started += 1;
    }
    let t0 = Instant::now();
    while held.len() < conns {
        if t0.elapsed() > IDLE_OPEN_LIMIT {
            return Err(format!(
                "only {} of {conns} connections open after {} s",
                held.len(),
                IDLE_OPEN_LIMIT.as_secs()
            ));
        }
        if Instant::now() - meter.last_progress > STALL_LIMIT {
            return Err(format!(
                "stuck at {} of {conns} connections: no echo for {} s",
                held.len(),
                STALL_LIMIT.as_secs()
            ));
        }
        poll_once(&mut poll, &mut events)?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(Some(c)) = slots.get_mut(i) else {
                continue;
            };
            let (r, w) = (ev.is_readable(), ev.is_writable());
            if c.on_event(r, w, &mut payload, &mut meter, false)? {
                let next = if started < conns {
                    started += 1;
                    Some(Client::connect(addr, poll.registry(), Token(i), started)?)
                } else {
                    None
                };
                if let Some(mut done) = std::mem::replace(&mut slots[i], next) {
                    // Parked: no more events wanted from it, only its memory.
                    let _ = poll.registry().deregister(&mut done.stream);
                    held.push(done.stream);
                }
            }
        }
    }
    let open_s = t0.elapsed().as_secs_f64();
    thread::sleep(IDLE_SETTLE);
    let cpu_after = tree_cpu_ns(server, cfg.clk_tck)?;
    let (pss_after, procs) = tree_pss(server)?;
    let n = held.len();
    drop(held);
    let n_f = n.max(1) as f64;
    Ok(Memory {
        conns: n as f64,
        open_s,
        procs: procs as f64,
        pss_before_kib: pss_before as f64,
        pss_after_kib: pss_after as f64,
        kib_per_conn: (pss_after as f64 - pss_before as f64) / n_f,
        cpu_us_per_conn: cpu_after.saturating_sub(cpu_before) as f64 / 1000.0 / n_f,
    })
}

/// One blocking 64 B round trip on a fresh connection, checked.
fn warm_round_trip(addr: SocketAddr) -> Res<()> {
    let timeout = Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("warm-up connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| format!("warm-up: {e}"))?;
    let msg = &pattern(SMALL_MSG)[..SMALL_MSG];
    let mut back = [0u8; SMALL_MSG];
    s.write_all(msg)
        .and_then(|()| s.read_exact(&mut back))
        .map_err(|e| format!("warm-up round trip: {e}"))?;
    if back[..] != msg[..] {
        return Err("warm-up echo mismatch".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Kernel floor
// ---------------------------------------------------------------------------

/// The kernel floor for `len`-byte messages, measured on a thread pinned to
/// the server CPU. `cpu_us` is half a round trip's CPU: the one read and one
/// write a server must make per request.
fn kernel_floor(len: usize, window: Duration, cpu: usize) -> Res<Traffic> {
    thread::Builder::new()
        .name("kernel-floor".into())
        .spawn(move || {
            pin_current_thread(cpu)?;
            floor_loop(len, window)
        })
        .map_err(|e| format!("spawning the floor thread: {e}"))?
        .join()
        .map_err(|_| "the floor thread panicked".to_string())?
}

/// write/read/write/read over one loopback connection, both ends here.
fn floor_loop(len: usize, window: Duration) -> Res<Traffic> {
    fn err(what: &'static str) -> impl Fn(io::Error) -> String {
        move |e| format!("kernel floor: {what}: {e}")
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(err("bind"))?;
    let addr = listener.local_addr().map_err(err("local_addr"))?;
    let mut a = std::net::TcpStream::connect(addr).map_err(err("connect"))?;
    let (mut b, _) = listener.accept().map_err(err("accept"))?;
    for s in [&a, &b] {
        s.set_nodelay(true).map_err(err("TCP_NODELAY"))?;
        // Non-blocking, so a 64 KiB write that does not fit at once is
        // finished after a read instead of deadlocking the one thread.
        s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
    }
    let msg = &pattern(len)[..len];
    let mut buf = vec![0u8; len];
    let mut hist = histogram()?;
    let warm_end = Instant::now() + FLOOR_WARMUP;
    while Instant::now() < warm_end {
        carry(&mut a, &mut b, msg, &mut buf)?;
        carry(&mut b, &mut a, msg, &mut buf)?;
    }
    let cpu0 = thread_cpu_ns()?;
    let t0 = Instant::now();
    let mut trips: u64 = 0;
    let mut now = t0;
    while now - t0 < window && trips < MAX_REQUESTS {
        let start = now;
        carry(&mut a, &mut b, msg, &mut buf)?;
        carry(&mut b, &mut a, msg, &mut buf)?;
        now = Instant::now();
        let ns = u64::try_from((now - start).as_nanos()).unwrap_or(u64::MAX);
        hist.saturating_record(ns.max(1));
        trips += 1;
    }
    let cpu_ns = thread_cpu_ns()?.saturating_sub(cpu0);
    let secs = (now - t0).as_secs_f64();
    let trips_f = trips.max(1) as f64;
    Ok(Traffic {
        req_s: trips as f64 / secs,
        mb_s: (trips * len as u64) as f64 / secs / 1e6,
        p50_us: quantile_us(&hist, 0.5),
        p99_us: quantile_us(&hist, 0.99),
        p999_us: quantile_us(&hist, 0.999),
        cpu_us: cpu_ns as f64 / trips_f / 2.0 / 1000.0,
    })
}

/// Moves one message from `from` to `to`. On loopback a write's segments are
/// queued at the receiver before it returns, so this is normally one write
/// and one read; the retry bound only guards against a kernel that differs.
fn carry(
    from: &mut std::net::TcpStream,
    to: &mut std::net::TcpStream,
    msg: &[u8],
    buf: &mut [u8],
) -> Res<()> {
    const MAX_IDLE_TRIES: u32 = 1_000_000;
    let (mut sent, mut recvd, mut idle) = (0, 0, 0);
    while recvd < msg.len() {
        let mut moved = false;
        if sent < msg.len() {
            match from.write(&msg[sent..]) {
                Ok(n) => {
                    sent += n;
                    moved |= n > 0;
                }
                // Full, or a signal: read some, then try again.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(format!("kernel floor: write: {e}")),
            }
        }
        if recvd < sent {
            match to.read(&mut buf[recvd..sent]) {
                Ok(0) => return Err("kernel floor: unexpected EOF".into()),
                Ok(n) => {
                    recvd += n;
                    moved = true;
                }
                // Not there yet, or a signal: go round again.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(format!("kernel floor: read: {e}")),
            }
        }
        idle = if moved { 0 } else { idle + 1 };
        if idle > MAX_IDLE_TRIES {
            return Err("kernel floor: loopback stopped moving bytes".into());
        }
    }
    Ok(())
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> Res<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(format!(
            "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

// ---------------------------------------------------------------------------
// The machine: CPUs, limits, names
// ---------------------------------------------------------------------------

/// A CPU set holding just `cpu`.
fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed; CPU_SET
    // only writes a bit inside it (cpu is below CPU_SETSIZE: it came from
    // `allowed_cpus`).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread (not the process) to one CPU.
fn pin_current_thread(cpu: usize) -> Res<()> {
    let set = cpu_set(cpu);
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "pinning to CPU {cpu}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The CPUs this process may run on, lowest first (what `nproc` counts).
fn allowed_cpus() -> Res<Vec<usize>> {
    // SAFETY: zeroed is a valid empty set; the kernel fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is writable and `size` is its size.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(format!("sched_getaffinity: {}", io::Error::last_os_error()));
    }
    let max = libc::CPU_SETSIZE as usize;
    // SAFETY: CPU_ISSET only reads a bit below CPU_SETSIZE.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Raises the soft RLIMIT_NOFILE to the hard one (workload 4 holds ten
/// thousand sockets here and as many in the server, which inherits it).
fn raise_nofile() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => (hard, hard),
            Err(_) => (soft, hard),
        },
        Ok(limits) => limits,
        Err(_) => (0, 0),
    }
}

/// An executable named `name` on PATH.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `uname -r`.
fn kernel_release() -> String {
    // SAFETY: zeroed is a valid utsname; uname fills it with NUL-terminated
    // strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is writable.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "?".into();
    }
    // SAFETY: uname succeeded, so `release` holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The current time in UTC, as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = libc::time_t::try_from(secs).unwrap_or(0);
    // SAFETY: zeroed is a valid tm; gmtime_r writes only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::gmtime_r(&t, &mut tm) }.is_null() {
        return format!("{secs} s after the epoch");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The first line a command prints, or "?".
fn first_line(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// Date, machine, and the command that reproduces the run.
fn print_header(cfg: &Config) {
    let envs: Vec<String> = [
        "NETECHO_BENCH_SECS",
        "NETECHO_BENCH_MODELS",
        "NETECHO_BENCH_WORKLOADS",
        "NETECHO_BENCH_REPEAT",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
    .collect();
    println!("netecho model benchmark (BENCHMARKING.md)");
    println!("date:     {}", utc_now());
    println!(
        "machine:  nproc {}, kernel {}, {}",
        cfg.nproc,
        kernel_release(),
        first_line("cc", &["--version"])
    );
    println!(
        "commit:   {} (the working tree may differ)",
        first_line("git", &["rev-parse", "--short", "HEAD"])
    );
    println!("command:  {}cargo bench --bench models", envs.concat());
    println!(
        "method:   server pinned to CPU {} ({}), load generator on CPU {}; {:.1} s measured after {:.1} s warm-up; median of {}",
        cfg.server_cpu,
        if cfg.taskset.is_some() {
            "taskset -c"
        } else {
            "sched_setaffinity"
        },
        cfg.load_cpu,
        cfg.secs.as_secs_f64(),
        cfg.warmup.as_secs_f64(),
        cfg.repeat
    );
    if cfg.load_cpu == cfg.server_cpu {
        println!(
            "WARNING:  one CPU only: server and load share it; figures are comparable, not absolute"
        );
    }
    println!(
        "server:   {} serve --listen 127.0.0.1:0 --model M --workers 1 --idle-timeout 0 --drain-timeout 1 (extra flags in the note column)",
        cfg.netecho.display()
    );
    println!(
        "CPU:      server CPU per request = Δ over the window of the server's utime+stime+cutime+cstime (/proc/PID/stat, {} ticks/s) + its live children's run time (/proc/PID/task/*/schedstat, ns), / requests",
        cfg.clk_tck
    );
    println!(
        "RLIMIT_NOFILE: soft {}, hard {}{}",
        cfg.nofile.0,
        cfg.nofile.1,
        if cfg.idle_conns < IDLE_CONNS {
            format!(
                "; workload 4 reduced to {} connections (limit minus {FD_MARGIN})",
                cfg.idle_conns
            )
        } else {
            String::new()
        }
    );
    let peers: Vec<&str> = ["socat", "ncat", "xinetd"]
        .into_iter()
        .filter(|p| find_in_path(p).is_some())
        .collect();
    println!(
        "peers:    {}",
        if peers.is_empty() {
            "socat, ncat, xinetd not installed; none run".to_string()
        } else {
            format!("{} installed but not run by this bench", peers.join(", "))
        }
    );
}

/// A number with as many decimals as its size deserves.
fn num(v: f64) -> String {
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

/// `a / b` as a ratio, or "-" when there is no baseline to divide by.
fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 && a.is_finite() => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// One workload's table.
fn print_table(w: Workload, cfg: &Config, rows: &[Row]) {
    println!("{}", w.title(cfg));
    let cpu_of = |label: &str| {
        rows.iter()
            .find(|r| r.label == label)
            .and_then(|r| match &r.cell {
                Ok(Outcome::Traffic(t)) => Some(t.cpu_us),
                Ok(Outcome::Memory(m)) => Some(m.kib_per_conn),
                Err(_) => None,
            })
    };
    let c_base = cpu_of(C_EPOLL);
    let floor = cpu_of("kernel floor");
    if w == Workload::Idle {
        println!(
            "{:<13} {:>6} {:>7} {:>6} {:>11} {:>11} {:>9} {:>9} {:>11}  note",
            "server",
            "conns",
            "open s",
            "procs",
            "PSS0 KiB",
            "PSS1 KiB",
            "KiB/conn",
            "-C epoll",
            "CPU us/conn"
        );
    } else {
        println!(
            "{:<13} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9} {:>9}  note",
            "server",
            "req/s",
            "MB/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "CPU us/req",
            "xC epoll",
            "xfloor"
        );
    }
    for r in rows {
        match &r.cell {
            Err(Skip::NotApplicable(why)) => println!("{:<13} n/a: {why}", r.label),
            Err(Skip::Failed(e)) => println!("{:<13} ERROR: {e}", r.label),
            Ok(Outcome::Traffic(t)) => println!(
                "{:<13} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9} {:>9}  {}",
                r.label,
                num(t.req_s),
                num(t.mb_s),
                num(t.p50_us),
                num(t.p99_us),
                num(t.p999_us),
                num(t.cpu_us),
                ratio(t.cpu_us, c_base),
                if floor.is_some() {
                    ratio(t.cpu_us, floor)
                } else {
                    "-".into()
                },
                r.note
            ),
            Ok(Outcome::Memory(m)) => println!(
                "{:<13} {:>6} {:>7} {:>6} {:>11} {:>11} {:>9} {:>9} {:>11}  {}",
                r.label,
                format!("{:.0}", m.conns),
                num(m.open_s),
                format!("{:.0}", m.procs),
                format!("{:.0}", m.pss_before_kib),
                format!("{:.0}", m.pss_after_kib),
                num(m.kib_per_conn),
                c_base.map_or("-".into(), |c| format!("{:+.2}", m.kib_per_conn - c)),
                num(m.cpu_us_per_conn),
                r.note
            ),
        }
    }
    match w {
        Workload::Small | Workload::Large => println!(
            "(CPU us/req is the server's; kernel floor = half a round trip's CPU of one thread owning both ends; xC epoll and xfloor divide CPU us/req)"
        ),
        Workload::Connect => println!(
            "(latency from connect to the last echoed byte; the client closes first; xC epoll divides CPU us/req)"
        ),
        Workload::Idle => println!(
            "(PSS of the server and its children (/proc/PID/smaps_rollup) before = after one warm-up connection, after = all open + {} ms; KiB/conn = (PSS1 - PSS0) / conns; -C epoll = KiB/conn minus C epoll's (a ratio to a near-zero base would mean nothing); kernel socket memory is not in PSS; CPU us/conn = server CPU to accept, serve one round trip and keep each connection)",
            IDLE_SETTLE.as_millis()
        ),
    }
    println!();
}

/// The median of each figure across repeats (each figure on its own).
fn median(samples: &[Outcome]) -> Option<Outcome> {
    fn mid(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    let traffic: Vec<Traffic> = samples
        .iter()
        .filter_map(|o| match o {
            Outcome::Traffic(t) => Some(*t),
            Outcome::Memory(_) => None,
        })
        .collect();
    let memory: Vec<Memory> = samples
        .iter()
        .filter_map(|o| match o {
            Outcome::Memory(m) => Some(*m),
            Outcome::Traffic(_) => None,
        })
        .collect();
    if !traffic.is_empty() {
        let f = |g: fn(&Traffic) -> f64| mid(traffic.iter().map(g).collect());
        return Some(Outcome::Traffic(Traffic {
            req_s: f(|t| t.req_s),
            mb_s: f(|t| t.mb_s),
            p50_us: f(|t| t.p50_us),
            p99_us: f(|t| t.p99_us),
            p999_us: f(|t| t.p999_us),
            cpu_us: f(|t| t.cpu_us),
        }));
    }
    if !memory.is_empty() {
        let f = |g: fn(&Memory) -> f64| mid(memory.iter().map(g).collect());
        return Some(Outcome::Memory(Memory {
            conns: f(|m| m.conns),
            open_s: f(|m| m.open_s),
            procs: f(|m| m.procs),
            pss_before_kib: f(|m| m.pss_before_kib),
            pss_after_kib: f(|m| m.pss_after_kib),
            kib_per_conn: f(|m| m.kib_per_conn),
            cpu_us_per_conn: f(|m| m.cpu_us_per_conn),
        }));
    }
    None
}
