//! `lab nagle`: why a request written in two pieces can wait 40 ms.
//!
//! The client writes a small header, then the body, then reads the reply.
//! With Nagle's algorithm (RFC 896) the body may not leave while the
//! header is unacknowledged; the server, waiting for the whole request,
//! has nothing to send and delays its ACK (Linux: at least 40 ms,
//! `TCP_ATO_MIN`) in the hope of riding it on a reply. Each exchange then
//! stalls for the delayed-ACK timer. TCP_NODELAY sends the body at once.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::walkthrough::{STEP_TIMEOUT, conclusion, evidence, step};
use crate::error::{Error, Result};
use crate::sys::stop;
use crate::trace::Tracer;

/// Exchanges per setting: enough for the kernel to leave its quick-ACK
/// start (the first segments of a connection are ACKed at once) and to
/// give a stable median.
const ROUNDS: usize = 20;
/// Longest the capture thread runs, whatever happens to the exchanges.
const CAPTURE_LIMIT: Duration = Duration::from_secs(10);
/// The request's two pieces.
const HEADER: &[u8] = b"GET ";
const BODY: &[u8] = b"/index.html\n";

/// One connection's round-trip times, Nagle on or off.
/// With a capture (root), the last exchange's segments are shown.
fn exchanges(nodelay: bool) -> Result<Vec<Duration>> {
    let io = |what: &'static str| Error::io(what);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding the lab server"))?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the lab address"))?;
    // The capture is read on a thread of its own while the exchanges run,
    // so each segment's time is when it passed, and the stall shows.
    let done = Arc::new(AtomicBool::new(false));
    let capture = Tracer::open("lo", addr.port(), false).ok().map(|mut t| {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let end = Instant::now() + CAPTURE_LIMIT;
            while !done.load(Ordering::SeqCst) && Instant::now() < end {
                match t.pump(Duration::from_millis(5), usize::MAX) {
                    Ok(l) => lines.extend(l),
                    Err(_) => break,
                }
            }
            if let Ok(l) = t.pump(Duration::from_millis(20), usize::MAX) {
                lines.extend(l);
            }
            lines
        })
    });
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(STEP_TIMEOUT))?;
        let mut req = vec![0u8; HEADER.len() + BODY.len()];
        for _ in 0..ROUNDS {
            s.read_exact(&mut req)?;
            s.write_all(b"ok\n")?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr).map_err(io("connecting to the lab server"))?;
    c.set_nodelay(nodelay).map_err(io("setting TCP_NODELAY"))?;
    c.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(io("setting a read timeout"))?;
    let mut times = Vec::with_capacity(ROUNDS);
    let mut reply = [0u8; 3];
    for _ in 0..ROUNDS {
        if stop::requested() {
            break;
        }
        let t0 = Instant::now();
        c.write_all(HEADER).map_err(io("writing the header"))?;
        c.write_all(BODY).map_err(io("writing the body"))?;
        c.read_exact(&mut reply).map_err(io("reading the reply"))?;
        times.push(t0.elapsed());
    }
    drop(c);
    let _ = server.join();
    done.store(true, Ordering::SeqCst);
    if let Some(h) = capture {
        let lines: Vec<String> = h
            .join()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !l.trim_start().starts_with('|'))
            .collect();
        // The last exchange and the close: with Nagle, the gap between the
        // header's segment and the body's is the delayed ACK.
        let last = lines.len().saturating_sub(12);
        evidence(&format!(
            "the last exchange{} in the trace:",
            if nodelay {
                " with TCP_NODELAY"
            } else {
                " with Nagle"
            }
        ));
        for l in &lines[last..] {
            evidence(l);
        }
    }
    Ok(times)
}

/// The median, in milliseconds.
pub(crate) fn median_ms(times: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    match ms.len() {
        0 => 0.0,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

/// Runs the scenario.
pub(crate) fn run() -> Result<()> {
    step(
        1,
        "Nagle's algorithm meets the delayed ACK",
        "The client writes a 4-byte header, then a 12-byte body, then reads the \
         reply, 20 times on one connection. Expect: with Nagle on, the body waits \
         for the header's ACK, which the server delays (40 ms on Linux) because it \
         has nothing to send yet: about 40 ms per exchange. The first exchange is \
         fast all the same: a new connection starts in quick-ACK mode (Linux ACKs its \
         first segments at once, so the sender's window can grow), so the header's \
         ACK comes back at once and the body follows; once the server has answered a \
         request, the kernel takes the connection for an interactive one and delays \
         its ACKs, hoping to carry them on a reply. With TCP_NODELAY the body goes \
         at once: well under a millisecond.",
    );
    let nagle = exchanges(false)?;
    evidence(&format!(
        "Nagle on:     {}",
        nagle
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(" ")
            + " ms"
    ));
    let nodelay = exchanges(true)?;
    evidence(&format!(
        "TCP_NODELAY:  {}",
        nodelay
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(" ")
            + " ms"
    ));
    conclusion(&format!(
        "median {:.1} ms with Nagle, {:.2} ms with TCP_NODELAY",
        median_ms(&nagle),
        median_ms(&nodelay)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        let d = |ms: u64| Duration::from_millis(ms);
        assert_eq!(median_ms(&[d(40), d(1), d(41)]), 40.0);
        assert_eq!(median_ms(&[d(1), d(3)]), 2.0);
        assert_eq!(median_ms(&[]), 0.0);
    }
}
