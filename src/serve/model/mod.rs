//! The eight server models, one file (or folder) each, all with the same
//! entry: `run(listeners, ctx) -> Result<()>`, serving until the server is
//! told to stop. [`run`] picks one, and [`Model`] names them.
//!
//! - blocking, one client per thread or process: [`iterative`], [`fork`],
//!   [`prefork`], [`thread`], [`prethread`] — each runs
//!   [`crate::serve::blocking::echo::drive`], the blocking read/write loop
//!   that drives [`crate::serve::contract::Conn`], the connection core;
//! - event loops that drive the same core:
//!   [`epoll`] (mio readiness), [`tokio`] (async tasks), [`uring`]
//!   (io_uring completions).
//!
//! A client of a `--tls-listen` socket goes through the TLS session
//! (`netecho_core::tls::Session`, bytes in and out) over the same core, in
//! every model (uring with a copying core for those clients: see
//! `uring/tls.rs`).

mod edge;
pub mod epoll;
mod epoll_faults;
pub mod fork;
pub mod iterative;
pub mod prefork;
pub mod prethread;
pub mod thread;
pub mod tokio;
mod tokio_faults;
pub mod uring;

use std::net::TcpListener;

use clap::ValueEnum;
use tracing::info;

use crate::error::Result;
use crate::serve::ctx::Ctx;

/// Default `--max-conns` for `fork`: a process per client is heavy.
pub(crate) const DEFAULT_MAX_CONNS_FORK: usize = 1024;
/// Default `--max-conns` for `thread`: a thread per client is lighter.
pub(crate) const DEFAULT_MAX_CONNS_THREAD: usize = 4096;
/// Default `--max-conns` for `prefork`: the pool grows to this many busy
/// processes (each a few hundred KiB of its own once it has run), a
/// quarter of `fork`'s, since a pool keeps its workers after the burst.
pub(crate) const DEFAULT_MAX_CONNS_PREFORK: usize = 256;
/// Default `--max-conns` for `prethread`: threads are cheaper than
/// processes (128 KiB of stack each, a 64 KiB buffer once used).
pub(crate) const DEFAULT_MAX_CONNS_PRETHREAD: usize = 1024;
/// Default `--max-conns` for the event models: an idle connection costs a
/// few hundred bytes, so the descriptor limit is the real bound.
pub(crate) const DEFAULT_MAX_CONNS_EVENT: usize = 65_536;

/// How the server handles concurrent clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Model {
    /// The fastest model on the running kernel: `uring` where io_uring is
    /// usable, else `epoll` (one log line says why).
    Auto,
    /// One client at a time; the rest wait in the listen backlog (the one
    /// model where `--max-conns` is not how many are served at once).
    Iterative,
    /// A process per client, forked after accept (the classic design).
    Fork,
    /// A pool of processes, each accepting and serving one client at a
    /// time; it grows with demand up to `--max-conns` and shrinks when idle.
    Prefork,
    /// A thread per client.
    Thread,
    /// A pool of threads, each accepting and serving one client at a time;
    /// it grows with demand up to `--max-conns` and shrinks when idle.
    Prethread,
    /// A mio (epoll) readiness loop per worker thread.
    Epoll,
    /// Async tasks on a tokio runtime with `--workers` threads.
    Tokio,
    /// A completion loop on io_uring per worker thread.
    Uring,
}

impl Model {
    /// What `auto` means here: `uring` when io_uring works on this kernel
    /// (measured the cheapest per request: docs/src/performance.md), else `epoll`. The
    /// probe runs once; a refusal (seccomp, `io_uring_disabled`, an old
    /// kernel) is logged once with its reason.
    pub fn resolve(self) -> Model {
        static AUTO: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
        match self {
            Model::Auto => *AUTO.get_or_init(|| match uring::probe() {
                Ok(()) => Model::Uring,
                Err(reason) => {
                    info!(%reason, "io_uring unavailable; --model auto uses epoll");
                    Model::Epoll
                }
            }),
            m => m,
        }
    }

    /// The model's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Model::Auto => "auto",
            Model::Iterative => "iterative",
            Model::Fork => "fork",
            Model::Prefork => "prefork",
            Model::Thread => "thread",
            Model::Prethread => "prethread",
            Model::Epoll => "epoll",
            Model::Tokio => "tokio",
            Model::Uring => "uring",
        }
    }

    /// The default `--max-conns`: how many clients the model serves at
    /// once (iterative: one, the rest wait).
    pub fn default_max_conns(self) -> usize {
        match self.resolve() {
            Model::Iterative => 1,
            Model::Fork => DEFAULT_MAX_CONNS_FORK,
            Model::Prefork => DEFAULT_MAX_CONNS_PREFORK,
            Model::Prethread => DEFAULT_MAX_CONNS_PRETHREAD,
            Model::Thread => DEFAULT_MAX_CONNS_THREAD,
            Model::Epoll | Model::Tokio | Model::Uring | Model::Auto => DEFAULT_MAX_CONNS_EVENT,
        }
    }
}

/// Hands the bound listeners to the chosen model.
pub(crate) fn run(model: Model, listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    match model.resolve() {
        Model::Iterative => iterative::run(listeners, ctx),
        Model::Fork => fork::run(listeners, ctx),
        Model::Prefork => prefork::run(listeners, ctx),
        Model::Prethread => prethread::run(listeners, ctx),
        // `resolve` never returns `Auto`; the arm keeps the match total.
        Model::Epoll | Model::Auto => epoll::run(listeners, ctx),
        Model::Tokio => tokio::run(listeners, ctx),
        Model::Uring => uring::run(listeners, ctx),
        Model::Thread => thread::run(listeners, ctx),
    }
}
