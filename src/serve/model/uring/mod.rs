//! `uring`: a completion loop on io_uring per worker thread.
//!
//! # Design
//! `--workers` threads each own one ring and serve the connections they
//! accept, with no lock and no state shared beyond [`Stats`](crate::serve::service::stats::Stats).
//! - **Accept**: one multishot accept per listener per ring; every accepted
//!   descriptor gets TCP_NODELAY and passes `--max-conns` before it is served.
//! - **Receive**: one multishot receive per connection, with the buffer
//!   chosen by the kernel from this worker's provided-buffer ring when bytes
//!   arrive. An idle connection therefore holds no read buffer at all: ten
//!   thousand idle clients cost ten thousand small structs, not ten thousand
//!   buffers. Where the kernel consumes buffers incrementally
//!   (`IOU_PBUF_RING_INC`, trusted from Linux 6.15: `bufs.rs` says why) a
//!   receive takes only the bytes it brings, so one 64 KiB buffer holds a
//!   thousand 64-byte messages from as many connections; without it each
//!   receive takes a whole buffer, and
//!   300 connections of small messages run the 64-buffer ring dry (1.5× the
//!   C io_uring server's CPU per request, against 1.0× incremental, in one
//!   `cargo bench --bench models` run).
//! - **Echo**: each received piece is sent back from where the kernel put
//!   it; a short send is resubmitted from where it stopped; a buffer returns
//!   to the ring once the kernel is done with it and the last byte of every
//!   piece in it is sent. Bytes are never copied.
//! - **Backpressure**: a connection holding more than about
//!   [`BUF_SIZE`](crate::serve::contract::BUF_SIZE) of unsent echo has its receive cancelled. From then
//!   on it receives one buffer per request, and only while it holds fewer
//!   than that (a multishot receive can post a burst of buffers before a
//!   cancel lands; single receives cannot). Whatever clients send, a worker
//!   never holds more than `NETECHO_URING_BUFS × NETECHO_URING_BUF_SIZE`
//!   bytes of echo.
//! - **Buffer exhaustion**: a receive that finds the ring empty ends with
//!   ENOBUFS; the connection waits, and is re-armed as soon as any buffer
//!   comes back, so no connection stalls while others make progress.
//! - **Time**: the loop waits for completions until the first connection
//!   deadline (`--idle-timeout`, `--stall-timeout`: the timer rule of
//!   [`crate::serve::contract::timers`]), or at most [`TICK`] to notice the stop flag
//!   and accept pauses.
//! - **Fair share of the ring**: a connection paused for backpressure, or
//!   whose echo waits for the client to read, while it holds provided
//!   buffers is listed; when more than half of the ring is out, or any
//!   receive finds it empty (ENOBUFS), every listed connection *spills*: its
//!   send is cancelled, its held bytes are copied into its own heap buffer,
//!   its buffers go back to the ring, and its echo goes on from that copy
//!   (see `worker::Held`). A client that never reads therefore ends up
//!   holding no buffer at all, only its copy (about [`HELD_BYTES`] plus one
//!   buffer, or the one burst it took before its first pause), and blocks
//!   nobody but itself; clients that read keep the no-copy path.
//! - **Zero copy** (`--zero-copy`, default `auto`): a connection whose
//!   receive brings at least [`crate::serve::transport::splice::SWITCH_AT`] bytes at
//!   once (`on`: every connection, from the start) moves, once nothing is
//!   kept, to a per-connection pipe: a multishot poll on the ring says when
//!   the socket is ready, and splice(2) moves the bytes socket → pipe →
//!   socket without copying them (`spliced.rs` says why not
//!   IORING_OP_SPLICE). The decision and the splicing are the epoll
//!   model's own code ([`crate::serve::transport::splice`]); TLS never splices.
//! - **Stop**: after a signal the accepts are cancelled and never re-armed,
//!   connections are served until they end, and the worker leaves its loop
//!   when it has none left. Leaving, for any reason, cancels whatever is still
//!   in flight, waits for the kernel to let go of every buffer, then closes
//!   every descriptor.
//!
//! # Files
//! - `ring.rs`: ring setup and the start-up [`probe`];
//! - `bufs.rs`: the provided-buffer ring, and all of its `unsafe`;
//! - `op.rs`: the operation tag in each request's user_data;
//! - `spliced.rs`: a connection on its pipe (zero copy);
//! - `worker.rs`: the completion loop, which drives the connection core
//!   ([`crate::serve::contract`]) for every connection.
//!
//! # Tuning and testing knobs
//! Read once at start, from the environment:
//! - `NETECHO_URING_BUFS`: provided buffers per worker ring, a power of two
//!   from 1 to 32768 (default [`DEFAULT_BUFS`]);
//! - `NETECHO_URING_BUF_SIZE`: bytes per buffer, 1 to 1 MiB (default
//!   [`DEFAULT_BUF_SIZE`]).
//!
//! Tests shrink both to force buffer exhaustion with a handful of clients.
//!
//! # Kernel requirements
//! Linux 6.0 or later (multishot receive), io_uring allowed by
//! `kernel.io_uring_disabled` and any seccomp filter; [`probe`] checks all of
//! it by doing the real thing once on a socket pair.

mod bufs;
mod op;
mod ring;
mod spliced;
mod tls;
mod worker;

use std::io;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use tracing::{error, info};

use crate::error::{Error, Result};
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::supervise;
pub use ring::probe;
use worker::Worker;

/// Environment variable: provided buffers per worker ring.
pub(crate) const BUFS_ENV: &str = "NETECHO_URING_BUFS";
/// Environment variable: bytes per provided buffer.
pub(crate) const BUF_SIZE_ENV: &str = "NETECHO_URING_BUF_SIZE";
/// Buffers per worker ring: with [`DEFAULT_BUF_SIZE`], 4 MiB per worker.
/// The ring is recycled in order, so all of it is touched under load: a
/// bigger ring would cost resident memory that idle connections get charged.
pub(crate) const DEFAULT_BUFS: u16 = 64;
/// Bytes per buffer: a 64 KiB message arrives in one completion and goes
/// back in one send. Measured with `cargo bench --bench models` (64 KiB × 8
/// connections, server CPU per request against C epoll in the same run):
/// 16 KiB buffers cost 1.60–1.80×, 64 KiB buffers 1.04–1.16×, with no change
/// for 64 B messages.
pub(crate) const DEFAULT_BUF_SIZE: u32 = 64 * 1024;
/// The kernel's limit on entries in a provided-buffer ring.
pub(super) const MAX_BUFS: u32 = 32768;
/// Larger buffers would only make one connection pin more memory.
pub(super) const MAX_BUF_SIZE: u32 = 1 << 20;
/// Unsent echo a connection may hold before its receive is paused: the same
/// bound the blocking models keep with their single buffer.
pub(super) const HELD_BYTES: usize = crate::serve::contract::BUF_SIZE;

/// Submission queue entries per ring; a burst beyond it waits in a backlog.
pub(super) const RING_ENTRIES: u32 = 1024;
/// Completion queue entries per submission entry: multishot requests post
/// many completions each, and an overflow costs the kernel extra work.
pub(super) const CQ_FACTOR: u32 = 4;
/// The longest a worker sleeps in the kernel: how late it may notice the stop
/// flag, an idle connection or the end of an accept pause.
pub(super) const TICK: Duration = Duration::from_millis(250);
/// Accept pause after an error that is neither a resource shortage nor a
/// known transient: short, but never a busy loop.
pub(super) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long a leaving worker waits for the kernel to finish cancelled
/// requests before it gives up and leaks the buffer memory instead.
pub(super) const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Pause after the kernel refused to enter (EAGAIN: no memory for now).
pub(super) const ENTER_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Buffer group id of a worker's provided-buffer ring (one ring per io_uring).
pub(super) const BGID: u16 = 0;

/// Probe: entries of the throw-away ring.
pub(super) const PROBE_ENTRIES: u32 = 8;
/// Probe: buffers and their size in the throw-away buffer ring.
pub(super) const PROBE_BUFS: u16 = 2;
pub(super) const PROBE_BUF_SIZE: u32 = 64;
/// Probe: how long to wait for each expected completion.
pub(super) const PROBE_WAIT: Duration = Duration::from_secs(1);

/// The sizes of a worker's provided-buffer ring, from the environment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    /// Buffers in the ring, a power of two.
    pub(super) bufs: u16,
    /// Bytes per buffer.
    pub(super) buf_size: u32,
}

impl Tuning {
    /// Reads [`BUFS_ENV`] and [`BUF_SIZE_ENV`]; a bad value is an error, not
    /// a silent default, so a test never runs with sizes it did not ask for.
    fn from_env() -> Result<Tuning, String> {
        let bufs = env_u32(BUFS_ENV)?.unwrap_or(u32::from(DEFAULT_BUFS));
        if !bufs.is_power_of_two() || bufs > MAX_BUFS {
            return Err(format!(
                "{BUFS_ENV}={bufs}: must be a power of two from 1 to {MAX_BUFS}"
            ));
        }
        let buf_size = env_u32(BUF_SIZE_ENV)?.unwrap_or(DEFAULT_BUF_SIZE);
        if buf_size == 0 || buf_size > MAX_BUF_SIZE {
            return Err(format!(
                "{BUF_SIZE_ENV}={buf_size}: must be from 1 to {MAX_BUF_SIZE}"
            ));
        }
        let bufs = u16::try_from(bufs).map_err(|_| format!("{BUFS_ENV}={bufs}: too large"))?;
        Ok(Tuning { bufs, buf_size })
    }

    /// Buffers one connection may hold before its receive is paused, on top
    /// of the [`HELD_BYTES`] limit on the bytes in them: never more than half
    /// the ring, so that one client that stops reading cannot take every
    /// buffer by itself, and at least two, so that a message that arrived in
    /// two pieces is not a reason to pause.
    pub(super) fn held_cap(self) -> usize {
        let by_bytes = HELD_BYTES.div_ceil(self.buf_size as usize);
        let by_ring = (usize::from(self.bufs) / 2).max(1);
        by_bytes.max(2).min(by_ring)
    }
}

/// Parses one optional numeric environment variable.
fn env_u32(name: &str) -> Result<Option<u32>, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(format!("{name}: {e}")),
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("{name}={s:?}: {e}")),
    }
}

/// Serves until a signal stops the server: `--workers` threads, each with
/// its own ring, buffers and connections.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let unusable = |what: &'static str, kind: io::ErrorKind| {
        move |reason: String| Error::Io {
            what,
            source: io::Error::new(kind, reason),
        }
    };
    probe().map_err(unusable(
        "io_uring is not usable",
        io::ErrorKind::Unsupported,
    ))?;
    let tuning =
        Tuning::from_env().map_err(unusable("io_uring tuning", io::ErrorKind::InvalidInput))?;
    let workers = ctx.workers.max(1);
    info!(
        workers,
        bufs = tuning.bufs,
        buf_size = tuning.buf_size,
        "io_uring workers starting"
    );
    // Each worker reports whether its buffer ring is incremental.
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<bool>>();
    for n in 0..workers {
        // Whether each is a `--tls-listen` socket, told by the original
        // (a clone is another descriptor).
        let socks = listeners
            .iter()
            .map(|l| {
                let tls = ctx.tls.as_ref().is_some_and(|t| t.listens_on(l));
                l.try_clone().map(|c| (c, tls))
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(Error::io("duplicating a listener for an io_uring worker"))?;
        let ready = ready_tx.clone();
        std::thread::Builder::new()
            .name(format!("uring-{n}"))
            .spawn(move || worker_main(socks, ctx, tuning, ready))
            .map_err(Error::io("starting an io_uring worker"))?;
    }
    drop(ready_tx);
    let mut incremental = true;
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(inc)) => incremental &= inc,
            Ok(Err(source)) => {
                return Err(Error::Io {
                    what: "setting up an io_uring worker",
                    source,
                });
            }
            Err(_) => {
                return Err(Error::Io {
                    what: "setting up an io_uring worker",
                    source: io::Error::other("worker ended before reporting"),
                });
            }
        }
    }
    // The 64 B x 300 benchmark figure depends on it (see the module doc).
    info!(
        incremental,
        "io_uring provided buffers {}",
        if incremental {
            "consumed incrementally"
        } else {
            "taken whole (incremental needs Linux 6.15)"
        }
    );
    supervise::until_stopped(listeners, ctx);
    Ok(())
}

/// One worker thread: builds its ring (reporting success or failure on
/// `ready`, so `run` fails at start rather than serving with fewer workers),
/// serves, and tears down.
fn worker_main(
    socks: Vec<(TcpListener, bool)>,
    ctx: &'static Ctx,
    tuning: Tuning,
    ready: mpsc::Sender<io::Result<bool>>,
) {
    let mut worker = match Worker::new(socks, ctx, tuning) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(worker.incremental()));
    drop(ready);
    if let Err(e) = worker.serve() {
        error!("io_uring worker failed: {e}; closing its connections");
    }
    worker.exit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_cap_is_about_one_echo_buffer_and_at_most_half_the_ring() {
        let t = |bufs, buf_size| Tuning { bufs, buf_size }.held_cap();
        assert_eq!(t(256, 16 * 1024), 4);
        assert_eq!(t(64, 64 * 1024), 2);
        assert_eq!(t(256, 1 << 20), 2);
        assert_eq!(t(4, 1024), 2);
        assert_eq!(t(1, 1024), 1);
    }
}
