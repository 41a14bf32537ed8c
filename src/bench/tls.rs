//! `bench --tls`: the TCP worker's loop with a rustls connection on each
//! socket, every plaintext byte checked the same way, and the handshakes
//! timed in a histogram of their own.
//!
//! - Closed or open loop on kept connections: their handshakes are made at
//!   setup, before the clock starts ([`handshake_all`]), and timed there.
//! - `--new-conn`: connect, full handshake, one message, close_notify and
//!   close, per request; `--tls-resume` the same with the session tickets
//!   rustls keeps (one cache shared by all workers), so after the first
//!   handshake they are resumed ones.
//!
//! Echo latency and handshake latency are apart: a request that needs a
//! handshake counts its echo from the handshake's end, and the handshake
//! from when the request was due (connect included) to its end.
//!
//! Kept as its own worker rather than a layer inside [`super::tcp`]: a TLS
//! connection is one state machine for both directions, so the reads and
//! writes do not map onto the TCP worker's one-syscall-each fast path.

use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::{ClientConnection, HandshakeKind};
use serde::Serialize;

use super::plan::{MAX_LATENCY_NS, Pace, Plan, SIGFIG, TICK, Tally};
use super::report::{latency_line, micros, round3, thousands};
use super::timer;
use crate::error::{Error, Result};
use crate::net::pattern;
use crate::net::tls::Connector;

/// Bytes read per call, as the TCP worker.
const READ_BUF: usize = 64 * 1024;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// What the TLS workers share, in [`super::plan::Settings`].
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) connector: Connector,
    /// Kept connections' TLS sessions, handshaken at setup, by connection id.
    sessions: Mutex<Vec<Option<ClientConnection>>>,
    /// The setup handshakes' latencies (kept connections only).
    setup: Histogram<u64>,
}

impl Setup {
    pub(crate) fn new(
        connector: Connector,
        sessions: Vec<Option<ClientConnection>>,
        setup: Histogram<u64>,
    ) -> Setup {
        Setup {
            connector,
            sessions: Mutex::new(sessions),
            setup,
        }
    }

    fn take_session(&self, id: u64) -> Option<ClientConnection> {
        let mut all = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        usize::try_from(id)
            .ok()
            .and_then(|i| all.get_mut(i))
            .and_then(Option::take)
    }
}

/// An empty histogram of handshake latencies, in nanoseconds.
pub(crate) fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGFIG).map_err(|e| Error::Io {
        what: "creating the handshake histogram",
        source: io::Error::other(e.to_string()),
    })
}

/// Handshakes on the kept connections, one after another before the run
/// (as their connects are): the first failure is the run's one-line error.
pub(crate) fn handshake_all(
    connector: &Connector,
    streams: &mut [std::net::TcpStream],
    timeout: std::time::Duration,
) -> Result<(Vec<Option<ClientConnection>>, Histogram<u64>)> {
    let mut hist = histogram()?;
    let mut sessions = Vec::with_capacity(streams.len());
    for s in streams.iter_mut() {
        let (mut conn, took) = connector.handshake(s, timeout)?;
        conn.set_buffer_limit(None);
        hist.saturating_record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1));
        sessions.push(Some(conn));
    }
    Ok((sessions, hist))
}

/// The handshake figures of a run, in `--json` beside the echo's.
#[derive(Debug, Serialize)]
pub(crate) struct Figures {
    /// Handshakes timed: with --new-conn those of the measured window,
    /// else the kept connections' at setup.
    pub(crate) handshakes: u64,
    /// Of those, resumed ones (`--tls-resume`).
    pub(crate) handshakes_resumed: u64,
    /// Handshakes per second in the measured window (0 on kept connections).
    pub(crate) handshake_rps: f64,
    pub(crate) handshake_p50_us: f64,
    pub(crate) handshake_p90_us: f64,
    pub(crate) handshake_p99_us: f64,
    pub(crate) handshake_p999_us: f64,
    pub(crate) handshake_max_us: f64,
    pub(crate) handshake_mean_us: f64,
}

/// The handshake figures from the merged tally (and the setup handshakes).
pub(crate) fn figures(plan: &Plan, t: &Tally, duration_s: f64) -> Option<Figures> {
    let setup = plan.settings.tls.as_ref()?;
    let mut hist = t.handshakes.clone();
    let _ = hist.add(&setup.setup);
    let n = hist.len();
    let q = |quantile: f64| {
        if n == 0 {
            0.0
        } else {
            micros(hist.value_at_quantile(quantile))
        }
    };
    let in_window = t.handshakes.len();
    Some(Figures {
        handshakes: n,
        handshakes_resumed: t.resumed,
        handshake_rps: if duration_s > 0.0 && plan.settings.new_conn {
            round3(in_window as f64 / duration_s)
        } else {
            0.0
        },
        handshake_p50_us: q(0.50),
        handshake_p90_us: q(0.90),
        handshake_p99_us: q(0.99),
        handshake_p999_us: q(0.999),
        handshake_max_us: if n == 0 { 0.0 } else { micros(hist.max()) },
        handshake_mean_us: if n == 0 {
            0.0
        } else {
            round3(hist.mean() / 1e3)
        },
    })
}

impl Figures {
    /// The summary's handshake lines.
    pub(crate) fn human(&self) -> String {
        let line = latency_line(
            self.handshake_p50_us,
            self.handshake_p90_us,
            self.handshake_p99_us,
            self.handshake_p999_us,
            self.handshake_max_us,
            self.handshake_mean_us,
        );
        let mut out = line.replacen("  latency  ", "  handshake", 1);
        out += "\n";
        out += &format!("  tls       {} handshakes", thousands(self.handshakes));
        if self.handshake_rps > 0.0 {
            out += &format!(" ({}/s)", thousands(self.handshake_rps.round() as u64));
        } else {
            out += " (at setup)";
        }
        out += &format!(", {} resumed\n", thousands(self.handshakes_resumed));
        out
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its next due time (open loop) in the timer heap.
    Waiting,
    /// `--new-conn`: the non-blocking connect is in progress.
    Connecting,
    /// `--new-conn`: the TLS handshake is in progress.
    Handshaking,
    /// A request is being written or its echo read.
    Busy,
    /// Finished: the run is over for it, or it failed.
    Done,
}

/// One connection and its request in flight.
struct Conn {
    id: u64,
    sock: Option<TcpStream>,
    tls: Option<ClientConnection>,
    state: State,
    /// The request in flight: also the echo expected back.
    msg: Vec<u8>,
    round: u64,
    filled: u64,
    received: usize,
    /// Plaintext bytes echoed on this connection before the current message.
    base: u64,
    /// When the request was due: the handshake (if any) counts from here.
    due: Instant,
    /// When the echo's latency starts: `due`, or the handshake's end.
    echo_from: Instant,
    /// When it was actually started: its timeout counts from here.
    sent_at: Instant,
    record: bool,
    pace: Pace,
}

/// What went wrong on a connection, for the error line.
enum Fault {
    Mismatch(u64),
    Closed(u64),
    Reset(u64),
    Timeout(u64),
    Connect(io::Error),
    Tls(u64, rustls::Error),
    Io(u64, io::Error),
}

struct Worker<'a> {
    plan: &'a Plan,
    setup: &'a Setup,
    slot: usize,
    poll: Poll,
    conns: Vec<Conn>,
    timers: timer::Schedule,
    active: usize,
    tally: Tally,
    done: u64,
    rbuf: Vec<u8>,
}

/// Runs the TLS worker for connections `conns` (`(id, socket)`; the socket
/// is `None` with `--new-conn`; kept ones come with their session in
/// [`Setup`]) until the run is over.
pub(crate) fn run(
    plan: &Plan,
    slot: usize,
    conns: Vec<(u64, Option<std::net::TcpStream>)>,
) -> Result<Tally> {
    let Some(setup) = plan.settings.tls.as_deref() else {
        return Err(Error::InvalidOption(
            "bench: TLS worker without --tls".into(),
        ));
    };
    let poll = Poll::new().map_err(Error::io("creating an epoll instance"))?;
    let now = Instant::now();
    let mut list = Vec::with_capacity(conns.len());
    for (i, (id, sock)) in conns.into_iter().enumerate() {
        let (sock, tls) = match sock {
            Some(s) => {
                s.set_nonblocking(true)
                    .map_err(Error::io("making a socket non-blocking"))?;
                let mut s = TcpStream::from_std(s);
                poll.registry()
                    .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
                    .map_err(Error::io("registering a socket with epoll"))?;
                (Some(s), setup.take_session(id))
            }
            None => (None, None),
        };
        let mut msg = vec![0; plan.settings.size];
        pattern::fill(id, 0, &mut msg);
        list.push(Conn {
            id,
            sock,
            tls,
            state: State::Waiting,
            msg,
            round: 0,
            filled: 0,
            received: 0,
            base: 0,
            due: now,
            echo_from: now,
            sent_at: now,
            record: false,
            pace: Pace::new(plan, id),
        });
    }
    let mut w = Worker {
        plan,
        setup,
        slot,
        poll,
        active: list.len(),
        conns: list,
        timers: timer::Schedule::default(),
        tally: Tally::new()?,
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
            while let Some((at, i)) = self.timers.pop_due(now) {
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
            if !timer::poll_until(
                &mut self.poll,
                &mut events,
                clock.as_mut(),
                next,
                self.plan.end,
                now,
                TICK,
            )? {
                continue;
            }
            let woke = Instant::now();
            for ev in events.iter() {
                let i = ev.token().0;
                match self.conns.get(i).map(|c| c.state) {
                    Some(State::Connecting) => self.on_connect(i, woke),
                    Some(State::Handshaking | State::Busy) => self.drive(i, woke),
                    // Readiness of an idle socket: read with the next request.
                    _ => {}
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
        let open = self.plan.interval.is_some();
        for c in &mut self.conns {
            if c.state == State::Done {
                continue;
            }
            if open
                && matches!(
                    c.state,
                    State::Busy | State::Connecting | State::Handshaking
                )
                && c.record
            {
                self.tally.unfinished += 1;
            }
            self.tally.unfinished += c.pace.missed(self.plan, from, until);
            c.state = State::Done;
            close(c);
        }
        self.tally.stopped = Some(until);
        self.plan.set_progress(self.slot, self.done);
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

    /// Starts the request due at `due` on connection `i` (connecting first
    /// with `--new-conn`), or retires the connection if the run is over.
    fn begin(&mut self, i: usize, due: Instant, now: Instant) {
        let Some(record) = self.plan.admit(due) else {
            self.retire(i);
            return;
        };
        let c = &mut self.conns[i];
        c.due = due;
        c.echo_from = due;
        c.sent_at = now;
        c.record = record;
        c.received = 0;
        if c.filled != c.round {
            pattern::advance(&mut c.msg, c.filled, c.round);
            c.filled = c.round;
        }
        if c.sock.is_none() {
            let tls = match self.setup.connector.start() {
                Ok(mut t) => {
                    t.set_buffer_limit(None);
                    t
                }
                Err(e) => {
                    self.fail(i, Fault::Tls(0, rustls::Error::General(e.to_string())));
                    return;
                }
            };
            match TcpStream::connect(self.plan.settings.addr) {
                Ok(mut s) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut s,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.fail(i, Fault::Connect(e));
                        return;
                    }
                    let c = &mut self.conns[i];
                    c.base = 0;
                    c.sock = Some(s);
                    c.tls = Some(tls);
                    c.state = State::Connecting;
                }
                Err(e) => self.fail(i, Fault::Connect(e)),
            }
            return;
        }
        c.state = State::Busy;
        self.send_message(i);
        self.drive(i, now);
    }

    /// `--new-conn`: the connect finished, one way or the other; on
    /// success the ClientHello goes out.
    fn on_connect(&mut self, i: usize, now: Instant) {
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
        c.state = State::Handshaking;
        self.drive(i, now);
    }

    /// Hands the whole message to rustls (its buffer limit is off).
    fn send_message(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(tls) = c.tls.as_mut()
            && let Err(e) = tls.writer().write_all(&c.msg)
        {
            let at = c.base;
            self.fail(i, Fault::Io(at, e));
        }
    }

    /// Moves connection `i` on as far as the socket allows: records out,
    /// records in, the handshake's end, the echo checked.
    fn drive(&mut self, i: usize, now: Instant) {
        loop {
            if !self.flush(i) {
                return;
            }
            let c = &mut self.conns[i];
            let (Some(sock), Some(tls)) = (c.sock.as_mut(), c.tls.as_mut()) else {
                return;
            };
            let at = c.base + c.received as u64;
            let eof = match tls.read_tls(sock) {
                Ok(0) => true,
                Ok(_) => false,
                // Drained: the next readable edge brings more.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Reading may have queued records (a key update).
                    if tls.wants_write() {
                        let _ = self.flush(i);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.fail(i, Fault::Reset(at));
                    return;
                }
                Err(e) => {
                    self.fail(i, Fault::Io(at, e));
                    return;
                }
            };
            if let Err(e) = tls.process_new_packets() {
                let _ = tls.write_tls(sock);
                self.fail(i, Fault::Tls(at, e));
                return;
            }
            if c.state == State::Handshaking && !tls.is_handshaking() {
                let resumed = tls.handshake_kind() == Some(HandshakeKind::Resumed);
                if c.record {
                    let ns = u64::try_from(now.saturating_duration_since(c.due).as_nanos())
                        .unwrap_or(u64::MAX);
                    self.tally.handshakes.saturating_record(ns.max(1));
                    if resumed {
                        self.tally.resumed += 1;
                    }
                }
                c.echo_from = now;
                c.state = State::Busy;
                self.send_message(i);
                continue;
            }
            if self.conns[i].state == State::Busy && !self.take_echo(i, now) {
                return;
            }
            if eof {
                let c = &self.conns[i];
                if c.state != State::Done {
                    let at = c.base + c.received as u64;
                    self.fail(i, Fault::Closed(at));
                }
                return;
            }
        }
    }

    /// Writes queued records until the socket is full; false if the
    /// connection failed.
    fn flush(&mut self, i: usize) -> bool {
        let c = &mut self.conns[i];
        let (Some(sock), Some(tls)) = (c.sock.as_mut(), c.tls.as_mut()) else {
            return false;
        };
        while tls.wants_write() {
            match tls.write_tls(sock) {
                Ok(_) => {}
                // The send buffer is full: a writable event resumes.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
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
                    return false;
                }
            }
        }
        true
    }

    /// Checks the plaintext rustls has decrypted against the message;
    /// false once the connection is done with (completed or failed).
    fn take_echo(&mut self, i: usize, now: Instant) -> bool {
        loop {
            let c = &mut self.conns[i];
            let Some(tls) = c.tls.as_mut() else {
                return false;
            };
            let at = c.base + c.received as u64;
            let n = match tls.reader().read(&mut self.rbuf) {
                // close_notify before the whole echo.
                Ok(0) => {
                    self.fail(i, Fault::Closed(at));
                    return false;
                }
                Ok(n) => n,
                // No more plaintext until more records come.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.fail(i, Fault::Closed(at));
                    return false;
                }
                Err(e) => {
                    self.fail(i, Fault::Io(at, e));
                    return false;
                }
            };
            let want = &c.msg[c.received..];
            if let Some(off) = pattern::first_difference(want, &self.rbuf[..n]) {
                self.fail(i, Fault::Mismatch(at + off as u64));
                return false;
            }
            if n > want.len() {
                let at = c.base + c.msg.len() as u64;
                self.fail(i, Fault::Mismatch(at));
                return false;
            }
            c.received += n;
            if c.received == c.msg.len() {
                self.complete(i, now);
                return false;
            }
        }
    }

    /// The whole echo is back: record it and go on.
    fn complete(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        if c.record {
            self.tally.record(c.echo_from, now);
        }
        self.done += 1;
        c.round += 1;
        c.base += c.msg.len() as u64;
        if self.plan.settings.new_conn {
            // close_notify and FIN: everything sent has come back.
            if let Some(mut s) = c.sock.take() {
                if let Some(mut tls) = c.tls.take() {
                    tls.send_close_notify();
                    let _ = tls.write_tls(&mut s);
                }
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
        self.next_request(i, now);
    }

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

    fn fail(&mut self, i: usize, fault: Fault) {
        let c = &mut self.conns[i];
        let id = c.id;
        let handshaking = matches!(c.state, State::Handshaking | State::Connecting);
        let line = match fault {
            Fault::Mismatch(at) => {
                self.tally.mismatches += 1;
                format!("mismatch on connection {id} at byte {at}")
            }
            Fault::Closed(_) if handshaking => {
                format!("connection {id} closed by the server during the TLS handshake")
            }
            Fault::Closed(at) => {
                format!("connection {id} closed by the server at byte {at}, echo incomplete")
            }
            Fault::Reset(at) => format!("connection {id} reset by the server at byte {at}"),
            Fault::Timeout(at) => format!(
                "no echo on connection {id} at byte {at} for {} s",
                self.plan.settings.timeout.as_secs_f64()
            ),
            Fault::Connect(e) => format!(
                "connection {id}: cannot connect to {}: {e}",
                self.plan.settings.addr
            ),
            Fault::Tls(_, e) if handshaking => {
                format!("connection {id}: TLS handshake failed: {e}")
            }
            Fault::Tls(at, e) => format!("connection {id} at byte {at}: TLS error: {e}"),
            Fault::Io(at, e) => format!("connection {id} at byte {at}: {e}"),
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
        }
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.tls = None;
    }
}

/// Ends a kept connection at the end of the run: close_notify, then close.
fn close(c: &mut Conn) {
    if let (Some(mut s), Some(mut tls)) = (c.sock.take(), c.tls.take()) {
        tls.send_close_notify();
        let _ = tls.write_tls(&mut s);
    }
}
