//! What a connection's path takes for one turn ([`Env`]) and gives back
//! ([`Step`]): the interface between the worker and `plain.rs`, `tls.rs`
//! and `spliced.rs`.

use std::time::Instant;

use super::bufs::Pool;
use super::flight::Queue;
use crate::serve::contract::{End, Timeouts};
use crate::serve::service::stats::Stats;

/// A connection's key: its slot and that slot's generation, which tells a
/// late completion for a former occupant from one for the current one.
pub(super) type Key = (usize, u32);

/// What a path's turn may use of its worker.
pub(super) struct Env<'a> {
    pub(super) q: &'a mut Queue,
    pub(super) pool: &'a mut Pool,
    /// Time of the last wake-up.
    pub(super) now: Instant,
    pub(super) timeouts: Timeouts,
    pub(super) stats: &'static Stats,
    /// Buffers one connection may hold before its receive is paused.
    pub(super) held_cap: usize,
    /// Plaintext scratch for TLS turns.
    pub(super) scratch: &'a mut [u8],
    /// Connections that may be asked to spill ([`super::held::Held`]).
    pub(super) paused: &'a mut Vec<Key>,
    /// Spliced connections to serve again before sleeping.
    pub(super) again: &'a mut Vec<Key>,
}

/// Where a path's turn left its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Waiting for the kernel; file this deadline, if any.
    Wait(Option<Instant>),
    /// Ended: cancel whatever is in flight, close once nothing is.
    Close(End),
}
