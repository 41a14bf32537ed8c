//! `--inetd`: serve exactly one connection on stdin/stdout, as inetd's
//! "nowait" services do (inetd accepted it and passes the socket as
//! descriptors 0 and 1). Works as well when 0 and 1 are pipes.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{Shutdown, setsockopt, shutdown, sockopt};

use crate::error::{Error, Result};
use crate::serve::contract::BUF_SIZE;

/// Echoes stdin to stdout until EOF, then half-closes stdout (a FIN when it
/// is a socket). Gives up after `idle_timeout` with no byte from the client,
/// or after `send_timeout` with no byte taken by it (stall).
pub(crate) fn run(idle_timeout: Option<Duration>, send_timeout: Option<Duration>) -> Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let (rfd, wfd) = (stdin.as_raw_fd(), stdout.as_raw_fd());
    // SAFETY: descriptors 0 and 1 stay open for the whole process.
    let (rin, wout) = unsafe { (BorrowedFd::borrow_raw(rfd), BorrowedFd::borrow_raw(wfd)) };
    // Only a TCP socket takes these options; for a pipe they fail, harmlessly.
    let _ = setsockopt(&wout, sockopt::TcpNoDelay, &true);
    // A blocking socket's write then returns EAGAIN after the stall time.
    if let Some(t) = send_timeout {
        let tv = nix::sys::time::TimeVal::new(t.as_secs() as _, t.subsec_micros() as _);
        let _ = setsockopt(&wout, sockopt::SendTimeout, &tv);
    }
    let timeout = poll_timeout(idle_timeout);
    let stall = poll_timeout(send_timeout);
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let mut fds = [PollFd::new(rin, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            // Nothing for the idle timeout: close, as the other models do.
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("polling stdin")(e.into())),
        }
        let n = match nix::unistd::read(rin, &mut buf) {
            // EOF (the client's FIN): all read bytes were already written.
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            // The client went away: that ends the service, not an error.
            Err(Errno::ECONNRESET) => return Ok(()),
            Err(e) => return Err(Error::io("reading stdin")(e.into())),
        };
        let mut off = 0;
        while off < n {
            match nix::unistd::write(wout, &buf[off..n]) {
                Ok(w) => off += w,
                Err(Errno::EINTR) => continue,
                // The client is not reading: wait once more for room, and
                // give up if none comes within the stall time.
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(wout, PollFlags::POLLOUT)];
                    if matches!(poll(&mut fds, stall), Ok(0)) {
                        return Ok(());
                    }
                }
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Ok(()),
                Err(e) => return Err(Error::io("writing stdout")(e.into())),
            }
        }
    }
    // A socket gets our FIN after the last byte; a pipe just closes at exit.
    let _ = shutdown(wfd, Shutdown::Write);
    Ok(())
}

fn poll_timeout(t: Option<Duration>) -> PollTimeout {
    t.map_or(PollTimeout::NONE, |t| {
        PollTimeout::try_from(t.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX)
    })
}
