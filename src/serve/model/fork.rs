//! `fork`: the classic concurrent server. The parent accepts; each client
//! gets a child process that runs the echo loop and exits.
//!
//! The parent is single-threaded and waits in `poll` on the listeners and the
//! signal wake-up pipe, so SIGCHLD (reaping), SIGTERM and accept are handled
//! in one loop and an interrupted call is simply retried. The child of a
//! plain TCP client runs only calls that are safe after fork in a process
//! that may hold locks: no allocation, no logging, just `close`, `recv`,
//! `send`, `shutdown`, `_exit`. The child of a TLS client (`--tls-listen`)
//! allocates and may log (rustls does both): that is safe because the
//! parent runs no thread at all (UDP and metrics live in the sidecar
//! process), so no lock can be held by another thread at fork time.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, fork};
use tracing::{debug, warn};

use crate::error::Result;
use crate::serve::admission::{Permit, Ticket, Tickets};
use crate::serve::blocking::accept;
use crate::serve::blocking::echo::{self, End};
use crate::serve::contract::BUF_SIZE;
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::children::{Children, Tag};
use crate::serve::lifecycle::handover;
use crate::serve::lifecycle::signals;
use crate::serve::lifecycle::supervise;

/// Accepts and forks a child per client until a signal stops the server.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let mut kids = Children::default();
    let mut held = Held::default();
    let wake = ctx.shutdown.wake_fd();
    handover::ready();
    while ctx.shutdown.stops() == 0 {
        let mut ready = vec![false; listeners.len()];
        {
            // SAFETY: `wake` is the signal pipe's read end, open for the
            // whole life of the process.
            let wake_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(wake) };
            let mut fds: Vec<PollFd> = listeners
                .iter()
                .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                .chain(std::iter::once(PollFd::new(wake_fd, PollFlags::POLLIN)))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    for (i, f) in fds[..listeners.len()].iter().enumerate() {
                        ready[i] = f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
                    }
                }
                // A signal: reap and look at the stop counter below.
                Err(Errno::EINTR) => {}
                Err(e) => warn!("poll: {e}"),
            }
        }
        ctx.shutdown.drain_wake();
        kids.reap(|pid, status, _| held.reaped(pid, status));
        handover::on_wake(ctx);
        if ctx.shutdown.stops() > 0 {
            break;
        }
        for (l, _) in listeners.iter().zip(&ready).filter(|(_, r)| **r) {
            if let Some((conn, peer)) = accept::take(l, ctx, &|p| ctx.admit(p)) {
                let permit = Permit::admitted(ctx, &peer);
                let tls = ctx.tls.as_ref().is_some_and(|t| t.listens_on(l));
                debug!(%peer, tls, "connection open");
                spawn(
                    conn,
                    peer,
                    permit,
                    tls,
                    &listeners,
                    ctx,
                    (&mut kids, &mut held),
                );
            }
        }
    }
    supervise::stop_accepting(&listeners, ctx);
    drop(listeners);
    kids.finish(ctx, |pid, status, _| held.reaped(pid, status));
    Ok(())
}

/// The parent's copy of each connection child's [`Permit`]: dropped when
/// the child is reaped, which gives the slot back unless the child did
/// (their shared ticket makes it one release, whatever killed whom when).
#[derive(Debug, Default)]
struct Held {
    permits: HashMap<Pid, (Permit, Ticket, Served)>,
    tickets: Tickets,
}

/// Whom a child served, for the close line its parent logs (the child
/// itself may make no call that is not async-signal-safe, logging included).
#[derive(Debug)]
struct Served {
    peer: SocketAddr,
    tls: bool,
}

impl Held {
    /// A child is gone: its permit's last copy goes, and its ticket is free.
    fn reaped(&mut self, pid: Pid, status: WaitStatus) {
        if let Some((permit, ticket, served)) = self.permits.remove(&pid) {
            drop(permit);
            self.tickets.give_back(ticket);
            let end = match status {
                WaitStatus::Exited(_, code) => usize::try_from(code)
                    .ok()
                    .and_then(|i| End::LABELS.get(i))
                    .copied()
                    .unwrap_or("error"),
                // CHILD_STOP or SIGKILL at the end of a drain.
                _ => "stopped",
            };
            let Served { peer, tls } = served;
            debug!(%peer, tls, end = %end, "connection closed");
        }
    }
}

/// Forks the child for one admitted connection; the parent closes its copy.
fn spawn(
    conn: TcpStream,
    peer: SocketAddr,
    permit: Permit,
    tls: bool,
    listeners: &[TcpListener],
    ctx: &'static Ctx,
    (kids, held): (&mut Children, &mut Held),
) {
    if let Err(e) = echo::prepare(&conn, ctx) {
        debug!(%peer, "socket setup failed: {e}");
        ctx.stats.count_end(echo::End::from_io(&e));
        return;
    }
    let ticket = match held.tickets.take() {
        Ok(t) => t,
        Err(e) => {
            warn!(%peer, "mapping a shared ticket failed: {e}; closing the connection");
            return;
        }
    };
    let mut permit = permit.with_ticket(ticket);
    // SAFETY: the parent is single-threaded (this model starts no thread),
    // and the child below only makes async-signal-safe calls before `_exit`.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => child(&conn, tls, listeners, ctx, &mut permit),
        Ok(ForkResult::Parent { child }) => {
            debug!(%peer, pid = child.as_raw(), "child forked");
            kids.add(child, Tag::Conn(peer));
            held.permits
                .insert(child, (permit, ticket, Served { peer, tls }));
        }
        Err(e) => {
            warn!(%peer, "fork failed: {e}; closing the connection");
            drop(permit);
            held.tickets.give_back(ticket);
        }
    }
}

/// The child: close the listeners (only the parent accepts), echo, exit.
/// Never returns and never unwinds into the parent's code.
fn child(
    conn: &TcpStream,
    tls: bool,
    listeners: &[TcpListener],
    ctx: &Ctx,
    permit: &mut Permit,
) -> ! {
    signals::reset_in_child();
    for l in listeners {
        // SAFETY: closing our inherited copy of a listener; the `TcpListener`
        // values are never used or dropped in this process again (we `_exit`).
        unsafe { libc::close(l.as_raw_fd()) };
    }
    let mut buf = [0u8; BUF_SIZE];
    // The counters live in memory shared with the parent, so the child can
    // give its slot back itself, before its FIN (see `echo::drive`); the
    // parent's copy of the permit, dropped at the reaping, then finds the
    // shared ticket turned and gives nothing back, however the child died.
    let end = echo::echo_any(
        conn,
        tls,
        ctx,
        &mut buf,
        &|| ctx.shutdown.stops() > 0,
        &mut || permit.release(),
    );
    ctx.stats.count_end(end);
    // SAFETY: `_exit` ends the child without running destructors or atexit
    // handlers that belong to the parent; the kernel closes the socket. Its
    // status is how the connection ended (`End::index`), for the parent's
    // close line.
    unsafe { libc::_exit(end.index() as i32) }
}
