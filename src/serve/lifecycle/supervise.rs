//! Drain and exit for the models that serve inside one process (iterative,
//! thread, prethread): the main thread waits here while workers serve.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::info;

use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::handover;

/// How often the drain re-checks the number of open connections.
const DRAIN_TICK: Duration = Duration::from_millis(20);
/// The longest a stop waits for acceptors to leave their accept sections
/// (`Stats::enter_accept`); only a process killed inside one holds it
/// that long.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Says the server is ready ([`handover::ready`]), then blocks until
/// SIGTERM/SIGINT or a handover, serving SIGHUPs meanwhile; then stops
/// accepting at once and waits for the connections in flight until none is
/// left, the drain timeout passes, or a second signal comes. Returning lets
/// `main` exit 0, which closes whatever is still open. Listeners given by
/// value are closed once accepting stopped.
pub(crate) fn until_stopped(listeners: impl AsRef<[TcpListener]>, ctx: &Ctx) {
    handover::ready();
    while ctx.shutdown.stops() == 0 {
        ctx.shutdown.wait(None);
        handover::on_wake(ctx);
    }
    stop_accepting(listeners.as_ref(), ctx);
    drop(listeners);
    drain(ctx, || ctx.stats.active() == 0);
}

/// Marks the server as stopping and waits until no acceptor is inside an
/// accept section, so every connection taken off a queue is counted.
/// On SIGTERM it first shuts the listeners down: on Linux, `shutdown(2)`
/// on a listening socket stops it listening (new SYNs are refused) and
/// wakes every thread or process blocked on it. After a handover it must
/// not: the socket is the new process's too, and shutdown acts on the
/// socket, not on this process's descriptor. Then only the descriptors
/// are closed (each acceptor closes its own as it sees the flag), and
/// whatever waits in the queue is the new process's to accept.
pub(crate) fn stop_accepting(listeners: &[TcpListener], ctx: &Ctx) {
    ctx.stats.stopping.store(true, Ordering::SeqCst);
    if !ctx.shutdown.handed_over() {
        for l in listeners {
            // An error here means it was already shut down: nothing to undo.
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }
    let until = Instant::now() + SETTLE_TIMEOUT;
    while ctx.stats.accepting() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    info!(
        active = ctx.stats.active(),
        drain_timeout_s = ctx.drain_timeout.as_secs_f64(),
        "stopping: no new connections; draining"
    );
}

/// Waits until `done()`, the drain deadline, or a second signal. Returns
/// true if everything finished in time.
pub(crate) fn drain(ctx: &Ctx, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + ctx.drain_timeout;
    loop {
        if done() {
            info!("drained; exiting");
            return true;
        }
        if ctx.shutdown.stops() >= 2 {
            info!(active = ctx.stats.active(), "second signal; exiting now");
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            info!(
                active = ctx.stats.active(),
                "drain timeout; closing the remaining connections"
            );
            return false;
        }
        ctx.shutdown.wait(Some(DRAIN_TICK.min(deadline - now)));
    }
}
