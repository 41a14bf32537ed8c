//! Helpers shared by the integration tests: a real `netecho serve` process on
//! a loopback port, a deterministic byte generator, echo round trips that
//! report the first wrong byte, views of the server's processes in /proc,
//! runs of the binary to completion under a time limit, and (in [`peers`])
//! misbehaving servers written here for netecho's clients to talk to.
//!
//! Every wait here has a deadline: a broken server fails a test, never hangs it.

mod bytes;
mod client;
mod metrics;
pub mod peers;
mod procfs;
mod run;
mod sandbox;
mod server;
pub mod tls_peers;

pub use bytes::*;
pub use client::*;
pub use metrics::*;
pub use procfs::*;
pub use run::*;
pub use sandbox::*;
pub use server::*;

use std::time::{Duration, Instant};

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_netecho");
/// How long a server may take to print its `listening tcp` lines.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout for test clients: loopback answers in microseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout of test sockets, so a silent server fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Polling interval of the waits below.
const TICK: Duration = Duration::from_millis(10);
/// How long an exited server's stderr may take to reach its end.
const STDERR_EOF_WAIT: Duration = Duration::from_secs(1);

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// Serialises heavy load against timing checks: the pool tests hold
/// hundreds of clients and workers on a two-core machine, and a timeout
/// measured meanwhile would measure the scheduler. Heavy tests hold it for
/// writing ([`heavy`]), timing checks for reading ([`timing`]); everything
/// else runs in parallel as before.
static LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Taken by a test that loads the machine hard.
pub fn heavy() -> std::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Taken by a test whose assertion is about time.
pub fn timing() -> std::sync::RwLockReadGuard<'static, ()> {
    LOAD.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// True when `model` can run on this kernel; else says SKIPPED for `test`
/// and why. Only io_uring may be refused (an old kernel, a seccomp filter
/// or a container's policy); every other model runs anywhere.
pub fn model_runs(model: &str, test: &str) -> bool {
    if model == "uring"
        && let Err(why) = netecho::serve::uring::probe()
    {
        skipped!("SKIPPED: {test}: io_uring unusable here: {why}");
        return false;
    }
    true
}

/// Waits until `f()` holds, up to `within`, looking every 20 ms; the last
/// look is after the deadline, so a condition met just then still counts.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Prints a SKIPPED line and appends it to the file `NETECHO_SKIP_LOG`
/// names, if any (see `skipped!`). One `write` of one line to a file opened
/// for appending: lines of tests that skip at once do not interleave.
pub fn note_skipped(line: &str) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("NETECHO_SKIP_LOG") {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            eprintln!("note: could not add to {}: {e}", path.to_string_lossy());
        }
    }
}
