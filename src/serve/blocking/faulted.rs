//! The echo of a connection with faults (`--fault`), in every model: the
//! connection core ([`Conn`]) keeps the bytes, the order and the deadlines,
//! the fault shaper ([`Shaper`]) decides what of the kept echo may go now,
//! when the next may, and how the connection ends; this loop only performs
//! their answers on one non-blocking socket, waiting in ppoll(2) until the
//! socket or the earliest of their times is ready. Echo it may send goes
//! out as the blocking loop sends it ([`Wire::write_until`]): without
//! blocking, waiting for room until the core's stall deadline and no later.
//! Latency is held from the bytes' arrival: the kernel's receive time over
//! TCP ([`recv_at`]), the time of the read over TLS.
//!
//! Over TLS ([`run_tls`]) the session ([`Session`], bytes in and out) sits
//! between the socket and the core and the shaper acts on the plaintext:
//! every fault counts, holds and flips plaintext bytes, as over TCP.
//!
//! Which model applies faults how:
//! - iterative, fork, prefork, thread, prethread (and `--inetd`, which
//!   refuses `--fault`): the connection's own loop runs [`echo`] in place of
//!   [`super::echo::echo`] or the TLS loop;
//! - tokio: a faulted plain connection is a task of the worker's runtime
//!   like any other (`model/tokio_faults.rs`: the same core and shaper,
//!   tokio's readiness and timer between them; tokio's timer rounds a
//!   wake-up up to the next millisecond); a faulted TLS connection is
//!   handed to a thread of its own that runs [`echo`] ([`spawn`]);
//! - epoll: a faulted plain connection is served by the worker's event
//!   loop like any other (`model/epoll_faults.rs`: the same core and
//!   shaper, the loop's edge-triggered hints and one timer entry at the
//!   earliest of their times; epoll_wait rounds a wake-up up to the next
//!   millisecond), its state in a box only it has, so every other
//!   connection keeps its size and its path; a faulted TLS connection is
//!   handed to a thread of its own ([`spawn`]);
//! - uring: a faulted connection, plain or TLS, is handed to a thread of
//!   its own that runs [`echo`] ([`spawn`]), so its loop, its zero-copy
//!   path and its buffers stay as they are for every other connection.
//!
//! A faulted connection is therefore always copied, never spliced.
//!
//! What to do next is decided in one place for all of them, without I/O
//! ([`step`]): each loop performs the [`Action`] it is given with its own
//! calls and waits in its own way. A fault's end ([`Ending`]) is performed
//! by [`finish`] in every model, but for its waits.

mod step;

use std::io;
use std::io::IoSliceMut;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netecho_core::fault::Effects;
use netecho_core::fault::tcp::{ReadGate, Shaper, Verdict};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, Shutdown, recv, recvmsg, setsockopt, shutdown, sockopt,
};
use nix::sys::time::TimeSpec;
use socket2::SockRef;
use tracing::debug;

use crate::serve::admission::Permit;
use crate::serve::blocking::wire::{Call, Socket, Wire};
use crate::serve::contract::{BUF_SIZE, Conn, End, pending::Pending};
use crate::serve::ctx::Ctx;
use crate::serve::service::faults;
use crate::serve::transport::tls::Tls;
use crate::serve::transport::tls::socket::{self, Turn};
use netecho_core::tls::{EPROTO, Session};
pub(crate) use step::{Action, Ending, Finish, Ready, Step};

/// The longest poll: how soon a stop is noticed.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// True when the client acknowledged everything sent to it (or the kernel
/// cannot say): a reset now loses none of the echo.
fn all_acked(conn: BorrowedFd<'_>) -> bool {
    crate::sys::sockopt::unacked(conn).map_or(true, |n| n == 0)
}

/// Performs `f`, a step of a fault's end, on `sock` and reports it to `e`
/// — all but [`Finish::Wait`], which is the model's own: the end once the
/// connection is to close (after [`Finish::Reset`], with SO_LINGER 0 set so
/// the close sends RST). `discard` reads and drops through the model's own
/// call (tokio's readiness must see its WouldBlock); a socket it finds
/// empty clears `readable`.
pub(crate) fn finish(
    f: Finish,
    e: &mut Ending,
    sock: BorrowedFd<'_>,
    readable: &mut bool,
    discard: &mut dyn FnMut() -> io::Result<usize>,
) -> Option<End> {
    match f {
        Finish::Close(end) => return Some(end),
        Finish::Reset => {
            // SO_LINGER 0: the close sends RST, not FIN.
            let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
            return Some(End::Reset);
        }
        Finish::AwaitAck => e.acked(Instant::now(), all_acked(sock)),
        Finish::Fin => {
            let r = shutdown(sock.as_raw_fd(), Shutdown::Write).map_err(io::Error::from);
            e.fin_sent(Instant::now(), &r);
        }
        Finish::Discard => match discard() {
            Ok(n) => e.discarded(n),
            // Nothing more yet: wait until readable.
            Err(x) if x.kind() == io::ErrorKind::WouldBlock => *readable = false,
            // A signal: read again.
            Err(x) if x.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => e.discard_failed(),
        },
        Finish::Wait { .. } => {}
    }
    None
}

/// A faulted connection: its peer, its faults and its random seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Faulted {
    pub(crate) peer: SocketAddr,
    pub(crate) effects: Effects,
    pub(crate) seed: u64,
}

impl Faulted {
    /// The faults for `conn`, if any apply (none without `--fault`, at the
    /// cost of one branch).
    pub(crate) fn of(conn: &impl AsFd, ctx: &Ctx) -> Option<Faulted> {
        ctx.faults?;
        let sock = SockRef::from(conn);
        let peer = sock.peer_addr().ok()?.as_socket()?;
        let local = sock.local_addr().ok()?.as_socket()?;
        let (effects, seed) = ctx.fault_for(peer, local)?;
        Some(Faulted {
            peer,
            effects,
            seed,
        })
    }
}

/// Serves `conn` with its faults on a thread of its own (over TLS if it
/// came in on a `--tls-listen` socket, `tls`), then closes it and gives
/// `permit` back: how the event models serve a faulted connection. A
/// thread that cannot start closes the connection.
pub(crate) fn spawn(conn: TcpStream, f: Faulted, tls: bool, mut permit: Permit, ctx: &'static Ctx) {
    let run = move || {
        let mut buf = vec![0u8; BUF_SIZE];
        let tls = ctx.tls.as_ref().filter(|_| tls);
        let end = echo(&conn, f, tls, ctx, &mut buf, &|| false, &mut || {
            permit.release()
        });
        ctx.stats.count_end(end);
        debug!(peer = %f.peer, %end, "connection closed");
    };
    if let Err(e) = std::thread::Builder::new().name("fault".into()).spawn(run) {
        debug!(peer = %f.peer, "cannot start a thread for a faulted connection: {e}");
        ctx.stats.count_end(End::from_io(&e));
    }
}

/// Echoes on `conn` with the faults of `f` (over TLS with `tls`) until
/// the core or a fault ends it, or `stop()` turns true. `free` gives the
/// `--max-conns` slot back, once, before the client can see the end (as in
/// [`super::echo::echo`]).
pub(crate) fn echo(
    conn: &TcpStream,
    f: Faulted,
    tls: Option<&Tls>,
    ctx: &Ctx,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    let mut freed = false;
    let mut free_once = || {
        if !std::mem::replace(&mut freed, true) {
            free();
        }
    };
    // Non-blocking: the loops wait in ppoll. TCP_NODELAY as every model
    // has it (a connection handed off by an event model comes here before
    // that model would have set it).
    let ready = conn
        .set_nonblocking(true)
        .and_then(|()| ctx.nodelay(SockRef::from(conn)));
    let ran = match (ready, tls) {
        (Err(e), _) => Ran::Core(End::from_io(&e)),
        (Ok(()), None) => run(conn, f, ctx, buf, stop, &mut free_once),
        (Ok(()), Some(t)) => run_tls(conn, f, t, ctx, buf, stop, &mut free_once),
    };
    free_once();
    match ran {
        Ran::Core(end) => end,
        Ran::Fault(e) => end_as(conn, e, buf),
    }
}

/// How [`run`] or [`run_tls`] ended: as the core said, or by a fault.
enum Ran {
    Core(End),
    Fault(Ending),
}

/// The loop of [`echo`]: performs what [`Step`] says; `free` is called
/// before the client can see the end.
fn run(
    conn: &TcpStream,
    f: Faulted,
    ctx: &Ctx,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> Ran {
    let fd = conn.as_raw_fd();
    stamp_arrivals(conn);
    let timeouts = ctx.timeouts();
    let start = Instant::now();
    let mut core = Conn::new(start, Pending::new());
    let shaper = Shaper::new(start, f.effects, f.seed);
    let mut step = Step::new(start, f.peer, shaper, ctx.stats);
    // Sends wait for room themselves (below): only reads can find nothing.
    let mut ready = Ready::BOTH;
    loop {
        let now = Instant::now();
        let action = step.next(&mut core, &timeouts, now, ready);
        if action.frees() {
            free();
        }
        match action {
            Action::Close(end) => return Ran::Core(end),
            Action::End(e) => return Ran::Fault(e),
            Action::ShutWrite => {
                core.on_shut(shutdown(fd, Shutdown::Write).map_err(io::Error::from));
            }
            Action::Send(n) => {
                // As the blocking loop sends: without blocking, waiting in
                // poll(2) for room until the core's stall deadline.
                let until = core.deadline(&timeouts).map(|(at, _)| at);
                match Socket(fd).write_until(&core.store().as_slice()[..n], until) {
                    Call::Done(w) => step.sent(&mut core, Instant::now(), w),
                    // The client took nothing until the deadline.
                    Call::Expired => {
                        if !core.on_timer(Instant::now(), &timeouts) {
                            core.fail(End::Stall);
                        }
                    }
                    // A signal: retry, unless it was the one telling us to stop.
                    Call::Failed(Errno::EINTR) if stop() => core.stop(),
                    Call::Failed(Errno::EINTR) => {}
                    Call::Failed(e) => {
                        core.on_error(&io::Error::from(e));
                    }
                }
            }
            Action::Read(want) => {
                let want = want.min(buf.len());
                match recv_at(fd, &mut buf[..want], step.empty_at()) {
                    Ok((n, arrived)) => step.received(&mut core, now, arrived, &mut buf[..n]),
                    // Nothing to read yet.
                    Err(Errno::EAGAIN) => {
                        step.read_empty(now);
                        ready.read = false;
                    }
                    // A signal: read again, unless it says to stop.
                    Err(Errno::EINTR) if stop() => core.stop(),
                    Err(Errno::EINTR) => {}
                    Err(e) => {
                        core.on_error(&io::Error::from(e));
                    }
                }
            }
            Action::Wait { read, write, until } => {
                if stop() {
                    core.stop();
                    continue;
                }
                let mut events = PollFlags::empty();
                if read {
                    events |= PollFlags::POLLIN;
                }
                if write {
                    events |= PollFlags::POLLOUT;
                }
                if let Err(e) = wait(conn.as_fd(), events, until.map_or(STOP_CHECK, left)) {
                    core.on_error(&io::Error::from(e));
                }
                core.on_timer(Instant::now(), &timeouts);
                ready = Ready::BOTH;
            }
        }
    }
}

/// How long until `at`, at most [`STOP_CHECK`].
fn left(at: Instant) -> Duration {
    at.saturating_duration_since(Instant::now()).min(STOP_CHECK)
}

/// Waits in ppoll(2) until `conn` has one of `events` or `wait` passed
/// (interrupted by a signal: the caller looks at the stop state again).
/// To the nanosecond: a wait rounded down to milliseconds wakes early and
/// polls again, one rounded up holds an echo too long.
fn wait(conn: BorrowedFd<'_>, events: PollFlags, wait: Duration) -> Result<(), Errno> {
    let mut fds = [PollFd::new(conn, events)];
    // Without events only time is waited for: a hung-up socket would
    // otherwise end every wait at once.
    let fds: &mut [PollFd<'_>] = if events.is_empty() { &mut [] } else { &mut fds };
    match ppoll(fds, Some(TimeSpec::from_duration(wait)), None) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Ends `conn` as fault `e` says ([`finish`]), waiting in ppoll(2). A stop
/// does not cut it short: it takes [`step::LINGER_AFTER_CLOSE`] at most.
fn end_as(conn: &TcpStream, mut e: Ending, buf: &mut [u8]) -> End {
    let fd = conn.as_raw_fd();
    let mut readable = true;
    loop {
        match e.next(Instant::now(), readable) {
            Finish::Wait { read, until } => {
                let events = if read {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                };
                let left = until.saturating_duration_since(Instant::now());
                // An error shows in the next read.
                let _ = wait(conn.as_fd(), events, left);
                readable = true;
            }
            f => {
                let mut discard = || recv(fd, buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from);
                if let Some(end) = finish(f, &mut e, conn.as_fd(), &mut readable, &mut discard) {
                    return end;
                }
            }
        }
    }
}

/// The loop of [`echo`] over TLS: the session ([`Session`], bytes in and
/// out) between the socket and the core, the shaper acting on the
/// plaintext ([`socket::turn_shaped`]), so each fault counts and flips
/// plaintext bytes as over TCP. `accept-delay` holds the handshake too: no
/// byte is read, and the handshake's time starts, only once it has passed.
/// `close-after` ends with our close_notify then FIN; `reset-after` with a
/// reset and no close_notify.
fn run_tls(
    conn: &TcpStream,
    f: Faulted,
    t: &Tls,
    ctx: &Ctx,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> Ran {
    let mut shaper = Shaper::new(Instant::now(), f.effects, f.seed);
    while let ReadGate::At(at) = shaper.read_gate(Instant::now()) {
        if stop() {
            return Ran::Core(End::Stopped);
        }
        let wait = at.saturating_duration_since(Instant::now()).min(STOP_CHECK);
        let _ = ppoll(&mut [], Some(TimeSpec::from_duration(wait)), None);
    }
    let start = Instant::now();
    let Ok(mut session) = Session::new(&t.config, start, t.handshake_timeout) else {
        return Ran::Core(End::Error(EPROTO));
    };
    session.pause_at_shut();
    let mut core = Conn::new(start, Pending::new());
    let timeouts = ctx.timeouts();
    let mut wire = conn;
    let mut closing = false;
    let ending = loop {
        faults::count(ctx.stats, f.peer, &shaper.applied());
        let mut bytes = 0;
        let turn = socket::turn_shaped(
            &mut session,
            &mut core,
            &mut wire,
            Instant::now(),
            buf,
            &mut bytes,
            Some(&mut shaper),
        );
        ctx.stats.bytes.add(bytes);
        let (read, write) = match turn {
            Turn::Close(end) => break Ran::Core(end),
            Turn::Again => {
                if session.take_shut() {
                    // Every echoed byte is out, our close_notify not yet.
                    free();
                }
                if stop() {
                    core.stop();
                }
                continue;
            }
            Turn::Wait { read, write } => (read, write),
        };
        let now = Instant::now();
        let mut wake = session.deadline(&core, &timeouts);
        match shaper.verdict(now, core.store().len()) {
            // A fault's end comes after every byte before it is out.
            Verdict::End(how) if session.all_sent() => {
                faults::count(ctx.stats, f.peer, &shaper.applied());
                match Ending::of(how, now) {
                    // close-after: our close_notify first, then our FIN.
                    Some(Ending::Fin) if !closing => {
                        free();
                        session.close_notify_now(now);
                        closing = true;
                        continue;
                    }
                    Some(e) => break Ran::Fault(e),
                    // Neither read nor write: the core's deadline ends it.
                    None => {}
                }
            }
            Verdict::Wait(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
            _ => {}
        }
        let mut flags = PollFlags::empty();
        if read {
            flags |= PollFlags::POLLIN;
        }
        if write {
            flags |= PollFlags::POLLOUT;
        }
        // Only readiness, a time that came or a stop ends the wait: a turn
        // on every look at the stop state would write whatever room a
        // stalled client's window trickles open (below the readiness
        // mark), and each such byte would restart the stall clock.
        loop {
            let wait = wake.map_or(STOP_CHECK, |w| {
                w.saturating_duration_since(Instant::now()).min(STOP_CHECK)
            });
            let mut fds = [PollFd::new(conn.as_fd(), flags)];
            match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
                // Ready (or hung up): the next turn finds out which.
                Ok(n) if n > 0 => break,
                // A deadline, or a look at the stop state.
                Ok(_) => {
                    if stop() {
                        core.stop();
                        break;
                    }
                    let now = Instant::now();
                    if wake.is_some_and(|w| now >= w) {
                        session.on_timer(&mut core, now, &timeouts);
                        break;
                    }
                }
                // A signal: stop if it says so.
                Err(Errno::EINTR) => {
                    if stop() {
                        core.stop();
                    }
                    break;
                }
                Err(e) => {
                    core.on_error(&io::Error::from(e));
                    break;
                }
            }
        }
    };
    if let Some(failure) = session.failure() {
        ctx.stats.count_failure(failure);
    }
    ending
}

/// Asks the kernel to time each received segment (SO_TIMESTAMPNS), so
/// latency is held from the bytes' arrival, not from when the thread or
/// task got to run ([`recv_at`]). Without it the bytes arrived when read.
pub(crate) fn stamp_arrivals(conn: &impl AsFd) {
    let _ = setsockopt(conn, sockopt::ReceiveTimestampns, &true);
}

/// `recv(2)` that also says when the bytes arrived: the kernel's receive
/// time (SO_TIMESTAMPNS, on the wall clock) of the last segment read, moved
/// onto the monotonic clock and kept between `empty_at` (the socket was
/// empty then) and now, so a step of the wall clock cannot push it out of
/// that range. Without a timestamp the bytes arrived now.
pub(crate) fn recv_at(
    fd: RawFd,
    buf: &mut [u8],
    empty_at: Instant,
) -> nix::Result<(usize, Instant)> {
    let mut space = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::empty())?;
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut arrived = now;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            let stamp = Duration::new(ts.tv_sec().max(0) as u64, ts.tv_nsec() as u32);
            let age = wall
                .duration_since(UNIX_EPOCH)
                .map_or(Duration::ZERO, |w| w.saturating_sub(stamp));
            arrived = now.checked_sub(age).unwrap_or(empty_at).max(empty_at);
        }
    }
    Ok((msg.bytes, arrived.min(now)))
}
