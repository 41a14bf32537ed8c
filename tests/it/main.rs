//! netecho's integration tests: one binary, linked once, whose tests run in
//! parallel (the layout of ripgrep's and cargo's test suites). Each module
//! below was once a test binary of its own and keeps its test names, so
//! `cargo test --test it serve::epoll::` still picks out one model.
//!
//! Every test starts the real `netecho` binary (or a peer of it in
//! [`util::peers`]) on loopback; [`util`] holds what more than one module
//! needs: the server process, echo round trips, runs of the binary.

/// Says out loud that a check did not run, and why: on stderr, and as one
/// line in the file `NETECHO_SKIP_LOG` names, because `cargo test` hides
/// the stderr of a test that passes. `.ci/run` prints that file after the
/// tests, and fails when a check that needs root skipped under root.
macro_rules! skipped {
    ($($arg:tt)*) => {
        $crate::util::note_skipped(&format!($($arg)*))
    };
}

mod util;

mod bench;
mod bench_models;
mod bench_scale;
mod cli;
mod client;
mod docs;
mod faults;
mod grammar;
mod handover;
mod hostile;
mod inspect;
mod lab;
mod layout;
mod ping;
mod pkg;
mod pool;
mod regressions;
mod serve;
mod serve_cli;
mod service;
mod stall;
mod tls;
mod tls_client;
mod trace;
mod uring;
mod watch;
mod zerocopy;
