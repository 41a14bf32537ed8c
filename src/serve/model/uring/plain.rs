//! The buffer path: a connection whose echo is sent back from the provided
//! buffers the kernel received it into ([`Held`]), receiving as
//! [`Receive`] decides, until it ends or moves to its pipe.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use io_uring::cqueue;

use super::bufs::Pool;
use super::flight::{Flight, Lent, Queue};
use super::held::{Chunk, Front, Held};
use super::op::Op;
use super::policy::{Arm, Receive, Want};
use super::turn::{Env, Key, Step};
use crate::serve::contract::{self as core, End, Next, Store};
use crate::serve::service::stats::Stats;
use crate::serve::transport::splice::Switch;

/// A connection on the buffer path.
pub(super) struct Plain {
    /// The echo contract's state: the buffers held, FIN, deadlines, the end.
    pub(super) core: core::Conn<Held>,
    /// Its receive: into the pool's buffers, so it owns nothing.
    pub(super) recv: Flight,
    /// Its send, owning the buffer it sends from.
    pub(super) send: Flight<Lent>,
    /// How it receives, and its part in sharing the ring.
    pub(super) rx: Receive,
    /// When it moves to a pipe (`--zero-copy`).
    pub(super) switch: Switch,
}

impl Plain {
    pub(super) fn new(now: Instant, held_cap: usize, switch: Switch) -> Plain {
        Plain {
            core: core::Conn::new(now, Held::new(held_cap)),
            recv: Flight::default(),
            send: Flight::default(),
            rx: Receive::default(),
            switch,
        }
    }

    /// A receive completed with `res`; `piece` is the buffer it used and
    /// where in it its bytes start (`None`: no buffer, or not ours). True
    /// when it found the ring empty (ENOBUFS).
    pub(super) fn on_recv(
        &mut self,
        pool: &mut Pool,
        now: Instant,
        res: i32,
        flags: u32,
        piece: Option<(u16, u32)>,
    ) -> bool {
        if !cqueue::more(flags) {
            self.recv.complete();
        }
        let size = pool.size;
        let mut spare = piece.map(|(b, _)| b);
        let mut starved = false;
        match res {
            n if n > 0 => match piece {
                Some((b, off)) if u64::from(off) + n as u64 <= u64::from(size) => {
                    spare = None;
                    self.switch.after_read(n as usize);
                    self.core.on_read(now, Chunk::new(b, off, n as u32), 0);
                    self.rx.received(off, n as u32, size);
                }
                _ => self.core.fail(End::Error(libc::EINVAL)),
            },
            // FIN from the client: nothing more will come.
            0 => self.core.on_fin(),
            e => match -e {
                // The ring ran dry: wait for a buffer to come back.
                libc::ENOBUFS => {
                    self.rx.starved = true;
                    starved = true;
                }
                // Our cancel (backpressure or closing): `progress` decides
                // whether to re-arm.
                libc::ECANCELED => {}
                // A signal is retried by `progress`; anything else ends
                // the connection.
                errno => {
                    self.core.on_error(&io::Error::from_raw_os_error(errno));
                }
            },
        }
        if let Some(b) = spare {
            pool.release(b);
        }
        // While spilled, what arrived is copied into the spill (the lent
        // one, if its send is in flight) and its buffer goes back.
        let lent = match self.send.owned_mut() {
            Some(Lent::Spill(s)) => Some(&mut **s),
            _ => None,
        };
        let mut back = Vec::new();
        self.core.store_mut().absorb(
            lent,
            |b, off, len, to| to.extend_from_slice(pool.filled(b, off, len)),
            |b| back.push(b),
        );
        for b in back {
            pool.release(b);
        }
        starved
    }

    /// A send completed with `res`.
    pub(super) fn on_send(&mut self, pool: &mut Pool, stats: &Stats, now: Instant, res: i32) {
        // What the send owned comes back first: the spill before the core
        // counts what was sent from it.
        match self.send.complete() {
            Some(Lent::Piece(b)) => pool.release(b),
            Some(Lent::Spill(s)) => self.core.store_mut().unlend(s),
            None => {}
        }
        match res {
            n if n > 0 => {
                stats.bytes.add(n as u64);
                self.core.on_sent(now, n as usize);
            }
            // Nothing sent of a non-empty buffer: the core ends it.
            0 => self.core.on_sent(now, 0),
            // Our cancel: the connection is closing, or spilling
            // (`progress` does it now that no send is in flight).
            e if -e == libc::ECANCELED => {}
            // A signal is resubmitted by `progress`; anything else ends it.
            e => {
                self.core.on_error(&io::Error::from_raw_os_error(-e));
            }
        }
        while let Some(b) = self.core.store_mut().pop_done() {
            pool.release(b);
        }
        // No send is in flight now.
        self.core.store_mut().settle();
    }

    /// Whether it may move to its pipe now: it wants to, nothing is kept,
    /// no receive or send is in flight (a multishot receive is cancelled
    /// for it, and what it still brings is echoed first), and the client
    /// has not half-closed. Taking the switch is for good.
    pub(super) fn ready_to_switch(&mut self, q: &mut Queue, (slot, generation): Key) -> bool {
        if !self.switch.wanted() {
            return false;
        }
        if self.recv.is_busy() && self.core.end().is_none() {
            self.recv.cancel(q, Op::Recv(slot, generation));
            return false;
        }
        let store = self.core.store();
        let quiet = self.recv.is_idle() && self.send.is_idle();
        let empty = store.bufs() == 0 && Store::is_empty(store);
        let open = matches!(self.core.next(), Next::Io { .. }) && !self.core.read_closed();
        quiet && empty && open && self.switch.take(true)
    }

    /// Performs what its core asks (send what is held, read or pause
    /// reading, spill, send our FIN) with io_uring requests.
    pub(super) fn progress(
        &mut self,
        env: &mut Env<'_>,
        fd: RawFd,
        key: Key,
        unarmed: bool,
    ) -> Step {
        let (slot, generation) = key;
        let (recv_op, send_op) = (Op::Recv(slot, generation), Op::Send(slot, generation));
        let mut next = self.core.next();
        if !matches!(next, Next::Io { .. }) || self.core.store().bufs() == 0 {
            // Nothing (left) to spill.
            self.rx.spill_wanted = false;
        }
        if self.rx.spill_wanted {
            // Asked to give its buffers back ([`Held`]): done once no send
            // is in flight, cancelling the one that may wait for the client.
            if self.send.is_idle() {
                self.rx.spill_wanted = false;
                let pool = &mut *env.pool;
                let mut back = Vec::new();
                self.core.store_mut().spill_all(
                    pool.size as usize,
                    |b, off, len, to| to.extend_from_slice(pool.filled(b, off, len)),
                    |b| back.push(b),
                );
                for b in back {
                    pool.release(b);
                }
                next = self.core.next();
            } else {
                self.send.cancel(env.q, send_op);
            }
        }
        if next == Next::ShutWrite && self.recv.is_idle() && self.send.is_idle() {
            // Everything read was echoed: our FIN follows the last byte, and
            // the receive queue is empty, so the close that follows at once
            // (nothing is in flight) sends it, never a reset.
            self.core.on_shut(Ok(()));
            next = self.core.next();
        }
        if let Next::Io { send, read } = next {
            if send && self.send.is_idle() {
                let held = self.core.store_mut();
                match held.front() {
                    Some(Front::Chunk(c)) => {
                        env.q.send_piece(fd, env.pool, c, &mut self.send, send_op)
                    }
                    Some(Front::Spill) => {
                        if let Some(s) = held.lend_spill() {
                            env.q.send_spill(fd, s, &mut self.send, send_op);
                        }
                    }
                    None => {}
                }
            }
            // Backpressure: too much unsent echo, stop reading.
            if read == 0 && !self.core.read_closed() && self.recv.is_busy() {
                self.recv.cancel(env.q, recv_op);
                self.rx.paused();
            }
            if self.recv.is_idle() {
                let held = self.core.store();
                let want = Want {
                    read,
                    drained: held.drained() && self.send.is_idle(),
                    bufs: held.bufs(),
                    buffers_back: env.pool.free() > 0,
                    switching: self.switch.wanted(),
                };
                match self.rx.arm(want, env.held_cap, env.pool.size) {
                    Arm::Nothing => {}
                    Arm::Single(len) => env.q.recv_pool(fd, Some(len), &mut self.recv, recv_op),
                    Arm::Multi => env.q.recv_pool(fd, None, &mut self.recv, recv_op),
                }
            }
        }
        if let Next::Close(end) = next {
            return Step::Close(end);
        }
        // Holding buffers while paused or while its echo waits for the
        // client: one of those asked to spill when the ring runs low.
        let paused = matches!(next, Next::Io { read: 0, .. });
        if self
            .rx
            .should_list(self.core.store().bufs(), paused, !self.send.is_idle())
        {
            self.rx.listed = true;
            env.paused.push(key);
        }
        let due = (unarmed || self.core.deadline_may_be_sooner())
            .then(|| self.core.deadline(&env.timeouts))
            .flatten();
        Step::Wait(due.map(|(at, _)| at))
    }
}
