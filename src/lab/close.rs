//! `lab close`: how a connection ends when both sides close at once, who
//! keeps TIME-WAIT, and what that means for a server restarted on its port.
//!
//! - simultaneous close: both ends shut down before either has the
//!   other's FIN; each side receives the other's FIN while waiting for the
//!   ACK of its own (CLOSING), so both ends go to TIME-WAIT. On loopback a
//!   FIN is delivered within microseconds, so two threads released
//!   together manage it only some of the time; instead each end first
//!   fills the other's receive buffer: with the window closed, each FIN
//!   waits behind its own unsent data, as two FINs cross on a long path,
//!   and goes out only when the other side reads. That makes it happen on
//!   every try, on a busy machine too;
//! - the end that closes first (the active closer) keeps TIME-WAIT;
//! - a server that closed first and restarts: its old connection's
//!   TIME-WAIT holds the port, so `bind` fails with EADDRINUSE unless the
//!   new listener sets SO_REUSEADDR.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::walkthrough::{conclusion, evidence, step};
use crate::error::{Error, Result};
use crate::watch::snapshot::Key;
use crate::watch::state::State;
use crate::watch::watcher::Watcher;

/// Simultaneous closes made, each counted.
const ATTEMPTS: usize = 10;
/// How long one try may take to drain both ends and settle.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(3);
/// How long the FINs and ACKs get before the table is read.
const SETTLE: Duration = Duration::from_millis(20);
/// The socket buffers asked for in the simultaneous close: small, so
/// filling them is quick (the kernel doubles and rounds the figure).
const SMALL_BUF: usize = 4096;

/// The state of one connection end in the table (CLOSED if absent).
fn state_of(w: &mut Watcher, local: SocketAddr, remote: SocketAddr) -> Result<State> {
    let snap = w.sockets()?;
    Ok(snap
        .get(&Key { local, remote })
        .map_or(State::Closed, |s| s.state))
}

/// A listener with SO_REUSEADDR on or off (std always sets it on).
fn listener(addr: SocketAddr, reuse: bool) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(reuse)?;
    s.bind(&SockAddr::from(addr))?;
    s.listen(16)?;
    Ok(s.into())
}

/// A server that closes its connection first and exits, then a new one
/// binding its port, both with SO_REUSEADDR `reuse` (Linux lets a bind
/// share the port with a TIME-WAIT socket only when both set it). Returns
/// the old server end's state, the client end's, and the new bind's result.
fn restart(reuse: bool) -> Result<(State, State, String)> {
    let io = Error::io;
    let any = "127.0.0.1:0"
        .parse()
        .map_err(|_| Error::Lab("address".into()))?;
    let first = listener(any, reuse).map_err(io("binding the first server"))?;
    let port_addr = first.local_addr().map_err(io("reading the address"))?;
    let mut w = Watcher::new(port_addr.port(), None)?;
    let c = TcpStream::connect(port_addr).map_err(io("connecting"))?;
    let (s, _) = first.accept().map_err(io("accepting"))?;
    let (cl, sl) = (
        c.local_addr().map_err(io("reading an address"))?,
        s.local_addr().map_err(io("reading an address"))?,
    );
    drop(s); // the server closes first: the active closer
    std::thread::sleep(SETTLE);
    drop(c);
    drop(first);
    std::thread::sleep(SETTLE);
    let server_end = state_of(&mut w, sl, cl)?;
    let client_end = state_of(&mut w, cl, sl)?;
    evidence(&format!(
        "SO_REUSEADDR {}: server end {sl} -> {cl}: {server_end}; client end: {client_end}",
        if reuse { "on" } else { "off" }
    ));
    let result = match listener(port_addr, reuse) {
        Ok(_) => "bound".to_string(),
        Err(e) => e.raw_os_error().map_or(e.to_string(), |n| {
            format!("{:?}", nix::errno::Errno::from_raw(n))
        }),
    };
    Ok((server_end, client_end, result))
}

/// Writes to `s` (non-blocking) until the kernel takes no more: the
/// peer's receive buffer is full, its window closed, and what is left
/// waits unsent in `s`'s send buffer.
fn fill(s: &mut TcpStream, until: Instant) -> Result<()> {
    let chunk = [b'x'; SMALL_BUF];
    while Instant::now() < until {
        match s.write(&chunk) {
            Ok(_) => {}
            // Full: exactly what this wants.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("filling the peer's buffer")(e)),
        }
    }
    Err(Error::Lab("the buffers did not fill in time".into()))
}

/// Reads both ends (non-blocking) until each has the other's FIN.
fn drain(a: &mut TcpStream, b: &mut TcpStream, until: Instant) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut eof = [false, false];
    while eof != [true, true] {
        if Instant::now() >= until {
            return Err(Error::Lab("the ends did not drain in time".into()));
        }
        let mut moved = false;
        for (i, s) in [&mut *a, &mut *b].into_iter().enumerate() {
            if eof[i] {
                continue;
            }
            match s.read(&mut buf) {
                Ok(0) => eof[i] = true,
                Ok(_) => moved = true,
                // Nothing yet: the other end's data is on its way.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading")(e)),
            }
        }
        if !moved {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// One connection closed from both ends at once: each end's FIN queued
/// behind data the other has no room for, both shut down, then both read.
/// Returns the two ends' addresses and states after.
fn simultaneous(
    l: &TcpListener,
    w: &mut Watcher,
) -> Result<(SocketAddr, SocketAddr, State, State)> {
    let io = Error::io;
    let addr = l.local_addr().map_err(io("reading the address"))?;
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(io("creating a socket"))?;
    // Before connect, so the window scale and buffers are small from the SYN.
    sock.set_recv_buffer_size(SMALL_BUF)
        .and_then(|()| sock.set_send_buffer_size(SMALL_BUF))
        .map_err(io("setting the buffer sizes"))?;
    sock.connect(&SockAddr::from(addr))
        .map_err(io("connecting"))?;
    let mut c: TcpStream = sock.into();
    let (mut s, _) = l.accept().map_err(io("accepting"))?;
    let (cl, sl) = (
        c.local_addr().map_err(io("reading an address"))?,
        s.local_addr().map_err(io("reading an address"))?,
    );
    let until = Instant::now() + ATTEMPT_LIMIT;
    for e in [&c, &s] {
        e.set_nonblocking(true)
            .map_err(io("setting non-blocking"))?;
    }
    fill(&mut c, until)?;
    fill(&mut s, until)?;
    // Both FINs now wait behind unsent data: neither can reach the other
    // end before both are queued.
    c.shutdown(Shutdown::Write).map_err(io("shutting down"))?;
    s.shutdown(Shutdown::Write).map_err(io("shutting down"))?;
    drain(&mut c, &mut s, until)?;
    // The last ACKs: wait until both ends have left CLOSING.
    let (mut a, mut b);
    loop {
        std::thread::sleep(SETTLE);
        (a, b) = (state_of(w, cl, sl)?, state_of(w, sl, cl)?);
        if (a == State::TimeWait && b == State::TimeWait) || Instant::now() >= until {
            break;
        }
    }
    drop((c, s));
    Ok((cl, sl, a, b))
}

/// Runs the scenario.
pub(crate) fn run() -> Result<()> {
    let io = Error::io;
    step(
        1,
        "a simultaneous close",
        &format!(
            "Both ends of one connection shut down before either has the other's FIN. \
             On loopback a FIN arrives within microseconds, so this lab first makes each \
             end send more than the other will take: with the receiver's window closed, \
             each FIN waits behind its own unsent data (as two FINs cross on a long \
             path), and goes out only when the other side reads. Expect: each side gets \
             the other's FIN while waiting for the ACK of its own (CLOSING), and both \
             end in TIME-WAIT, on each of {ATTEMPTS} tries."
        ),
    );
    let l = listener(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| Error::Lab("address".into()))?,
        true,
    )
    .map_err(io("binding"))?;
    // Accepted sockets take their buffer sizes from the listener.
    let lr = socket2::SockRef::from(&l);
    lr.set_recv_buffer_size(SMALL_BUF)
        .and_then(|()| lr.set_send_buffer_size(SMALL_BUF))
        .map_err(io("setting the buffer sizes"))?;
    let addr = l.local_addr().map_err(io("reading the address"))?;
    let mut w = Watcher::new(addr.port(), None)?;
    let (mut tries, mut both) = (0usize, 0usize);
    let mut example = None;
    while tries < ATTEMPTS {
        tries += 1;
        let (cl, sl, a, b) = simultaneous(&l, &mut w)?;
        if a == State::TimeWait && b == State::TimeWait {
            both += 1;
            example.get_or_insert((cl, sl));
        } else {
            evidence(&format!("try {tries}: {cl} -> {sl} {a}, {sl} -> {cl} {b}"));
        }
    }
    match example {
        Some((cl, sl)) => evidence(&format!(
            "both ends in TIME-WAIT: {cl} -> {sl} and {sl} -> {cl} (each passed through CLOSING)"
        )),
        None => evidence("no try left both ends in TIME-WAIT"),
    }
    evidence(&format!("simultaneous closes: {both} of {tries} tries"));

    step(
        2,
        "TIME-WAIT stays with the active closer, and holds the port",
        "A server closes its connection first, then exits, and a new server binds \
         the same port. Expect: the server's end in TIME-WAIT, bind() failing with \
         EADDRINUSE without SO_REUSEADDR, and succeeding with it.",
    );
    let (server_end, client_end, without) = restart(false)?;
    evidence(&format!(
        "new server on the port, both without SO_REUSEADDR: {without}"
    ));
    let (_, _, with) = restart(true)?;
    evidence(&format!(
        "new server on the port, both with SO_REUSEADDR: {with}"
    ));
    conclusion(&format!(
        "simultaneous close (both ends TIME-WAIT) in {both} of {tries} tries; the active closer's end \
         was {server_end}, the other {client_end}; restart without SO_REUSEADDR: {without}, with: {with}"
    ))
}
