//! A server's life from start to exit: [`signals`] wires
//! SIGTERM/SIGINT/SIGHUP/SIGCHLD to [`shutdown`], the stop state;
//! [`handover`] SIGHUP, a new process takes the sockets over (restart and
//! upgrade without a refused connect); [`supervise`] drain and exit for the
//! models that run in one process, [`children`] the same for the forking
//! models (reaping, SIGTERM, SIGKILL); [`activation`] systemd's
//! `LISTEN_FDS`, [`notify`] tells systemd.

pub(crate) mod activation;
pub(crate) mod children;
pub(crate) mod handover;
pub(crate) mod notify;
pub(crate) mod shutdown;
pub(crate) mod signals;
pub(crate) mod supervise;
