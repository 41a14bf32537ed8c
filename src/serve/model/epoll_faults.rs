//! A faulted plain-TCP connection in the `epoll` model, served by the
//! worker's event loop like any other connection, not on a thread of its
//! own. What to do next is [`Step`]'s to say, as in every model
//! (`blocking/faulted.rs`); this turn only performs it on the socket, on
//! the loop's edge-triggered readiness hints, and leaves one time to wait
//! for ([`Faults::deadline`]: a timer entry of the loop; epoll_wait rounds
//! a wake-up up to the next millisecond).
//!
//! The state lives in a box that only a faulted connection has, so every
//! other connection keeps its size and its path through the loop. Latency
//! is held from the bytes' arrival, the kernel's receive time
//! ([`faulted::recv_at`]). A fault's end ([`Ending`]: the reset once the
//! client acknowledged the echo, or our FIN and then a drain) is a state of
//! the loop too, woken by its readable edges and its timer. A faulted TLS
//! connection still goes to a thread of its own ([`faulted::spawn`]).

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use mio::net::TcpStream;
use netecho_core::fault::tcp::Shaper;
use nix::errno::Errno;

use crate::serve::admission::Permit;
use crate::serve::blocking::faulted::{self, Action, Ending, Faulted, Finish, Ready, Step};
use crate::serve::contract::{Conn, End, Timeouts};
use crate::serve::model::edge::write_some;
use crate::serve::service::stats::Stats;
use crate::serve::transport::splice::{Hints, Kept};

/// Steps one connection may take per turn before the others get theirs.
const BUDGET: usize = 16;

/// What a faulted connection carries besides the core.
pub(super) struct Faults {
    /// The fault decisions joined with the core's.
    step: Step,
    /// A fault's end, once it came: from then on the core is done with.
    ending: Option<Ending>,
    /// When the last turn left it waiting for a time (a held echo, the
    /// next slice, the read gate, the next look at the send queue, the
    /// drain's end). Cleared when its timer comes due.
    wake: Option<Instant>,
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
    pub(super) fn new(stream: &TcpStream, f: Faulted, stats: &'static Stats) -> Faults {
        faulted::stamp_arrivals(stream);
        let now = Instant::now();
        let shaper = Shaper::new(now, f.effects, f.seed);
        Faults {
            step: Step::new(now, f.peer, shaper, stats),
            ending: None,
            wake: None,
        }
    }

    /// When to look at it again: the earliest of the core's deadline and
    /// the time it waits for; once a fault ends it, only the latter.
    pub(super) fn deadline(&self, core: &Conn<Kept>, t: &Timeouts) -> Option<Instant> {
        if self.ending.is_some() {
            return self.wake;
        }
        let at = core.deadline(t).map(|(at, _)| at);
        match (at, self.wake) {
            (Some(a), Some(w)) => Some(a.min(w)),
            (a, w) => a.or(w),
        }
    }

    /// A timer came due: true if the core closes the connection now (never
    /// once a fault ends it: the end keeps its own times).
    pub(super) fn on_timer(&mut self, core: &mut Conn<Kept>, now: Instant, t: &Timeouts) -> bool {
        self.ending.is_none() && core.on_timer(now, t)
    }

    /// True (once) when the time it waits for has come: the connection is
    /// to be served again although no event says so.
    pub(super) fn take_due(&mut self, now: Instant) -> bool {
        let due = self.wake.is_some_and(|w| w <= now);
        if due {
            self.wake = None;
        }
        due
    }
}

/// One turn of a faulted connection: performs what [`Step`] (then the
/// fault's [`Ending`]) asks until the socket would block, a time must pass,
/// the budget is used, or the connection is to close. `hints` are the
/// loop's edge-triggered readiness hints; `permit` is given back before the
/// client can see the end ([`Action::frees`]).
pub(super) fn turn(
    fs: &mut Faults,
    core: &mut Conn<Kept>,
    stream: &mut TcpStream,
    hints: Hints<'_>,
    permit: &mut Permit,
    buf: &mut [u8],
    t: &Timeouts,
) -> Turn {
    let Hints { readable, writable } = hints;
    fs.wake = None;
    for _ in 0..BUDGET {
        let now = Instant::now();
        if let Some(e) = fs.ending.as_mut() {
            match e.next(now, *readable) {
                // The next readable edge or the timer.
                Finish::Wait { until, .. } => {
                    fs.wake = Some(until);
                    return Turn::Wait;
                }
                f => {
                    let sock: &TcpStream = stream;
                    let mut discard = || (&*sock).read(buf);
                    if let Some(end) = faulted::finish(f, e, sock.as_fd(), readable, &mut discard) {
                        return Turn::Close(end);
                    }
                }
            }
            continue;
        }
        let ready = Ready {
            read: *readable,
            write: *writable,
        };
        let action = fs.step.next(core, t, now, ready);
        if action.frees() {
            permit.release();
        }
        match action {
            Action::Close(end) => return Turn::Close(end),
            Action::End(e) => fs.ending = Some(e),
            // Our FIN: the close that follows at once sends it after the
            // last byte, as for every epoll connection.
            Action::ShutWrite => core.on_shut(Ok(())),
            // Without room (the hint cleared) the step waits for a
            // writable edge, or the core's stall deadline.
            Action::Send(n) => match write_some(stream, &core.store().as_slice()[..n], writable) {
                Ok(0) => {}
                Ok(w) => fs.step.sent(core, Instant::now(), w),
                Err(e) => {
                    core.on_error(&e);
                }
            },
            Action::Read(want) => {
                let want = want.min(buf.len());
                match faulted::recv_at(stream.as_raw_fd(), &mut buf[..want], fs.step.empty_at()) {
                    Ok((n, arrived)) => {
                        fs.step
                            .received(core, Instant::now(), arrived, &mut buf[..n])
                    }
                    // The receive queue is empty: wait for the next edge.
                    Err(Errno::EAGAIN) => {
                        fs.step.read_empty(now);
                        *readable = false;
                    }
                    // A signal: read again.
                    Err(Errno::EINTR) => {}
                    Err(e) => {
                        core.on_error(&std::io::Error::from(e));
                    }
                }
            }
            // The next edge, the timer, or both.
            Action::Wait { until, .. } => {
                fs.wake = until;
                return Turn::Wait;
            }
        }
    }
    Turn::Again
}
