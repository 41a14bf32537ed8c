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

use std::io;
use std::io::IoSliceMut;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netecho_core::fault::tcp::{ReadGate, Shaper, Verdict};
use netecho_core::fault::{Effects, EndAfter};
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
use crate::serve::contract::{BUF_SIZE, Conn, Copied, End, Next, pending::Pending};
use crate::serve::ctx::Ctx;
use crate::serve::service::faults;
use crate::serve::transport::tls::Tls;
use crate::serve::transport::tls::socket::{self, Turn};
use netecho_core::tls::{EPROTO, Session};

/// The longest poll: how soon a stop is noticed.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// After `close-after`'s FIN, how long what the client still sends is read
/// and dropped, so that our close finds an empty receive queue (a close
/// with unread bytes would be a reset, not the FIN asked for).
pub(crate) const LINGER_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// How long `reset-after` waits for the client to acknowledge the bytes
/// echoed before the reset: a reset throws away what the send queue still
/// holds, so on a busy machine (a send the kernel deferred) the client
/// could see fewer than the exact count. A client that stops reading gets
/// its reset after this wait.
pub(crate) const RESET_AWAITS_ACK: Duration = Duration::from_secs(1);

/// How often that wait looks at the send queue again.
pub(crate) const RESET_ACK_POLL: Duration = Duration::from_millis(1);

/// True when the client acknowledged everything sent to it (or the kernel
/// cannot say): a reset now loses none of the echo.
pub(crate) fn all_acked(conn: std::os::fd::BorrowedFd<'_>) -> bool {
    crate::sys::sockopt::unacked(conn).map_or(true, |n| n == 0)
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
    let end = match (ready, tls) {
        (Err(e), _) => Ending::Core(End::from_io(&e)),
        (Ok(()), None) => run(conn, f, ctx, buf, stop, &mut free_once),
        (Ok(()), Some(t)) => run_tls(conn, f, t, ctx, buf, stop, &mut free_once),
    };
    free_once();
    match end {
        Ending::Core(end) => end,
        Ending::Reset => {
            // The echo reaches the client before the reset throws away
            // what is unsent.
            let until = Instant::now() + RESET_AWAITS_ACK;
            while !all_acked(conn.as_fd()) && Instant::now() < until {
                std::thread::sleep(RESET_ACK_POLL);
            }
            // SO_LINGER 0: the close sends RST, not FIN.
            let _ = SockRef::from(conn).set_linger(Some(Duration::ZERO));
            End::Reset
        }
        Ending::Close => {
            let r = shutdown(conn.as_raw_fd(), Shutdown::Write);
            drain(conn, buf);
            match r {
                Ok(()) | Err(Errno::ENOTCONN) => End::Fin,
                Err(e) => End::from_io(&io::Error::from(e)),
            }
        }
    }
}

/// How [`run`] ended: as the core said, or by a fault.
enum Ending {
    Core(End),
    Reset,
    Close,
}

/// The loop of [`echo`]; `free` is called before our FIN goes out.
fn run(
    conn: &TcpStream,
    f: Faulted,
    ctx: &Ctx,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> Ending {
    let fd = conn.as_raw_fd();
    stamp_arrivals(conn);
    let timeouts = ctx.timeouts();
    let mut now = Instant::now();
    // When the socket was last found empty: nothing read later arrived
    // before it.
    let mut empty_at = now;
    let mut core = Conn::new(now, Pending::new());
    let mut shaper = Shaper::new(now, f.effects, f.seed);
    loop {
        faults::count(ctx.stats, f.peer, &shaper.applied());
        now = Instant::now();
        let (send_now, read) = match core.next() {
            Next::Close(end) => return Ending::Core(end),
            Next::ShutWrite => {
                // The slot comes back before the client can see our FIN.
                free();
                core.on_shut(shutdown(fd, Shutdown::Write).map_err(io::Error::from));
                continue;
            }
            Next::Io { read, .. } => (shaper.verdict(now, core.store().len()), read),
        };
        let mut wake = core.deadline(&timeouts).map(|(at, _)| at);
        let mut soonest = |at: Instant| wake = Some(wake.map_or(at, |w| w.min(at)));
        let mut events = PollFlags::empty();
        let mut moved = false;
        match send_now {
            Verdict::End(EndAfter::Reset) => {
                faults::count(ctx.stats, f.peer, &shaper.applied());
                return Ending::Reset;
            }
            Verdict::End(EndAfter::Close) => {
                faults::count(ctx.stats, f.peer, &shaper.applied());
                return Ending::Close;
            }
            // Neither read nor write: the core's deadline ends it.
            Verdict::End(EndAfter::Stall) | Verdict::Idle => {}
            Verdict::Wait(at) => soonest(at),
            Verdict::Send(n) => {
                // As the blocking loop sends: without blocking, waiting in
                // poll(2) for room until the core's stall deadline.
                let until = core.deadline(&timeouts).map(|(at, _)| at);
                match Socket(fd).write_until(&core.store().as_slice()[..n], until) {
                    Call::Done(w) => {
                        let now = Instant::now();
                        core.on_sent(now, w);
                        shaper.on_sent(now, w);
                        ctx.stats.bytes.add(w as u64);
                    }
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
                moved = true;
            }
        }
        if read > 0 {
            match shaper.read_gate(now) {
                ReadGate::Open => {
                    let want = read.min(buf.len());
                    match recv_at(fd, &mut buf[..want], empty_at) {
                        // The client's FIN: what is kept still goes out.
                        Ok((0, _)) => {
                            core.on_fin();
                            moved = true;
                        }
                        Ok((n, arrived)) => {
                            let flipped = shaper.on_read(arrived, &mut buf[..n]);
                            for at in flipped {
                                debug!(peer = %f.peer, byte = at, "corrupted");
                            }
                            core.on_read(now, Pending::piece(&buf[..n]), 0);
                            moved = true;
                        }
                        // Nothing to read yet.
                        Err(Errno::EAGAIN) => {
                            empty_at = now;
                            events |= PollFlags::POLLIN;
                        }
                        Err(e) => moved = !core.on_error(&io::Error::from(e)) || e == Errno::EINTR,
                    }
                }
                ReadGate::At(at) => soonest(at),
                ReadGate::Shut => {}
            }
        }
        if moved {
            continue;
        }
        if stop() {
            core.stop();
            continue;
        }
        // To the nanosecond: a wait rounded down to milliseconds wakes
        // early and polls again, one rounded up holds an echo too long.
        let wait = wake.map_or(STOP_CHECK, |w| {
            w.saturating_duration_since(Instant::now()).min(STOP_CHECK)
        });
        let mut fds = [PollFd::new(conn.as_fd(), events)];
        match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
            // Interrupted by a signal: look at the stop state again.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                core.on_error(&io::Error::from(e));
            }
        }
        core.on_timer(Instant::now(), &timeouts);
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
) -> Ending {
    let mut shaper = Shaper::new(Instant::now(), f.effects, f.seed);
    while let ReadGate::At(at) = shaper.read_gate(Instant::now()) {
        if stop() {
            return Ending::Core(End::Stopped);
        }
        let wait = at.saturating_duration_since(Instant::now()).min(STOP_CHECK);
        let _ = ppoll(&mut [], Some(TimeSpec::from_duration(wait)), None);
    }
    let start = Instant::now();
    let Ok(mut session) = Session::new(&t.config, start, t.handshake_timeout) else {
        return Ending::Core(End::Error(EPROTO));
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
            Turn::Close(end) => break Ending::Core(end),
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
                match how {
                    EndAfter::Reset => break Ending::Reset,
                    EndAfter::Close if closing => break Ending::Close,
                    EndAfter::Close => {
                        free();
                        session.close_notify_now(now);
                        closing = true;
                        continue;
                    }
                    // Neither read nor write: the core's deadline ends it.
                    EndAfter::Stall => {}
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

/// Reads and drops what the client still sends after our FIN, until its
/// own FIN, an error, or [`LINGER_AFTER_CLOSE`].
fn drain(conn: &TcpStream, buf: &mut [u8]) {
    let until = Instant::now() + LINGER_AFTER_CLOSE;
    let _ = conn.set_nonblocking(false);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match recv(conn.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(0) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
