//! Wire formats `trace` reads and writes, parsed from hostile bytes
//! without I/O and without panics: each takes bytes (or any `Read`/`Write`
//! the caller opened) and never a socket or a path.
//!
//! - [`packet`]: Ethernet (and the other link types) → IPv4/IPv6 →
//!   TCP/UDP, smoltcp-style checked views; [`packet::build_frame`] for
//!   tests and the fuzz round trip;
//! - [`options`]: TCP options, the one walk `trace` and the saved SYN share;
//! - [`seq`]: wrap-around TCP sequence numbers and the `J+n`/`K+n` form;
//! - [`pcap`]: the classic pcap format `trace --write` produces;
//! - [`file`]: reading pcap and pcapng captures (`trace -r`).

pub mod file;
pub mod options;
pub mod packet;
pub mod pcap;
pub mod seq;
