//! Requests in flight, and the one place that argues they are sound.
//!
//! # The rule
//! A request that reads or writes memory of ours owns that memory from its
//! submission to its final completion (tokio-uring's op `Lifecycle` and
//! monoio's ops keep the same rule): the buffer is moved into the request's
//! [`Flight`] when the entry is built, and handed back only by
//! [`Flight::complete`]. A `Flight` dropped while its request is still in
//! the kernel leaks what it owns rather than free memory the kernel may
//! still touch (what tokio-uring calls `Ignored`).
//!
//! What each request owns:
//! - a send of echo from a provided buffer: a hold on that buffer in the
//!   pool's [`super::ledger::Ledger`] ([`Lent::Piece`]), so the pool does
//!   not give it back to the kernel (which would overwrite it) until the
//!   send completes, whatever the connection does with its piece meanwhile;
//! - a send of spilled echo: the spill itself ([`Lent::Spill`]); while it is
//!   lent, the only change made to it is an append within its capacity
//!   ([`super::held::Held::absorb`]), which neither moves nor writes the
//!   bytes being sent;
//! - a TLS receive: the connection's receive buffer; a TLS send: the
//!   ciphertext being sent;
//! - a receive into provided buffers: nothing of the connection's. The
//!   kernel picks a buffer of the pool, which lives as long as the ring
//!   (`super::bufs` and `Worker::exit`);
//! - accepts, polls and cancels: no memory at all.
//!
//! Every entry enters the ring through [`Queue::push`], the only `unsafe`
//! submission of the worker, and only the typed builders below make
//! entries that point at memory.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use io_uring::types::Fd;
use io_uring::{IoUring, opcode, squeue};

use super::bufs::Pool;
use super::held::{Chunk, Spill};
use super::op::Op;
use super::tuning::BGID;

/// Where one request of a connection stands, and what it owns meanwhile.
#[derive(Debug)]
pub(super) struct Flight<B = ()> {
    state: State<B>,
}

#[derive(Debug)]
enum State<B> {
    /// Not submitted: nothing of ours is in the kernel.
    Idle,
    /// Submitted and not finished.
    Busy(B),
    /// Submitted, and a cancel for it submitted too.
    Cancelling(B),
}

impl<B> Default for Flight<B> {
    fn default() -> Self {
        Flight { state: State::Idle }
    }
}

impl<B> Flight<B> {
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    pub(super) fn is_busy(&self) -> bool {
        matches!(self.state, State::Busy(_))
    }

    /// The request is in the kernel, owning `buf`.
    fn start(&mut self, buf: B) {
        debug_assert!(self.is_idle(), "one request of a kind at a time");
        self.state = State::Busy(buf);
    }

    /// The request's final completion arrived: what it owned comes back.
    pub(super) fn complete(&mut self) -> Option<B> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => None,
            State::Busy(b) | State::Cancelling(b) => Some(b),
        }
    }

    /// Asks the kernel to end the request tagged `op` if it is busy. True
    /// when nothing of it is in the kernel any more.
    pub(super) fn cancel(&mut self, q: &mut Queue, op: Op) -> bool {
        if self.is_busy() {
            q.cancel(op);
            if let State::Busy(b) = std::mem::replace(&mut self.state, State::Idle) {
                self.state = State::Cancelling(b);
            }
        }
        self.is_idle()
    }

    /// What the request in flight owns, to look at (or append to, for a
    /// lent spill) without taking it back.
    pub(super) fn owned_mut(&mut self) -> Option<&mut B> {
        match &mut self.state {
            State::Idle => None,
            State::Busy(b) | State::Cancelling(b) => Some(b),
        }
    }
}

impl<B> Drop for Flight<B> {
    /// Still in the kernel: its memory is leaked, never freed under it.
    fn drop(&mut self) {
        if let Some(b) = self.complete() {
            std::mem::forget(b);
        }
    }
}

/// What a buffer-path send owns.
#[derive(Debug)]
pub(super) enum Lent {
    /// A hold on provided buffer `.0` ([`Pool::hold`]).
    Piece(u16),
    /// The connection's spill.
    Spill(Box<Spill>),
}

/// The submission side of a worker's ring: entries go to the kernel in
/// order, through a backlog when the submission queue is full.
pub(super) struct Queue {
    /// Dropped before the worker's pool (field order in `Worker`), so the
    /// kernel lets go of the buffer ring before its memory is unmapped.
    pub(super) ring: IoUring,
    /// Entries that did not fit in the submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    /// Requests whose final completion has not arrived (submitted or
    /// waiting in `backlog`): the pool may be freed only when this is 0.
    pub(super) inflight: usize,
}

impl Queue {
    pub(super) fn new(ring: IoUring) -> Queue {
        Queue {
            ring,
            backlog: VecDeque::new(),
            inflight: 0,
        }
    }

    /// Entries wait in the backlog.
    pub(super) fn backlogged(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// A request's final completion arrived.
    pub(super) fn completed(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
    }

    /// Queues one request whose final completion we will wait for.
    fn push(&mut self, entry: squeue::Entry) {
        self.inflight += 1;
        if self.backlog.is_empty() {
            // SAFETY: every entry comes from this file's builders: what it
            // points at is owned by its request's `Flight` until the final
            // completion (the module's rule), or is a pool buffer, which
            // outlives every request (`Worker::exit` leaks it otherwise).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    /// Moves backlog entries into the submission queue, submitting when it
    /// is full. Bounded: at most one submit per queue-full of entries.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            {
                let mut sq = self.ring.submission();
                while let Some(e) = self.backlog.front() {
                    // SAFETY: as in `push`: the entry was built here and
                    // its memory is owned until its completion.
                    if unsafe { sq.push(e) }.is_err() {
                        break;
                    }
                    self.backlog.pop_front();
                }
            }
            if self.backlog.is_empty() {
                break;
            }
            match self.ring.submit() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Asks the kernel to cancel the request tagged `target`.
    pub(super) fn cancel(&mut self, target: Op) {
        self.push(
            opcode::AsyncCancel::new(target.encode())
                .build()
                .user_data(Op::Cancel.encode()),
        );
    }

    /// A multishot accept on listener `fd`.
    pub(super) fn accept_multi(&mut self, fd: RawFd, op: Op) {
        self.push(
            opcode::AcceptMulti::new(Fd(fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(op.encode()),
        );
    }

    /// A multishot poll for `mask`: one completion per wake-up of the
    /// socket, until cancelled.
    pub(super) fn poll_multi(&mut self, fd: RawFd, mask: u32, flight: &mut Flight, op: Op) {
        self.push(
            opcode::PollAdd::new(Fd(fd), mask)
                .multi(true)
                .build()
                .user_data(op.encode()),
        );
        flight.start(());
    }

    /// A receive into a provided buffer the kernel picks: one of at most
    /// `len` bytes (`Some`), or multishot (`None`).
    pub(super) fn recv_pool(&mut self, fd: RawFd, len: Option<u32>, flight: &mut Flight, op: Op) {
        let entry = match len {
            Some(len) => opcode::Recv::new(Fd(fd), std::ptr::null_mut(), len)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
            None => opcode::RecvMulti::new(Fd(fd), BGID).build(),
        };
        self.push(entry.user_data(op.encode()));
        flight.start(());
    }

    /// A receive into `buf`, which the request owns until its completion.
    pub(super) fn recv_owned(
        &mut self,
        fd: RawFd,
        mut buf: Box<[u8]>,
        flight: &mut Flight<Box<[u8]>>,
        op: Op,
    ) {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        // The heap memory of a box does not move when the box moves.
        let ptr = buf.as_mut_ptr();
        self.push(
            opcode::Recv::new(Fd(fd), ptr, len)
                .build()
                .user_data(op.encode()),
        );
        flight.start(buf);
    }

    /// A send of `buf` from byte `from` on; the request owns `buf` until
    /// its completion.
    pub(super) fn send_owned(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        from: usize,
        flight: &mut Flight<Vec<u8>>,
        op: Op,
    ) {
        let left = &buf[from.min(buf.len())..];
        self.push(send(fd, left, op));
        flight.start(buf);
    }

    /// A send of a chunk's unsent bytes, from where the kernel put them:
    /// the request holds its buffer in the pool until its completion.
    pub(super) fn send_piece(
        &mut self,
        fd: RawFd,
        pool: &mut Pool,
        c: Chunk,
        flight: &mut Flight<Lent>,
        op: Op,
    ) {
        pool.hold(c.bid);
        let entry = send(fd, pool.filled(c.bid, c.unsent_at(), c.unsent()), op);
        self.push(entry);
        flight.start(Lent::Piece(c.bid));
    }

    /// A send of the spill's unsent bytes: the request owns the spill.
    pub(super) fn send_spill(
        &mut self,
        fd: RawFd,
        spill: Box<Spill>,
        flight: &mut Flight<Lent>,
        op: Op,
    ) {
        self.push(send(fd, spill.unsent(), op));
        flight.start(Lent::Spill(spill));
    }
}

/// A send of `bytes`, whose owner keeps them where they are until the
/// send completes (the callers above move that owner into the flight).
fn send(fd: RawFd, bytes: &[u8], op: Op) -> squeue::Entry {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    opcode::Send::new(Fd(fd), bytes.as_ptr(), len)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(op.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flight_gives_back_what_it_owns_once_complete() {
        let mut f: Flight<Vec<u8>> = Flight::default();
        f.start(vec![1, 2, 3]);
        assert!(f.is_busy());
        assert_eq!(f.owned_mut().map(|b| b.len()), Some(3));
        assert_eq!(f.complete(), Some(vec![1, 2, 3]));
        assert!(f.is_idle());
        assert_eq!(f.complete(), None);
    }

    #[test]
    fn a_flight_dropped_in_the_kernel_leaks_what_it_owns() {
        let owned = std::rc::Rc::new(());
        let mut f = Flight::default();
        f.start(std::rc::Rc::clone(&owned));
        drop(f);
        assert_eq!(
            std::rc::Rc::strong_count(&owned),
            2,
            "freed under a request that may still use it"
        );
        let mut f = Flight::default();
        f.start(std::rc::Rc::clone(&owned));
        f.complete();
        drop(f);
        assert_eq!(
            std::rc::Rc::strong_count(&owned),
            2,
            "given back, then freed"
        );
    }
}
