//! An Ethernet frame from a capture, through trace's parser (and its rebuild round trip).
//! The invariants are in `netecho::fuzz_api::packet`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho::fuzz_api::packet(data));
