//! The zero-copy path on io_uring: a connection switched to its pipe
//! (`--zero-copy`, the rule of [`crate::serve::transport::splice::Switch`]) is echoed socket → pipe
//! → socket by [`crate::serve::transport::splice::drive`], the same code as the epoll model's, with
//! a multishot poll on this ring telling it when the socket is readable or
//! writable. Its bytes never enter user space and never touch the
//! provided-buffer ring.
//!
//! # Why not IORING_OP_SPLICE
//! The kernel never runs an io_uring splice inline: `io_splice` returns
//! EAGAIN to any non-blocking issue (io_uring/splice.c), so every splice
//! request is handed to an io-wq worker thread, which then blocks in the
//! socket until bytes come. Each 64 KiB pipe-full of a transfer would cost
//! two thread hand-offs (in and out) on the server's core. A poll request
//! on the ring and two splice(2) calls from the loop cost no thread at all;
//! the poll's completion arrives in the same batch as every other
//! completion, and the ring's submit-and-wait is still the only place the
//! worker sleeps.
//!
//! # Why `auto` keeps large messages on this path
//! A connection that switches here costs what it costs under the epoll
//! model: the splices are the same [`crate::serve::transport::splice::drive`]
//! with the same budget, and only the readiness hint differs (one multishot
//! poll completion against one edge of `epoll_wait`). Counted with
//! `strace -c -f` on the server over 2 s of `netecho bench -c 8 -s 1MiB`
//! (2026-12-07, load average 15–25): epoll made 13,160 splices and 310
//! `epoll_wait`s, uring 17,103 splices and 331 `io_uring_enter`s for 12 %
//! more requests: no io-wq thread, no extra syscall per pipe-full. Measured
//! side by side with `netecho bench --models c-epoll,c-splice,epoll,auto
//! --workloads bulk,stream -d 2` three times (same load), `--model auto`
//! cost 0.48 / 0.56 / 0.65× C epoll per 1 MiB request where `--model
//! epoll` cost 0.56 / 0.60 / 0.69×: no run had uring dearer. So `auto`
//! does not hand large connections to another model (it could not move a
//! connection between loops without a second event loop per worker, for no
//! measured gain). What made both cheaper alike is fewer, larger
//! pipe-fulls: a pipe that fills with more waiting grows to 1 MiB
//! (`transport/splice.rs`, `Growth`).
//!
//! # What stays the same
//! The connection core ([`core::Conn`] over [`Kept`]) keeps the contract:
//! order (a connection switches only with nothing kept and no receive in
//! flight), backpressure (the pipe's capacity is the cap), half-close,
//! the idle and stall clocks, drain and the metrics' byte count.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use socket2::SockRef;
use tracing::debug;

use super::flight::Flight;
use super::op::Op;
use super::turn::{Env, Key, Step};
use crate::serve::contract as core;
use crate::serve::transport::splice::{self, Kept, ZeroCopy};

/// What the poll asks for. POLLERR and POLLHUP are always reported; the
/// splice calls then find out what they mean.
pub(super) const POLL_MASK: u32 = (libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP) as u32;

/// Reads a spliced connection may make per turn before others are served
/// (the epoll model's read budget).
const BUDGET: usize = 16;

/// A connection on its pipe: its own core and its readiness hints.
pub(super) struct Spliced {
    /// The echo contract over the pipe ([`Kept`] made spliced).
    pub(super) core: core::Conn<Kept>,
    /// The socket may have bytes (or the FIN) to read: set by a poll
    /// completion, cleared by [`crate::serve::transport::splice::drive`] on EAGAIN with an empty pipe.
    readable: bool,
    /// The socket's send buffer may have room: set by a poll completion,
    /// cleared by [`crate::serve::transport::splice::drive`] on EAGAIN.
    writable: bool,
    /// Listed in the worker's turns to run again (its budget ran out).
    pub(super) again: bool,
    /// Its multishot poll.
    pub(super) poll: Flight,
}

impl Spliced {
    /// A connection that moves to its pipe at `now`; `None` when no pipe
    /// can be made (out of descriptors): it stays on the buffer path.
    ///
    /// Both hints start set: bytes may already wait, and the poll armed
    /// next reports only what changes after it.
    pub(super) fn new(now: Instant) -> Option<Spliced> {
        let kept = Kept::new(ZeroCopy::On);
        kept.spliced().then(|| Spliced {
            core: core::Conn::new(now, kept),
            readable: true,
            writable: true,
            again: false,
            poll: Flight::default(),
        })
    }

    /// Moves the connection on `fd` to a pipe at `now`: `None` (it stays
    /// on the buffer path, for good) when no pipe can be made or the socket
    /// cannot be made non-blocking. The splice calls need the latter:
    /// io_uring serves blocking sockets, and a splice(2) from one would
    /// block the worker until the client sends. Nothing of the buffer path
    /// is in flight by then.
    pub(super) fn switch(fd: &OwnedFd, now: Instant) -> Option<Box<Spliced>> {
        let made = SockRef::from(fd)
            .set_nonblocking(true)
            .map_err(|e| e.to_string())
            .and_then(|()| Spliced::new(now).ok_or_else(|| "no pipe".to_string()));
        match made {
            Ok(z) => Some(Box::new(z)),
            Err(e) => {
                debug!("zero copy unavailable for a connection ({e}); buffer path");
                // Receives and sends on the ring work either way; back to
                // how the buffer path had it.
                let _ = SockRef::from(fd).set_nonblocking(false);
                None
            }
        }
    }

    /// A poll completion: `res` is the readiness mask, or an error (our
    /// cancel when closing, or the kernel ending the poll) that says
    /// nothing of the socket: the splices find out, and `progress` re-arms
    /// the poll unless the connection is closing.
    pub(super) fn on_poll_done(&mut self, res: i32, more: bool) {
        if !more {
            self.poll.complete();
        }
        self.on_poll(u32::try_from(res).ok());
    }

    /// One turn of [`crate::serve::transport::splice::drive`] with the hints the poll gave, then
    /// the poll armed if it is not, and the next deadline.
    pub(super) fn progress(
        &mut self,
        env: &mut Env<'_>,
        fd: BorrowedFd<'_>,
        key: Key,
        unarmed: bool,
    ) -> Step {
        let mut bytes = 0;
        let turn = self.turn(fd, env.now, &mut bytes);
        if bytes > 0 {
            env.stats.bytes.add(bytes);
        }
        if let splice::Turn::Close(end) = turn {
            return Step::Close(end);
        }
        if turn == splice::Turn::Again && !self.again {
            self.again = true;
            env.again.push(key);
        }
        if self.poll.is_idle() {
            let op = Op::Poll(key.0, key.1);
            env.q
                .poll_multi(fd.as_raw_fd(), POLL_MASK, &mut self.poll, op);
        }
        let due = (unarmed || self.core.deadline_may_be_sooner())
            .then(|| self.core.deadline(&env.timeouts))
            .flatten();
        Step::Wait(due.map(|(at, _)| at))
    }

    /// A poll completion reported `mask` (or the poll ended: `None`, after
    /// which nothing is known and both hints are set).
    pub(super) fn on_poll(&mut self, mask: Option<u32>) {
        let Some(m) = mask else {
            self.readable = true;
            self.writable = true;
            return;
        };
        let bad = (libc::POLLERR | libc::POLLHUP) as u32;
        if m & ((libc::POLLIN | libc::POLLRDHUP) as u32 | bad) != 0 {
            self.readable = true;
        }
        if m & (libc::POLLOUT as u32 | bad) != 0 {
            self.writable = true;
        }
    }

    /// One turn: splices what the hints allow. `bytes` grows by the bytes
    /// echoed (sent back), as on the buffer path.
    pub(super) fn turn(
        &mut self,
        sock: BorrowedFd<'_>,
        now: Instant,
        bytes: &mut u64,
    ) -> splice::Turn {
        splice::drive(
            &mut self.core,
            sock,
            splice::Hints {
                readable: &mut self.readable,
                writable: &mut self.writable,
            },
            now,
            bytes,
            BUDGET,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_sets_only_the_hints_it_reports() {
        let mut s = Spliced::new(Instant::now()).expect("a pipe");
        s.readable = false;
        s.writable = false;
        s.on_poll(Some(libc::POLLOUT as u32));
        assert!(s.writable && !s.readable);
        s.writable = false;
        s.on_poll(Some(libc::POLLRDHUP as u32));
        assert!(s.readable && !s.writable);
        s.readable = false;
        s.on_poll(Some(libc::POLLERR as u32));
        assert!(s.readable && s.writable);
        s.readable = false;
        s.writable = false;
        s.on_poll(None);
        assert!(s.readable && s.writable);
    }
}
