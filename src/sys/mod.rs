//! Operating-system helpers shared by the subcommands: the Ctrl-C flag
//! ([`stop`]), the descriptor limit, and what `/proc` says about a process
//! ([`proc`]), socket options std does not wrap ([`sockopt`]).
//!
//! This module imports nothing else of the crate. (The server's own signal
//! handling, with its wake-up pipe, lives in `serve::signals`.)

pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod sockopt;
pub(crate) mod stop;

/// Raises the soft descriptor limit to the hard one: a server holding
/// thousands of sockets (or a bench opening them) should not fail at 1024
/// because of a shell default. Returns the limits (soft, hard) in force
/// afterwards; (0, 0) if unreadable.
pub(crate) fn raise_nofile_limit() -> (u64, u64) {
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
