//! Records written with trace's pcap writer and read back.
//! The invariants are in `netecho::fuzz_api::pcap_round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho::fuzz_api::pcap_round_trip(data));
