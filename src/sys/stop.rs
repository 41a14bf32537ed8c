//! Ctrl-C and SIGTERM as a flag the loops look at, so that `bench` and
//! `ping` stop early and still print what they measured, and `watch`,
//! `trace` and `lab` stop between two polls and exit 0, instead of dying
//! with the figures unprinted.
//!
//! The handler is installed without `SA_RESTART`: a blocking `poll`, `recv`,
//! `read` or `write` returns EINTR, and the loops look at [`requested`]
//! before trying again. The handler only stores to an atomic and keeps
//! `errno`, both async-signal-safe.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Set once SIGINT or SIGTERM has arrived, or [`request`] was called.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // The interrupted code may be between a failed call and its read of
    // errno. Nothing below should change errno; saving it makes that a
    // guarantee rather than an assumption.
    let saved = Errno::last_raw();
    STOP.store(true, Ordering::SeqCst);
    Errno::set_raw(saved);
}

/// Installs the handler for SIGINT and SIGTERM.
pub(crate) fn install() -> io::Result<()> {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: `on_signal` only stores to an atomic and saves/restores
        // errno, all async-signal-safe.
        unsafe { sigaction(sig, &act) }?;
    }
    Ok(())
}

/// Asks the loops to stop as a signal would: used when stdout is closed
/// (`netecho lab | head`), where there is no one left to show anything to.
pub(crate) fn request() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether the user (or [`request`]) asked to stop.
pub(crate) fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
