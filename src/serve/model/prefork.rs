//! `prefork`: a pool of worker processes, each polling the shared
//! listeners, accepting and serving one client at a time. The fork is paid
//! once per worker, not per connection.
//!
//! The pool sizes itself from the demand it sees (Apache's prefork MPM,
//! without its spawn rate): `--workers` start at once and are the least the
//! pool keeps; the busy workers plus the clients waiting in the accept
//! queue plus `--min-spare` is how many it needs, and what is missing is
//! forked in one batch, so a burst is answered at once; idle workers beyond
//! `--max-spare` retire gradually, and any idle longer than
//! `--worker-idle-timeout` retires down to `--min-spare`; never more than
//! `--max-conns` + 1 exist, the last one idle to turn away clients over the
//! limit. The sizing rules are in `serve::pool::sizing`; what each worker is doing
//! is on the `serve::pool::scoreboard`, in memory shared with the workers.
//!
//! The parent only supervises: it reaps, gives back the `--max-conns` slot
//! of a worker that died holding a client, sizes the pool, and on a signal
//! shuts the listeners down (which wakes and stops every idle worker at
//! once), waits for busy workers up to the drain timeout, then tells them
//! to stop (SIGUSR1; workers ignore SIGTERM/SIGINT, which a terminal or
//! systemd sends to the whole group).

use std::net::TcpListener;

use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, fork};
use tracing::warn;

use crate::error::Result;
use crate::serve::admission::Permit;
use crate::serve::blocking::accept;
use crate::serve::blocking::echo;
use crate::serve::contract::BUF_SIZE;
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::children::{Children, Tag};
use crate::serve::lifecycle::handover;
use crate::serve::lifecycle::signals;
use crate::serve::lifecycle::supervise;
use crate::serve::pool::scoreboard::{Scoreboard, Supervisor, Taken};

/// Starts the pool and supervises it until a signal stops the server.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let mut pool = Supervisor::new(ctx)?;
    let board = pool.board();
    let mut kids = Children::default();
    pool.start_minimum(|slot| spawn(slot, board, &listeners, ctx, &mut kids))?;
    handover::ready();
    while ctx.shutdown.stops() == 0 {
        pool.wait(ctx.shutdown);
        kids.reap(|pid, status, tag| {
            // A retired worker exits 0; anything else is worth a line.
            if !matches!(status, WaitStatus::Exited(_, 0)) {
                warn!(pid = pid.as_raw(), status = %describe_status(&status), "pool worker died");
            }
            give_back(ctx, board, tag);
        });
        handover::on_wake(ctx);
        if ctx.shutdown.stops() > 0 {
            break;
        }
        pool.step(&listeners, |slot| {
            spawn(slot, board, &listeners, ctx, &mut kids)
        });
    }
    supervise::stop_accepting(&listeners, ctx);
    // Our copies; idle workers close theirs as they leave, busy ones after
    // their client.
    drop(listeners);
    kids.finish(ctx, |_, _, tag| give_back(ctx, board, tag));
    Ok(())
}

/// Frees a reaped worker's slot, and releases the connection it held when
/// it died (a worker that exits normally has released it itself).
fn give_back(ctx: &Ctx, board: Scoreboard, tag: Tag) {
    let Tag::Worker(slot) = tag else { return };
    match board.free(slot) {
        Some(Taken { ip, conn: true }) => ctx.release_ip(ip),
        // Killed half-way through its admission: only the per-IP count.
        Some(Taken { ip, conn: false }) => ctx.stats.per_ip.release(ip),
        None => {}
    }
}

/// Forks the worker for scoreboard slot `slot`.
fn spawn(
    slot: usize,
    board: Scoreboard,
    listeners: &[TcpListener],
    ctx: &'static Ctx,
    kids: &mut Children,
) -> std::io::Result<()> {
    let parent = nix::unistd::getpid();
    // SAFETY: the parent is single-threaded (this model starts no thread), so
    // the child inherits no lock held by another thread and may run normal
    // code; it never returns into the parent's loop (it `_exit`s).
    match unsafe { fork() }? {
        ForkResult::Child => worker(slot, board, listeners, ctx, parent),
        ForkResult::Parent { child } => {
            kids.add(child, Tag::Worker(slot));
            Ok(())
        }
    }
}

/// A worker: accept, serve, repeat; stop when the listeners shut down, the
/// parent tells it to stop, or it is asked to retire (after the client it
/// holds, never during).
fn worker(
    slot: usize,
    board: Scoreboard,
    listeners: &[TcpListener],
    ctx: &'static Ctx,
    parent: nix::unistd::Pid,
) -> ! {
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
    let leave = || board.retiring(slot);
    // Should this process die from here on, the parent gives back what
    // the slot says it took.
    let admit = |peer: &std::net::SocketAddr| board.admit(slot, peer, ctx);
    while ctx.shutdown.stops() == 0 && !leave() {
        let accept::Next::Conn(conn, peer, tls) =
            accept::next_unless(listeners, ctx, &leave, &admit)
        else {
            break;
        };
        // The worker's copy of the admission; the parent's is the
        // scoreboard slot (`give_back`, should this worker die first).
        // Clear the scoreboard first: a crash between the two leaks one
        // slot, while the other order could release it twice. Both happen
        // before the client sees the end (see `echo::drive`).
        let mut permit = Permit::admitted(ctx, &peer);
        let mut free = || {
            board.idle(slot);
            permit.release();
        };
        let end = match echo::prepare(&conn, ctx) {
            Ok(()) => echo::echo_any(
                &conn,
                tls,
                ctx,
                &mut buf,
                &|| ctx.shutdown.stops() > 0,
                &mut free,
            ),
            Err(e) => {
                free();
                echo::End::from_io(&e)
            }
        };
        ctx.stats.count_end(end);
        tracing::debug!(%peer, tls, %end, "connection closed");
        drop(conn);
    }
    // SAFETY: `_exit` skips the parent's atexit handlers and destructors,
    // which belong to the parent process.
    unsafe { libc::_exit(0) }
}

/// A worker's end in words for the log (`exited with status 3`, `killed
/// by SIGKILL`), not the debug form of nix's `WaitStatus`.
fn describe_status(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {}", sig.as_str()),
        _ => "stopped".to_string(),
    }
}
