//! A TLS client's session as bytes in and bytes out: [`Session`] sits
//! between the socket and the connection core ([`Conn`]) and never sees a
//! socket, as quinn-proto's crypto session does not. A driver (epoll,
//! tokio, io_uring, the blocking loop) hands it the ciphertext it received
//! ([`Session::on_ciphertext`], [`Session::on_fin`]), lets it work
//! ([`Session::process`]), sends what [`Session::outgoing`] holds and says
//! how much went ([`Session::on_sent`]); the clock is passed in.
//!
//! The core never learns that TLS exists: it is handed plaintext
//! (`on_read`), its kept echo is taken as plaintext (`on_sent`), and its
//! `ShutWrite` becomes close_notify then FIN. A received close_notify — or
//! a FIN without one, which an echo has nothing to fear from — is the
//! core's `on_fin`. So the echo contract (order, backpressure, half-close,
//! idle and stall deadlines) is the core's, for TLS as for TCP.
//!
//! # Faults
//! [`Session::process_shaped`] lets a fault shaper ([`Shaper`]) act on the
//! plaintext: what is read is handed to it before the core keeps it (so
//! `corrupt-at=N` flips plaintext byte N, which the client's check names),
//! and the core's echo is encrypted only as far as it allows (held by
//! `latency`, paced by `bandwidth`, cut at `reset-after`), so every fault
//! counts plaintext bytes as over TCP.
//!
//! # Memory
//! Plaintext is encrypted only when every earlier byte of ciphertext was
//! taken by the socket, so besides the core's store (at most `PENDING_CAP`)
//! a connection holds at most one chunk of ciphertext to send; received
//! ciphertext is read from the socket only once rustls has taken what came
//! before, and rustls's plaintext is drained into the core before more is
//! fed. Backpressure is then the core's: at its cap nothing is read.
//!
//! # Deadlines
//! The handshake must end within `--tls-handshake-timeout`, on top of the
//! core's idle deadline; a failed one is recorded as a [`Failure`] and ends
//! only this connection. Ciphertext waiting to be sent is echo the core no
//! longer keeps: it runs on the stall clock (the send timeout) from when it
//! began waiting or last moved, so one clock covers the echo whether the
//! store or the session holds it, and a client that stops reading is closed
//! on time however much is in flight.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

use crate::contract::{Conn, Copied, End, Next, Timeouts};
use crate::fault::tcp::{Shaper, Verdict};

/// EPROTO on Linux: how a connection closed for a TLS protocol error is
/// counted among `netecho_connections_closed_total{reason="error"}`.
pub const EPROTO: i32 = 71;

/// Most ciphertext a driver should read at once: a full TLS record and
/// its header.
pub const RECV_CHUNK: usize = 17 * 1024;

/// Steps one [`Session::process`] may take before it lets other
/// connections run (a step moves at most one record's worth, 16 KiB).
const BUDGET: usize = 64;

/// Why a TLS handshake did not complete, the `reason` label of
/// `netecho_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No complete handshake within `--tls-handshake-timeout` (a silent
    /// client, or one that speaks too slowly).
    Timeout,
    /// Bytes that are not TLS (plaintext, garbage) or a handshake rustls
    /// refuses (no common version or cipher suite, a bad message).
    Protocol,
    /// Mutual TLS: no client certificate, or one not signed by
    /// `--tls-client-ca`.
    ClientCert,
    /// The client sent an alert: most often it refused our certificate.
    Alert,
    /// The client closed or reset the connection before the handshake ended.
    Eof,
}

impl Failure {
    /// Every reason's label, in [`Failure::index`] order.
    pub const LABELS: [&'static str; 5] = ["timeout", "protocol", "client_cert", "alert", "eof"];

    /// Position of this reason in [`Failure::LABELS`].
    pub fn index(self) -> usize {
        match self {
            Failure::Timeout => 0,
            Failure::Protocol => 1,
            Failure::ClientCert => 2,
            Failure::Alert => 3,
            Failure::Eof => 4,
        }
    }

    /// The `reason` label, as logs and metrics name it.
    pub fn label(self) -> &'static str {
        Failure::LABELS[self.index()]
    }

    /// How rustls's refusal of a handshake is counted.
    pub fn of(e: &rustls::Error) -> Failure {
        match e {
            rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertificate(_)
            | rustls::Error::InvalidCertRevocationList(_) => Failure::ClientCert,
            rustls::Error::AlertReceived(_) => Failure::Alert,
            _ => Failure::Protocol,
        }
    }
}

/// What the session asks of its driver after [`Session::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Call again soon: the budget ran out, the handshake just ended, or a
    /// driver that asked ([`Session::pause_at_shut`]) is to be told of the
    /// end ([`Session::take_shut`]).
    Again,
    /// Nothing more without the socket: read ciphertext (`read`, at most
    /// [`RECV_CHUNK`]), send [`Session::outgoing`] (`write`), or wait for
    /// the deadline.
    Wait { read: bool, write: bool },
    /// Every byte of ciphertext is out, our close_notify with it: shut the
    /// socket down for writing (our FIN) and report it with
    /// [`Session::on_shut`].
    ShutWrite,
    /// Close the socket. [`Session::outgoing`] may still hold an alert for
    /// a refused handshake: send it if the socket takes it at once.
    Close(End),
}

/// One TLS client's session, beside its core. See the module docs.
pub struct Session {
    tls: ServerConnection,
    /// Until when the handshake may take; `None` once it is done.
    handshake_until: Option<Instant>,
    /// Our close_notify is queued (after the core's `ShutWrite`).
    close_notify_sent: bool,
    /// The driver asked to hear of the core's `ShutWrite` before our
    /// close_notify is queued ([`Session::pause_at_shut`]).
    pause_at_shut: bool,
    /// The core's `ShutWrite` came and nothing of our close yet left:
    /// [`Session::take_shut`] tells the driver once.
    shut_reached: bool,
    /// Why the handshake failed, if it did.
    failure: Option<Failure>,
    /// Received ciphertext rustls has not taken yet, from `in_off` on.
    inbox: Vec<u8>,
    in_off: usize,
    /// The client's FIN was received.
    fin: bool,
    /// The FIN was passed on to rustls (once).
    eof_fed: bool,
    /// Ciphertext to send, from `sent` on; lent to a send in flight while
    /// `lent` (io_uring), when new ciphertext collects in `queued`.
    sending: Vec<u8>,
    sent: usize,
    lent: bool,
    queued: Vec<u8>,
    /// Since when ciphertext has waited to be sent, or last moved: the
    /// stall clock for echo the core no longer keeps.
    out_since: Option<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshake_until", &self.handshake_until)
            .field("failure", &self.failure)
            .field("out_since", &self.out_since)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a client accepted at `now`, whose handshake must end
    /// within `timeout`.
    pub fn new(
        config: &Arc<ServerConfig>,
        now: Instant,
        timeout: Duration,
    ) -> Result<Session, rustls::Error> {
        Ok(Session {
            tls: ServerConnection::new(config.clone())?,
            handshake_until: Some(now + timeout),
            close_notify_sent: false,
            pause_at_shut: false,
            shut_reached: false,
            failure: None,
            inbox: Vec::new(),
            in_off: 0,
            fin: false,
            eof_fed: false,
            sending: Vec::new(),
            sent: 0,
            lent: false,
            queued: Vec::new(),
            out_since: None,
        })
    }

    /// Asks [`Session::process`] to return [`Turn::Again`] once when the
    /// core first says `ShutWrite`, after every echoed byte's ciphertext
    /// was sent and before our close_notify is queued: a driver that must
    /// act before the client can see the end (a blocking model giving back
    /// its `--max-conns` slot) looks at [`Session::take_shut`] after each
    /// turn.
    pub fn pause_at_shut(&mut self) {
        self.pause_at_shut = true;
    }

    /// True once, after the turn that stopped at the core's `ShutWrite`
    /// (see [`Session::pause_at_shut`]).
    pub fn take_shut(&mut self) -> bool {
        std::mem::take(&mut self.shut_reached)
    }

    /// True until the handshake has ended. rustls is asked, not only our
    /// deadline: a client that completed the handshake and closed at once
    /// (`openssl s_time -new`, a load balancer's health check) while our
    /// session tickets were still going out did not fail its handshake.
    pub fn handshaking(&self) -> bool {
        self.handshake_until.is_some() && self.tls.is_handshaking()
    }

    /// Why the handshake failed, once it has.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
    }

    /// Received ciphertext, in order, as the socket gave it.
    pub fn on_ciphertext(&mut self, bytes: &[u8]) {
        if self.in_off == self.inbox.len() {
            self.inbox.clear();
            self.in_off = 0;
        }
        self.inbox.extend_from_slice(bytes);
    }

    /// The client's FIN: nothing more will be received.
    pub fn on_fin(&mut self) {
        self.fin = true;
    }

    /// A receive or send on the socket failed (not `WouldBlock` or
    /// `Interrupted`, which a driver retries): the connection ends, and a
    /// handshake still running failed.
    pub fn on_io_error<S: Copied>(&mut self, core: &mut Conn<S>, e: &io::Error) {
        self.fail(Failure::Eof);
        if core.on_error(e) {
            // A retryable error reached here: a socket that says it once
            // too often is dead.
            core.fail(End::from_io(e));
        }
    }

    /// The result of the shutdown [`Turn::ShutWrite`] asked for.
    pub fn on_shut<S: Copied>(&mut self, core: &mut Conn<S>, r: io::Result<()>) {
        core.on_shut(r);
    }

    /// The ciphertext to send now (empty: none). Not while lent.
    pub fn outgoing(&mut self) -> &[u8] {
        debug_assert!(!self.lent, "outgoing() while the ciphertext is lent");
        if self.sent == self.sending.len() && !self.queued.is_empty() {
            self.sending.clear();
            std::mem::swap(&mut self.sending, &mut self.queued);
            self.sent = 0;
        }
        &self.sending[self.sent..]
    }

    /// The socket took `n` bytes of [`Session::outgoing`] (or of the lent
    /// buffer) at `now`: echo moved, so the stall clock restarts, the
    /// core's too.
    pub fn on_sent<S: Copied>(&mut self, core: &mut Conn<S>, now: Instant, n: usize) {
        if n == 0 {
            return;
        }
        self.sent = (self.sent + n).min(self.sending.len());
        if self.sent == self.sending.len() && !self.lent {
            self.sending.clear();
            self.sent = 0;
        }
        core.on_progress(now);
        self.out_since = (!self.out_empty()).then_some(now);
    }

    /// Lends the ciphertext to send to an operation that must own its
    /// buffer until it completes (io_uring's send), with where its unsent
    /// bytes start; `None` when there is none or it is lent already. New
    /// ciphertext collects aside meanwhile; [`Session::unlend`] gives the
    /// buffer back, then [`Session::on_sent`] says how much went.
    pub fn lend(&mut self) -> Option<(Vec<u8>, usize)> {
        if self.lent {
            return None;
        }
        if self.outgoing().is_empty() {
            return None;
        }
        self.lent = true;
        Some((std::mem::take(&mut self.sending), self.sent))
    }

    /// The lent buffer is back (its send completed or was cancelled).
    pub fn unlend(&mut self, buf: Vec<u8>) {
        if self.lent {
            self.sending = buf;
            self.lent = false;
        }
    }

    /// True when every byte of ciphertext was sent: none waits, none is
    /// lent.
    pub fn all_sent(&self) -> bool {
        self.out_empty()
    }

    /// True when no ciphertext waits to be sent, none lent.
    fn out_empty(&self) -> bool {
        !self.lent && self.sent == self.sending.len() && self.queued.is_empty()
    }

    /// When to look at the connection again: the handshake deadline while
    /// it runs, the stall deadline of ciphertext waiting, and the core's.
    pub fn deadline<S: Copied>(&self, core: &Conn<S>, t: &Timeouts) -> Option<Instant> {
        let core_at = core.deadline(t).map(|(at, _)| at);
        let stall_at = self.out_since.zip(t.send).map(|(b, d)| b + d);
        let live = core.end().is_none();
        [self.handshake_until, core_at, stall_at.filter(|_| live)]
            .into_iter()
            .flatten()
            .min()
    }

    /// True when the deadline may now be sooner than one filed earlier:
    /// echo waits, in the core's store or here as ciphertext.
    pub fn deadline_may_be_sooner<S: Copied>(&self, core: &Conn<S>) -> bool {
        core.deadline_may_be_sooner() || self.out_since.is_some()
    }

    /// A timer came due at `now`: ends the connection (returns true) if the
    /// handshake ran out of time, ciphertext waited out the send timeout,
    /// or the core's deadline passed.
    pub fn on_timer<S: Copied>(&mut self, core: &mut Conn<S>, now: Instant, t: &Timeouts) -> bool {
        if core.end().is_some() {
            return false;
        }
        if let Some(until) = self.handshake_until
            && now >= until
        {
            self.time_out(core);
            return true;
        }
        if let Some(at) = self.out_since.zip(t.send).map(|(b, d)| b + d)
            && now >= at
        {
            // Encrypted echo sat unsent for the stall timeout.
            core.fail(End::Stall);
            return true;
        }
        core.on_timer(now, t)
    }

    /// The handshake ran out of time: closes as idle, counted as a
    /// `timeout` failure.
    pub fn time_out<S: Copied>(&mut self, core: &mut Conn<S>) {
        self.fail(Failure::Timeout);
        core.fail(End::Idle);
    }

    /// Records a failure, if the handshake was still running.
    fn fail(&mut self, why: Failure) {
        if self.handshaking() {
            self.failure.get_or_insert(why);
        }
    }

    /// Moves what rustls wrote into the queue to send, starting the stall
    /// clock if nothing waited before.
    fn collect_ciphertext(&mut self, now: Instant) {
        if !self.tls.wants_write() {
            return;
        }
        let was_empty = self.out_empty();
        while self.tls.wants_write() {
            // Writing into a Vec cannot fail.
            if self.tls.write_tls(&mut self.queued).is_err() {
                break;
            }
        }
        if was_empty && !self.out_empty() {
            self.out_since = Some(now);
        }
    }

    /// Queues our close_notify now, whatever the core keeps: a fault
    /// (`close-after`) ends the connection early but cleanly. The driver
    /// sends [`Session::outgoing`], then shuts the socket down for writing.
    pub fn close_notify_now(&mut self, now: Instant) {
        if !self.close_notify_sent {
            self.tls.send_close_notify();
            self.close_notify_sent = true;
        }
        self.collect_ciphertext(now);
    }

    /// Does what the core and rustls ask with the bytes at hand — received
    /// ciphertext to rustls, plaintext to the core, the core's echo to
    /// rustls, ciphertext to [`Session::outgoing`], our close_notify —
    /// until it needs the socket, the budget is used, or the connection is
    /// to close. `scratch` is room for plaintext; `bytes` counts the
    /// plaintext echoed.
    pub fn process<S: Copied>(
        &mut self,
        core: &mut Conn<S>,
        now: Instant,
        scratch: &mut [u8],
        bytes: &mut u64,
    ) -> Turn {
        self.process_shaped(core, now, scratch, bytes, None)
    }

    /// [`Session::process`] with a connection's faults acting on the
    /// plaintext (see the module docs). A fault's wait or end is the
    /// driver's to act on: here the echo simply is not encrypted.
    pub fn process_shaped<S: Copied>(
        &mut self,
        core: &mut Conn<S>,
        now: Instant,
        scratch: &mut [u8],
        bytes: &mut u64,
        mut shaper: Option<&mut Shaper>,
    ) -> Turn {
        for _ in 0..BUDGET {
            // Ciphertext first: handshake messages, alerts, echo.
            self.collect_ciphertext(now);
            let out_empty = self.out_empty();
            if self.out_since.is_some() && out_empty {
                self.out_since = None;
            }
            if self.handshake_until.is_some() && !self.tls.is_handshaking() {
                self.handshake_until = None;
                return Turn::Again;
            }
            let (send, read) = match core.next() {
                Next::Close(end) => return Turn::Close(end),
                Next::ShutWrite => {
                    if !out_empty {
                        return Turn::Wait {
                            read: false,
                            write: true,
                        };
                    }
                    if !self.close_notify_sent {
                        if self.pause_at_shut {
                            // Every echoed byte's ciphertext went out first,
                            // so a driver told of the end may let the
                            // process exit without losing one.
                            self.pause_at_shut = false;
                            self.shut_reached = true;
                            return Turn::Again;
                        }
                        self.tls.send_close_notify();
                        self.close_notify_sent = true;
                        continue;
                    }
                    return Turn::ShutWrite;
                }
                Next::Io { send, read } => (send, read),
            };
            let kept = core.store().len();
            let may = match shaper.as_deref_mut().map(|s| s.verdict(now, kept)) {
                None => kept,
                Some(Verdict::Send(n)) => n,
                // Held, paced or ended by a fault: the driver waits.
                Some(_) => 0,
            };
            if send && out_empty && may > 0 {
                // All earlier ciphertext is out: encrypt more of the echo.
                match self.tls.writer().write(&core.store().as_slice()[..may]) {
                    Ok(n) if n > 0 => {
                        core.on_sent(now, n);
                        if let Some(s) = shaper.as_deref_mut() {
                            s.on_sent(now, n);
                        }
                        *bytes += n as u64;
                        continue;
                    }
                    // rustls's buffer is full (it is not: it was flushed).
                    Ok(_) => {}
                    Err(e) => {
                        core.on_error(&e);
                        continue;
                    }
                }
            }
            if read == 0 {
                // At the cap (or the FIN was read): only sending can help.
                return Turn::Wait {
                    read: false,
                    write: !out_empty,
                };
            }
            let room = read.min(scratch.len());
            match self.tls.reader().read(&mut scratch[..room]) {
                // The client's close_notify: what is kept goes out, then ours.
                Ok(0) => {
                    core.on_fin();
                    continue;
                }
                Ok(n) => {
                    if let Some(s) = shaper.as_deref_mut() {
                        s.on_read(now, &mut scratch[..n]);
                    }
                    core.on_read(now, S::piece(&scratch[..n]), 0);
                    continue;
                }
                // A FIN without close_notify: the same for an echo.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    if self.handshaking() {
                        self.fail(Failure::Eof);
                        core.fail(End::Fin);
                    } else {
                        core.on_fin();
                    }
                    continue;
                }
                // No plaintext buffered: feed ciphertext below.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    core.on_error(&e);
                    continue;
                }
            }
            if self.in_off < self.inbox.len() {
                let mut rd = &self.inbox[self.in_off..];
                match self.tls.read_tls(&mut rd) {
                    Ok(n) => {
                        self.in_off += n;
                        if let Err(e) = self.tls.process_new_packets() {
                            self.refuse(core, &e, now);
                        }
                    }
                    // rustls holds all it may (cannot happen: its
                    // plaintext was drained above).
                    Err(e) => {
                        core.on_error(&io::Error::other(e));
                    }
                }
                continue;
            }
            if self.fin && !self.eof_fed {
                // rustls remembers the FIN, and its reader says so next.
                self.eof_fed = true;
                let _ = self.tls.read_tls(&mut &[][..]);
                continue;
            }
            return Turn::Wait {
                read: !self.fin,
                write: !out_empty,
            };
        }
        Turn::Again
    }

    /// rustls refused what the client sent: queue its alert, record why,
    /// and close as a protocol error.
    fn refuse<S: Copied>(&mut self, core: &mut Conn<S>, e: &rustls::Error, now: Instant) {
        self.collect_ciphertext(now);
        self.fail(Failure::of(e));
        core.fail(End::Error(EPROTO));
    }
}

#[cfg(test)]
mod tests;
