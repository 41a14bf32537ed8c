//! TLS clients on io_uring: the TLS layer ([`TlsConn`]) over a copying core
//! (`Conn<Pending>`), with its own receive buffer and two send buffers.
//!
//! The zero-copy path (provided buffers held until sent) cannot apply: the
//! bytes sent are not the bytes received but their re-encryption. So a TLS
//! connection receives with single `Recv`s into its own [`RECV_BUF`]-byte
//! buffer (one request at a time), feeds the ciphertext to rustls through
//! an in-memory [`Wire`], and sends the ciphertext rustls wrote from
//! `sending` while new ciphertext collects in `queued` (at most
//! [`QUEUED_CAP`]): the kernel reads `sending` until its send completes, so
//! it is never touched meanwhile. Our FIN (after close_notify) is taken
//! once both are empty. Backpressure is the core's: at its cap the turn
//! asks for no read, and no receive is submitted.

use std::io::{self, Read, Write};
use std::time::Instant;

use crate::serve::contract::pending::Pending;
use crate::serve::contract::{self as core, End, Timeouts};
use crate::serve::transport::tls::session::{TlsConn, Turn, Wire};

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
    /// Where the kernel writes ciphertext; lives until the receive completes.
    pub(super) rbuf: Box<[u8]>,
    /// Received ciphertext not yet read by rustls, from `in_off` on.
    inbox: Vec<u8>,
    in_off: usize,
    /// The client's FIN was received.
    pub(super) fin: bool,
    /// Ciphertext the kernel is sending (from `sent` on): untouched until
    /// the send completes.
    pub(super) sending: Vec<u8>,
    pub(super) sent: usize,
    /// Ciphertext written since; sent after `sending`.
    queued: Vec<u8>,
    /// The core asked for our FIN: taken once all ciphertext is out.
    pub(super) shut_wanted: bool,
    /// The last turn wanted to read.
    pub(super) wants_read: bool,
    /// The core ended cleanly with ciphertext (our close_notify at least)
    /// still unsent: since then, or since a send last took some of it. The
    /// send timeout counts from here, as it would for kept echo: a client
    /// that never reads must not hold the connection for ever.
    pub(super) flush_since: Option<Instant>,
    /// That flush waited out the send timeout: the connection closes as a
    /// stall, without the rest of its close.
    pub(super) flush_stalled: bool,
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
            rbuf: vec![0u8; RECV_BUF].into_boxed_slice(),
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

    /// A receive brought `n` bytes into `rbuf`.
    pub(super) fn received(&mut self, n: usize) {
        self.inbox.extend_from_slice(&self.rbuf[..n.min(RECV_BUF)]);
    }

    /// A send took `n` bytes of `sending` at `now`.
    pub(super) fn on_sent(&mut self, n: usize, now: Instant) {
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

    /// Runs the TLS layer over what arrived; returns the plaintext bytes
    /// echoed. Afterwards: [`UringTls::next_send`] and `wants_read` say what
    /// to submit.
    pub(super) fn run(&mut self, now: Instant, scratch: &mut [u8]) -> u64 {
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

    /// Moves queued ciphertext into `sending` if nothing is in flight;
    /// returns what to send now, if anything.
    pub(super) fn next_send(&mut self) -> Option<(*const u8, u32)> {
        if self.sending.is_empty() && !self.queued.is_empty() {
            std::mem::swap(&mut self.sending, &mut self.queued);
            self.sent = 0;
        }
        let left = &self.sending[self.sent..];
        (!left.is_empty()).then(|| (left.as_ptr(), u32::try_from(left.len()).unwrap_or(u32::MAX)))
    }

    /// Every byte of ciphertext is out.
    pub(super) fn flushed(&self) -> bool {
        self.sending.is_empty() && self.queued.is_empty()
    }

    /// The deadline to file: the handshake's and the core's.
    pub(super) fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        self.tls.deadline(&self.core, t)
    }

    /// When the flush of a clean end runs out of the send timeout `t`.
    pub(super) fn flush_deadline(&self, t: &Timeouts) -> Option<Instant> {
        self.flush_since.zip(t.send).map(|(since, d)| since + d)
    }

    /// The connection's end, once it has one.
    pub(super) fn end(&self) -> Option<End> {
        self.core.end()
    }
}
