//! One probe: its payload, the TCP stream (plain or TLS) it goes over, and
//! the exchange itself: write the payload and read its echo back at once,
//! on a non-blocking socket driven by poll(2), so a probe of any size
//! takes the echo's round trip and nothing of the tool's own pacing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, Result};
use crate::net::stray::{Recent, Stray};
use crate::net::tls::{Connector, describe};
use crate::net::{self, pattern};
use crate::sys::stop;

/// Pattern stream of ping payloads, apart from bench's connection ids.
const PING_STREAM: u64 = u64::MAX;
/// Bytes of the sequence number at the head of each payload (big-endian, so
/// it reads plainly in a packet capture).
const SEQ_BYTES: usize = 8;
/// Bytes read from the socket at a time.
const READ_BUF: usize = 256 * 1024;
/// Longest single wait in poll(2), so Ctrl-C is noticed quickly even when
/// the signal lands between two calls.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// How one probe ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The whole payload came back intact, after this long.
    Echoed(Duration),
    /// It did not; the failure says why, for the probe's line.
    Failed(Failure),
    /// Ctrl-C arrived while it was out: not counted.
    Interrupted,
}

/// Why a probe failed.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout,
    Mismatch {
        at: usize,
        sent: u8,
        got: u8,
        stream_at: Option<u64>,
    },
    /// A UDP echo whose length differs from the probe's.
    Length {
        got: usize,
        sent: usize,
    },
    Closed {
        got: usize,
    },
    /// The server reset the connection; `after`: how many bytes of the
    /// connection had come back, when known.
    Reset {
        after: Option<u64>,
    },
    Connect(Error),
    Io(io::Error),
}

impl Failure {
    /// A short machine-readable name, for `--json`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Mismatch { .. } => "mismatch",
            Failure::Length { .. } => "length",
            Failure::Closed { .. } => "closed",
            Failure::Reset { .. } => "reset",
            Failure::Connect(_) => "connect",
            Failure::Io(_) => "io",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "timed out"),
            Failure::Mismatch {
                at,
                sent,
                got,
                stream_at,
            } => {
                write!(
                    f,
                    "mismatch at byte {at} (sent 0x{sent:02x}, got 0x{got:02x})"
                )?;
                match stream_at {
                    Some(s) => write!(f, ", byte {s} of the connection"),
                    None => Ok(()),
                }
            }
            Failure::Length { got, sent } => {
                write!(f, "echo of {got} bytes for a probe of {sent}")
            }
            Failure::Closed { got } => {
                write!(
                    f,
                    "connection closed by the server after {got} bytes of the echo"
                )
            }
            Failure::Reset { after: None } => write!(f, "connection reset by the server"),
            Failure::Reset { after: Some(n) } => write!(
                f,
                "connection reset by the server after echoing {n} bytes of the connection"
            ),
            Failure::Connect(e) => write!(f, "{e}"),
            Failure::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Probe `seq`'s payload: the sequence number, then the pattern.
pub(crate) fn fill_payload(seq: u64, buf: &mut [u8]) {
    let head = buf.len().min(SEQ_BYTES);
    pattern::fill(PING_STREAM, seq, &mut buf[head..]);
    buf[..head].copy_from_slice(&seq.to_be_bytes()[SEQ_BYTES - head..]);
}

/// A probe's TCP stream, plain or under TLS, non-blocking.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The socket underneath, to poll.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// TLS records are waiting to be written.
    fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.conn.wants_write(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A handshake's duration and what was agreed (version, cipher suite).
pub(crate) type Handshake = (Duration, String);

/// A connected socket as a probe stream, after the TLS handshake with
/// `tls` (within `timeout`), made non-blocking for [`exchange`].
pub(crate) fn wrap_stream(
    mut s: TcpStream,
    timeout: Duration,
    tls: Option<&Connector>,
) -> Result<(Stream, Option<Handshake>)> {
    // Probes are written whole; Nagle would only add delay.
    let _ = s.set_nodelay(true);
    let (stream, hs) = match tls {
        None => (Stream::Plain(s), None),
        Some(c) => {
            let (conn, took) = c.handshake(&mut s, timeout)?;
            let about = describe(&conn);
            let stream = rustls::StreamOwned::new(conn, s);
            (Stream::Tls(Box::new(stream)), Some((took, about)))
        }
    };
    stream
        .tcp()
        .set_nonblocking(true)
        .map_err(Error::io("making the socket non-blocking"))?;
    Ok((stream, hs))
}

/// Connects to the first of `addrs` that answers, within `timeout` each.
pub(crate) fn connect(
    target: &str,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr)> {
    let s = net::connect_any(target, addrs, timeout)?;
    let addr = s
        .peer_addr()
        .map_err(Error::io("reading the server's address"))?;
    Ok((s, addr))
}

/// A read or write that would block, or timed out, as the OS reports it.
fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn io_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            Failure::Reset { after: None }
        }
        // TLS: the TCP stream ended without close_notify.
        io::ErrorKind::UnexpectedEof => Failure::Closed { got: 0 },
        _ => Failure::Io(e),
    }
}

/// Writes `payload` and reads exactly its length back by `deadline`,
/// checking every byte; `base` is the stream offset of the payload's
/// first byte, for the mismatch's position in the connection. Writing and
/// reading interleave, so a payload larger than the socket buffers flows
/// as fast as the server echoes it.
pub(crate) fn exchange(s: &mut Stream, payload: &[u8], deadline: Instant, base: u64) -> Outcome {
    let mut written = 0;
    let mut got = 0;
    let mut buf = vec![0u8; payload.len().clamp(1, READ_BUF)];
    loop {
        // Write what the socket takes.
        while written < payload.len() {
            match s.write(&payload[written..]) {
                Ok(0) => return Outcome::Failed(Failure::Closed { got }),
                Ok(n) => written += n,
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Failed(io_failure(e)),
            }
        }
        // TLS records still queued in rustls: push them out.
        if s.wants_write() {
            match s.flush() {
                Ok(()) => {}
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Failed(io_failure(e)),
            }
        }
        // Read what has come back, checking it.
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) => return Outcome::Failed(Failure::Closed { got }),
                Ok(n) => n,
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Outcome::Failed(match io_failure(e) {
                        // Where in the connection: every byte before came back.
                        Failure::Reset { .. } => Failure::Reset {
                            after: Some(base + got as u64),
                        },
                        other => other,
                    });
                }
            };
            let want = &payload[got..written];
            let bad = pattern::first_difference(want, &buf[..n])
                .or((n > want.len()).then_some(want.len()));
            if let Some(at) = bad {
                let at = got + at;
                return Outcome::Failed(Failure::Mismatch {
                    at,
                    // Past what was written: the byte that would come next.
                    sent: payload.get(at).copied().unwrap_or(0),
                    got: buf[at - got],
                    stream_at: Some(base + at as u64),
                });
            }
            got += n;
            if got == payload.len() {
                return Outcome::Echoed(Duration::ZERO);
            }
        }
        if stop::requested() {
            return Outcome::Interrupted;
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Outcome::Failed(Failure::Timeout);
        };
        let mut flags = PollFlags::POLLIN;
        if written < payload.len() || s.wants_write() {
            flags |= PollFlags::POLLOUT;
        }
        let wait = left.min(POLL_SLICE);
        let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(s.tcp().as_fd(), flags)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Outcome::Failed(Failure::Io(e.into())),
        }
    }
}

/// UDP echoes that were not the one awaited, late or duplicated
/// ([`crate::net::stray`]).
#[derive(Debug, Default)]
pub(crate) struct Strays {
    pub(crate) late: u64,
    pub(crate) duplicated: u64,
    /// The last probes, and which were answered.
    recent: Recent,
}

/// One UDP probe: send, then take datagrams until ours or the deadline.
/// An echo of an earlier probe (one of the last [`crate::net::stray::WINDOW`]) is
/// counted in `strays`, late or duplicated, and skipped.
pub(crate) fn udp_probe(
    sock: &UdpSocket,
    target: &str,
    timeout: Duration,
    (seq, payload): (u64, &[u8]),
    strays: &mut Strays,
) -> Outcome {
    let outcome = udp_round(sock, target, timeout, (seq, payload), strays);
    let answered = matches!(outcome, Outcome::Echoed(_));
    strays.recent.ended(seq, answered);
    outcome
}

/// [`udp_probe`] but for noting how the probe ended.
fn udp_round(
    sock: &UdpSocket,
    target: &str,
    timeout: Duration,
    (seq, payload): (u64, &[u8]),
    strays: &mut Strays,
) -> Outcome {
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    loop {
        match sock.send(payload) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if stop::requested() {
                    return Outcome::Interrupted;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Outcome::Failed(Failure::Connect(Error::Refused(target.to_string())));
            }
            Err(e) => return Outcome::Failed(Failure::Io(e)),
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut earlier = vec![0u8; payload.len()];
    loop {
        if stop::requested() {
            return Outcome::Interrupted;
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Outcome::Failed(Failure::Timeout);
        };
        let _ = sock.set_read_timeout(Some(left.min(POLL_SLICE)));
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Outcome::Failed(Failure::Connect(Error::Refused(target.to_string())));
            }
            Err(e) => return Outcome::Failed(Failure::Io(e)),
        };
        let got = &buf[..n];
        if got == payload {
            return Outcome::Echoed(t0.elapsed());
        }
        // An echo of an earlier probe, timed out or answered: already counted.
        let earlier_seq = (n == payload.len())
            .then(|| {
                Recent::earlier(seq).find(|s| {
                    fill_payload(*s, &mut earlier);
                    earlier == got
                })
            })
            .flatten();
        if let Some(s) = earlier_seq {
            match strays.recent.stray(s) {
                Stray::Late => strays.late += 1,
                Stray::Duplicated => strays.duplicated += 1,
            }
            continue;
        }
        return Outcome::Failed(match pattern::first_difference(payload, got) {
            Some(at) => Failure::Mismatch {
                at,
                sent: payload[at],
                got: got[at],
                stream_at: None,
            },
            None => Failure::Length {
                got: n,
                sent: payload.len(),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_the_sequence_number_and_differ() {
        let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
        fill_payload(3, &mut a);
        fill_payload(4, &mut b);
        assert_eq!(a[..8], 3u64.to_be_bytes());
        assert_ne!(a[8..], b[8..]);
        let mut tiny = [0u8; 2];
        fill_payload(0x0102, &mut tiny);
        assert_eq!(tiny, [1, 2]);
    }
}
