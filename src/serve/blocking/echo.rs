//! The blocking read/write loop that keeps the echo contract, shared by the
//! iterative, fork, prefork, thread and prethread models.
//!
//! It allocates nothing and calls only `recv`, `send` and `shutdown`, so a
//! forked child may run it even if the parent held a lock at fork time.
//! Timeouts are socket options (SO_RCVTIMEO/SO_SNDTIMEO), not extra syscalls.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
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
/// timeout and the stall timeout as send timeout.
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
pub(crate) fn echo(
    fd: RawFd,
    buf: &mut [u8],
    stats: &Stats,
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    let end = echo_until_fin(fd, buf, stats, stop);
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
        let mut off = 0;
        while off < n {
            // MSG_NOSIGNAL: a peer that went away is an EPIPE here, not a
            // SIGPIPE that kills the process.
            match send(fd, &buf[off..n], MsgFlags::MSG_NOSIGNAL) {
                Ok(w) => off += w,
                Err(Errno::EINTR) if stop() => return Some(End::Stopped),
                Err(Errno::EINTR) => continue,
                // SO_SNDTIMEO expired: the client took nothing for the
                // stall (or idle) timeout.
                Err(Errno::EAGAIN) => return Some(End::Stall),
                Err(e) => return Some(ended(e)),
            }
        }
        stats.bytes.add(n as u64);
    }
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
            None => echo(conn.as_raw_fd(), buf, ctx.stats, stop, free),
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
