//! `prefork`: `--workers` processes forked at start, each polling the shared
//! listeners, accepting and serving one client at a time. The fork is paid
//! once per worker, not per connection; a worker that dies is replaced.
//!
//! The parent only supervises: it reaps, restarts workers, and on a signal
//! shuts the listeners down (which wakes and stops every idle worker at once),
//! waits for busy workers up to the drain timeout, then SIGTERMs them.

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use nix::unistd::{ForkResult, fork};
use tracing::warn;

use super::children::Children;
use super::echo::{self, BUF_SIZE};
use super::{Ctx, accept, signals, supervise};
use crate::error::{Error, Result};

/// Starts the workers and supervises them until a signal stops the server.
pub fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let mut kids = Children::default();
    for _ in 0..ctx.workers {
        spawn(&listeners, ctx, &mut kids).map_err(|e| Error::io("forking a worker")(e.into()))?;
    }
    while signals::stops() == 0 {
        signals::wait(None);
        let mut lost = 0;
        kids.reap(|pid, status, _| {
            warn!(
                pid = pid.as_raw(),
                ?status,
                "worker exited; starting another"
            );
            lost += 1;
        });
        if signals::stops() > 0 {
            break;
        }
        for _ in 0..lost {
            if let Err(e) = spawn(&listeners, ctx, &mut kids) {
                warn!("cannot restart a worker: {e}");
            }
        }
    }
    supervise::stop_accepting(&listeners, ctx);
    kids.finish(ctx, |_, _, _| {});
    Ok(())
}

/// Forks one worker.
fn spawn(listeners: &[TcpListener], ctx: &'static Ctx, kids: &mut Children) -> nix::Result<()> {
    // SAFETY: the parent is single-threaded (this model starts no thread), so
    // the child inherits no lock held by another thread and may run normal
    // code; it never returns into the parent's loop (it `_exit`s).
    let parent = nix::unistd::getpid();
    match unsafe { fork() }? {
        ForkResult::Child => worker(listeners, ctx, parent),
        ForkResult::Parent { child } => {
            kids.add(child, None);
            Ok(())
        }
    }
}

/// A worker: accept, serve, repeat; stop when the listeners shut down or the
/// parent sends SIGTERM.
fn worker(listeners: &[TcpListener], ctx: &Ctx, parent: nix::unistd::Pid) -> ! {
    signals::reset_in_child();
    // A worker must not outlive its parent: it holds the listener, and
    // would keep serving the port with nobody to supervise or stop it.
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    if nix::unistd::getppid() != parent {
        // The parent died before the prctl took effect.
        // SAFETY: as below, `_exit` skips the parent's handlers.
        unsafe { libc::_exit(0) }
    }
    let mut buf = vec![0u8; BUF_SIZE];
    while signals::stops() == 0 {
        let accept::Next::Conn(conn, peer) = accept::next(listeners, ctx) else {
            break;
        };
        let end = match echo::prepare(&conn, ctx) {
            Ok(()) => echo::echo(conn.as_raw_fd(), &mut buf, ctx.stats, &|| {
                signals::stops() > 0
            }),
            Err(_) => echo::End::Reset,
        };
        echo::count_end(end, ctx.stats);
        tracing::debug!(%peer, ?end, "connection closed");
        drop(conn);
        ctx.release(&peer);
    }
    // SAFETY: `_exit` skips the parent's atexit handlers and destructors,
    // which belong to the parent process.
    unsafe { libc::_exit(0) }
}
