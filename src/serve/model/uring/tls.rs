//! TLS clients on io_uring: the TLS layer ([`TlsConn`]) over a copying core
//! (`Conn<Pending>`), with its own receive buffer and two send buffers.
//!
//! The zero-copy path (provided buffers held until sent) cannot apply: the
//! bytes sent are not the bytes received but their re-encryption. So a TLS
//! connection receives with single `Recv`s into its own [`RECV_BUF`]-byte
//! buffer (one request at a time, which owns the buffer until it
//! completes), feeds the ciphertext to rustls through an in-memory
//! [`Wire`], and sends the ciphertext rustls wrote from `sending` while new
//! ciphertext collects in `queued` (at most [`QUEUED_CAP`]): the send owns
//! `sending` until it completes, so it is never touched meanwhile. Our FIN
//! (after close_notify) is taken once both are empty. Backpressure is the
//! core's: at its cap the turn asks for no read, and no receive is
//! submitted.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::time::Instant;

use nix::sys::socket::{Shutdown, shutdown};

use super::flight::Flight;
use super::op::Op;
use super::turn::{Env, Key, Step};
use crate::serve::contract::pending::Pending;
use crate::serve::contract::{self as core, End, Timeouts};
use crate::serve::transport::tls::session::{EPROTO, TlsConn, Turn, Wire};

/// One receive's buffer: a full TLS record and its header.
pub(super) const RECV_BUF: usize = 17 * 1024;
/// Ciphertext rustls may queue behind the send in flight before its
/// writes would block.
const QUEUED_CAP: usize = 64 * 1024;
/// Turns taken per event while each makes progress: the in-memory wire
/// never blocks on a signal, so only the budget ends a turn early.
const TURNS: usize = 64;

/// A TLS connection's state beside the worker's own per-connection fields.
pub(super) struct UringTls {
    pub(super) tls: TlsConn,
    pub(super) core: core::Conn<Pending>,
    /// Where the kernel writes ciphertext, while no receive owns it.
    rbuf: Option<Box<[u8]>>,
    /// Its receive, owning `rbuf` until it completes.
    pub(super) recv: Flight<Box<[u8]>>,
    /// Its send, owning `sending` until it completes.
    pub(super) send: Flight<Vec<u8>>,
    /// Received ciphertext not yet read by rustls, from `in_off` on.
    inbox: Vec<u8>,
    in_off: usize,
    /// The client's FIN was received.
    fin: bool,
    /// Ciphertext to send (from `sent` on); lent to the send in flight.
    sending: Vec<u8>,
    sent: usize,
    /// Ciphertext written since; sent after `sending`.
    queued: Vec<u8>,
    /// The core asked for our FIN: taken once all ciphertext is out.
    shut_wanted: bool,
    /// The last turn wanted to read.
    wants_read: bool,
    /// The core ended cleanly with ciphertext (our close_notify at least)
    /// still unsent: since then, or since a send last took some of it. The
    /// send timeout counts from here, as it would for kept echo: a client
    /// that never reads must not hold the connection for ever.
    flush_since: Option<Instant>,
    /// That flush waited out the send timeout: the connection closes as a
    /// stall, without the rest of its close.
    flush_stalled: bool,
}

/// The wire a turn sees: the inbox to read, the queue to write.
struct Mem<'a> {
    inbox: &'a mut Vec<u8>,
    in_off: &'a mut usize,
    fin: bool,
    queued: &'a mut Vec<u8>,
    shut_wanted: &'a mut bool,
}

impl Read for Mem<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = &self.inbox[*self.in_off..];
        if left.is_empty() {
            return if self.fin {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        *self.in_off += n;
        if *self.in_off == self.inbox.len() {
            self.inbox.clear();
            *self.in_off = 0;
        }
        Ok(n)
    }
}

impl Write for Mem<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = QUEUED_CAP.saturating_sub(self.queued.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        self.queued.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for Mem<'_> {
    /// Deferred: the worker shuts the socket down once the close_notify
    /// before it is sent.
    fn shut_write(&mut self) -> io::Result<()> {
        *self.shut_wanted = true;
        Ok(())
    }
}

impl UringTls {
    pub(super) fn new(tls: TlsConn, now: Instant) -> UringTls {
        UringTls {
            tls,
            core: core::Conn::new(now, Pending::new()),
            rbuf: Some(vec![0u8; RECV_BUF].into_boxed_slice()),
            recv: Flight::default(),
            send: Flight::default(),
            inbox: Vec::new(),
            in_off: 0,
            fin: false,
            sending: Vec::new(),
            sent: 0,
            queued: Vec::new(),
            shut_wanted: false,
            wants_read: true,
            flush_since: None,
            flush_stalled: false,
        }
    }

    /// A receive completed with `res` (never multishot: the last).
    pub(super) fn on_recv(&mut self, res: i32) {
        let buf = self.recv.complete();
        match res {
            n if n > 0 => {
                if let Some(b) = &buf {
                    let n = (n as usize).min(b.len());
                    self.inbox.extend_from_slice(&b[..n]);
                }
            }
            0 => self.fin = true,
            // Our cancel, or a signal: `progress` decides what next.
            e if -e == libc::ECANCELED || -e == libc::EINTR => {}
            e => {
                self.core.on_error(&io::Error::from_raw_os_error(-e));
            }
        }
        if buf.is_some() {
            self.rbuf = buf;
        }
    }

    /// A send completed with `res` at `now`.
    pub(super) fn on_send(&mut self, res: i32, now: Instant) {
        if let Some(b) = self.send.complete() {
            self.sending = b;
        }
        match res {
            n if n > 0 => self.on_sent(n as usize, now),
            0 => self.core.fail(End::Error(libc::EIO)),
            e if -e == libc::ECANCELED || -e == libc::EINTR => {}
            e => {
                self.core.on_error(&io::Error::from_raw_os_error(-e));
            }
        }
    }

    /// A send took `n` bytes of `sending` at `now`.
    fn on_sent(&mut self, n: usize, now: Instant) {
        // The kernel took ciphertext: that is progress for the stall clock.
        self.tls.moved();
        if self.flush_since.is_some() {
            self.flush_since = Some(now);
        }
        self.sent += n;
        if self.sent >= self.sending.len() {
            self.sending.clear();
            self.sent = 0;
        }
    }

    /// Its deadline came due at `now`.
    pub(super) fn on_timer(&mut self, now: Instant, t: &Timeouts) {
        if self.end().is_some() {
            // A clean end still flushing: out of time?
            if self.flush_deadline(t).is_some_and(|at| at <= now) {
                self.flush_stalled = true;
            }
        } else {
            self.tls.on_timer(&mut self.core, now, t);
        }
    }

    /// Runs the TLS layer over what arrived, then submits the send of its
    /// ciphertext and the next receive; when the core has ended, sends
    /// what is left of a clean end (our close_notify), shuts writing down,
    /// and asks to close once the flush is over.
    pub(super) fn progress(
        &mut self,
        env: &mut Env<'_>,
        fd: RawFd,
        (slot, generation): Key,
    ) -> Step {
        if self.end().is_none() {
            let bytes = self.run(env.now, env.scratch);
            if bytes > 0 {
                env.stats.bytes.add(bytes);
            }
        }
        let end = self.end();
        // A clean end still owes the client our close_notify, a refused
        // handshake its alert: both are a few bytes, sent before closing.
        let clean = matches!(end, Some(End::Fin) | Some(End::Error(EPROTO))) && !self.flush_stalled;
        if (end.is_none() || clean)
            && self.send.is_idle()
            && let Some((buf, from)) = self.lend()
        {
            env.q
                .send_owned(fd, buf, from, &mut self.send, Op::Send(slot, generation));
        }
        let Some(end) = end else {
            if self.wants_read
                && !self.fin
                && self.recv.is_idle()
                && let Some(buf) = self.rbuf.take()
            {
                env.q
                    .recv_owned(fd, buf, &mut self.recv, Op::Recv(slot, generation));
            }
            return Step::Wait(self.deadline(&env.timeouts));
        };
        if clean && !self.flushed() {
            // The close_notify is still going out: its send completes, or
            // the send timeout ends the wait (the client may never read).
            self.flush_since.get_or_insert(env.now);
            return Step::Wait(self.flush_deadline(&env.timeouts));
        }
        if clean && self.shut_wanted {
            self.shut_wanted = false;
            // ENOTCONN (the client reset meanwhile) changes nothing now.
            let _ = shutdown(fd, Shutdown::Write);
        }
        Step::Close(if self.flush_stalled { End::Stall } else { end })
    }

    /// Runs the TLS layer over what arrived; returns the plaintext bytes
    /// echoed. Afterwards: what to send and `wants_read` say what
    /// to submit.
    fn run(&mut self, now: Instant, scratch: &mut [u8]) -> u64 {
        let mut bytes = 0;
        for _ in 0..TURNS {
            let mut wire = Mem {
                inbox: &mut self.inbox,
                in_off: &mut self.in_off,
                fin: self.fin,
                queued: &mut self.queued,
                shut_wanted: &mut self.shut_wanted,
            };
            match self
                .tls
                .turn(&mut self.core, &mut wire, now, scratch, &mut bytes)
            {
                Turn::Again => continue,
                Turn::Wait { read, .. } => {
                    self.wants_read = read;
                    break;
                }
                Turn::Close(_) => {
                    self.wants_read = false;
                    break;
                }
            }
        }
        bytes
    }

    /// Moves queued ciphertext into `sending` if it is empty, and lends
    /// it to a send with where its unsent bytes start, if any are.
    fn lend(&mut self) -> Option<(Vec<u8>, usize)> {
        if self.sending.is_empty() && !self.queued.is_empty() {
            std::mem::swap(&mut self.sending, &mut self.queued);
            self.sent = 0;
        }
        (self.sent < self.sending.len()).then(|| (std::mem::take(&mut self.sending), self.sent))
    }

    /// Every byte of ciphertext is out: nothing to send, none in flight.
    fn flushed(&self) -> bool {
        self.send.is_idle() && self.sending.is_empty() && self.queued.is_empty()
    }

    /// The deadline to file: the handshake's and the core's.
    fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        self.tls.deadline(&self.core, t)
    }

    /// When the flush of a clean end runs out of the send timeout `t`.
    fn flush_deadline(&self, t: &Timeouts) -> Option<Instant> {
        self.flush_since.zip(t.send).map(|(since, d)| since + d)
    }

    /// The connection's end, once it has one.
    pub(super) fn end(&self) -> Option<End> {
        self.core.end()
    }
}
