//! Bytes from an unknown client through the TLS layer and the connection core.
//! The invariants are in `netecho::fuzz_api::tls_records`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho::fuzz_api::tls_records(data));
