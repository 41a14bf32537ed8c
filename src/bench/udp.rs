//! The UDP worker: one mio loop driving many connected UDP sockets, each
//! with one datagram in flight and a timeout on it.
//!
//! A datagram with no echo within `--timeout` is *lost*, not an error: loss
//! is what a UDP benchmark measures. An echo that comes back after its
//! timeout is recognised by its pattern and set aside as late; anything
//! else that comes back wrong is a mismatch.

use std::io;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::plan::{self, Pace, Plan, TICK};
use super::tally::Tally;
use super::timer;
use crate::error::{Error, Result};
use crate::net::stray::{Recent, Stray};
use crate::net::{pattern, udp_socket};
use crate::sys::stop;

/// Largest datagram read back: any UDP payload fits.
const READ_BUF: usize = 64 * 1024;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Busy,
    Done,
}

/// One socket and its datagram in flight.
struct Conn {
    id: u64,
    sock: UdpSocket,
    state: State,
    msg: Vec<u8>,
    round: u64,
    /// The last rounds and which were answered: a second echo of an
    /// answered round is duplicated, an echo of one that timed out late.
    recent: Recent,
    /// The round whose message `msg` holds.
    filled: u64,
    /// The datagram met a full send buffer; the writable edge resends it.
    unsent: bool,
    due: Instant,
    sent_at: Instant,
    record: bool,
    pace: Pace,
}

struct Worker<'a> {
    plan: &'a Plan,
    slot: usize,
    poll: Poll,
    conns: Vec<Conn>,
    timers: timer::Schedule,
    active: usize,
    tally: Tally,
    /// Recorded requests answered, for the progress line.
    done: u64,
    /// The end of the run has passed: only the datagrams out are awaited.
    draining: bool,
    rbuf: Vec<u8>,
    scratch: Vec<u8>,
}

/// Runs the UDP worker for connections `ids` until the run is over.
pub(crate) fn run(plan: &Plan, slot: usize, ids: Vec<u64>) -> Result<Tally> {
    let poll = Poll::new().map_err(Error::io("creating an epoll instance"))?;
    let now = Instant::now();
    let mut conns = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let std_sock = udp_socket(plan.settings.addr).map_err(Error::io("opening a UDP socket"))?;
        std_sock
            .set_nonblocking(true)
            .map_err(Error::io("making a socket non-blocking"))?;
        let mut sock = UdpSocket::from_std(std_sock);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)
            .map_err(Error::io("registering a socket with epoll"))?;
        conns.push(Conn {
            id,
            sock,
            state: State::Waiting,
            msg: {
                let mut msg = vec![0; plan.settings.size];
                pattern::fill(id, 0, &mut msg);
                msg
            },
            round: 0,
            recent: Recent::default(),
            filled: 0,
            unsent: false,
            due: now,
            sent_at: now,
            record: false,
            pace: Pace::new(plan, id),
        });
    }
    let mut w = Worker {
        plan,
        slot,
        poll,
        active: conns.len(),
        conns,
        timers: timer::Schedule::default(),
        tally: Tally::for_plan(plan, slot)?,
        done: 0,
        draining: false,
        rbuf: vec![0; READ_BUF],
        scratch: Vec::new(),
    };
    w.run_loop()?;
    Ok(w.tally)
}

impl Worker<'_> {
    fn run_loop(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let mut clock = timer::for_loop(self.plan.interval.is_some(), &self.poll);
        let now = Instant::now();
        for i in 0..self.conns.len() {
            self.next_request(i, now);
        }
        let mut last_scan = now;
        loop {
            let now = Instant::now();
            self.tally.tick(self.plan, now);
            while let Some((at, i)) = self.timers.pop_due(now) {
                if self.conns[i].state == State::Waiting {
                    self.begin(i, at, now);
                }
            }
            if self.active == 0 || stop::requested() {
                break;
            }
            if self.plan.ended(now) {
                if !self.draining {
                    // As in the TCP worker: no more sends; the datagrams
                    // out are waited for (or time out as lost).
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
                self.expire(now);
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
            // One clock read for the whole batch, as in the TCP worker.
            let woke = Instant::now();
            for ev in events.iter() {
                let i = ev.token().0;
                if i >= self.conns.len() || self.conns[i].state == State::Done {
                    continue;
                }
                if ev.is_writable() && self.conns[i].unsent {
                    self.send(i);
                }
                if ev.is_readable() || ev.is_error() {
                    self.receive(i, woke);
                }
            }
            self.plan.set_progress(self.slot, self.done);
        }
        let now = Instant::now();
        let until = self.plan.end.map_or(now, |end| end.min(now));
        for c in &mut self.conns {
            if c.state == State::Busy {
                self.tally.unanswered += 1;
            }
            if c.state != State::Done {
                self.tally.unfinished += c.pace.missed(self.plan, self.plan.warmup_end, until);
            }
        }
        self.tally.stopped = Some(until);
        self.plan.set_progress(self.slot, self.done);
        Ok(())
    }

    /// The end of the run: sockets waiting for their next slot send no
    /// more (their slots in the window are unfinished).
    fn stop_waiting(&mut self) {
        let waiting = self.conns.iter().enumerate();
        let waiting = waiting.filter(|(_, c)| c.state == State::Waiting);
        let (unfinished, done) = plan::stop_waiting(self.plan, waiting.map(|(i, c)| (i, &c.pace)));
        self.tally.unfinished += unfinished;
        for i in done {
            self.retire(i);
        }
    }

    fn next_request(&mut self, i: usize, now: Instant) {
        let due = self.conns[i].pace.take(self.plan, now);
        if due <= now {
            self.begin(i, due, now);
        } else {
            self.conns[i].state = State::Waiting;
            self.timers.push(due, i);
        }
    }

    fn begin(&mut self, i: usize, due: Instant, now: Instant) {
        let Some(record) = self.plan.admit(due, now) else {
            if let Some(end) = self.plan.end.filter(|_| self.plan.ended(now)) {
                let c = &self.conns[i];
                self.tally.unfinished +=
                    self.plan.unsent(due) + c.pace.missed(self.plan, self.plan.warmup_end, end);
            }
            self.retire(i);
            return;
        };
        let c = &mut self.conns[i];
        c.due = due;
        c.sent_at = now;
        c.record = record;
        c.state = State::Busy;
        if c.filled != c.round {
            pattern::advance(&mut c.msg, c.filled, c.round);
            c.filled = c.round;
        }
        self.send(i);
    }

    fn send(&mut self, i: usize) {
        let c = &mut self.conns[i];
        loop {
            match c.sock.send(&c.msg) {
                Ok(_) => {
                    if c.unsent {
                        c.unsent = false;
                        let _ = self.poll.registry().reregister(
                            &mut c.sock,
                            Token(i),
                            Interest::READABLE,
                        );
                    }
                    return;
                }
                // The send buffer is full: the writable edge resends.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.unsent {
                        c.unsent = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        if let Err(e) =
                            self.poll
                                .registry()
                                .reregister(&mut c.sock, Token(i), interest)
                        {
                            self.fail(i, e);
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(i, e);
                    return;
                }
            }
        }
    }

    /// Takes every datagram waiting on socket `i`. `now` is when the batch
    /// woke; after a request completes, its successor is sent at once, so
    /// the clock is read again: an echo of that one, already queued, must
    /// not be dated before it was sent.
    fn receive(&mut self, i: usize, mut now: Instant) {
        loop {
            if self.conns[i].state == State::Done {
                return;
            }
            let n = match self.conns[i].sock.recv(&mut self.rbuf) {
                Ok(n) => n,
                // Drained: the next readable edge brings more.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(i, e);
                    return;
                }
            };
            let round = self.conns[i].round;
            self.judge(i, n, now);
            if self.conns[i].round != round {
                now = Instant::now();
            }
        }
    }

    /// Decides what the datagram of `n` bytes in `rbuf` is.
    fn judge(&mut self, i: usize, n: usize, now: Instant) {
        let c = &self.conns[i];
        let got = &self.rbuf[..n];
        if c.state == State::Busy && got == &c.msg[..] {
            self.complete(i, true, now);
            return;
        }
        let size = c.msg.len();
        let earlier = (n == size)
            .then(|| {
                Recent::earlier(c.round)
                    .find(|r| pattern::is_message(c.id, *r, got, &mut self.scratch))
            })
            .flatten();
        if let Some(r) = earlier {
            match c.recent.stray(r) {
                // Its request already timed out and was counted as lost.
                Stray::Late => self.tally.late += 1,
                Stray::Duplicated => self.tally.duplicated += 1,
            }
            return;
        }
        let id = c.id;
        let line = match pattern::first_difference(&c.msg, got) {
            Some(at) => format!("mismatch on connection {id} at byte {at}"),
            None => format!(
                "mismatch on connection {id} at byte {}: datagram of {n} bytes, {size} sent",
                n.min(size)
            ),
        };
        self.tally.errors += 1;
        self.tally.mismatches += 1;
        self.plan.log_error(line);
        if self.conns[i].state == State::Busy {
            self.complete(i, false, now);
        }
    }

    /// The request is over (echoed, mismatched or lost): record it if it was
    /// a good echo, and go on with the next one.
    fn complete(&mut self, i: usize, good: bool, now: Instant) {
        let c = &mut self.conns[i];
        if good && c.record {
            self.tally.record(c.due, now);
            self.done += 1;
        }
        c.recent.ended(c.round, good);
        c.round += 1;
        c.unsent = false;
        self.next_request(i, now);
    }

    /// Datagrams with no echo within the timeout are lost.
    fn expire(&mut self, now: Instant) {
        let timeout: Duration = self.plan.settings.timeout;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state == State::Busy && now.duration_since(c.sent_at) >= timeout {
                if c.record {
                    self.tally.lost += 1;
                }
                self.complete(i, false, now);
            }
        }
    }

    /// A socket error (ICMP port unreachable shows as "refused"): counted,
    /// and the socket leaves the run.
    fn fail(&mut self, i: usize, e: io::Error) {
        let id = self.conns[i].id;
        let addr = self.plan.settings.addr;
        let line = if e.kind() == io::ErrorKind::ConnectionRefused {
            format!("connection {id}: refused by {addr} (nothing listening on that UDP port)")
        } else {
            format!("connection {id}: {e}")
        };
        self.tally.errors += 1;
        self.plan.log_error(line);
        self.retire(i);
    }

    fn retire(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state != State::Done {
            c.state = State::Done;
            self.active -= 1;
            let _ = self.poll.registry().deregister(&mut c.sock);
        }
    }
}
