//! A stream of datagrams (sources, sizes, timing) through the UDP policy.
//! The invariants are in `netecho_core::fuzz::udp_policy`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho_core::fuzz::udp_policy(data));
