//! The eight server models, one file (or folder) each, all with the same
//! entry: `run(listeners, ctx) -> Result<()>`, serving until the server is
//! told to stop. [`super::run_model`] picks one.
//!
//! - blocking, one client per thread or process: [`iterative`], [`fork`],
//!   [`prefork`], [`thread`], [`prethread`] — each runs
//!   [`super::echo::echo`], the read/write loop, with the connection core's
//!   error classification;
//! - event loops that drive [`super::conn::Conn`], the connection core:
//!   [`epoll`] (mio readiness), [`tokio`] (async tasks), [`uring`]
//!   (io_uring completions).
//!
//! A client of a `--tls-listen` socket goes through the TLS layer
//! ([`super::tls::conn::TlsConn`]) over the same core, in every model
//! (uring with a copying core for those clients: see `uring/tls.rs`).

pub mod epoll;
pub mod fork;
pub mod iterative;
pub mod prefork;
pub mod prethread;
pub mod thread;
pub mod tokio;
pub mod uring;
