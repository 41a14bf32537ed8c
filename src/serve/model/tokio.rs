//! `tokio`: async tasks on tokio, one single-threaded runtime per worker.
//!
//! # Runtime: `--workers` current-thread runtimes, not one multi-thread one
//! Each worker thread runs its own `current_thread` runtime with an accept
//! task per listener (its own clone of each); a connection is a task on the
//! runtime that accepted it and never moves. This is the thread-per-core
//! shape of the `epoll` model, chosen because an echo connection's work is
//! tiny and independent of every other: a work-stealing runtime would add a
//! shared run queue, cross-thread wake-ups and atomics to every readiness
//! event and buy only rebalancing, which short echo work rarely needs. It
//! also makes the per-worker read buffer a plain thread-local, and keeps
//! the `epoll` vs `tokio` comparison about tokio's own cost, not about the
//! scheduler. Measured against a 2-thread multi-thread runtime (both on one
//! core, 3 runs): the same server CPU per request within noise (64 B echo
//! 9.5–10.5 µs either way; a connection per request 53–57 µs either way),
//! so the simpler design stays. The shared listener is kept for the
//! reasons given in [`super::epoll`].
//!
//! # Memory
//! A connection task holds its socket, a [`Pending`] (empty when idle) and
//! an idle timer: no read buffer. A task reads into its worker's one
//! [`BUF_SIZE`] buffer (a thread-local, borrowed only inside a single
//! `poll`, never across an `.await`) and writes back at once; what the
//! kernel will not take is kept in the task's `Pending`, capped at
//! [`PENDING_CAP`](crate::serve::contract::pending::PENDING_CAP), and at the cap the task
//! stops reading (backpressure).
//!
//! The connection is one hand-written `poll` over `AsyncRead::poll_read` and
//! `AsyncWrite::poll_write`, not `try_read`/`try_write`: tokio's own
//! `poll_read` treats a short read as "drained" and a short write as "full"
//! (sound with edge-triggered epoll), which spares the extra syscall that
//! would only return `WouldBlock`.
//!
//! # Timers and stopping
//! `--idle-timeout` (nothing moved either way) and `--stall-timeout` (echo
//! kept and not moving: the client stopped reading) share one tokio `Sleep`
//! per connection, reset lazily: it is armed at the deadline of the last
//! known activity, and only when it fires is the real last activity looked
//! at, so traffic never touches the timer (keeping echo may move it sooner).
//! Accept tasks wake every [`TICK`] to see the stop flag; they end then,
//! which drops their listener (and takes it out of the runtime's epoll),
//! while connection tasks run on until done or the process exits.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest as TokioInterest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Builder;
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tracing::debug;

use super::tokio_faults;
use crate::error::{Error, Result};
use crate::serve::admission::Permit;
use crate::serve::blocking::accept::{self, AcceptError};
use crate::serve::blocking::faulted;
use crate::serve::contract::BUF_SIZE;
use crate::serve::contract::pending::Pending;
use crate::serve::contract::{self as core, End, Next, Timeouts};
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::supervise;
use crate::serve::service::stats::AcceptSection;
use crate::serve::transport::tls::Tls;
use crate::serve::transport::tls::socket::{self, Turn, Wire};
use netecho_core::tls::{EPROTO, Session};

/// How often an accept task wakes to look at the stop flag.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// A deadline no connection reaches: the timer's first setting when there
/// is no idle timeout (it is then armed only while echo is kept).
const FAR: Duration = Duration::from_secs(86_400 * 365);
/// The least a TLS connection's timer is moved ahead after it fired: a
/// deadline the core left in the past cannot make the task spin.
const MIN_REARM: Duration = Duration::from_millis(1);
/// Reads one connection may do per poll (16 × 64 KiB = 1 MiB) before it
/// yields to the other tasks of its worker.
const READ_BUDGET: usize = 16;

thread_local! {
    /// The worker's one read buffer, shared by every connection task of the
    /// runtime on this thread.
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; BUF_SIZE].into_boxed_slice());
}

/// Starts `ctx.workers` runtimes, each on its own thread, and serves until a
/// signal stops the server.
pub(crate) fn run(listeners: Vec<StdListener>, ctx: &'static Ctx) -> Result<()> {
    for i in 0..ctx.workers.max(1) {
        let rt = Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::io("starting a tokio runtime"))?;
        let mine = {
            // `from_std` registers with the runtime of the current context.
            let _in_rt = rt.enter();
            listeners
                .iter()
                .map(|l| {
                    let tls = is_tls_listener(l, ctx);
                    l.try_clone()
                        .and_then(TcpListener::from_std)
                        .map(|l| (l, tls))
                })
                // Each accept task is one long accept section, held from
                // here (before the supervisor may look) to its return.
                .map(|l| l.map(|(l, tls)| (l, tls, ctx.stats.acceptor())))
                .collect::<io::Result<Vec<_>>>()
                .map_err(Error::io("handing a listener to tokio"))?
        };
        std::thread::Builder::new()
            .name(format!("tokio-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    for (l, tls, section) in mine {
                        tokio::spawn(accept_loop(l, tls, ctx, section));
                    }
                    // Keep the runtime turning for the connection tasks.
                    std::future::pending::<()>().await;
                });
            })
            .map_err(Error::io("starting a worker thread"))?;
    }
    supervise::until_stopped(listeners, ctx);
    Ok(())
}

/// True for a `--tls-listen` socket.
fn is_tls_listener(l: &StdListener, ctx: &Ctx) -> bool {
    ctx.tls.as_ref().is_some_and(|t| t.listens_on(l))
}

/// Accepts on one listener until the server stops, spawning a task per
/// admitted connection (`tls`: a TLS listener's). `_section` is dropped on
/// return: by then every connection it took is admitted (counted) or closed.
async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    ctx: &'static Ctx,
    _section: AcceptSection<'static>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        if ctx.stats.stopping() {
            return;
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = tick.tick() => continue,
        };
        match accepted {
            Ok((stream, peer)) => admit(stream, peer, tls, ctx),
            Err(e) => match accept::classify(&e) {
                // A signal, or the client gave up in the backlog: take the
                // next; an error the peer caused: skip it.
                AcceptError::Retry | AcceptError::Skip => {}
                // Only this task waits; connections are served meanwhile.
                AcceptError::Pause(d) => tokio::time::sleep(d).await,
                // The supervisor shut the listener down.
                AcceptError::ListenerClosed => return,
            },
        }
    }
}

/// Applies `--max-conns` and `--max-conns-per-ip`, sets TCP_NODELAY and
/// spawns the connection's task.
fn admit(stream: TcpStream, peer: SocketAddr, tls: bool, ctx: &'static Ctx) {
    let Some(permit) = Permit::take(ctx, &peer) else {
        drop(stream);
        accept::log_rejected(Some(peer), ctx);
        return;
    };
    let faulted = faulted::Faulted::of(&stream, ctx);
    if let Some(f) = faulted.filter(|_| tls) {
        // A faulted TLS connection is served on a thread of its own.
        match stream.into_std() {
            Ok(std) => faulted::spawn(std, f, tls, permit, ctx),
            Err(e) => ctx.stats.count_end(End::from_io(&e)),
        }
        return;
    }
    // From here on, dropping `slot` closes the socket and releases it.
    let mut slot = Admitted {
        stream: Some(stream),
        permit,
    };
    // TCP_NODELAY: inherited from the listener, or set here.
    let nodelay = match slot.stream.as_ref() {
        Some(s) => ctx.nodelay(socket2::SockRef::from(s)),
        None => Ok(()),
    };
    if let Err(e) = nodelay {
        // Only a socket already dead fails here.
        debug!(%peer, "TCP_NODELAY: {e}; closing");
        ctx.stats.count_end(End::from_io(&e));
        return;
    }
    debug!(%peer, tls, "connection open");
    let tls = ctx.tls.as_ref().filter(|_| tls);
    tokio::spawn(async move {
        if let Some(stream) = slot.stream.as_mut() {
            let end = match (tls, faulted) {
                (Some(tls), _) => serve_tls(stream, tls, ctx).await,
                // A faulted plain connection: a task like the others.
                (None, Some(f)) => {
                    tokio_faults::serve(stream, f, ctx, &mut slot.permit, &BUF).await
                }
                (None, None) => serve(stream, ctx).await,
            };
            ctx.stats.count_end(end);
            debug!(%peer, tls = tls.is_some(), %end, "connection closed");
        }
    });
}

/// An admitted connection: dropping it closes the socket, then gives the
/// `--max-conns` slot back, in that order, whether the task finished or was
/// dropped.
struct Admitted {
    stream: Option<TcpStream>,
    /// Its place under the limits, given back after the socket is closed
    /// (a faulted connection gives it back before its end, as it goes).
    permit: Permit,
}

/// Closes the socket before the permit goes. Having a `Drop` also makes the
/// task's `async move` capture the whole value: without one it would take
/// only `stream`, and the permit would be dropped as `admit` returns.
impl Drop for Admitted {
    fn drop(&mut self) {
        drop(self.stream.take());
    }
}

/// Echoes on `stream` until the connection core says to close: the
/// client's FIN echoed and ours sent, a reset, or the idle or stall timeout.
async fn serve(stream: &mut TcpStream, ctx: &Ctx) -> End {
    let now = Instant::now();
    let mut conn = Task {
        stream,
        core: core::Conn::new(now.into_std(), Pending::new()),
        timeouts: ctx.timeouts(),
        ctx,
    };
    // Armed at the first deadline; polled (so registered) only while a
    // timeout applies.
    let first = conn.deadline().unwrap_or(now + FAR);
    let mut timer = pin!(tokio::time::sleep_until(first));
    poll_fn(|cx| match conn.poll_turn(cx) {
        Poll::Ready(end) => Poll::Ready(end),
        Poll::Pending => conn.poll_timeout(cx, timer.as_mut()),
    })
    .await
}

/// One connection's state between polls.
struct Task<'a> {
    stream: &'a mut TcpStream,
    /// The echo contract's state: what is kept, FIN, deadlines, the end.
    core: core::Conn<Pending>,
    timeouts: Timeouts,
    ctx: &'a Ctx,
}

impl Task<'_> {
    /// Performs what the core asks — write back what is kept, read and
    /// echo, send our FIN — until a read or write would block (its waker is
    /// then registered), the connection is to close, or the budget is used
    /// (then it yields).
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        for _ in 0..READ_BUDGET {
            let send = match self.core.next() {
                Next::Close(end) => return Poll::Ready(end),
                Next::ShutWrite => {
                    let r = SockRef::from(&*self.stream).shutdown(Shutdown::Write);
                    self.core.on_shut(r);
                    continue;
                }
                Next::Io { send, .. } => send,
            };
            if send {
                match Pin::new(&mut *self.stream).poll_write(cx, self.core.store().as_slice()) {
                    Poll::Ready(Ok(n)) => {
                        self.core.on_sent(Instant::now().into_std(), n);
                        self.count(n);
                        continue;
                    }
                    // A signal is retried; anything else ends it.
                    Poll::Ready(Err(e)) => {
                        self.core.on_error(&e);
                        continue;
                    }
                    // The send buffer is full: woken when it drains.
                    Poll::Pending => {}
                }
            }
            // Here everything kept is out, or a writable wake-up is registered.
            let Next::Io { read, .. } = self.core.next() else {
                continue;
            };
            if read == 0 {
                return Poll::Pending;
            }
            match self.read_and_echo(cx, read) {
                Poll::Ready(Ok(())) => {}
                // A signal is retried; anything else ends it.
                Poll::Ready(Err(e)) => {
                    self.core.on_error(&e);
                }
                // Nothing to read: woken when something comes.
                Poll::Pending => return Poll::Pending,
            }
        }
        // Budget used with work left: let the worker's other tasks run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One read of at most `room` bytes into the worker's buffer, written
    /// back at once while nothing is kept; what the kernel will not take is
    /// kept by the core.
    fn read_and_echo(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<()>> {
        BUF.with_borrow_mut(|buf| {
            let room = room.min(buf.len());
            let mut rb = ReadBuf::new(&mut buf[..room]);
            match Pin::new(&mut *self.stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let data = rb.filled();
            if data.is_empty() {
                // The client's FIN: what is kept goes out first, then ours.
                self.core.on_fin();
                return Poll::Ready(Ok(()));
            }
            let mut off = 0;
            if self.core.write_through() {
                match Pin::new(&mut *self.stream).poll_write(cx, data) {
                    Poll::Ready(Ok(n)) => off = n,
                    // A signal, or the send buffer is full: keep it all.
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Poll::Pending => {}
                    Poll::Ready(Err(e)) => {
                        self.core.on_read(Instant::now().into_std(), data, 0);
                        return Poll::Ready(Err(e));
                    }
                }
            }
            self.core.on_read(Instant::now().into_std(), data, off);
            self.count(off);
            Poll::Ready(Ok(()))
        })
    }

    /// The core's next deadline, on tokio's clock.
    fn deadline(&self) -> Option<Instant> {
        self.core
            .deadline(&self.timeouts)
            .map(|(at, _)| Instant::from_std(at))
    }

    /// Polls the timer once the connection has nothing to do. The timer is
    /// re-armed lazily (the rule of [`crate::serve::contract::timers`]): moved sooner
    /// when kept echo brings a nearer stall deadline, and when it fires
    /// early (traffic came meanwhile), moved to the real deadline; traffic
    /// itself never touches it.
    fn poll_timeout(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<End> {
        // Three times at most: a re-armed timer is in the future, so it pends.
        for _ in 0..3 {
            let Some(deadline) = self.deadline() else {
                // No timeout applies now: nothing to wait for.
                return Poll::Pending;
            };
            if deadline < timer.deadline() {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now().into_std();
            if self.core.on_timer(now, &self.timeouts)
                && let Some(end) = self.core.end()
            {
                return Poll::Ready(end);
            }
            if let Some(next) = self.deadline() {
                timer.as_mut().reset(next);
            }
        }
        Poll::Pending
    }

    /// Counts `n` bytes echoed.
    fn count(&self, n: usize) {
        if n > 0 {
            self.ctx.stats.bytes.add(n as u64);
        }
    }
}

/// A tokio socket as the TLS layer's [`Wire`]: `try_read`/`try_write`,
/// which clear tokio's readiness on `WouldBlock`, so `ready()` then waits
/// for the next edge.
struct TryIo<'a>(&'a TcpStream);

impl io::Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for TryIo<'_> {
    fn shut_write(&mut self) -> io::Result<()> {
        SockRef::from(self.0).shutdown(Shutdown::Write)
    }
}

/// Echoes over TLS: the TLS session over the core ([`socket::turn`]), woken
/// by readiness or the next deadline. One `Sleep` per connection, by the
/// rule [`serve`] follows: moved nearer when a deadline comes nearer, to
/// the real deadline when it fires early (traffic came meanwhile), and
/// never touched by traffic itself.
async fn serve_tls(stream: &TcpStream, t: &Tls, ctx: &Ctx) -> End {
    let start = std::time::Instant::now();
    let mut tls = match Session::new(&t.config, start, t.handshake_timeout) {
        Ok(tls) => tls,
        Err(e) => {
            debug!("cannot start a TLS session: {e}");
            return End::Error(EPROTO);
        }
    };
    let mut core = core::Conn::new(start, Pending::new());
    let timeouts = ctx.timeouts();
    let mut wire = TryIo(stream);
    let mut timer = pin!(tokio::time::sleep_until(Instant::now() + FAR));
    let end = loop {
        let mut bytes = 0;
        let turn = BUF.with_borrow_mut(|buf| {
            socket::turn(
                &mut tls,
                &mut core,
                &mut wire,
                std::time::Instant::now(),
                buf,
                &mut bytes,
            )
        });
        if bytes > 0 {
            ctx.stats.bytes.add(bytes);
        }
        let (read, write) = match turn {
            Turn::Close(end) => break end,
            // Budget used, a signal, or the handshake just ended.
            Turn::Again => {
                tokio::task::yield_now().await;
                continue;
            }
            Turn::Wait { read, write } => (read, write),
        };
        let interest = match (read, write) {
            (true, true) => TokioInterest::READABLE | TokioInterest::WRITABLE,
            (false, true) => TokioInterest::WRITABLE,
            _ => TokioInterest::READABLE,
        };
        if let Some(deadline) = tls.deadline(&core, &timeouts).map(Instant::from_std)
            && deadline < timer.deadline()
        {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            r = stream.ready(interest) => {
                if let Err(e) = r {
                    core.on_error(&e);
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                tls.on_timer(&mut core, now.into_std(), &timeouts);
                let next = tls
                    .deadline(&core, &timeouts)
                    .map(Instant::from_std)
                    .unwrap_or(now + FAR);
                timer.as_mut().reset(next.max(now + MIN_REARM));
            }
        }
    };
    if let Some(f) = tls.failure() {
        ctx.stats.count_failure(f);
    }
    end
}
