//! `prefork`: `--workers` processes forked at start, each polling the shared
//! listeners, accepting and serving one client at a time. The fork is paid
//! once per worker, not per connection; a worker that dies is replaced.
//!
//! The parent only supervises: it reaps, restarts workers, and on a signal
//! shuts the listeners down (which wakes and stops every idle worker at once),
//! waits for busy workers up to the drain timeout, then tells them to stop
//! (SIGUSR1; workers ignore SIGTERM/SIGINT, which a terminal or systemd
//! sends to the whole group).

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use nix::unistd::{ForkResult, fork};
use tracing::warn;

use crate::error::{Error, Result};
use crate::serve::children::{Children, Tag};
use crate::serve::echo::{self, BUF_SIZE};
use crate::serve::stats::WorkerSlot;
use crate::serve::{Ctx, accept, signals, supervise};

/// Starts the workers and supervises them until a signal stops the server.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let mut kids = Children::default();
    for n in 0..ctx.workers {
        spawn(n, &listeners, ctx, &mut kids)
            .map_err(|e| Error::io("forking a worker")(e.into()))?;
    }
    while ctx.shutdown.stops() == 0 {
        ctx.shutdown.wait(None);
        let mut lost = Vec::new();
        kids.reap(|pid, status, tag| {
            warn!(
                pid = pid.as_raw(),
                ?status,
                "worker exited; starting another"
            );
            if let Tag::Worker(n) = tag {
                give_back(ctx, n);
                lost.push(n);
            }
        });
        if ctx.shutdown.stops() > 0 {
            break;
        }
        for n in lost {
            if let Err(e) = spawn(n, &listeners, ctx, &mut kids) {
                warn!("cannot restart a worker: {e}");
            }
        }
    }
    supervise::stop_accepting(&listeners, ctx);
    kids.finish(ctx, |_, _, tag| {
        if let Tag::Worker(n) = tag {
            give_back(ctx, n);
        }
    });
    Ok(())
}

/// Releases the connection a worker held when it died (a worker that exits
/// normally has released it itself and left its slot empty).
fn give_back(ctx: &Ctx, n: usize) {
    if let Some(ip) = ctx.stats.workers.get(n).and_then(WorkerSlot::take) {
        ctx.release_ip(ip);
    }
}

/// Forks worker number `n`.
fn spawn(
    n: usize,
    listeners: &[TcpListener],
    ctx: &'static Ctx,
    kids: &mut Children,
) -> nix::Result<()> {
    let parent = nix::unistd::getpid();
    // SAFETY: the parent is single-threaded (this model starts no thread), so
    // the child inherits no lock held by another thread and may run normal
    // code; it never returns into the parent's loop (it `_exit`s).
    match unsafe { fork() }? {
        ForkResult::Child => worker(n, listeners, ctx, parent),
        ForkResult::Parent { child } => {
            kids.add(child, Tag::Worker(n));
            Ok(())
        }
    }
}

/// A worker: accept, serve, repeat; stop when the listeners shut down or the
/// parent tells it to stop.
fn worker(n: usize, listeners: &[TcpListener], ctx: &Ctx, parent: nix::unistd::Pid) -> ! {
    signals::reset_in_child();
    // A worker must not outlive its parent: it holds the listener, and
    // would keep serving the port with nobody to supervise or stop it.
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signals::CHILD_STOP as libc::c_int) };
    if nix::unistd::getppid() != parent {
        // The parent died before the prctl took effect.
        // SAFETY: as below, `_exit` skips the parent's handlers.
        unsafe { libc::_exit(0) }
    }
    let mut buf = vec![0u8; BUF_SIZE];
    let slot = ctx.stats.workers.get(n);
    while ctx.shutdown.stops() == 0 {
        let accept::Next::Conn(conn, peer) = accept::next(listeners, ctx) else {
            break;
        };
        // Should this process die now, the parent gives the slot back.
        if let Some(slot) = slot {
            slot.hold(peer.ip());
        }
        let end = match echo::prepare(&conn, ctx) {
            Ok(()) => echo::echo(conn.as_raw_fd(), &mut buf, ctx.stats, &|| {
                ctx.shutdown.stops() > 0
            }),
            Err(e) => echo::End::from_io(&e),
        };
        ctx.stats.count_end(end);
        tracing::debug!(%peer, %end, "connection closed");
        drop(conn);
        // Clear first: a crash between the two leaks one slot, while the
        // other order could release it twice.
        if let Some(slot) = slot {
            slot.clear();
        }
        ctx.release(&peer);
    }
    // SAFETY: `_exit` skips the parent's atexit handlers and destructors,
    // which belong to the parent process.
    unsafe { libc::_exit(0) }
}
