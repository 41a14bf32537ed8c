//! What a blocking loop echoes on ([`Wire`]): a socket, or `--inetd`'s
//! stdin and stdout; and how a socket waits for send room ([`Socket`]'s
//! [`Wire::write_until`]), shared by the blocking loop ([`super::echo`])
//! and the faulted one ([`super::faulted`]).

use std::os::fd::{BorrowedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{MsgFlags, Shutdown, recv, send, shutdown};

use crate::sys::poll_timeout;

/// What one blocking call came to.
pub(crate) enum Call {
    /// It moved this many bytes (0 from a read: the client's FIN).
    Done(usize),
    /// Its timeout expired with nothing moved.
    Expired,
    /// It failed (EINTR included: the loop decides).
    Failed(Errno),
}

/// The descriptors a blocking loop echoes on: a socket, or `--inetd`'s
/// stdin and stdout.
pub(crate) trait Wire {
    /// Reads into `buf`, waiting at most the idle timeout.
    fn read(&mut self, buf: &mut [u8]) -> Call;
    /// Writes from `buf`, waiting for room until `until` (the core's stall
    /// deadline; `None`: no deadline) and no later: never under a per-call
    /// timeout, which restarts with every byte a call moves.
    fn write_until(&mut self, buf: &[u8], until: Option<Instant>) -> Call;
    /// Sends our FIN.
    fn shut_write(&mut self) -> Result<(), Errno>;
}

/// A connected socket whose idle timeout [`super::echo::prepare`] set. The
/// faulted loop and `--inetd` on a socket send through it too
/// ([`Wire::write_until`]): one wait for room.
pub(crate) struct Socket(pub(crate) RawFd);

impl Wire for Socket {
    fn read(&mut self, buf: &mut [u8]) -> Call {
        match recv(self.0, buf, MsgFlags::empty()) {
            Ok(n) => Call::Done(n),
            // SO_RCVTIMEO expired: nothing arrived for the idle timeout.
            Err(Errno::EAGAIN) => Call::Expired,
            Err(e) => Call::Failed(e),
        }
    }

    /// The send does not block (MSG_DONTWAIT); poll(2) waits for room
    /// until the core's stall deadline. SO_SNDTIMEO cannot keep that
    /// deadline: it restarts with every call, and a call that moved a few
    /// bytes returns them only when it runs out, so a client that stopped
    /// reading was closed after two or three times the stall timeout.
    /// MSG_NOSIGNAL: a peer that went away is an EPIPE here, not a SIGPIPE
    /// that kills the process.
    fn write_until(&mut self, buf: &[u8], until: Option<Instant>) -> Call {
        loop {
            match send(self.0, buf, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Call::Done(n),
                // The send buffer is full: wait for room, to the deadline.
                Err(Errno::EAGAIN) => match wait_writable(self.0, until) {
                    Ok(true) => {}
                    Ok(false) => return Call::Expired,
                    Err(e) => return Call::Failed(e),
                },
                Err(e) => return Call::Failed(e),
            }
        }
    }

    fn shut_write(&mut self) -> Result<(), Errno> {
        shutdown(self.0, Shutdown::Write)
    }
}

/// Waits until `fd` takes more bytes (`Ok(true)`; a hang-up or error too:
/// the next send says which) or `until` passes (`Ok(false)`); `None`
/// waits for ever.
pub(super) fn wait_writable(fd: RawFd, until: Option<Instant>) -> Result<bool, Errno> {
    let left = until.map(|at| at.saturating_duration_since(Instant::now()));
    if left.is_some_and(|l| l.is_zero()) {
        return Ok(false);
    }
    // SAFETY: `fd` is the connection's socket (or `--inetd`'s stdout),
    // open for the whole loop.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(sock, PollFlags::POLLOUT)];
    Ok(poll(&mut fds, poll_timeout(left))? > 0)
}
