//! The kernel floors.
//!
//! One thread ([`measure`]): owning both ends of a loopback TCP connection,
//! it does write/read/write/read of the message size in a loop. Half its
//! CPU per round trip is the one read and one write a server must make per
//! request: the least any syscall-per-message server can pay on this
//! kernel. Its message never leaves one core's cache, though, so at 64 KiB
//! and more no real server comes near it.
//!
//! Two threads ([`measure_two`]), one per core: a sender on the load's CPU
//! writes a message and reads it back, an echoing end on the server's CPU
//! reads it and writes it back, both blocking. The echoing thread's CPU per
//! round trip is one read, one write and one wake-up with the bytes coming
//! from another core: the floor a server with a real client can reach.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::thread::JoinHandleExt;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nix::sys::socket::MsgFlags;

use super::traffic::Traffic;
use crate::bench::{procstat, spawn};
use crate::error::{Error, Result};
use crate::net::pattern;
use crate::sys::proc;

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

/// The two-thread floor for `len`-byte messages over `window`: the echoing
/// thread pinned to `server_cpu`, the sender to `load_cpu` (when given).
/// Returns the figures, with CPU per request being the echoing thread's CPU
/// per round trip, and the sender's CPU per round trip in µs.
pub(crate) fn measure_two(
    len: usize,
    window: Duration,
    server_cpu: Option<usize>,
    load_cpu: Option<usize>,
) -> Result<(Traffic, f64)> {
    fn err(what: &'static str) -> impl Fn(io::Error) -> Error {
        move |e| floor_error(format!("two threads: {what}: {e}"))
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(err("bind"))?;
    let addr = listener.local_addr().map_err(err("local_addr"))?;
    let sender = TcpStream::connect(addr).map_err(err("connect"))?;
    let (echoer, _) = listener.accept().map_err(err("accept"))?;
    for s in [&sender, &echoer] {
        s.set_nodelay(true).map_err(err("TCP_NODELAY"))?;
        // A peer that stops (an error on the other side) ends the run.
        s.set_read_timeout(Some(STUCK))
            .map_err(err("SO_RCVTIMEO"))?;
    }
    let echo = thread::Builder::new()
        .name("floor-2t-echo".into())
        .spawn(move || -> Result<()> {
            if let Some(cpu) = server_cpu {
                spawn::pin_current_thread(cpu)?;
            }
            echo_until_eof(echoer, len)
        })
        .map_err(Error::io("starting the two-thread floor's echoing thread"))?;
    // The pthread id names the echoing thread until it is joined below,
    // after the sender is done with its clock.
    let echo_thread = echo.as_pthread_t();
    let send = thread::Builder::new()
        .name("floor-2t-send".into())
        .spawn(move || -> Result<(Traffic, f64)> {
            if let Some(cpu) = load_cpu {
                spawn::pin_current_thread(cpu)?;
            }
            let clock = thread_clock(echo_thread)?;
            send_and_time(sender, len, window, clock)
        })
        .map_err(Error::io("starting the two-thread floor's sending thread"))?;
    let sent = send
        .join()
        .unwrap_or_else(|_| Err(floor_error("its sending thread panicked".into())));
    let echoed = echo
        .join()
        .unwrap_or_else(|_| Err(floor_error("its echoing thread panicked".into())));
    let sent = sent?;
    echoed?;
    Ok(sent)
}

/// No byte for this long on the two-thread floor's blocking sockets means
/// the other thread has stopped.
const STUCK: Duration = Duration::from_secs(5);

/// Reads `buf.len()` bytes with MSG_WAITALL: one blocking read and one
/// wake-up per message where the kernel can, as an event loop that reads
/// what is there would see it. `Ok(false)`: the peer closed before the
/// first byte.
fn recv_whole(s: &TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut got = 0;
    while got < buf.len() {
        match nix::sys::socket::recv(s.as_raw_fd(), &mut buf[got..], MsgFlags::MSG_WAITALL) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            // A signal: read the rest.
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// The echoing end: reads each `len`-byte message whole and writes it
/// back, until the sender closes.
fn echo_until_eof(mut s: TcpStream, len: usize) -> Result<()> {
    let mut buf = vec![0u8; len];
    loop {
        match recv_whole(&s, &mut buf) {
            // The sender is done: a clean end between messages.
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(floor_error(format!("two threads: echo read: {e}"))),
        }
        s.write_all(&buf)
            .map_err(|e| floor_error(format!("two threads: echo write: {e}")))?;
    }
}

/// The sending end: round trips for [`WARMUP`], then for `window`, each
/// message checked; the echoing thread's CPU is read on `echo_clock` as the
/// window opens and closes.
fn send_and_time(
    mut s: TcpStream,
    len: usize,
    window: Duration,
    echo_clock: libc::clockid_t,
) -> Result<(Traffic, f64)> {
    let mut msg = vec![0u8; len];
    pattern::fill(0, 0, &mut msg);
    let mut buf = vec![0u8; len];
    let mut hist = Histogram::<u64>::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG)
        .map_err(|e| floor_error(format!("histogram: {e}")))?;
    let mut trip = |s: &mut TcpStream| -> Result<()> {
        s.write_all(&msg)
            .and_then(|()| match recv_whole(s, &mut buf)? {
                true => Ok(()),
                false => Err(io::ErrorKind::UnexpectedEof.into()),
            })
            .map_err(|e| floor_error(format!("two threads: round trip: {e}")))?;
        if buf != msg {
            return Err(floor_error("two threads: the echo differs".into()));
        }
        Ok(())
    };
    let warm_end = Instant::now() + WARMUP;
    while Instant::now() < warm_end {
        trip(&mut s)?;
    }
    let (echo0, own0) = (clock_ns(echo_clock)?, thread_cpu_ns()?);
    let machine0 = procstat::machine_busy_ns()?;
    let t0 = Instant::now();
    let mut trips: u64 = 0;
    let mut now = t0;
    while now - t0 < window && trips < MAX_TRIPS {
        let start = now;
        trip(&mut s)?;
        now = Instant::now();
        let ns = u64::try_from((now - start).as_nanos()).unwrap_or(u64::MAX);
        hist.saturating_record(ns.max(1));
        trips += 1;
    }
    let echo_ns = clock_ns(echo_clock)?.saturating_sub(echo0);
    let own_ns = thread_cpu_ns()?.saturating_sub(own0);
    let machine_ns = procstat::machine_busy_ns()?.saturating_sub(machine0);
    drop(s); // the echoing thread sees EOF and ends
    let secs = (now - t0).as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let per_trip = |ns: u64| ns as f64 / trips.max(1) as f64 / 1e3;
    Ok((
        Traffic {
            req_s: trips as f64 / secs,
            mb_s: (trips * len as u64) as f64 / secs / 1e6,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            cpu_us: per_trip(echo_ns),
            machine_us: per_trip(machine_ns),
        },
        per_trip(own_ns),
    ))
}

/// The CPU-time clock of another thread of this process.
fn thread_clock(thread: libc::pthread_t) -> Result<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `thread` is a thread of this process that has not been joined
    // (its JoinHandle is held by our caller until we return); `clock` is a
    // valid, writable clockid_t.
    let rc = unsafe { libc::pthread_getcpuclockid(thread, &mut clock) };
    if rc != 0 {
        return Err(floor_error(format!(
            "pthread_getcpuclockid: {}",
            io::Error::from_raw_os_error(rc)
        )));
    }
    Ok(clock)
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
        .map_err(|e| floor_error(format!("histogram: {e}")))?;
    let warm_end = Instant::now() + WARMUP;
    while Instant::now() < warm_end {
        carry(&mut a, &mut b, msg, &mut buf)?;
        carry(&mut b, &mut a, msg, &mut buf)?;
    }
    let cpu0 = thread_cpu_ns()?;
    let machine0 = procstat::machine_busy_ns()?;
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
    let machine_ns = procstat::machine_busy_ns()?.saturating_sub(machine0);
    let secs = (now - t0).as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    Ok(Traffic {
        req_s: trips as f64 / secs,
        mb_s: (trips * len as u64) as f64 / secs / 1e6,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        cpu_us: cpu_ns as f64 / trips.max(1) as f64 / 2.0 / 1e3,
        // Per half round trip too, as `cpu_us`: the machine is this thread.
        machine_us: machine_ns as f64 / trips.max(1) as f64 / 2.0 / 1e3,
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

/// CPU time of the calling thread, in ns, as a floor error if unreadable.
fn thread_cpu_ns() -> Result<u64> {
    proc::thread_cpu_ns().map_err(|e| floor_error(format!("clock_gettime: {e}")))
}

/// The time of `clock` in ns, as a floor error if unreadable.
fn clock_ns(clock: libc::clockid_t) -> Result<u64> {
    proc::clock_ns(clock).map_err(|e| floor_error(format!("clock_gettime({clock}): {e}")))
}
