//! Bytes from an unknown client through the TLS session and the connection
//! core. The invariants are in `netecho_core::fuzz::tls_records`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho_core::fuzz::tls_records(data));
