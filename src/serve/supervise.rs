//! Drain and exit for the models that serve inside one process (iterative,
//! thread, prethread): the main thread waits here while workers serve.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::info;

use super::Ctx;

/// How often the drain re-checks the number of open connections.
const DRAIN_TICK: Duration = Duration::from_millis(20);

/// Blocks until SIGTERM/SIGINT, then stops accepting at once and waits for
/// the connections in flight until none is left, the drain timeout passes, or
/// a second signal comes. Returning lets `main` exit 0, which closes whatever
/// is still open.
pub(crate) fn until_stopped(listeners: &[TcpListener], ctx: &Ctx) {
    while ctx.shutdown.stops() == 0 {
        ctx.shutdown.wait(None);
    }
    stop_accepting(listeners, ctx);
    drain(ctx, || ctx.stats.active() == 0);
}

/// Marks the server as stopping and shuts the listeners down: on Linux,
/// `shutdown(2)` on a listening socket stops it listening (new SYNs are
/// refused) and wakes every thread or process blocked on it.
pub(crate) fn stop_accepting(listeners: &[TcpListener], ctx: &Ctx) {
    ctx.stats.stopping.store(true, Ordering::SeqCst);
    for l in listeners {
        // An error here means it was already shut down: nothing to undo.
        let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
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
