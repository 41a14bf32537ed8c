//! The model benchmark of `BENCHMARKING.md`, written once for both of its
//! front ends: `netecho bench --models` (netecho's own models, a line per
//! cell, an optional chart) and `cargo bench --bench models` (the same
//! cells plus the baselines and peers, repeats, medians and ratios, a table
//! per workload). The front ends only say what to run; a [`Suite`] runs it.
//!
//! # Layout
//! - [`workload`]: the seven workloads, each one constant and its [`Shape`];
//! - [`server`]: what a row measures ([`Server`]: a netecho
//!   [`Model`](crate::serve::Model), a C baseline, a peer, the kernel
//!   floor) and how the names are parsed;
//! - [`cell`]: one server on one workload, measured once;
//! - [`peer`]: socat, ncat and xinetd, started on a free port and stopped;
//! - `cbuild`: the C baselines of `benches/c/`, built with `cc` for the run;
//! - `floor`: the kernel floors (one thread, and one thread per core),
//!   measured in this process;
//! - `report`: the header, the rows, the tables and the chart's panels.
//!
//! Each cell starts its own server on a free loopback port, pinned to the
//! first CPU this process may use, and drives it from the second; the figure
//! that counts is the server's CPU per request, read from `/proc`, forked
//! children included (see [`cell`]).

mod cbuild;
pub(crate) mod cell;
mod floor;
mod growth;
pub(crate) mod peer;
mod report;
pub(crate) mod server;
mod setup;
mod suite;
mod traffic;
pub(crate) mod workload;

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) use cell::{Cell, Memory, Outcome, Stream, Traffic};
pub use peer::Peer;
use server::FLOORS;
pub use server::{
    C_EPOLL, C_SERVERS, CC_FLAGS, CServer, DEFAULT_MODELS, ModelList, Server, parse_models,
    parse_servers,
};
pub use setup::Programs;
pub(crate) use setup::{FD_MARGIN, Machine, Setup, Skip};
pub use suite::{Layout, Row, Suite};
pub use workload::{
    CONNECT_PARALLEL, IDLE_CONNS, LARGE_CONNS, LARGE_MSG, SMALL_CONNS, SMALL_MSG, Shape, Workload,
};

use super::{chart, spawn};
use crate::error::{Error, Result};
use crate::serve::Model;
use crate::sys::stop;

/// Measured seconds per workload when `-d` is not given: 300 clock ticks of
/// a busy server, so tick rounding stays under half a percent.
pub const DEFAULT_SECS: Duration = Duration::from_secs(3);
// Building is the suite's business, so the data in `setup` imports no builder.
impl Programs {
    /// Builds every C baseline among `servers` into [`Programs::scratch`]
    /// (created if need be) with the system `cc`.
    pub fn build_c(&mut self, servers: &[Server]) {
        let made = std::fs::create_dir_all(&self.scratch)
            .map_err(|e| Skip::Failed(format!("creating {}: {e}", self.scratch.display())));
        self.c = servers
            .iter()
            .filter_map(|s| match s {
                Server::C(c) => Some(*c),
                _ => None,
            })
            .map(|c| {
                let built = match &made {
                    Ok(()) => cbuild::build(&c, &self.scratch),
                    Err(e) => Err(e.clone()),
                };
                (c, built)
            })
            .collect();
    }
}

impl Suite {
    /// A suite for this machine, with no servers yet, every workload and one
    /// run per cell. It raises the soft descriptor limit (workload 4 holds
    /// `idle_conns` sockets, fewer if the hard limit is lower) and, with two
    /// CPUs or more, pins the calling thread (the load generator and every
    /// thread it starts) to the second, so servers have the first to
    /// themselves and `--workers 1` compares one core against one core.
    pub fn on_this_machine(
        window: Duration,
        warmup: Duration,
        idle_conns: usize,
        netecho: PathBuf,
    ) -> Result<Suite> {
        let nofile = crate::sys::raise_nofile_limit();
        let machine = Machine {
            cpus: spawn::allowed_cpus()?,
            nofile,
            idle_asked: idle_conns,
        };
        if machine.two_cpus() {
            spawn::pin_current_thread(machine.load_cpu())?;
        }
        Ok(Suite {
            servers: Vec::new(),
            workloads: Workload::ALL.to_vec(),
            repeat: 1,
            setup: Setup {
                window,
                warmup,
                idle_conns: idle_conns_within(idle_conns, nofile.0),
                server_cpu: machine.two_cpus().then(|| machine.server_cpu()),
                load_cpu: machine.two_cpus().then(|| machine.load_cpu()),
                clk_tck: crate::sys::proc::clock_ticks(),
            },
            programs: Programs {
                netecho,
                c: Vec::new(),
                scratch: std::env::temp_dir(),
            },
            machine,
        })
    }

    /// Measures every cell and prints `layout` on `out` as it goes; returns
    /// the rows. Stops early, between cells, once Ctrl-C is [`stop::requested`].
    pub fn run(&self, layout: &Layout, out: &mut impl Write) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        match layout {
            Layout::Lines => {
                print_lines(out, &report::lines_header(self))?;
                'servers: for &server in &self.servers {
                    for &w in &self.workloads {
                        if stop::requested() {
                            break 'servers;
                        }
                        let row = self.row(server, w, false);
                        print_lines(out, &[report::line(&row).trim_end().to_string()])?;
                        rows.push(row);
                    }
                }
                print_lines(out, &[report::lines_legend()])?;
            }
            Layout::Tables { command } => {
                print_lines(out, &report::tables_header(self, command))?;
                'workloads: for &w in &self.workloads {
                    // The floors head every table they apply to, named or not.
                    let floors = FLOORS.into_iter().filter(|_| w.kept_open_size().is_some());
                    let others = self.servers.iter().copied().filter(|s| !s.is_floor());
                    let servers: Vec<Server> = floors.chain(others).collect();
                    let mut runs: Vec<Runs> = servers.iter().map(|_| Runs::default()).collect();
                    // In rounds, every server once a round: a burst of
                    // noise on the shared machine then falls on one run of
                    // several servers, which the medians shed, instead of on
                    // every run of one server (its repeats back to back).
                    for _ in 0..self.repeat.max(1) {
                        for (&server, r) in servers.iter().zip(&mut runs) {
                            if stop::requested() {
                                break 'workloads;
                            }
                            if r.failed.is_none() {
                                r.add(self.sample(server, w, true));
                            }
                        }
                    }
                    let table: Vec<Row> = servers
                        .iter()
                        .zip(runs)
                        .map(|(&server, r)| r.row(server, w))
                        .collect();
                    print_lines(out, &report::table(w, &table, self.setup.idle_conns))?;
                    rows.extend(table);
                }
            }
        }
        self.growth(out)?;
        Ok(rows)
    }

    /// The pool-growth table, when prefork or prethread is among the servers.
    fn growth(&self, out: &mut impl Write) -> Result<()> {
        let pooled: Vec<Model> = self
            .servers
            .iter()
            .filter_map(|s| match s {
                Server::Netecho(m @ (Model::Prefork | Model::Prethread)) => Some(*m),
                _ => None,
            })
            .collect();
        if pooled.is_empty() || stop::requested() {
            return Ok(());
        }
        let rows: Vec<_> = pooled
            .into_iter()
            .map(|m| (m, growth::measure(m, &self.programs, &self.setup)))
            .collect();
        print_lines(out, &growth::table(&rows))
    }

    /// One server on one workload, [`Suite::repeat`] times in a row: the
    /// median of each figure, or the first run's reason for having none.
    fn row(&self, server: Server, w: Workload, progress: bool) -> Row {
        let mut runs = Runs::default();
        for _ in 0..self.repeat.max(1) {
            if runs.failed.is_some() {
                break;
            }
            runs.add(self.sample(server, w, progress));
        }
        runs.row(server, w)
    }

    /// One run of one server on one workload. `progress`: a line on stderr,
    /// so a long run shows it is alive.
    fn sample(
        &self,
        server: Server,
        w: Workload,
        progress: bool,
    ) -> std::result::Result<Cell, Skip> {
        let label = server.label();
        let began = Instant::now();
        let got = cell::measure(server, w, &self.setup, &self.programs);
        if progress {
            match &got {
                Ok(cell) => eprintln!(
                    "[w{}] {label}: {} ({:.1} s)",
                    w.number,
                    brief(&cell.outcome),
                    began.elapsed().as_secs_f64()
                ),
                Err(Skip::Failed(e)) => eprintln!("[w{}] {label}: error: {e}", w.number),
                Err(Skip::NotApplicable(_)) => {}
            }
        }
        got
    }
}

/// The runs of one server on one workload, as they come in.
#[derive(Default)]
struct Runs {
    samples: Vec<Outcome>,
    /// Each different note once.
    notes: Vec<String>,
    /// The first run that had no figures, and why: the row says it.
    failed: Option<Skip>,
}

impl Runs {
    fn add(&mut self, run: std::result::Result<Cell, Skip>) {
        match run {
            Ok(cell) => {
                if !cell.note.is_empty() && !self.notes.contains(&cell.note) {
                    self.notes.push(cell.note);
                }
                self.samples.push(cell.outcome);
            }
            Err(skip) => {
                if self.failed.is_none() {
                    self.failed = Some(skip);
                }
            }
        }
    }

    /// The row: the median of each figure, or why there is none.
    fn row(self, server: Server, w: Workload) -> Row {
        let cell = match self.failed {
            Some(skip) => Err(skip),
            None => median(&self.samples)
                .map(|outcome| Cell {
                    outcome,
                    note: self.notes.join("; "),
                })
                .ok_or(Skip::Failed("no sample".into())),
        };
        Row {
            server,
            workload: w,
            cell,
        }
    }
}

/// A run's figures in a few words, for a progress line.
fn brief(o: &Outcome) -> String {
    match o {
        Outcome::Traffic(t) => format!("{:.0} req/s, {:.2} µs CPU per request", t.req_s, t.cpu_us),
        Outcome::Memory(m) => format!(
            "{:.0} connections, {:.0} B each",
            m.conns,
            m.kib_per_conn * 1024.0
        ),
        Outcome::Stream(s) => format!(
            "{:.0} MiB/s, {:.1} µs CPU per MiB echoed",
            s.mib_s, s.cpu_us_per_mib
        ),
    }
}

/// The median of each figure across repeats, each figure on its own; `None`
/// without samples. The samples of one cell are all of one kind.
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
    match samples.first()? {
        Outcome::Traffic(_) => {
            let all: Vec<&Traffic> = samples
                .iter()
                .filter_map(|o| match o {
                    Outcome::Traffic(t) => Some(t),
                    _ => None,
                })
                .collect();
            let f = |g: fn(&Traffic) -> f64| mid(all.iter().map(|t| g(t)).collect());
            Some(Outcome::Traffic(Traffic {
                req_s: f(|t| t.req_s),
                mb_s: f(|t| t.mb_s),
                p50_us: f(|t| t.p50_us),
                p99_us: f(|t| t.p99_us),
                p999_us: f(|t| t.p999_us),
                cpu_us: f(|t| t.cpu_us),
                machine_us: f(|t| t.machine_us),
            }))
        }
        Outcome::Memory(_) => {
            let all: Vec<&Memory> = samples
                .iter()
                .filter_map(|o| match o {
                    Outcome::Memory(m) => Some(m),
                    _ => None,
                })
                .collect();
            let f = |g: fn(&Memory) -> f64| mid(all.iter().map(|m| g(m)).collect());
            Some(Outcome::Memory(Memory {
                conns: f(|m| m.conns),
                open_s: f(|m| m.open_s),
                procs: f(|m| m.procs),
                pss_before_kib: f(|m| m.pss_before_kib),
                pss_after_kib: f(|m| m.pss_after_kib),
                kib_per_conn: f(|m| m.kib_per_conn),
                cpu_us_per_conn: f(|m| m.cpu_us_per_conn),
                machine_us_per_conn: f(|m| m.machine_us_per_conn),
            }))
        }
        Outcome::Stream(first) => {
            let all: Vec<&Stream> = samples
                .iter()
                .filter_map(|o| match o {
                    Outcome::Stream(s) => Some(s),
                    _ => None,
                })
                .collect();
            let f = |g: fn(&Stream) -> f64| mid(all.iter().map(|s| g(s)).collect());
            Some(Outcome::Stream(Stream {
                conns: first.conns,
                mib_s: f(|s| s.mib_s),
                mib: f(|s| s.mib),
                cpu_us_per_mib: f(|s| s.cpu_us_per_mib),
                machine_us_per_mib: f(|s| s.machine_us_per_mib),
            }))
        }
    }
}

/// Workload 4's connections under a descriptor limit: this process and the
/// server each hold one per connection, plus [`FD_MARGIN`] of their own.
pub(crate) fn idle_conns_within(wanted: usize, nofile_soft: u64) -> usize {
    let room = nofile_soft.saturating_sub(FD_MARGIN);
    wanted.min(usize::try_from(room).unwrap_or(wanted)).max(1)
}

/// What `netecho bench --models` takes from its command line.
#[derive(Debug)]
pub(crate) struct Options<'a> {
    /// `-d`: the window per workload (default [`DEFAULT_SECS`]).
    pub(crate) duration: Option<Duration>,
    pub(crate) warmup: Duration,
    pub(crate) idle_conns: usize,
    /// `--tls`: each model's TLS row after its plain one.
    pub(crate) tls: bool,
    pub(crate) workloads: Option<&'a WorkloadList>,
    pub(crate) chart: Option<&'a std::path::Path>,
}

/// Runs `netecho bench --models`: the suite over `models` in the
/// [`Layout::Lines`] layout, then the chart if `--chart` asked for one.
pub(crate) fn run(opt: &Options<'_>, models: &ModelList) -> Result<()> {
    stop::install().map_err(Error::io("installing signal handlers"))?;
    let exe = std::env::current_exe().map_err(Error::io("finding the netecho binary"))?;
    let window = opt.duration.unwrap_or(DEFAULT_SECS);
    let mut suite = Suite::on_this_machine(window, opt.warmup, opt.idle_conns, exe)?;
    // `--tls`: each model's TLS row after its plain one.
    suite.servers = models
        .0
        .iter()
        .flat_map(|&s| {
            let tls = match s {
                Server::Netecho(m) if opt.tls => Some(Server::Tls(m)),
                _ => None,
            };
            [Some(s), tls]
        })
        .flatten()
        .collect();
    if let Some(w) = opt.workloads {
        suite.workloads = w.0.clone();
    } else if let Some(w) = workloads_from_env()? {
        suite.workloads = w;
    }
    suite.programs.scratch =
        std::env::temp_dir().join(format!("netecho-bench-{}", std::process::id()));
    suite.programs.build_c(&suite.servers);
    let rows = suite.run(&Layout::Lines, &mut io::stdout().lock());
    let _ = std::fs::remove_dir_all(&suite.programs.scratch);
    let rows = rows?;
    if stop::requested() {
        return Err(Error::BenchFailed(
            "interrupted before every model was measured".into(),
        ));
    }
    if let Some(path) = opt.chart {
        let machine = &suite.machine;
        let subtitle = format!(
            "netecho bench --models, {:.1} s per workload, server {}",
            window.as_secs_f64(),
            if machine.two_cpus() {
                format!(
                    "on CPU {}, load on CPU {}",
                    machine.server_cpu(),
                    machine.load_cpu()
                )
            } else {
                "and load sharing one CPU".into()
            }
        );
        let panels = report::chart_panels(&rows, &suite.workloads, suite.setup.idle_conns);
        chart::write_svg(path, &subtitle, &panels)?;
        print_lines(
            &mut io::stdout().lock(),
            &[format!("chart: {}", path.display())],
        )?;
    }
    Ok(())
}

/// The workloads `NETECHO_BENCH_WORKLOADS` names (numbers or names,
/// commas between), which `netecho bench --models` honours as `cargo bench
/// --bench models` does (`--workloads` wins over it); `None` when it is
/// unset.
pub fn workloads_from_env() -> Result<Option<Vec<Workload>>> {
    let Ok(list) = std::env::var("NETECHO_BENCH_WORKLOADS") else {
        return Ok(None);
    };
    parse_workloads(&list)
        .map(|w| Some(w.0))
        .map_err(|why| Error::Usage(format!("NETECHO_BENCH_WORKLOADS: {why}")))
}

/// Workloads chosen by name or number (`--workloads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkloadList(pub(crate) Vec<Workload>);

/// `small,large` or `1,2`: the workloads to run, each named once at most;
/// an unknown one is refused with the known ones.
pub(crate) fn parse_workloads(list: &str) -> std::result::Result<WorkloadList, String> {
    let mut out: Vec<Workload> = Vec::new();
    for w in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let w = Workload::parse(w)
            .ok_or_else(|| format!("unknown workload '{w}'; known: {}", Workload::known()))?;
        if !out.contains(&w) {
            out.push(w);
        }
    }
    if out.is_empty() {
        return Err("no workload named; e.g. small,large".into());
    }
    Ok(WorkloadList(out))
}

/// Writes lines to `out`; a reader that went away (`| head`) is not an error.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_workload_fits_the_descriptor_limit() {
        assert_eq!(idle_conns_within(10_000, 1024), 924);
        assert_eq!(idle_conns_within(200, 1_048_576), 200);
        assert_eq!(idle_conns_within(10_000, 0), 1);
    }

    #[test]
    fn medians_take_each_figure_on_its_own() {
        let t = |req_s, cpu_us| {
            Outcome::Traffic(Traffic {
                req_s,
                mb_s: 0.0,
                p50_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                cpu_us,
                machine_us: 2.0 * cpu_us,
            })
        };
        let Some(Outcome::Traffic(m)) = median(&[t(3.0, 1.0), t(1.0, 9.0), t(2.0, 5.0)]) else {
            panic!("no median of three samples");
        };
        assert_eq!((m.req_s, m.cpu_us, m.machine_us), (2.0, 5.0, 10.0));
        let Some(Outcome::Traffic(m)) = median(&[t(1.0, 1.0), t(2.0, 4.0)]) else {
            panic!("no median of two samples");
        };
        assert_eq!((m.req_s, m.cpu_us), (1.5, 2.5));
        assert!(median(&[]).is_none());
    }

    #[test]
    fn a_c_baseline_that_was_not_built_fails_its_cells() {
        let programs = Programs {
            netecho: PathBuf::from("netecho"),
            c: vec![(C_EPOLL, Err(Skip::Failed("cc -O2 failed".into())))],
            scratch: std::env::temp_dir(),
        };
        let failed = |r: std::result::Result<&std::path::Path, Skip>| match r {
            Err(Skip::Failed(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(failed(programs.c_program(C_EPOLL)), "cc -O2 failed");
        let other = CServer {
            name: "c-other",
            source: "other.c",
            text: "",
            libs: &[],
            needs: None,
        };
        assert_eq!(failed(programs.c_program(other)), "not built");
    }
}
