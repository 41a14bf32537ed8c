//! Ctrl-C and SIGTERM as a flag, so that `bench` and `ping` stop early and
//! still print what they measured (as `ping` does), instead of dying with
//! the figures unprinted.
//!
//! The handler is installed without `SA_RESTART`: a blocking `poll`, `read`
//! or `write` returns EINTR, and the loops look at [`requested`] before
//! trying again. The handler only stores to an atomic and keeps `errno`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Set once SIGINT or SIGTERM has arrived.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    let saved = Errno::last_raw();
    STOP.store(true, Ordering::SeqCst);
    Errno::set_raw(saved);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() -> io::Result<()> {
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

/// Whether the user asked to stop.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
