//! What a run is ([`Suite`]: servers × workloads, measured how), what it
//! yields ([`Row`]) and how it is printed ([`Layout`]). Running it is
//! `Suite::run`, in the folder's `mod.rs`, which alone knows every part.

use super::cell::Cell;
use super::server::Server;
use super::setup::{Machine, Programs, Setup, Skip};
use super::workload::Workload;

/// How a run is printed.
#[derive(Debug, Clone)]
pub enum Layout {
    /// `netecho bench --models`: server by server, a line per cell as soon
    /// as it ends (model, workload, req/s, MB/s, p99, CPU us/req, KiB/conn).
    Lines,
    /// `cargo bench --bench models`: the machine and method first, then
    /// workload by workload a table with the kernel floor (where it applies)
    /// and every figure, divided by C epoll's and the floor's; a progress
    /// line per run on stderr. `command` is what reproduces the run.
    Tables { command: String },
}

/// One measured (or skipped) cell: a line of `--models`, a row of a table.
#[derive(Debug, Clone)]
pub struct Row {
    pub(crate) server: Server,
    pub(crate) workload: Workload,
    /// Median figures and the notes of the runs, or why there are none.
    pub(crate) cell: std::result::Result<Cell, Skip>,
}

/// Servers × workloads, measured `repeat` times each.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Row order.
    pub servers: Vec<Server>,
    /// Table order.
    pub workloads: Vec<Workload>,
    /// Runs per cell; the figures are the medians.
    pub repeat: usize,
    pub(crate) setup: Setup,
    pub programs: Programs,
    pub(crate) machine: Machine,
}
