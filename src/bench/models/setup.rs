//! How the cells of a run are measured: the window and CPUs ([`Setup`]),
//! the programs they start ([`Programs`]), the machine found ([`Machine`]),
//! and why a cell may have no figures ([`Skip`]). Plain data that every
//! part of the suite reads; it imports none of them but the servers' names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::server::CServer;

/// Descriptors left for everything but workload 4's connections (listeners,
/// pipes, epoll) in this process and in the server.
pub(crate) const FD_MARGIN: u64 = 100;

/// Why a cell has no figures.
#[derive(Debug, Clone)]
pub(crate) enum Skip {
    /// The server cannot serve the workload by design.
    NotApplicable(String),
    /// It was run and failed.
    Failed(String),
}

/// How every cell is measured.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// Measured window per throughput workload.
    pub(crate) window: Duration,
    /// Load before the window opens: lazy setup (thread spawns, page
    /// faults, the first forks) is done before counting starts.
    pub(crate) warmup: Duration,
    /// Workload 4's connections, already within the descriptor limit.
    pub(crate) idle_conns: usize,
    /// Where servers (and the kernel floor) run; `None` leaves them to the
    /// scheduler (one CPU).
    pub(crate) server_cpu: Option<usize>,
    /// Where the load runs (and the sending end of the two-thread floor).
    pub(crate) load_cpu: Option<usize>,
    /// `/proc` CPU times are in these units per second.
    pub(crate) clk_tck: f64,
}

/// The programs the cells start, and where they may write.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `netecho` binary whose models are measured.
    pub(crate) netecho: PathBuf,
    /// Each C baseline built for this run, or why it could not be (n/a: a
    /// library it needs is missing); a C server that is not here fails its
    /// cells with "not built".
    pub(crate) c: Vec<(CServer, std::result::Result<PathBuf, Skip>)>,
    /// Peers' configuration and stderr files, the C baselines' sources
    /// and programs.
    pub scratch: PathBuf,
}

impl Programs {
    /// The built program of a C baseline, or why there is none.
    pub(crate) fn c_program(&self, spec: CServer) -> std::result::Result<&Path, Skip> {
        match self.c.iter().find(|(c, _)| *c == spec) {
            Some((_, Ok(path))) => Ok(path),
            Some((_, Err(why))) => Err(why.clone()),
            None => Err(Skip::Failed("not built".into())),
        }
    }
}

/// This machine, as the suite found it.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// CPUs this process may use (what `nproc` counts), lowest first,
    /// read before this thread pinned itself.
    pub(crate) cpus: Vec<usize>,
    /// RLIMIT_NOFILE after raising the soft limit: (soft, hard).
    pub(crate) nofile: (u64, u64),
    /// Workload 4's connections asked for, before the descriptor limit.
    pub(crate) idle_asked: usize,
}

impl Machine {
    /// Whether server and load each have a CPU of their own.
    pub(crate) fn two_cpus(&self) -> bool {
        self.cpus.len() > 1
    }

    /// Where servers run: the first CPU.
    pub(crate) fn server_cpu(&self) -> usize {
        self.cpus.first().copied().unwrap_or(0)
    }

    /// Where the load runs: the second CPU, or the first when there is one.
    pub(crate) fn load_cpu(&self) -> usize {
        self.cpus.get(1).copied().unwrap_or(self.server_cpu())
    }
}
