//! The SYN a server's kernel saved (TCP_SAVED_SYN), through `serve
//! --inspect-listen`'s parser. The invariants are in
//! `netecho_core::fuzz::saved_syn`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netecho_core::fuzz::saved_syn(data));
