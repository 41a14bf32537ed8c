//! The worker of every TCP-based bench (plain and `--tls`): one mio
//! (epoll, edge-triggered) loop driving many connections, each with one
//! request in flight, over a [`Transport`].
//!
//! The pacing (closed loop, `--rate`'s open loop), `-n`'s budget,
//! `--new-conn`, `--hold`, `--interval`, `--source-addrs`, timeouts and the
//! accounting of what the end of the run cut short are written once here;
//! a transport only says how bytes go over one connection: [`Plain`] as
//! they are, [`super::tls`] as TLS records (with a handshake after each
//! connect, timed apart). Each transport gets its own copy of the worker
//! (the worker is generic, not dynamic), so the plain path pays nothing for
//! TLS: its link is a zero-sized value and its `flush` an empty function.
//!
//! Per request, when the server keeps up, plain TCP costs one `write` and
//! one `read` plus a share of one `epoll_wait`: the read stops as soon as
//! the whole echo is in (a short read means the socket is drained, which is
//! what edge-triggered readiness needs), so it never pays a `read` that
//! returns EAGAIN. The echo is compared with the message sent, slice by
//! slice, however the reads split.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::plan::{self, Pace, Plan, TICK};
use super::tally::Tally;
use super::timer;
use crate::error::{Error, Result};
use crate::net::pattern;
use crate::sys::stop;

/// Bytes read per `read` call: a whole 64 KiB message in one call.
const READ_BUF: usize = 64 * 1024;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// Why a transport's I/O did not go through: the socket's error (including
/// `WouldBlock`, which the worker waits out), or the protocol's own.
#[derive(Debug)]
pub(crate) enum Hitch<E> {
    Io(io::Error),
    Protocol(E),
}

impl<E> From<io::Error> for Hitch<E> {
    fn from(e: io::Error) -> Self {
        Hitch::Io(e)
    }
}

/// What the worker needs of a kind of connection: how to make the state
/// that sits beside each socket.
pub(crate) trait Transport {
    type Link: Link;
    /// Kept connection `id`'s link, made before the run (TLS: its session,
    /// handshaken at setup); `None` if setup made none, a bug.
    fn kept(&self, id: u64) -> Option<Self::Link>;
    /// A new connection's link (`--new-conn`), before its connect.
    fn fresh(&self) -> std::result::Result<Self::Link, <Self::Link as Link>::Error>;
}

/// One connection's bytes over its socket, with the semantics of
/// `io::Read`/`io::Write` on the plaintext: `Ok(0)` from [`Link::read`] is
/// the peer's end, `WouldBlock` means wait for the next readiness edge.
pub(crate) trait Link {
    /// The protocol's own errors (a bad record, a failed certificate).
    type Error: fmt::Display;
    /// The protocol's name in error lines.
    const NAME: &'static str;
    /// Whether each new connection handshakes after its connect.
    const HANDSHAKES: bool;
    /// Whether a read shorter than the buffer means the socket is drained:
    /// true of a socket, not of a decryptor whose records split anywhere.
    const SHORT_READ_DRAINS: bool;
    /// Moves the handshake on: `Ok(true)` once it is over, `Ok(false)`
    /// while the peer has to answer; `WouldBlock` if the socket is full.
    fn handshake(&mut self, sock: &mut TcpStream) -> std::result::Result<bool, Hitch<Self::Error>>;
    /// Whether the handshake was a resumed one.
    fn resumed(&self) -> bool;
    fn write(
        &mut self,
        sock: &mut TcpStream,
        buf: &[u8],
    ) -> std::result::Result<usize, Hitch<Self::Error>>;
    /// Sends what `write` left queued; `WouldBlock` if the socket is full.
    fn flush(&mut self, sock: &mut TcpStream) -> std::result::Result<(), Hitch<Self::Error>>;
    fn read(
        &mut self,
        sock: &mut TcpStream,
        buf: &mut [u8],
    ) -> std::result::Result<usize, Hitch<Self::Error>>;
    /// Ends the connection gracefully, before the socket is closed.
    fn close(&mut self, sock: &mut TcpStream);
}

/// Plain TCP: the bytes go as they are, one syscall each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plain;

impl Transport for Plain {
    type Link = Plain;
    fn kept(&self, _id: u64) -> Option<Plain> {
        Some(Plain)
    }
    fn fresh(&self) -> std::result::Result<Plain, std::convert::Infallible> {
        Ok(Plain)
    }
}

impl Link for Plain {
    type Error = std::convert::Infallible;
    const NAME: &'static str = "TCP";
    const HANDSHAKES: bool = false;
    const SHORT_READ_DRAINS: bool = true;
    #[inline]
    fn handshake(&mut self, _: &mut TcpStream) -> std::result::Result<bool, Hitch<Self::Error>> {
        Ok(true)
    }
    #[inline]
    fn resumed(&self) -> bool {
        false
    }
    #[inline]
    fn write(
        &mut self,
        sock: &mut TcpStream,
        buf: &[u8],
    ) -> std::result::Result<usize, Hitch<Self::Error>> {
        Ok(sock.write(buf)?)
    }
    #[inline]
    fn flush(&mut self, _: &mut TcpStream) -> std::result::Result<(), Hitch<Self::Error>> {
        Ok(())
    }
    #[inline]
    fn read(
        &mut self,
        sock: &mut TcpStream,
        buf: &mut [u8],
    ) -> std::result::Result<usize, Hitch<Self::Error>> {
        Ok(sock.read(buf)?)
    }
    #[inline]
    fn close(&mut self, _: &mut TcpStream) {}
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its next due time (open loop) in the timer heap, or
    /// idle to the end (`--hold`).
    Waiting,
    /// `--new-conn`: the non-blocking connect is in progress.
    Connecting,
    /// `--new-conn` over a transport that handshakes: the handshake is in
    /// progress.
    Handshaking,
    /// A request is being written or its echo read.
    Busy,
    /// Finished: the run is over for it, or it failed.
    Done,
}

/// An open connection: its socket and its transport's state.
struct Open<L> {
    sock: TcpStream,
    link: L,
}

/// One connection and its request in flight.
struct Conn<L> {
    /// Global connection number, in messages and in the payload.
    id: u64,
    open: Option<Open<L>>,
    state: State,
    /// The request in flight: also the echo expected back.
    msg: Vec<u8>,
    /// Requests started on this connection (the payload's round).
    round: u64,
    /// The round whose message `msg` holds.
    filled: u64,
    /// Bytes of `msg` handed to the transport.
    written: usize,
    received: usize,
    /// Bytes echoed on this connection before the current message.
    base: u64,
    /// When the request was due: its latency (and a handshake's) counts
    /// from here.
    due: Instant,
    /// When the echo's latency starts: `due`, or the handshake's end (a
    /// transport that handshakes only; plain TCP counts from `due`).
    echo_from: Instant,
    /// When it was actually started: its timeout counts from here.
    sent_at: Instant,
    /// Whether it counts (it was due after the warm-up).
    record: bool,
    /// Writable readiness is asked for. Only once a write has met a full
    /// send buffer: otherwise every ACK would be one more epoll wake-up.
    want_write: bool,
    pace: Pace,
}

/// What went wrong on a connection, for the error line.
enum Fault<E> {
    Mismatch(u64),
    Closed(u64),
    Reset(u64),
    Timeout(u64),
    Connect(io::Error),
    Protocol(u64, E),
    Io(u64, io::Error),
}

/// The worker: its connections, loop and tally.
struct Worker<'a, T: Transport> {
    plan: &'a Plan,
    transport: T,
    slot: usize,
    poll: Poll,
    conns: Vec<Conn<T::Link>>,
    timers: timer::Schedule,
    /// Connections not yet `Done`.
    active: usize,
    tally: Tally,
    /// Recorded requests answered, for the progress line.
    done: u64,
    /// The end of the run has passed: no request is sent any more, the
    /// echoes still owed are waited for until [`Plan::drained`].
    draining: bool,
    rbuf: Vec<u8>,
}

/// Runs the plain TCP worker for connections `conns` (`(id, socket)`; the
/// socket is `None` with `--new-conn`) until the run is over.
pub(crate) fn run(
    plan: &Plan,
    slot: usize,
    conns: Vec<(u64, Option<std::net::TcpStream>)>,
) -> Result<Tally> {
    run_over(plan, slot, conns, Plain)
}

/// Runs the worker over `transport` for connections `conns` (as [`run`]).
pub(crate) fn run_over<T: Transport>(
    plan: &Plan,
    slot: usize,
    conns: Vec<(u64, Option<std::net::TcpStream>)>,
    transport: T,
) -> Result<Tally> {
    let poll = Poll::new().map_err(Error::io("creating an epoll instance"))?;
    let now = Instant::now();
    let mut list = Vec::with_capacity(conns.len());
    for (i, (id, sock)) in conns.into_iter().enumerate() {
        let open = match sock {
            Some(s) => {
                s.set_nonblocking(true)
                    .map_err(Error::io("making a socket non-blocking"))?;
                let mut s = TcpStream::from_std(s);
                poll.registry()
                    .register(&mut s, Token(i), Interest::READABLE)
                    .map_err(Error::io("registering a socket with epoll"))?;
                let Some(link) = transport.kept(id) else {
                    return Err(Error::Failed(format!(
                        "bench: connection {id} has no {} session from setup",
                        <T::Link as Link>::NAME
                    )));
                };
                Some(Open { sock: s, link })
            }
            None => None,
        };
        let mut msg = vec![0; plan.settings.size];
        pattern::fill(id, 0, &mut msg);
        list.push(Conn {
            id,
            open,
            state: State::Waiting,
            msg,
            round: 0,
            filled: 0,
            written: 0,
            received: 0,
            base: 0,
            due: now,
            echo_from: now,
            sent_at: now,
            record: false,
            want_write: false,
            pace: Pace::new(plan, id),
        });
    }
    let mut w = Worker {
        plan,
        transport,
        slot,
        poll,
        active: list.len(),
        conns: list,
        timers: timer::Schedule::default(),
        tally: Tally::for_plan(plan, slot)?,
        done: 0,
        draining: false,
        rbuf: vec![0; READ_BUF],
    };
    w.run_loop()?;
    Ok(w.tally)
}

impl<T: Transport> Worker<'_, T> {
    fn run_loop(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let mut clock = timer::for_loop(self.plan.interval.is_some(), &self.poll);
        let now = Instant::now();
        for i in 0..self.conns.len() {
            self.next_request(i, now);
        }
        let timeout = self.plan.settings.timeout;
        let mut last_scan = now;
        loop {
            let now = Instant::now();
            self.tally.tick(self.plan, now);
            while let Some((at, i)) = self.timers.pop_due(now) {
                // A connection that failed while waiting has no request due.
                if self.conns[i].state == State::Waiting {
                    self.begin(i, at, now);
                }
            }
            if self.active == 0 || stop::requested() {
                break;
            }
            if self.plan.ended(now) {
                if !self.draining {
                    self.draining = true;
                    self.stop_waiting();
                    continue;
                }
                if self.plan.drained().is_some_and(|d| now >= d) {
                    break;
                }
            }
            if now.duration_since(last_scan) >= TICK {
                last_scan = now;
                self.expire(now, timeout);
            }
            let next = self.timers.next();
            let end = if self.draining {
                self.plan.drained()
            } else {
                self.plan.end
            };
            if !timer::poll_until(
                &mut self.poll,
                &mut events,
                clock.as_mut(),
                next,
                end,
                now,
                TICK,
            )? {
                continue;
            }
            // One clock read for the whole batch: it is when the loop learnt
            // of every echo in it, and reading the clock per echo would date
            // later ones by the time spent on earlier ones.
            let woke = Instant::now();
            for ev in events.iter() {
                let i = ev.token().0;
                let Some(state) = self.conns.get(i).map(|c| c.state) else {
                    continue;
                };
                match state {
                    State::Connecting => self.on_connect(i, woke),
                    State::Handshaking => self.handshake(i, woke),
                    State::Busy => {
                        if ev.is_writable() {
                            self.write_some(i);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read_some(i, woke);
                        }
                    }
                    // Readiness of an idle socket: any bytes it brings are
                    // read (and judged) with the next request.
                    State::Waiting | State::Done => {}
                }
            }
            self.plan.set_progress(self.slot, self.done);
        }
        self.finish(Instant::now());
        Ok(())
    }

    /// The end of the run: connections waiting for their next slot will
    /// send no more (their slots in the window are unfinished); those with
    /// a request out wait for its echo until [`Plan::drained`].
    fn stop_waiting(&mut self) {
        let waiting = self.conns.iter().enumerate();
        let waiting = waiting.filter(|(_, c)| c.state == State::Waiting);
        let (unfinished, done) = plan::stop_waiting(self.plan, waiting.map(|(i, c)| (i, &c.pace)));
        self.tally.unfinished += unfinished;
        for i in done {
            self.retire(i);
        }
    }

    /// Counts what the end of the run cut short and closes everything: a
    /// request still out is unanswered (warm-up ones too: the server owed
    /// them an echo all the same), the open loop's slots never sent are
    /// unfinished.
    fn finish(&mut self, now: Instant) {
        let until = self.plan.end.map_or(now, |end| end.min(now));
        let from = self.plan.warmup_end;
        for c in &mut self.conns {
            if c.state == State::Done {
                continue;
            }
            if matches!(
                c.state,
                State::Busy | State::Connecting | State::Handshaking
            ) {
                self.tally.unanswered += 1;
            }
            self.tally.unfinished += c.pace.missed(self.plan, from, until);
            c.state = State::Done;
            if let Some(mut o) = c.open.take() {
                o.link.close(&mut o.sock);
            }
        }
        self.tally.stopped = Some(until);
        self.plan.set_progress(self.slot, self.done);
    }

    /// Schedules connection `i`'s next request: now, or on the timer heap.
    fn next_request(&mut self, i: usize, now: Instant) {
        let due = self.conns[i].pace.take(self.plan, now);
        if due <= now {
            self.begin(i, due, now);
        } else {
            self.conns[i].state = State::Waiting;
            self.timers.push(due, i);
        }
    }

    /// Starts the request due at `due` on connection `i` (connecting first
    /// with `--new-conn`), or retires the connection if the run has no
    /// room for it.
    fn begin(&mut self, i: usize, due: Instant, now: Instant) {
        let Some(record) = self.plan.admit(due, now) else {
            if let Some(end) = self.plan.end.filter(|_| self.plan.ended(now)) {
                // Open loop, behind at the end: this slot and any after it
                // in the window go unsent.
                let c = &self.conns[i];
                self.tally.unfinished +=
                    self.plan.unsent(due) + c.pace.missed(self.plan, self.plan.warmup_end, end);
            }
            self.retire(i);
            return;
        };
        let c = &mut self.conns[i];
        c.due = due;
        if <T::Link as Link>::HANDSHAKES {
            c.echo_from = due;
        }
        c.sent_at = now;
        c.record = record;
        c.written = 0;
        c.received = 0;
        if c.filled != c.round {
            pattern::advance(&mut c.msg, c.filled, c.round);
            c.filled = c.round;
        }
        if c.open.is_none() {
            self.connect(i);
            return;
        }
        c.state = State::Busy;
        self.write_some(i);
    }

    /// `--new-conn`: starts a non-blocking connect for connection `i`,
    /// from the next `--source-addrs` address if there are any. Kept out
    /// of line: inlined, it made `begin` of kept connections (the closed
    /// loop's every request) heavier by 6 instructions (callgrind).
    #[inline(never)]
    fn connect(&mut self, i: usize) {
        let link = match self.transport.fresh() {
            Ok(link) => link,
            Err(e) => {
                self.fail(i, Fault::Protocol(0, e));
                return;
            }
        };
        let addr = self.plan.settings.addr;
        let dialed = match self.plan.next_source() {
            Some((src, n)) => src.connect_nonblocking(n, addr).map(TcpStream::from_std),
            None => TcpStream::connect(addr),
        };
        let mut sock = match dialed {
            Ok(s) => s,
            Err(e) => {
                self.fail(i, Fault::Connect(e));
                return;
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.fail(i, Fault::Connect(e));
            return;
        }
        let c = &mut self.conns[i];
        c.base = 0;
        c.open = Some(Open { sock, link });
        // The connect ends with writable readiness.
        c.want_write = true;
        c.state = State::Connecting;
    }

    /// `--new-conn`: the connect finished, one way or the other.
    fn on_connect(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        let Some(o) = c.open.as_ref() else {
            return;
        };
        match o.sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                self.fail(i, Fault::Connect(e));
                return;
            }
            Ok(None) => {}
        }
        match o.sock.peer_addr() {
            Ok(_) => {}
            // Not connected yet: a spurious wake-up; the next event tells.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => {
                self.fail(i, Fault::Connect(e));
                return;
            }
        }
        let _ = o.sock.set_nodelay(true);
        if <T::Link as Link>::HANDSHAKES {
            c.state = State::Handshaking;
            self.handshake(i, now);
        } else {
            c.state = State::Busy;
            self.write_some(i);
        }
    }

    /// Moves connection `i`'s handshake on; at its end, times it (from
    /// when the request was due, connect included) and sends the request.
    fn handshake(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        let Some(o) = c.open.as_mut() else {
            return;
        };
        match o.link.handshake(&mut o.sock) {
            Ok(true) => {}
            // The peer's turn: its answer comes with a readable edge.
            Ok(false) => return,
            Err(e) => {
                self.io_hitch(i, e);
                return;
            }
        }
        if c.record {
            let ns =
                u64::try_from(now.saturating_duration_since(c.due).as_nanos()).unwrap_or(u64::MAX);
            self.tally.handshakes.saturating_record(ns.max(1));
            if o.link.resumed() {
                self.tally.resumed += 1;
            }
        }
        c.echo_from = now;
        c.state = State::Busy;
        self.write_some(i);
    }

    /// Writes as much of the request as the socket takes.
    fn write_some(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(o) = c.open.as_mut() else {
            return;
        };
        while c.written < c.msg.len() {
            match o.link.write(&mut o.sock, &c.msg[c.written..]) {
                Ok(0) => {
                    let at = c.base + c.received as u64;
                    self.fail(i, Fault::Closed(at));
                    return;
                }
                Ok(n) => c.written += n,
                Err(Hitch::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.io_hitch(i, e);
                    return;
                }
            }
        }
        if let Err(e) = o.link.flush(&mut o.sock) {
            self.io_hitch(i, e);
        }
    }

    /// Deals with a hitch in connection `i`'s writes (or handshake): a
    /// full send buffer asks for writable readiness (the next writable
    /// event resumes); anything else fails the connection.
    fn io_hitch(&mut self, i: usize, e: Hitch<<T::Link as Link>::Error>) {
        let c = &mut self.conns[i];
        let at = c.base + c.received as u64;
        let e = match e {
            Hitch::Protocol(e) => {
                self.fail(i, Fault::Protocol(at, e));
                return;
            }
            Hitch::Io(e) => e,
        };
        match e.kind() {
            io::ErrorKind::WouldBlock => {
                if c.want_write {
                    return;
                }
                let Some(o) = c.open.as_mut() else {
                    return;
                };
                c.want_write = true;
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = self
                    .poll
                    .registry()
                    .reregister(&mut o.sock, Token(i), interest)
                {
                    self.fail(i, Fault::Io(at, e));
                }
            }
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                self.fail(i, Fault::Reset(at))
            }
            // The peer's end in the middle of a handshake.
            io::ErrorKind::UnexpectedEof => self.fail(i, Fault::Closed(at)),
            _ => self.fail(i, Fault::Io(at, e)),
        }
    }

    /// Reads the echo, checks it, and completes the request when it is all in.
    fn read_some(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        let Some(o) = c.open.as_mut() else {
            return;
        };
        loop {
            let n = match o.link.read(&mut o.sock, &mut self.rbuf) {
                Ok(0) => {
                    let at = c.base + c.received as u64;
                    self.fail(i, Fault::Closed(at));
                    return;
                }
                Ok(n) => n,
                // Drained: the next readable edge brings the rest.
                Err(Hitch::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(Hitch::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(Hitch::Io(e)) => {
                    let at = c.base + c.received as u64;
                    let fault = if e.kind() == io::ErrorKind::ConnectionReset {
                        Fault::Reset(at)
                    } else {
                        Fault::Io(at, e)
                    };
                    self.fail(i, fault);
                    return;
                }
                Err(Hitch::Protocol(e)) => {
                    let at = c.base + c.received as u64;
                    self.fail(i, Fault::Protocol(at, e));
                    return;
                }
            };
            let want = &c.msg[c.received..c.written];
            if let Some(off) = pattern::first_difference(want, &self.rbuf[..n]) {
                let at = c.base + (c.received + off) as u64;
                self.fail(i, Fault::Mismatch(at));
                return;
            }
            if n > want.len() {
                // More bytes than were sent: the first extra one is wrong.
                let at = c.base + c.written as u64;
                self.fail(i, Fault::Mismatch(at));
                return;
            }
            c.received += n;
            if c.received == c.msg.len() {
                self.complete(i, now);
                return;
            }
            if <T::Link as Link>::SHORT_READ_DRAINS && n < self.rbuf.len() {
                // A short read: the socket is drained (edge-triggered).
                return;
            }
        }
    }

    /// The whole echo is back: record it and go on.
    fn complete(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        if c.record {
            // Plain TCP never sets `echo_from`: one store less per request.
            let from = if <T::Link as Link>::HANDSHAKES {
                c.echo_from
            } else {
                c.due
            };
            self.tally.record(from, now);
            self.done += 1;
        }
        c.round += 1;
        c.base += c.msg.len() as u64;
        if self.plan.settings.hold {
            // `--hold`: idle from now on, open until the run ends.
            c.state = State::Waiting;
            return;
        }
        if self.plan.settings.new_conn {
            // Closing it (TLS: close_notify, then FIN): everything sent
            // has come back.
            if let Some(mut o) = c.open.take() {
                o.link.close(&mut o.sock);
                let _ = self.poll.registry().deregister(&mut o.sock);
            }
        }
        self.next_request(i, now);
    }

    /// Times out requests (and connects, handshakes) whose echo is overdue.
    fn expire(&mut self, now: Instant, timeout: std::time::Duration) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if matches!(
                c.state,
                State::Busy | State::Connecting | State::Handshaking
            ) && now.duration_since(c.sent_at) >= timeout
            {
                let at = c.base + c.received as u64;
                self.fail(i, Fault::Timeout(at));
            }
        }
    }

    /// Counts and logs a failure; the connection is closed and not reused,
    /// since its stream is no longer in step with the pattern.
    fn fail(&mut self, i: usize, fault: Fault<<T::Link as Link>::Error>) {
        let c = &mut self.conns[i];
        let id = c.id;
        let name = <T::Link as Link>::NAME;
        let handshaking = c.state == State::Handshaking
            || (<T::Link as Link>::HANDSHAKES && c.state == State::Connecting);
        let line = match fault {
            Fault::Mismatch(at) => {
                self.tally.mismatches += 1;
                format!("mismatch on connection {id} at byte {at}")
            }
            Fault::Closed(_) if handshaking => {
                format!("connection {id} closed by the server during the {name} handshake")
            }
            Fault::Closed(at) => {
                format!("connection {id} closed by the server at byte {at}, echo incomplete")
            }
            Fault::Reset(at) => format!("connection {id} reset by the server at byte {at}"),
            Fault::Timeout(at) => format!(
                "no echo on connection {id} at byte {at} for {} s",
                self.plan.settings.timeout.as_secs_f64()
            ),
            Fault::Connect(e) => {
                format!(
                    "connection {id}: cannot connect to {}: {e}",
                    self.plan.settings.addr
                )
            }
            Fault::Protocol(_, e) if handshaking => {
                format!("connection {id}: {name} handshake failed: {e}")
            }
            Fault::Protocol(at, e) => format!("connection {id} at byte {at}: {name} error: {e}"),
            Fault::Io(at, e) => format!("connection {id} at byte {at}: {e}"),
        };
        self.tally.errors += 1;
        self.plan.log_error(line);
        self.retire(i);
    }

    /// Takes connection `i` out of the run.
    fn retire(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state != State::Done {
            c.state = State::Done;
            self.active -= 1;
        }
        if let Some(mut o) = c.open.take() {
            let _ = self.poll.registry().deregister(&mut o.sock);
        }
    }
}
