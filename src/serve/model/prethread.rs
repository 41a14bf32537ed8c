//! `prethread`: a pool of worker threads, each polling the listeners,
//! accepting and serving one client at a time. No thread is created per
//! connection while the pool has an idle one, so a connection usually costs
//! only its accept.
//!
//! The pool grows and shrinks like prefork's (the same rules, in
//! `serve::pool::sizing`): `--workers` threads start at once and are the least
//! kept; the busy threads plus the clients waiting in the accept queue plus
//! `--min-spare` is how many it needs, and what is missing starts in one
//! batch; idle threads beyond `--max-spare`, or idle longer than
//! `--worker-idle-timeout`, retire after the client they hold; at most
//! `--max-conns` + 1 exist, the last one idle to turn away clients over
//! the limit. The main thread supervises through the `serve::pool::scoreboard`
//! (the same atomics as prefork's, in one process).

use std::net::TcpListener;

use crate::error::Result;
use crate::serve::admission::Permit;
use crate::serve::blocking::accept;
use crate::serve::blocking::echo;
use crate::serve::contract::BUF_SIZE;
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::handover;
use crate::serve::lifecycle::supervise;
use crate::serve::pool::scoreboard::{Scoreboard, Supervisor};

/// Stack of a worker thread: the echo loop needs little (its buffer is on
/// the heap), and a small stack keeps a pool of a thousand threads cheap in
/// address space (the same as `thread`'s connection threads).
const WORKER_STACK: usize = 128 * 1024;

/// Starts the pool and serves until a signal stops the server.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let listeners: &'static [TcpListener] = listeners.leak();
    let mut pool = Supervisor::new(ctx)?;
    let board = pool.board();
    pool.start_minimum(|slot| spawn(slot, board, listeners, ctx))?;
    handover::ready();
    while ctx.shutdown.stops() == 0 {
        pool.wait(ctx.shutdown);
        handover::on_wake(ctx);
        if ctx.shutdown.stops() > 0 {
            break;
        }
        pool.step(listeners, |slot| spawn(slot, board, listeners, ctx));
    }
    supervise::stop_accepting(listeners, ctx);
    supervise::drain(ctx, || ctx.stats.active() == 0);
    Ok(())
}

/// Starts the worker thread for scoreboard slot `slot`.
fn spawn(
    slot: usize,
    board: Scoreboard,
    listeners: &'static [TcpListener],
    ctx: &'static Ctx,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("prethread-{slot}"))
        .stack_size(WORKER_STACK)
        .spawn(move || worker(slot, board, listeners, ctx))
        .map(drop)
}

/// A worker: accept, serve, repeat, until the listeners shut down or it is
/// asked to retire (after the client it holds, never during); then its
/// slot is free for the next thread.
fn worker(slot: usize, board: Scoreboard, listeners: &[TcpListener], ctx: &'static Ctx) {
    let mut buf = vec![0u8; BUF_SIZE];
    let leave = || board.retiring(slot);
    while !leave() {
        let accept::Next::Conn(conn, peer, tls) =
            accept::next_unless(listeners, ctx, &leave, &|p| ctx.admit(p))
        else {
            break;
        };
        board.hold(slot, peer.ip());
        echo::serve(conn, peer, Permit::admitted(ctx, &peer), tls, ctx, &mut buf);
        board.idle(slot);
    }
    board.free(slot);
}
