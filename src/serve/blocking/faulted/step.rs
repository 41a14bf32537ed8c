//! What a faulted connection does next, as pure code with the clock passed
//! in: the connection core ([`Conn`]) keeps the bytes, the order and the
//! deadlines, the fault shaper ([`Shaper`]) decides what of the kept echo
//! may go now, when the next may, and how the connection ends; [`Step`]
//! joins their answers into one [`Action`] — send, read, wait, our FIN, a
//! fault's end — and takes the outcome back. It does no I/O: the blocking
//! loop (`faulted.rs`), epoll's (`model/epoll_faults.rs`) and tokio's
//! (`model/tokio_faults.rs`) each perform the action with their own calls
//! and wait in their own way, as [`crate::serve::transport::tls::socket`]
//! does for TLS.
//!
//! A fault's end ([`Ending`]) is written here once, for plain TCP and for
//! TLS: `reset-after` resets once the client acknowledged the echo (the
//! send queue is empty), at most [`RESET_AWAITS_ACK`] later;
//! `close-after` sends our FIN, then reads and drops what the client still
//! sends for at most [`LINGER_AFTER_CLOSE`].

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netecho_core::fault::EndAfter;
use netecho_core::fault::tcp::{ReadGate, Shaper, Verdict};

use crate::serve::contract::{Conn, Copied, End, Next, Timeouts};
use crate::serve::service::faults;
use crate::serve::service::stats::Stats;

/// After `close-after`'s FIN, how long what the client still sends is read
/// and dropped, so that our close finds an empty receive queue (a close
/// with unread bytes would be a reset, not the FIN asked for).
pub(crate) const LINGER_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// How long `reset-after` waits for the client to acknowledge the bytes
/// echoed before the reset: a reset throws away what the send queue still
/// holds, so on a busy machine (a send the kernel deferred) the client
/// could see fewer than the exact count. A client that stops reading gets
/// its reset after this wait.
pub(crate) const RESET_AWAITS_ACK: Duration = Duration::from_secs(1);

/// How often that wait looks at the send queue again.
pub(crate) const RESET_ACK_POLL: Duration = Duration::from_millis(1);

/// What the connection is to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send at most this many bytes of the kept echo's front, then report
    /// [`Step::sent`] (or the error to the core). A socket that would block
    /// takes nothing: clear the writable hint, or wait for room until the
    /// core's deadline (the blocking loop).
    Send(usize),
    /// Read at most this many bytes (stamped with their arrival, from
    /// [`Step::empty_at`] on), then report [`Step::received`]; a socket
    /// with nothing to read reports [`Step::read_empty`] and clears the
    /// readable hint.
    Read(usize),
    /// Nothing can move before the socket is readable (`read`), writable
    /// (`write`), or `until` comes (`None`: only readiness); then report
    /// the core's timer ([`Conn::on_timer`]) if the time came.
    Wait {
        read: bool,
        write: bool,
        until: Option<Instant>,
    },
    /// The core's own end: every byte was echoed after the client's FIN;
    /// send our FIN and report it to the core ([`Conn::on_shut`]).
    ShutWrite,
    /// Close the connection; this is how it ended.
    Close(End),
    /// A fault ends the connection: from now on its [`Ending`] says what
    /// to do ([`Ending::next`]), not this step nor the core.
    End(Ending),
}

impl Action {
    /// True when the client may see the end after this action: the
    /// `--max-conns` slot is to be given back before it is performed, so a
    /// client that reconnects as soon as it sees our FIN or reset finds its
    /// slot free (as [`crate::serve::admission::Permit::release`] says).
    pub(crate) fn frees(self) -> bool {
        !matches!(
            self,
            Action::Send(_) | Action::Read(_) | Action::Wait { .. }
        )
    }
}

/// A step of a fault's end ([`Ending::next`]); every model but for its
/// waits performs it the same way (`faulted::finish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// `reset-after`: look whether the client acknowledged everything sent
    /// and report [`Ending::acked`].
    AwaitAck,
    /// Reset: set SO_LINGER 0 and close; the end is [`End::Reset`].
    Reset,
    /// `close-after`: send our FIN (shutdown(2)) and report
    /// [`Ending::fin_sent`].
    Fin,
    /// Our FIN is out: read and drop what the client still sends, then
    /// report [`Ending::discarded`] (a socket with nothing to read clears
    /// the readable hint; a failure reports [`Ending::discard_failed`]).
    Discard,
    /// Nothing to do before the socket is readable (`read`) or `until`.
    Wait { read: bool, until: Instant },
    /// Close the connection; this is how it ended.
    Close(End),
}

/// The readiness the caller knows of: the event models' edge-triggered
/// hints; a model that waits for readiness itself says both after a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    /// A read may find bytes (no read found the socket empty since).
    pub(crate) read: bool,
    /// A send may find room (no send found the buffer full since).
    pub(crate) write: bool,
}

impl Ready {
    /// Both ways, as after a wait (a read or send that would block says so).
    pub(crate) const BOTH: Ready = Ready {
        read: true,
        write: true,
    };
}

/// How a fault's end goes, once every byte before it is out: for plain TCP
/// and for TLS (after its close_notify for `close-after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// `reset-after`: waiting for the client's acknowledgement of the echo
    /// until `until`; the next look at the send queue not before `look_at`.
    AwaitAck {
        until: Instant,
        look_at: Option<Instant>,
    },
    /// `reset-after`: the reset goes now.
    Reset,
    /// `close-after`: our FIN goes now.
    Fin,
    /// `close-after`'s FIN is out: what the client sends is dropped until
    /// its FIN or `until`.
    Draining { until: Instant },
    /// Over: close with this end.
    Closed(End),
}

impl Ending {
    /// The end `how` asks for, starting at `now`; `None` for `stall-after`,
    /// which does not end the connection (the core's deadline does).
    pub(crate) fn of(how: EndAfter, now: Instant) -> Option<Ending> {
        match how {
            EndAfter::Reset => Some(Ending::AwaitAck {
                until: now + RESET_AWAITS_ACK,
                look_at: None,
            }),
            EndAfter::Close => Some(Ending::Fin),
            EndAfter::Stall => None,
        }
    }

    /// What to do at `now`; `readable`: a read may find bytes.
    pub(crate) fn next(&self, now: Instant, readable: bool) -> Finish {
        match *self {
            Ending::AwaitAck { until, .. } if now >= until => Finish::Reset,
            Ending::AwaitAck {
                until,
                look_at: Some(at),
            } if now < at => Finish::Wait {
                read: false,
                until: at.min(until),
            },
            Ending::AwaitAck { .. } => Finish::AwaitAck,
            Ending::Reset => Finish::Reset,
            Ending::Fin => Finish::Fin,
            Ending::Draining { until } if now >= until => Finish::Close(End::Fin),
            Ending::Draining { .. } if readable => Finish::Discard,
            Ending::Draining { until } => Finish::Wait { read: true, until },
            Ending::Closed(end) => Finish::Close(end),
        }
    }

    /// [`Finish::AwaitAck`]'s answer at `now`: the client acknowledged
    /// everything sent (`acked`), or not yet (look again after
    /// [`RESET_ACK_POLL`]).
    pub(crate) fn acked(&mut self, now: Instant, acked: bool) {
        if let Ending::AwaitAck { look_at, .. } = self {
            if acked {
                *self = Ending::Reset;
            } else {
                *look_at = Some(now + RESET_ACK_POLL);
            }
        }
    }

    /// [`Finish::Fin`]'s outcome at `now`. ENOTCONN (the client is gone
    /// already) ends as a FIN too, after the drain finds it so; any other
    /// failure ends at once with that error: no FIN went out, so there is
    /// nothing to linger for.
    pub(crate) fn fin_sent(&mut self, now: Instant, r: &io::Result<()>) {
        *self = match r {
            Ok(()) => Ending::Draining {
                until: now + LINGER_AFTER_CLOSE,
            },
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ending::Draining {
                until: now + LINGER_AFTER_CLOSE,
            },
            Err(e) => Ending::Closed(End::from_io(e)),
        };
    }

    /// [`Finish::Discard`] read `n` bytes: 0 is the client's FIN, the end.
    pub(crate) fn discarded(&mut self, n: usize) {
        if n == 0 {
            *self = Ending::Closed(End::Fin);
        }
    }

    /// [`Finish::Discard`] failed (not for a signal or an empty socket):
    /// our FIN is out either way.
    pub(crate) fn discard_failed(&mut self) {
        *self = Ending::Closed(End::Fin);
    }
}

/// One faulted connection's decisions besides the core's: the shaper and
/// the arrival clock, until a fault ends it ([`Action::End`]).
pub(crate) struct Step {
    /// For the fault counters and logs.
    peer: SocketAddr,
    /// Where the faults applied and the bytes echoed are counted.
    stats: &'static Stats,
    /// The fault decisions: what may be sent, when, and how it ends.
    shaper: Shaper,
    /// When the socket was last found empty: nothing read later arrived
    /// before it.
    empty_at: Instant,
}

impl Step {
    /// A connection accepted at `now` from `peer` with a shaper of its
    /// faults.
    pub(crate) fn new(
        now: Instant,
        peer: SocketAddr,
        shaper: Shaper,
        stats: &'static Stats,
    ) -> Step {
        Step {
            peer,
            stats,
            shaper,
            empty_at: now,
        }
    }

    /// What to do at `now`, with the readiness the caller knows of.
    pub(crate) fn next<S: Copied>(
        &mut self,
        core: &mut Conn<S>,
        t: &Timeouts,
        now: Instant,
        ready: Ready,
    ) -> Action {
        let action = self.decide(core, t, now, ready);
        faults::count(self.stats, self.peer, &self.shaper.applied());
        action
    }

    fn decide<S: Copied>(
        &mut self,
        core: &mut Conn<S>,
        t: &Timeouts,
        now: Instant,
        ready: Ready,
    ) -> Action {
        let read = match core.next() {
            Next::Close(end) => return Action::Close(end),
            Next::ShutWrite => return Action::ShutWrite,
            Next::Io { read, .. } => read,
        };
        let mut until = core.deadline(t).map(|(at, _)| at);
        let mut soonest = |at: Instant| until = Some(until.map_or(at, |u| u.min(at)));
        let mut write = false;
        match self.shaper.verdict(now, core.store().len()) {
            Verdict::End(how) => {
                if let Some(e) = Ending::of(how, now) {
                    return Action::End(e);
                }
                // stall-after: neither read nor write; the core's
                // deadline ends it.
            }
            Verdict::Idle => {}
            Verdict::Wait(at) => soonest(at),
            Verdict::Send(n) if ready.write => return Action::Send(n),
            // Without room: wait for it (or the core's stall deadline).
            Verdict::Send(_) => write = true,
        }
        let mut wait_read = false;
        if read > 0 {
            match self.shaper.read_gate(now) {
                ReadGate::Open if ready.read => return Action::Read(read),
                ReadGate::Open => wait_read = true,
                ReadGate::At(at) => soonest(at),
                ReadGate::Shut => {}
            }
        }
        Action::Wait {
            read: wait_read,
            write,
            until,
        }
    }

    /// A send at `now` took `n` bytes of the kept echo.
    pub(crate) fn sent<S: Copied>(&mut self, core: &mut Conn<S>, now: Instant, n: usize) {
        core.on_sent(now, n);
        self.shaper.on_sent(now, n);
        self.stats.bytes.add(n as u64);
    }

    /// A read at `now` brought `bytes` (none: the client's FIN) that
    /// arrived at `arrived`: flips what a corrupt fault asks for in them
    /// and keeps them as echo.
    pub(crate) fn received<S: Copied>(
        &mut self,
        core: &mut Conn<S>,
        now: Instant,
        arrived: Instant,
        bytes: &mut [u8],
    ) {
        if bytes.is_empty() {
            // The client's FIN: what is kept still goes out.
            core.on_fin();
            return;
        }
        for at in self.shaper.on_read(arrived, bytes) {
            tracing::debug!(peer = %self.peer, byte = at, "corrupted");
        }
        core.on_read(now, S::piece(bytes), 0);
    }

    /// A read at `now` found the socket empty.
    pub(crate) fn read_empty(&mut self, now: Instant) {
        self.empty_at = now;
    }

    /// When the socket was last found empty: a read's bytes arrived no
    /// earlier.
    pub(crate) fn empty_at(&self) -> Instant {
        self.empty_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::contract::pending::Pending;
    use netecho_core::fault::Effects;

    fn stats() -> &'static Stats {
        Box::leak(Box::new(Stats::default()))
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    const T: Timeouts = Timeouts {
        idle: Some(Duration::from_secs(30)),
        send: Some(Duration::from_secs(10)),
    };

    fn conn(now: Instant, e: Effects) -> (Conn<Pending>, Step, &'static Stats) {
        let s = stats();
        (
            Conn::new(now, Pending::new()),
            Step::new(now, peer(), Shaper::new(now, e, 1), s),
            s,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A connection whose fault `how` comes after 2 bytes, once it read
    /// 3 and echoed the first 2 at `t0`.
    fn echoed_up_to_the_end(t0: Instant, how: EndAfter) -> (Conn<Pending>, Step, &'static Stats) {
        let e = Effects {
            end_after: Some((how, 2)),
            ..Effects::default()
        };
        let (mut core, mut step, stats) = conn(t0, e);
        let mut bytes = *b"abc";
        step.received(&mut core, t0, t0, &mut bytes);
        assert_eq!(step.next(&mut core, &T, t0, Ready::BOTH), Action::Send(2));
        step.sent(&mut core, t0, 2);
        (core, step, stats)
    }

    #[test]
    fn an_idle_connection_reads_then_waits_for_readable_until_its_idle_deadline() {
        let t0 = Instant::now();
        let (mut core, mut step, _) = conn(t0, Effects::default());
        assert!(matches!(step.next(&mut core, &T, t0, Ready::BOTH), Action::Read(n) if n > 0));
        step.read_empty(t0 + ms(1));
        assert_eq!(step.empty_at(), t0 + ms(1));
        let quiet = Ready {
            read: false,
            write: true,
        };
        assert_eq!(
            step.next(&mut core, &T, t0 + ms(1), quiet),
            Action::Wait {
                read: true,
                write: false,
                until: Some(t0 + T.idle.unwrap()),
            }
        );
        assert!(!core.on_timer(t0 + ms(2), &T));
        assert!(core.on_timer(t0 + T.idle.unwrap(), &T));
        assert_eq!(
            step.next(&mut core, &T, t0 + T.idle.unwrap(), quiet),
            Action::Close(End::Idle)
        );
    }

    #[test]
    fn latency_holds_the_echo_from_its_arrival_then_sends_it_and_counts_it() {
        let t0 = Instant::now();
        let e = Effects {
            latency: Some(ms(50)),
            ..Effects::default()
        };
        let (mut core, mut step, stats) = conn(t0, e);
        let mut bytes = *b"hello";
        // Arrived 10 ms before the read: due 40 ms after it.
        step.received(&mut core, t0 + ms(10), t0, &mut bytes);
        let quiet = Ready {
            read: false,
            write: true,
        };
        assert_eq!(
            step.next(&mut core, &T, t0 + ms(10), quiet),
            Action::Wait {
                read: true,
                write: false,
                until: Some(t0 + ms(50)),
            }
        );
        assert_eq!(
            step.next(&mut core, &T, t0 + ms(50), quiet),
            Action::Send(5)
        );
        step.sent(&mut core, t0 + ms(50), 5);
        assert_eq!(stats.bytes.sum(), 5);
        assert!(core.store().is_empty());
        // Without room the echo waits for a writable socket, then goes.
        let mut more = *b"!";
        step.received(&mut core, t0 + ms(60), t0 + ms(60), &mut more);
        let full = Ready {
            read: false,
            write: false,
        };
        assert!(matches!(
            step.next(&mut core, &T, t0 + ms(200), full),
            Action::Wait { write: true, .. }
        ));
        assert_eq!(
            step.next(&mut core, &T, t0 + ms(200), Ready::BOTH),
            Action::Send(1)
        );
    }

    #[test]
    fn the_clients_fin_is_echoed_then_ours_follows() {
        let t0 = Instant::now();
        let (mut core, mut step, _) = conn(t0, Effects::default());
        let mut bytes = *b"ab";
        step.received(&mut core, t0, t0, &mut bytes);
        step.received(&mut core, t0, t0, &mut []);
        assert_eq!(step.next(&mut core, &T, t0, Ready::BOTH), Action::Send(2));
        step.sent(&mut core, t0, 2);
        let a = step.next(&mut core, &T, t0, Ready::BOTH);
        assert_eq!(a, Action::ShutWrite);
        assert!(a.frees());
        core.on_shut(Ok(()));
        assert_eq!(
            step.next(&mut core, &T, t0, Ready::BOTH),
            Action::Close(End::Fin)
        );
    }

    /// `reset-after`: after exactly N bytes, the reset waits for the
    /// client's acknowledgement, looking every RESET_ACK_POLL, at most
    /// RESET_AWAITS_ACK.
    #[test]
    fn reset_after_waits_for_the_ack_at_most_its_bound() {
        let t0 = Instant::now();
        let (mut core, mut step, stats) = echoed_up_to_the_end(t0, EndAfter::Reset);
        let a = step.next(&mut core, &T, t0, Ready::BOTH);
        assert!(a.frees());
        let Action::End(mut e) = a else {
            panic!("reset-after reached, but the step says {a:?}");
        };
        let counted: u64 = stats
            .faults
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        assert_eq!(counted, 1, "the reset is counted once");
        assert_eq!(e.next(t0, true), Finish::AwaitAck);
        e.acked(t0, false);
        let look = t0 + RESET_ACK_POLL;
        assert_eq!(
            e.next(t0, true),
            Finish::Wait {
                read: false,
                until: look,
            }
        );
        assert_eq!(e.next(look, true), Finish::AwaitAck);
        // Never acknowledged: the reset goes at the bound.
        e.acked(look, false);
        assert_eq!(e.next(t0 + RESET_AWAITS_ACK, true), Finish::Reset);
        // Acknowledged: the reset goes at once.
        e.acked(look, true);
        assert_eq!(e.next(look, true), Finish::Reset);
    }

    /// `close-after`: our FIN, then what the client sends is dropped until
    /// its FIN or LINGER_AFTER_CLOSE.
    #[test]
    fn close_after_sends_our_fin_then_drains_until_theirs_or_the_linger() {
        let t0 = Instant::now();
        let (mut core, mut step, _) = echoed_up_to_the_end(t0, EndAfter::Close);
        let a = step.next(&mut core, &T, t0, Ready::BOTH);
        assert_eq!(a, Action::End(Ending::Fin));
        let mut e = Ending::Fin;
        assert_eq!(e.next(t0, true), Finish::Fin);
        e.fin_sent(t0, &Ok(()));
        assert_eq!(e.next(t0, true), Finish::Discard);
        e.discarded(100);
        let until = t0 + LINGER_AFTER_CLOSE;
        assert_eq!(e.next(t0, false), Finish::Wait { read: true, until });
        assert_eq!(e.next(until, false), Finish::Close(End::Fin));
        e.discarded(0);
        assert_eq!(e.next(t0, true), Finish::Close(End::Fin));
    }

    /// The one rule for a failed shutdown, which the three loops used to
    /// differ on: ENOTCONN drains and ends as a FIN, any other error ends
    /// at once with it.
    #[test]
    fn a_failed_fin_ends_with_its_error_but_enotconn_is_a_fin() {
        let t0 = Instant::now();
        let mut e = Ending::Fin;
        e.fin_sent(t0, &Err(io::Error::from_raw_os_error(libc::ENOTCONN)));
        assert_eq!(e.next(t0, true), Finish::Discard);
        e.discard_failed();
        assert_eq!(e.next(t0, true), Finish::Close(End::Fin));
        let mut e = Ending::Fin;
        let err = io::Error::from_raw_os_error(libc::EBADF);
        let want = End::from_io(&err);
        e.fin_sent(t0, &Err(err));
        assert_eq!(e.next(t0, true), Finish::Close(want));
    }

    #[test]
    fn stall_after_neither_reads_nor_writes_until_the_core_deadline() {
        let t0 = Instant::now();
        let (mut core, mut step, _) = echoed_up_to_the_end(t0, EndAfter::Stall);
        let stalled = t0 + T.send.unwrap();
        assert_eq!(
            step.next(&mut core, &T, t0, Ready::BOTH),
            Action::Wait {
                read: false,
                write: false,
                until: Some(stalled),
            }
        );
        assert!(core.on_timer(stalled, &T));
        assert_eq!(
            step.next(&mut core, &T, stalled, Ready::BOTH),
            Action::Close(End::Stall)
        );
    }

    #[test]
    fn accept_delay_keeps_the_socket_unread_until_it_passes() {
        let t0 = Instant::now();
        let e = Effects {
            accept_delay: Some(ms(300)),
            ..Effects::default()
        };
        let (mut core, mut step, _) = conn(t0, e);
        assert_eq!(
            step.next(&mut core, &T, t0, Ready::BOTH),
            Action::Wait {
                read: false,
                write: false,
                until: Some(t0 + ms(300)),
            }
        );
        assert!(matches!(
            step.next(&mut core, &T, t0 + ms(300), Ready::BOTH),
            Action::Read(_)
        ));
    }
}
