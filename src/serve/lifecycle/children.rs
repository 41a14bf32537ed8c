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

use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::signals;
use crate::serve::lifecycle::supervise;

/// How long children get to close cleanly after the drain deadline's
/// [`signals::CHILD_STOP`] before SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(1);

/// What a child is for: what the parent must undo when it is reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// A fork-model child serving this client.
    Conn(SocketAddr),
    /// The prefork worker on scoreboard slot N.
    Worker(usize),
}

/// The children this process started and has not reaped yet.
#[derive(Debug, Default)]
pub(crate) struct Children {
    pids: HashMap<Pid, Tag>,
}

impl Children {
    /// Remembers a child just forked, and what it is for.
    pub(crate) fn add(&mut self, pid: Pid, tag: Tag) {
        self.pids.insert(pid, tag);
    }

    /// Children not yet reaped.
    pub(crate) fn len(&self) -> usize {
        self.pids.len()
    }

    /// True when every child has been reaped.
    pub(crate) fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// Reaps every child that has exited, without blocking, calling
    /// `on_exit` for each one of ours.
    pub(crate) fn reap(&mut self, mut on_exit: impl FnMut(Pid, WaitStatus, Tag)) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                // Children exist but none has exited.
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid()
                        && let Some(tag) = self.pids.remove(&pid)
                    {
                        on_exit(pid, status, tag);
                    }
                }
                Err(Errno::EINTR) => continue,
                // ECHILD: no children at all.
                Err(_) => return,
            }
        }
    }

    /// Sends `sig` to every child still alive.
    pub(crate) fn signal_all(&self, sig: Signal) {
        for pid in self.pids.keys() {
            // ESRCH: it exited and awaits reaping; nothing to do.
            let _ = kill(*pid, sig);
        }
    }

    /// The end of a forking server, after it stopped accepting: wait for the
    /// children to finish within the drain timeout; then send those left
    /// [`signals::CHILD_STOP`] (they stop at once and close), and SIGKILL any
    /// that outlive [`TERM_GRACE`]. A second SIGTERM/SIGINT, even during that
    /// grace, skips to SIGKILL.
    pub(crate) fn finish(&mut self, ctx: &Ctx, mut on_exit: impl FnMut(Pid, WaitStatus, Tag)) {
        let done = supervise::drain(ctx, || {
            self.reap(&mut on_exit);
            self.is_empty()
        });
        if done {
            return;
        }
        if ctx.shutdown.stops() < 2 {
            info!(children = self.len(), "telling children to stop (SIGUSR1)");
            self.signal_all(signals::CHILD_STOP);
            let until = Instant::now() + TERM_GRACE;
            while !self.is_empty() && Instant::now() < until && ctx.shutdown.stops() < 2 {
                ctx.shutdown.wait(Some(Duration::from_millis(20)));
                self.reap(&mut on_exit);
            }
        }
        if !self.is_empty() {
            info!(children = self.len(), "killing children (SIGKILL)");
            self.signal_all(Signal::SIGKILL);
            for (pid, tag) in std::mem::take(&mut self.pids) {
                loop {
                    match waitpid(pid, None) {
                        Err(Errno::EINTR) => continue,
                        Ok(status) => on_exit(pid, status, tag),
                        Err(_) => {}
                    }
                    break;
                }
            }
        }
    }
}
