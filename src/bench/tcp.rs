//! The TCP worker: one mio (epoll, edge-triggered) loop driving many
//! connections, each with one request in flight.
//!
//! Per request, when the server keeps up, it costs one `write` and one
//! `read` plus a share of one `epoll_wait`: the read stops as soon as the
//! whole echo is in (a short read means the socket is drained, which is
//! what edge-triggered readiness needs), so it never pays a `read` that
//! returns EAGAIN. The echo is compared with the message sent, slice by
//! slice, however the reads split.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::plan::{Pace, Plan, TICK, Tally};
use super::timer;
use crate::error::{Error, Result};
use crate::net::pattern;

/// Bytes read per `read` call: a whole 64 KiB message in one call.
const READ_BUF: usize = 64 * 1024;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its next due time (open loop) in the timer heap.
    Waiting,
    /// `--new-conn`: the non-blocking connect is in progress.
    Connecting,
    /// A request is being written or its echo read.
    Busy,
    /// Finished: the run is over for it, or it failed.
    Done,
}

/// One connection and its request in flight.
struct Conn {
    /// Global connection number, in messages and in the payload.
    id: u64,
    sock: Option<TcpStream>,
    state: State,
    /// The request in flight: also the echo expected back.
    msg: Vec<u8>,
    /// Requests started on this connection (the payload's round).
    round: u64,
    /// The round whose message `msg` holds.
    filled: u64,
    written: usize,
    received: usize,
    /// Bytes echoed on this socket before the current message.
    base: u64,
    /// When the request was due: its latency counts from here.
    due: Instant,
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
enum Fault {
    Mismatch(u64),
    Closed(u64),
    Reset(u64),
    Timeout(u64),
    Connect(io::Error),
    Io(u64, io::Error),
}

/// The worker: its connections, loop and tally.
struct Worker<'a> {
    plan: &'a Plan,
    slot: usize,
    poll: Poll,
    conns: Vec<Conn>,
    timers: timer::Schedule,
    /// Connections not yet `Done`.
    active: usize,
    tally: Tally,
    /// Completed requests, warm-up included, for the progress line.
    done: u64,
    rbuf: Vec<u8>,
}

/// Runs the TCP worker for connections `conns` (`(id, socket)`; the socket
/// is `None` with `--new-conn`) until the run is over.
pub(crate) fn run(
    plan: &Plan,
    slot: usize,
    conns: Vec<(u64, Option<std::net::TcpStream>)>,
) -> Result<Tally> {
    let poll = Poll::new().map_err(Error::io("creating an epoll instance"))?;
    let now = Instant::now();
    let mut list = Vec::with_capacity(conns.len());
    for (i, (id, sock)) in conns.into_iter().enumerate() {
        let sock = match sock {
            Some(s) => {
                s.set_nonblocking(true)
                    .map_err(Error::io("making a socket non-blocking"))?;
                let mut s = TcpStream::from_std(s);
                poll.registry()
                    .register(&mut s, Token(i), Interest::READABLE)
                    .map_err(Error::io("registering a socket with epoll"))?;
                Some(s)
            }
            None => None,
        };
        list.push(Conn {
            id,
            sock,
            state: State::Waiting,
            msg: {
                let mut msg = vec![0; plan.settings.size];
                pattern::fill(id, 0, &mut msg);
                msg
            },
            round: 0,
            filled: 0,
            written: 0,
            received: 0,
            base: 0,
            due: now,
            sent_at: now,
            record: false,
            want_write: false,
            pace: Pace::new(plan, id),
        });
    }
    let mut w = Worker {
        plan,
        slot,
        poll,
        active: list.len(),
        conns: list,
        timers: timer::Schedule::default(),
        tally: Tally::for_plan(plan, slot)?,
        done: 0,
        rbuf: vec![0; READ_BUF],
    };
    w.run_loop()?;
    Ok(w.tally)
}

impl Worker<'_> {
    fn run_loop(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let mut clock = timer::for_plan(self.plan, &self.poll);
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
            if self.active == 0 || self.plan.over(now) {
                break;
            }
            if now.duration_since(last_scan) >= TICK {
                last_scan = now;
                self.expire(now, timeout);
            }
            let next = self.timers.next();
            let end = self.plan.end;
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
                    State::Connecting => self.on_connect(i),
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

    /// Counts what the end of the run cut short and closes everything.
    fn finish(&mut self, now: Instant) {
        let until = self.plan.end.map_or(now, |end| end.min(now));
        let from = self.plan.warmup_end;
        for c in &mut self.conns {
            if c.state == State::Done {
                continue;
            }
            // In the closed loop a request cut off by the end was never
            // late; in the open loop it was due and is owed an answer.
            // So is `--hold`'s one echo per connection.
            let open = self.plan.interval.is_some() || self.plan.settings.hold;
            if open && matches!(c.state, State::Busy | State::Connecting) && c.record {
                self.tally.unfinished += 1;
            }
            self.tally.unfinished += c.pace.missed(self.plan, from, until);
            c.state = State::Done;
            c.sock = None;
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

    /// Starts the request due at `due` on connection `i`, or retires the
    /// connection if the run has no room for it.
    fn begin(&mut self, i: usize, due: Instant, now: Instant) {
        let Some(record) = self.plan.admit(due) else {
            self.retire(i);
            return;
        };
        let c = &mut self.conns[i];
        c.due = due;
        c.sent_at = now;
        c.record = record;
        c.written = 0;
        c.received = 0;
        if c.filled != c.round {
            pattern::advance(&mut c.msg, c.filled, c.round);
            c.filled = c.round;
        }
        if c.sock.is_none() {
            match TcpStream::connect(self.plan.settings.addr) {
                Ok(mut s) => {
                    c.base = 0;
                    if let Err(e) = self.poll.registry().register(
                        &mut s,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.fail(i, Fault::Connect(e));
                        return;
                    }
                    c.sock = Some(s);
                    // The connect ends with writable readiness.
                    c.want_write = true;
                    c.state = State::Connecting;
                }
                Err(e) => self.fail(i, Fault::Connect(e)),
            }
            return;
        }
        c.state = State::Busy;
        self.write_some(i);
    }

    /// `--new-conn`: the connect finished, one way or the other.
    fn on_connect(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(sock) = c.sock.as_ref() else {
            return;
        };
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                self.fail(i, Fault::Connect(e));
                return;
            }
            Ok(None) => {}
        }
        match sock.peer_addr() {
            Ok(_) => {}
            // Not connected yet: a spurious wake-up; the next event tells.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => {
                self.fail(i, Fault::Connect(e));
                return;
            }
        }
        let _ = sock.set_nodelay(true);
        c.state = State::Busy;
        self.write_some(i);
    }

    /// Writes as much of the request as the socket takes.
    fn write_some(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        while c.written < c.msg.len() {
            match sock.write(&c.msg[c.written..]) {
                Ok(0) => {
                    let at = c.base + c.received as u64;
                    self.fail(i, Fault::Closed(at));
                    return;
                }
                Ok(n) => c.written += n,
                // The send buffer is full: the next writable event resumes.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.want_write {
                        c.want_write = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        if let Err(e) = self.poll.registry().reregister(sock, Token(i), interest) {
                            let at = c.base + c.received as u64;
                            self.fail(i, Fault::Io(at, e));
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let at = c.base + c.received as u64;
                    let fault = match e.kind() {
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                            Fault::Reset(at)
                        }
                        _ => Fault::Io(at, e),
                    };
                    self.fail(i, fault);
                    return;
                }
            }
        }
    }

    /// Reads the echo, checks it, and completes the request when it is all in.
    fn read_some(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        loop {
            let n = match sock.read(&mut self.rbuf) {
                Ok(0) => {
                    let at = c.base + c.received as u64;
                    self.fail(i, Fault::Closed(at));
                    return;
                }
                Ok(n) => n,
                // Drained: the next readable edge brings the rest.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let at = c.base + c.received as u64;
                    let fault = if e.kind() == io::ErrorKind::ConnectionReset {
                        Fault::Reset(at)
                    } else {
                        Fault::Io(at, e)
                    };
                    self.fail(i, fault);
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
            if n < self.rbuf.len() {
                // A short read: the socket is drained (edge-triggered).
                return;
            }
        }
    }

    /// The whole echo is back: record it and go on.
    fn complete(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        if c.record {
            self.tally.record(c.due, now);
        }
        self.done += 1;
        c.round += 1;
        c.base += c.msg.len() as u64;
        if self.plan.settings.hold {
            // `--hold`: idle from now on, open until the run ends.
            c.state = State::Waiting;
            return;
        }
        if self.plan.settings.new_conn {
            // Dropping closes it (FIN): everything sent has come back.
            if let Some(mut s) = c.sock.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
        self.next_request(i, now);
    }

    /// Times out requests whose echo is overdue.
    fn expire(&mut self, now: Instant, timeout: std::time::Duration) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if matches!(c.state, State::Busy | State::Connecting)
                && now.duration_since(c.sent_at) >= timeout
            {
                let at = c.base + c.received as u64;
                self.fail(i, Fault::Timeout(at));
            }
        }
    }

    /// Counts and logs a failure; the connection is closed and not reused,
    /// since its stream is no longer in step with the pattern.
    fn fail(&mut self, i: usize, fault: Fault) {
        let c = &mut self.conns[i];
        let id = c.id;
        let line = match fault {
            Fault::Mismatch(at) => {
                self.tally.mismatches += 1;
                format!("mismatch on connection {id} at byte {at}")
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
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
    }
}
