//! A faulted plain-TCP connection in the `epoll` model, served by the
//! worker's event loop like any other connection, not on a thread of its
//! own: the connection core keeps the bytes, the order and the deadlines,
//! the fault shaper ([`Shaper`]) decides what of the kept echo may go now,
//! when the next may, and how the connection ends, and the loop waits
//! between them on the socket's readiness hints and one timer entry at the
//! earliest of their times ([`Faults::deadline`]). The decisions are the
//! ones every other model applies (`blocking/faulted.rs`); only the waiting
//! is the event loop's.
//!
//! The state lives in a box that only a faulted connection has, so every
//! other connection keeps its size and its path through the loop. Latency
//! is held from the bytes' arrival, the kernel's receive time
//! ([`faulted::recv_at`]). `close-after` sends our FIN, then reads and drops
//! what the client still sends (the connection is draining) until its FIN
//! or [`LINGER_AFTER_CLOSE`], so the close finds an empty receive queue.
//! A faulted TLS connection still goes to a thread of its own
//! ([`faulted::spawn`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use netecho_core::fault::EndAfter;
use netecho_core::fault::tcp::{ReadGate, Shaper, Verdict};
use nix::errno::Errno;
use socket2::SockRef;

use crate::serve::admission::Permit;
use crate::serve::blocking::faulted::{self, Faulted, LINGER_AFTER_CLOSE};
use crate::serve::contract::{Conn, End, Next, Store, Timeouts};
use crate::serve::ctx::Ctx;
use crate::serve::service::faults;
use crate::serve::transport::splice::{Hints, Kept, Piece};

/// Steps one connection may take per turn before the others get theirs.
const BUDGET: usize = 16;

/// What a faulted connection carries besides the core: the shaper and the
/// times it waits for.
pub(super) struct Faults {
    /// For the fault counters and logs.
    peer: SocketAddr,
    /// The fault decisions: what may be sent, when, and how it ends.
    shaper: Shaper,
    /// When the socket was last found empty: nothing read later arrived
    /// before it.
    empty_at: Instant,
    /// When the shaper lets the next thing happen (a held echo, the next
    /// slice, the read gate opening); while draining, when the drain ends.
    /// Cleared when its timer comes due.
    wake: Option<Instant>,
    /// `close-after` sent our FIN: what the client sends is dropped until
    /// its FIN or this time.
    draining: Option<Instant>,
    /// `reset-after` came: the reset waits until the client acknowledged
    /// the echo, or this time ([`faulted::RESET_AWAITS_ACK`]).
    resetting: Option<Instant>,
}

/// What the connection needs after a turn.
pub(super) enum Turn {
    /// Nothing until its next event or its timer.
    Wait,
    /// It used its budget with work left.
    Again,
    /// Close it (after a reset, with SO_LINGER 0 set).
    Close(End),
}

impl Faults {
    /// The state of a connection accepted now with the faults of `f`;
    /// asks the kernel to time its arrivals.
    pub(super) fn new(stream: &TcpStream, f: Faulted) -> Faults {
        faulted::stamp_arrivals(stream);
        let now = Instant::now();
        Faults {
            peer: f.peer,
            shaper: Shaper::new(now, f.effects, f.seed),
            empty_at: now,
            wake: None,
            draining: None,
            resetting: None,
        }
    }

    /// When to look at it again: the earliest of the core's deadline and
    /// the shaper's time; while draining or resetting, only its own time.
    pub(super) fn deadline(&self, core: &Conn<Kept>, t: &Timeouts) -> Option<Instant> {
        if self.draining.is_some() || self.resetting.is_some() {
            return self.wake;
        }
        let at = core.deadline(t).map(|(at, _)| at);
        match (at, self.wake) {
            (Some(a), Some(w)) => Some(a.min(w)),
            (a, w) => a.or(w),
        }
    }

    /// A timer came due: true if the core closes the connection now (never
    /// while draining, which ends as a FIN, or resetting, which ends as a
    /// reset).
    pub(super) fn on_timer(&mut self, core: &mut Conn<Kept>, now: Instant, t: &Timeouts) -> bool {
        self.draining.is_none() && self.resetting.is_none() && core.on_timer(now, t)
    }

    /// True (once) when the shaper's time has come: the connection is to be
    /// served again although no event says so.
    pub(super) fn take_due(&mut self, now: Instant) -> bool {
        let due = self.wake.is_some_and(|w| w <= now);
        if due {
            self.wake = None;
        }
        due
    }
}

/// One turn of a faulted connection: performs what the core and the shaper
/// ask — write the echo the shaper lets go, read while the gate is open,
/// end as a fault says — until the socket would block, a time must pass,
/// the budget is used, or the connection is to close. `hints` are the
/// loop's edge-triggered readiness hints; `permit` is given back before the
/// client can see a fault's end.
pub(super) fn turn(
    fs: &mut Faults,
    core: &mut Conn<Kept>,
    stream: &mut TcpStream,
    hints: Hints<'_>,
    permit: &mut Permit,
    buf: &mut [u8],
    ctx: &Ctx,
) -> Turn {
    let Hints { readable, writable } = hints;
    if let Some(until) = fs.draining {
        return drain(stream, buf, readable, until);
    }
    if let Some(until) = fs.resetting {
        return reset_when_acked(fs, stream, until);
    }
    fs.wake = None;
    for _ in 0..BUDGET {
        faults::count(ctx.stats, fs.peer, &fs.shaper.applied());
        let now = Instant::now();
        let read = match core.next() {
            Next::Close(end) => return Turn::Close(end),
            // Our FIN: the close that follows at once sends it after the
            // last byte, as for every epoll connection.
            Next::ShutWrite => {
                core.on_shut(Ok(()));
                continue;
            }
            Next::Io { read, .. } => read,
        };
        let mut wake: Option<Instant> = None;
        let mut soonest = |at: Instant| wake = Some(wake.map_or(at, |w| w.min(at)));
        match fs.shaper.verdict(now, core.store().len()) {
            Verdict::End(EndAfter::Reset) => {
                faults::count(ctx.stats, fs.peer, &fs.shaper.applied());
                permit.release();
                let until = now + faulted::RESET_AWAITS_ACK;
                fs.resetting = Some(until);
                return reset_when_acked(fs, stream, until);
            }
            Verdict::End(EndAfter::Close) => {
                faults::count(ctx.stats, fs.peer, &fs.shaper.applied());
                permit.release();
                match SockRef::from(&*stream).shutdown(Shutdown::Write) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Turn::Close(End::from_io(&e)),
                }
                let until = now + LINGER_AFTER_CLOSE;
                fs.draining = Some(until);
                fs.wake = Some(until);
                return drain(stream, buf, readable, until);
            }
            // Neither read nor write: the core's deadline ends it.
            Verdict::End(EndAfter::Stall) | Verdict::Idle => {}
            Verdict::Wait(at) => soonest(at),
            // Without room, a writable edge (or the core's stall deadline)
            // comes first.
            Verdict::Send(n) if *writable => {
                match send(stream, &core.store().as_slice()[..n], writable) {
                    Ok(0) => {}
                    Ok(w) => {
                        let now = Instant::now();
                        core.on_sent(now, w);
                        fs.shaper.on_sent(now, w);
                        ctx.stats.bytes.add(w as u64);
                        continue;
                    }
                    Err(e) => {
                        core.on_error(&e);
                        continue;
                    }
                }
            }
            Verdict::Send(_) => {}
        }
        if read > 0 {
            match fs.shaper.read_gate(now) {
                ReadGate::Open if *readable => {
                    let want = read.min(buf.len());
                    match faulted::recv_at(stream.as_raw_fd(), &mut buf[..want], fs.empty_at) {
                        // The client's FIN: what is kept still goes out.
                        Ok((0, _)) => {
                            core.on_fin();
                            continue;
                        }
                        Ok((n, arrived)) => {
                            for at in fs.shaper.on_read(arrived, &mut buf[..n]) {
                                tracing::debug!(peer = %fs.peer, byte = at, "corrupted");
                            }
                            core.on_read(Instant::now(), Piece::Bytes(&buf[..n]), 0);
                            continue;
                        }
                        // The receive queue is empty: wait for the next edge.
                        Err(Errno::EAGAIN) => {
                            fs.empty_at = now;
                            *readable = false;
                        }
                        // A signal: read again.
                        Err(Errno::EINTR) => continue,
                        Err(e) => {
                            core.on_error(&io::Error::from(e));
                            continue;
                        }
                    }
                }
                // Nothing to read until the next readable edge.
                ReadGate::Open => {}
                ReadGate::At(at) => soonest(at),
                ReadGate::Shut => {}
            }
        }
        fs.wake = wake;
        return Turn::Wait;
    }
    Turn::Again
}

/// `reset-after`'s end: the reset once the client acknowledged the echo
/// (a reset throws away what the send queue still holds) or `until` has
/// passed; until then the connection looks again every
/// [`faulted::RESET_ACK_POLL`].
fn reset_when_acked(fs: &mut Faults, stream: &TcpStream, until: Instant) -> Turn {
    let now = Instant::now();
    if now < until && !faulted::all_acked(stream.as_fd()) {
        fs.wake = Some((now + faulted::RESET_ACK_POLL).min(until));
        return Turn::Wait;
    }
    // SO_LINGER 0: the close sends RST, not FIN.
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
    Turn::Close(End::Reset)
}

/// Reads and drops what the client still sends after our FIN: the end is
/// a FIN once it sends its own, fails, or `until` has passed.
fn drain(stream: &mut TcpStream, buf: &mut [u8], readable: &mut bool, until: Instant) -> Turn {
    if Instant::now() >= until {
        return Turn::Close(End::Fin);
    }
    for _ in 0..BUDGET {
        if !*readable {
            return Turn::Wait;
        }
        match stream.read(buf) {
            Ok(0) => return Turn::Close(End::Fin),
            Ok(_) => {}
            // Nothing more yet: wait for the next readable edge.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
            // A signal: read again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Our FIN is out either way.
            Err(_) => return Turn::Close(End::Fin),
        }
    }
    Turn::Again
}

/// One non-blocking write of `data`: how much the kernel took (0 when its
/// buffer is full). A short write or a full buffer clears `writable`: a
/// writable edge comes when it drains.
fn send(stream: &mut TcpStream, data: &[u8], writable: &mut bool) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            // A TCP send never takes 0 of a non-empty buffer: it is dead.
            Ok(0) if !data.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if n < data.len() {
                    *writable = false;
                }
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return Ok(0);
            }
            // A signal: write again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
