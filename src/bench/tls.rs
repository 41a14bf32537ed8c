//! `bench --tls`: TLS as a transport of the one bench worker
//! ([`super::tcp`]): a rustls connection beside each socket, every
//! plaintext byte checked the same way as over plain TCP, and the
//! handshakes timed in a histogram of their own. Every flag of the worker
//! (`--rate`, `-n`, `--hold`, `--interval`, `--source-addrs`, ...) works
//! over TLS as it does over TCP, because it is the same code.
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
//! A TLS connection is one state machine for both directions: a plaintext
//! write is queued in rustls and flushed as records, and a plaintext read
//! may need records read first, so a short read says nothing about the
//! socket and this transport reads on until it would block.

use std::io::{self, Read, Write};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use rustls::{ClientConnection, HandshakeKind};
use serde::Serialize;

use super::hist;
use super::plan::Plan;
use super::tally::Tally;
use super::tcp::{self, Hitch, Link, Transport};
use super::text::{latency_line, micros, round3, thousands};
use crate::error::Result;
use crate::net::tls::Connector;

/// What the TLS workers share: the connector and the kept connections'
/// sessions, made at setup.
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

/// Handshakes on the kept connections, one after another before the run
/// (as their connects are): the first failure is the run's one-line error.
pub(crate) fn handshake_all(
    connector: &Connector,
    streams: &mut [std::net::TcpStream],
    timeout: std::time::Duration,
) -> Result<(Vec<Option<ClientConnection>>, Histogram<u64>)> {
    let mut hist = hist::latency("creating the handshake histogram")?;
    let mut sessions = Vec::with_capacity(streams.len());
    for s in streams.iter_mut() {
        let (mut conn, took) = connector.handshake(s, timeout)?;
        conn.set_buffer_limit(None);
        hist.saturating_record(hist::clamp(took));
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
/// `new_conn`: whether the handshakes were timed in the run (else only
/// the kept connections' at setup).
pub(crate) fn figures(setup: &Setup, t: &Tally, new_conn: bool, duration_s: f64) -> Figures {
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
    Figures {
        handshakes: n,
        handshakes_resumed: t.resumed,
        handshake_rps: if duration_s > 0.0 && new_conn {
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
    }
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

/// Runs the bench worker over TLS for connections `conns` (`(id,
/// socket)`; the socket is `None` with `--new-conn`; kept ones come with
/// their session in [`Setup`]) until the run is over.
pub(crate) fn run(
    setup: &Setup,
    plan: &Plan,
    slot: usize,
    conns: Vec<(u64, Option<std::net::TcpStream>)>,
) -> Result<Tally> {
    tcp::run_over(plan, slot, conns, setup)
}

/// The kept connections' sessions come from setup; a new connection's
/// from the connector (with its ticket cache under `--tls-resume`).
impl Transport for &Setup {
    type Link = ClientConnection;

    fn kept(&self, id: u64) -> Option<ClientConnection> {
        self.take_session(id)
    }

    fn fresh(&self) -> std::result::Result<ClientConnection, rustls::Error> {
        let mut tls = self
            .connector
            .start()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        // The whole message is handed over at once, whatever its size.
        tls.set_buffer_limit(None);
        Ok(tls)
    }
}

/// Writes `tls`'s queued records until none is left or the socket is full.
fn send_records(
    tls: &mut ClientConnection,
    sock: &mut TcpStream,
) -> std::result::Result<(), Hitch<rustls::Error>> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Hitch::Io(e)),
        }
    }
    Ok(())
}

/// Reads what records the socket has into rustls and decrypts them:
/// `Ok(false)` at the peer's end (FIN).
fn take_records(
    tls: &mut ClientConnection,
    sock: &mut TcpStream,
) -> std::result::Result<bool, Hitch<rustls::Error>> {
    loop {
        match tls.read_tls(sock) {
            Ok(0) => return Ok(false),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Hitch::Io(e)),
        }
    }
    if let Err(e) = tls.process_new_packets() {
        // The alert rustls queued for the peer, if the socket takes it.
        let _ = tls.write_tls(sock);
        return Err(Hitch::Protocol(e));
    }
    Ok(true)
}

impl Link for ClientConnection {
    type Error = rustls::Error;
    const NAME: &'static str = "TLS";
    const HANDSHAKES: bool = true;
    const SHORT_READ_DRAINS: bool = false;

    fn handshake(&mut self, sock: &mut TcpStream) -> std::result::Result<bool, Hitch<Self::Error>> {
        loop {
            send_records(self, sock)?;
            if !self.is_handshaking() {
                return Ok(true);
            }
            match take_records(self, sock) {
                Ok(true) => {}
                Ok(false) => return Err(Hitch::Io(io::ErrorKind::UnexpectedEof.into())),
                // Drained: the server's next flight brings a readable edge.
                Err(Hitch::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    fn resumed(&self) -> bool {
        self.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    fn write(
        &mut self,
        _sock: &mut TcpStream,
        buf: &[u8],
    ) -> std::result::Result<usize, Hitch<Self::Error>> {
        // Queued as records (the buffer limit is off): `flush` sends them.
        Ok(self.writer().write(buf)?)
    }

    fn flush(&mut self, sock: &mut TcpStream) -> std::result::Result<(), Hitch<Self::Error>> {
        send_records(self, sock)
    }

    fn read(
        &mut self,
        sock: &mut TcpStream,
        buf: &mut [u8],
    ) -> std::result::Result<usize, Hitch<Self::Error>> {
        loop {
            match self.reader().read(buf) {
                // Plaintext, or 0 at the server's close_notify.
                Ok(n) => return Ok(n),
                // No more plaintext until more records come.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server closed without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(Hitch::Io(e)),
            }
            match take_records(self, sock) {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(Hitch::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Reading may have queued records (a key update).
                    if self.wants_write() {
                        let _ = send_records(self, sock);
                    }
                    return Err(Hitch::Io(e));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn close(&mut self, sock: &mut TcpStream) {
        self.send_close_notify();
        let _ = self.write_tls(sock);
    }
}
