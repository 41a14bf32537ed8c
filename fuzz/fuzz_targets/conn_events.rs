//! Random socket events through the connection core, checked against a plain queue.
//! The invariants are in `netecho::fuzz_api::conn_events`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho::fuzz_api::conn_events(data));
