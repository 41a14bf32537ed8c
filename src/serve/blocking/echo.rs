//! The blocking read/write loop that keeps the echo contract, shared by the
//! iterative, fork, prefork, thread and prethread models.
//!
//! It allocates nothing and calls only `recv`, `send`, `poll` and
//! `shutdown`, so a forked child may run it even if the parent held a lock
//! at fork time. The idle timeout is a socket option (SO_RCVTIMEO). The
//! stall timeout is a deadline: echo that waits is sent without blocking,
//! and poll(2) waits for room until the send timeout after the echo began
//! waiting or last moved. A blocking send's own timeout (SO_SNDTIMEO)
//! cannot keep it: it restarts with every call, and a call that moved a
//! few bytes returns only when it runs out, so a client that stops reading
//! was closed after two or three times the stall timeout.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, Shutdown, recv, send, shutdown};

use crate::serve::admission::Permit;
use crate::serve::blocking::faulted::{self, Faulted};
use crate::serve::ctx::Ctx;
use crate::serve::service::stats::Stats;

pub(crate) use crate::serve::contract::End;

/// How a failed `recv`/`send`/`shutdown` ends a blocking connection: the
/// connection core's one classification (EINTR and EAGAIN are handled by
/// the loop before it asks).
fn ended(e: Errno) -> End {
    End::from_io(&io::Error::from(e))
}

/// Sets up an accepted socket: blocking, TCP_NODELAY (no 40 ms Nagle +
/// delayed-ACK stall on a large message's tail), the idle timeout as receive
/// timeout and the stall timeout as send timeout (a bound for any blocking
/// send; the loops below keep the stall deadline themselves).
pub(crate) fn prepare(stream: &TcpStream, ctx: &Ctx) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(ctx.idle_timeout)?;
    stream.set_write_timeout(ctx.send_timeout())?;
    Ok(())
}

/// Echoes on `fd` until the client's FIN, a reset, the idle timeout, or
/// `stop()` turning true after a signal interrupted a call.
///
/// When `recv` returns 0 every byte read has already been written back, so
/// `shutdown(SHUT_WR)` sends our FIN after the last echoed byte, and the
/// caller's close finds an empty receive queue: the close is a FIN, not a RST.
///
/// `free` gives the connection's `--max-conns` slot back. It runs exactly
/// once, after the last echoed byte and before anything the client can see
/// of the end (our FIN, or the close the caller makes after an error): a
/// client that reconnects the moment it sees our FIN must find its slot
/// free, not wait on a parent that has yet to reap the child that served it.
///
/// `stall` is the send timeout: echo that cannot move for that long ends
/// the connection as [`End::Stall`].
pub(crate) fn echo(
    fd: RawFd,
    buf: &mut [u8],
    stats: &Stats,
    stall: Option<Duration>,
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    let end = echo_until_fin(fd, buf, stats, stall, stop);
    free();
    if let Some(end) = end {
        return end;
    }
    match shutdown(fd, Shutdown::Write) {
        Ok(()) | Err(Errno::ENOTCONN) => End::Fin,
        Err(e) => ended(e),
    }
}

/// The loop of [`echo`]: `None` at the client's FIN with everything
/// echoed, else how the connection ended.
fn echo_until_fin(
    fd: RawFd,
    buf: &mut [u8],
    stats: &Stats,
    stall: Option<Duration>,
    stop: &dyn Fn() -> bool,
) -> Option<End> {
    loop {
        let n = match recv(fd, buf, MsgFlags::empty()) {
            // FIN from the client: nothing more will come.
            Ok(0) => return None,
            Ok(n) => n,
            // A signal: retry, unless it was the one telling us to stop.
            Err(Errno::EINTR) if stop() => return Some(End::Stopped),
            Err(Errno::EINTR) => continue,
            // SO_RCVTIMEO expired: nothing arrived for the idle timeout.
            Err(Errno::EAGAIN) => return Some(End::Idle),
            Err(e) => return Some(ended(e)),
        };
        // The echo begins waiting now; each byte sent moves it on.
        let mut moved = Instant::now();
        let mut off = 0;
        while off < n {
            // MSG_NOSIGNAL: a peer that went away is an EPIPE here, not a
            // SIGPIPE that kills the process. MSG_DONTWAIT: the wait for
            // room is the poll below, to the deadline.
            match send(
                fd,
                &buf[off..n],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(w) => {
                    off += w;
                    moved = Instant::now();
                }
                Err(Errno::EINTR) if stop() => return Some(End::Stopped),
                Err(Errno::EINTR) => continue,
                // The send buffer is full: wait for room until the stall
                // deadline.
                Err(Errno::EAGAIN) => match wait_writable(fd, moved, stall) {
                    Ok(true) => {}
                    Ok(false) => return Some(End::Stall),
                    Err(Errno::EINTR) if stop() => return Some(End::Stopped),
                    Err(Errno::EINTR) => {}
                    Err(e) => return Some(ended(e)),
                },
                Err(e) => return Some(ended(e)),
            }
        }
        stats.bytes.add(n as u64);
    }
}

/// Waits until `fd` takes more bytes (`Ok(true)`) or the stall deadline,
/// `stall` after `moved`, passes (`Ok(false)`); no deadline without a
/// stall timeout. A hang-up or error also wakes it: the next send says
/// which.
fn wait_writable(fd: RawFd, moved: Instant, stall: Option<Duration>) -> nix::Result<bool> {
    let timeout = match stall {
        None => PollTimeout::NONE,
        Some(d) => {
            let left = (moved + d).saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            // Rounded up: waking a little late is harmless, early spins.
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    // SAFETY: `fd` is the connection's socket, open for the whole loop.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(sock, PollFlags::POLLOUT)];
    Ok(poll(&mut fds, timeout)? > 0)
}

/// Echoes on a socket [`prepare`] set up: over TLS if `tls` (it came in on
/// a `--tls-listen` socket: the TLS layer over the connection core,
/// [`crate::serve::transport::tls::blocking`]), with its faults if
/// `--fault` picks it ([`faulted`]), else with [`echo`]. `free` as for [`echo`]:
/// over TLS before our close_notify.
pub(crate) fn echo_any(
    conn: &TcpStream,
    tls: bool,
    ctx: &Ctx,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    match &ctx.tls {
        Some(config) if tls => {
            crate::serve::transport::tls::blocking::echo(conn, config, ctx, buf, stop, free)
        }
        _ => match Faulted::of(conn, ctx) {
            Some(f) => faulted::echo(conn, f, ctx, buf, stop, free),
            None => echo(
                conn.as_raw_fd(),
                buf,
                ctx.stats,
                ctx.send_timeout(),
                stop,
                free,
            ),
        },
    }
}

/// Serves one admitted connection inside this process, then closes it. Its
/// `--max-conns` slot is given back just before the client can see the end
/// (see [`echo`]); a drain that then finds no active connection may exit
/// before the close, and the exit's close sends the same FIN after the same
/// bytes, every one of them already handed to the kernel.
pub(crate) fn serve(
    conn: TcpStream,
    peer: SocketAddr,
    mut permit: Permit,
    tls: bool,
    ctx: &Ctx,
    buf: &mut [u8],
) {
    let end = match prepare(&conn, ctx) {
        Ok(()) => echo_any(&conn, tls, ctx, buf, &|| false, &mut || permit.release()),
        Err(e) => {
            drop(permit);
            End::from_io(&e)
        }
    };
    ctx.stats.count_end(end);
    tracing::debug!(%peer, tls, %end, "connection closed");
    drop(conn);
}
