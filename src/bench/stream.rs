//! `netecho bench --stream`: the bandwidth-reflector load. Every connection
//! writes continuously while it reads its echo back, full duplex, for the
//! warm-up and `-d`; every byte that comes back is checked against the
//! stream it wrote ([`crate::net::pattern`], one message per chunk), and the
//! figure is MiB echoed per second in the measured window.
//!
//! Each connection has a writer and a reader thread on blocking sockets
//! (a stream needs no event loop: each side just moves bytes), so the
//! connection count is capped at [`MAX_CONNS`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::net::pattern;

/// Most connections a stream run drives (two threads each).
pub(crate) const MAX_CONNS: usize = 256;
/// Bytes per write, and the unit the pattern is made in.
pub(crate) const CHUNK: usize = 64 * 1024;
/// How long the reader waits for the rest of the echo after the writer's
/// FIN before the run counts as failed.
const DRAIN: Duration = Duration::from_secs(10);

/// What one run measured.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Bytes echoed back and checked within the measured window.
    pub(crate) bytes: u64,
    /// The measured window.
    pub(crate) secs: f64,
    /// Connections whose echo differed from what they wrote (or ended early).
    pub(crate) mismatches: u64,
    /// What went wrong first, in words, when anything did: a wrong byte
    /// (`mismatch on connection 3 at byte 70000`, as the closed loop says
    /// it), no byte for [`DRAIN`], or an error.
    pub(crate) first_failure: Option<String>,
}

impl Outcome {
    /// MiB echoed per second.
    pub(crate) fn mib_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / (1024.0 * 1024.0) / self.secs
        } else {
            0.0
        }
    }
}

/// Shared by every connection's threads.
struct Shared {
    /// The window is open: count what comes back.
    measuring: AtomicBool,
    /// Writers stop (and send their FIN).
    done: AtomicBool,
    /// Checked bytes read back while measuring.
    bytes: AtomicU64,
    mismatches: AtomicU64,
    /// The first failure, said in words.
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Shared {
    /// Counts one failed connection, and keeps `why` if it is the first.
    fn fail(&self, why: impl FnOnce() -> String) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_failure.lock()
            && first.is_none()
        {
            *first = Some(why());
        }
    }
}

/// An edge of the measured window, for [`run_observed`]'s observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    /// Bytes are counted from now.
    Open,
    /// No byte is counted after this.
    Close,
}

/// Streams over `conns` for `warmup`, then `window`; then every writer
/// half-closes and every reader checks the rest of its echo.
pub(crate) fn run(conns: Vec<TcpStream>, warmup: Duration, window: Duration) -> Result<Outcome> {
    run_observed(conns, warmup, window, |_| {})
}

/// [`run`], calling `at_edge` right as the window opens and closes: the
/// model benchmark reads the server's CPU there, so its CPU per MiB covers
/// the very bytes counted.
pub(crate) fn run_observed(
    conns: Vec<TcpStream>,
    warmup: Duration,
    window: Duration,
    mut at_edge: impl FnMut(Edge),
) -> Result<Outcome> {
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        done: AtomicBool::new(false),
        bytes: AtomicU64::new(0),
        mismatches: AtomicU64::new(0),
        first_failure: std::sync::Mutex::new(None),
    });
    let mut threads = Vec::with_capacity(conns.len() * 2);
    for (id, s) in conns.into_iter().enumerate() {
        let w = s.try_clone().map_err(Error::io("cloning a connection"))?;
        let (sw, sr) = (Arc::clone(&shared), Arc::clone(&shared));
        let id = id as u64;
        threads.push(
            std::thread::Builder::new()
                .name(format!("stream-w{id}"))
                .spawn(move || write_side(w, id, &sw))
                .map_err(Error::io("starting a stream thread"))?,
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("stream-r{id}"))
                .spawn(move || read_side(s, id, &sr))
                .map_err(Error::io("starting a stream thread"))?,
        );
    }
    std::thread::sleep(warmup);
    at_edge(Edge::Open);
    let start = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    // Bounded by the window, or a Ctrl-C.
    while start.elapsed() < window && !crate::sys::stop::requested() {
        std::thread::sleep(Duration::from_millis(20).min(window));
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    at_edge(Edge::Close);
    shared.done.store(true, Ordering::Relaxed);
    for t in threads {
        if t.join().is_err() {
            shared.fail(|| "a stream thread panicked".into());
        }
    }
    Ok(Outcome {
        bytes: shared.bytes.load(Ordering::Relaxed),
        secs,
        mismatches: shared.mismatches.load(Ordering::Relaxed),
        first_failure: shared.first_failure.lock().ok().and_then(|f| f.clone()),
    })
}

/// Writes chunk after chunk of connection `id`'s stream until told to
/// stop, then half-closes.
fn write_side(mut s: TcpStream, id: u64, sh: &Shared) {
    let mut buf = vec![0u8; CHUNK];
    pattern::fill(id, 0, &mut buf);
    // A write blocked on a server that stopped reading wakes to look at
    // the stop flag.
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let mut round = 0u64;
    let mut off = 0;
    while !sh.done.load(Ordering::Relaxed) {
        match s.write(&buf[off..]) {
            Ok(0) => break,
            Ok(n) => off += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                sh.fail(|| format!("connection {id}: writing failed: {e}"));
                return;
            }
        }
        if off == CHUNK {
            pattern::advance(&mut buf, round, round + 1);
            round += 1;
            off = 0;
        }
    }
    // The stream ends on a chunk boundary or not: the reader checks what
    // was written either way, byte for byte.
    let _ = s.shutdown(Shutdown::Write);
}

/// Reads connection `id`'s echo to EOF and checks every byte against the
/// stream its writer sends.
fn read_side(mut s: TcpStream, id: u64, sh: &Shared) {
    let mut want = vec![0u8; CHUNK];
    pattern::fill(id, 0, &mut want);
    let mut got = vec![0u8; CHUNK];
    let mut round = 0u64;
    let mut at = 0;
    let _ = s.set_read_timeout(Some(DRAIN));
    loop {
        let room = CHUNK - at;
        match s.read(&mut got[..room]) {
            Ok(0) => return,
            Ok(n) => {
                // One memcmp per read; the byte is looked for only once
                // the chunk is known to differ.
                if got[..n] != want[at..at + n] {
                    let i = (0..n).find(|&i| got[i] != want[at + i]).unwrap_or(0);
                    let byte = round * CHUNK as u64 + (at + i) as u64;
                    sh.fail(|| format!("mismatch on connection {id} at byte {byte}"));
                    return;
                }
                if sh.measuring.load(Ordering::Relaxed) {
                    sh.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                at += n;
                if at == CHUNK {
                    pattern::advance(&mut want, round, round + 1);
                    round += 1;
                    at = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // No byte for DRAIN (while running or after the FIN), a reset:
            // the echo did not come back whole.
            Err(e) => {
                let byte = round * CHUNK as u64 + at as u64;
                let stalled = matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                );
                sh.fail(|| match stalled {
                    true => format!(
                        "connection {id}: no echo for {} s after {byte} bytes",
                        DRAIN.as_secs()
                    ),
                    false => format!("connection {id}: reading failed after {byte} bytes: {e}"),
                });
                return;
            }
        }
    }
}
