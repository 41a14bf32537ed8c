//! The TLS layer: one [`TlsConn`] per TLS client, between its socket and
//! its connection core ([`crate::serve::contract::Conn`]).
//!
//! The core never learns that TLS exists: it is handed plaintext
//! (`on_read`), its kept echo is taken as plaintext (`on_sent`), and its
//! `ShutWrite` becomes close_notify then FIN. A received close_notify — or
//! a FIN without one, which an echo has nothing to fear from — is the
//! core's `on_fin`. So the echo contract (order, backpressure, half-close,
//! idle and stall deadlines) is the core's, for TLS as for TCP.
//!
//! rustls's [`ServerConnection`] is itself sans-I/O; [`TlsConn::turn`]
//! moves bytes between it, the core and a non-blocking [`Wire`] (the
//! socket, or a pipe in the tests) until the socket would block, and says
//! what to wait for. Every model calls it: epoll and tokio on readiness,
//! the blocking models in a loop ([`super::blocking`]).
//!
//! # Memory
//! Plaintext is handed to rustls only when all its ciphertext is out, so
//! besides the core's store (at most `PENDING_CAP`) a connection holds at
//! most one chunk of ciphertext in rustls; rustls's received-plaintext
//! buffer is drained into the core before more ciphertext is read.
//! Backpressure is then the core's: at the cap nothing is read.
//!
//! # The handshake
//! It must end within `--tls-handshake-timeout`, on top of the core's idle
//! deadline; a failed one is recorded as a [`Failure`] for
//! `netecho_tls_handshake_failures_total` and closes only this connection.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

use super::Failure;
use crate::serve::contract::{Conn, Copied, End, Next, Timeouts};

/// EPROTO on Linux: how a connection closed for a TLS protocol error is
/// counted among `netecho_connections_closed_total{reason="error"}`.
pub(crate) const EPROTO: i32 = 71;

/// Steps one [`TlsConn::turn`] may take before it lets other connections
/// run (a step moves at most one record's worth, 16 KiB).
const BUDGET: usize = 64;

/// A socket as the TLS layer sees it: non-blocking reads and writes of
/// ciphertext, and our FIN.
pub(crate) trait Wire: Read + Write {
    /// `shutdown(SHUT_WR)`: our FIN after the close_notify.
    fn shut_write(&mut self) -> io::Result<()>;
}

impl Wire for std::net::TcpStream {
    fn shut_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Wire for &std::net::TcpStream {
    fn shut_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Wire for mio::net::TcpStream {
    fn shut_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// What a turn left the connection waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Call again soon: the budget ran out, a signal interrupted a call, or
    /// the handshake just ended (a blocking model changes its timeouts).
    Again,
    /// The socket would block: a read (`read`) or a write (`write`) said
    /// `WouldBlock`; wake on that readiness or the deadline.
    Wait { read: bool, write: bool },
    /// Close the socket.
    Close(End),
}

/// One TLS client's session, beside its core. See the module docs.
pub(crate) struct TlsConn {
    tls: ServerConnection,
    /// Until when the handshake may take; `None` once it is done.
    handshake_until: Option<Instant>,
    /// Our close_notify is queued (after the core's `ShutWrite`).
    close_notify_sent: bool,
    /// The driver asked to hear of the core's `ShutWrite` before our
    /// close_notify is queued ([`TlsConn::pause_at_shut`]).
    pause_at_shut: bool,
    /// The core's `ShutWrite` came and nothing of our close yet left:
    /// [`TlsConn::take_shut`] tells the driver once.
    shut_reached: bool,
    /// Why the handshake failed, if it did.
    failure: Option<Failure>,
    /// Since when ciphertext rustls holds has not moved (the socket would
    /// not take it): the stall clock for echo the core no longer keeps.
    blocked_since: Option<Instant>,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("handshake_until", &self.handshake_until)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    /// A session for a client accepted at `now`, whose handshake must end
    /// within `timeout`.
    pub(crate) fn new(
        config: &Arc<ServerConfig>,
        now: Instant,
        timeout: Duration,
    ) -> io::Result<TlsConn> {
        let tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(TlsConn {
            tls,
            handshake_until: Some(now + timeout),
            close_notify_sent: false,
            pause_at_shut: false,
            shut_reached: false,
            failure: None,
            blocked_since: None,
        })
    }

    /// Asks [`TlsConn::turn`] to return [`Turn::Again`] once when the core
    /// first says `ShutWrite`, before our close_notify is queued: a driver
    /// that must act before the client can see the end (a blocking model
    /// giving back its `--max-conns` slot) looks at [`TlsConn::take_shut`]
    /// after each turn.
    pub(crate) fn pause_at_shut(&mut self) {
        self.pause_at_shut = true;
    }

    /// True once, after the turn that stopped at the core's `ShutWrite`
    /// (see [`TlsConn::pause_at_shut`]).
    pub(crate) fn take_shut(&mut self) -> bool {
        std::mem::take(&mut self.shut_reached)
    }

    /// True until the handshake has ended. rustls is asked, not only our
    /// deadline (cleared a step later): a client that completed its
    /// handshake and closed at once (`openssl s_time -new`, a load
    /// balancer's health check) while our session tickets were still going
    /// out did not fail its handshake.
    pub(crate) fn handshaking(&self) -> bool {
        self.handshake_until.is_some() && self.tls.is_handshaking()
    }

    /// When the handshake must have ended, while it has not.
    pub(crate) fn handshake_until(&self) -> Option<Instant> {
        self.handshake_until
    }

    /// Why the handshake failed, once it has.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failure
    }

    /// When to look at the connection again: the handshake deadline while
    /// it runs, and the core's own.
    pub(crate) fn deadline<S: Copied>(&self, core: &Conn<S>, t: &Timeouts) -> Option<Instant> {
        let core_at = core.deadline(t).map(|(at, _)| at);
        let stall_at = self.blocked_since.zip(t.send).map(|(b, d)| b + d);
        [self.handshake_until, core_at, stall_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// A timer came due at `now`: ends the connection (returns true) if the
    /// handshake ran out of time or the core's deadline passed.
    pub(crate) fn on_timer<S: Copied>(
        &mut self,
        core: &mut Conn<S>,
        now: Instant,
        t: &Timeouts,
    ) -> bool {
        if let Some(until) = self.handshake_until
            && now >= until
        {
            self.time_out(core);
            return true;
        }
        if let Some(at) = self.blocked_since.zip(t.send).map(|(b, d)| b + d)
            && now >= at
            && core.end().is_none()
        {
            // Encrypted echo sat unsent for the stall timeout.
            core.fail(End::Stall);
            return true;
        }
        core.on_timer(now, t)
    }

    /// The handshake ran out of time (a blocking model learns it from its
    /// socket timeout): closes as idle, counted as a `timeout` failure.
    pub(crate) fn time_out<S: Copied>(&mut self, core: &mut Conn<S>) {
        self.fail(Failure::Timeout);
        core.fail(End::Idle);
    }

    /// The socket took ciphertext outside [`TlsConn::turn`] (io_uring's
    /// send completed): the stall clock restarts.
    pub(crate) fn moved(&mut self) {
        self.blocked_since = None;
    }

    /// Records a failure, if the handshake was still running.
    fn fail(&mut self, why: Failure) {
        if self.handshaking() {
            self.failure.get_or_insert(why);
        }
    }

    /// Performs what the core and rustls ask on `wire` — ciphertext out,
    /// plaintext to rustls, ciphertext in, plaintext to the core, our
    /// close_notify and FIN — until the socket would block, the budget is
    /// used, or the connection is to close. `buf` is scratch for plaintext;
    /// `bytes` counts the plaintext echoed.
    pub(crate) fn turn<S: Copied, W: Wire>(
        &mut self,
        core: &mut Conn<S>,
        wire: &mut W,
        now: Instant,
        buf: &mut [u8],
        bytes: &mut u64,
    ) -> Turn {
        for _ in 0..BUDGET {
            // Ciphertext first: handshake messages, alerts, echo.
            let mut write_blocked = false;
            if !self.tls.wants_write() {
                self.blocked_since = None;
            }
            while self.tls.wants_write() && core.end().is_none() {
                match self.tls.write_tls(wire) {
                    // A TCP send never takes 0 of a non-empty buffer.
                    Ok(0) => {
                        self.fail(Failure::Eof);
                        core.fail(End::from_io(&io::ErrorKind::WriteZero.into()));
                    }
                    Ok(_) => self.blocked_since = None,
                    // The send buffer is full: wait until it drains.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.blocked_since.get_or_insert(now);
                        write_blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return Turn::Again,
                    Err(e) => {
                        self.fail(Failure::Eof);
                        core.on_error(&e);
                    }
                }
            }
            if self.handshake_until.is_some() && !self.tls.is_handshaking() {
                self.handshake_until = None;
                return Turn::Again;
            }
            let (send, read) = match core.next() {
                Next::Close(end) => return Turn::Close(end),
                Next::ShutWrite => {
                    if !self.close_notify_sent {
                        if self.pause_at_shut {
                            // Every echoed byte's ciphertext goes out
                            // first, so a driver told of the end may let
                            // the process exit without losing one.
                            if write_blocked || self.tls.wants_write() {
                                return Turn::Wait {
                                    read: false,
                                    write: true,
                                };
                            }
                            self.pause_at_shut = false;
                            self.shut_reached = true;
                            return Turn::Again;
                        }
                        self.tls.send_close_notify();
                        self.close_notify_sent = true;
                        continue;
                    }
                    if write_blocked || self.tls.wants_write() {
                        return Turn::Wait {
                            read: false,
                            write: true,
                        };
                    }
                    core.on_shut(wire.shut_write());
                    continue;
                }
                Next::Io { send, read } => (send, read),
            };
            if send && !write_blocked {
                // All earlier ciphertext is out: encrypt more of the echo.
                match self.tls.writer().write(core.store().as_slice()) {
                    Ok(n) if n > 0 => {
                        core.on_sent(now, n);
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
                // At the cap (or the FIN was read): only writing can help.
                return Turn::Wait {
                    read: false,
                    write: write_blocked,
                };
            }
            let room = read.min(buf.len());
            match self.tls.reader().read(&mut buf[..room]) {
                // The client's close_notify: what is kept goes out, then ours.
                Ok(0) => {
                    core.on_fin();
                    continue;
                }
                Ok(n) => {
                    core.on_read(now, S::piece(&buf[..n]), 0);
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
                // No plaintext buffered: read ciphertext below.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    core.on_error(&e);
                    continue;
                }
            }
            match self.tls.read_tls(wire) {
                // The FIN: rustls remembers it, and its reader says so next.
                Ok(0) => {}
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        self.refuse(core, wire, &e);
                    }
                }
                // Nothing to read: wait for the next readable edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Turn::Wait {
                        read: true,
                        write: write_blocked,
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Turn::Again,
                Err(e) => {
                    self.fail(Failure::Eof);
                    core.on_error(&e);
                }
            }
        }
        Turn::Again
    }

    /// rustls refused what the client sent: send its alert if the socket
    /// takes it at once, record why, and close as a protocol error.
    fn refuse<S: Copied, W: Wire>(&mut self, core: &mut Conn<S>, wire: &mut W, e: &rustls::Error) {
        let _ = self.tls.write_tls(wire);
        self.fail(super::failure_of(e));
        tracing::debug!("TLS: {e}");
        core.fail(End::Error(EPROTO));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::contract::pending::Pending;
    use crate::serve::transport::tls::{Files, Tls};
    use std::collections::VecDeque;

    /// One direction of an in-memory socket: `WouldBlock` when empty.
    #[derive(Default)]
    struct Pipe {
        to_server: VecDeque<u8>,
        to_client: VecDeque<u8>,
        client_fin: bool,
        server_fin: bool,
        /// Most bytes the server may write before it would block.
        server_room: usize,
    }

    /// The server's end of a [`Pipe`].
    struct ServerEnd<'a>(&'a mut Pipe);

    impl Read for ServerEnd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.to_server.is_empty() {
                return if self.0.client_fin {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.0.to_server.len());
            for (b, v) in buf.iter_mut().zip(self.0.to_server.drain(..n)) {
                *b = v;
            }
            Ok(n)
        }
    }

    impl Write for ServerEnd<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0.server_room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.0.server_room);
            self.0.server_room -= n;
            self.0.to_client.extend(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Wire for ServerEnd<'_> {
        fn shut_write(&mut self) -> io::Result<()> {
            self.0.server_fin = true;
            Ok(())
        }
    }

    fn client_config() -> Arc<rustls::ClientConfig> {
        #[derive(Debug)]
        struct AnyCert;
        impl rustls::client::danger::ServerCertVerifier for AnyCert {
            fn verify_server_cert(
                &self,
                _: &rustls_pki_types::CertificateDer<'_>,
                _: &[rustls_pki_types::CertificateDer<'_>],
                _: &rustls_pki_types::ServerName<'_>,
                _: &[u8],
                _: rustls_pki_types::UnixTime,
            ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            fn verify_tls12_signature(
                &self,
                _: &[u8],
                _: &rustls_pki_types::CertificateDer<'_>,
                _: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
            {
                Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn verify_tls13_signature(
                &self,
                _: &[u8],
                _: &rustls_pki_types::CertificateDer<'_>,
                _: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
            {
                Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
                rustls::crypto::ring::default_provider()
                    .signature_verification_algorithms
                    .supported_schemes()
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert))
                .with_no_client_auth(),
        )
    }

    /// A rustls client and a [`TlsConn`] + core over a pipe whose server
    /// side takes at most `room` bytes per step: the client sends `data`
    /// with close_notify, reads slowly; everything must come back, then
    /// close_notify and FIN.
    fn echo_through(data: &[u8], room: usize) -> (Vec<u8>, End) {
        let (back, end, _) = echo_through_paused(data, room, false);
        (back, end)
    }

    /// [`echo_through`], with [`TlsConn::pause_at_shut`] when `pause`: also
    /// returns, for the turn after which [`TlsConn::take_shut`] said yes,
    /// what the client had then: the plaintext bytes, whether it had our
    /// close_notify, whether our FIN.
    fn echo_through_paused(
        data: &[u8],
        room: usize,
        pause: bool,
    ) -> (Vec<u8>, End, Option<(usize, bool, bool)>) {
        let tls = Tls::load(&Files::default(), Duration::from_secs(10)).unwrap();
        let now = Instant::now();
        let mut server = TlsConn::new(&tls.config, now, tls.handshake_timeout).unwrap();
        let mut core = Conn::new(now, Pending::new());
        let mut client =
            rustls::ClientConnection::new(client_config(), "localhost".try_into().unwrap())
                .unwrap();
        let mut pipe = Pipe::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0;
        let mut sent = 0;
        let mut back = Vec::new();
        let mut closed_by_client = false;
        let mut close_notify_seen = false;
        let mut at_shut = None;
        if pause {
            server.pause_at_shut();
        }
        for _ in 0..1_000_000 {
            // The client: push some plaintext, its ciphertext to the pipe.
            if !client.is_handshaking() && sent < data.len() {
                let n = client.writer().write(&data[sent..]).unwrap();
                sent += n;
            } else if sent == data.len() && !closed_by_client && !client.is_handshaking() {
                client.send_close_notify();
                closed_by_client = true;
            }
            while client.wants_write() {
                let mut out = Vec::new();
                client.write_tls(&mut out).unwrap();
                pipe.to_server.extend(out);
            }
            if closed_by_client && !client.wants_write() {
                pipe.client_fin = true;
            }
            pipe.server_room = room;
            let turn = server.turn(
                &mut core,
                &mut ServerEnd(&mut pipe),
                Instant::now(),
                &mut buf,
                &mut bytes,
            );
            let shut_now = server.take_shut();
            // The client reads what came back.
            let incoming: Vec<u8> = pipe.to_client.drain(..).collect();
            let mut rd = &incoming[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets().unwrap();
                // Drained after each record batch, as rustls requires.
                let mut chunk = [0u8; 4096];
                while let Ok(n) = client.reader().read(&mut chunk) {
                    if n == 0 {
                        close_notify_seen = true;
                        break;
                    }
                    back.extend_from_slice(&chunk[..n]);
                }
            }
            if shut_now {
                assert!(at_shut.is_none(), "take_shut said yes twice");
                at_shut = Some((back.len(), close_notify_seen, pipe.server_fin));
            }
            if let Turn::Close(end) = turn {
                if end == End::Fin {
                    assert!(pipe.server_fin, "Fin without our FIN");
                    assert!(close_notify_seen, "Fin without our close_notify");
                }
                return (back, end, at_shut);
            }
        }
        panic!("the connection never ended");
    }

    #[test]
    fn a_driver_paused_at_shut_hears_of_it_after_the_echo_and_before_the_close() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for room in [1 << 20, 16 * 1024, 1000] {
            let (back, end, at_shut) = echo_through_paused(&data, room, true);
            assert_eq!(end, End::Fin, "room {room}");
            assert!(back == data, "room {room}: echo differs");
            let (seen, close_notify, fin) = at_shut.expect("take_shut never said yes");
            assert_eq!(
                seen,
                data.len(),
                "room {room}: told before the echo was out"
            );
            assert!(
                !close_notify && !fin,
                "room {room}: told after the close began"
            );
        }
        // Without the pause nobody is told, and the close is the same.
        let (back, end, at_shut) = echo_through_paused(&data, 16 * 1024, false);
        assert_eq!((back == data, end, at_shut), (true, End::Fin, None));
    }

    #[test]
    fn echoes_everything_then_close_notify_and_fin() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for room in [1_000_000, 1000, 7] {
            let (back, end) = echo_through(&data, room);
            assert_eq!(end, End::Fin, "room {room}");
            assert_eq!(back.len(), data.len(), "room {room}");
            assert!(back == data, "room {room}: bytes differ");
        }
    }

    #[test]
    fn garbage_is_a_protocol_failure_and_silence_a_timeout() {
        let tls = Tls::load(&Files::default(), Duration::from_secs(10)).unwrap();
        let now = Instant::now();
        let mut server = TlsConn::new(&tls.config, now, tls.handshake_timeout).unwrap();
        let mut core = Conn::new(now, Pending::new());
        let mut pipe = Pipe {
            server_room: 1 << 20,
            ..Pipe::default()
        };
        pipe.to_server.extend(b"GET / HTTP/1.0\r\n\r\n");
        let mut buf = vec![0u8; 4096];
        let turn = server.turn(&mut core, &mut ServerEnd(&mut pipe), now, &mut buf, &mut 0);
        assert_eq!(turn, Turn::Close(End::Error(EPROTO)));
        assert_eq!(server.failure(), Some(Failure::Protocol));

        let mut server = TlsConn::new(&tls.config, now, tls.handshake_timeout).unwrap();
        let mut core = Conn::new(now, Pending::new());
        let t = Timeouts {
            idle: Some(Duration::from_secs(300)),
            send: None,
        };
        let mut pipe = Pipe::default();
        let turn = server.turn(&mut core, &mut ServerEnd(&mut pipe), now, &mut buf, &mut 0);
        assert_eq!(
            turn,
            Turn::Wait {
                read: true,
                write: false
            }
        );
        let due = server.deadline(&core, &t).unwrap();
        assert_eq!(due, now + Duration::from_secs(10));
        assert!(!server.on_timer(&mut core, now + Duration::from_secs(9), &t));
        assert!(server.on_timer(&mut core, due, &t));
        assert_eq!(core.end(), Some(End::Idle));
        assert_eq!(server.failure(), Some(Failure::Timeout));
    }

    #[test]
    fn ciphertext_the_socket_will_not_take_is_a_stall() {
        // Small enough that the core keeps nothing: only rustls holds it,
        // so the core alone would wait for the idle timeout.
        let data = vec![5u8; 1000];
        let tls = Tls::load(&Files::default(), Duration::from_secs(10)).unwrap();
        let t0 = Instant::now();
        let mut server = TlsConn::new(&tls.config, t0, tls.handshake_timeout).unwrap();
        let mut core = Conn::new(t0, Pending::new());
        let mut client =
            rustls::ClientConnection::new(client_config(), "localhost".try_into().unwrap())
                .unwrap();
        let mut pipe = Pipe::default();
        let mut buf = vec![0u8; 64 * 1024];
        let t = Timeouts {
            idle: Some(Duration::from_secs(300)),
            send: Some(Duration::from_secs(3)),
        };
        // The handshake (and the tickets after it) with room to write.
        let mut step = |client: &mut rustls::ClientConnection, pipe: &mut Pipe, room| {
            while client.wants_write() {
                let mut out = Vec::new();
                client.write_tls(&mut out).unwrap();
                pipe.to_server.extend(out);
            }
            pipe.server_room = room;
            server.turn(&mut core, &mut ServerEnd(pipe), t0, &mut buf, &mut 0);
            let incoming: Vec<u8> = pipe.to_client.drain(..).collect();
            let mut rd = &incoming[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets().unwrap();
            }
        };
        for _ in 0..10 {
            step(&mut client, &mut pipe, 1 << 20);
        }
        assert!(!client.is_handshaking());
        // Now the client sends and never reads: rustls takes the echo from
        // the core, the socket takes none of its ciphertext.
        client.writer().write_all(&data).unwrap();
        step(&mut client, &mut pipe, 0);
        assert!(!server.handshaking());
        assert!(core.store().is_empty(), "the core kept the echo");
        let due = server.deadline(&core, &t).unwrap();
        assert!(due <= t0 + Duration::from_secs(3), "{due:?}");
        assert!(server.on_timer(&mut core, t0 + Duration::from_secs(3), &t));
        assert_eq!(core.end(), Some(End::Stall));
    }

    #[test]
    fn a_fin_before_the_handshake_ends_is_an_eof_failure() {
        let tls = Tls::load(&Files::default(), Duration::from_secs(10)).unwrap();
        let now = Instant::now();
        let mut server = TlsConn::new(&tls.config, now, tls.handshake_timeout).unwrap();
        let mut core = Conn::new(now, Pending::new());
        let mut pipe = Pipe {
            client_fin: true,
            ..Pipe::default()
        };
        let mut buf = vec![0u8; 4096];
        let turn = server.turn(&mut core, &mut ServerEnd(&mut pipe), now, &mut buf, &mut 0);
        assert_eq!(turn, Turn::Close(End::Fin));
        assert_eq!(server.failure(), Some(Failure::Eof));
    }
}
