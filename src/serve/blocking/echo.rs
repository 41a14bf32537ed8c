//! The blocking read/write loop that keeps the echo contract, shared by the
//! iterative, fork, prefork, thread and prethread models and `--inetd`.
//!
//! It drives the same connection core as the event models
//! ([`crate::serve::contract::Conn`], over the
//! [`InPlace`](crate::serve::contract::in_place::InPlace) store: the unsent
//! tail of its one buffer), so the order, the FIN after the last byte and
//! the close reasons are decided in one place. It allocates nothing and
//! calls only `recv`, `send`, `poll`, `shutdown` and the vDSO clock, so a forked
//! child may run it even if the parent held a lock at fork time. The idle
//! timeout is a socket option (SO_RCVTIMEO); echo that waits is sent
//! without blocking and poll(2) waits for room until the core's stall
//! deadline ([`Wire::write_until`]). When either expires, the core says
//! what it means (idle or stall).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;

use crate::serve::admission::Permit;
use crate::serve::blocking::faulted::{self, Faulted};
use crate::serve::blocking::wire::{Call, Socket, Wire};
use crate::serve::contract::in_place::InPlace;
use crate::serve::contract::{Conn, Next, Store, Timeouts};
use crate::serve::ctx::Ctx;
use crate::serve::service::stats::Stats;

pub(crate) use crate::serve::contract::End;

/// Echoes on `wire` through the connection core until it closes: the
/// client's FIN (everything echoed, then our FIN), a reset, a timeout, or
/// `stop()` turning true after a signal interrupted a call. `timeouts` are
/// those the wire's calls wait under, so an expired call is the deadline
/// the core would have set.
///
/// `free` gives the connection's `--max-conns` slot back. It runs exactly
/// once, after the last echoed byte and before anything the client can see
/// of the end (our FIN, or the close the caller makes after an error): a
/// client that reconnects the moment it sees our FIN must find its slot
/// free, not wait on a parent that has yet to reap the child that served it.
pub(crate) fn drive(
    wire: &mut impl Wire,
    buf: &mut [u8],
    timeouts: &Timeouts,
    stats: Option<&Stats>,
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    let mut core = Conn::new(Instant::now(), InPlace::new(buf.len()));
    let mut freed = false;
    loop {
        let call = match core.next() {
            Next::Io { send: true, .. } => {
                let until = core.deadline(timeouts).map(|(at, _)| at);
                wire.write_until(&buf[core.store().range()], until)
            }
            Next::Io { read, .. } => wire.read(&mut buf[..read]),
            next @ (Next::ShutWrite | Next::Close(_)) => {
                if !std::mem::replace(&mut freed, true) {
                    free();
                }
                match next {
                    Next::Close(end) => return end,
                    _ => {
                        core.on_shut(wire.shut_write().map_err(io::Error::from));
                        continue;
                    }
                }
            }
        };
        let sending = !core.store().is_empty();
        match call {
            Call::Done(n) if sending => {
                core.on_sent(Instant::now(), n);
                if let Some(stats) = stats {
                    stats.bytes.add(n as u64);
                }
            }
            // The client's FIN: nothing more will come.
            Call::Done(0) => core.on_fin(),
            Call::Done(n) => core.on_read(Instant::now(), n, 0),
            Call::Expired => {
                // The kernel timed the wait the core's deadline describes;
                // should its clock and ours disagree by a tick, the kind of
                // wait still says which deadline it was.
                if !core.on_timer(Instant::now(), timeouts) {
                    core.fail(if sending { End::Stall } else { End::Idle });
                }
            }
            // A signal: retry, unless it was the one telling us to stop.
            Call::Failed(Errno::EINTR) if stop() => core.stop(),
            Call::Failed(e) => {
                core.on_error(&io::Error::from(e));
            }
        }
    }
}

/// Echoes on a socket [`prepare`] set up, with [`drive`].
pub(crate) fn echo(
    fd: RawFd,
    buf: &mut [u8],
    ctx: &Ctx,
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    drive(
        &mut Socket(fd),
        buf,
        &ctx.timeouts(),
        Some(ctx.stats),
        stop,
        free,
    )
}

/// Sets up an accepted socket: blocking, TCP_NODELAY ([`Ctx::nodelay`]:
/// inherited from the listener, or set here), the idle timeout as receive
/// timeout. No send timeout: every send is MSG_DONTWAIT and waits for room
/// in poll(2) until the core's stall deadline ([`Wire::write_until`]).
pub(crate) fn prepare(stream: &TcpStream, ctx: &Ctx) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    ctx.nodelay(socket2::SockRef::from(stream))?;
    stream.set_read_timeout(ctx.idle_timeout)?;
    Ok(())
}

/// Echoes on a socket [`prepare`] set up: over TLS if `tls` (it came in on
/// a `--tls-listen` socket: the TLS layer over the connection core,
/// [`crate::serve::transport::tls::blocking`]), with its faults if
/// `--fault` picks it ([`faulted`], over TLS too), else with [`echo`]. `free` as for [`drive`]:
/// over TLS before our close_notify.
pub(crate) fn echo_any(
    conn: &TcpStream,
    tls: bool,
    ctx: &Ctx,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    let tls = ctx.tls.as_ref().filter(|_| tls);
    match (Faulted::of(conn, ctx), tls) {
        (Some(f), tls) => faulted::echo(conn, f, tls, ctx, buf, stop, free),
        (None, Some(config)) => {
            crate::serve::transport::tls::blocking::echo(conn, config, ctx, buf, stop, free)
        }
        (None, None) => echo(conn.as_raw_fd(), buf, ctx, stop, free),
    }
}

/// Serves one admitted connection inside this process, then closes it. Its
/// `--max-conns` slot is given back just before the client can see the end
/// (see [`drive`]); a drain that then finds no active connection may exit
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
