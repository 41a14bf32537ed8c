//! `cargo bench --bench models`: the model benchmark of `BENCHMARKING.md`.
//!
//! Absolute speed on these shared machines moves from run to run, so every
//! figure that counts is a ratio to a baseline measured in the same run: the
//! two kernel floors (one thread owning both ends; one thread per core) and
//! the C baselines of `benches/c/` (C epoll, C splice, C io_uring), which the
//! suite builds with `cc -O2` into `target/netecho-bench/` (c-uring needs
//! Debian's liburing-dev, and is n/a with that note without it). Where they
//! are installed (`scripts/install-peers.sh`), socat, ncat and xinetd get
//! rows too.
//!
//! Everything else is the library's suite, [`netecho::bench::models`], the
//! same code `netecho bench --models` runs: the servers, the C builds, the
//! workloads, the cells, repeats, medians, ratios and tables. This file only
//! reads the environment.
//!
//! Environment (all optional):
//! - `NETECHO_BENCH_SECS` (3): measured seconds per cell, after a warm-up of
//!   min(1 s, that). Ticks are 10 ms, so shorter windows are for development;
//! - `NETECHO_BENCH_MODELS`: comma list of servers, from the C baselines
//!   (`c-epoll`, `c-splice`, `c-uring`), the `netecho serve --model` names (or `all`) and the peers
//!   `socat`, `ncat`, `xinetd`; a model name with `+tls` (`epoll+tls`,
//!   `all+tls`) for its TLS row (`serve --tls-listen`, rustls on both ends)
//!   and `socat-tls` for `socat OPENSSL-LISTEN:…,fork PIPE` (default: the C
//!   baselines, the eight models, the installed peers, then the eight TLS
//!   rows and socat-tls where socat is installed);
//! - `NETECHO_BENCH_WORKLOADS`: comma list of `1`–`7` (or `small`, `large`,
//!   `connect`, `idle`, `many`, `bulk`, `stream`); default all seven (the
//!   floors head every table of messages on kept connections, named or not);
//! - `NETECHO_BENCH_REPEAT` (1): runs per cell; the tables show medians.
//!
//! The `netecho` under test is the binary cargo builds for benches
//! (`CARGO_BIN_EXE_netecho`, that is `target/release/netecho`): `cargo bench`
//! builds the package's binaries before it runs a bench, so no build step
//! happens here. A server's last stderr line goes into its error row.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use netecho::bench::models::{
    self, C_SERVERS, DEFAULT_MODELS, IDLE_CONNS, Layout, Peer, Server, Suite, Workload,
};

/// Errors here end the run before any cell; a message is all a reader needs.
type Res<T> = Result<T, String>;

/// The knobs, in the order the `command:` line of the header shows them.
const KNOBS: [&str; 4] = [
    "NETECHO_BENCH_SECS",
    "NETECHO_BENCH_MODELS",
    "NETECHO_BENCH_WORKLOADS",
    "NETECHO_BENCH_REPEAT",
];
/// Measured seconds per cell when `NETECHO_BENCH_SECS` is unset.
const DEFAULT_SECS: f64 = models::DEFAULT_SECS.as_secs_f64();
/// Longest measured window accepted, so a typo cannot make a run of hours.
const MAX_SECS: f64 = 600.0;
/// Most repeats accepted, for the same reason.
const MAX_REPEAT: usize = 20;
/// Warm-up before each window: long enough for lazy setup (thread spawns,
/// page faults, the first forks) to be done before counting starts.
const MAX_WARMUP: Duration = Duration::from_secs(1);

/// What the environment asks for.
struct Knobs {
    window: Duration,
    repeat: usize,
    servers: Vec<Server>,
    workloads: Vec<Workload>,
}

impl Knobs {
    /// Reads the environment; an unusable setting is an error.
    fn from_env() -> Res<Knobs> {
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
        let repeat = match std::env::var("NETECHO_BENCH_REPEAT") {
            Ok(s) => match s.trim().parse::<usize>() {
                Ok(v) if (1..=MAX_REPEAT).contains(&v) => v,
                _ => return Err(format!("NETECHO_BENCH_REPEAT={s}: want 1-{MAX_REPEAT}")),
            },
            Err(_) => 1,
        };
        let servers = match std::env::var("NETECHO_BENCH_MODELS") {
            Ok(s) => models::parse_servers(&s).map_err(|e| format!("NETECHO_BENCH_MODELS: {e}"))?,
            Err(_) => C_SERVERS
                .iter()
                .map(|&c| Server::C(c))
                .chain(DEFAULT_MODELS.iter().map(|&m| Server::Netecho(m)))
                .chain(
                    Peer::ALL
                        .into_iter()
                        .filter(|p| p.program().is_some())
                        .map(Server::Peer),
                )
                .chain(DEFAULT_MODELS.iter().map(|&m| Server::Tls(m)))
                .chain(
                    Some(Peer::SocatTls)
                        .filter(|p| p.program().is_some())
                        .map(Server::Peer),
                )
                .collect(),
        };
        let workloads = models::workloads_from_env()
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| Workload::ALL.to_vec());
        if servers.is_empty() || workloads.is_empty() {
            return Err(
                "nothing to run: empty NETECHO_BENCH_MODELS or NETECHO_BENCH_WORKLOADS".into(),
            );
        }
        Ok(Knobs {
            window: Duration::from_secs_f64(secs),
            repeat,
            servers,
            workloads,
        })
    }

    /// The command that reproduces this run, with the knobs that were set.
    fn command() -> String {
        let set: String = KNOBS
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
            .collect();
        format!("{set}cargo bench --bench models")
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

/// Builds the C servers asked for, then runs the library's suite: the
/// header, then one table per workload as soon as it is done.
fn run() -> Res<()> {
    let knobs = Knobs::from_env()?;
    let netecho = PathBuf::from(env!("CARGO_BIN_EXE_netecho"));
    let work_dir = netecho
        .parent()
        .and_then(Path::parent)
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("netecho-bench");
    // From here on this thread (load, /proc reads, printing) stays off the
    // servers' CPU.
    let mut suite = Suite::on_this_machine(
        knobs.window,
        MAX_WARMUP.min(knobs.window),
        IDLE_CONNS,
        netecho,
    )
    .map_err(|e| e.to_string())?;
    suite.programs.scratch = work_dir;
    suite.programs.build_c(&knobs.servers);
    suite.servers = knobs.servers;
    suite.workloads = knobs.workloads;
    suite.repeat = knobs.repeat;
    let layout = Layout::Tables {
        command: Knobs::command(),
    };
    suite
        .run(&layout, &mut std::io::stdout().lock())
        .map(drop)
        .map_err(|e| e.to_string())
}
