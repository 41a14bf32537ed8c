//! One io_uring worker: its ring, its connections, and the loop that hands
//! each completion to the connection it is about (see the folder's
//! documentation). What a connection does with it is its path's business
//! (`plain.rs`, `tls.rs`, `spliced.rs`); what happens after — a deadline
//! filed, or the cancel-then-close — is written once here.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

use io_uring::cqueue;
use io_uring::types::{SubmitArgs, Timespec};
use tracing::{debug, warn};

use super::bufs::Pool;
use super::conn::{Conn, Path, Slot, peer_text};
use super::flight::Queue;
use super::op::{GEN_MASK, Op};
use super::ring::new_ring;
use super::spliced::Spliced;
use super::tuning::{CQ_FACTOR, ENTER_RETRY_PAUSE, EXIT_WAIT, RING_ENTRIES, TICK, Tuning};
use super::turn::{Env, Key, Step};
use crate::serve::contract::timers::Timers;
use crate::serve::contract::{End, Timeouts};
use crate::serve::ctx::Ctx;
use crate::serve::service::stats::AcceptSection;

/// A listener as one worker sees it.
pub(super) struct Listener {
    pub(super) sock: TcpListener,
    /// A multishot accept is in the kernel.
    pub(super) armed: bool,
    /// Accepting is paused (EMFILE...) until then.
    pub(super) resume_at: Option<Instant>,
    /// A `--tls-listen` socket.
    pub(super) tls: bool,
}

/// One worker's ring and everything in flight on it.
pub(super) struct Worker {
    /// The ring and its submissions. Declared before `pool`: dropped
    /// first, so the kernel lets go of the buffer ring before its memory
    /// is unmapped.
    pub(super) q: Queue,
    pool: Pool,
    pub(super) listeners: Vec<Listener>,
    pub(super) slots: Vec<Slot>,
    /// Empty slots, with the generation of their next occupant: reused
    /// before the table grows.
    pub(super) free_slots: Vec<Key>,
    /// Connections in the table.
    pub(super) live: usize,
    /// Each connection's peer by slot, kept only while the debug log is on,
    /// so its close line names the peer its open line named even after a
    /// reset; empty otherwise, so a slot pays nothing for it.
    pub(super) peers: HashMap<usize, SocketAddr>,
    /// Connections waiting for a buffer to come back.
    starved: Vec<Key>,
    /// Connections paused for backpressure while holding buffers: spilled
    /// (`held.rs`) when the ring runs low or a receive finds it empty.
    paused: Vec<Key>,
    /// `paused` is pruned once it is this long ([`Worker::prune_paused`]).
    prune_paused_at: usize,
    /// Completions reaped, reused to avoid an allocation per loop.
    cqes: Vec<cqueue::Entry>,
    pub(super) ctx: &'static Ctx,
    /// Buffers one connection may hold before its receive is paused.
    pub(super) held_cap: usize,
    /// Time of the last wake-up, shared by everything handled after it.
    pub(super) now: Instant,
    /// When the loop next looks at the stop flag and accept pauses.
    next_tick: Instant,
    /// Idle and stall deadlines, by connection ([`timer_key`]).
    timers: Timers<TimerKey>,
    /// `--idle-timeout` and the send timeout.
    timeouts: Timeouts,
    /// Spliced connections whose turn used its budget with work left:
    /// served again before the loop sleeps.
    again: Vec<Key>,
    /// The stop flag was seen: accepts are cancelled and never re-armed.
    pub(super) stopping: bool,
    /// Plaintext scratch for the TLS connections' turns (empty without
    /// `--tls-listen`).
    scratch: Box<[u8]>,
    /// Held while a multishot accept may still hand us connections (the
    /// kernel accepts for us, out of any short section's reach): let go
    /// once stopping and every accept's last completion is handled, so a
    /// stop (a handover above all) never finds a connection accepted and
    /// not yet counted.
    acceptor: Option<AcceptSection<'static>>,
}

impl Worker {
    /// Whether its provided buffers are consumed incrementally.
    pub(super) fn incremental(&self) -> bool {
        self.pool.ledger.incremental
    }

    /// `socks`: this worker's listeners, each with whether it is a
    /// `--tls-listen` one.
    pub(super) fn new(
        socks: Vec<(TcpListener, bool)>,
        ctx: &'static Ctx,
        tuning: Tuning,
    ) -> io::Result<Worker> {
        let ring = new_ring()?;
        let pool = Pool::new(&ring, tuning)?;
        let now = Instant::now();
        Ok(Worker {
            q: Queue::new(ring),
            pool,
            listeners: socks
                .into_iter()
                .map(|(sock, tls)| Listener {
                    tls,
                    sock,
                    armed: false,
                    resume_at: None,
                })
                .collect(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            live: 0,
            peers: HashMap::new(),
            starved: Vec::new(),
            paused: Vec::new(),
            prune_paused_at: PRUNE_PAUSED_MIN,
            cqes: Vec::with_capacity((RING_ENTRIES * CQ_FACTOR) as usize),
            ctx,
            held_cap: tuning.held_cap(),
            now,
            next_tick: now + TICK,
            timers: Timers::default(),
            timeouts: ctx.timeouts(),
            again: Vec::new(),
            stopping: false,
            scratch: match ctx.tls {
                Some(_) => vec![0u8; crate::serve::contract::BUF_SIZE].into_boxed_slice(),
                None => Box::default(),
            },
            acceptor: Some(ctx.stats.acceptor()),
        })
    }

    /// The event loop: runs until the server stops and this worker has no
    /// connection left, or the ring fails.
    pub(super) fn serve(&mut self) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        loop {
            if !self.stopping && self.ctx.stats.stopping() {
                self.stop_accepting();
            }
            if self.stopping && self.listeners.iter().all(|l| !l.armed) {
                self.acceptor = None;
            }
            let tick = self.now >= self.next_tick;
            if tick {
                self.next_tick = self.now + TICK;
            }
            self.expire_due();
            self.resume_accepts();
            if self.ring_low() {
                self.spill_paused();
            }
            self.prune_paused();
            self.feed_starved(tick);
            self.run_again();
            if self.stopping && self.live == 0 && self.listeners.iter().all(|l| !l.armed) {
                return Ok(());
            }
            self.wait()?;
            self.reap();
        }
    }

    /// Submits what is queued and sleeps until a completion arrives or the
    /// next timer is due.
    fn wait(&mut self) -> io::Result<()> {
        self.q.flush()?;
        let mut until = self.next_tick;
        if let Some(t) = self.timers.next_due() {
            until = until.min(t);
        }
        for l in &self.listeners {
            if let Some(t) = l.resume_at {
                until = until.min(t);
            }
        }
        // Entries still in the backlog go in on the next turn, and spliced
        // connections with work left are served again: do not sleep.
        let want = usize::from(!self.q.backlogged() && self.again.is_empty());
        let ts = Timespec::from(until.saturating_duration_since(Instant::now()).min(TICK));
        let res = self
            .q
            .ring
            .submitter()
            .submit_with_args(want, &SubmitArgs::new().timespec(&ts));
        self.now = Instant::now();
        match res {
            Ok(_) => Ok(()),
            // ETIME: the timeout; EINTR: a signal (the loop looks at the stop
            // flag); EBUSY: completions must be reaped first.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            // The kernel is short of memory for now: try again shortly.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                std::thread::sleep(ENTER_RETRY_PAUSE);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Handles every completion waiting in the queue.
    fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.q.ring.completion());
        for c in &cqes {
            self.complete(c.user_data(), c.result(), c.flags());
        }
        self.cqes = cqes;
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.q.completed();
        }
        match Op::decode(data) {
            Some(Op::Accept(i)) => self.on_accept(i, res, flags),
            Some(Op::Recv(slot, generation)) => self.on_recv((slot, generation), res, flags),
            Some(Op::Send(slot, generation)) => self.on_send((slot, generation), res),
            Some(Op::Poll(slot, generation)) => self.on_poll((slot, generation), res, flags),
            // A cancel's own result (0, ENOENT, EALREADY) changes nothing:
            // the cancelled request reports for itself.
            Some(Op::Cancel) => {}
            None => {
                debug!(data, res, "completion with unknown user_data ignored");
            }
        }
    }

    // ---- connections ----

    /// The connection `key` names, if it is still the slot's occupant.
    fn conn_mut(&mut self, (slot, generation): Key) -> Option<&mut Conn> {
        live(&mut self.slots, (slot, generation))
    }

    fn on_recv(&mut self, key: Key, res: i32, flags: u32) {
        // The buffer this completion used and where in it its bytes start;
        // a buffer not ours is refused (`None`) and never given back.
        let piece = cqueue::buffer_select(flags).and_then(|b| {
            let len = usize::try_from(res).unwrap_or(0);
            let at = self.pool.take(b, len, cqueue::buffer_more(flags))?;
            Some((b, at))
        });
        let (now, pool) = (self.now, &mut self.pool);
        let (starved, unused) = match live(&mut self.slots, key).map(|c| &mut c.path) {
            Some(Path::Plain(p)) => (p.on_recv(pool, now, res, flags, piece), None),
            Some(Path::Tls(t)) => {
                // A TLS receive uses the connection's own buffer, never
                // the ring.
                t.on_recv(res);
                (false, piece)
            }
            // A spliced connection receives nothing on the ring.
            Some(Path::Spliced(_)) => (false, piece),
            None => {
                // Cannot happen (a slot is freed only when idle), but a
                // buffer must never be lost from the ring.
                if let Some((b, _)) = piece {
                    self.pool.release(b);
                }
                return;
            }
        };
        if let Some((b, _)) = unused {
            self.pool.release(b);
        }
        if starved {
            self.starved.push(key);
        }
        self.progress(key.0);
        if starved {
            // Whoever holds buffers while paused gives them back.
            self.spill_paused();
        }
    }

    fn on_send(&mut self, key: Key, res: i32) {
        let (now, stats, pool) = (self.now, self.ctx.stats, &mut self.pool);
        match live(&mut self.slots, key).map(|c| &mut c.path) {
            Some(Path::Plain(p)) => p.on_send(pool, stats, now, res),
            Some(Path::Tls(t)) => t.on_send(res, now),
            Some(Path::Spliced(_)) | None => return,
        }
        self.progress(key.0);
    }

    /// A spliced connection's poll reported readiness (or ended).
    fn on_poll(&mut self, key: Key, res: i32, flags: u32) {
        let Some(c) = self.conn_mut(key) else {
            return;
        };
        if let Path::Spliced(z) = &mut c.path {
            z.on_poll_done(res, cqueue::more(flags));
        }
        self.progress(key.0);
    }

    /// More than half of the ring is held by connections: time for the
    /// paused ones to spill.
    fn ring_low(&self) -> bool {
        !self.paused.is_empty() && self.pool.ledger.low()
    }

    /// Asks every connection paused with buffers held to spill them
    /// (`held.rs`), so the ring goes to connections whose echo moves.
    fn spill_paused(&mut self) {
        for key in std::mem::take(&mut self.paused) {
            if let Some(Path::Plain(p)) = self.conn_mut(key).map(|c| &mut c.path) {
                p.rx.listed = false;
                p.rx.spill_wanted = true;
                self.progress(key.0);
            }
        }
    }

    /// Drops from `paused` the connections that hold no buffer any more,
    /// or are gone. A connection is listed at every echo it sends (it holds
    /// its buffer while the send waits for the client), and without
    /// pressure on the ring nothing else empties the list: it grew by a key
    /// per connection served, 16 bytes per idle connection and without
    /// bound at a connection per request. Runs when the list has doubled
    /// since its last pass, so it costs amortised O(1) per listing.
    fn prune_paused(&mut self) {
        if self.paused.len() < self.prune_paused_at {
            return;
        }
        let slots = &mut self.slots;
        self.paused
            .retain(|&key| match live(slots, key).map(|c| &mut c.path) {
                Some(Path::Plain(p)) if p.core.store().bufs() > 0 => true,
                Some(Path::Plain(p)) => {
                    // Listed again when it next holds buffers and waits.
                    p.rx.listed = false;
                    false
                }
                _ => false,
            });
        self.prune_paused_at = (2 * self.paused.len()).max(PRUNE_PAUSED_MIN);
        self.paused.shrink_to(self.prune_paused_at);
    }

    /// Serves again the spliced connections whose last turn used its budget.
    fn run_again(&mut self) {
        for key in std::mem::take(&mut self.again) {
            if let Some(Path::Spliced(z)) = self.conn_mut(key).map(|c| &mut c.path) {
                z.again = false;
                self.progress(key.0);
            }
        }
    }

    /// Re-arms connections whose receive found the ring empty, once any
    /// buffer is back. All of them at once: one may find the ring empty
    /// again, but none waits for a wake-up that never comes. `force` (once
    /// per tick) retries even when our count says the ring is empty, so a
    /// miscount could delay a connection by a tick, never stall it.
    fn feed_starved(&mut self, force: bool) {
        if self.starved.is_empty() || (self.pool.free() == 0 && !force) {
            return;
        }
        for key in std::mem::take(&mut self.starved) {
            if let Some(c) = self.conn_mut(key) {
                if let Path::Plain(p) = &mut c.path {
                    p.rx.starved = false;
                }
                self.progress(key.0);
            }
        }
    }

    /// Moves a connection forward after anything changed: moves it to its
    /// pipe if it wants to and can, lets its path perform what its core
    /// asks, then files its next deadline, or — once it has ended — cancels
    /// what is in flight and closes it when nothing is.
    pub(super) fn progress(&mut self, slot: usize) {
        let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        let key = (slot, c.generation);
        if let Path::Plain(p) = &mut c.path
            && p.ready_to_switch(&mut self.q, key)
            && let Some(z) = Spliced::switch(&c.fd, self.now)
        {
            c.path = Path::Spliced(z);
        }
        let mut env = Env {
            q: &mut self.q,
            pool: &mut self.pool,
            now: self.now,
            timeouts: self.timeouts,
            stats: self.ctx.stats,
            held_cap: self.held_cap,
            scratch: &mut self.scratch,
            paused: &mut self.paused,
            again: &mut self.again,
        };
        match c.turn(&mut env, key) {
            Step::Wait(Some(at)) => self.timers.file(&mut c.armed, at, timer_key(key)),
            Step::Wait(None) => {}
            Step::Close(end) => {
                if c.cancel_in_flight(&mut self.q, key) {
                    self.close(slot, end);
                }
            }
        }
    }

    /// Closes a connection with nothing in flight, gives its buffers back
    /// to the ring, and frees its `--max-conns` slot after the close (its
    /// permit, dropped after its socket).
    fn close(&mut self, slot: usize, end: End) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(mut conn) = s.conn.take() else {
            return;
        };
        self.free_slots
            .push((slot, conn.generation.wrapping_add(1) & GEN_MASK));
        self.live = self.live.saturating_sub(1);
        let slots = &self.slots;
        self.timers.forget(conn.armed, |&(i, generation)| {
            slots
                .get(i as usize)
                .and_then(|s| s.conn.as_ref())
                .is_some_and(|c| c.generation == generation)
        });
        conn.give_back(&mut self.pool);
        self.ctx.stats.count_end(end);
        if let Path::Tls(t) = &conn.path
            && let Some(f) = t.tls.failure()
        {
            self.ctx.stats.count_failure(f);
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            debug!(
                peer = %peer_text(self.peers.remove(&slot)),
                tls = matches!(conn.path, Path::Tls(_)),
                %end,
                "connection closed"
            );
        }
        // The socket, then the permit: a drain that sees no active
        // connection knows every FIN is out.
        drop(conn);
    }

    /// Takes the due timer entries: asks each live connection's core
    /// whether its deadline has passed (then it closes, once nothing of it
    /// is in the kernel), and files it again if traffic moved it on.
    fn expire_due(&mut self) {
        while let Some((at, key)) = self.timers.pop_due(self.now) {
            let key = (key.0 as usize, key.1);
            let (now, timeouts) = (self.now, self.timeouts);
            let Some(c) = self.conn_mut(key) else {
                // That connection closed already; its slot may serve another.
                self.timers.dropped_stale();
                continue;
            };
            if c.armed != Some(at) {
                // An older entry; a sooner one was filed and handled.
                continue;
            }
            c.armed = None;
            c.on_timer(now, &timeouts);
            // Closes it if it expired; otherwise files its new deadline.
            self.progress(key.0);
        }
    }

    /// Leaves the loop cleanly whatever stopped it: every connection is
    /// stopped (its requests cancelled, then closed), accepts are
    /// cancelled, and the kernel is given [`EXIT_WAIT`] to finish. If it does
    /// not, descriptors are closed anyway, and what the requests still in
    /// flight own is leaked with them (`flight.rs`), the buffer ring too,
    /// rather than freed under a request that may still write to it.
    pub(super) fn exit(mut self) {
        self.stop_accepting();
        for slot in 0..self.slots.len() {
            if let Some(c) = self.slots[slot].conn.as_mut() {
                c.stop();
                self.progress(slot);
            }
        }
        let deadline = Instant::now() + EXIT_WAIT;
        while self.q.inflight > 0 && self.now < deadline {
            if self.wait().is_err() {
                break;
            }
            self.reap();
        }
        let leftover = self.q.inflight;
        for slot in 0..self.slots.len() {
            if self.slots[slot].conn.is_some() {
                self.close(slot, End::Stopped);
            }
        }
        let Worker { q, pool, .. } = self;
        drop(q);
        if leftover == 0 {
            drop(pool);
        } else {
            warn!(
                requests = leftover,
                "io_uring requests outlived the worker; leaking its buffers"
            );
            std::mem::forget(pool);
        }
    }
}

/// Below this length the list of paused connections is never pruned.
const PRUNE_PAUSED_MIN: usize = 1024;

/// A connection's key as its timer entry keeps it: the slot in 32 bits, so
/// an entry is 16 bytes where `Key` would make it 24 — one per idle
/// connection.
type TimerKey = (u32, u32);

/// `key` for the timers. The slot is cut to 32 bits as a completion's user
/// data cuts it (`op.rs`): a worker never holds 2^32 connections, each one
/// being a descriptor.
fn timer_key((slot, generation): Key) -> TimerKey {
    (slot as u32, generation)
}

/// The connection `key` names in `slots`, if it is still the slot's occupant.
fn live(slots: &mut [Slot], (slot, generation): Key) -> Option<&mut Conn> {
    slots
        .get_mut(slot)
        .and_then(|s| s.conn.as_mut())
        .filter(|c| c.generation == generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's slot is most of the server's user-space memory per
    /// connection (`scripts/c1m.sh`: 271 bytes at the margin with a
    /// 216-byte slot); what only some connections need (a spill, TLS, a
    /// pipe) is boxed so it stays small. Every connection's permit is held
    /// inline: 168 bytes plus a boxed 48-byte permit (and its allocation's
    /// header) before, 184 bytes and no allocation then. The first chunk a
    /// connection holds is inline too, with the deque for the others boxed
    /// (`held.rs`): 176 bytes, and no allocation at a connection's first
    /// message (a 64-byte deque and its header, kept while it idled).
    #[test]
    fn a_connection_slot_stays_small() {
        let slot = std::mem::size_of::<Slot>();
        assert!(slot <= 176, "a connection slot grew to {slot} bytes");
    }
}
