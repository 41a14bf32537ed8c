//! Client sockets: connecting with a deadline, echo round trips, how a
//! connection ended.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::*;

/// Connects with a timeout and sets read/write timeouts on the stream.
pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// [`try_connect`] that fails the test with the address on error.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Upper bound on any single read-to-EOF: far beyond what the largest test
/// payload needs, so only a server that trickles forever can reach it.
const READ_DEADLINE: Duration = Duration::from_secs(120);
/// A server that sends this much more than it was sent is broken; stop
/// reading instead of collecting its garbage forever.
const EXTRA_LIMIT: usize = 64 * KIB;

/// Reads until EOF. A reset or timeout is an error naming how much came first.
pub fn read_to_eof(s: &mut TcpStream, expect_len: usize) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut got = Vec::with_capacity(expect_len);
    let mut buf = vec![0u8; 64 * KIB];
    while Instant::now() < deadline {
        if got.len() > expect_len + EXTRA_LIMIT {
            return Err(format!(
                "the server sent over {} bytes for {expect_len} sent",
                got.len()
            ));
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "reading the echo after {} of {expect_len} bytes: {e} ({:?}) \
                     (a reset means the server did not close with a FIN)",
                    got.len(),
                    e.kind()
                ));
            }
        }
    }
    Err(format!(
        "no EOF within {READ_DEADLINE:?}; {} of {expect_len} bytes came",
        got.len()
    ))
}

/// Reads exactly `n` bytes (each read bounded by the socket's timeout).
pub fn read_exact_n(s: &mut TcpStream, n: usize) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut got = vec![0u8; n];
    let mut off = 0;
    while off < n {
        if Instant::now() >= deadline {
            return Err(format!("only {off} of {n} bytes within {READ_DEADLINE:?}"));
        }
        match s.read(&mut got[off..]) {
            Ok(0) => return Err(format!("EOF after {off} of {n} bytes")),
            Ok(k) => off += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read after {off} of {n} bytes: {e}")),
        }
    }
    Ok(got)
}

/// Writes `payload` in chunk sizes drawn from `rng`.
fn write_chunked(s: &mut TcpStream, payload: &[u8], rng: &mut Rng) -> Result<(), String> {
    let mut off = 0;
    while off < payload.len() {
        let end = (off + rng.chunk_size()).min(payload.len());
        s.write_all(&payload[off..end])
            .map_err(|e| format!("write at offset {off} of {}: {e}", payload.len()))?;
        off = end;
    }
    Ok(())
}

/// The full echo check on an open connection: one thread writes `payload` in
/// random chunks then half-closes, while this thread reads concurrently until
/// the server's FIN; the echo must equal the payload byte for byte.
pub fn echo_check(s: &mut TcpStream, payload: &[u8], seed: u64) -> Result<(), String> {
    let mut writer = s
        .try_clone()
        .map_err(|e| format!("cloning the socket: {e}"))?;
    std::thread::scope(|scope| {
        let w = scope.spawn(move || {
            let mut rng = Rng::new(seed);
            let r = write_chunked(&mut writer, payload, &mut rng);
            // Half-close even after a failed write, so the reader sees an end.
            let _ = writer.shutdown(Shutdown::Write);
            r
        });
        let got = read_to_eof(s, payload.len());
        let wrote = w
            .join()
            .unwrap_or_else(|_| Err("writer thread panicked".into()));
        let got = got?;
        wrote?;
        compare("echo", payload, &got)
    })
}

/// Connects, runs [`echo_check`], closes.
pub fn round_trip(addr: SocketAddr, payload: &[u8], seed: u64) -> Result<(), String> {
    let mut s = try_connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    echo_check(&mut s, payload, seed)
}

/// Writes `msg` and reads exactly its echo back, leaving the connection open.
pub fn ping(s: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    s.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let got = read_exact_n(s, msg.len())?;
    compare("ping", msg, &got)
}

/// What a read on a connection the server should have closed showed.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Read returned 0: the server's FIN.
    Fin,
    /// ECONNRESET (or EPIPE): the server closed with data unread.
    Reset,
    /// Bytes arrived: the connection was served.
    Data(usize),
    /// Nothing happened before the timeout.
    Open,
    /// Any other error.
    Other(String),
}

/// Waits up to `timeout` for the server to close `s`.
pub fn wait_closed(s: &mut TcpStream, timeout: Duration) -> Closed {
    if let Err(e) = s.set_read_timeout(Some(timeout)) {
        return Closed::Other(format!("set_read_timeout: {e}"));
    }
    let mut buf = [0u8; 4096];
    let r = loop {
        match s.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r,
        }
    };
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    match r {
        Ok(0) => Closed::Fin,
        Ok(n) => Closed::Data(n),
        Err(e) => match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Closed::Reset,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Closed::Open,
            _ => Closed::Other(e.to_string()),
        },
    }
}

/// True if the loopback has IPv6 (`::1` can be bound).
pub fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}
