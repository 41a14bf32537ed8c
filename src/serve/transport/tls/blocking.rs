//! The TLS session in the blocking models (iterative, fork, prefork,
//! thread, prethread): [`socket::turn`] on the socket made non-blocking,
//! and poll(2) for readiness until the session's deadline. The deadline
//! is the session's (handshake, stall of unsent echo, idle), so a client
//! that stops reading is closed on time however the echo is split into
//! writes; a socket timeout, which restarts with every byte a blocking
//! write moves, could not say that.
//!
//! Unlike the plain loop this allocates and may log (rustls does both),
//! which a forked child may do here: the forking models' parents run no
//! thread (see `model/fork.rs`), so no lock is held at fork time.

use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netecho_core::tls::{EPROTO, Session};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};

use super::Tls;
use super::socket::{self, Turn};
use crate::serve::contract::pending::Pending;
use crate::serve::contract::{Conn, End};
use crate::serve::ctx::Ctx;

/// The longest one poll(2) may wait (its timeout is an i32 of ms);
/// without a deadline the loop simply polls again.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Echoes over TLS on a socket [`crate::serve::blocking::echo::prepare`]
/// set up, until the core says to close or `stop()` turns true after a
/// signal; counts a failed handshake. `free` runs once: when the core
/// first says `ShutWrite`, before our close_notify (the last echoed byte's
/// ciphertext is in the kernel, nothing of the end is on the wire), as the
/// plain loop gives back a `--max-conns` slot before its FIN; else at the
/// end.
pub(crate) fn echo(
    stream: &TcpStream,
    tls: &Tls,
    ctx: &Ctx,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
    free: &mut dyn FnMut(),
) -> End {
    let start = Instant::now();
    let Ok(mut conn) = Session::new(&tls.config, start, tls.handshake_timeout) else {
        free();
        return End::Error(EPROTO);
    };
    conn.pause_at_shut();
    let mut freed = false;
    let mut core = Conn::new(start, Pending::new());
    if let Err(e) = stream.set_nonblocking(true) {
        core.on_error(&e);
    }
    let timeouts = ctx.timeouts();
    let mut wire = stream;
    let mut bytes = 0u64;
    let end = loop {
        let now = Instant::now();
        let turn = socket::turn(&mut conn, &mut core, &mut wire, now, buf, &mut bytes);
        if bytes > 0 {
            ctx.stats.bytes.add(bytes);
            bytes = 0;
        }
        let (read, write) = match turn {
            Turn::Close(end) => break end,
            Turn::Again => {
                if conn.take_shut() {
                    free();
                    freed = true;
                }
                if stop() {
                    core.stop();
                }
                continue;
            }
            Turn::Wait { read, write } => (read, write),
        };
        let due = conn.deadline(&core, &timeouts);
        let wait = due.map_or(MAX_WAIT, |at| {
            at.saturating_duration_since(Instant::now()).min(MAX_WAIT)
        });
        let mut flags = PollFlags::empty();
        if read {
            flags |= PollFlags::POLLIN;
        }
        if write {
            flags |= PollFlags::POLLOUT;
        }
        let mut fds = [PollFd::new(stream.as_fd(), flags)];
        match poll(&mut fds, crate::sys::poll_timeout(Some(wait))) {
            // Ready (or hung up): the next turn finds out which.
            Ok(n) if n > 0 => {}
            // The deadline: the session decides what it means.
            Ok(_) => {
                conn.on_timer(&mut core, Instant::now(), &timeouts);
            }
            // A signal: stop if it says so.
            Err(Errno::EINTR) => {
                if stop() {
                    core.stop();
                }
            }
            Err(e) => {
                core.on_error(&std::io::Error::from(e));
            }
        }
    };
    if !freed {
        free();
    }
    if let Some(f) = conn.failure() {
        ctx.stats.count_failure(f);
    }
    end
}
