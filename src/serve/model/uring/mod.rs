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
//!   [`crate::serve::contract::timers`]), or at most [`TICK`](tuning::TICK) to notice the stop flag
//!   and accept pauses.
//! - **Fair share of the ring**: a connection paused for backpressure, or
//!   whose echo waits for the client to read, while it holds provided
//!   buffers is listed; when more than half of the ring is out, or any
//!   receive finds it empty (ENOBUFS), every listed connection *spills*: its
//!   send is cancelled, its held bytes are copied into its own heap buffer,
//!   its buffers go back to the ring, and its echo goes on from that copy
//!   (see `held.rs`). A client that never reads therefore ends up
//!   holding no buffer at all, only its copy (about [`HELD_BYTES`](tuning::HELD_BYTES) plus one
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
//! - `bufs.rs`: the provided-buffer ring's memory, and all of its `unsafe`;
//! - `ledger.rs`: who holds each provided buffer, and when it goes back
//!   (pure);
//! - `held.rs`: what a connection holds between receive and echo, and its
//!   spill (pure);
//! - `policy.rs`: how a connection receives, and when it must spill (pure);
//! - `flight.rs`: requests in flight, each owning its memory until its
//!   completion, and the one `unsafe` submission, with the soundness
//!   argument;
//! - `op.rs`: the operation tag in each request's user_data;
//! - `tuning.rs`: sizes, pauses and their environment knobs;
//! - `turn.rs`: what a path's turn takes from the worker and gives back;
//! - `conn.rs`: a connection and the [`conn::Path`] it is on, one of:
//!   - `plain.rs`: echo from provided buffers;
//!   - `tls.rs`: TLS, with its own buffers;
//!   - `spliced.rs`: a connection on its pipe (zero copy);
//! - `accept.rs`: multishot accepts and admission;
//! - `worker.rs`: the completion loop, which hands every completion to
//!   its connection's path and does what follows (deadline, or
//!   cancel-then-close) once for all three. Each drives the connection
//!   core ([`crate::serve::contract`]).
//!
//! # Tuning and testing knobs
//! Read once at start, from the environment:
//! - `NETECHO_URING_BUFS`: provided buffers per worker ring, a power of two
//!   from 1 to 32768 (default [`DEFAULT_BUFS`](tuning::DEFAULT_BUFS));
//! - `NETECHO_URING_BUF_SIZE`: bytes per buffer, 1 to 1 MiB (default
//!   [`DEFAULT_BUF_SIZE`](tuning::DEFAULT_BUF_SIZE)).
//!
//! Tests shrink both to force buffer exhaustion with a handful of clients.
//!
//! # Kernel requirements
//! Linux 6.0 or later (multishot receive), io_uring allowed by
//! `kernel.io_uring_disabled` and any seccomp filter; [`probe`] checks all of
//! it by doing the real thing once on a socket pair.

mod accept;
mod bufs;
mod conn;
mod flight;
mod held;
mod ledger;
mod op;
mod plain;
mod policy;
mod ring;
mod spliced;
mod tls;
mod tuning;
mod turn;
mod worker;

use std::io;
use std::net::TcpListener;
use std::sync::mpsc;

use tracing::{error, info};

use crate::error::{Error, Result};
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::supervise;
pub use ring::probe;
use tuning::Tuning;
use worker::Worker;

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
