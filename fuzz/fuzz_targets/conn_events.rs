//! Random socket events through the connection core, checked against a plain queue.
//! The invariants are in `netecho_core::fuzz::conn_events`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho_core::fuzz::conn_events(data));
