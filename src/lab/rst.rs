//! `lab rst`: three ways a TCP connection meets a reset (RST) instead of
//! the orderly FIN exchange, each shown by the error the application gets.
//!
//! - a connect to a port nobody listens on: the SYN is answered by RST,
//!   `connect` fails with ECONNREFUSED;
//! - a close with `SO_LINGER` set to 0 s: the kernel drops unsent data and
//!   sends RST instead of FIN; the peer's read fails with ECONNRESET;
//! - a write to a peer that has closed: the peer's kernel answers the data
//!   with RST; the next write fails with EPIPE (SIGPIPE is ignored here,
//!   as Rust programs do).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use socket2::SockRef;

use super::walkthrough::{STEP_TIMEOUT, conclusion, evidence, step};
use crate::error::{Error, Result};
use crate::trace::Tracer;

/// How long to let a reset arrive before the next step looks.
const SETTLE: Duration = Duration::from_millis(100);

/// The error's name as errno knows it, or the error itself.
fn errno_name(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(|n| format!("{:?}", nix::errno::Errno::from_raw(n)))
        .unwrap_or_else(|| e.to_string())
}

/// Shows the segments the capture holds, if there is one (root).
fn show_trace(t: &mut Option<Tracer>) -> Result<()> {
    if let Some(t) = t.as_mut() {
        for l in t.pump(SETTLE, usize::MAX)? {
            if !l.trim_start().starts_with('|') {
                evidence(&l);
            }
        }
    }
    Ok(())
}

/// Runs the scenario.
pub(crate) fn run() -> Result<()> {
    let io = Error::io;
    step(
        1,
        "a connect to a closed port",
        "Nobody listens on the port: expect the SYN answered by RST and connect() \
         failing with ECONNREFUSED at once (no timeout).",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("finding a free port"))?
        .port();
    let mut tracer = Tracer::open("lo", port, false).ok();
    if tracer.is_none() {
        evidence("(no capture: needs root; the errors below still show the resets)");
    }
    let refused = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => "connected (something listens there)".to_string(),
        Err(e) => errno_name(&e),
    };
    evidence(&format!("connect(127.0.0.1:{port}) failed: {refused}"));
    show_trace(&mut tracer)?;

    step(
        2,
        "a close with SO_LINGER 0",
        "The server sets SO_LINGER to 0 seconds and closes: expect RST instead of \
         FIN, and the client's read failing with ECONNRESET instead of returning 0.",
    );
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding"))?;
    let addr = l.local_addr().map_err(io("reading the address"))?;
    let mut tracer = Tracer::open("lo", addr.port(), false).ok();
    let mut c = TcpStream::connect(addr).map_err(io("connecting"))?;
    c.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(io("setting a timeout"))?;
    let (s, _) = l.accept().map_err(io("accepting"))?;
    SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .map_err(io("setting SO_LINGER"))?;
    drop(s);
    std::thread::sleep(SETTLE);
    let mut b = [0u8; 16];
    let reset = match c.read(&mut b) {
        Ok(0) => "read returned 0 (a FIN, not a reset)".to_string(),
        Ok(n) => format!("read {n} bytes"),
        Err(e) => errno_name(&e),
    };
    evidence(&format!("client read after the server's close: {reset}"));
    show_trace(&mut tracer)?;

    step(
        3,
        "a write to a peer that has gone",
        "The server closes normally (FIN); the client writes anyway. Expect the \
         first write to succeed (the data leaves), the server's kernel to answer \
         it with RST, and the second write to fail with EPIPE.",
    );
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding"))?;
    let addr = l.local_addr().map_err(io("reading the address"))?;
    let mut tracer = Tracer::open("lo", addr.port(), false).ok();
    let mut c = TcpStream::connect(addr).map_err(io("connecting"))?;
    let (s, _) = l.accept().map_err(io("accepting"))?;
    drop(s);
    std::thread::sleep(SETTLE);
    let first = match c.write(b"anyone there?\n") {
        Ok(n) => format!("wrote {n} bytes"),
        Err(e) => errno_name(&e),
    };
    std::thread::sleep(SETTLE);
    let second = match c.write(b"hello?\n") {
        Ok(n) => format!("wrote {n} bytes"),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => errno_name(&e),
        Err(e) => errno_name(&e),
    };
    evidence(&format!("first write: {first}; second write: {second}"));
    show_trace(&mut tracer)?;
    conclusion(&format!(
        "connect to a closed port: {refused}; read after a SO_LINGER 0 close: {reset}; \
         write after the peer's RST: {second}"
    ))
}
