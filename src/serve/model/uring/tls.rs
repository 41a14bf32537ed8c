//! TLS clients on io_uring: the TLS session (`netecho_core::tls::Session`,
//! bytes in and out) over a copying core (`Conn<Pending>`), fed from this
//! connection's own receive buffer and sending from the session's own.
//!
//! The zero-copy path (provided buffers held until sent) cannot apply: the
//! bytes sent are not the bytes received but their re-encryption. So a TLS
//! connection receives with single `Recv`s into its own [`RECV_CHUNK`]-byte
//! buffer (one request at a time, which owns the buffer until it
//! completes) and hands the ciphertext to the session; it sends the
//! ciphertext the session lends ([`Session::lend`]): the send owns that
//! buffer until it completes, while new ciphertext collects aside in the
//! session. The session keeps the deadlines (handshake, stall of unsent
//! ciphertext, the core's), so there is one stall clock, as in every model.
//! Backpressure is the core's: at its cap the session wants no ciphertext,
//! and no receive is submitted.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use netecho_core::tls::{EPROTO, RECV_CHUNK, Session, Turn};
use nix::sys::socket::{Shutdown, shutdown};

use super::flight::Flight;
use super::op::Op;
use super::turn::{Env, Key, Step};
use crate::serve::contract::pending::Pending;
use crate::serve::contract::{self as core, End, Timeouts};

/// Turns taken per event while each makes progress: only the budget ends
/// a turn early.
const TURNS: usize = 64;

/// A TLS connection's state beside the worker's own per-connection fields.
pub(super) struct UringTls {
    pub(super) tls: Session,
    pub(super) core: core::Conn<Pending>,
    /// Where the kernel writes ciphertext, while no receive owns it.
    rbuf: Option<Box<[u8]>>,
    /// Its receive, owning `rbuf` until it completes.
    pub(super) recv: Flight<Box<[u8]>>,
    /// Its send, owning the session's lent ciphertext until it completes.
    pub(super) send: Flight<Vec<u8>>,
    /// The last turn wanted ciphertext.
    wants_read: bool,
    /// A refused handshake's alert is still going out: since when. It gets
    /// the send timeout, no more (the client may never read).
    alert_since: Option<Instant>,
    /// That alert waited out the send timeout: close without it.
    alert_stalled: bool,
}

impl UringTls {
    pub(super) fn new(tls: Session, now: Instant) -> UringTls {
        UringTls {
            tls,
            core: core::Conn::new(now, Pending::new()),
            rbuf: Some(vec![0u8; RECV_CHUNK].into_boxed_slice()),
            recv: Flight::default(),
            send: Flight::default(),
            wants_read: true,
            alert_since: None,
            alert_stalled: false,
        }
    }

    /// A receive completed with `res` (never multishot: the last).
    pub(super) fn on_recv(&mut self, res: i32) {
        let buf = self.recv.complete();
        match res {
            n if n > 0 => {
                if let Some(b) = &buf {
                    let n = (n as usize).min(b.len());
                    self.tls.on_ciphertext(&b[..n]);
                }
            }
            0 => self.tls.on_fin(),
            // Our cancel, or a signal: `progress` decides what next.
            e if -e == libc::ECANCELED || -e == libc::EINTR => {}
            e => {
                let e = io::Error::from_raw_os_error(-e);
                self.tls.on_io_error(&mut self.core, &e);
            }
        }
        if buf.is_some() {
            self.rbuf = buf;
        }
    }

    /// A send completed with `res` at `now`.
    pub(super) fn on_send(&mut self, res: i32, now: Instant) {
        if let Some(b) = self.send.complete() {
            self.tls.unlend(b);
        }
        match res {
            // The kernel took ciphertext: echo moved, for every clock.
            n if n > 0 => self.tls.on_sent(&mut self.core, now, n as usize),
            0 => self.core.fail(End::Error(libc::EIO)),
            e if -e == libc::ECANCELED || -e == libc::EINTR => {}
            e => {
                let e = io::Error::from_raw_os_error(-e);
                self.tls.on_io_error(&mut self.core, &e);
            }
        }
    }

    /// Its deadline came due at `now`.
    pub(super) fn on_timer(&mut self, now: Instant, t: &Timeouts) {
        if self.end().is_some() {
            // A refused handshake's alert still going out: out of time?
            if self.alert_deadline(t).is_some_and(|at| at <= now) {
                self.alert_stalled = true;
            }
        } else {
            self.tls.on_timer(&mut self.core, now, t);
        }
    }

    /// Lets the session work on what arrived, then submits the send of its
    /// ciphertext and the next receive; once the core has ended, sends a
    /// refused handshake's alert (within the send timeout) and asks to
    /// close.
    pub(super) fn progress(
        &mut self,
        env: &mut Env<'_>,
        fd: RawFd,
        (slot, generation): Key,
    ) -> Step {
        if self.end().is_none() {
            let bytes = self.run(env.now, env.scratch, fd);
            if bytes > 0 {
                env.stats.bytes.add(bytes);
            }
        }
        let end = self.end();
        let alert = end == Some(End::Error(EPROTO)) && !self.alert_stalled;
        if (end.is_none() || alert)
            && self.send.is_idle()
            && let Some((buf, from)) = self.tls.lend()
        {
            env.q
                .send_owned(fd, buf, from, &mut self.send, Op::Send(slot, generation));
        }
        let Some(end) = end else {
            if self.wants_read
                && self.recv.is_idle()
                && let Some(buf) = self.rbuf.take()
            {
                env.q
                    .recv_owned(fd, buf, &mut self.recv, Op::Recv(slot, generation));
            }
            return Step::Wait(self.tls.deadline(&self.core, &env.timeouts));
        };
        if alert && !(self.send.is_idle() && self.tls.all_sent()) {
            self.alert_since.get_or_insert(env.now);
            return Step::Wait(self.alert_deadline(&env.timeouts));
        }
        Step::Close(if self.alert_stalled { End::Stall } else { end })
    }

    /// Lets the session work on what arrived; returns the plaintext bytes
    /// echoed. Afterwards `wants_read` and the session's ciphertext say
    /// what to submit.
    fn run(&mut self, now: Instant, scratch: &mut [u8], fd: RawFd) -> u64 {
        let mut bytes = 0;
        for _ in 0..TURNS {
            match self.tls.process(&mut self.core, now, scratch, &mut bytes) {
                Turn::Again => continue,
                Turn::Wait { read, .. } => {
                    self.wants_read = read;
                    break;
                }
                // Every byte of ciphertext is out (none in flight): our FIN.
                Turn::ShutWrite => {
                    let r = shutdown(fd, Shutdown::Write).map_err(io::Error::from);
                    self.tls.on_shut(&mut self.core, r);
                }
                Turn::Close(_) => {
                    self.wants_read = false;
                    break;
                }
            }
        }
        bytes
    }

    /// When a refused handshake's alert runs out of the send timeout `t`.
    fn alert_deadline(&self, t: &Timeouts) -> Option<Instant> {
        self.alert_since.zip(t.send).map(|(since, d)| since + d)
    }

    /// The connection's end, once it has one.
    pub(super) fn end(&self) -> Option<End> {
        self.core.end()
    }
}
