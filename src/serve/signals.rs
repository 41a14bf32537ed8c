//! SIGTERM, SIGINT and SIGCHLD, turned into counters and a wake-up pipe (the
//! self-pipe trick), so that no work happens inside a signal handler.
//!
//! Forked children (fork, prefork, the sidecar) ignore SIGTERM and SIGINT:
//! a Ctrl-C or systemd's stop (SIGTERM to the whole control group) reaches
//! them too, and only the parent decides when a drain is over. The parent
//! tells a child to stop with [`CHILD_STOP`] (SIGUSR1).
//!
//! The handlers are installed without `SA_RESTART`: a blocked `accept`,
//! `poll` or `read` returns EINTR, and every loop retries it after looking at
//! the counters. The handler only touches atomics and `write(2)`, both
//! async-signal-safe, and keeps `errno` as it found it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The signal a parent sends a forked child to make it stop at once.
pub const CHILD_STOP: Signal = Signal::SIGUSR1;

/// SIGTERM + SIGINT received so far (in a child: [`CHILD_STOP`]): 1 means
/// drain, 2 means exit now.
static STOPS: AtomicUsize = AtomicUsize::new(0);
/// Write end of the wake pipe, or -1 in a forked child.
static WAKE_WR: AtomicI32 = AtomicI32::new(-1);
/// Read end of the wake pipe, kept open for the life of the process.
static WAKE_RD: OnceLock<OwnedFd> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    let saved = Errno::last_raw();
    // SIGCHLD only needs the wake-up: the loop then reaps with waitpid.
    if sig != libc::SIGCHLD {
        STOPS.fetch_add(1, Ordering::SeqCst);
    }
    let fd = WAKE_WR.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking so
        // a full pipe (a wake-up already pending) returns EAGAIN, ignored.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
    Errno::set_raw(saved);
}

fn set(sig: Signal, handler: SigHandler) -> io::Result<()> {
    let flags = if sig == Signal::SIGCHLD {
        SaFlags::SA_NOCLDSTOP
    } else {
        SaFlags::empty()
    };
    let act = SigAction::new(handler, flags, SigSet::empty());
    // SAFETY: `on_signal` only uses async-signal-safe operations (atomics,
    // write(2), errno); SIG_IGN/SIG_DFL are always sound.
    unsafe { sigaction(sig, &act) }?;
    Ok(())
}

/// Installs the handlers and the wake pipe. Call once, before any thread or
/// child exists.
pub fn install() -> io::Result<()> {
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    WAKE_WR.store(wr.as_raw_fd(), Ordering::SeqCst);
    // The write end lives as long as the process: the handler may use it at
    // any moment.
    std::mem::forget(wr);
    let _ = WAKE_RD.set(rd);
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set(sig, SigHandler::Handler(on_signal))?;
    }
    Ok(())
}

/// In a freshly forked child: SIGTERM and SIGINT are ignored (they reach
/// the whole process group from a terminal or systemd, and the parent decides
/// when children stop); [`CHILD_STOP`] counts as a stop; SIGCHLD is back to
/// default; the parent's pipe is no longer written.
/// Only async-signal-safe calls: safe between fork and anything else.
pub fn reset_in_child() {
    WAKE_WR.store(-1, Ordering::SeqCst);
    STOPS.store(0, Ordering::SeqCst);
    let _ = set(Signal::SIGTERM, SigHandler::SigIgn);
    let _ = set(Signal::SIGINT, SigHandler::SigIgn);
    let _ = set(CHILD_STOP, SigHandler::Handler(on_signal));
    let _ = set(Signal::SIGCHLD, SigHandler::SigDfl);
}

/// Number of SIGTERM/SIGINT received.
pub fn stops() -> usize {
    STOPS.load(Ordering::SeqCst)
}

/// The read end of the wake pipe, for a `poll` that also waits for sockets.
pub fn wake_fd() -> RawFd {
    WAKE_RD.get().map_or(-1, |fd| fd.as_raw_fd())
}

/// Empties the wake pipe after it polled readable.
pub fn drain_wake() {
    if let Some(fd) = WAKE_RD.get() {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(fd, &mut buf), Ok(n) if n > 0) {}
    }
}

/// Sleeps until a signal arrives or `timeout` passes (`None`: forever).
pub fn wait(timeout: Option<Duration>) {
    let Some(fd) = WAKE_RD.get() else {
        std::thread::sleep(timeout.unwrap_or(Duration::from_secs(1)));
        return;
    };
    let ms = timeout.map_or(PollTimeout::NONE, |t| {
        PollTimeout::try_from(t.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX)
    });
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN)];
    // EINTR is the very wake-up we wait for; nothing else can fail here.
    let _ = poll(&mut fds, ms);
    drain_wake();
}
