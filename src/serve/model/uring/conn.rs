//! A connection as a worker holds it: its socket and what every path
//! shares, and the path it is on — plain (`plain.rs`: echo from provided
//! buffers), TLS (`tls.rs`) or spliced (`spliced.rs`). Each path performs
//! what its core asks and answers with a [`Step`]; the worker does the
//! rest once for all three (the deadline filed, or the cancel-then-close).

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use socket2::SockRef;

use super::bufs::Pool;
use super::flight::Queue;
use super::op::Op;
use super::plain::Plain;
use super::spliced::Spliced;
use super::tls::UringTls;
use super::turn::{Env, Key, Step};
use crate::serve::admission::Permit;
use crate::serve::contract::Timeouts;

/// The three ways a connection is served.
pub(super) enum Path {
    /// Echoed from provided buffers.
    Plain(Plain),
    /// TLS: its own buffers and a copying core. Boxed: most are not.
    Tls(Box<UringTls>),
    /// Moved to its pipe (`--zero-copy`). Boxed: most are not.
    Spliced(Box<Spliced>),
}

/// One client connection.
pub(super) struct Conn {
    pub(super) fd: OwnedFd,
    /// Its slot's generation: a completion tagged with another is for a
    /// former occupant.
    pub(super) generation: u32,
    /// The earliest deadline filed for it in the worker's timers.
    pub(super) armed: Option<Instant>,
    /// Its place under `--max-conns` (and `--max-conns-per-ip`), given
    /// back when the connection is dropped, after its socket (field order).
    /// Unboxed: 24 bytes with no address inside.
    pub(super) _permit: Permit,
    pub(super) path: Path,
}

/// A connection slot: empty, or its occupant (whose generation it holds;
/// the worker's free list keeps the next one of an empty slot).
pub(super) struct Slot {
    pub(super) conn: Option<Conn>,
}

impl Conn {
    /// One turn of its path; see [`Step`].
    pub(super) fn turn(&mut self, env: &mut Env<'_>, key: Key) -> Step {
        let unarmed = self.armed.is_none();
        match &mut self.path {
            Path::Plain(p) => p.progress(env, self.fd.as_raw_fd(), key, unarmed),
            Path::Tls(t) => t.progress(env, self.fd.as_raw_fd(), key),
            Path::Spliced(z) => z.progress(env, self.fd.as_fd(), key, unarmed),
        }
    }

    /// Cancels whatever of it is in the kernel; true when nothing is.
    pub(super) fn cancel_in_flight(&mut self, q: &mut Queue, (slot, generation): Key) -> bool {
        let (recv, send) = (Op::Recv(slot, generation), Op::Send(slot, generation));
        match &mut self.path {
            Path::Plain(p) => p.recv.cancel(q, recv) & p.send.cancel(q, send),
            Path::Tls(t) => t.recv.cancel(q, recv) & t.send.cancel(q, send),
            Path::Spliced(z) => z.poll.cancel(q, Op::Poll(slot, generation)),
        }
    }

    /// Its deadline came due at `now`: the core decides what that means.
    pub(super) fn on_timer(&mut self, now: Instant, t: &Timeouts) {
        match &mut self.path {
            Path::Plain(p) => {
                p.core.on_timer(now, t);
            }
            Path::Tls(tls) => tls.on_timer(now, t),
            Path::Spliced(z) => {
                z.core.on_timer(now, t);
            }
        }
    }

    /// The server is leaving: the connection ends now.
    pub(super) fn stop(&mut self) {
        match &mut self.path {
            Path::Plain(p) => p.core.stop(),
            Path::Tls(t) => t.core.stop(),
            Path::Spliced(z) => z.core.stop(),
        }
    }

    /// Closing: gives back every provided buffer it still holds.
    pub(super) fn give_back(&mut self, pool: &mut Pool) {
        if let Path::Plain(p) = &mut self.path {
            while let Some(b) = p.core.store_mut().pop_any() {
                pool.release(b);
            }
        }
    }
}

/// The peer as the open and close lines print it: its address, or
/// `unknown` once the socket has no peer any more (after a reset).
pub(super) fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// The peer of a connection, for logs.
pub(super) fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    SockRef::from(fd)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
}
