//! SIGTERM, SIGINT, SIGHUP and SIGCHLD, turned into a server's [`Shutdown`] (a
//! counter and a wake-up pipe: the self-pipe trick), so that no work happens
//! inside a signal handler. Only the binary's edge (`serve::run`) installs
//! them; a server started by a test is stopped through its `Shutdown`.
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
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::serve::lifecycle::shutdown::Shutdown;

/// The signal a parent sends a forked child to make it stop at once.
pub(crate) const CHILD_STOP: Signal = Signal::SIGUSR1;

/// The installed server's stop counter (SIGTERM + SIGINT received; in a
/// child: [`CHILD_STOP`]): null until [`install`].
static STOPS: AtomicPtr<AtomicUsize> = AtomicPtr::new(std::ptr::null_mut());
/// The installed server's handover counter (SIGHUP received): null until
/// [`install`] and in a forked child.
static RELOADS: AtomicPtr<AtomicUsize> = AtomicPtr::new(std::ptr::null_mut());
/// Write end of the installed server's wake pipe, or -1 in a forked child.
static WAKE_WR: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let saved = Errno::last_raw();
    // SIGCHLD only needs the wake-up: the loop then reaps with waitpid.
    let stops = if sig == libc::SIGHUP {
        RELOADS.load(Ordering::SeqCst)
    } else {
        STOPS.load(Ordering::SeqCst)
    };
    if sig != libc::SIGCHLD && !stops.is_null() {
        // SAFETY: a non-null pointer comes from `Shutdown::counter` or
        // `Shutdown::reload_counter`, which live as long as the process.
        unsafe { &*stops }.fetch_add(1, Ordering::SeqCst);
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

/// Wires SIGTERM and SIGINT to `shutdown` (each one a [`Shutdown::trigger`]),
/// SIGHUP to its handover counter and SIGCHLD to its wake-up. Call once, at the binary's edge, before any
/// thread or child exists.
pub(crate) fn install(shutdown: Shutdown) -> io::Result<()> {
    STOPS.store(
        std::ptr::from_ref(shutdown.counter()).cast_mut(),
        Ordering::SeqCst,
    );
    RELOADS.store(
        std::ptr::from_ref(shutdown.reload_counter()).cast_mut(),
        Ordering::SeqCst,
    );
    WAKE_WR.store(shutdown.wake_wr(), Ordering::SeqCst);
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        set(sig, SigHandler::Handler(on_signal))?;
    }
    Ok(())
}

/// In a freshly forked child: SIGTERM and SIGINT are ignored (they reach
/// the whole process group from a terminal or systemd, and the parent decides
/// when children stop); [`CHILD_STOP`] counts as a stop; SIGCHLD is back to
/// default; the parent's pipe is no longer written.
/// Only async-signal-safe calls: safe between fork and anything else.
pub(crate) fn reset_in_child() {
    WAKE_WR.store(-1, Ordering::SeqCst);
    RELOADS.store(std::ptr::null_mut(), Ordering::SeqCst);
    let stops = STOPS.load(Ordering::SeqCst);
    if !stops.is_null() {
        // SAFETY: as in `on_signal`: the counter lives as long as the process.
        unsafe { &*stops }.store(0, Ordering::SeqCst);
    }
    let _ = set(Signal::SIGTERM, SigHandler::SigIgn);
    let _ = set(Signal::SIGINT, SigHandler::SigIgn);
    // A handover is the parent's to do; SIGHUP's default would kill us.
    let _ = set(Signal::SIGHUP, SigHandler::SigIgn);
    let _ = set(CHILD_STOP, SigHandler::Handler(on_signal));
    let _ = set(Signal::SIGCHLD, SigHandler::SigDfl);
    crate::serve::lifecycle::handover::close_in_child();
}
