//! `lab backlog`: a listener that never calls accept. The kernel finishes
//! handshakes by itself and queues the connections (the accept queue, its
//! length is the listener's Recv-Q in `ss`); once the queue holds
//! backlog + 1, Linux drops further SYNs, so those clients stay in
//! SYN-SENT and retransmit their SYN (after 1 s, then 3 s, ...). When
//! accept finally runs, the queue drains and the retried SYNs get in.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::walkthrough::{conclusion, evidence, step};
use crate::error::{Error, Result};
use crate::sys::stop;
use crate::trace::Tracer;
use crate::watch::state::State;
use crate::watch::watcher::Watcher;

/// The listen backlog: the queue holds one more than this on Linux.
const BACKLOG: i32 = 2;
/// Clients started at once, more than the queue holds.
const CLIENTS: usize = 5;
/// How long the listener does not accept: past the first SYN retry (1 s).
const NO_ACCEPT: Duration = Duration::from_millis(1300);
/// How long accept may take to serve every client (the second retry comes
/// 3 s after the first SYN).
const SERVE_LIMIT: Duration = Duration::from_secs(8);

/// Runs the scenario.
pub(crate) fn run() -> Result<()> {
    let io = Error::io;
    step(
        1,
        "a listener that never accepts",
        &format!(
            "listen(fd, {BACKLOG}) and no accept; {CLIENTS} clients connect at once. Expect: \
             {} connections complete their handshake and wait in the accept queue (the \
             listener's Recv-Q), the other SYNs are dropped, so those clients stay in \
             SYN-SENT and send their SYN again after 1 s; once accept runs, every client \
             is served.",
            BACKLOG + 1
        ),
    );
    let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(io("creating the listener"))?;
    let any: SocketAddr = "127.0.0.1:0"
        .parse()
        .map_err(|_| Error::Lab("address".into()))?;
    listener
        .bind(&SockAddr::from(any))
        .and_then(|()| listener.listen(BACKLOG))
        .map_err(io("listening"))?;
    let addr = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| Error::Lab("the listener has no address".into()))?;
    let port = addr.port();
    let mut tracer = Tracer::open("lo", port, false).ok();
    let mut watcher = Watcher::new(port, None)?;
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let c = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .map_err(io("creating a client"))?;
        c.set_nonblocking(true)
            .map_err(io("making a client non-blocking"))?;
        match c.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(io("connecting a client")(e)),
        }
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    let snap = watcher.sockets()?;
    let queued = snap
        .iter()
        .find(|(k, s)| k.local.port() == port && s.state == State::Listen)
        .map_or(0, |(_, s)| s.rq);
    let syn_sent = snap
        .iter()
        .filter(|(k, s)| k.remote.port() == port && s.state == State::SynSent)
        .count();
    evidence(&format!(
        "after 0.2 s: listener Recv-Q (accept queue) = {queued}, backlog {BACKLOG}; clients in SYN-SENT: {syn_sent}"
    ));
    for (k, s) in &snap {
        if k.remote.port() == port {
            evidence(&format!("  client {} -> {} {}", k.local, k.remote, s.state));
        }
    }
    std::thread::sleep(NO_ACCEPT.saturating_sub(t0.elapsed()));
    let mut retries = 0;
    if let Some(t) = tracer.as_mut() {
        let mut syns: std::collections::BTreeMap<String, usize> = Default::default();
        for l in t.pump(Duration::from_millis(50), usize::MAX)? {
            let w: Vec<&str> = l.split_whitespace().collect();
            // `t client ADDR -> server ADDR FLAGS ...`; notes start with `|`.
            if w.get(6) == Some(&"SYN") {
                *syns.entry(w[2].to_string()).or_insert(0) += 1;
            }
        }
        for (client, n) in &syns {
            evidence(&format!("  client {client}: {n} SYN(s) in the capture"));
        }
        retries = syns.values().map(|n| n - 1).sum();
        evidence(&format!("SYNs sent again (in the capture): {retries}"));
    } else {
        evidence("(no capture: needs root; the SYN-SENT clients above are the ones retrying)");
    }
    step(
        2,
        "accept runs",
        "The listener now accepts and echoes one byte per connection.",
    );
    listener
        .set_nonblocking(true)
        .map_err(io("making the listener non-blocking"))?;
    let mut served = 0usize;
    let mut last = Duration::ZERO;
    let until = Instant::now() + SERVE_LIMIT;
    while served < CLIENTS && Instant::now() < until && !stop::requested() {
        match listener.accept() {
            Ok((s, _)) => {
                let mut s: TcpStream = s.into();
                s.set_nonblocking(false).map_err(io("accepting"))?;
                let mut b = [0u8; 1];
                s.write_all(b"x").map_err(io("writing to a client"))?;
                served += 1;
                last = t0.elapsed();
                let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
                let _ = s.read(&mut b);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io("accepting")(e)),
        }
    }
    let mut answered = 0;
    for c in clients {
        let mut c: TcpStream = c.into();
        let _ = c.set_nonblocking(false);
        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
        let mut b = [0u8; 1];
        if c.read(&mut b).is_ok_and(|n| n == 1) {
            answered += 1;
        }
    }
    evidence(&format!(
        "accepted {served} of {CLIENTS}, the last {:.2} s after the connects; {answered} clients read their byte",
        last.as_secs_f64()
    ));
    conclusion(&format!(
        "the accept queue held {queued} of {CLIENTS} connections (backlog {BACKLOG}); {syn_sent} stayed in SYN-SENT \
         ({retries} SYN retransmissions captured); {answered} of {CLIENTS} served once accept ran, the last after {:.2} s",
        last.as_secs_f64()
    ))
}
