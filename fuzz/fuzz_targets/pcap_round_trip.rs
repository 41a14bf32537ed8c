//! Records written with trace's pcap writer and read back.
//! The invariants are in `netecho_core::fuzz::pcap_round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho_core::fuzz::pcap_round_trip(data));
