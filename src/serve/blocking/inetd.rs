//! `--inetd`: serve exactly one connection on stdin/stdout, as inetd's
//! "nowait" services do (inetd accepted it and passes the socket as
//! descriptors 0 and 1). Works as well when 0 and 1 are pipes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{Shutdown, getsockopt, setsockopt, shutdown, sockopt};

use crate::error::{Error, Result};
use crate::serve::blocking::echo::drive;
use crate::serve::blocking::wire::{Call, Socket, Wire, wait_writable};
use crate::serve::contract::{BUF_SIZE, End, Timeouts};
use crate::sys::poll_timeout;

/// Descriptors 0 and 1 as the blocking loop's wire: a read waits in `poll`
/// for the idle timeout (a pipe takes no SO_RCVTIMEO); a write waits for
/// room until the core's stall deadline and no later, as on a socket.
struct Stdio<'a> {
    rin: BorrowedFd<'a>,
    wout: BorrowedFd<'a>,
    /// `--idle-timeout` as a poll timeout.
    idle: PollTimeout,
    /// Stdout is a socket (inetd's connection), not a pipe or a file.
    socket: bool,
    /// What failed last, for the error line.
    failed: &'static str,
}

impl Wire for Stdio<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Call {
        let mut fds = [PollFd::new(self.rin, PollFlags::POLLIN)];
        match poll(&mut fds, self.idle) {
            // Nothing for the idle timeout: close, as the other models do.
            Ok(0) => return Call::Expired,
            Ok(_) => {}
            Err(e) => {
                self.failed = "polling stdin";
                return Call::Failed(e);
            }
        }
        self.failed = "reading stdin";
        match nix::unistd::read(self.rin, buf) {
            Ok(n) => Call::Done(n),
            Err(e) => Call::Failed(e),
        }
    }

    /// A socket sends as every blocking model's does. A pipe takes no
    /// MSG_DONTWAIT, and making it non-blocking would change it for whoever
    /// else holds it: wait for room until the deadline, then write no more
    /// than `PIPE_BUF`, which a pipe with room takes without blocking.
    fn write_until(&mut self, buf: &[u8], until: Option<Instant>) -> Call {
        self.failed = "writing stdout";
        let fd = self.wout.as_raw_fd();
        if self.socket {
            return Socket(fd).write_until(buf, until);
        }
        match wait_writable(fd, until) {
            Ok(true) => {}
            Ok(false) => return Call::Expired,
            Err(e) => return Call::Failed(e),
        }
        match nix::unistd::write(self.wout, &buf[..buf.len().min(libc::PIPE_BUF)]) {
            Ok(n) => Call::Done(n),
            Err(e) => Call::Failed(e),
        }
    }

    /// A socket gets our FIN after the last byte; a pipe just closes at
    /// exit (its shutdown fails, harmlessly).
    fn shut_write(&mut self) -> std::result::Result<(), Errno> {
        let _ = shutdown(self.wout.as_raw_fd(), Shutdown::Write);
        Ok(())
    }
}

/// Echoes stdin to stdout until EOF, then half-closes stdout (a FIN when it
/// is a socket), through the same loop and connection core as the blocking
/// models. Gives up after `idle_timeout` with no byte from the client, or
/// after `send_timeout` with no byte taken by it (stall); a client that
/// went away ends the service too, without an error.
pub(crate) fn run(idle_timeout: Option<Duration>, send_timeout: Option<Duration>) -> Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let (rfd, wfd) = (stdin.as_raw_fd(), stdout.as_raw_fd());
    // SAFETY: descriptors 0 and 1 stay open for the whole process.
    let (rin, wout) = unsafe { (BorrowedFd::borrow_raw(rfd), BorrowedFd::borrow_raw(wfd)) };
    // Only a TCP socket takes this option; for a pipe it fails, harmlessly.
    let _ = setsockopt(&wout, sockopt::TcpNoDelay, &true);
    let mut wire = Stdio {
        rin,
        wout,
        idle: poll_timeout(idle_timeout),
        socket: getsockopt(&wout, sockopt::SockType).is_ok(),
        failed: "reading stdin",
    };
    let timeouts = Timeouts {
        idle: idle_timeout,
        send: send_timeout,
    };
    let mut buf = vec![0u8; BUF_SIZE];
    match drive(&mut wire, &mut buf, &timeouts, None, &|| false, &mut || {}) {
        End::Error(errno) => Err(Error::io(wire.failed)(io::Error::from_raw_os_error(errno))),
        End::Fin | End::Idle | End::Stall | End::Reset | End::Stopped => Ok(()),
    }
}
