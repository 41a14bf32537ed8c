//! The TLS layer in the blocking models (iterative, fork, prefork, thread,
//! prethread): [`TlsConn::turn`] in a loop on a blocking socket.
//!
//! On a blocking socket a read or write would block only when its socket
//! timeout expired, so a [`Turn::Wait`] is a timeout: the handshake's while
//! it runs (SO_RCVTIMEO/SO_SNDTIMEO set to the time it has left before each
//! turn), then the idle timeout for a read and the stall timeout for a
//! write, exactly as [`crate::serve::blocking::echo::prepare`] sets them for TCP.
//!
//! Unlike the plain loop this allocates and may log (rustls does both),
//! which a forked child may do here: the forking models' parents run no
//! thread (see `model/fork.rs`), so no lock is held at fork time.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::Tls;
use super::session::{TlsConn, Turn};
use crate::serve::contract::pending::Pending;
use crate::serve::contract::{Conn, End};
use crate::serve::ctx::Ctx;

/// The shortest socket timeout set: 0 would mean "never".
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Echoes over TLS on a socket [`crate::serve::blocking::echo::prepare`] made
/// blocking, until the core says to close or `stop()` turns true after a
/// signal; counts a failed handshake. `free` runs once: when the core
/// first says `ShutWrite`, before our close_notify (the last echoed byte's
/// ciphertext is in the kernel, nothing of the end is on the wire), as the plain loop
/// gives back a `--max-conns` slot before its FIN; else at the end.
pub(crate) fn echo(
    stream: &TcpStream,
    tls: &Tls,
    ctx: &Ctx,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    let start = Instant::now();
    let Ok(mut conn) = TlsConn::new(&tls.config, start, tls.handshake_timeout) else {
        free();
        return End::Error(super::session::EPROTO);
    };
    conn.pause_at_shut();
    let mut freed = false;
    let mut core = Conn::new(start, Pending::new());
    let mut wire = stream;
    let mut bytes = 0u64;
    let end = loop {
        if let Some(until) = conn.handshake_until() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                conn.time_out(&mut core);
            } else if let Err(e) = set_timeouts(stream, Some(left), Some(left)) {
                core.on_error(&e);
            }
        }
        let was_handshaking = conn.handshaking();
        match conn.turn(&mut core, &mut wire, Instant::now(), buf, &mut bytes) {
            Turn::Close(end) => break end,
            Turn::Again => {
                if conn.take_shut() {
                    free();
                    freed = true;
                }
                if stop() {
                    core.stop();
                }
                if was_handshaking
                    && !conn.handshaking()
                    && let Err(e) = set_timeouts(stream, ctx.idle_timeout, ctx.send_timeout())
                {
                    core.on_error(&e);
                }
            }
            // The socket timeout expired (see the module docs).
            Turn::Wait { write, .. } => {
                if conn.handshaking() {
                    conn.time_out(&mut core);
                } else if write {
                    core.fail(End::Stall);
                } else {
                    core.fail(End::Idle);
                }
            }
        }
        if bytes > 0 {
            ctx.stats.bytes.add(bytes);
            bytes = 0;
        }
    };
    if !freed {
        free();
    }
    if let Some(f) = conn.failure() {
        f.count(ctx.stats);
    }
    end
}

/// SO_RCVTIMEO and SO_SNDTIMEO (`None`: wait for ever).
fn set_timeouts(
    s: &TcpStream,
    read: Option<Duration>,
    write: Option<Duration>,
) -> std::io::Result<()> {
    s.set_read_timeout(read.map(|d| d.max(MIN_TIMEOUT)))?;
    s.set_write_timeout(write.map(|d| d.max(MIN_TIMEOUT)))
}
