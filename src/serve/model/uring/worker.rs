//! One io_uring worker: its ring, its connections, and how each completion
//! moves a connection's core forward (see the folder's documentation).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use nix::sys::socket::{Shutdown, shutdown};
use socket2::SockRef;
use tracing::{debug, warn};

use super::bufs::Pool;
use super::op::{GEN_MASK, Op};
use super::ring::new_ring;
use super::{
    ACCEPT_ERROR_PAUSE, BGID, CQ_FACTOR, ENTER_RETRY_PAUSE, EXIT_WAIT, HELD_BYTES, RING_ENTRIES,
    TICK, Tuning,
};
use crate::serve::blocking::accept::{self, AcceptError};
use crate::serve::contract::timers::Timers;
use crate::serve::contract::{self as core, End, Next, Store, Timeouts};
use crate::serve::ctx::Ctx;
use crate::serve::service::stats::AcceptSection;
use crate::serve::transport::splice::{self, Switch, ZeroCopy};
use crate::serve::transport::tls::session::{EPROTO, TlsConn};

use super::spliced::{POLL_MASK, Spliced};
use super::tls::UringTls;

/// Where one request of a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    /// Not submitted: nothing of ours is in the kernel.
    Idle,
    /// Submitted and not finished.
    Busy,
    /// Submitted, and a cancel for it submitted too.
    Cancelling,
}

/// Received bytes not yet echoed: one piece of a provided buffer (all of it
/// unless the ring is incremental), held until its last byte is sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    bid: u16,
    /// Where in the buffer the piece starts.
    off: u32,
    len: u32,
    /// Bytes of it already sent.
    sent: u32,
}

impl Chunk {
    /// Where in its buffer the unsent bytes start.
    fn unsent_at(&self) -> usize {
        (self.off + self.sent) as usize
    }
}

/// The connection core's [`Store`] here: the kernel-filled pieces of
/// buffers themselves, in order, so bytes are never copied. Fully sent
/// pieces stay at the front until [`Held::pop_done`] releases them to the
/// pool (which republishes a buffer once every piece of it is released).
///
/// A connection paused for backpressure while the ring runs low (or while
/// another connection found it empty) *spills*: its held bytes are copied
/// into `spill`, its own heap buffer, and every piece of a provided buffer
/// it held is released ([`Held::spill_all`]). From then on what it receives is
/// copied there too while it has room ([`Held::absorb`]), and its echo is
/// sent from that copy. So a client that never reads keeps at most its own
/// spill — about [`HELD_BYTES`] plus one buffer, or the one burst it took
/// before its first pause — and no provided buffer: the ring, shared by
/// every connection of the worker, can only be held by connections whose
/// echo moves, and no client can starve the others by not reading.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Bytes spilled out of the ring, older than every chunk: those from
    /// `spill_sent` on are unsent. Its memory never moves while a send from
    /// it may be in flight (only [`Held::spill_all`] and [`Held::settle`],
    /// called with no send in flight, reallocate or compact it).
    ///
    /// Boxed: most connections never spill, and a connection's slot is the
    /// server's memory per connection (a million idle ones hold none).
    spill: Option<Box<Spill>>,
    chunks: VecDeque<Chunk>,
    /// Bytes received and not yet sent.
    unsent: usize,
    /// Buffers one connection may hold before its receive pauses
    /// ([`Tuning::held_cap`]).
    cap_bufs: u16,
}

/// A connection's spilled bytes ([`Held`]).
#[derive(Debug, Default)]
pub(super) struct Spill {
    /// The bytes; those from `sent` on are unsent.
    bytes: Vec<u8>,
    sent: usize,
}

/// What the next send of a connection sends from.
#[derive(Debug, Clone, Copy)]
enum Front {
    /// Unsent bytes of the spill, from this offset, this many.
    Spill(usize, usize),
    /// The first unsent chunk.
    Chunk(Chunk),
}

impl Held {
    fn new(cap_bufs: usize) -> Held {
        Held {
            spill: None,
            chunks: VecDeque::new(),
            unsent: 0,
            cap_bufs: u16::try_from(cap_bufs).unwrap_or(u16::MAX),
        }
    }

    /// Unsent bytes in the spill.
    fn spilled(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.bytes.len() - s.sent)
    }

    /// The spilled bytes from `at` on (empty without a spill).
    fn spill_from(&self, at: usize) -> &[u8] {
        self.spill
            .as_ref()
            .map_or(&[], |s| &s.bytes[at.min(s.bytes.len())..])
    }

    /// Where the next send starts: the spill first (its bytes are older).
    fn front(&self) -> Option<Front> {
        if let Some(s) = &self.spill
            && s.bytes.len() > s.sent
        {
            return Some(Front::Spill(s.sent, s.bytes.len() - s.sent));
        }
        self.chunks
            .iter()
            .find(|c| c.sent < c.len)
            .copied()
            .map(Front::Chunk)
    }

    /// Takes a buffer whose bytes are all sent off the front.
    fn pop_done(&mut self) -> Option<u16> {
        match self.chunks.front() {
            Some(c) if c.sent >= c.len => self.chunks.pop_front().map(|c| c.bid),
            _ => None,
        }
    }

    /// Buffers held, sent or not.
    fn bufs(&self) -> usize {
        self.chunks.len()
    }

    /// Nothing held at all: no buffer, no spilled byte.
    fn drained(&self) -> bool {
        self.chunks.is_empty() && self.spilled() == 0
    }

    /// With no send in flight: frees a fully sent spill, or drops its sent
    /// prefix, so the spill's memory is only what is unsent.
    fn settle(&mut self) {
        if self.spilled() == 0 {
            self.spill = None;
        } else if let Some(s) = &mut self.spill
            && s.sent > 0
        {
            s.bytes.drain(..s.sent);
            s.sent = 0;
        }
    }

    /// With no send in flight: copies every unsent byte of the held
    /// buffers into the spill, after the bytes already there, and hands
    /// each buffer to `give_back`. Leaves room for one more echo buffer and
    /// one received buffer, so that the single receives that follow are
    /// copied in without moving the spill under a send.
    fn spill_all(
        &mut self,
        buf_size: usize,
        mut copy: impl FnMut(u16, usize, usize, &mut Vec<u8>),
        mut give_back: impl FnMut(u16),
    ) {
        self.settle();
        let in_chunks: usize = self.chunks.iter().map(|c| (c.len - c.sent) as usize).sum();
        let spill = self.spill.get_or_insert_with(Box::default);
        spill.bytes.reserve(in_chunks + HELD_BYTES + buf_size);
        while let Some(c) = self.chunks.pop_front() {
            if c.sent < c.len {
                copy(
                    c.bid,
                    c.unsent_at(),
                    (c.len - c.sent) as usize,
                    &mut spill.bytes,
                );
            }
            give_back(c.bid);
        }
    }

    /// After a receive, while the spill has unsent bytes (so any send in
    /// flight is from the spill, never from a chunk): copies held chunks
    /// into the spill's spare capacity, oldest first, and hands their
    /// buffers to `give_back`. A chunk that does not fit stays held until
    /// the next [`Held::spill_all`].
    fn absorb(
        &mut self,
        mut copy: impl FnMut(u16, usize, usize, &mut Vec<u8>),
        mut give_back: impl FnMut(u16),
    ) {
        while self.spilled() > 0 {
            let Some(&c) = self.chunks.front() else {
                return;
            };
            let left = (c.len - c.sent) as usize;
            let Some(spill) = self.spill.as_mut() else {
                return;
            };
            if spill.bytes.capacity() - spill.bytes.len() < left {
                return;
            }
            // Fits in the spare capacity: extending does not reallocate.
            copy(c.bid, c.unsent_at(), left, &mut spill.bytes);
            self.chunks.pop_front();
            give_back(c.bid);
        }
    }
}

impl Store for Held {
    type Piece<'a> = Chunk;

    fn len(&self) -> usize {
        self.unsent
    }

    /// Over about one echo buffer of bytes, or over the buffer cap, reading
    /// pauses. A multishot receive may post a few buffers more before its
    /// cancel lands; they are kept all the same, never dropped.
    fn room(&self) -> usize {
        if self.unsent > HELD_BYTES || self.chunks.len() > usize::from(self.cap_bufs) {
            0
        } else {
            HELD_BYTES + 1 - self.unsent
        }
    }

    fn piece_len(piece: &Chunk) -> usize {
        piece.len as usize
    }

    fn keep(&mut self, mut piece: Chunk, skip: usize) -> usize {
        let skip = u32::try_from(skip).unwrap_or(u32::MAX).min(piece.len);
        piece.sent = skip;
        self.unsent += (piece.len - skip) as usize;
        self.chunks.push_back(piece);
        piece.len as usize
    }

    fn consume(&mut self, mut n: usize) {
        let from_spill = self.spilled().min(n);
        if let Some(s) = &mut self.spill {
            s.sent += from_spill;
        }
        self.unsent -= from_spill;
        n -= from_spill;
        for c in self.chunks.iter_mut() {
            if n == 0 {
                break;
            }
            let take = ((c.len - c.sent) as usize).min(n);
            c.sent += take as u32;
            n -= take;
            self.unsent -= take;
        }
    }
}

/// One client connection: its socket, where its two requests stand, and
/// the connection core.
struct Conn {
    fd: OwnedFd,
    /// The echo contract's state: the buffers held, FIN, deadlines, the end.
    core: core::Conn<Held>,
    recv: Io,
    send: Io,
    /// The last receive ended with ENOBUFS: re-arm once a buffer is back.
    starved: bool,
    /// Receive one buffer at a time. Set when the connection is paused for
    /// backpressure: a client that sends faster than it reads would otherwise
    /// take a burst of buffers at every multishot re-arm, and single
    /// receives keep it to `held_cap`. Cleared once the client has caught up.
    single: bool,
    /// In single mode, the last receive found the socket's queue empty and
    /// everything is echoed: a multishot receive would not burst now.
    caught_up: bool,
    /// Paused with buffers held and asked to spill them ([`Held`]): done
    /// as soon as no send is in flight (one is cancelled for it).
    spill_wanted: bool,
    /// In the worker's `paused` list.
    listed: bool,
    /// The earliest deadline filed for it in the worker's [`Timers`].
    armed: Option<Instant>,
    /// The client's address, kept only when `--max-conns-per-ip` needs it
    /// back at release (finding it costs a system call per connection).
    /// Boxed: only `--max-conns-per-ip` keeps one, and the slot is the
    /// server's memory per connection.
    peer: Option<Box<SocketAddr>>,
    /// A TLS client: its own copying core and buffers ([`super::tls`]);
    /// `core` above then stays empty.
    tls: Option<Box<UringTls>>,
    /// When this connection moves to a pipe (`--zero-copy`; never for TLS).
    switch: Switch,
    /// Moved to its pipe ([`super::spliced`]): its own core, and `core`
    /// above stays empty from then on.
    zc: Option<Box<Spliced>>,
    /// The multishot poll of a spliced connection.
    poll: Io,
}

/// A connection slot; the generation tells a late completion for a former
/// occupant from one for the current connection.
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// A listener as one worker sees it.
struct Listener {
    sock: TcpListener,
    /// A multishot accept is in the kernel.
    armed: bool,
    /// Accepting is paused (EMFILE...) until then.
    resume_at: Option<Instant>,
    /// A `--tls-listen` socket.
    tls: bool,
}

/// One worker's ring and everything in flight on it.
pub(super) struct Worker {
    /// Declared before `pool`: dropped first, so the kernel lets go of the
    /// buffer ring before its memory is unmapped.
    ring: IoUring,
    pool: Pool,
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    /// Empty slots, reused before the table grows.
    free_slots: Vec<usize>,
    /// Connections in the table.
    live: usize,
    /// Requests whose final completion has not arrived (submitted or waiting
    /// in `backlog`): the pool may be freed only when this is 0.
    inflight: usize,
    /// Entries that did not fit in the submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    /// Connections waiting for a buffer to come back (slot, generation).
    starved: Vec<(usize, u32)>,
    /// Connections paused for backpressure while holding buffers: spilled
    /// ([`Held`]) when the ring runs low or a receive finds it empty.
    paused: Vec<(usize, u32)>,
    /// Completions reaped, reused to avoid an allocation per loop.
    cqes: Vec<cqueue::Entry>,
    ctx: &'static Ctx,
    /// Buffers one connection may hold before its receive is paused.
    held_cap: usize,
    /// Time of the last wake-up, shared by everything handled after it.
    now: Instant,
    /// When the loop next looks at the stop flag and accept pauses.
    next_tick: Instant,
    /// Idle and stall deadlines, by (slot, generation).
    timers: Timers<(usize, u32)>,
    /// `--idle-timeout` and the send timeout.
    timeouts: Timeouts,
    /// Spliced connections whose turn used its budget with work left:
    /// served again before the loop sleeps.
    again: Vec<(usize, u32)>,
    /// The stop flag was seen: accepts are cancelled and never re-armed.
    stopping: bool,
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
        self.pool.incremental
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
            ring,
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
            inflight: 0,
            backlog: VecDeque::new(),
            starved: Vec::new(),
            paused: Vec::new(),
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
        self.flush()?;
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
        let want = usize::from(self.backlog.is_empty() && self.again.is_empty());
        let ts = Timespec::from(until.saturating_duration_since(Instant::now()).min(TICK));
        let res = self
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

    /// Moves backlog entries into the submission queue, submitting when it is
    /// full. Bounded: at most one submit per queue-full of entries.
    fn flush(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            {
                let mut sq = self.ring.submission();
                while let Some(e) = self.backlog.front() {
                    // SAFETY: every entry was built by this worker with
                    // buffers in `pool`, which outlives the request.
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

    /// Queues one request whose final completion we will wait for.
    fn push(&mut self, entry: squeue::Entry) {
        enqueue(&mut self.ring, &mut self.backlog, &mut self.inflight, entry);
    }

    /// Asks the kernel to cancel the request tagged `target`.
    fn cancel(&mut self, target: Op) {
        self.push(cancel_entry(target));
    }

    /// Handles every completion waiting in the queue.
    fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion());
        for c in &cqes {
            self.complete(c.user_data(), c.result(), c.flags());
        }
        self.cqes = cqes;
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.inflight = self.inflight.saturating_sub(1);
        }
        match Op::decode(data) {
            Some(Op::Accept(i)) => self.on_accept(i, res, flags),
            Some(Op::Recv(slot, generation)) => self.on_recv(slot, generation, res, flags),
            Some(Op::Send(slot, generation)) => self.on_send(slot, generation, res),
            Some(Op::Poll(slot, generation)) => self.on_poll(slot, generation, res, flags),
            // A cancel's own result (0, ENOENT, EALREADY) changes nothing:
            // the cancelled request reports for itself.
            Some(Op::Cancel) => {}
            None => {
                debug!(data, res, "completion with unknown user_data ignored");
            }
        }
    }

    // ---- accepting ----

    fn arm_accept(&mut self, i: usize) {
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        if l.armed || self.stopping {
            return;
        }
        l.armed = true;
        let fd = l.sock.as_raw_fd();
        let entry = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Op::Accept(i).encode());
        self.push(entry);
    }

    /// After the signal: accept nothing more. The supervisor's shutdown(2)
    /// of the listeners ends the accepts too; cancelling does not depend on it.
    fn stop_accepting(&mut self) {
        self.stopping = true;
        for i in 0..self.listeners.len() {
            self.listeners[i].resume_at = None;
            if self.listeners[i].armed {
                self.cancel(Op::Accept(i));
            }
        }
    }

    /// Re-arms the accepts whose pause is over.
    fn resume_accepts(&mut self) {
        for i in 0..self.listeners.len() {
            if self.listeners[i].resume_at.is_some_and(|t| t <= self.now) {
                self.listeners[i].resume_at = None;
                self.arm_accept(i);
            }
        }
    }

    fn on_accept(&mut self, i: usize, res: i32, flags: u32) {
        // The supervisor's shutdown(2) may end an accept before this loop
        // looked at the stop flag: look now, so it is not taken for an error.
        if !self.stopping && self.ctx.stats.stopping() {
            self.stop_accepting();
        }
        let more = cqueue::more(flags);
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        if !more {
            l.armed = false;
        }
        if res >= 0 {
            // SAFETY: a non-negative accept result is a descriptor the kernel
            // just installed for this process; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            let tls = self.listeners[i].tls;
            self.admit(fd, tls);
        } else {
            let errno = -res;
            let pause = match errno {
                // Our own cancel: when stopping, or after a pause began
                // (which re-arms it when it ends).
                libc::ECANCELED => None,
                // The listener shut down by the supervisor: never re-armed.
                libc::EINVAL if self.stopping => None,
                _ => match accept::classify(&io::Error::from_raw_os_error(errno)) {
                    AcceptError::Retry => None,
                    AcceptError::Pause(d) => Some(d),
                    // A multishot accept stops after any error: a short
                    // pause before re-arming keeps a persistent one from
                    // spinning.
                    AcceptError::Skip | AcceptError::ListenerClosed => Some(ACCEPT_ERROR_PAUSE),
                },
            };
            if let Some(p) = pause {
                self.listeners[i].resume_at = Some(self.now + p);
                // A multishot accept that reports an error and goes on would
                // keep failing: stop it; the pause re-arms it.
                if more {
                    self.cancel(Op::Accept(i));
                }
            }
        }
        if !more && self.listeners[i].resume_at.is_none() {
            self.arm_accept(i);
        }
    }

    /// Takes an accepted descriptor under `--max-conns` (and
    /// `--max-conns-per-ip`) and starts serving it.
    fn admit(&mut self, fd: OwnedFd, tls: bool) {
        let ctx = self.ctx;
        // A multishot accept gives no address: ask for it only when the
        // per-address limit needs it.
        let peer = match ctx.max_conns_per_ip {
            None => None,
            Some(_) => match peer_of(&fd) {
                Some(p) => Some(p),
                // Reset before we looked: nothing to serve, nothing taken.
                None => return,
            },
        };
        let admitted = match &peer {
            Some(p) => ctx.admit(p),
            None => ctx.stats.try_admit(ctx.max_conns),
        };
        if !admitted {
            let peer = peer.or_else(|| peer_of(&fd));
            drop(fd);
            accept::log_rejected(peer, ctx);
            return;
        }
        if let Err(e) = SockRef::from(&fd).set_tcp_nodelay(true) {
            // Only a socket already dead fails here: closed, as in every model.
            debug!("TCP_NODELAY on an accepted socket: {e}; closing");
            drop(fd);
            ctx.stats.count_end(End::from_io(&e));
            match peer {
                Some(p) => ctx.release(&p),
                None => ctx.stats.release(),
            }
            return;
        }
        let tls = match ctx.tls.as_ref().filter(|_| tls) {
            None => None,
            Some(t) => match TlsConn::new(&t.config, self.now, t.handshake_timeout) {
                Ok(c) => Some(Box::new(UringTls::new(c, self.now))),
                Err(e) => {
                    warn!("cannot start a TLS session: {e}");
                    drop(fd);
                    ctx.stats.count_end(End::from_io(&e));
                    match peer {
                        Some(p) => ctx.release(&p),
                        None => ctx.stats.release(),
                    }
                    return;
                }
            },
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            debug!(peer = ?peer_of(&fd), tls = tls.is_some(), "connection open");
        }
        // TLS bytes on the wire are ciphertext: never spliced.
        let mut switch = Switch::new(if tls.is_some() {
            ZeroCopy::Off
        } else {
            ctx.zero_copy
        });
        // `--zero-copy on`: on the pipe from the first byte.
        let zc = if switch.take(true) {
            spliced(&fd, self.now)
        } else {
            None
        };
        let conn = Conn {
            fd,
            core: core::Conn::new(self.now, Held::new(self.held_cap)),
            recv: Io::Idle,
            send: Io::Idle,
            starved: false,
            spill_wanted: false,
            listed: false,
            single: false,
            caught_up: false,
            armed: None,
            peer: peer.map(Box::new),
            tls,
            switch,
            zc,
            poll: Io::Idle,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                self.slots.len() - 1
            }
        };
        self.slots[slot].conn = Some(conn);
        self.live += 1;
        self.progress(slot);
    }

    // ---- connections ----

    /// The connection in `slot` if `generation` is still its own.
    fn conn_mut(&mut self, slot: usize, generation: u32) -> Option<&mut Conn> {
        self.slots
            .get_mut(slot)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.conn.as_mut())
    }

    fn on_recv(&mut self, slot: usize, generation: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        // The buffer this completion used and where in it its bytes start;
        // a buffer not ours is refused (`None`) and never given back.
        let piece = cqueue::buffer_select(flags).and_then(|b| {
            let len = usize::try_from(res).unwrap_or(0);
            let at = self.pool.take(b, len, cqueue::buffer_more(flags))?;
            Some((b, at))
        });
        let bid = piece.map(|(b, _)| b);
        let now = self.now;
        let size = self.pool.size;
        let Some(c) = self.conn_mut(slot, generation) else {
            // Cannot happen (a slot is freed only when idle), but a buffer
            // must never be lost from the ring.
            if let Some(b) = bid {
                self.pool.release(b);
            }
            return;
        };
        if !more {
            c.recv = Io::Idle;
        }
        if let Some(t) = c.tls.as_mut() {
            // A TLS receive uses the connection's own buffer, never the ring.
            match res {
                n if n > 0 => t.received(n as usize),
                0 => t.fin = true,
                // Our cancel, or a signal: `progress` decides what next.
                e if -e == libc::ECANCELED || -e == libc::EINTR => {}
                e => {
                    t.core.on_error(&io::Error::from_raw_os_error(-e));
                }
            }
            if let Some(b) = bid {
                self.pool.release(b);
            }
            self.progress(slot);
            return;
        }
        let mut spare = None;
        let mut spill_paused = false;
        match res {
            n if n > 0 => match piece {
                Some((b, off)) if u64::from(off) + n as u64 <= u64::from(size) => {
                    c.switch.after_read(n as usize);
                    c.core.on_read(
                        now,
                        Chunk {
                            bid: b,
                            off,
                            len: n as u32,
                            sent: 0,
                        },
                        0,
                    );
                    // A single receive that did not fill its buffer found the
                    // socket's queue empty: the client is not ahead of us.
                    c.caught_up = c.single && off + (n as u32) < size;
                }
                _ => {
                    spare = bid;
                    c.core.fail(End::Error(libc::EINVAL));
                }
            },
            // FIN from the client: nothing more will come.
            0 => {
                spare = bid;
                c.core.on_fin();
            }
            e => {
                spare = bid;
                match -e {
                    // The ring ran dry: wait for a buffer to come back.
                    libc::ENOBUFS => {
                        c.starved = true;
                        self.starved.push((slot, generation));
                        // Whoever holds buffers while paused gives them back.
                        spill_paused = true;
                    }
                    // Our cancel (backpressure or closing): `progress`
                    // decides whether to re-arm.
                    libc::ECANCELED => {}
                    // A signal is retried by `progress`; anything else
                    // ends the connection.
                    errno => {
                        c.core.on_error(&io::Error::from_raw_os_error(errno));
                    }
                }
            }
        }
        if let Some(b) = spare {
            self.pool.release(b);
        }
        let Worker { slots, pool, .. } = self;
        if let Some(c) = slots.get_mut(slot).and_then(|s| s.conn.as_mut()) {
            let p = &*pool;
            let mut back = Vec::new();
            c.core.store_mut().absorb(
                |b, off, len, to| to.extend_from_slice(p.filled(b, off, len)),
                |b| back.push(b),
            );
            for b in back {
                pool.release(b);
            }
        }
        self.progress(slot);
        if spill_paused {
            self.spill_paused();
        }
    }

    /// More than half of the ring is held by connections: time for the
    /// paused ones to spill.
    fn ring_low(&self) -> bool {
        !self.paused.is_empty() && self.pool.free <= usize::from(self.pool.count) / 2
    }

    /// Asks every connection paused with buffers held to spill them
    /// ([`Held`]), so the ring goes to connections whose echo moves.
    fn spill_paused(&mut self) {
        let paused = std::mem::take(&mut self.paused);
        for (slot, generation) in paused {
            if let Some(c) = self.conn_mut(slot, generation) {
                c.listed = false;
                c.spill_wanted = true;
                self.progress(slot);
            }
        }
    }

    fn on_send(&mut self, slot: usize, generation: u32, res: i32) {
        let now = self.now;
        let stats = self.ctx.stats;
        let Some(c) = self.conn_mut(slot, generation) else {
            return;
        };
        c.send = Io::Idle;
        if let Some(t) = c.tls.as_mut() {
            match res {
                n if n > 0 => t.on_sent(n as usize, now),
                0 => t.core.fail(End::Error(libc::EIO)),
                e if -e == libc::ECANCELED || -e == libc::EINTR => {}
                e => {
                    t.core.on_error(&io::Error::from_raw_os_error(-e));
                }
            }
            self.progress(slot);
            return;
        }
        match res {
            n if n > 0 => {
                stats.bytes.add(n as u64);
                c.core.on_sent(now, n as usize);
            }
            // Nothing sent of a non-empty buffer: the core ends it.
            0 => c.core.on_sent(now, 0),
            // Our cancel: the connection is closing, or spilling
            // (`progress` does it now that no send is in flight).
            e if -e == libc::ECANCELED => {}
            // A signal is resubmitted by `progress`; anything else ends it.
            e => {
                c.core.on_error(&io::Error::from_raw_os_error(-e));
            }
        }
        let Worker { slots, pool, .. } = self;
        if let Some(c) = slots[slot].conn.as_mut() {
            while let Some(b) = c.core.store_mut().pop_done() {
                pool.release(b);
            }
            // No send is in flight now.
            c.core.store_mut().settle();
        }
        self.progress(slot);
    }

    /// Moves a connection forward after anything changed: performs what its
    /// core asks (send what is held, read or pause reading, send our FIN,
    /// close) with io_uring requests, then files its next deadline.
    fn progress(&mut self, slot: usize) {
        if self
            .slots
            .get(slot)
            .and_then(|s| s.conn.as_ref())
            .is_some_and(|c| c.tls.is_some())
        {
            self.progress_tls(slot);
            return;
        }
        if self.switched(slot) {
            self.progress_spliced(slot);
            return;
        }
        let held_cap = self.held_cap;
        let buf_size = self.pool.size;
        let buffers_back = self.pool.free > 0;
        let Worker {
            ring,
            backlog,
            inflight,
            slots,
            pool,
            timers,
            timeouts,
            paused,
            ..
        } = self;
        let Some(s) = slots.get_mut(slot) else {
            return;
        };
        let generation = s.generation;
        let Some(c) = s.conn.as_mut() else {
            return;
        };
        let fd = c.fd.as_raw_fd();
        let mut push = |entry| enqueue(ring, backlog, inflight, entry);
        let mut next = c.core.next();
        let io = matches!(next, Next::Io { .. });
        if !io || c.core.store().bufs() == 0 {
            // Nothing (left) to spill.
            c.spill_wanted = false;
        }
        if c.spill_wanted {
            // Asked to give its buffers back ([`Held`]): done once no send
            // is in flight, cancelling the one that may wait for the client.
            match c.send {
                Io::Busy => {
                    push(cancel_entry(Op::Send(slot, generation)));
                    c.send = Io::Cancelling;
                }
                Io::Idle => {
                    c.spill_wanted = false;
                    let p = &*pool;
                    let mut back = Vec::new();
                    c.core.store_mut().spill_all(
                        buf_size as usize,
                        |b, off, len, to| to.extend_from_slice(p.filled(b, off, len)),
                        |b| back.push(b),
                    );
                    for b in back {
                        pool.release(b);
                    }
                    next = c.core.next();
                }
                Io::Cancelling => {}
            }
        }
        if next == Next::ShutWrite && c.recv == Io::Idle && c.send == Io::Idle {
            // Everything read was echoed: our FIN follows the last byte, and
            // the receive queue is empty, so the close below is a FIN,
            // never a reset.
            c.core
                .on_shut(shutdown(fd, Shutdown::Write).map_err(io::Error::from));
            next = c.core.next();
        }
        if let Next::Io { send, read } = next {
            if send
                && c.send == Io::Idle
                && let Some(front) = c.core.store().front()
            {
                let (ptr, left) = match front {
                    // The chunk's bytes sit in pool buffer `front.bid`, held
                    // (not published again) until this send completes.
                    // `wrapping_add`: the offset is within the buffer
                    // (`off + sent < off + len <= size`).
                    Front::Chunk(front) => (
                        pool.buf(front.bid).wrapping_add(front.unsent_at()),
                        front.len - front.sent,
                    ),
                    // The spill is neither moved nor freed while this send
                    // is in flight (see `Held`), nor dropped before it
                    // completes (closing waits for it).
                    Front::Spill(at, n) => (
                        c.core.store().spill_from(at).as_ptr().cast_mut(),
                        u32::try_from(n).unwrap_or(u32::MAX),
                    ),
                };
                push(
                    opcode::Send::new(Fd(fd), ptr, left)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(Op::Send(slot, generation).encode()),
                );
                c.send = Io::Busy;
            }
            // Backpressure: too much unsent echo, stop reading.
            let over = read == 0 && !c.core.read_closed();
            if over && c.recv == Io::Busy {
                push(cancel_entry(Op::Recv(slot, generation)));
                c.recv = Io::Cancelling;
                c.single = true;
            }
            let drained = c.core.store().drained() && c.send == Io::Idle;
            // The client has caught up: back to one multishot receive, which
            // costs one submission for many messages instead of one each.
            if drained && c.single && c.caught_up && c.recv == Io::Idle {
                c.single = false;
                c.caught_up = false;
            }
            // A connection about to move to its pipe takes no more buffers.
            if read > 0 && c.recv == Io::Idle && (!c.starved || buffers_back) && !c.switch.wanted()
            {
                // Multishot: re-armed once the echo is all sent. Single:
                // one more buffer while fewer than `held_cap` are held.
                let entry = if c.single && c.core.store().bufs() < held_cap {
                    // No more than the room left: a spilling connection
                    // copies what it receives into its spill's spare room.
                    let len = buf_size.min(u32::try_from(read).unwrap_or(u32::MAX));
                    Some(
                        opcode::Recv::new(Fd(fd), std::ptr::null_mut(), len)
                            .buf_group(BGID)
                            .build()
                            .flags(squeue::Flags::BUFFER_SELECT),
                    )
                } else if !c.single && drained {
                    Some(opcode::RecvMulti::new(Fd(fd), BGID).build())
                } else {
                    None
                };
                if let Some(e) = entry {
                    c.starved = false;
                    push(e.user_data(Op::Recv(slot, generation).encode()));
                    c.recv = Io::Busy;
                }
            }
        }
        let Next::Close(end) = next else {
            // Holding buffers while paused or while its echo waits for the
            // client: one of those asked to spill when the ring runs low.
            if !c.listed
                && !c.spill_wanted
                && c.core.store().bufs() > 0
                && (matches!(next, Next::Io { read: 0, .. }) || c.send != Io::Idle)
            {
                c.listed = true;
                paused.push((slot, generation));
            }
            if (c.armed.is_none() || c.core.deadline_may_be_sooner())
                && let Some((at, _)) = c.core.deadline(timeouts)
            {
                timers.file(&mut c.armed, at, (slot, generation));
            }
            return;
        };
        if c.recv == Io::Busy {
            push(cancel_entry(Op::Recv(slot, generation)));
            c.recv = Io::Cancelling;
        }
        if c.send == Io::Busy {
            push(cancel_entry(Op::Send(slot, generation)));
            c.send = Io::Cancelling;
        }
        if c.recv == Io::Idle && c.send == Io::Idle {
            self.close(slot, end);
        }
    }

    /// [`Worker::progress`] for a TLS client: runs the TLS layer over what
    /// arrived, then submits the send of its ciphertext and the next
    /// receive; when the core has ended, sends what is left of a clean end
    /// (our close_notify), shuts writing down, and closes once nothing of
    /// it is in the kernel.
    fn progress_tls(&mut self, slot: usize) {
        let Worker {
            ring,
            backlog,
            inflight,
            slots,
            timers,
            timeouts,
            ctx,
            now,
            scratch,
            ..
        } = self;
        let Some(s) = slots.get_mut(slot) else {
            return;
        };
        let generation = s.generation;
        let Some(c) = s.conn.as_mut() else {
            return;
        };
        let fd = c.fd.as_raw_fd();
        let Some(t) = c.tls.as_mut() else {
            return;
        };
        let mut push = |entry| enqueue(ring, backlog, inflight, entry);
        if t.end().is_none() {
            let bytes = t.run(*now, scratch);
            if bytes > 0 {
                ctx.stats.bytes.add(bytes);
            }
        }
        let end = t.end();
        // A clean end still owes the client our close_notify, a refused
        // handshake its alert: both are a few bytes, sent before closing.
        let clean = matches!(end, Some(End::Fin) | Some(End::Error(EPROTO))) && !t.flush_stalled;
        if (end.is_none() || clean)
            && c.send == Io::Idle
            && let Some((ptr, len)) = t.next_send()
        {
            // `ptr` points into `t.sending`, which is left alone until
            // this send completes (see `super::tls`).
            push(
                opcode::Send::new(Fd(fd), ptr, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(Op::Send(slot, generation).encode()),
            );
            c.send = Io::Busy;
        }
        let Some(end) = end else {
            if t.wants_read && !t.fin && c.recv == Io::Idle {
                // The buffer lives in the connection until it is closed,
                // which waits for this receive to complete.
                push(
                    opcode::Recv::new(Fd(fd), t.rbuf.as_mut_ptr(), super::tls::RECV_BUF as u32)
                        .build()
                        .user_data(Op::Recv(slot, generation).encode()),
                );
                c.recv = Io::Busy;
            }
            if let Some(at) = t.deadline(timeouts) {
                timers.file(&mut c.armed, at, (slot, generation));
            }
            return;
        };
        if clean && !(t.flushed() && c.send == Io::Idle) {
            // The close_notify is still going out: its send completes, or
            // the send timeout ends the wait (the client may never read).
            t.flush_since.get_or_insert(*now);
            if let Some(at) = t.flush_deadline(timeouts) {
                timers.file(&mut c.armed, at, (slot, generation));
            }
            return;
        }
        let end = if t.flush_stalled { End::Stall } else { end };
        if clean && t.shut_wanted {
            t.shut_wanted = false;
            // ENOTCONN (the client reset meanwhile) changes nothing now.
            let _ = shutdown(fd, Shutdown::Write);
        }
        if c.recv == Io::Busy {
            push(cancel_entry(Op::Recv(slot, generation)));
            c.recv = Io::Cancelling;
        }
        if c.send == Io::Busy {
            push(cancel_entry(Op::Send(slot, generation)));
            c.send = Io::Cancelling;
        }
        if c.recv == Io::Idle && c.send == Io::Idle {
            self.close(slot, end);
        }
    }

    /// True when the connection in `slot` is on its pipe, moving it there
    /// first if it wants to and can now: nothing is kept, no receive or send
    /// is in flight (a multishot receive is cancelled for it, and what it
    /// still brings is echoed first), and the client has not half-closed.
    fn switched(&mut self, slot: usize) -> bool {
        let now = self.now;
        let Some(s) = self.slots.get_mut(slot) else {
            return false;
        };
        let generation = s.generation;
        let Some(c) = s.conn.as_mut() else {
            return false;
        };
        if c.zc.is_some() {
            return true;
        }
        if !c.switch.wanted() {
            return false;
        }
        if c.recv == Io::Busy && c.core.end().is_none() {
            c.recv = Io::Cancelling;
            self.cancel(Op::Recv(slot, generation));
            return false;
        }
        let Some(c) = self.conn_mut(slot, generation) else {
            return false;
        };
        let store = c.core.store();
        let quiet = c.recv == Io::Idle && c.send == Io::Idle;
        let empty = store.bufs() == 0 && Store::is_empty(store);
        let open = matches!(c.core.next(), Next::Io { .. }) && !c.core.read_closed();
        if !(quiet && empty && open && c.switch.take(true)) {
            return false;
        }
        c.zc = spliced(&c.fd, now);
        c.zc.is_some()
    }

    /// [`Worker::progress`] for a connection on its pipe: one turn of
    /// [`splice::drive`] with the hints the poll gave, then the poll armed
    /// if it is not, and the next deadline filed; once the core has ended,
    /// the poll is cancelled and the connection closed when it is over.
    fn progress_spliced(&mut self, slot: usize) {
        let Worker {
            ring,
            backlog,
            inflight,
            slots,
            timers,
            timeouts,
            ctx,
            now,
            again,
            ..
        } = self;
        let Some(s) = slots.get_mut(slot) else {
            return;
        };
        let generation = s.generation;
        let Some(c) = s.conn.as_mut() else {
            return;
        };
        let Some(z) = c.zc.as_mut() else {
            return;
        };
        let mut push = |entry| enqueue(ring, backlog, inflight, entry);
        let mut bytes = 0;
        let turn = z.turn(c.fd.as_fd(), *now, &mut bytes);
        if bytes > 0 {
            ctx.stats.bytes.add(bytes);
        }
        let end = match turn {
            splice::Turn::Close(end) => end,
            splice::Turn::Again | splice::Turn::Wait => {
                if turn == splice::Turn::Again && !z.again {
                    z.again = true;
                    again.push((slot, generation));
                }
                if c.poll == Io::Idle {
                    // Multishot: one completion per wake-up of the socket,
                    // until cancelled.
                    push(
                        opcode::PollAdd::new(Fd(c.fd.as_raw_fd()), POLL_MASK)
                            .multi(true)
                            .build()
                            .user_data(Op::Poll(slot, generation).encode()),
                    );
                    c.poll = Io::Busy;
                }
                if (c.armed.is_none() || z.core.deadline_may_be_sooner())
                    && let Some((at, _)) = z.core.deadline(timeouts)
                {
                    timers.file(&mut c.armed, at, (slot, generation));
                }
                return;
            }
        };
        for (state, op) in [
            (&mut c.poll, Op::Poll(slot, generation)),
            (&mut c.recv, Op::Recv(slot, generation)),
            (&mut c.send, Op::Send(slot, generation)),
        ] {
            if *state == Io::Busy {
                push(cancel_entry(op));
                *state = Io::Cancelling;
            }
        }
        if c.poll == Io::Idle && c.recv == Io::Idle && c.send == Io::Idle {
            self.close(slot, end);
        }
    }

    /// A spliced connection's poll reported readiness (or ended).
    fn on_poll(&mut self, slot: usize, generation: u32, res: i32, flags: u32) {
        let Some(c) = self.conn_mut(slot, generation) else {
            return;
        };
        if !cqueue::more(flags) {
            c.poll = Io::Idle;
        }
        if let Some(z) = c.zc.as_mut() {
            // An error (our cancel when closing, or the kernel ending the
            // poll) says nothing of the socket: the splices find out, and
            // `progress` re-arms the poll unless the connection is closing.
            z.on_poll(u32::try_from(res).ok());
        }
        self.progress(slot);
    }

    /// Serves again the spliced connections whose last turn used its budget.
    fn run_again(&mut self) {
        if self.again.is_empty() {
            return;
        }
        let again = std::mem::take(&mut self.again);
        for (slot, generation) in again {
            if let Some(z) = self.conn_mut(slot, generation).and_then(|c| c.zc.as_mut()) {
                z.again = false;
                self.progress(slot);
            }
        }
    }

    /// Closes a connection with nothing in flight, gives its buffers back
    /// to the ring, and frees its `--max-conns` slot after the close (so a
    /// drain that sees no active connection knows every FIN is out).
    fn close(&mut self, slot: usize, end: End) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(conn) = s.conn.take() else {
            return;
        };
        s.generation = s.generation.wrapping_add(1) & GEN_MASK;
        self.free_slots.push(slot);
        self.live = self.live.saturating_sub(1);
        let slots = &self.slots;
        self.timers.forget(conn.armed, |&(i, generation)| {
            slots
                .get(i)
                .is_some_and(|s| s.generation == generation && s.conn.is_some())
        });
        let mut held = conn.core;
        while let Some(b) = held.store_mut().chunks.pop_front().map(|c| c.bid) {
            self.pool.release(b);
        }
        self.ctx.stats.count_end(end);
        if let Some(f) = conn.tls.as_ref().and_then(|t| t.tls.failure()) {
            f.count(self.ctx.stats);
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            debug!(peer = ?peer_of(&conn.fd), %end, "connection closed");
        }
        let peer = conn.peer;
        drop(conn.fd);
        match peer {
            Some(p) => self.ctx.release(&p),
            None => self.ctx.stats.release(),
        }
    }

    /// Takes the due timer entries: asks each live connection's core
    /// whether its deadline has passed (then it closes, once nothing of it
    /// is in the kernel), and files it again if traffic moved it on.
    fn expire_due(&mut self) {
        while let Some((at, (slot, generation))) = self.timers.pop_due(self.now) {
            let now = self.now;
            let timeouts = self.timeouts;
            let Some(c) = self.conn_mut(slot, generation) else {
                // That connection closed already; its slot may serve another.
                self.timers.dropped_stale();
                continue;
            };
            if c.armed != Some(at) {
                // An older entry; a sooner one was filed and handled.
                continue;
            }
            c.armed = None;
            match (c.tls.as_mut(), c.zc.as_mut()) {
                (Some(t), _) if t.end().is_some() => {
                    // A clean end still flushing: out of time?
                    if t.flush_deadline(&timeouts).is_some_and(|at| at <= now) {
                        t.flush_stalled = true;
                    }
                }
                (Some(t), _) => {
                    t.tls.on_timer(&mut t.core, now, &timeouts);
                }
                (None, Some(z)) => {
                    z.core.on_timer(now, &timeouts);
                }
                (None, None) => {
                    c.core.on_timer(now, &timeouts);
                }
            }
            // Closes it if it expired; otherwise files its new deadline.
            self.progress(slot);
        }
    }

    /// Re-arms connections whose receive found the ring empty, once any
    /// buffer is back. All of them at once: one may find the ring empty
    /// again, but none waits for a wake-up that never comes. `force` (once
    /// per tick) retries even when our count says the ring is empty, so a
    /// miscount could delay a connection by a tick, never stall it.
    fn feed_starved(&mut self, force: bool) {
        if self.starved.is_empty() || (self.pool.free == 0 && !force) {
            return;
        }
        let waiting = std::mem::take(&mut self.starved);
        for (slot, generation) in waiting {
            if let Some(c) = self.conn_mut(slot, generation) {
                c.starved = false;
                self.progress(slot);
            }
        }
    }

    /// Leaves the loop cleanly whatever stopped it: every connection is
    /// marked stopped (its requests cancelled, then closed), accepts are
    /// cancelled, and the kernel is given [`EXIT_WAIT`] to finish. If it does
    /// not, descriptors are closed anyway and the buffer memory is leaked
    /// rather than unmapped under a request that may still write to it.
    pub(super) fn exit(mut self) {
        self.stop_accepting();
        for slot in 0..self.slots.len() {
            if let Some(c) = self.slots[slot].conn.as_mut() {
                c.core.stop();
                if let Some(t) = c.tls.as_mut() {
                    t.core.stop();
                }
                if let Some(z) = c.zc.as_mut() {
                    z.core.stop();
                }
                self.progress(slot);
            }
        }
        let deadline = Instant::now() + EXIT_WAIT;
        while self.inflight > 0 && self.now < deadline {
            if self.wait().is_err() {
                break;
            }
            self.reap();
        }
        let leftover = self.inflight;
        for slot in 0..self.slots.len() {
            if let Some(c) = self.slots[slot].conn.as_mut()
                && leftover > 0
            {
                // A send from it may still be in flight: leaked, as the pool.
                std::mem::forget(std::mem::take(&mut c.core.store_mut().spill));
            }
            if self.slots[slot].conn.is_some() {
                self.close(slot, End::Stopped);
            }
        }
        let Worker { ring, pool, .. } = self;
        drop(ring);
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

/// Queues `entry` in the submission queue, or in the backlog when the queue
/// is full (or the backlog not empty, to keep the order), and counts it in
/// flight until its final completion.
fn enqueue(
    ring: &mut IoUring,
    backlog: &mut VecDeque<squeue::Entry>,
    inflight: &mut usize,
    entry: squeue::Entry,
) {
    *inflight += 1;
    if backlog.is_empty() {
        // SAFETY: every entry is built by this worker; a send's bytes are a
        // piece of a pool buffer, which is not republished (nor written by
        // the kernel there) until that piece is released after the send's
        // completion, and the pool outlives every request (`Worker::exit`
        // leaks it otherwise).
        if unsafe { ring.submission().push(&entry) }.is_ok() {
            return;
        }
    }
    backlog.push_back(entry);
}

/// A request to cancel the request tagged `target`.
fn cancel_entry(target: Op) -> squeue::Entry {
    opcode::AsyncCancel::new(target.encode())
        .build()
        .user_data(Op::Cancel.encode())
}

/// Moves the connection on `fd` to a pipe at `now`: `None` (it stays on
/// the buffer path, for good) when no pipe can be made or the socket cannot
/// be made non-blocking. The splice calls need the latter: io_uring serves
/// blocking sockets, and a splice(2) from one would block the worker until
/// the client sends. Nothing of the buffer path is in flight by then.
fn spliced(fd: &OwnedFd, now: Instant) -> Option<Box<Spliced>> {
    let made = SockRef::from(fd)
        .set_nonblocking(true)
        .map_err(|e| e.to_string())
        .and_then(|()| Spliced::new(now).ok_or_else(|| "no pipe".to_string()));
    match made {
        Ok(z) => Some(Box::new(z)),
        Err(e) => {
            debug!("zero copy unavailable for a connection ({e}); buffer path");
            // Receives and sends on the ring work either way; back to how
            // the buffer path had it.
            let _ = SockRef::from(fd).set_nonblocking(false);
            None
        }
    }
}

/// The peer of a connection, for logs.
fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    SockRef::from(fd)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bid: u16, len: u32) -> Chunk {
        Chunk {
            bid,
            off: 0,
            len,
            sent: 0,
        }
    }

    #[test]
    fn held_buffers_go_back_in_order_once_fully_sent() {
        let mut h = Held::new(4);
        h.keep(chunk(3, 100), 0);
        h.keep(chunk(5, 50), 0);
        assert_eq!(Store::len(&h), 150);
        h.consume(60);
        assert_eq!(h.pop_done(), None, "buffer 3 still has 40 bytes to send");
        assert!(matches!(h.front(), Some(Front::Chunk(c)) if (c.bid, c.sent) == (3, 60)));
        h.consume(40);
        assert!(matches!(h.front(), Some(Front::Chunk(c)) if c.bid == 5));
        assert_eq!(h.pop_done(), Some(3));
        assert_eq!(h.pop_done(), None);
        h.consume(50);
        assert_eq!(h.pop_done(), Some(5));
        assert_eq!((Store::len(&h), h.bufs()), (0, 0));
    }

    #[test]
    fn a_spill_gives_every_buffer_back_and_keeps_the_order() {
        // Buffer `bid` holds bytes `bid * 10 ..`: the copy closure fakes the
        // pool with that rule.
        let fake = |b: u16, off: usize, len: usize, to: &mut Vec<u8>| {
            to.extend((off..off + len).map(|i| (usize::from(b) * 10 + i) as u8));
        };
        let mut h = Held::new(4);
        h.keep(chunk(1, 4), 0);
        h.keep(chunk(2, 3), 0);
        h.consume(1);
        let mut back = Vec::new();
        h.spill_all(8, fake, |b| back.push(b));
        assert_eq!(back, [1, 2], "every held buffer goes back to the ring");
        assert_eq!((h.bufs(), Store::len(&h), h.spilled()), (0, 6, 6));
        assert!(matches!(h.front(), Some(Front::Spill(0, 6))));
        assert_eq!(h.spill_from(0), [11, 12, 13, 20, 21, 22]);
        // A receive while spilled is copied in after what is there.
        h.keep(chunk(5, 2), 0);
        h.absorb(fake, |b| back.push(b));
        assert_eq!(back, [1, 2, 5]);
        assert_eq!(h.spill_from(0), [11, 12, 13, 20, 21, 22, 50, 51]);
        h.consume(8);
        assert!(h.drained());
        h.settle();
        assert!(h.spill.is_none(), "a sent spill frees its memory");
    }

    /// A connection's slot is most of the server's user-space memory per
    /// connection (`scripts/c1m.sh`: 271 bytes at the margin with a
    /// 216-byte slot); what only some connections need (a spill, the peer
    /// for `--max-conns-per-ip`, TLS, a pipe) is boxed so it stays small.
    #[test]
    fn a_connection_slot_stays_small() {
        let slot = std::mem::size_of::<Slot>();
        assert!(slot <= 168, "a connection slot grew to {slot} bytes");
    }

    #[test]
    fn reading_pauses_over_one_echo_buffer_or_over_the_buffer_cap() {
        let mut h = Held::new(2);
        assert!(h.room() > 0);
        // One full 64 KiB message held is not yet a reason to pause.
        h.keep(chunk(0, HELD_BYTES as u32), 0);
        assert!(h.room() > 0);
        h.keep(chunk(1, 1), 0);
        assert_eq!(h.room(), 0, "over HELD_BYTES");
        let mut h = Held::new(2);
        for bid in 0..3 {
            h.keep(chunk(bid, 10), 0);
        }
        assert_eq!(h.room(), 0, "over the buffer cap");
    }
}
