//! The TLS session ([`Session`], in `netecho-core`: bytes in, bytes out)
//! over a non-blocking socket: what epoll, tokio and the blocking models
//! share. [`turn`] sends the ciphertext the session holds, lets it work,
//! and receives more, until the socket would block, and says what to wait
//! for; io_uring feeds the session from its own completions instead
//! (`model/uring/tls.rs`).

use std::io::{self, Read, Write};
use std::time::Instant;

use netecho_core::fault::tcp::{ReadGate, Shaper};
use netecho_core::tls::{RECV_CHUNK, Session, Turn as Step};

use crate::serve::contract::{Conn, Copied, End};

/// Rounds one [`turn`] may take before it lets other connections run
/// (a round moves at most a record's worth each way).
const BUDGET: usize = 64;

/// A non-blocking socket as [`turn`] sees it: reads and writes of
/// ciphertext, and our FIN.
pub(crate) trait Wire: Read + Write {
    /// `shutdown(SHUT_WR)`: our FIN after the close_notify.
    fn shut_write(&mut self) -> io::Result<()>;
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
    /// the session asked (the handshake ended; the core's end reached, for
    /// a driver that asked with [`Session::pause_at_shut`]).
    Again,
    /// The socket would block: a read (`read`) or a write (`write`) said
    /// `WouldBlock`; wake on that readiness or the session's deadline.
    Wait { read: bool, write: bool },
    /// Close the socket.
    Close(End),
}

/// Moves bytes between `wire` and the session until the socket would
/// block, the budget is used, or the connection is to close. `buf` is
/// scratch (plaintext for the session, ciphertext from the socket);
/// `bytes` counts the plaintext echoed.
pub(crate) fn turn<S: Copied, W: Wire>(
    tls: &mut Session,
    core: &mut Conn<S>,
    wire: &mut W,
    now: Instant,
    buf: &mut [u8],
    bytes: &mut u64,
) -> Turn {
    turn_shaped(tls, core, wire, now, buf, bytes, None)
}

/// [`turn`] for a connection with faults: `shaper` acts on the plaintext
/// ([`Session::process_shaped`]) and says when the socket may be read (not
/// at all once `stall-after` is reached). Its waits and ends are the
/// caller's (`serve::blocking::faulted`).
pub(crate) fn turn_shaped<S: Copied, W: Wire>(
    tls: &mut Session,
    core: &mut Conn<S>,
    wire: &mut W,
    now: Instant,
    buf: &mut [u8],
    bytes: &mut u64,
    mut shaper: Option<&mut Shaper>,
) -> Turn {
    let mut now = now;
    for _ in 0..BUDGET {
        let write_blocked = match flush(tls, core, wire, now) {
            Ok(blocked) => blocked,
            Err(()) => return Turn::Again,
        };
        let read = match tls.process_shaped(core, now, buf, bytes, shaper.as_deref_mut()) {
            Step::Again => return Turn::Again,
            Step::Close(end) => {
                // An alert for a refused handshake goes if the socket
                // takes it at once.
                let _ = flush(tls, core, wire, now);
                return Turn::Close(end);
            }
            Step::ShutWrite => {
                tls.on_shut(core, wire.shut_write());
                continue;
            }
            // New ciphertext while the socket still takes it: send it.
            Step::Wait { write: true, .. } if !write_blocked => continue,
            Step::Wait { read, .. } => read,
        };
        let gate_shut = shaper
            .as_deref()
            .is_some_and(|s| s.read_gate(now) != ReadGate::Open);
        if !read || gate_shut {
            // Only the socket draining (or the deadline) can help.
            return Turn::Wait {
                read: false,
                write: write_blocked,
            };
        }
        let room = RECV_CHUNK.min(buf.len());
        match wire.read(&mut buf[..room]) {
            // The FIN: the session tells the core (and rustls) next.
            Ok(0) => tls.on_fin(),
            Ok(n) => {
                tls.on_ciphertext(&buf[..n]);
                if shaper.is_some() {
                    // Faults hold echo from its arrival: this read's time,
                    // not the turn's start (the thread may have been
                    // preempted in between on a busy machine).
                    now = Instant::now();
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
            Err(e) => tls.on_io_error(core, &e),
        }
    }
    Turn::Again
}

/// Sends what the session holds until it is all out or the socket would
/// block (`Ok(true)`); `Err(())` when a signal interrupted the send.
fn flush<S: Copied, W: Wire>(
    tls: &mut Session,
    core: &mut Conn<S>,
    wire: &mut W,
    now: Instant,
) -> Result<bool, ()> {
    while core.end().is_none() || !tls.outgoing().is_empty() {
        let out = tls.outgoing();
        if out.is_empty() {
            return Ok(false);
        }
        match wire.write(out) {
            // A TCP send never takes 0 of a non-empty buffer.
            Ok(0) => {
                tls.on_io_error(core, &io::ErrorKind::WriteZero.into());
                return Ok(false);
            }
            Ok(n) => tls.on_sent(core, now, n),
            // The send buffer is full: wait until it drains.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(()),
            Err(e) => {
                tls.on_io_error(core, &e);
                return Ok(false);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::contract::pending::Pending;
    use crate::serve::transport::tls::{Files, Tls};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// The server's end of a socket pair, non-blocking.
    struct ServerEnd(UnixStream);

    impl Read for ServerEnd {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for ServerEnd {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Wire for ServerEnd {
        fn shut_write(&mut self) -> io::Result<()> {
            self.0.shutdown(std::net::Shutdown::Write)
        }
    }

    /// A rustls client on one end of a socket pair sends 1 MiB, reading
    /// as it goes, then close_notify and its FIN; [`turn`] on the other,
    /// non-blocking end (run again a millisecond after each `Wait`) echoes
    /// it all, counts it, and ends with close_notify and FIN, with the
    /// socket's partial writes and `WouldBlock`s on the way.
    #[test]
    fn echoes_a_mebibyte_over_a_real_socket_and_ends_with_fin() {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        server_end.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 241) as u8).collect();
        let sent = data.clone();
        let client = std::thread::spawn(move || {
            let config = crate::net::tls::client_config(None, true, false).unwrap();
            let name = "localhost".try_into().unwrap();
            let mut tls = rustls::ClientConnection::new(config, name).unwrap();
            let mut sock = client_end;
            sock.set_nonblocking(true).unwrap();
            let (mut off, mut back, mut closed) = (0, Vec::new(), false);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if !tls.is_handshaking() && off < sent.len() {
                    off += tls.writer().write(&sent[off..]).unwrap();
                } else if off == sent.len() && !closed {
                    tls.send_close_notify();
                    closed = true;
                }
                while tls.wants_write() {
                    match tls.write_tls(&mut sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("client write: {e}"),
                    }
                }
                if closed && !tls.wants_write() {
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                }
                match tls.read_tls(&mut sock) {
                    Ok(0) => return back,
                    Ok(_) => {
                        tls.process_new_packets().unwrap();
                        let mut chunk = [0u8; 16384];
                        while let Ok(n) = tls.reader().read(&mut chunk) {
                            if n == 0 {
                                break;
                            }
                            back.extend_from_slice(&chunk[..n]);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("client read: {e}"),
                }
            }
            panic!("the client gave up with {} bytes back", back.len());
        });
        let conf = Tls::load(&Files::default(), Duration::from_secs(10)).unwrap();
        let now = Instant::now();
        let mut tls = Session::new(&conf.config, now, conf.handshake_timeout).unwrap();
        let mut core = Conn::new(now, Pending::new());
        let mut wire = ServerEnd(server_end);
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0;
        let end = loop {
            match turn(
                &mut tls,
                &mut core,
                &mut wire,
                Instant::now(),
                &mut buf,
                &mut bytes,
            ) {
                Turn::Close(end) => break end,
                Turn::Again => {}
                // Readiness, as an event loop would wait for it.
                Turn::Wait { .. } => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let back = client.join().unwrap();
        assert_eq!(end, End::Fin);
        assert_eq!(bytes, data.len() as u64);
        assert!(
            back == data,
            "{} of {} bytes back, in order?",
            back.len(),
            data.len()
        );
    }
}
