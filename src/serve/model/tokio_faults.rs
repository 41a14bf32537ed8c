//! A faulted plain-TCP connection in the `tokio` model, served as a task of
//! the worker's runtime like any other connection, not on a thread of its
//! own. What to do next is [`Step`]'s to say, as in every model
//! ([`faulted`]); this task only performs it with tokio's non-blocking
//! calls and waits on tokio's readiness and one tokio timer at the
//! earliest of its times (tokio's timer rounds a wake-up up to the next
//! millisecond).
//!
//! Latency is held from the bytes' arrival, the kernel's receive time
//! ([`faulted::recv_at`]). A faulted TLS connection still goes to a thread
//! of its own ([`faulted::spawn`]).

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use netecho_core::fault::tcp::Shaper;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant as TokioInstant, sleep_until};

use crate::serve::admission::Permit;
use crate::serve::blocking::faulted::{self, Action, Ending, Faulted, Finish, Ready, Step};
use crate::serve::contract::pending::Pending;
use crate::serve::contract::{Conn, End};
use crate::serve::ctx::Ctx;

/// How far ahead the timer is set when neither the core nor a fault has a
/// time: never, in practice.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// Steps a faulted connection takes before it lets the worker's other
/// connections run, as the plain paths do after their read budget:
/// try_read and try_write take no part in tokio's co-operative budget, so
/// without a yield a client that keeps sending would keep this task
/// running and starve the worker's other connections.
const STEPS_PER_YIELD: u32 = 16;

/// The worker's one read buffer (the tokio model's thread-local), borrowed
/// for each read: never across an await.
pub(super) type Buf = LocalKey<RefCell<Box<[u8]>>>;

/// Echoes on `stream` with the faults of `f` until the core or a fault
/// ends it, reading into the worker's `buf`. The `--max-conns` slot
/// (`permit`) is given back before the client can see the end
/// ([`Action::frees`]), as in every model.
pub(super) async fn serve(
    stream: &TcpStream,
    f: Faulted,
    ctx: &Ctx,
    permit: &mut Permit,
    buf: &'static Buf,
) -> End {
    faulted::stamp_arrivals(stream);
    let fd = stream.as_raw_fd();
    let timeouts = ctx.timeouts();
    let start = Instant::now();
    let mut core = Conn::new(start, Pending::new());
    let shaper = Shaper::new(start, f.effects, f.seed);
    let mut step = Step::new(start, f.peer, shaper, ctx.stats);
    let mut ready = Ready::BOTH;
    let mut steps: u32 = 0;
    loop {
        steps = steps.wrapping_add(1);
        if steps.is_multiple_of(STEPS_PER_YIELD) {
            tokio::task::yield_now().await;
        }
        let now = Instant::now();
        let action = step.next(&mut core, &timeouts, now, ready);
        if action.frees() {
            permit.release();
        }
        match action {
            Action::Close(end) => return end,
            Action::End(e) => return end_as(stream, e, buf).await,
            Action::ShutWrite => core.on_shut(SockRef::from(stream).shutdown(Shutdown::Write)),
            Action::Send(n) => match stream.try_write(&core.store().as_slice()[..n]) {
                Ok(w) => step.sent(&mut core, Instant::now(), w),
                // The send buffer is full: wait until it drains (or the
                // core's stall deadline).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.write = false,
                Err(e) => {
                    core.on_error(&e);
                }
            },
            Action::Read(want) => {
                let empty_at = step.empty_at();
                let got = buf.with_borrow_mut(|buf| {
                    let want = want.min(buf.len());
                    let got = stream.try_io(Interest::READABLE, || {
                        faulted::recv_at(fd, &mut buf[..want], empty_at).map_err(io::Error::from)
                    });
                    if let Ok((n, arrived)) = got {
                        step.received(&mut core, now, arrived, &mut buf[..n]);
                    }
                    got.map(|_| ())
                });
                match got {
                    Ok(()) => {}
                    // Nothing to read yet.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        step.read_empty(now);
                        ready.read = false;
                    }
                    Err(e) => {
                        core.on_error(&e);
                    }
                }
            }
            Action::Wait { read, write, until } => {
                if let Err(e) = wait(stream, read, write, until.unwrap_or(now + FAR)).await {
                    core.on_error(&e);
                }
                core.on_timer(Instant::now(), &timeouts);
                ready = Ready::BOTH;
            }
        }
    }
}

/// Waits until `stream` is readable (`read`), writable (`write`), or
/// `until` comes.
async fn wait(stream: &TcpStream, read: bool, write: bool, until: Instant) -> io::Result<()> {
    let until = TokioInstant::from_std(until);
    tokio::select! {
        r = stream.readable(), if read => r,
        r = stream.writable(), if write => r,
        () = sleep_until(until) => Ok(()),
    }
}

/// Ends `stream` as fault `e` says ([`faulted::finish`]), waiting on
/// tokio's readiness and timer.
async fn end_as(stream: &TcpStream, mut e: Ending, buf: &'static Buf) -> End {
    let mut readable = true;
    loop {
        match e.next(Instant::now(), readable) {
            Finish::Wait { read, until } => {
                // An error shows in the next read.
                let _ = wait(stream, read, false, until).await;
                readable = true;
            }
            f => {
                let end = buf.with_borrow_mut(|buf| {
                    // try_read: tokio's readiness sees its WouldBlock.
                    let mut discard = || stream.try_read(buf);
                    faulted::finish(f, &mut e, stream.as_fd(), &mut readable, &mut discard)
                });
                if let Some(end) = end {
                    return end;
                }
            }
        }
    }
}
