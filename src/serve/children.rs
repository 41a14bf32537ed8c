//! The child processes of the forking models (fork, prefork): reaping, and
//! the end of a drain.
//!
//! Reaping is a `waitpid(-1, WNOHANG)` loop run each time the SIGCHLD
//! handler wakes the parent: signals coalesce (ten children can exit behind
//! one SIGCHLD), so one `wait` per signal would leave zombies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::info;

use super::{Ctx, signals, supervise};

/// How long children get to close cleanly after the drain deadline's SIGTERM
/// before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(1);

/// The children this process started and has not reaped yet.
#[derive(Debug, Default)]
pub struct Children {
    /// Each child, with the client it serves (fork) or `None` (a worker).
    pids: HashMap<Pid, Option<SocketAddr>>,
}

impl Children {
    /// Remembers a child just forked, and the client it serves if any.
    pub fn add(&mut self, pid: Pid, peer: Option<SocketAddr>) {
        self.pids.insert(pid, peer);
    }

    /// Children not yet reaped.
    pub fn len(&self) -> usize {
        self.pids.len()
    }

    /// True when every child has been reaped.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// Reaps every child that has exited, without blocking, calling
    /// `on_exit` for each one of ours.
    pub fn reap(&mut self, mut on_exit: impl FnMut(Pid, WaitStatus, Option<SocketAddr>)) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                // Children exist but none has exited.
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid()
                        && let Some(peer) = self.pids.remove(&pid)
                    {
                        on_exit(pid, status, peer);
                    }
                }
                Err(Errno::EINTR) => continue,
                // ECHILD: no children at all.
                Err(_) => return,
            }
        }
    }

    /// Sends `sig` to every child still alive.
    pub fn signal_all(&self, sig: Signal) {
        for pid in self.pids.keys() {
            // ESRCH: it exited and awaits reaping; nothing to do.
            let _ = kill(*pid, sig);
        }
    }

    /// The end of a forking server, after it stopped accepting: wait for the
    /// children to finish within the drain timeout; then SIGTERM those left
    /// (they stop at once and close), and SIGKILL any that outlive
    /// [`TERM_GRACE`]. A second SIGTERM/SIGINT skips to SIGKILL.
    pub fn finish(
        &mut self,
        ctx: &Ctx,
        mut on_exit: impl FnMut(Pid, WaitStatus, Option<SocketAddr>),
    ) {
        let done = supervise::drain(ctx, || {
            self.reap(&mut on_exit);
            self.is_empty()
        });
        if done {
            return;
        }
        if signals::stops() < 2 {
            info!(children = self.len(), "telling children to stop (SIGTERM)");
            self.signal_all(Signal::SIGTERM);
            let until = Instant::now() + TERM_GRACE;
            while !self.is_empty() && Instant::now() < until {
                signals::wait(Some(Duration::from_millis(20)));
                self.reap(&mut on_exit);
            }
        }
        if !self.is_empty() {
            info!(children = self.len(), "killing children (SIGKILL)");
            self.signal_all(Signal::SIGKILL);
            for (pid, peer) in std::mem::take(&mut self.pids) {
                loop {
                    match waitpid(pid, None) {
                        Err(Errno::EINTR) => continue,
                        Ok(status) => on_exit(pid, status, peer),
                        Err(_) => {}
                    }
                    break;
                }
            }
        }
    }
}
