//! The accept step of the blocking models: wait on every listener, take one
//! connection, apply `--max-conns`, and survive running out of descriptors.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::{debug, warn};

use crate::serve::ctx::Ctx;
use crate::sys::sockopt;

/// How long accepting pauses after EMFILE/ENFILE/ENOBUFS/ENOMEM, as nginx
/// does: retrying at once would spin a core while nothing can change.
pub(crate) const RESOURCE_PAUSE: Duration = Duration::from_millis(500);
/// How often a worker re-checks the stop flag while idle in poll.
const POLL_TICK_MS: u16 = 1000;
/// Minimum seconds between two warnings of the same kind.
const WARN_INTERVAL_S: u64 = 5;

/// What [`next`] found.
pub(crate) enum Next {
    /// A connection admitted under the limits; the caller must
    /// [`Ctx::release`] it when done. The flag is true when it came in on
    /// a `--tls-listen` socket.
    Conn(TcpStream, SocketAddr, bool),
    /// The server is draining or the listeners were shut down.
    Closed,
}

/// Waits for and returns the next admitted connection. Connections over
/// `--max-conns` are accepted, closed at once and counted here.
pub(crate) fn next(listeners: &[TcpListener], ctx: &Ctx) -> Next {
    next_unless(listeners, ctx, &|| false, &|peer| ctx.admit(peer))
}

/// [`next`] for a pool worker, which also stops waiting once `leave()` is
/// true (it was asked to retire): looked at before each poll, so within
/// one poll tick. `admit` is [`Ctx::admit`] or one that records on the
/// worker's scoreboard slot what it takes (prefork).
pub(crate) fn next_unless(
    listeners: &[TcpListener],
    ctx: &Ctx,
    leave: &dyn Fn() -> bool,
    admit: &dyn Fn(&SocketAddr) -> bool,
) -> Next {
    let mut start = 0;
    loop {
        // `stopping` is the parent's word (shared memory); `stops()` is
        // this process's own signal, e.g. a prefork worker whose parent died.
        if ctx.stats.stopping() || ctx.shutdown.stops() > 0 || leave() {
            return Next::Closed;
        }
        let mut fds: Vec<PollFd> = listeners
            .iter()
            .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::from(POLL_TICK_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            // A signal: look at the stop flag again.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!("poll on listeners failed: {e}");
                std::thread::sleep(RESOURCE_PAUSE);
                continue;
            }
        }
        let ready: Vec<(usize, PollFlags)> = fds
            .iter()
            .enumerate()
            .map(|(i, f)| (i, f.revents().unwrap_or(PollFlags::empty())))
            .collect();
        // A listener shut down by the supervisor polls as hung up.
        if ready.iter().any(|(_, r)| {
            r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        }) {
            return Next::Closed;
        }
        let n = listeners.len();
        for k in 0..n {
            // Start after the listener served last, so one busy address does
            // not starve another.
            let i = (start + k) % n;
            if !ready[i].1.contains(PollFlags::POLLIN) {
                continue;
            }
            start = i + 1;
            if let Some(c) = take(&listeners[i], ctx, admit) {
                let tls = ctx
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.listens_on(&listeners[i]));
                debug!(peer = %c.1, tls, "connection open");
                return Next::Conn(c.0, c.1, tls);
            }
        }
    }
}

/// Connections waiting in the listeners' accept queues: what a pool must
/// find workers for. Linux reports it for a listening socket in TCP_INFO's
/// `tcpi_unacked` (the accept queue; `tcpi_sacked` is its limit); a socket
/// that cannot say counts as empty.
pub(crate) fn queued(listeners: &[TcpListener]) -> usize {
    listeners
        .iter()
        .map(|l| match sockopt::tcp_info(l.as_fd()) {
            Ok(info) if info.tcpi_state == TCP_LISTEN => info.tcpi_unacked as usize,
            _ => 0,
        })
        .sum()
}

/// `TCP_LISTEN` in the kernel's `tcp_states.h`.
const TCP_LISTEN: u8 = 10;

/// Accepts one connection from a ready listener and admits it with `admit`
/// (`--max-conns` and kin); `None` when the server is stopping, there was
/// nothing to take, the accept failed (handled here), or the connection was
/// over the limit (closed and counted). The accept and the admission are
/// one accept section (`Stats::enter_accept`).
pub(crate) fn take(
    listener: &TcpListener,
    ctx: &Ctx,
    admit: &dyn Fn(&SocketAddr) -> bool,
) -> Option<(TcpStream, SocketAddr)> {
    let _section = ctx.stats.enter_accept()?;
    match listener.accept() {
        Ok((conn, peer)) => {
            if admit(&peer) {
                return Some((conn, peer));
            }
            reject(conn, peer, ctx);
            None
        }
        Err(e) => {
            handle_accept_error(&e);
            None
        }
    }
}

/// Closes a connection over a limit (already counted by `Ctx::admit`).
fn reject(conn: TcpStream, peer: SocketAddr, ctx: &Ctx) {
    drop(conn);
    log_rejected(Some(peer), ctx);
}

/// The warning for a connection closed over `--max-conns` or
/// `--max-conns-per-ip`, at most once per interval. Every model logs it here
/// (uring may not know the peer: a multishot accept gives no address).
pub(crate) fn log_rejected(peer: Option<SocketAddr>, ctx: &Ctx) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if rate_ok(&LAST) {
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        warn!(
            %peer,
            max_conns = ctx.max_conns,
            max_conns_per_ip = ctx.max_conns_per_ip,
            "over --max-conns or --max-conns-per-ip: connection closed"
        );
    }
}

/// What a failed accept means for the acceptor. Every model sorts its
/// accept errors with [`classify`]; each then waits in its own way (a
/// blocking model sleeps, an event loop sets a deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// Another worker took it, a signal, or the client gave up already:
    /// accept again at once.
    Retry,
    /// Out of descriptors or memory: stop accepting for this long (nginx
    /// does the same), or the retries would spin a core.
    Pause(Duration),
    /// The listener was shut down by the supervisor (EINVAL): stop using it.
    ListenerClosed,
    /// An error the peer caused (EPROTO, ENETDOWN...): skip that connection.
    Skip,
}

/// Sorts an accept error and logs it (at most once per interval per kind).
pub(crate) fn classify(e: &io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => AcceptError::Retry,
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
            static LAST: AtomicU64 = AtomicU64::new(0);
            if rate_ok(&LAST) {
                warn!(
                    "accept: {e}; pausing accepts for {} ms",
                    RESOURCE_PAUSE.as_millis()
                );
            }
            AcceptError::Pause(RESOURCE_PAUSE)
        }
        Some(libc::EINVAL) => AcceptError::ListenerClosed,
        _ => {
            static LAST: AtomicU64 = AtomicU64::new(0);
            if rate_ok(&LAST) {
                warn!("accept: {e}");
            }
            AcceptError::Skip
        }
    }
}

/// [`classify`] for the blocking models: a pause is a sleep of this thread.
/// A closed listener needs nothing here: the next poll reports it hung up.
pub(crate) fn handle_accept_error(e: &io::Error) {
    if let AcceptError::Pause(d) = classify(e) {
        std::thread::sleep(d);
    }
}

/// True at most once per [`WARN_INTERVAL_S`] for a given `last` stamp.
pub(crate) fn rate_ok(last: &AtomicU64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prev = last.load(Ordering::Relaxed);
    now >= prev + WARN_INTERVAL_S
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
