//! An Ethernet frame from a capture, through trace's parser (and its rebuild round trip).
//! The invariants are in `netecho_core::fuzz::packet`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho_core::fuzz::packet(data));
