//! `epoll`: a readiness reactor on mio, one event loop per worker thread.
//!
//! `--workers` threads each own a `mio::Poll` (an epoll instance, edge
//! triggered) and register their own clone of every listener, so whichever
//! worker wakes first accepts; the connection then lives on that worker for
//! good. A connection is a [`Token`] into a slab of slots with a free list.
//!
//! # Memory
//! Each worker reads into one buffer of [`BUF_SIZE`] and writes back at
//! once. Only what the kernel would not take is kept, in the connection's
//! own [`Pending`] (at most [`PENDING_CAP`]); at the cap the worker stops
//! reading that client until the kernel takes some (backpressure). An idle
//! connection holds a socket and a slot of a few dozen bytes, no buffer.
//!
//! # Edge triggering
//! Each socket is registered once for READABLE | WRITABLE and never
//! re-registered: a connection keeps a `readable` and a `writable` hint, set
//! by events and cleared by `WouldBlock`, and a read or write is tried only
//! while its hint is set. As in tokio, a short read also clears `readable`
//! and a short write `writable` (the queue was drained, the buffer filled:
//! the next change raises a new edge), which spares the syscall that would
//! only say `WouldBlock`: a 64 B echo costs one read and one write (plus a
//! share of one `epoll_wait`). A connection that used up its read budget
//! while data still waits goes on a run queue, served again after the next
//! poll (with a zero timeout), so one fast client cannot starve the others.
//!
//! # Timers
//! The loop wakes at least every [`TICK`] to look at the stop flag, an
//! accept pause and deadlines. `--idle-timeout` (nothing moved either way)
//! and `--stall-timeout` (echo kept and not moving: the client stopped
//! reading) share an [`IdleWheel`]: activity only stamps the connection
//! with the current tick; the wheel looks at a connection when its deadline
//! slot comes round, and keeping echo files it sooner if the stall deadline
//! is nearer.
//!
//! # One shared listener, not SO_REUSEPORT per worker
//! Every worker polls the same listening socket. A throwaway build that gave
//! each worker its own SO_REUSEPORT listener was measured against it
//! (`--workers 2`, server on CPU 0, load on CPU 1, 3 runs each, server CPU
//! per request): a connection per request 52.8 µs shared vs 54.0 µs
//! reuseport; 64 B echo on 50 connections 10.4 vs 10.6 µs. No gain, so the
//! shared socket stays: it never hashes a new client onto a busy worker, and
//! the supervisor stops every accept with one `shutdown(2)`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener as MioListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use tracing::{debug, warn};

use super::accept::{self, AcceptError};
use super::echo::{self, BUF_SIZE, End};
use super::pending::{IdleWheel, PENDING_CAP, Pending, WheelKey};
use super::{Ctx, supervise};
use crate::error::{Error, Result};

/// How often an idle worker wakes to look at the stop flag, the accept
/// pause and idle deadlines; also the idle timer's resolution.
pub const TICK: Duration = Duration::from_millis(250);
/// Events taken from the kernel per `epoll_wait`.
const EVENTS_CAP: usize = 1024;
/// Reads one connection may do per turn (16 × 64 KiB = 1 MiB) before the
/// other connections get theirs.
const READ_BUDGET: usize = 16;
/// Connections one listener may hand over per turn before connections
/// already open are served.
const ACCEPT_BUDGET: usize = 64;
/// Writes tried per chunk: each one that makes progress or is interrupted
/// counts, so a misbehaving kernel cannot keep us in the loop.
const WRITE_TRIES: usize = 8;

/// Starts `ctx.workers` event loops and serves until a signal stops the
/// server.
pub fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    // Build every worker first so a setup failure is reported, not logged.
    let workers = (0..ctx.workers.max(1))
        .map(|_| Worker::new(&listeners, ctx))
        .collect::<Result<Vec<_>>>()?;
    for (i, worker) in workers.into_iter().enumerate() {
        std::thread::Builder::new()
            .name(format!("epoll-{i}"))
            .spawn(move || worker.run())
            .map_err(Error::io("starting a worker thread"))?;
    }
    supervise::until_stopped(&listeners, ctx);
    Ok(())
}

/// One listening socket as a worker sees it.
struct Listener {
    /// This worker's clone; `None` once closed (stopping, or shut down).
    sock: Option<MioListener>,
    /// True while it is in the poll set (false during an accept pause).
    registered: bool,
}

/// One client.
struct Conn {
    stream: TcpStream,
    /// For logs.
    peer: SocketAddr,
    /// Read but not yet written back.
    pending: Pending,
    /// Tick of the last byte moved either way (`--idle-timeout`).
    last: u64,
    /// Tick of the last byte written back, or of the accept
    /// (`--stall-timeout`, looked at only while echo is kept).
    last_sent: u64,
    /// The tick this connection's live wheel entry comes due (`u64::MAX`:
    /// none). An entry handed back before it is an older duplicate.
    armed_until: u64,
    /// Set by a readable event, cleared when a read would block.
    readable: bool,
    /// Set by a writable event, cleared when a write would block.
    writable: bool,
    /// The client's FIN was read: write back what is left, then ours.
    read_closed: bool,
    /// An event reported a hang-up or error: read until `Ok(0)` or an error.
    hup: bool,
}

/// A slab slot: the generation tells an idle-wheel entry for an earlier
/// connection in the same slot from one for the current connection.
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// Connections by slot index, with a free list so tokens are reused and the
/// slab never grows past the most connections open at once.
#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

impl Slab {
    /// Stores `conn` and returns its slot index and generation.
    fn insert(&mut self, conn: Conn) -> WheelKey {
        if let Some(i) = self.free.pop() {
            let slot = &mut self.slots[i];
            slot.generation = slot.generation.wrapping_add(1);
            slot.conn = Some(conn);
            return (i, slot.generation);
        }
        self.slots.push(Slot {
            generation: 0,
            conn: Some(conn),
        });
        (self.slots.len() - 1, 0)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Conn> {
        self.slots.get_mut(i).and_then(|s| s.conn.as_mut())
    }

    /// The connection in slot `i` and the slot's generation.
    fn get_mut_with_generation(&mut self, i: usize) -> Option<(&mut Conn, u32)> {
        let slot = self.slots.get_mut(i)?;
        let generation = slot.generation;
        slot.conn.as_mut().map(|c| (c, generation))
    }

    /// The connection in slot `key.0` if it is still the one `key` names.
    fn get_current(&mut self, key: WheelKey) -> Option<&mut Conn> {
        self.slots
            .get_mut(key.0)
            .filter(|s| s.generation == key.1)
            .and_then(|s| s.conn.as_mut())
    }

    fn remove(&mut self, i: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(i)?.conn.take()?;
        self.free.push(i);
        Some(conn)
    }
}

/// What an event reported for a socket.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    readable: bool,
    writable: bool,
    /// Hang-up or error: the state is final, so hints are never cleared
    /// on a short read.
    hup: bool,
}

/// What a connection needs after a turn.
enum Step {
    /// Nothing to do until its next event.
    Wait,
    /// It used its budget with work left: serve it again next round.
    Again,
    /// Close it.
    Close(End),
}

/// One event loop and everything it owns.
struct Worker {
    poll: Poll,
    ctx: &'static Ctx,
    /// Token `i` for `i < listeners.len()`; connections come after.
    listeners: Vec<Listener>,
    conns: Slab,
    /// The one read buffer of this worker, shared by all its connections.
    buf: Box<[u8]>,
    /// Tokens to serve again after the next poll (budget used up).
    run_queue: Vec<Token>,
    /// Idle and stall deadlines; `None` when both timeouts are off.
    wheel: Option<IdleWheel>,
    /// `--idle-timeout` in ticks, rounded so a connection never closes early.
    idle_ticks: Option<u64>,
    /// [`Ctx::send_timeout`] in ticks: how long echo may be kept unmoved.
    send_ticks: Option<u64>,
    /// Where ticks count from.
    start: Instant,
    /// The current tick, read once per loop turn.
    now: u64,
    /// When accepting may resume after EMFILE and kin.
    paused_until: Option<Instant>,
    /// Bytes echoed since the counters were last updated.
    bytes: u64,
}

impl Worker {
    /// A poll instance with this worker's clone of every listener in it.
    fn new(listeners: &[TcpListener], ctx: &'static Ctx) -> Result<Self> {
        let poll = Poll::new().map_err(Error::io("creating an epoll instance"))?;
        let mut mine = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.iter().enumerate() {
            let clone = l.try_clone().map_err(Error::io("cloning a listener"))?;
            let mut sock = MioListener::from_std(clone);
            poll.registry()
                .register(&mut sock, Token(i), Interest::READABLE)
                .map_err(Error::io("registering a listener"))?;
            mine.push(Listener {
                sock: Some(sock),
                registered: true,
            });
        }
        let tick = TICK.as_millis().max(1);
        let in_ticks = |t: Duration| t.as_millis().div_ceil(tick) as u64 + 1;
        let idle_ticks = ctx.idle_timeout.map(in_ticks);
        let send_ticks = ctx.send_timeout().map(in_ticks);
        Ok(Worker {
            poll,
            ctx,
            listeners: mine,
            conns: Slab::default(),
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            run_queue: Vec::new(),
            wheel: (idle_ticks.is_some() || send_ticks.is_some()).then(|| IdleWheel::new(0)),
            idle_ticks,
            send_ticks,
            start: Instant::now(),
            now: 0,
            paused_until: None,
            bytes: 0,
        })
    }

    /// The event loop; runs until the process exits.
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAP);
        let mut queued = Vec::new();
        loop {
            if self.ctx.stats.stopping() {
                self.close_listeners();
            }
            let timeout = self.timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                // A signal: look at the stop flag again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    static LAST: AtomicU64 = AtomicU64::new(0);
                    if accept::rate_ok(&LAST) {
                        warn!("epoll_wait failed: {e}");
                    }
                    std::thread::sleep(accept::RESOURCE_PAUSE);
                    continue;
                }
            }
            self.now = ticks(self.start.elapsed());
            self.resume_accepting();
            std::mem::swap(&mut queued, &mut self.run_queue);
            for ev in events.iter() {
                let hup = ev.is_read_closed() || ev.is_error();
                let seen = Seen {
                    readable: ev.is_readable() || hup,
                    writable: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                    hup,
                };
                self.dispatch(ev.token(), seen);
            }
            for token in queued.drain(..) {
                self.dispatch(token, Seen::default());
            }
            self.expire_idle();
            if self.bytes > 0 {
                self.ctx
                    .stats
                    .bytes
                    .fetch_add(self.bytes, Ordering::Relaxed);
                self.bytes = 0;
            }
        }
    }

    /// How long the next poll may sleep.
    fn timeout(&self) -> Duration {
        if !self.run_queue.is_empty() {
            return Duration::ZERO;
        }
        match self.paused_until {
            Some(t) => t.saturating_duration_since(Instant::now()).min(TICK),
            None => TICK,
        }
    }

    /// Serves one token: an event (`seen` says what it reported) or a
    /// run-queue entry (nothing seen).
    fn dispatch(&mut self, token: Token, seen: Seen) {
        let n = self.listeners.len();
        if token.0 < n {
            let l = &self.listeners[token.0];
            if l.sock.is_some() && l.registered {
                self.accept_from(token.0);
            }
            return;
        }
        let i = token.0 - n;
        let Some((c, generation)) = self.conns.get_mut_with_generation(i) else {
            // A stale run-queue entry for a connection already closed.
            return;
        };
        c.readable |= seen.readable;
        c.writable |= seen.writable;
        c.hup |= seen.hup;
        let step = drive(c, &mut self.buf, self.now, &mut self.bytes);
        // Echo now kept may be due sooner (stall) than the entry filed.
        if let (Some(send), Some(w)) = (self.send_ticks, self.wheel.as_mut())
            && !c.pending.is_empty()
            && c.last_sent + send < c.armed_until
        {
            c.armed_until = w.insert((i, generation), c.last_sent + send);
        }
        match step {
            Step::Wait => {}
            Step::Again => self.run_queue.push(token),
            Step::Close(end) => self.close(i, end),
        }
    }

    /// Accepts from listener `i` until the backlog is empty or the budget
    /// is used.
    fn accept_from(&mut self, i: usize) {
        for _ in 0..ACCEPT_BUDGET {
            if self.ctx.stats.stopping() {
                self.close_listeners();
                return;
            }
            let Some(sock) = self.listeners[i].sock.as_ref() else {
                return;
            };
            match sock.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                // The backlog is empty (or another worker took it): wait for the next edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match accept::classify(&e) {
                    // A signal, or the client gave up in the backlog: take
                    // the next; an error the peer caused: skip it.
                    AcceptError::Retry | AcceptError::Skip => {}
                    AcceptError::Pause(_) => {
                        self.pause_accepting();
                        return;
                    }
                    // The supervisor shut the listener down.
                    AcceptError::ListenerClosed => {
                        self.close_listener(i);
                        return;
                    }
                },
            }
        }
        // More may be waiting and no new edge will say so.
        self.run_queue.push(Token(i));
    }

    /// Applies `--max-conns` and `--max-conns-per-ip`, sets TCP_NODELAY and
    /// puts the connection in the poll set and the timer wheel.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        if !self.ctx.admit(&peer) {
            drop(stream);
            accept::log_rejected(Some(peer), self.ctx);
            return;
        }
        if let Err(e) = stream.set_nodelay(true) {
            // Only a socket already dead fails here.
            debug!(%peer, "TCP_NODELAY: {e}; closing");
            drop(stream);
            self.ctx.release(&peer);
            return;
        }
        let base = self.listeners.len();
        let key = self.conns.insert(Conn {
            stream,
            peer,
            pending: Pending::new(),
            last: self.now,
            last_sent: self.now,
            armed_until: u64::MAX,
            readable: false,
            writable: true,
            read_closed: false,
            hup: false,
        });
        let registered = match self.conns.get_mut(key.0) {
            Some(c) => self.poll.registry().register(
                &mut c.stream,
                Token(base + key.0),
                Interest::READABLE | Interest::WRITABLE,
            ),
            None => Ok(()),
        };
        if let Err(e) = registered {
            warn!(%peer, "cannot watch a connection: {e}");
            self.close(key.0, End::Error(echo::errno_of(&e)));
            return;
        }
        debug!(%peer, "connection open");
        if let (Some(idle), Some(w), Some(c)) = (
            self.idle_ticks,
            self.wheel.as_mut(),
            self.conns.get_mut(key.0),
        ) {
            c.armed_until = w.insert(key, self.now + idle);
        }
    }

    /// Closes connection `i` and gives its slot back; the socket is closed
    /// before the release, so a drain that sees no connection knows every
    /// FIN is out. Closing the only descriptor of an accepted socket also
    /// takes it out of the epoll set, so no deregister call is needed.
    fn close(&mut self, i: usize, end: End) {
        if let Some(c) = self.conns.remove(i) {
            echo::count_end(end, self.ctx.stats);
            debug!(peer = %c.peer, ?end, "connection closed");
            let peer = c.peer;
            drop(c);
            self.ctx.release(&peer);
        }
    }

    /// Hands back due wheel entries: closes connections silent both ways for
    /// `--idle-timeout` or whose kept echo has not moved for the send
    /// timeout, and files the others again at their new deadline.
    fn expire_idle(&mut self) {
        let Some(wheel) = self.wheel.as_mut() else {
            return;
        };
        let mut due = Vec::new();
        wheel.advance(self.now, &mut due);
        for key in due {
            let Some(c) = self.conns.get_current(key) else {
                // That connection closed already; its slot may serve another.
                continue;
            };
            if c.armed_until > self.now {
                // An older entry; a newer one is filed for this connection.
                continue;
            }
            let next = if c.pending.is_empty() {
                self.idle_ticks.map(|t| (c.last + t, End::Idle))
            } else {
                self.send_ticks.map(|t| (c.last_sent + t, End::Stall))
            };
            match next {
                Some((deadline, end)) if deadline <= self.now => self.close(key.0, end),
                Some((deadline, _)) => {
                    if let Some(w) = self.wheel.as_mut() {
                        c.armed_until = w.insert(key, deadline);
                    }
                }
                // No timeout applies now; keeping echo files it again.
                None => c.armed_until = u64::MAX,
            }
        }
    }

    /// Takes the listeners out of the poll set for [`accept::RESOURCE_PAUSE`]
    /// (the loop keeps serving connections meanwhile).
    fn pause_accepting(&mut self) {
        for l in &mut self.listeners {
            if let (Some(sock), true) = (l.sock.as_mut(), l.registered) {
                // Failing to deregister leaves it registered: no harm.
                l.registered = self.poll.registry().deregister(sock).is_err();
            }
        }
        self.paused_until = Some(Instant::now() + accept::RESOURCE_PAUSE);
    }

    /// Puts the listeners back once the pause is over. Registering an edge
    /// triggered source that is already readable reports it at once.
    fn resume_accepting(&mut self) {
        match self.paused_until {
            Some(t) if Instant::now() >= t => {}
            _ => return,
        }
        self.paused_until = None;
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if let (Some(sock), false) = (l.sock.as_mut(), l.registered) {
                match self
                    .poll
                    .registry()
                    .register(sock, Token(i), Interest::READABLE)
                {
                    Ok(()) => l.registered = true,
                    Err(e) => warn!("cannot watch a listener again: {e}"),
                }
            }
        }
    }

    /// Stops accepting on every listener (the server is stopping).
    fn close_listeners(&mut self) {
        for i in 0..self.listeners.len() {
            self.close_listener(i);
        }
    }

    /// Takes listener `i` out of the poll set and closes this worker's clone.
    /// The deregister must come first: the socket is shared with other
    /// descriptors, so closing ours would not take it out of the epoll set.
    fn close_listener(&mut self, i: usize) {
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        if let Some(mut sock) = l.sock.take()
            && l.registered
        {
            // It is being dropped either way.
            let _ = self.poll.registry().deregister(&mut sock);
        }
        l.registered = false;
    }
}

/// One turn of a connection: write back what is kept, then read and echo
/// until the socket would block, the budget is used, or the client is done.
fn drive(c: &mut Conn, buf: &mut [u8], now: u64, bytes: &mut u64) -> Step {
    for _ in 0..READ_BUDGET {
        if c.writable
            && !c.pending.is_empty()
            && let Err(end) = flush(c, now, bytes)
        {
            return Step::Close(end);
        }
        if c.read_closed {
            if c.pending.is_empty() {
                return Step::Close(finish(c));
            }
            return settle(c);
        }
        if !c.readable || c.pending.is_full() {
            return settle(c);
        }
        let room = c.pending.room().min(buf.len());
        match c.stream.read(&mut buf[..room]) {
            // The client's FIN: what is kept goes out first, then ours.
            Ok(0) => c.read_closed = true,
            Ok(n) => {
                c.last = now;
                // A short read drained the queue; more data, or a FIN not
                // yet seen, raises a new edge. Only a hang-up already
                // reported may hide a FIN behind the data: then read on.
                if n < room && !c.hup {
                    c.readable = false;
                }
                if let Err(end) = echo_back(c, &buf[..n], now, bytes) {
                    return Step::Close(end);
                }
            }
            // The receive queue is empty: wait for the next readable edge.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
            // A signal: read again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Step::Close(End::from_io(&e)),
        }
    }
    Step::Again
}

/// After a turn that stopped early: a connection that could still write what
/// it keeps must come back, since no edge will wake it.
fn settle(c: &Conn) -> Step {
    if c.writable && !c.pending.is_empty() {
        Step::Again
    } else {
        Step::Wait
    }
}

/// Writes `data`, just read, back to the client; what the kernel will not
/// take is kept. `data` is never longer than the room left, so nothing is
/// lost.
fn echo_back(c: &mut Conn, data: &[u8], now: u64, bytes: &mut u64) -> Result<(), End> {
    let mut off = 0;
    if c.pending.is_empty() {
        off = write_some(&mut c.stream, data, &mut c.writable)?;
        if off > 0 {
            c.last = now;
            c.last_sent = now;
            *bytes += off as u64;
        }
    }
    // Fits: the read asked for at most `room()` bytes.
    c.pending.keep(&data[off..]);
    Ok(())
}

/// Writes as much of what is kept as the kernel takes.
fn flush(c: &mut Conn, now: u64, bytes: &mut u64) -> Result<(), End> {
    let n = write_some(&mut c.stream, c.pending.as_slice(), &mut c.writable)?;
    if n > 0 {
        c.pending.consume(n);
        c.last = now;
        c.last_sent = now;
        *bytes += n as u64;
    }
    Ok(())
}

/// Writes `data` until done or the socket would block (clearing
/// `writable`); returns how many bytes went out.
fn write_some(stream: &mut TcpStream, data: &[u8], writable: &mut bool) -> Result<usize, End> {
    let mut off = 0;
    for _ in 0..WRITE_TRIES {
        if off == data.len() || !*writable {
            break;
        }
        match stream.write(&data[off..]) {
            // A TCP send never takes 0 of a non-empty buffer; treat it as dead.
            Ok(0) => return Err(End::Error(Errno::EIO)),
            Ok(n) => {
                off += n;
                // A short write filled the send buffer: a writable edge
                // comes when it drains, so skip the write that would block.
                if off < data.len() {
                    *writable = false;
                }
            }
            // The send buffer is full: the rest waits for a writable edge.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
            // A signal: write again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(End::from_io(&e)),
        }
    }
    Ok(off)
}

/// Everything is written back after the client's FIN: send ours.
fn finish(c: &mut Conn) -> End {
    match c.stream.shutdown(Shutdown::Write) {
        Ok(()) => End::Fin,
        // The client reset meanwhile: nothing left to say.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => End::Fin,
        Err(e) => End::from_io(&e),
    }
}

/// Ticks of [`TICK`] in `d`.
fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis().max(1)) as u64
}

/// The worker's read buffer is no bigger than what a connection may keep,
/// so one read's leftover always fits in its [`Pending`].
const _: () = assert!(BUF_SIZE <= PENDING_CAP);

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(s: &mut Slab, k: WheelKey) -> bool {
        s.get_current(k).is_some()
    }

    fn conn() -> Conn {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        Conn {
            peer: c.local_addr().unwrap(),
            stream: TcpStream::from_std(c),
            pending: Pending::new(),
            last: 0,
            last_sent: 0,
            armed_until: u64::MAX,
            readable: false,
            writable: true,
            read_closed: false,
            hup: false,
        }
    }

    #[test]
    fn slab_reuses_slots_with_a_new_generation() {
        let mut s = Slab::default();
        let a = s.insert(conn());
        assert!(s.remove(a.0).is_some());
        let b = s.insert(conn());
        assert_eq!(a.0, b.0);
        assert_ne!(a.1, b.1);
        assert!(!key_of(&mut s, a));
        assert!(key_of(&mut s, b));
        assert!(s.remove(a.0).is_some());
        assert!(s.remove(a.0).is_none());
    }

    #[test]
    fn ticks_round_down() {
        assert_eq!(ticks(Duration::from_millis(249)), 0);
        assert_eq!(ticks(Duration::from_millis(250)), 1);
        assert_eq!(ticks(Duration::from_secs(2)), 8);
    }
}
