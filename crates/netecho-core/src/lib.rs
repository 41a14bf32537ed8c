//! netecho's logic without I/O: what the server decides, with no system
//! call and no I/O library, the clock passed in. The `netecho` crate only
//! performs what this one decides, on sockets, rings and processes; this
//! crate's `Cargo.toml` has no nix, libc, mio, tokio, io-uring or socket2,
//! so the compiler keeps it that way.
//!
//! # Layout
//! - [`contract`] the echo contract as a state machine (`Conn`): events in
//!   (read n, sent n, FIN, error kind, now), actions out (read, send, shut
//!   down, close with a reason, wake at t); the close reasons (`End`) and
//!   [`BUF_SIZE`](contract::BUF_SIZE);
//! - [`duration`] the one duration grammar of every flag and fault key;
//! - [`fault`] faults on purpose: the `--fault` grammar and scopes, and
//!   what each fault decides for a TCP echo or a datagram;
//! - [`size`] the one size grammar (`64`, `4KiB`, `1MiB/s`) of every flag
//!   and fault key;
//! - [`pending`] the bytes the core keeps for the copying models;
//! - [`in_place`] what it keeps for the blocking loops: the unsent tail of
//!   their one buffer;
//! - [`timers`] the one timer rule of the event loops: a deadline heap;
//! - [`sizing`] how many workers a growing pool starts or retires;
//! - [`inspect`] what the path did to a connection: the saved SYN read,
//!   the server's report, the client's findings;
//! - [`udp`] the UDP echo policy: loop guard, rate limits, the source table,
//!   and why a datagram got no reply;
//! - `tls` (feature `tls`) a TLS client's session as bytes in and bytes
//!   out, between the socket and the core, with its handshake and stall
//!   deadlines;
//! - [`wire`] the packet and capture-file formats `trace` reads and writes.

pub mod contract;
pub mod duration;
pub mod fault;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod in_place;
pub mod inspect;
pub mod pending;
pub mod size;
pub mod sizing;
pub mod timers;
#[cfg(any(test, feature = "tls"))]
pub mod tls;
pub mod udp;
pub mod wire;
