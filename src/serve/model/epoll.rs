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
//! own [`Pending`](crate::serve::contract::pending::Pending) (at most [`PENDING_CAP`]), and the connection core
//! ([`core::Conn`]) decides what happens next: at the cap it stops reading
//! that client until the kernel takes some (backpressure). An idle
//! connection holds a socket and a slot of a few dozen bytes, no buffer.
//!
//! # Zero copy
//! Under `--zero-copy` a connection may move to a pipe of its own and be
//! served by [`splice::drive`] (socket → pipe → socket, no copy), with the
//! same core and the same hints: the hook is the first line of [`drive`].
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
//! # Faults
//! A faulted plain connection (`--fault`) is served by the same loop: its
//! shaper sits in the box a TLS client has its session in
//! ([`epoll_faults`]), and a held echo is woken by its timer entry (the
//! timer rule below, with the fault's time folded into the deadline). A
//! faulted TLS connection goes to a thread of its own.
//!
//! # Timers
//! The loop sleeps until the first connection deadline (the timer rule of
//! [`crate::serve::contract::timers`]), or at most [`TICK`] to look at the stop flag
//! and an accept pause.
//!
//! # One shared listener, not SO_REUSEPORT per worker
//! Every worker polls the same listening socket. A throwaway build that gave
//! each worker its own SO_REUSEPORT listener was measured against it
//! (`--workers 2`, server on CPU 0, load on CPU 1, 3 runs each, server CPU
//! per request): a connection per request 52.8 µs shared vs 54.0 µs
//! reuseport; 64 B echo on 50 connections 10.4 vs 10.6 µs. No gain, so the
//! shared socket stays: it never hashes a new client onto a busy worker, and
//! the supervisor stops every accept with one `shutdown(2)`.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use mio::net::{TcpListener as MioListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::serve::admission::Permit;
use crate::serve::blocking::accept::{self, AcceptError};
use crate::serve::blocking::faulted;
use crate::serve::contract::BUF_SIZE;
use crate::serve::contract::pending::PENDING_CAP;
use crate::serve::contract::timers::Timers;
use crate::serve::contract::{self as core, End, Next, Timeouts};
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::supervise;
use crate::serve::model::edge::write_some;
use crate::serve::model::epoll_faults::{self, Faults};
use crate::serve::transport::splice::{self, Kept, Piece, ZeroCopy};
use crate::serve::transport::tls::socket::{self, Turn};
use netecho_core::tls::Session;

/// The longest an idle worker sleeps before it looks at the stop flag and
/// the accept pause again. Connection deadlines do not wait for it.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Events taken from the kernel per `epoll_wait`.
const EVENTS_CAP: usize = 1024;
/// Reads one connection may do per turn (16 × 64 KiB = 1 MiB) before the
/// other connections get theirs.
const READ_BUDGET: usize = 16;
/// Connections one listener may hand over per turn before connections
/// already open are served.
const ACCEPT_BUDGET: usize = 64;

/// Starts `ctx.workers` event loops and serves until a signal stops the
/// server.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
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
    supervise::until_stopped(listeners, ctx);
    Ok(())
}

/// One listening socket as a worker sees it.
struct Listener {
    /// This worker's clone; `None` once closed (stopping, or shut down).
    sock: Option<MioListener>,
    /// True while it is in the poll set (false during an accept pause).
    registered: bool,
    /// A `--tls-listen` socket: its clients go through the TLS layer.
    tls: bool,
}

/// A timer entry's name for a connection: its slab slot and its id, so an
/// entry for a former occupant of the slot is recognised and dropped.
type Key = (usize, u32);

/// One client: its socket, the readiness hints, and the connection core.
struct Client {
    stream: TcpStream,
    /// For logs.
    peer: SocketAddr,
    /// The echo contract's state: what is kept, FIN, deadlines, the end.
    core: core::Conn<Kept>,
    /// Worker-unique (wrapping) number of this connection.
    id: u32,
    /// The earliest deadline filed for it in the worker's [`Timers`].
    armed: Option<Instant>,
    /// Set by a readable event, cleared when a read would block.
    readable: bool,
    /// Set by a writable event, cleared when a write would block.
    writable: bool,
    /// An event reported a hang-up or error: read until `Ok(0)` or an error.
    hup: bool,
    /// What only some connections carry, boxed so that a plain unfaulted
    /// one pays a null pointer for it: the TLS layer or the faults.
    side: Option<Box<Side>>,
    /// Its place under the limits; the last field, so it is given back
    /// after the socket is closed (a faulted client's before, at every
    /// end: `Action::frees`).
    permit: Permit,
}

/// What sits between a client's socket and its core, if anything. Always
/// boxed whole ([`Client::side`]): a faulted connection's box is as big as
/// a TLS session's, which spares a TLS connection a second pointer.
#[expect(
    clippy::large_enum_variant,
    reason = "boxed whole; one allocation per TLS or faulted connection"
)]
enum Side {
    /// A TLS client: the TLS layer between the socket and the core, which
    /// then does the I/O itself (and ignores the hints above: it reads and
    /// writes until `WouldBlock`, so every wait follows one, as edge
    /// triggering needs).
    Tls(Session),
    /// A faulted plain client: the shaper and its times
    /// ([`epoll_faults`]), between the core and the socket.
    Faults(Faults),
}

impl Client {
    /// When to look at it again: the core's deadline, the TLS
    /// handshake's while it runs, a fault's next time.
    fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        match self.side.as_deref() {
            None => self.core.deadline(t).map(|(at, _)| at),
            Some(Side::Tls(tls)) => tls.deadline(&self.core, t),
            Some(Side::Faults(f)) => f.deadline(&self.core, t),
        }
    }

    /// True when its deadline may now be sooner than the one filed: echo
    /// waits (kept by the core, or as ciphertext in the TLS session), or a
    /// fault set a new time.
    fn deadline_may_be_sooner(&self) -> bool {
        match self.side.as_deref() {
            None => self.core.deadline_may_be_sooner(),
            Some(Side::Tls(tls)) => tls.deadline_may_be_sooner(&self.core),
            Some(Side::Faults(_)) => true,
        }
    }

    /// A timer came due: true if the connection is to close now.
    fn on_timer(&mut self, now: Instant, t: &Timeouts) -> bool {
        match self.side.as_deref_mut() {
            None => self.core.on_timer(now, t),
            Some(Side::Tls(tls)) => tls.on_timer(&mut self.core, now, t),
            Some(Side::Faults(f)) => f.on_timer(&mut self.core, now, t),
        }
    }

    /// True (once) when a fault's time came: it is to be served again
    /// although no event says so.
    fn fault_due(&mut self, now: Instant) -> bool {
        match self.side.as_deref_mut() {
            Some(Side::Faults(f)) => f.take_due(now),
            _ => false,
        }
    }

    /// Its TLS session, if it is a TLS client.
    fn tls(&self) -> Option<&Session> {
        match self.side.as_deref() {
            Some(Side::Tls(tls)) => Some(tls),
            _ => None,
        }
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
    conns: Slab<Client>,
    /// The id the next connection gets.
    next_id: u32,
    /// The one read buffer of this worker, shared by all its connections.
    buf: Box<[u8]>,
    /// Tokens to serve again after the next poll (budget used up).
    run_queue: Vec<Token>,
    /// Idle and stall deadlines.
    timers: Timers<Key>,
    /// `--idle-timeout` and the send timeout.
    timeouts: Timeouts,
    /// The time, read once per loop turn.
    now: Instant,
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
            let tls = ctx.tls.as_ref().is_some_and(|t| t.listens_on(l));
            let clone = l.try_clone().map_err(Error::io("cloning a listener"))?;
            let mut sock = MioListener::from_std(clone);
            poll.registry()
                .register(&mut sock, Token(i), Interest::READABLE)
                .map_err(Error::io("registering a listener"))?;
            mine.push(Listener {
                sock: Some(sock),
                registered: true,
                tls,
            });
        }
        Ok(Worker {
            poll,
            ctx,
            listeners: mine,
            conns: Slab::new(),
            next_id: 0,
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            run_queue: Vec::new(),
            timers: Timers::default(),
            timeouts: ctx.timeouts(),
            now: Instant::now(),
            paused_until: None,
            bytes: 0,
        })
    }

    /// The event loop; runs until the server stops and this worker has no
    /// connection left (a process that exits first ends it too).
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAP);
        let mut queued = Vec::new();
        loop {
            if self.ctx.stats.stopping() {
                self.close_listeners();
                if self.conns.is_empty() {
                    return;
                }
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
            self.now = Instant::now();
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
                self.ctx.stats.bytes.add(self.bytes);
                self.bytes = 0;
            }
        }
    }

    /// How long the next poll may sleep: until the first deadline, the end
    /// of an accept pause, or [`TICK`].
    fn timeout(&self) -> Duration {
        if !self.run_queue.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        [self.paused_until, self.timers.next_due()]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .fold(TICK, Duration::min)
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
        let Some(c) = self.conns.get_mut(i) else {
            // A stale run-queue entry for a connection already closed.
            return;
        };
        c.readable |= seen.readable;
        c.writable |= seen.writable;
        c.hup |= seen.hup;
        let step = match c.side.as_deref_mut() {
            Some(Side::Tls(tls)) => {
                match socket::turn(
                    tls,
                    &mut c.core,
                    &mut c.stream,
                    self.now,
                    &mut self.buf,
                    &mut self.bytes,
                ) {
                    Turn::Again => Step::Again,
                    Turn::Wait { .. } => Step::Wait,
                    Turn::Close(end) => Step::Close(end),
                }
            }
            Some(Side::Faults(f)) => {
                let hints = splice::Hints {
                    readable: &mut c.readable,
                    writable: &mut c.writable,
                };
                match epoll_faults::turn(
                    f,
                    &mut c.core,
                    &mut c.stream,
                    hints,
                    &mut c.permit,
                    &mut self.buf,
                    &self.timeouts,
                ) {
                    epoll_faults::Turn::Wait => Step::Wait,
                    epoll_faults::Turn::Again => Step::Again,
                    epoll_faults::Turn::Close(end) => Step::Close(end),
                }
            }
            None => drive(c, &mut self.buf, self.now, &mut self.bytes),
        };
        // Echo now waiting may be due sooner (stall) than the entry filed.
        if (c.armed.is_none() || c.deadline_may_be_sooner())
            && let Some(at) = c.deadline(&self.timeouts)
        {
            self.timers.file(&mut c.armed, at, (i, c.id));
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
        let stats = self.ctx.stats;
        for _ in 0..ACCEPT_BUDGET {
            // The accept and the admission in one section, so that a stop
            // (a handover above all) never finds a connection taken off
            // the queue and not yet counted.
            let Some(_section) = stats.enter_accept() else {
                self.close_listeners();
                return;
            };
            let Some(sock) = self.listeners[i].sock.as_ref() else {
                return;
            };
            match sock.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, self.listeners[i].tls),
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

    /// Applies `--max-conns` and `--max-conns-per-ip`, sets TCP_NODELAY
    /// (unless the listener gave it already) and
    /// puts the connection in the poll set and the timer wheel.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, tls: bool) {
        // Given back when dropped: on every return below, or with `Client`.
        let Some(permit) = Permit::take(self.ctx, &peer) else {
            drop(stream);
            accept::log_rejected(Some(peer), self.ctx);
            return;
        };
        let faulted = faulted::Faulted::of(&stream, self.ctx);
        if let Some(f) = faulted.filter(|_| tls) {
            // A faulted TLS connection is served on a thread of its own.
            let std = std::net::TcpStream::from(std::os::fd::OwnedFd::from(stream));
            faulted::spawn(std, f, tls, permit, self.ctx);
            return;
        }
        if let Err(e) = self.ctx.nodelay(socket2::SockRef::from(&stream)) {
            // Only a socket already dead fails here.
            debug!(%peer, "TCP_NODELAY: {e}; closing");
            drop(stream);
            self.ctx.stats.count_end(End::from_io(&e));
            return;
        }
        let side = match self.ctx.tls.as_ref().filter(|_| tls) {
            // A faulted plain connection: served in this loop too.
            None => {
                faulted.map(|f| Box::new(Side::Faults(Faults::new(&stream, f, self.ctx.stats))))
            }
            Some(t) => match Session::new(&t.config, self.now, t.handshake_timeout) {
                Ok(c) => Some(Box::new(Side::Tls(c))),
                Err(e) => {
                    warn!(%peer, "cannot start a TLS session: {e}");
                    drop(stream);
                    self.ctx
                        .stats
                        .count_end(End::Error(netecho_core::tls::EPROTO));
                    return;
                }
            },
        };
        let base = self.listeners.len();
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let i = entry.key();
        let c = entry.insert(Client {
            stream,
            peer,
            // TLS bytes on the wire are ciphertext, a faulted echo is
            // shaped: never spliced.
            core: core::Conn::new(
                self.now,
                Kept::new(if side.is_some() {
                    ZeroCopy::Off
                } else {
                    self.ctx.zero_copy
                }),
            ),
            id,
            armed: None,
            readable: false,
            writable: true,
            hup: false,
            side,
            permit,
        });
        if let Err(e) = self.poll.registry().register(
            &mut c.stream,
            Token(base + i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!(%peer, "cannot watch a connection: {e}");
            self.close(i, End::from_io(&e));
            return;
        }
        debug!(%peer, tls = c.tls().is_some(), "connection open");
        if let Some(at) = c.deadline(&self.timeouts) {
            self.timers.file(&mut c.armed, at, (i, id));
        }
    }

    /// Closes connection `i` and gives its slot back; the socket is closed
    /// before the release, so a drain that sees no connection knows every
    /// FIN is out. Closing the only descriptor of an accepted socket also
    /// takes it out of the epoll set, so no deregister call is needed.
    fn close(&mut self, i: usize, end: End) {
        if let Some(mut c) = self.conns.try_remove(i) {
            let conns = &self.conns;
            self.timers.forget(c.armed, |&(j, id)| {
                conns.get(j).is_some_and(|live| live.id == id)
            });
            self.ctx.stats.count_end(end);
            if let Some(f) = c.tls().and_then(|t| t.failure()) {
                self.ctx.stats.count_failure(f);
                debug!(peer = %c.peer, reason = f.label(), "TLS handshake failed");
            }
            debug!(peer = %c.peer, tls = c.tls().is_some(), %end, "connection closed");
            if matches!(c.side.as_deref(), Some(Side::Faults(_))) {
                // A faulted client's slot goes back before it can see the
                // end, as in every model that applies faults (its turn did
                // so already, unless its timer ended it).
                c.permit.release();
            }
            // The socket first, then the permit (the struct's field order).
            drop(c);
        }
    }

    /// Takes the due timer entries: asks each live connection's core
    /// whether its deadline has passed, closes it if so, and files it again
    /// at its new deadline if traffic moved it on.
    fn expire_idle(&mut self) {
        while let Some((at, (i, id))) = self.timers.pop_due(self.now) {
            let Some(c) = self.conns.get_mut(i).filter(|c| c.id == id) else {
                // That connection closed already; its slot may serve another.
                self.timers.dropped_stale();
                continue;
            };
            if c.armed != Some(at) {
                // An older entry; a sooner one was filed and handled.
                continue;
            }
            c.armed = None;
            if c.on_timer(self.now, &self.timeouts) {
                if let Some(end) = c.core.end() {
                    self.close(i, end);
                }
                continue;
            }
            if c.fault_due(self.now) {
                // A fault's time came (a held echo, the next slice, the end
                // of a drain): its turn comes after the next poll.
                self.run_queue.push(Token(self.listeners.len() + i));
            }
            if let Some(next) = c.deadline(&self.timeouts) {
                self.timers.file(&mut c.armed, next, (i, id));
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

/// One turn of a connection: performs what its core asks — write back what
/// is kept, read and echo, send our FIN — until the socket would block, the
/// budget is used, or the connection is to close.
fn drive(c: &mut Client, buf: &mut [u8], now: Instant, bytes: &mut u64) -> Step {
    for _ in 0..READ_BUDGET {
        // Zero copy (`--zero-copy`): the same core, performed with splice.
        if c.core.store_mut().switch() {
            return drive_spliced(c, now, bytes);
        }
        let send = match c.core.next() {
            Next::Close(end) => return Step::Close(end),
            // Our FIN: the close that follows at once sends it after the
            // last byte (contract::Next::ShutWrite says why it is no reset).
            Next::ShutWrite => {
                c.core.on_shut(Ok(()));
                continue;
            }
            Next::Io { send, .. } => send,
        };
        if send && c.writable {
            flush(c, now, bytes);
            if c.core.end().is_some() {
                continue;
            }
        }
        let Next::Io { send, read } = c.core.next() else {
            continue;
        };
        if read == 0 || !c.readable {
            // Could still write what it keeps: no edge would wake it.
            return if send && c.writable {
                Step::Again
            } else {
                Step::Wait
            };
        }
        let room = read.min(buf.len());
        match c.stream.read(&mut buf[..room]) {
            // The client's FIN: what is kept goes out first, then ours.
            Ok(0) => c.core.on_fin(),
            Ok(n) => {
                // A short read drained the queue; more data, or a FIN not
                // yet seen, raises a new edge. Only a hang-up already
                // reported may hide a FIN behind the data: then read on.
                if n < room && !c.hup {
                    c.readable = false;
                }
                let mut echoed = 0;
                if c.core.write_through() && c.writable {
                    match write_some(&mut c.stream, &buf[..n], &mut c.writable) {
                        Ok(k) => echoed = k,
                        Err(e) => {
                            c.core.on_error(&e);
                        }
                    }
                    *bytes += echoed as u64;
                }
                c.core.on_read(now, Piece::Bytes(&buf[..n]), echoed);
                c.core.store_mut().after_read(n);
            }
            // The receive queue is empty: wait for the next readable edge.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
            // A signal is retried; anything else ends the connection.
            Err(e) => {
                c.core.on_error(&e);
            }
        }
    }
    Step::Again
}

/// The rest of a turn for a connection on the pipe ([`splice::drive`]).
fn drive_spliced(c: &mut Client, now: Instant, bytes: &mut u64) -> Step {
    use std::os::fd::AsFd;
    let hints = splice::Hints {
        readable: &mut c.readable,
        writable: &mut c.writable,
    };
    match splice::drive(
        &mut c.core,
        c.stream.as_fd(),
        hints,
        now,
        bytes,
        READ_BUDGET,
    ) {
        splice::Turn::Wait => Step::Wait,
        splice::Turn::Again => Step::Again,
        splice::Turn::Close(end) => Step::Close(end),
    }
}

/// Writes as much of what is kept as the kernel takes.
fn flush(c: &mut Client, now: Instant, bytes: &mut u64) {
    match write_some(&mut c.stream, c.core.store().as_slice(), &mut c.writable) {
        Ok(0) => {}
        Ok(n) => {
            c.core.on_sent(now, n);
            *bytes += n as u64;
        }
        Err(e) => {
            c.core.on_error(&e);
        }
    }
}

/// What only TLS and faulted clients carry costs every other client one
/// null pointer, as the TLS session alone did.
const _: () = assert!(std::mem::size_of::<Option<Box<Side>>>() == std::mem::size_of::<usize>());

/// The worker's read buffer is no bigger than what a connection may keep,
/// so one read's leftover always fits in its
/// [`Pending`](crate::serve::contract::pending::Pending).
const _: () = assert!(BUF_SIZE <= PENDING_CAP);
