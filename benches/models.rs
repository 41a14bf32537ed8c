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
//! Where they are installed (`scripts/install-peers.sh`), the peers a user
//! would pick instead get rows too: `socat TCP-LISTEN:P,fork,reuseaddr PIPE`,
//! `ncat -l -k 127.0.0.1 P -e /bin/cat` and xinetd's internal echo service.
//! They cannot print their port, so the bench picks a free one (bind
//! 127.0.0.1:0, read it, drop it), starts the peer on it pinned like the
//! models, and waits (at most 5 s) until a connect succeeds. Their CPU is
//! counted the same way, forked children included. They fork a process per
//! connection, so workload 4 (10,000 idle connections) is n/a for them.
//!
//! The cells themselves (start a server pinned to one CPU, drive a workload
//! from another, read its CPU and PSS from `/proc`) are the library's
//! [`netecho::bench::models::measure`], the same code `netecho bench
//! --models` runs; this file adds the baselines, repeats, medians and ratios.
//! The primary figure is **server CPU per request**: utime+stime+cutime+cstime
//! (`/proc/PID/stat` fields 14–17) of the server plus its live descendants'
//! run time, read when the measured window opens and closes, divided by the
//! requests completed in it.
//!
//! Environment (all optional):
//! - `NETECHO_BENCH_SECS` (3): measured seconds per cell, after a warm-up of
//!   min(1 s, that). Ticks are 10 ms, so shorter windows are for development;
//! - `NETECHO_BENCH_MODELS`: comma list of servers, from `c-epoll`, the
//!   `netecho serve --model` names and the peers `socat`, `ncat`, `xinetd`
//!   (default: `c-epoll`, the eight models and the installed peers);
//! - `NETECHO_BENCH_WORKLOADS`: comma list of `1`–`4` (or `small`, `large`,
//!   `connect`, `idle`); default all four;
//! - `NETECHO_BENCH_REPEAT` (1): runs per cell; the tables show medians.
//!
//! The `netecho` under test is the binary cargo builds for benches
//! (`CARGO_BIN_EXE_netecho`, that is `target/release/netecho`): `cargo bench`
//! builds the package's binaries before it runs a bench, so no build step
//! happens here. A server's last stderr line goes into its error row.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use netecho::bench::models::{
    self, DEFAULT_MODELS, IDLE_CONNS, IDLE_SETTLE, LARGE_MSG, Memory, Outcome, SMALL_MSG, Server,
    Setup, Skip, Traffic, Workload, num,
};
use netecho::bench::spawn;
use netecho::net::pattern;
use netecho::sys::{proc, raise_nofile_limit};

/// Errors here end the run before any cell; a message is all a reader needs.
type Res<T> = Result<T, String>;

/// The C baseline's name in `NETECHO_BENCH_MODELS` and in the tables.
const C_EPOLL: &str = "c-epoll";

/// Peer echo servers, by their name in `NETECHO_BENCH_MODELS` and the tables.
const PEERS: [&str; 3] = ["socat", "ncat", "xinetd"];
/// A peer that accepts no connection by then has failed to start.
const PEER_READY: Duration = Duration::from_secs(5);
/// How long a peer's group may take to exit after SIGTERM before SIGKILL.
const PEER_STOP: Duration = Duration::from_secs(5);
/// Longest wait for a killed peer's children to be gone.
const PEER_GONE: Duration = Duration::from_secs(1);
/// How often the peer start and stop waits look again.
const PEER_POLL: Duration = Duration::from_millis(10);
/// Connect timeout of the readiness probe (a refused connect returns at once).
const PEER_PROBE: Duration = Duration::from_millis(500);
/// Measured seconds per cell when `NETECHO_BENCH_SECS` is unset.
const DEFAULT_SECS: f64 = models::DEFAULT_SECS.as_secs_f64();
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
/// Bound on the floor's round trips, far above what a window can reach, so
/// no loop depends on the clock alone to stop.
const MAX_REQUESTS: u64 = 1_000_000_000;
/// Highest latency the floor's histogram holds (ns); anything slower is clamped.
const HIST_MAX_NS: u64 = 60_000_000_000;
/// Significant figures of the floor's latency histogram.
const HIST_SIGFIG: u8 = 3;

/// Everything the run was asked for and found about the machine.
struct Config {
    /// How each cell is measured (window, warm-up, pinning, idle size).
    setup: Setup,
    /// Runs per cell; the tables show medians.
    repeat: usize,
    /// Servers in table order.
    servers: Vec<String>,
    /// Workloads in table order.
    workloads: Vec<Workload>,
    /// Where servers and the kernel floor run.
    server_cpu: usize,
    /// Where the load generator (this process) runs.
    load_cpu: usize,
    /// CPUs this process may use, counted before it pins itself (`nproc`).
    nproc: usize,
    /// The binary under test.
    netecho: PathBuf,
    /// Scratch space under `target/`: the C baseline.
    work_dir: PathBuf,
    /// RLIMIT_NOFILE after raising the soft limit (soft, hard).
    nofile: (u64, u64),
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
            Ok(s) => {
                let mut servers = Vec::new();
                for name in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if name == C_EPOLL || PEERS.contains(&name) {
                        servers.push(name.to_string());
                    } else {
                        let list = models::parse_models(name).map_err(|e| {
                            format!(
                                "NETECHO_BENCH_MODELS: {e} (or {C_EPOLL}, {})",
                                PEERS.join(", ")
                            )
                        })?;
                        servers.extend(list.0);
                    }
                }
                let mut seen = Vec::with_capacity(servers.len());
                servers.retain(|s| {
                    let first = !seen.contains(s);
                    seen.push(s.clone());
                    first
                });
                servers
            }
            Err(_) => std::iter::once(C_EPOLL)
                .chain(DEFAULT_MODELS.iter().copied())
                .chain(PEERS.into_iter().filter(|p| find_in_path(p).is_some()))
                .map(String::from)
                .collect(),
        };
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
        let cpus = spawn::allowed_cpus().map_err(|e| e.to_string())?;
        let server_cpu = cpus.first().copied().unwrap_or(0);
        // With one CPU the comparison still holds (same for every server),
        // only the absolute figures mean less; the header says so.
        let load_cpu = cpus.get(1).copied().unwrap_or(server_cpu);
        let netecho = PathBuf::from(env!("CARGO_BIN_EXE_netecho"));
        let target = netecho
            .parent()
            .and_then(Path::parent)
            .map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nofile = raise_nofile_limit();
        Ok(Config {
            setup: Setup {
                window: secs,
                warmup: MAX_WARMUP.min(secs),
                idle_conns: models::idle_conns_within(IDLE_CONNS, nofile.0),
                server_cpu: (cpus.len() > 1).then_some(server_cpu),
                clk_tck: proc::clock_ticks(),
            },
            repeat,
            servers,
            workloads,
            server_cpu,
            load_cpu,
            nproc: cpus.len(),
            netecho,
            work_dir: target.join("netecho-bench"),
            nofile,
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
    if cfg.nproc > 1 {
        spawn::pin_current_thread(cfg.load_cpu).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(|e| format!("creating {}: {e}", cfg.work_dir.display()))?;
    print_header(&cfg);
    let c_epoll = if cfg.servers.iter().any(|s| s == C_EPOLL) {
        let built = build_c_epoll(&cfg);
        match &built {
            Ok(path) => println!(
                "c-epoll:  {} (cc -O2 -Wall benches/c/epoll_echo.c), pinned like the models",
                path.display()
            ),
            Err(e) => println!("c-epoll:  {e}"),
        }
        Some(built)
    } else {
        None
    };
    println!();
    for &w in &cfg.workloads {
        let mut rows = Vec::new();
        if matches!(w, Workload::Small | Workload::Large) {
            rows.push(floor_row(w, &cfg));
        }
        for name in &cfg.servers {
            if PEERS.contains(&name.as_str()) {
                rows.push(peer_row(name, w, &cfg));
                continue;
            }
            let server = match (name.as_str(), &c_epoll) {
                (C_EPOLL, Some(Ok(program))) => Ok(Server::Other {
                    label: C_EPOLL.into(),
                    program: program.clone(),
                }),
                (C_EPOLL, Some(Err(e))) => Err(e.clone()),
                (C_EPOLL, None) => Err("not built".into()),
                _ => Ok(Server::Model {
                    exe: cfg.netecho.clone(),
                    model: name.clone(),
                }),
            };
            rows.push(match server {
                Ok(server) => server_row(&server, w, &cfg),
                Err(e) => Row {
                    label: name.clone(),
                    note: String::new(),
                    cell: Err(Skip::Failed(e)),
                },
            });
        }
        print_table(w, &cfg, &rows);
    }
    Ok(())
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
        match kernel_floor(len, FLOOR_WINDOW.min(cfg.setup.window), cfg) {
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
fn server_row(server: &Server, w: Workload, cfg: &Config) -> Row {
    let label = server.label().to_string();
    let mut samples = Vec::new();
    let mut notes = Vec::new();
    for _ in 0..cfg.repeat {
        let began = Instant::now();
        match models::measure(server, w, &cfg.setup) {
            Ok((outcome, note)) => {
                progress(&label, w, &outcome, began.elapsed());
                notes.push(note);
                samples.push(outcome);
            }
            Err(skip) => {
                if let Skip::Failed(e) = &skip {
                    eprintln!("[w{}] {label}: error: {e}", w.number());
                }
                return Row {
                    label,
                    note: String::new(),
                    cell: Err(skip),
                };
            }
        }
    }
    notes.retain(|n| !n.is_empty());
    notes.dedup();
    Row {
        label,
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
// Peers: socat, ncat, xinetd
// ---------------------------------------------------------------------------

/// Runs one peer on one workload `repeat` times.
fn peer_row(name: &str, w: Workload, cfg: &Config) -> Row {
    let row = |note: String, cell| Row {
        label: name.to_string(),
        note,
        cell,
    };
    if w == Workload::Idle {
        let n = cfg.setup.idle_conns;
        return row(
            String::new(),
            Err(Skip::NotApplicable(format!(
                "forks a process per connection: {n} idle connections would be {n} processes"
            ))),
        );
    }
    let Some(prog) = find_in_path(name) else {
        return row(
            String::new(),
            Err(Skip::NotApplicable(
                "not installed (scripts/install-peers.sh)".into(),
            )),
        );
    };
    let mut samples = Vec::new();
    for _ in 0..cfg.repeat {
        let began = Instant::now();
        match peer_measure(name, &prog, w, cfg) {
            Ok(outcome) => {
                progress(name, w, &outcome, began.elapsed());
                samples.push(outcome);
            }
            Err(e) => {
                eprintln!("[w{}] {name}: error: {e}", w.number());
                return row(String::new(), Err(Skip::Failed(e)));
            }
        }
    }
    row(
        "fork per conn".into(),
        median(&samples).ok_or(Skip::Failed("no sample".into())),
    )
}

/// A free loopback port: bind 127.0.0.1:0, read the port, let it go.
fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("picking a port: {e}"))?;
    let port = l
        .local_addr()
        .map_err(|e| format!("picking a port: {e}"))?
        .port();
    drop(l);
    Ok(port)
}

/// The arguments that make `name` an echo server on 127.0.0.1:`port`
/// (xinetd's config file is written here).
fn peer_args(name: &str, port: u16, cfg: &Config) -> Res<Vec<String>> {
    Ok(match name {
        "socat" => vec![
            format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
            "PIPE".into(),
        ],
        "ncat" => vec![
            "-l".into(),
            "-k".into(),
            "127.0.0.1".into(),
            port.to_string(),
            "-e".into(),
            "/bin/cat".into(),
        ],
        "xinetd" => {
            // A service on a port /etc/services does not give it must be
            // UNLISTED; `id` picks the stream variant of the internal echo.
            let conf = cfg.work_dir.join("xinetd-echo.conf");
            let text = format!(
                "defaults\n{{\n}}\n\nservice echo\n{{\n\ttype = INTERNAL UNLISTED\n\tid = echo-stream\n\tsocket_type = stream\n\tprotocol = tcp\n\tuser = root\n\twait = no\n\tport = {port}\n\tbind = 127.0.0.1\n\tflags = REUSE\n\tinstances = UNLIMITED\n\tper_source = UNLIMITED\n\tcps = 1000000 1\n}}\n"
            );
            std::fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;
            vec![
                "-dontfork".into(),
                "-f".into(),
                conf.display().to_string(),
                "-pidfile".into(),
                cfg.work_dir.join("xinetd.pid").display().to_string(),
            ]
        }
        _ => return Err(format!("unknown peer {name}")),
    })
}

/// A peer we started, leader of its own process group.
struct Peer {
    child: Child,
    pid: i32,
    /// Where its stderr goes, to explain a failure.
    log: PathBuf,
}

impl Peer {
    /// The last line of its stderr as `; its stderr: ...`, or nothing.
    fn tail(&self) -> String {
        std::fs::read_to_string(&self.log)
            .ok()
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string)
            })
            .map_or_else(String::new, |l| format!("; its stderr: {}", l.trim()))
    }
}

impl Drop for Peer {
    /// SIGTERM to the group, SIGKILL if the leader is still there after
    /// [`PEER_STOP`], then SIGKILL to whatever of the group is left (forked
    /// per-connection children). The group is ours: its leader is our child,
    /// and a group id is not reused while any member lives.
    fn drop(&mut self) {
        // SAFETY: killpg only sends a signal to the group we created.
        unsafe { libc::killpg(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + PEER_STOP;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(PEER_POLL);
        }
        // SAFETY: as above.
        unsafe { libc::killpg(self.pid, libc::SIGKILL) };
        let _ = self.child.wait();
        // Until the killed children are gone (bounded), so they do not run
        // into the next cell.
        let deadline = Instant::now() + PEER_GONE;
        // SAFETY: signal 0 only asks whether the group still has members.
        while unsafe { libc::killpg(self.pid, 0) } == 0 && Instant::now() < deadline {
            thread::sleep(PEER_POLL);
        }
    }
}

/// Starts `prog args` in its own process group, pinned to the server CPU,
/// and waits until a connect to `addr` succeeds (at most [`PEER_READY`]).
fn start_peer(
    name: &str,
    prog: &Path,
    args: &[String],
    addr: SocketAddr,
    cfg: &Config,
) -> Res<Peer> {
    let log = cfg.work_dir.join(format!("{name}.stderr"));
    let err_file =
        std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let cpu = cfg.setup.server_cpu;
    // SAFETY: zeroed is a valid empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if let Some(c) = cpu.filter(|&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `c` is below CPU_SETSIZE, so the bit is inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let mut cmd = Command::new(prog);
    // SAFETY: the closure runs between fork and exec and makes only raw
    // syscalls on values built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // The bench dying must not leave a pinned peer behind.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if cpu.is_some()
                && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", prog.display()))?;
    let pid = i32::try_from(child.id()).map_err(|_| "peer pid out of range".to_string())?;
    let mut peer = Peer { child, pid, log };
    let deadline = Instant::now() + PEER_READY;
    loop {
        if let Ok(Some(status)) = peer.child.try_wait() {
            return Err(format!("{name} exited ({status}){}", peer.tail()));
        }
        if TcpStream::connect_timeout(&addr, PEER_PROBE).is_ok() {
            return Ok(peer);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{name} accepted no connection on {addr} within {} s{}",
                PEER_READY.as_secs(),
                peer.tail()
            ));
        }
        thread::sleep(PEER_POLL);
    }
}

/// One peer cell: a fresh peer on a free port, one workload, then stopped.
fn peer_measure(name: &str, prog: &Path, w: Workload, cfg: &Config) -> Res<Outcome> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let args = peer_args(name, port, cfg)?;
    let peer = start_peer(name, prog, &args, addr, cfg)?;
    // Let the readiness probe's child (if it forked one) finish.
    thread::sleep(Duration::from_millis(50));
    let (conns, size, new_conn) = match w {
        Workload::Small => (models::SMALL_CONNS, SMALL_MSG, false),
        Workload::Large => (models::LARGE_CONNS, LARGE_MSG, false),
        Workload::Connect => (models::CONNECT_PARALLEL, SMALL_MSG, true),
        Workload::Idle => return Err("workload 4 is n/a for peers".into()),
    };
    let out = models::traffic(addr, peer.pid, conns, size, new_conn, &cfg.setup)
        .map_err(|e| e.to_string());
    let tail = peer.tail();
    drop(peer);
    out.map_err(|e| format!("{e}{tail}"))
}

// ---------------------------------------------------------------------------
// Kernel floor
// ---------------------------------------------------------------------------

/// The kernel floor for `len`-byte messages, measured on a thread pinned to
/// the server CPU. `cpu_us` is half a round trip's CPU: the one read and one
/// write a server must make per request.
fn kernel_floor(len: usize, window: Duration, cfg: &Config) -> Res<Traffic> {
    let cpu = cfg.server_cpu;
    let pin = cfg.nproc > 1;
    thread::Builder::new()
        .name("kernel-floor".into())
        .spawn(move || {
            if pin {
                spawn::pin_current_thread(cpu).map_err(|e| e.to_string())?;
            }
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
    let mut msg = vec![0u8; len];
    pattern::fill(0, 0, &mut msg);
    let msg = &msg[..];
    let mut buf = vec![0u8; len];
    let mut hist = Histogram::<u64>::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG)
        .map_err(|e| format!("histogram: {e:?}"))?;
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

/// Microseconds at a quantile.
fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

// ---------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------

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
        "method:   server pinned to CPU {} (sched_setaffinity), load generator on CPU {}; {:.1} s measured after {:.1} s warm-up; median of {}",
        cfg.server_cpu,
        cfg.load_cpu,
        cfg.setup.window.as_secs_f64(),
        cfg.setup.warmup.as_secs_f64(),
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
        cfg.setup.clk_tck
    );
    println!(
        "RLIMIT_NOFILE: soft {}, hard {}{}",
        cfg.nofile.0,
        cfg.nofile.1,
        if cfg.setup.idle_conns < IDLE_CONNS {
            format!(
                "; workload 4 reduced to {} connections (limit minus {})",
                cfg.setup.idle_conns,
                models::FD_MARGIN
            )
        } else {
            String::new()
        }
    );
    let installed: Vec<&str> = PEERS
        .into_iter()
        .filter(|p| find_in_path(p).is_some())
        .collect();
    let asked: Vec<&str> = PEERS
        .into_iter()
        .filter(|p| cfg.servers.iter().any(|s| s == p))
        .collect();
    let missing: Vec<&str> = PEERS
        .into_iter()
        .filter(|p| !installed.contains(p))
        .collect();
    println!(
        "peers:    installed: {}; run: {}{}",
        if installed.is_empty() {
            "none".to_string()
        } else {
            installed.join(", ")
        },
        if asked.is_empty() {
            "none".to_string()
        } else {
            asked.join(", ")
        },
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                "; not installed: {} (scripts/install-peers.sh)",
                missing.join(", ")
            )
        }
    );
    if !asked.is_empty() {
        println!(
            "peer cmds: socat TCP-LISTEN:P,bind=127.0.0.1,fork,reuseaddr PIPE | ncat -l -k 127.0.0.1 P -e /bin/cat | xinetd -dontfork -f {} (internal echo-stream, UNLISTED, port P); P = a free port; pinned like the models; no TCP_NODELAY on their side (their defaults)",
            cfg.work_dir.join("xinetd-echo.conf").display()
        );
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
    println!(
        "Workload {}: {}",
        w.number(),
        w.describe(cfg.setup.idle_conns)
    );
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
