//! Ctrl-C and SIGTERM as a flag the polling loops look at, so `watch`,
//! `trace` and `lab` stop between two polls and exit 0.
//!
//! The handler only stores to an atomic (async-signal-safe) and is installed
//! without `SA_RESTART`, so a blocked `poll` or `recv` returns EINTR and the
//! loop gets to look at the flag at once.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::error::{Error, Result};

/// Set by the first SIGINT or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() -> Result<()> {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(sig, &act) }.map_err(|e| Error::Io {
            what: "installing the SIGINT/SIGTERM handler",
            source: e.into(),
        })?;
    }
    Ok(())
}

/// Asks the loops to stop as a signal would: used when stdout is closed
/// (`netecho lab | head`), where there is no one left to show anything to.
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}

/// True once SIGINT or SIGTERM arrived.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
