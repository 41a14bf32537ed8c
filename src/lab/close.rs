//! `lab close`: how a connection ends when both sides close at once, who
//! keeps TIME-WAIT, and what that means for a server restarted on its port.
//!
//! - simultaneous close: both FINs in flight at once; each side receives
//!   the other's FIN while waiting for the ACK of its own (CLOSING), so
//!   both ends go to TIME-WAIT. On loopback a FIN is delivered within
//!   microseconds, so two threads released together manage it only some of
//!   the time: the scenario tries a bounded number of times and counts;
//! - the end that closes first (the active closer) keeps TIME-WAIT;
//! - a server that closed first and restarts: its old connection's
//!   TIME-WAIT holds the port, so `bind` fails with EADDRINUSE unless the
//!   new listener sets SO_REUSEADDR.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::walkthrough::step;
use super::{conclusion, evidence};
use crate::error::{Error, Result};
use crate::watch::Watcher;
use crate::watch::snapshot::Key;
use crate::watch::state::State;

/// Most attempts at a simultaneous close, and the time they may take.
const ATTEMPTS: usize = 100;
const ATTEMPT_LIMIT: Duration = Duration::from_secs(3);
/// How long the FINs and ACKs get before the table is read.
const SETTLE: Duration = Duration::from_millis(20);

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

/// Runs the scenario.
pub(crate) fn run() -> Result<()> {
    let io = Error::io;
    step(
        1,
        "a simultaneous close",
        &format!(
            "Two threads released together each shut down their end of one \
             connection. Expect: when both FINs are in flight at once, each side is in \
             CLOSING and both end in TIME-WAIT; when one FIN arrives first, the usual \
             close (only the first closer in TIME-WAIT). Up to {ATTEMPTS} tries."
        ),
    );
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding"))?;
    let addr = l.local_addr().map_err(io("reading the address"))?;
    let mut w = Watcher::new(addr.port(), None)?;
    let (mut tries, mut both) = (0usize, 0usize);
    let until = Instant::now() + ATTEMPT_LIMIT;
    let mut example = None;
    while tries < ATTEMPTS && Instant::now() < until {
        tries += 1;
        let c = TcpStream::connect(addr).map_err(io("connecting"))?;
        let (s, _) = l.accept().map_err(io("accepting"))?;
        let (cl, sl) = (
            c.local_addr().map_err(io("reading an address"))?,
            s.local_addr().map_err(io("reading an address"))?,
        );
        let gate = Arc::new(Barrier::new(2));
        let g = Arc::clone(&gate);
        let other = std::thread::spawn(move || {
            g.wait();
            let _ = s.shutdown(Shutdown::Write);
            s
        });
        gate.wait();
        let _ = c.shutdown(Shutdown::Write);
        let s = other
            .join()
            .map_err(|_| Error::Lab("the closing thread panicked".into()))?;
        std::thread::sleep(SETTLE);
        let (a, b) = (state_of(&mut w, cl, sl)?, state_of(&mut w, sl, cl)?);
        if a == State::TimeWait && b == State::TimeWait {
            both += 1;
            example.get_or_insert((cl, sl));
        }
        drop((c, s));
        if both > 0 && tries >= 10 {
            break;
        }
    }
    match example {
        Some((cl, sl)) => evidence(&format!(
            "both ends in TIME-WAIT: {cl} -> {sl} and {sl} -> {cl} (each passed through CLOSING)"
        )),
        None => evidence(
            "no try had both FINs in flight at once (the machine is busy or one FIN was always first)",
        ),
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
