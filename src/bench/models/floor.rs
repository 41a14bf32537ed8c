//! The kernel floor: one thread owning both ends of a loopback TCP
//! connection does write/read/write/read of the message size in a loop.
//! Half its CPU per round trip is the one read and one write a server must
//! make per request: the least any syscall-per-message server can pay on
//! this kernel.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::cell::Traffic;
use crate::bench::spawn;
use crate::error::{Error, Result};
use crate::net::pattern;

/// The floor's longest window: its clock counts nanoseconds of its own
/// thread, so one second is already far more than its resolution needs.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);
/// Untimed round trips before the window, to fault in the buffers.
const WARMUP: Duration = Duration::from_millis(100);
/// Bound on the round trips, far above what a window can reach, so no loop
/// depends on the clock alone to stop.
const MAX_TRIPS: u64 = 1_000_000_000;
/// Highest latency the histogram holds (ns); anything slower is clamped.
const HIST_MAX_NS: u64 = 60_000_000_000;
/// Significant figures of the latency histogram.
const HIST_SIGFIG: u8 = 3;
/// Rounds in a row that move no byte before loopback counts as stuck.
const MAX_IDLE_TRIES: u32 = 1_000_000;

/// The floor for `len`-byte messages over `window`, on a thread pinned to
/// `cpu` (the server's) when given.
pub(crate) fn measure(len: usize, window: Duration, cpu: Option<usize>) -> Result<Traffic> {
    thread::Builder::new()
        .name("kernel-floor".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                spawn::pin_current_thread(cpu)?;
            }
            ping_pong(len, window)
        })
        .map_err(Error::io("starting the kernel floor's thread"))?
        .join()
        .unwrap_or_else(|_| Err(floor_error("its thread panicked".into())))
}

/// A failure of the floor, as a cell error.
fn floor_error(what: String) -> Error {
    Error::Measure(format!("kernel floor: {what}"))
}

/// write/read/write/read over one loopback connection, both ends here.
fn ping_pong(len: usize, window: Duration) -> Result<Traffic> {
    fn err(what: &'static str) -> impl Fn(io::Error) -> Error {
        move |e| floor_error(format!("{what}: {e}"))
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(err("bind"))?;
    let addr = listener.local_addr().map_err(err("local_addr"))?;
    let mut a = TcpStream::connect(addr).map_err(err("connect"))?;
    let (mut b, _) = listener.accept().map_err(err("accept"))?;
    for s in [&a, &b] {
        s.set_nodelay(true).map_err(err("TCP_NODELAY"))?;
        // Non-blocking, so a 64 KiB write that does not fit at once is
        // finished after a read instead of deadlocking the one thread.
        s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
    }
    let mut msg = vec![0u8; len];
    pattern::fill(0, 0, &mut msg);
    let msg = &msg[..];
    let mut buf = vec![0u8; len];
    let mut hist = Histogram::<u64>::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG)
        .map_err(|e| floor_error(format!("histogram: {e:?}")))?;
    let warm_end = Instant::now() + WARMUP;
    while Instant::now() < warm_end {
        carry(&mut a, &mut b, msg, &mut buf)?;
        carry(&mut b, &mut a, msg, &mut buf)?;
    }
    let cpu0 = thread_cpu_ns()?;
    let t0 = Instant::now();
    let mut trips: u64 = 0;
    let mut now = t0;
    while now - t0 < window && trips < MAX_TRIPS {
        let start = now;
        carry(&mut a, &mut b, msg, &mut buf)?;
        carry(&mut b, &mut a, msg, &mut buf)?;
        now = Instant::now();
        let ns = u64::try_from((now - start).as_nanos()).unwrap_or(u64::MAX);
        hist.saturating_record(ns.max(1));
        trips += 1;
    }
    let cpu_ns = thread_cpu_ns()?.saturating_sub(cpu0);
    let secs = (now - t0).as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    Ok(Traffic {
        req_s: trips as f64 / secs,
        mb_s: (trips * len as u64) as f64 / secs / 1e6,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        cpu_us: cpu_ns as f64 / trips.max(1) as f64 / 2.0 / 1e3,
    })
}

/// Moves one message from `from` to `to`. On loopback a write's segments are
/// queued at the receiver before it returns, so this is normally one write
/// and one read; the retry bound only guards against a kernel that differs.
fn carry(from: &mut TcpStream, to: &mut TcpStream, msg: &[u8], buf: &mut [u8]) -> Result<()> {
    let (mut sent, mut recvd, mut idle) = (0, 0, 0);
    while recvd < msg.len() {
        let mut moved = false;
        if sent < msg.len() {
            match from.write(&msg[sent..]) {
                Ok(n) => {
                    sent += n;
                    moved |= n > 0;
                }
                // Full, or a signal: read some, then try again.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(floor_error(format!("write: {e}"))),
            }
        }
        if recvd < sent {
            match to.read(&mut buf[recvd..sent]) {
                Ok(0) => return Err(floor_error("unexpected EOF".into())),
                Ok(n) => {
                    recvd += n;
                    moved = true;
                }
                // Not there yet, or a signal: go round again.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(floor_error(format!("read: {e}"))),
            }
        }
        idle = if moved { 0 } else { idle + 1 };
        if idle > MAX_IDLE_TRIES {
            return Err(floor_error("loopback stopped moving bytes".into()));
        }
    }
    Ok(())
}

/// CPU time of the calling thread, in ns: the kernel's own count, to the
/// nanosecond, where `/proc` ticks would be 10 ms.
fn thread_cpu_ns() -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(floor_error(format!(
            "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}",
            io::Error::last_os_error()
        )));
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
